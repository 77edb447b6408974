/**
 * Around the math: what a call costs beyond its kernels, and what an import costs, against
 * onnxruntime-node in the same process (onnxruntime's spinning off, as a same-process
 * comparison needs: its spinning threads would take the cores Spindle's next call needs).
 *
 * - A tiny real-shaped model, three MatMul + Add + LayerNormalization layers on [1, 25, 96]
 *   (about 50 µs of math): `await forward`, `forwardSync`, and onnxruntime-node's
 *   `await session.run`, in alternating rounds, median µs per call.
 * - A trivial model (one Add of [1, 1]): the same three.
 * - Import of PaddleOCR det and rec (`load(file)`, no options) against
 *   `InferenceSession.create(file)`, alternating, median ms.
 *
 *   deno task bench:overhead [--rounds 7]
 *
 * @module
 */
import { benchArgs } from "./args.ts";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { load, type Module, setNumThreads, tensor } from "../mod.ts";
import { onnx } from "../tools/fuzz_corpus.ts";
import { fetchModels } from "../tools/fetch_models.ts";

const { values: flags } = benchArgs(import.meta.url, { rounds: { type: "string", default: "7" } });
const ROUNDS = Number(flags.rounds);
setNumThreads(1);

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Fixed pseudo-random floats (an LCG): weights for the models below. */
function values(count: number, seed: number, scale: number): number[] {
  let state = seed >>> 0;
  return Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state / 2 ** 32 - 0.5) * scale;
  });
}

/** Three MatMul + Add + LayerNormalization layers on [1, 25, 96]. */
function tinyModel(): Uint8Array {
  const width = 96;
  const nodes = [];
  const initializers = [];
  let current = "x";
  for (let layer = 0; layer < 3; layer++) {
    initializers.push(
      { name: `W${layer}`, dims: [width, width], float: values(width * width, 10 + layer, 2 / Math.sqrt(width)) },
      { name: `B${layer}`, dims: [width], float: values(width, 20 + layer, 0.1) },
      { name: `G${layer}`, dims: [width], float: values(width, 30 + layer, 0.2).map((v) => 1 + v) },
      { name: `E${layer}`, dims: [width], float: values(width, 40 + layer, 0.1) },
    );
    nodes.push(
      { op: "MatMul", inputs: [current, `W${layer}`], outputs: [`m${layer}`] },
      { op: "Add", inputs: [`m${layer}`, `B${layer}`], outputs: [`a${layer}`] },
      {
        op: "LayerNormalization",
        inputs: [`a${layer}`, `G${layer}`, `E${layer}`],
        outputs: [layer === 2 ? "y" : `n${layer}`],
        attributes: { axis: { i: -1 }, epsilon: { f: 1e-5 } },
      },
    );
    current = `n${layer}`;
  }
  return onnx({
    opset: 17,
    nodes,
    initializers,
    inputs: [{ name: "x", dims: [1, 25, width] }],
    outputs: [{ name: "y", dims: [1, 25, width] }],
  });
}

/** One Add of two [1, 1] inputs' worth: y = x + x. */
function trivialModel(): Uint8Array {
  return onnx({
    opset: 17,
    nodes: [{ op: "Add", inputs: ["x", "x"], outputs: ["y"] }],
    initializers: [],
    inputs: [{ name: "x", dims: [1, 1] }],
    outputs: [{ name: "y", dims: [1, 1] }],
  });
}

const SESSION_OPTIONS: ort.InferenceSession.SessionOptions = {
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
};

/** Median µs per call of each body, in alternating rounds of ≥ 100 ms each. */
async function alternate(bodies: Record<string, () => unknown>): Promise<Record<string, number>> {
  const samples = Object.fromEntries(Object.keys(bodies).map((name) => [name, [] as number[]]));
  for (const body of Object.values(bodies)) for (let i = 0; i < 200; i++) await body(); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, body] of Object.entries(bodies)) {
      const until = performance.now() + 100;
      while (performance.now() < until) {
        const started = performance.now();
        await body();
        samples[name].push((performance.now() - started) * 1000);
      }
    }
  }
  return Object.fromEntries(Object.entries(samples).map(([name, list]) => [name, median(list)]));
}

async function callCosts(label: string, bytes: Uint8Array, shape: number[]): Promise<void> {
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeFile(path, bytes);
  using model: Module = await load(path);
  const session = await ort.InferenceSession.create(path, SESSION_OPTIONS);
  await Deno.remove(path);
  const data = Float32Array.from(values(shape.reduce((a, b) => a * b, 1), 5, 2));
  using x = tensor(data, shape);
  const feeds = { x: new ort.Tensor("float32", data, shape) };
  const us = await alternate({
    "spindle await forward": async () => (await model.forward(x)).dispose(),
    "spindle forwardSync": () => model.forwardSync(x).dispose(),
    "onnxruntime-node await run": () => session.run(feeds),
  });
  await session.release();
  const ort_ = us["onnxruntime-node await run"];
  console.log(`${label}:`);
  for (const [name, value] of Object.entries(us)) {
    console.log(`  ${name.padEnd(28)} ${value.toFixed(1).padStart(8)} µs  (${(value / ort_).toFixed(2)}× onnxruntime)`);
  }
}

async function importCosts(): Promise<void> {
  for (const model of (await fetchModels()).filter((m) => m.name !== "ocr-cls")) {
    const samples = { spindle: [] as number[], onnxruntime: [] as number[] };
    for (let round = 0; round < Math.max(3, Math.ceil(ROUNDS / 2)); round++) {
      let started = performance.now();
      const module = await load(model.file);
      samples.spindle.push(performance.now() - started);
      module.dispose();
      started = performance.now();
      const session = await ort.InferenceSession.create(model.file, SESSION_OPTIONS);
      samples.onnxruntime.push(performance.now() - started);
      await session.release();
    }
    const spindle = median(samples.spindle);
    const onnxruntime = median(samples.onnxruntime);
    console.log(
      `import ${model.name}: spindle load ${spindle.toFixed(1)} ms, onnxruntime-node create ` +
        `${onnxruntime.toFixed(1)} ms (${(spindle / onnxruntime).toFixed(2)}×)`,
    );
  }
}

console.log(`overhead: ${ROUNDS} alternating rounds, 1 intra-op thread, onnxruntime spinning off; medians`);
await callCosts("tiny model (3 × MatMul + Add + LayerNormalization, [1, 25, 96])", tinyModel(), [1, 25, 96]);
await callCosts("trivial model (one Add, [1, 1])", trivialModel(), [1, 1]);
await importCosts();

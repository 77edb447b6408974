/**
 * Real models side by side: Spindle against onnxruntime-node, in the same Deno process, on
 * the same inputs. For each model: median latency at 1 and 2 intra-op threads, batch 1 and
 * 8, and throughput with 4 concurrent requests (1 intra-op thread each, as the threading
 * note advises for many concurrent requests). Ratios are Spindle / onnxruntime (latency:
 * lower is better, ≤ 1.00 is the target; throughput: higher is better, ≥ 1.00).
 *
 *   deno task bench:onnx [--runs 20]
 *
 * @module
 */
import { benchArgs } from "./args.ts";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as tools/test.ts and the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { load, type Module, parallelInfoJson, randn, setNumThreads } from "../mod.ts";
import { fetchModels } from "../tools/fetch_models.ts";

const { values: flags } = benchArgs(import.meta.url, { runs: { type: "string", default: "20" } });
const runs = Number(flags.runs);

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * Median latency of each side, measured in alternating rounds (Spindle, onnxruntime,
 * Spindle, …) so that drift in the machine's load hits both alike. Each round takes at
 * least `runs / ROUNDS` samples and at least 100 ms, so sub-millisecond models get
 * hundreds of samples.
 */
const ROUNDS = 5;
async function compare(a: () => Promise<void>, b: () => Promise<void>, count: number): Promise<[number, number]> {
  await a(); // warm-up
  await b();
  const samples: [number[], number[]] = [[], []];
  for (let round = 0; round < ROUNDS; round++) {
    for (const [side, body] of [a, b].entries()) {
      const until = performance.now() + 100;
      for (let i = 0; i < Math.ceil(count / ROUNDS) || performance.now() < until; i++) {
        const start = performance.now();
        await body();
        samples[side].push(performance.now() - start);
      }
    }
  }
  return [median(samples[0]), median(samples[1])];
}

const rows: string[] = [];

/** Prints and keeps one latency row: label, both medians (ms) and their ratio. */
function report(label: string, spindle: number, onnxrt: number, width: number): void {
  const row = `${label} ${spindle.toFixed(2).padStart(width)} ${onnxrt.toFixed(2).padStart(10)} ${
    (spindle / onnxrt).toFixed(2).padStart(6)
  }`;
  console.log(row);
  rows.push(row);
}
const header = "model    batch threads | spindle ms  onnxrt ms  ratio";
console.log(header);
rows.push(header);
for (const model of await fetchModels()) {
  const modules = new Map<number, Module>();
  for (const threads of [1, 2]) {
    const sessions = await ort.InferenceSession.create(model.file, {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      // onnxruntime's threads spin after each run by default; in one process with Spindle
      // they would take the core Spindle's next run needs. Spindle's pools sleep.
      extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
    });
    for (const batch of [1, 8]) {
      const shape = model.shape.map((d) => (d === -1 ? batch : d));
      let module = modules.get(batch);
      if (module === undefined) {
        module = await load(model.file, { inputShapes: { [model.input]: shape } });
        modules.set(batch, module);
      }
      using x = randn(shape, { seed: batch });
      const feed = { [model.input]: new ort.Tensor("float32", x.toArray() as Float32Array, shape) };
      setNumThreads(threads);
      const [spindle, onnxrt] = await compare(
        async () => (await module!.forward(x)).dispose(),
        async () => void (await sessions.run(feed)),
        runs,
      );
      report(
        `${model.name.padEnd(8)} ${String(batch).padStart(5)} ${String(threads).padStart(7)} |`,
        spindle,
        onnxrt,
        10,
      );
    }
    await sessions.release();
  }
  {
    // Parallel execution mode on both sides: batch 1, 1 intra-op thread, independent
    // branches on 2 inter-op threads (Spindle's default inter-op pool on this machine).
    const shape = model.shape.map((d) => (d === -1 ? 1 : d));
    using x = randn(shape, { seed: 1 });
    const feed = { [model.input]: new ort.Tensor("float32", x.toArray() as Float32Array, shape) };
    setNumThreads(1);
    using module = await load(model.file, { inputShapes: { [model.input]: shape }, executionMode: "parallel" });
    const session = await ort.InferenceSession.create(model.file, {
      intraOpNumThreads: 1,
      interOpNumThreads: 2,
      executionMode: "parallel",
      extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
    });
    const [spindle, onnxrt] = await compare(
      async () => (await module.forward(x)).dispose(),
      async () => void (await session.run(feed)),
      runs,
    );
    report(`${model.name.padEnd(8)} parallel branches, b1 t1 |`, spindle, onnxrt, 7);
    await session.release();
  }
  // Throughput: 4 concurrent batch-1 requests, 1 intra-op thread each.
  const shape = model.shape.map((d) => (d === -1 ? 1 : d));
  using x = randn(shape, { seed: 7 });
  const feed = { [model.input]: new ort.Tensor("float32", x.toArray() as Float32Array, shape) };
  setNumThreads(1);
  const session = await ort.InferenceSession.create(model.file, {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
  });
  const module = modules.get(1)!;
  const requests = 4 * runs;
  const throughput = async (one: () => Promise<void>) => {
    await one();
    let next = 0;
    const start = performance.now();
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next++ < requests) await one();
    }));
    return requests / ((performance.now() - start) / 1000);
  };
  const spindleRate = await throughput(async () => (await module.forward(x)).dispose());
  const onnxRate = await throughput(async () => void (await session.run(feed)));
  const row = `${model.name.padEnd(8)} 4 concurrent, 1 thread each | spindle ${spindleRate.toFixed(1)}/s  onnxrt ${
    onnxRate.toFixed(1)
  }/s  ratio ${(spindleRate / onnxRate).toFixed(2)}`;
  console.log(row);
  rows.push(row);
  await session.release();
  for (const m of modules.values()) m.dispose();
}
const info = parallelInfoJson();
await Deno.writeTextFile(
  new URL(`./results/onnx_bench_${info.intra_op_backend}_${info.blas}.txt`, import.meta.url),
  rows.join("\n") + "\n",
);

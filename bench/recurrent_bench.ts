/**
 * ONNX LSTM, GRU and RNN layers (seq 100, batch 1 and 8, input 64, hidden 128, forward and
 * bidirectional): Spindle against onnxruntime-node in the same process, on the same inputs,
 * at 1 and 2 intra-op threads. Ratios are Spindle / onnxruntime latency (≤ 1.00 is the
 * target).
 *
 *   deno run -A --lock=deno.dev.lock bench/recurrent_bench.ts [--runs 30]
 *
 * @module
 */
import { benchArgs } from "./args.ts";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as tools/test.ts and the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { importOnnx, randn, setNumThreads } from "../mod.ts";
import { Program } from "../lib/program/program.ts";
import { onnx } from "../tools/fuzz_corpus.ts";

const { values: flags } = benchArgs(import.meta.url, { runs: { type: "string", default: "30" } });
const runs = Number(flags.runs);
const [seq, input, hidden] = [100, 64, 128];
const GATES = { LSTM: 4, GRU: 3, RNN: 1 };

function weights(name: string, dims: number[], scale: number) {
  const count = dims.reduce((a, b) => a * b, 1);
  return { name, dims, float: Array.from({ length: count }, (_, i) => Math.sin(i * 1.7 + 0.3) * scale) };
}

function model(op: keyof typeof GATES, direction: string, batch: number): Uint8Array {
  const directions = direction === "bidirectional" ? 2 : 1;
  const width = GATES[op] * hidden;
  return onnx({
    opset: 14,
    nodes: [{
      op,
      inputs: ["X", "W", "R", "B"],
      outputs: ["Y"],
      attributes: { hidden_size: { i: hidden }, direction: { s: direction } },
    }],
    initializers: [
      weights("W", [directions, width, input], 0.1),
      weights("R", [directions, width, hidden], 0.08),
      weights("B", [directions, 2 * width], 0.1),
    ],
    inputs: [{ name: "X", dims: [seq, batch, input] }],
    outputs: [{ name: "Y", dims: [seq, directions, batch, hidden] }],
  });
}

function median(samples: number[]): number {
  return [...samples].sort((a, b) => a - b)[Math.floor(samples.length / 2)];
}

/** Median latencies of both sides, sampled in alternating rounds. */
async function compare(a: () => void, b: () => Promise<void>): Promise<[number, number]> {
  a();
  await b();
  const samples: [number[], number[]] = [[], []];
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < Math.ceil(runs / 5); i++) {
      let start = performance.now();
      a();
      samples[0].push(performance.now() - start);
      start = performance.now();
      await b();
      samples[1].push(performance.now() - start);
    }
  }
  return [median(samples[0]), median(samples[1])];
}

console.log(`seq ${seq}, input ${input}, hidden ${hidden}`);
console.log("op   direction     batch threads | spindle ms  onnxrt ms  ratio");
for (const op of ["LSTM", "GRU", "RNN"] as const) {
  for (const direction of ["forward", "bidirectional"]) {
    for (const batch of [1, 8]) {
      const bytes = model(op, direction, batch);
      const program = Program.load(importOnnx(bytes));
      using x = randn([seq, batch, input], { seed: 1 });
      const feed = { X: new ort.Tensor("float32", x.toArray() as Float32Array, [seq, batch, input]) };
      for (const threads of [1, 2]) {
        const session = await ort.InferenceSession.create(bytes, {
          intraOpNumThreads: threads,
          interOpNumThreads: 1,
          extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
        });
        setNumThreads(threads);
        const [spindle, onnxrt] = await compare(
          () => program.runSync([x]).forEach((t) => t.dispose()),
          async () => void (await session.run(feed)),
        );
        console.log(
          `${op.padEnd(4)} ${direction.padEnd(13)} ${String(batch).padStart(5)} ${String(threads).padStart(7)} | ${
            spindle.toFixed(2).padStart(10)
          } ${onnxrt.toFixed(2).padStart(10)} ${(spindle / onnxrt).toFixed(2).padStart(6)}`,
        );
        await session.release();
      }
      program.dispose();
    }
  }
}

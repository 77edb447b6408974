/**
 * The model the serve tests and the serve benchmark use: a small ONNX model with a batch
 * dimension, a float and an int64 input and three outputs, so that JSON and binary tensors,
 * output selection, INT64 inputs and dynamic batching are all exercised.
 *
 *   y = x @ w            x [batch, 4] FP32 → y [batch, 3]
 *   z = relu(x)          → z [batch, 4]
 *   e = table[ids]       ids [batch, 2] INT64 → e [batch, 2, 3] (ids ≥ 10 are out of range)
 *
 * @module
 */
import { onnx } from "../../tools/fuzz_corpus.ts";
import { type ServedModel, valuesOutput } from "../../lib/serve/model.ts";
import type { ServeOptions } from "../../lib/serve/server.ts";

/** The ONNX bytes of the test model. */
export function testModelBytes(): Uint8Array {
  return onnx({
    opset: 17,
    nodes: [
      { op: "MatMul", inputs: ["x", "w"], outputs: ["y"] },
      { op: "Relu", inputs: ["x"], outputs: ["z"] },
      { op: "Gather", inputs: ["table", "ids"], outputs: ["e"] },
    ],
    initializers: [
      { name: "table", dims: [10, 3], float: Array.from({ length: 30 }, (_, i) => i / 3) },
      { name: "w", dims: [4, 3], float: Array.from({ length: 12 }, (_, i) => i / 7 - 0.5) },
    ],
    inputs: [{ name: "x", dims: ["batch", 4] }, { name: "ids", dims: ["batch", 2], type: 7 }],
    outputs: [{ name: "y", dims: ["batch", 3] }, { name: "z", dims: ["batch", 4] }, {
      name: "e",
      dims: ["batch", 2, 3],
    }],
  });
}

/** Writes the test model to a temporary .onnx file and returns its path. */
export async function writeTestModel(): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "spindle-serve-", suffix: ".onnx" });
  await Deno.writeFile(path, testModelBytes());
  return path;
}

/** A model that takes `ms` per run, or fails: for the queue, deadline and 500 tests. */
export function fakeModel(ms: number, fail = false): ServedModel {
  return {
    name: "m",
    source: "fake",
    inputs: [{ name: "x", dtype: "float32", shape: [-1, 4] }],
    outputs: [{ name: "y", dtype: "float32", shape: [-1, 4] }],
    batchable: true,
    // Never inline: its "forward" is a timer.
    recentMicros: () => null,
    async run(inputs, finish) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      if (fail) throw new Error("kernel exploded");
      const { dtype, shape, data } = inputs[0];
      const copy = data.slice();
      return finish([
        valuesOutput({ dtype, shape, data: copy instanceof Uint8Array ? new Float32Array(copy.buffer) : copy }),
      ]);
    },
    dispose() {},
  };
}

/** Deterministic pseudo-random numbers (mulberry32). */
export function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One random mutation of a valid request (JSON or binary): bytes, header and all. */
export function mutate(next: () => number, valid: Uint8Array, headerLength: number | null) {
  const bytes = new Uint8Array(valid);
  let header = headerLength === null ? undefined : String(headerLength);
  const pick = Math.floor(next() * 8);
  const at = Math.floor(next() * bytes.length);
  let body: Uint8Array = bytes;
  if (pick === 0) bytes[at] = Math.floor(next() * 256);
  else if (pick === 1) body = bytes.subarray(0, at);
  else if (pick === 2) {
    body = new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at, at + 40), ...bytes.subarray(at)]);
  } else if (pick === 3) header = String(Math.floor(next() * 2 ** 40) - 5);
  else if (pick === 4) {
    const text = new TextDecoder().decode(bytes).replace(/\d+/, () => String(Math.floor(next() * 1e6)));
    body = new TextEncoder().encode(text);
  } else if (pick === 5) {
    const text = new TextDecoder().decode(bytes).replace(
      /"(FP32|INT64)"/,
      ['"FP64"', '"BOOL"', '"x"', "null", "7"][Math.floor(next() * 5)],
    );
    body = new TextEncoder().encode(text);
  } else if (pick === 6) {
    for (let i = 0; i < 8; i++) bytes[Math.floor(next() * bytes.length)] ^= 1 << Math.floor(next() * 8);
  } else {
    const text = new TextDecoder().decode(bytes).replace(
      /\[[\d, -]+\]/,
      ["[1e308, 4]", "[-1, 4]", "[]", "[2, 4, 1]"][Math.floor(next() * 4)],
    );
    body = new TextEncoder().encode(text);
  }
  return { body, header };
}

/** Server options for tests: `model` on a free loopback port, 2 slots, small limits, then `extra`. */
export function testOptions(model: ServedModel, extra: Partial<ServeOptions> = {}): ServeOptions {
  return {
    models: [model],
    port: 0,
    hostname: "127.0.0.1",
    concurrency: 2,
    queue: 16,
    timeoutMs: 10_000,
    maxBody: 1 << 20,
    maxBatch: 1,
    batchDelayUs: 0,
    intraOpThreads: 1,
    interopThreads: 1,
    version: "test",
    ...extra,
  };
}

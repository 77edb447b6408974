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
import type { ServedModel } from "../../lib/serve/model.ts";

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
    async run(inputs) {
      await new Promise((resolve) => setTimeout(resolve, ms));
      if (fail) throw new Error("kernel exploded");
      return [{ ...inputs[0], data: inputs[0].data.slice() }];
    },
    dispose() {},
  };
}

import assert from "node:assert/strict";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { gemm, importOnnx, load, relu, save, SpindleError, tensor } from "../mod.ts";
import { decodeDescription } from "../lib/program/format.ts";
import { Program } from "../lib/program/program.ts";
import { onnx } from "../tools/fuzz_corpus.ts";

interface NodeSpec {
  op: string;
  inputs: string[];
  outputs: string[];
}

/** A dimension: a size, -1 (the symbolic dimension "batch"), or a symbolic dimension's name. */
type Dim = number | string;

/**
 * A tiny ONNX model: float inputs with dims, float initializers, nodes, and outputs (names,
 * or names with dims; a bare name declares no dims).
 */
function model(
  inputs: { name: string; dims: Dim[] }[],
  initializers: { name: string; dims: number[]; values: number[] }[],
  nodes: NodeSpec[],
  outputs: (string | { name: string; dims: Dim[] })[],
): Uint8Array {
  const w = new BinaryWriter();
  w.uint32((1 << 3) | 0).int64(8); // ir_version
  w.uint32((8 << 3) | 2).fork().uint32((2 << 3) | 0).int64(17).join(); // opset_import
  w.uint32((7 << 3) | 2).fork();
  for (const n of nodes) {
    w.uint32((1 << 3) | 2).fork();
    for (const i of n.inputs) w.uint32((1 << 3) | 2).string(i);
    for (const o of n.outputs) w.uint32((2 << 3) | 2).string(o);
    w.uint32((4 << 3) | 2).string(n.op);
    w.join();
  }
  for (const t of initializers) {
    w.uint32((5 << 3) | 2).fork();
    for (const d of t.dims) w.uint32((1 << 3) | 0).int64(d);
    w.uint32((2 << 3) | 0).int32(1);
    w.uint32((8 << 3) | 2).string(t.name);
    w.uint32((9 << 3) | 2).bytes(new Uint8Array(Float32Array.from(t.values).buffer));
    w.join();
  }
  const valueInfo = (field: number, name: string, dims: Dim[]) => {
    w.uint32((field << 3) | 2).fork().uint32((1 << 3) | 2).string(name);
    w.uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).fork().uint32((1 << 3) | 0).int32(1);
    w.uint32((2 << 3) | 2).fork();
    for (const d of dims) {
      w.uint32((1 << 3) | 2).fork();
      if (typeof d === "string") w.uint32((2 << 3) | 2).string(d);
      else if (d < 0) w.uint32((2 << 3) | 2).string("batch");
      else w.uint32((1 << 3) | 0).int64(d);
      w.join();
    }
    w.join().join().join().join();
  };
  for (const i of inputs) valueInfo(11, i.name, i.dims);
  for (const o of outputs) typeof o === "string" ? valueInfo(12, o, []) : valueInfo(12, o.name, o.dims);
  w.join();
  return w.finish();
}

const weights = { name: "W", dims: [4, 3], values: Array.from({ length: 12 }, (_, i) => (i - 6) / 5) };
const bias = { name: "B", dims: [3], values: [0.5, -1, 2] };
const linear = model([{ name: "x", dims: [-1, 4] }], [weights, bias], [
  { op: "MatMul", inputs: ["x", "W"], outputs: ["p"] },
  { op: "Add", inputs: ["p", "B"], outputs: ["q"] },
  { op: "Relu", inputs: ["q"], outputs: ["y"] },
], ["y"]);

/**
 * Asserts `actual` equals `expected` up to float rounding: a product on a weight packed at load
 * may run on another kernel than the eager op (zig/src/kernels/gemm_small.zig for a few rows),
 * which adds the same products in another order.
 */
function assertCloseValues(actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    const tolerance = 1e-6 * (1 + Math.abs(expected[i]));
    assert.ok(
      Math.abs(Number(actual[i]) - Number(expected[i])) <= tolerance,
      `element ${i}: ${actual[i]}, expected ${expected[i]}`,
    );
  }
}

Deno.test("importOnnx fuses MatMul+Add, keeps the batch dynamic and matches eager ops", () => {
  const image = importOnnx(linear);
  const graph = decodeDescription(image).graphs[0];
  assert.equal(graph.nodes.filter((n) => n.op === "gemm").length, 1);
  assert.equal(graph.nodes.filter((n) => n.op === "add").length, 0);
  assert.deepEqual(graph.inputs[0].shape, [-1, 4]);
  using program = {
    p: Program.load(image),
    [Symbol.dispose]() {
      this.p.dispose();
    },
  };
  for (const batch of [1, 5]) {
    using x = tensor(Array.from({ length: batch * 4 }, (_, i) => Math.sin(i)), [batch, 4]);
    const [y] = program.p.runSync([x]);
    using w = tensor(weights.values, weights.dims);
    using b = tensor(bias.values);
    using product = gemm(x, w, { bias: b });
    using expected = relu(product);
    assert.deepEqual(y.shape, [batch, 3]);
    assertCloseValues(y.toArray() as Float32Array, expected.toArray() as Float32Array);
    y.dispose();
  }
});

Deno.test("importOnnx lists every unsupported op type in one error", () => {
  const bytes = model([{ name: "x", dims: [2] }], [], [
    { op: "Foo", inputs: ["x"], outputs: ["a"] },
    { op: "Relu", inputs: ["a"], outputs: ["b"] },
    { op: "Bar", inputs: ["b"], outputs: ["c"] },
    { op: "Foo", inputs: ["c"], outputs: ["y"] },
  ], ["y"]);
  assert.throws(() => importOnnx(bytes), (error: unknown) => {
    assert.ok(error instanceof SpindleError);
    assert.equal(error.code, "unsupported");
    assert.match(error.message, /\(2\): Bar, Foo/);
    return true;
  });
});

Deno.test("op types named like Object.prototype members are unsupported, not internal errors", () => {
  for (const op of ["toString", "constructor", "hasOwnProperty", "__proto__", "valueOf"]) {
    const bytes = model([{ name: "x", dims: [2] }], [], [{ op, inputs: ["x"], outputs: ["y"] }], ["y"]);
    assert.throws(() => importOnnx(bytes), (error: unknown) => {
      assert.ok(error instanceof SpindleError, `${op}: ${error}`);
      assert.equal(error.code, "unsupported");
      assert.match(error.message, new RegExp(`\\(1\\): ${op}`));
      return true;
    });
  }
});

Deno.test("malformed and truncated ONNX files are malformed_model errors, never crashes", () => {
  const cases: Uint8Array[] = [new Uint8Array([0x0a, 0xff]), new Uint8Array([0xff, 0xff, 0xff]), new Uint8Array(0)];
  for (let cut = 1; cut < linear.length; cut += 7) cases.push(linear.subarray(0, cut));
  let seen = 0;
  for (const bytes of cases) {
    try {
      importOnnx(bytes);
    } catch (error) {
      assert.ok(error instanceof SpindleError, String(error));
      assert.ok(["malformed_model", "unsupported"].includes(error.code), error.message);
      seen++;
    }
  }
  assert.ok(seen >= cases.length - 1);
});

Deno.test("load() reads .onnx files", async () => {
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeFile(path, linear);
  using module = await load(path);
  assert.deepEqual(module.inputs[0].shape, [-1, 4]);
  using x = tensor([1, 2, 3, 4], [1, 4]);
  using y = await module.forward(x);
  assert.deepEqual(y.shape, [1, 3]);
});

Deno.test("ONNX input and output names and symbolic dims survive import, save and load", async () => {
  const bytes = model([{ name: "pixels", dims: ["N", 4] }], [weights, bias], [
    { op: "MatMul", inputs: ["pixels", "W"], outputs: ["p"] },
    { op: "Add", inputs: ["p", "B"], outputs: ["scores"] },
    { op: "Relu", inputs: ["scores"], outputs: ["activations"] },
  ], [{ name: "scores", dims: ["N", 3] }, { name: "activations", dims: ["N", 3] }]);
  const onnxPath = await Deno.makeTempFile({ suffix: ".onnx" });
  const spindlePath = await Deno.makeTempFile({ suffix: ".spindle" });
  await Deno.writeFile(onnxPath, bytes);
  using imported = await load(onnxPath);
  await save(imported, spindlePath);
  using reloaded = await load(spindlePath);
  for (const module of [imported, reloaded]) {
    assert.deepEqual(module.inputNames, ["pixels"]);
    assert.deepEqual(module.outputNames, ["scores", "activations"]);
    assert.deepEqual(module.inputMetadata, [{ name: "pixels", dtype: "float32", shape: ["N", 4] }]);
    assert.deepEqual(module.outputMetadata, [
      { name: "scores", dtype: "float32", shape: ["N", 3] },
      { name: "activations", dtype: "float32", shape: ["N", 3] },
    ]);
    using pixels = tensor([1, -2, 3, -4, 0.5, 0.25, -1, 2], [2, 4]);
    const { scores, activations } = await module.run({ pixels });
    using w = tensor(weights.values, weights.dims);
    using b = tensor(bias.values);
    using expected = gemm(pixels, w, { bias: b });
    using expectedActivations = relu(expected);
    assertCloseValues(scores.toArray() as Float32Array, expected.toArray() as Float32Array);
    assertCloseValues(activations.toArray() as Float32Array, expectedActivations.toArray() as Float32Array);
    scores.dispose();
    activations.dispose();
  }
  // A fixed size for the symbolic dimension replaces its name.
  using fixed = await load(onnxPath, { inputShapes: { pixels: [2, 4] } });
  assert.deepEqual(fixed.inputMetadata[0].shape, [2, 4]);
  assert.deepEqual(fixed.outputMetadata[1].shape, [2, 3]);
  await Deno.remove(onnxPath);
  await Deno.remove(spindlePath);
});

Deno.test("absurd Conv and pooling pads are refused before anything runs; pads within the rules import", () => {
  const model = (op: string, pads: number[], kernel: number) =>
    onnx({
      opset: 17,
      nodes: [{
        op,
        inputs: op === "Conv" ? ["x", "W"] : ["x"],
        outputs: ["y"],
        attributes: { pads: { ints: pads }, kernel_shape: { ints: [kernel, kernel] } },
      }],
      initializers: op === "Conv"
        ? [{ name: "W", dims: [1, 1, kernel, kernel], float: Array(kernel * kernel).fill(1) }]
        : [],
      inputs: [{ name: "x", dims: [1, 1, 4, 4] }],
      outputs: [{ name: "y", dims: [1, 1, "h", "w"] }],
    });
  const refused = (pattern: RegExp) => (e: unknown) =>
    e instanceof SpindleError && e.code === "malformed_model" && pattern.test(e.message);
  // Conv: up to the dilated kernel plus the input (3 + 4) on each side.
  importOnnx(model("Conv", [7, 0, 0, 7], 3));
  assert.throws(
    () => importOnnx(model("Conv", [0, 0, 1000, 0], 3)),
    refused(/the end pad of the height is 1000; it must be at most the dilated kernel \(3\) plus the input \(4\)/),
  );
  // Pooling: smaller than the kernel, as onnxruntime requires.
  importOnnx(model("MaxPool", [2, 2, 2, 2], 3));
  assert.throws(
    () => importOnnx(model("MaxPool", [0, 3, 0, 0], 3)),
    refused(/the begin pad of the width is 3; it must be smaller than the kernel \(3\), as onnxruntime requires/),
  );
  assert.throws(() => importOnnx(model("AveragePool", [0, 0, 0, -1], 2)), refused(/end pad of the width is -1/));
});

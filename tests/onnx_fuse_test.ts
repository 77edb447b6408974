import assert from "node:assert/strict";
import { randn, type Tensor, tensor } from "../mod.ts";
import { decodeDescription, encodeImage, type NodeDescription, type ProgramSource } from "../lib/program/format.ts";
import { Program } from "../lib/program/program.ts";
import { dropDeadConstants, fuse } from "../lib/onnx/fuse.ts";

/** A one-graph program: input 0 of `shape`, constants as values 1…, then `nodes`. */
function program(
  shape: number[],
  constants: { shape: number[]; values: number[] }[],
  nodes: NodeDescription[],
  outputs: number[],
): ProgramSource {
  const values = Math.max(constants.length, ...nodes.flatMap((n) => n.outputs)) + 1;
  return {
    tensors: constants.map((c) => ({
      dtype: "float32",
      shape: c.shape,
      data: new Uint8Array(Float32Array.from(c.values).buffer),
    })),
    graphs: [{
      inputs: [{ dtype: "float32", shape }],
      values,
      nodes: [...constants.map((_, i) => ({ op: "constant", outputs: [i + 1], tensor: i })), ...nodes],
      outputs,
    }],
  };
}

function wave(count: number, phase: number): number[] {
  return Array.from({ length: count }, (_, i) => Math.sin(i * 0.7 + phase) * 0.8);
}

/** Runs the program as written and fused; returns the fused graph's ops. */
function checkFused(
  source: ProgramSource,
  input: Tensor,
  shape?: (value: number) => readonly number[] | undefined,
): string[] {
  const original = Program.load(encodeImage(structuredClone(source)));
  const fusedSource = structuredClone(source);
  fuse(fusedSource, { shape });
  dropDeadConstants(fusedSource);
  const fused = Program.load(encodeImage(fusedSource));
  try {
    const want = original.runSync([input]);
    const got = fused.runSync([input]);
    assert.equal(got.length, want.length);
    want.forEach((w, i) => {
      const a = w.toArray() as Float32Array;
      const b = got[i].toArray() as Float32Array;
      assert.deepEqual(got[i].shape, w.shape);
      for (let j = 0; j < a.length; j++) {
        assert.ok(Math.abs(a[j] - b[j]) <= 1e-5 * (1 + Math.abs(a[j])), `output ${i}[${j}]: ${b[j]} vs ${a[j]}`);
      }
      w.dispose();
      got[i].dispose();
    });
  } finally {
    original.dispose();
    fused.dispose();
  }
  return fusedSource.graphs[0].nodes.filter((n) => n.op !== "constant").map((n) => n.op);
}

const hardSwish = (x: number, first: number): NodeDescription[] => [
  { op: "add", inputs: [x], outputs: [first], params: { scalar: 3 } },
  { op: "clamp", inputs: [first], outputs: [first + 1], params: { min: 0, max: 6 } },
  { op: "mul", inputs: [x, first + 1], outputs: [first + 2] },
  { op: "div", inputs: [first + 2], outputs: [first + 3], params: { scalar: 6 } },
];

Deno.test("fuse: conv → affine → exported HardSwish → affine becomes one conv", () => {
  // 3 → 5 channels, 3×3, padding 1, bias.
  const source = program([2, 3, 7, 9], [
    { shape: [5, 3, 3, 3], values: wave(135, 0) },
    { shape: [5], values: wave(5, 1) },
  ], [
    { op: "conv2d", inputs: [0, 1, 2], outputs: [3], params: { padding: [1, 1], has_bias: true } },
    { op: "mul", inputs: [3], outputs: [4], params: { scalar: 1.7, scalar_first: true } },
    { op: "add", inputs: [4], outputs: [5], params: { scalar: 0.4 } },
    ...hardSwish(5, 6),
    { op: "mul", inputs: [9], outputs: [10], params: { scalar: 0.6, scalar_first: true } },
    { op: "sub", inputs: [10], outputs: [11], params: { scalar: 0.2 } },
  ], [11]);
  using x = randn([2, 3, 7, 9], { seed: 1 });
  assert.deepEqual(checkFused(source, x), ["conv2d"]);
});

Deno.test("fuse: depthwise conv + relu, conv_transpose + x·hard_sigmoid(x), and a bias-less conv + div", () => {
  const source = program([1, 4, 6, 5], [
    { shape: [4, 1, 3, 3], values: wave(36, 2) },
    { shape: [4, 2, 2, 2], values: wave(32, 3) },
    { shape: [2, 2, 1, 1], values: wave(4, 4) },
  ], [
    { op: "conv2d", inputs: [0, 1], outputs: [4], params: { padding: [1, 1], groups: 4 } },
    { op: "relu", inputs: [4], outputs: [5] },
    { op: "conv_transpose2d", inputs: [5, 2], outputs: [6], params: { stride: [2, 2] } },
    { op: "sub", inputs: [6], outputs: [7], params: { scalar: 0.5, scalar_first: true } }, // 0.5 − x
    { op: "hard_sigmoid", inputs: [7], outputs: [8], params: { alpha: 1 / 6, beta: 0.5 } },
    { op: "mul", inputs: [8, 7], outputs: [9] },
    { op: "conv2d", inputs: [9, 3], outputs: [10], params: {} },
    { op: "div", inputs: [10], outputs: [11], params: { scalar: 4 } },
  ], [11]);
  using x = randn([1, 4, 6, 5], { seed: 2 });
  assert.deepEqual(checkFused(source, x), ["conv2d", "conv_transpose2d", "conv2d"]);
});

Deno.test("fuse: values read elsewhere are left alone", () => {
  const source = program([1, 2, 4, 4], [{ shape: [3, 2, 1, 1], values: wave(6, 5) }], [
    { op: "conv2d", inputs: [0, 1], outputs: [2], params: {} },
    { op: "mul", inputs: [2], outputs: [3], params: { scalar: 2 } }, // conv output is also a graph output
    ...hardSwish(3, 4),
    { op: "add", inputs: [5], outputs: [8], params: { scalar: 1 } }, // the clamp is read twice
  ], [2, 7, 8]);
  using x = randn([1, 2, 4, 4], { seed: 3 });
  const ops = checkFused(source, x);
  assert.deepEqual(ops, ["conv2d", "mul", "add", "clamp", "mul", "div", "add"]);
});

Deno.test("fuse: the decomposed LayerNorm over the last axis becomes layer_norm", () => {
  const size = 12;
  const layerNorm = (axis: number, gammaShape: number[]) =>
    program([3, 5, size], [
      { shape: gammaShape, values: wave(size, 6).map((v) => v + 1) },
      { shape: [size], values: wave(size, 7) },
    ], [
      { op: "mean", inputs: [0], outputs: [3], params: { dims: [axis], keepdim: true } },
      { op: "sub", inputs: [0, 3], outputs: [4] },
      { op: "pow", inputs: [4], outputs: [5], params: { scalar: 2 } },
      { op: "mean", inputs: [5], outputs: [6], params: { dims: [axis], keepdim: true } },
      { op: "add", inputs: [6], outputs: [7], params: { scalar: 1e-5 } },
      { op: "sqrt", inputs: [7], outputs: [8] },
      { op: "div", inputs: [4, 8], outputs: [9] },
      { op: "mul", inputs: [9, 1], outputs: [10] },
      { op: "add", inputs: [10, 2], outputs: [11] },
    ], [11]);
  using x = randn([3, 5, size], { seed: 4 });
  const rank = (value: number) => (value === 0 ? [3, 5, size] : undefined);
  assert.deepEqual(checkFused(layerNorm(2, [1, 1, size]), x, rank), ["layer_norm"]);
  assert.deepEqual(checkFused(layerNorm(-1, [size]), x, rank), ["layer_norm"]);
  // Over another axis, or without knowing the rank: unchanged.
  assert.equal(checkFused(layerNorm(1, [size]), x, rank).length, 9);
  assert.equal(checkFused(layerNorm(2, [size]), x).length, 9);
});

Deno.test("model images carry infinite and NaN parameters (max pooling's -Infinity padding, a NaN scalar)", () => {
  const source = program([1, 1, 2, 2], [], [
    {
      op: "pad",
      inputs: [0],
      outputs: [1],
      params: { mode: "constant", value: -Infinity, pads: [0, 0, 1, 1, 0, 0, 1, 1] },
    },
    { op: "clamp", inputs: [1], outputs: [2], params: { min: null, max: Infinity } },
    { op: "mul", inputs: [0], outputs: [3], params: { scalar: NaN } },
  ], [2, 3]);
  const image = encodeImage(source);
  const nodes = decodeDescription(image).graphs[0].nodes;
  assert.equal(nodes[0].params?.value, "-Infinity"); // JSON spells non-finite numbers as strings
  assert.equal(nodes[2].params?.scalar, "NaN");
  using p = {
    program: Program.load(image),
    [Symbol.dispose]() {
      this.program.dispose();
    },
  };
  using x = randn([1, 1, 2, 2], { seed: 9 });
  const [y, z] = p.program.runSync([x]);
  const values = Array.from(y.toArray() as Float32Array);
  const nans = Array.from(z.toArray() as Float32Array);
  y.dispose();
  z.dispose();
  assert.equal(values.filter((v) => v === -Infinity).length, 16 - 4);
  assert.deepEqual(values.filter(Number.isFinite), Array.from(x.toArray() as Float32Array));
  assert.ok(nans.length === 4 && nans.every(Number.isNaN));
});

Deno.test("fuse: conv2d → batch_norm (constant statistics) → relu becomes one conv", () => {
  const source = program([2, 3, 6, 5], [
    { shape: [4, 3, 3, 3], values: wave(108, 8) },
    { shape: [4], values: wave(4, 9) }, // mean
    { shape: [4], values: wave(4, 10).map((v) => v * v + 0.5) }, // variance
    { shape: [4], values: wave(4, 11).map((v) => v + 1) }, // γ
    { shape: [4], values: wave(4, 12) }, // β
  ], [
    { op: "conv2d", inputs: [0, 1], outputs: [6], params: { padding: [1, 1] } },
    {
      op: "batch_norm",
      inputs: [6, 2, 3, 4, 5],
      outputs: [7],
      params: { eps: 1e-3, has_weight: true, has_bias: true },
    },
    { op: "relu", inputs: [7], outputs: [8] },
  ], [8]);
  using x = randn([2, 3, 6, 5], { seed: 5 });
  assert.deepEqual(checkFused(source, x), ["conv2d"]);
});

Deno.test("fuse: gemm + a constant row becomes the gemm's bias; other adds stay", () => {
  const shapes = new Map<number, number[]>([[3, [2, 5, 4]], [5, [2, 5, 4]]]);
  const source = program([2, 5, 3], [
    { shape: [3, 4], values: wave(12, 13) },
    { shape: [1, 4], values: wave(4, 14) }, // a row: fused
    { shape: [5, 1], values: wave(5, 15) }, // a column: not a bias
  ], [
    { op: "gemm", inputs: [0, 1], outputs: [4] },
    { op: "add", inputs: [2, 4], outputs: [5] },
    { op: "gemm", inputs: [0, 1], outputs: [6] },
    { op: "add", inputs: [6, 3], outputs: [7] },
  ], [5, 7]);
  // Values 4 and 6 are the gemm outputs; the shape hint knows them.
  const shape = (value: number) => (value === 4 || value === 6 ? [2, 5, 4] : shapes.get(value));
  using x = randn([2, 5, 3], { seed: 6 });
  assert.deepEqual(checkFused(source, x, shape), ["gemm", "gemm", "add"]);
});

Deno.test("fuse: an activation after a gemm, mm or 2-D matmul (after its bias) becomes the gemm's activation", () => {
  const activations: NodeDescription[] = [
    { op: "relu", inputs: [], outputs: [] },
    { op: "gelu", inputs: [], outputs: [] },
    { op: "gelu", inputs: [], outputs: [], params: { approximate: "tanh" } },
    { op: "sigmoid", inputs: [], outputs: [] },
    { op: "tanh", inputs: [], outputs: [] },
    { op: "hard_swish", inputs: [], outputs: [] },
  ];
  for (const activation of activations) {
    for (const product of ["gemm", "mm", "matmul"]) {
      // [5, 3] · [3, 4] + row bias, then the activation.
      const source = program([5, 3], [
        { shape: [3, 4], values: wave(12, 31) },
        { shape: [4], values: wave(4, 32) },
      ], [
        { op: product, inputs: [0, 1], outputs: [3] },
        { op: "add", inputs: [3, 2], outputs: [4] },
        { ...activation, inputs: [4], outputs: [5] },
      ], [5]);
      const shapes: Record<number, number[]> = { 0: [5, 3], 1: [3, 4], 3: [5, 4], 4: [5, 4] };
      const shape = (value: number) => shapes[value];
      using x = randn([5, 3], { seed: 33 });
      const label = `${product} + ${activation.op}${activation.params ? " (tanh)" : ""}`;
      assert.deepEqual(checkFused(structuredClone(source), x, shape), ["gemm"], label);
      const fused = structuredClone(source);
      fuse(fused, { shape });
      const gemm = fused.graphs[0].nodes.find((n) => n.op === "gemm")!;
      const want = activation.op === "gelu" ? (activation.params ? "gelu_tanh" : "gelu") : activation.op;
      assert.equal(gemm.params?.activation, want, label);
      assert.equal(gemm.params?.has_bias, true, label);
    }
  }
});

Deno.test("fuse: the exported erf GELU becomes gelu, then the gemm's activation", () => {
  // x · (erf(x / √2) + 1) · 0.5 in the two orders exporters write, the division also as a
  // product by 1/√2; after a gemm + bias the gelu then fuses into the gemm.
  const forms: ((x: number, first: number) => NodeDescription[])[] = [
    (x, first) => [
      { op: "div", inputs: [x], outputs: [first], params: { scalar: Math.fround(Math.SQRT2) } },
      { op: "erf", inputs: [first], outputs: [first + 1] },
      { op: "add", inputs: [first + 1], outputs: [first + 2], params: { scalar: 1 } },
      { op: "mul", inputs: [x, first + 2], outputs: [first + 3] },
      { op: "mul", inputs: [first + 3], outputs: [first + 4], params: { scalar: 0.5 } },
    ],
    (x, first) => [
      { op: "mul", inputs: [x], outputs: [first], params: { scalar: 0.5 } },
      { op: "mul", inputs: [x], outputs: [first + 1], params: { scalar: Math.SQRT1_2 } },
      { op: "erf", inputs: [first + 1], outputs: [first + 2] },
      { op: "add", inputs: [first + 2], outputs: [first + 3], params: { scalar: 1, scalar_first: true } },
      { op: "mul", inputs: [first + 3, first], outputs: [first + 4] },
    ],
  ];
  for (const [i, form] of forms.entries()) {
    const alone = program([4, 9], [], form(0, 1), [5]);
    using x = randn([4, 9], { seed: 51 });
    assert.deepEqual(checkFused(alone, x), ["gelu"], `form ${i}`);
    const source = program([5, 3], [
      { shape: [3, 4], values: wave(12, 52) },
      { shape: [4], values: wave(4, 53) },
    ], [
      { op: "gemm", inputs: [0, 1], outputs: [3] },
      { op: "add", inputs: [3, 2], outputs: [4] },
      ...form(4, 5),
    ], [9]);
    using y = randn([5, 3], { seed: 54 });
    const shapes: Record<number, number[]> = { 0: [5, 3], 1: [3, 4], 3: [5, 4], 4: [5, 4] };
    assert.deepEqual(checkFused(source, y, (value) => shapes[value]), ["gemm"], `form ${i} after a gemm`);
  }
  // Another constant (not √2, not 1, not 0.5) is not a GELU.
  const other = program([4, 9], [], form0(0, 1, 1.5), [5]);
  using z = randn([4, 9], { seed: 55 });
  assert.deepEqual(checkFused(other, z), ["div", "erf", "add", "mul", "mul"]);
});

function form0(x: number, first: number, divisor: number): NodeDescription[] {
  return [
    { op: "div", inputs: [x], outputs: [first], params: { scalar: divisor } },
    { op: "erf", inputs: [first], outputs: [first + 1] },
    { op: "add", inputs: [first + 1], outputs: [first + 2], params: { scalar: 1 } },
    { op: "mul", inputs: [x, first + 2], outputs: [first + 3] },
    { op: "mul", inputs: [first + 3], outputs: [first + 4], params: { scalar: 0.5 } },
  ];
}

Deno.test("fuse: no bias after a gemm's activation, no activation on a product read elsewhere or a batched matmul", () => {
  const source = program([2, 5, 3], [
    { shape: [3, 4], values: wave(12, 41) },
    { shape: [1, 4], values: wave(4, 42) },
  ], [
    // relu(gemm) + bias: the activation fuses, the bias after it stays an add.
    { op: "gemm", inputs: [0, 1], outputs: [3] },
    { op: "relu", inputs: [3], outputs: [4] },
    { op: "add", inputs: [4, 2], outputs: [5] },
    // A product that is also a graph output keeps its own relu.
    { op: "gemm", inputs: [0, 1], outputs: [6] },
    { op: "relu", inputs: [6], outputs: [7] },
    // A batched matmul (3-D a) is not a gemm.
    { op: "matmul", inputs: [0, 1], outputs: [8] },
    { op: "sigmoid", inputs: [8], outputs: [9] },
  ], [5, 6, 7, 9]);
  const shape = (
    value: number,
  ) => (value === 0 || value === 8 ? [2, 5, value === 0 ? 3 : 4] : value === 1 ? [3, 4] : undefined);
  using x = randn([2, 5, 3], { seed: 43 });
  assert.deepEqual(checkFused(source, x, shape), ["gemm", "add", "gemm", "relu", "matmul", "sigmoid"]);
});

Deno.test("fuse: grouped conv_transpose2d → add of a per-channel constant → batch_norm → relu becomes one conv_transpose2d", () => {
  // 4 → 6 channels in 2 groups, kernel 2, stride 2 (PP-OCR's DB head, grouped for coverage).
  const source = program([2, 4, 3, 5], [
    { shape: [4, 3, 2, 2], values: wave(48, 20) },
    { shape: [1, 6, 1, 1], values: wave(6, 21) }, // the bias, added after the op
    { shape: [6], values: wave(6, 22) }, // mean
    { shape: [6], values: wave(6, 23).map((v) => v * v + 0.5) }, // variance
    { shape: [6], values: wave(6, 24).map((v) => v + 1) }, // γ
    { shape: [6], values: wave(6, 25) }, // β
  ], [
    { op: "conv_transpose2d", inputs: [0, 1], outputs: [7], params: { stride: [2, 2], groups: 2 } },
    { op: "add", inputs: [7, 2], outputs: [8] },
    {
      op: "batch_norm",
      inputs: [8, 3, 4, 5, 6],
      outputs: [9],
      params: { eps: 1e-5, has_weight: true, has_bias: true },
    },
    { op: "relu", inputs: [9], outputs: [10] },
  ], [10]);
  const shape = (value: number) => (value === 7 || value === 8 ? [2, 6, 6, 10] : undefined);
  using x = randn([2, 4, 3, 5], { seed: 7 });
  assert.deepEqual(checkFused(source, x, shape), ["conv_transpose2d"]);
});

Deno.test("fuse: a per-channel add that would grow the output, or is not per channel, stays", () => {
  const source = program([3, 5, 4], [
    { shape: [2, 3, 1, 1], values: wave(6, 26) },
    { shape: [1, 2, 1, 1], values: wave(2, 27) }, // 4-D: would make the 3-D output 4-D
    { shape: [1, 2, 5, 1], values: wave(10, 28) }, // per row: not a bias
  ], [
    { op: "conv2d", inputs: [0, 1], outputs: [4] },
    { op: "add", inputs: [4, 2], outputs: [5] },
    { op: "conv2d", inputs: [0, 1], outputs: [6] },
    { op: "add", inputs: [3, 6], outputs: [7] },
  ], [5, 7]);
  const shape = (value: number) => (value === 4 || value === 6 ? [2, 5, 4] : undefined);
  using x = randn([3, 5, 4], { seed: 8 });
  assert.deepEqual(checkFused(source, x, shape), ["conv2d", "add", "conv2d", "add"]);
});

Deno.test("fuse: x + x·gate with a per-channel gate becomes x·(gate + 1)", () => {
  const source = program([2, 3, 4, 5], [], [
    { op: "mean", inputs: [0], outputs: [1], params: { dims: [2, 3], keepdim: true } },
    { op: "hard_sigmoid", inputs: [1], outputs: [2], params: { alpha: 0.2, beta: 0.5 } },
    { op: "mul", inputs: [0, 2], outputs: [3] },
    { op: "add", inputs: [3, 0], outputs: [4] },
    // Same-size operands: nothing to gain, left alone.
    { op: "mul", inputs: [4, 0], outputs: [5] },
    { op: "add", inputs: [4, 5], outputs: [6] },
  ], [6]);
  const shape = (value: number) => (value === 1 || value === 2 ? [2, 3, 1, 1] : [2, 3, 4, 5]);
  using x = randn([2, 3, 4, 5], { seed: 9 });
  assert.deepEqual(checkFused(source, x, shape), ["mean", "hard_sigmoid", "add", "mul", "mul", "add"]);
});

Deno.test("load: subnormal weights that only products read are zero, other constants are kept", () => {
  const tiny = 2 ** -140; // subnormal in float32; 2^100 · tiny = 2^-40 is a normal float
  const x = tensor(new Float32Array([2 ** 100]), [1, 1]);
  const run = (nodes: NodeDescription[], outputs: number[]) => {
    const source = program(
      [1, 1],
      [{ shape: [1, 1], values: [tiny] }, { shape: [1, 1], values: [-tiny] }],
      nodes,
      outputs,
    );
    const loaded = Program.load(encodeImage(source));
    try {
      return loaded.runSync([x]).map((t) => {
        const value = (t.toArray() as Float32Array)[0];
        t.dispose();
        return value;
      });
    } finally {
      loaded.dispose();
    }
  };
  // Read by mm alone: flushed (the sign kept); read by mul: kept.
  const [product, negative, scaled] = run([
    { op: "mm", inputs: [0, 1], outputs: [3] },
    { op: "mm", inputs: [0, 2], outputs: [4] },
    { op: "mul", inputs: [0, 2], outputs: [5] },
  ], [3, 4, 5]);
  assert.ok(Object.is(product, 0), `mm by a flushed weight: ${product}`);
  assert.equal(negative, -(2 ** -40), "a constant that mul also reads is kept");
  assert.equal(scaled, -(2 ** -40));
  // A product weight that is also a graph output is kept.
  const [output, viaOutput] = run([{ op: "mm", inputs: [0, 1], outputs: [3] }], [1, 3]);
  assert.equal(output, Math.fround(tiny));
  assert.equal(viaOutput, 2 ** -40);
});

Deno.test("fuse: products of one input by constant weights become one gemm and a slice each", () => {
  // mm, 2-D matmul and gemm by [8, 4], [8, 6], [8, 3]: one gemm by [8, 13], three slices.
  const plain = program([5, 8], [
    { shape: [8, 4], values: wave(32, 41) },
    { shape: [8, 6], values: wave(48, 42) },
    { shape: [8, 3], values: wave(24, 43) },
  ], [
    { op: "mm", inputs: [0, 1], outputs: [4] },
    { op: "matmul", inputs: [0, 2], outputs: [5] },
    { op: "gemm", inputs: [0, 3], outputs: [6] },
    { op: "add", inputs: [4, 4], outputs: [7] },
  ], [7, 5, 6]);
  const plainShapes: Record<number, number[]> = { 0: [5, 8], 2: [8, 6], 4: [5, 4], 5: [5, 6], 6: [5, 3] };
  using x = randn([5, 8], { seed: 44 });
  assert.deepEqual(checkFused(plain, x, (v) => plainShapes[v]), ["gemm", "slice", "slice", "slice", "add"]);

  // Linear layers with biases (a constant row added after each), the weights stored [n, k]
  // (transB), on a batched input: the biases join the gemm first, then the gemms join.
  const linear = program([2, 5, 8], [
    { shape: [4, 8], values: wave(32, 45) },
    { shape: [4], values: wave(4, 46) },
    { shape: [6, 8], values: wave(48, 47) },
    { shape: [1, 6], values: wave(6, 48) },
  ], [
    { op: "gemm", inputs: [0, 1], outputs: [5], params: { trans_b: true } },
    { op: "add", inputs: [5, 2], outputs: [6] },
    { op: "gemm", inputs: [0, 3], outputs: [7], params: { trans_b: true } },
    { op: "add", inputs: [7, 4], outputs: [8] },
  ], [6, 8]);
  const linearShapes: Record<number, number[]> = { 5: [2, 5, 4], 6: [2, 5, 4], 7: [2, 5, 6], 8: [2, 5, 6] };
  using batched = randn([2, 5, 8], { seed: 49 });
  assert.deepEqual(checkFused(structuredClone(linear), batched, (v) => linearShapes[v]), ["gemm", "slice", "slice"]);
  const fused = structuredClone(linear);
  fuse(fused, { shape: (v) => linearShapes[v] });
  const gemm = fused.graphs[0].nodes.find((n) => n.op === "gemm")!;
  assert.equal(gemm.params?.trans_b, true);
  assert.equal(gemm.params?.has_bias, true);
  const weight = fused.graphs[0].nodes.find((n) => n.op === "constant" && n.outputs[0] === gemm.inputs![1])!;
  assert.deepEqual(fused.tensors[weight.tensor!].shape, [10, 8]);
});

Deno.test("fuse: products that differ in activation, transposition or input stay apart", () => {
  const source = program([5, 8], [
    { shape: [8, 4], values: wave(32, 51) },
    { shape: [8, 4], values: wave(32, 52) },
    { shape: [4, 8], values: wave(32, 53) },
  ], [
    { op: "mm", inputs: [0, 1], outputs: [4] },
    { op: "gemm", inputs: [0, 2], outputs: [5], params: { activation: "relu" } },
    { op: "gemm", inputs: [0, 3], outputs: [6], params: { trans_b: true } },
    { op: "relu", inputs: [0], outputs: [7] },
    { op: "mm", inputs: [7, 2], outputs: [8] },
  ], [4, 5, 6, 8]);
  const shapes: Record<number, number[]> = { 0: [5, 8], 4: [5, 4], 5: [5, 4], 6: [5, 4], 7: [5, 8], 8: [5, 4] };
  using x = randn([5, 8], { seed: 54 });
  assert.deepEqual(checkFused(source, x, (v) => shapes[v]), ["mm", "gemm", "gemm", "relu", "mm"]);
});

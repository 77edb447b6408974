/**
 * The fuzzer's seed corpus (tests/fuzz/corpus/): tiny ONNX models written with the protobuf
 * writer the tests use, covering the op types import handles most often (Conv, Relu, MatMul,
 * Add, Reshape, Gemm, Pad, Resize, the Shape→Gather→Concat→Reshape chains exporters emit …),
 * and small Spindle model files saved from scripted modules through the public API (plain
 * ops, a fork/wait pair, embeddings, several outputs, an imported ONNX model with symbolic
 * dimensions). Every file is a few KB, so the whole corpus stays small enough to commit.
 *
 * `deno run -A tools/fuzz_corpus.ts` rewrites the corpus; the files are deterministic (fixed
 * seeds), so regenerating an unchanged corpus changes nothing.
 *
 * @module
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import {
  adaptiveAvgPool2d,
  add,
  argmax,
  batchNorm,
  concat,
  conv2d,
  cumsum,
  embedding,
  embeddingBag,
  flatten,
  fork,
  gelu,
  importOnnx,
  layerNorm,
  linear,
  maxPool2d,
  mm,
  Module,
  mul,
  permute,
  randn,
  relu,
  reshape,
  script,
  sigmoid,
  slice,
  softmax,
  sum,
  type Tensor,
  tensor,
  unsqueeze,
  wait,
} from "../mod.ts";
import { ROOT } from "./configs.ts";

/** Where the committed seed corpus lives. */
export const CORPUS_DIR = `${ROOT}/tests/fuzz/corpus`;

// ------------------------------------------------------------------------------------------
// A small ONNX writer: nodes with attributes, float and int64 initializers, typed inputs.

/** An attribute value, tagged with its ONNX attribute type. */
export type Attribute =
  | { i: number }
  | { f: number }
  | { s: string }
  | { ints: number[] }
  | { floats: number[] }
  | { strings: string[] }
  | { t: Initializer }
  | { g: OnnxGraph };

/** A node: op type, input and output names, attributes. */
export interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attributes?: Record<string, Attribute>;
}

/** A constant tensor: float32 (`float`) or int64 (`int64`) values (`dataType` overrides the type). */
export interface Initializer {
  name: string;
  dims: number[];
  float?: number[];
  int64?: number[];
  dataType?: number;
}

/** A graph input or output: ONNX element type (1 float, 7 int64) and dims (a string is symbolic). */
export interface ValueInfo {
  name: string;
  type?: number;
  dims: (number | string)[];
}

/** A graph: nodes, initializers, inputs and outputs (a subgraph's outer names are read as is). */
export interface OnnxGraph {
  nodes: Node[];
  initializers: Initializer[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

/** A one-graph ONNX model. */
export interface OnnxModel extends OnnxGraph {
  opset: number;
}

const FLOAT = 1;
const INT64 = 7;

function writeTensor(w: BinaryWriter, t: Initializer): void {
  for (const d of t.dims) w.uint32((1 << 3) | 0).int64(d);
  w.uint32((2 << 3) | 0).int32(t.dataType ?? (t.int64 !== undefined ? INT64 : FLOAT));
  w.uint32((8 << 3) | 2).string(t.name);
  const data = t.int64 !== undefined
    ? new Uint8Array(BigInt64Array.from(t.int64, BigInt).buffer)
    : new Uint8Array(Float32Array.from(t.float ?? []).buffer);
  w.uint32((9 << 3) | 2).bytes(data);
}

function writeAttribute(w: BinaryWriter, name: string, a: Attribute): void {
  w.uint32((1 << 3) | 2).string(name);
  if ("i" in a) w.uint32((3 << 3) | 0).int64(a.i).uint32((20 << 3) | 0).int32(2);
  else if ("f" in a) w.uint32((2 << 3) | 5).float(a.f).uint32((20 << 3) | 0).int32(1);
  else if ("s" in a) w.uint32((4 << 3) | 2).string(a.s).uint32((20 << 3) | 0).int32(3);
  else if ("t" in a) {
    w.uint32((5 << 3) | 2).fork();
    writeTensor(w, a.t);
    w.join().uint32((20 << 3) | 0).int32(4);
  } else if ("g" in a) {
    w.uint32((6 << 3) | 2).fork();
    writeGraph(w, a.g, name);
    w.join().uint32((20 << 3) | 0).int32(5);
  } else if ("strings" in a) {
    for (const v of a.strings) w.uint32((9 << 3) | 2).string(v);
    w.uint32((20 << 3) | 0).int32(8);
  } else if ("ints" in a) {
    for (const v of a.ints) w.uint32((8 << 3) | 0).int64(v);
    w.uint32((20 << 3) | 0).int32(7);
  } else {
    for (const v of a.floats) w.uint32((7 << 3) | 5).float(v);
    w.uint32((20 << 3) | 0).int32(6);
  }
}

function writeValueInfo(w: BinaryWriter, field: number, v: ValueInfo): void {
  w.uint32((field << 3) | 2).fork().uint32((1 << 3) | 2).string(v.name);
  w.uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).fork().uint32((1 << 3) | 0).int32(v.type ?? FLOAT);
  w.uint32((2 << 3) | 2).fork();
  for (const d of v.dims) {
    w.uint32((1 << 3) | 2).fork();
    if (typeof d === "string") w.uint32((2 << 3) | 2).string(d);
    else w.uint32((1 << 3) | 0).int64(d);
    w.join();
  }
  w.join().join().join().join();
}

/** Encodes a model as an ONNX ModelProto (IR version 8). */
export function onnx(m: OnnxModel): Uint8Array {
  const w = new BinaryWriter();
  w.uint32((1 << 3) | 0).int64(8); // ir_version
  w.uint32((8 << 3) | 2).fork().uint32((2 << 3) | 0).int64(m.opset).join(); // opset_import
  w.uint32((7 << 3) | 2).fork(); // graph
  writeGraph(w, m, "fuzz_seed");
  w.join();
  return w.finish();
}

/** Writes a GraphProto's fields (nodes, name, initializers, inputs, outputs). */
function writeGraph(w: BinaryWriter, m: OnnxGraph, graphName: string): void {
  m.nodes.forEach((n, index) => {
    w.uint32((1 << 3) | 2).fork();
    for (const i of n.inputs) w.uint32((1 << 3) | 2).string(i);
    for (const o of n.outputs) w.uint32((2 << 3) | 2).string(o);
    w.uint32((3 << 3) | 2).string(`${n.op.toLowerCase()}_${index}`);
    w.uint32((4 << 3) | 2).string(n.op);
    for (const [name, a] of Object.entries(n.attributes ?? {})) {
      w.uint32((5 << 3) | 2).fork();
      writeAttribute(w, name, a);
      w.join();
    }
    w.join();
  });
  w.uint32((2 << 3) | 2).string(graphName);
  for (const t of m.initializers) {
    w.uint32((5 << 3) | 2).fork();
    writeTensor(w, t);
    w.join();
  }
  for (const i of m.inputs) writeValueInfo(w, 11, i);
  for (const o of m.outputs) writeValueInfo(w, 12, o);
}

/** Deterministic small weights (a fixed sine pattern, no RNG state to keep in step). */
function values(count: number, scale = 0.5): number[] {
  return Array.from({ length: count }, (_, i) => Math.round(Math.sin(i * 1.7 + 0.3) * scale * 1000) / 1000);
}

function floats(name: string, dims: number[], scale = 0.5): Initializer {
  return { name, dims, float: values(dims.reduce((a, b) => a * b, 1), scale) };
}

function int64s(name: string, data: number[], dims: number[] = [data.length]): Initializer {
  return { name, dims, int64: data };
}

/** The ONNX seeds: one small model per family of ops. */
export function onnxSeeds(): Record<string, Uint8Array> {
  return {
    // x[batch, 4] → MatMul → Add → Relu: the fusion import does first.
    "linear.onnx": onnx({
      opset: 17,
      nodes: [
        { op: "MatMul", inputs: ["x", "W"], outputs: ["p"] },
        { op: "Add", inputs: ["p", "B"], outputs: ["q"] },
        { op: "Relu", inputs: ["q"], outputs: ["y"] },
      ],
      initializers: [floats("W", [4, 3]), floats("B", [3])],
      inputs: [{ name: "x", dims: ["batch", 4] }],
      outputs: [{ name: "y", dims: ["batch", 3] }],
    }),
    // A small CNN head: Conv (padded, strided) → Relu → MaxPool → GlobalAveragePool → Flatten → Gemm.
    "conv.onnx": onnx({
      opset: 17,
      nodes: [
        {
          op: "Conv",
          inputs: ["x", "Wc", "Bc"],
          outputs: ["c"],
          attributes: { pads: { ints: [1, 1, 1, 1] }, strides: { ints: [2, 2] }, kernel_shape: { ints: [3, 3] } },
        },
        { op: "Relu", inputs: ["c"], outputs: ["r"] },
        {
          op: "MaxPool",
          inputs: ["r"],
          outputs: ["m"],
          attributes: { kernel_shape: { ints: [2, 2] }, strides: { ints: [1, 1] } },
        },
        { op: "GlobalAveragePool", inputs: ["m"], outputs: ["g"] },
        { op: "Flatten", inputs: ["g"], outputs: ["f"], attributes: { axis: { i: 1 } } },
        {
          op: "Gemm",
          inputs: ["f", "Wg", "Bg"],
          outputs: ["y"],
          attributes: { transB: { i: 1 }, alpha: { f: 1 }, beta: { f: 1 } },
        },
      ],
      initializers: [floats("Wc", [4, 2, 3, 3]), floats("Bc", [4]), floats("Wg", [3, 4]), floats("Bg", [3])],
      inputs: [{ name: "x", dims: [1, 2, 8, 8] }],
      outputs: [{ name: "y", dims: [1, 3] }],
    }),
    // Shapes as ops with constant operands: Reshape, Transpose, Slice, Concat, Unsqueeze, Squeeze.
    "reshape.onnx": onnx({
      opset: 17,
      nodes: [
        { op: "Reshape", inputs: ["x", "shape"], outputs: ["r"] },
        { op: "Transpose", inputs: ["r"], outputs: ["t"], attributes: { perm: { ints: [1, 0] } } },
        { op: "Slice", inputs: ["t", "starts", "ends", "axes"], outputs: ["s"] },
        { op: "Concat", inputs: ["s", "s"], outputs: ["c"], attributes: { axis: { i: 0 } } },
        { op: "Unsqueeze", inputs: ["c", "axes0"], outputs: ["u"] },
        { op: "Squeeze", inputs: ["u", "axes0"], outputs: ["y"] },
      ],
      initializers: [
        int64s("shape", [3, -1]),
        int64s("starts", [1]),
        int64s("ends", [7]),
        int64s("axes", [0]),
        int64s("axes0", [0]),
      ],
      inputs: [{ name: "x", dims: [2, 3, 4] }],
      outputs: [{ name: "y", dims: [12, 3] }],
    }),
    // Pad (reflect) → Resize (linear, scales) → AveragePool → ConvTranspose.
    "pad_resize.onnx": onnx({
      opset: 17,
      nodes: [
        { op: "Pad", inputs: ["x", "pads"], outputs: ["p"], attributes: { mode: { s: "reflect" } } },
        {
          op: "Resize",
          inputs: ["p", "", "scales"],
          outputs: ["r"],
          attributes: { mode: { s: "linear" }, coordinate_transformation_mode: { s: "half_pixel" } },
        },
        {
          op: "AveragePool",
          inputs: ["r"],
          outputs: ["a"],
          attributes: { kernel_shape: { ints: [3, 3] }, pads: { ints: [1, 1, 1, 1] }, count_include_pad: { i: 0 } },
        },
        { op: "ConvTranspose", inputs: ["a", "Wt"], outputs: ["y"], attributes: { strides: { ints: [2, 2] } } },
      ],
      initializers: [
        int64s("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
        { name: "scales", dims: [4], float: [1, 1, 2, 2] },
        floats("Wt", [1, 1, 2, 2]),
      ],
      inputs: [{ name: "x", dims: [1, 1, 4, 4] }],
      outputs: [{ name: "y", dims: [1, 1, 24, 24] }],
    }),
    // The shape arithmetic exporters emit for a dynamic batch: Shape → Gather → Unsqueeze →
    // Concat → Reshape, plus ConstantOfShape and Expand (of constant shapes), Cast, Equal
    // and Where.
    "dynamic_shape.onnx": onnx({
      opset: 17,
      nodes: [
        { op: "Shape", inputs: ["x"], outputs: ["s"] },
        { op: "Gather", inputs: ["s", "zero"], outputs: ["b"], attributes: { axis: { i: 0 } } },
        { op: "Unsqueeze", inputs: ["b", "axes0"], outputs: ["b1"] },
        { op: "Concat", inputs: ["b1", "minus_one"], outputs: ["target"], attributes: { axis: { i: 0 } } },
        { op: "Reshape", inputs: ["x", "target"], outputs: ["r"] },
        { op: "Softmax", inputs: ["r"], outputs: ["y"], attributes: { axis: { i: -1 } } },
        {
          op: "ConstantOfShape",
          inputs: ["cshape"],
          outputs: ["zeros"],
          attributes: { value: { t: { name: "value", dims: [1], float: [0] } } },
        },
        { op: "Equal", inputs: ["x", "zeros"], outputs: ["isZero"] },
        { op: "Neg", inputs: ["x"], outputs: ["negated"] },
        { op: "Where", inputs: ["isZero", "x", "negated"], outputs: ["w"] },
        { op: "Expand", inputs: ["bias", "cshape"], outputs: ["e"] },
        { op: "Add", inputs: ["w", "e"], outputs: ["z"] },
        { op: "Cast", inputs: ["cshape"], outputs: ["shapeFloat"], attributes: { to: { i: FLOAT } } },
        { op: "ReduceSum", inputs: ["shapeFloat"], outputs: ["total"], attributes: { keepdims: { i: 0 } } },
      ],
      initializers: [
        int64s("zero", [0], []),
        int64s("axes0", [0]),
        int64s("minus_one", [-1]),
        int64s("cshape", [3, 1, 1]),
        floats("bias", [1]),
      ],
      inputs: [{ name: "x", dims: ["batch", 3, 2, 2] }],
      outputs: [
        { name: "y", dims: ["batch", 12] },
        { name: "z", dims: ["batch", 3, 2, 2] },
        { name: "total", dims: [] },
      ],
    }),
    // Normalisations and elementwise tails: BatchNormalization, Sigmoid, Mul, ReduceMean,
    // LayerNormalization, Clip, HardSwish, LeakyRelu, Pow, Div, CumSum.
    "norm.onnx": onnx({
      opset: 17,
      nodes: [
        { op: "BatchNormalization", inputs: ["x", "scale", "shift", "mean", "var"], outputs: ["n"] },
        { op: "Sigmoid", inputs: ["n"], outputs: ["s"] },
        { op: "Mul", inputs: ["n", "s"], outputs: ["m"] },
        {
          op: "ReduceMean",
          inputs: ["m"],
          outputs: ["r"],
          attributes: { axes: { ints: [2, 3] }, keepdims: { i: 0 } },
        },
        {
          op: "LayerNormalization",
          inputs: ["r", "scale", "shift"],
          outputs: ["l"],
          attributes: { axis: { i: -1 }, epsilon: { f: 1e-5 } },
        },
        { op: "Clip", inputs: ["l", "low", "high"], outputs: ["c"] },
        { op: "HardSwish", inputs: ["c"], outputs: ["h"] },
        { op: "LeakyRelu", inputs: ["h"], outputs: ["k"], attributes: { alpha: { f: 0.1 } } },
        { op: "Pow", inputs: ["k", "two"], outputs: ["p"] },
        { op: "Div", inputs: ["p", "two"], outputs: ["y"] },
        { op: "CumSum", inputs: ["y", "axis1"], outputs: ["cs"] },
      ],
      initializers: [
        floats("scale", [4]),
        floats("shift", [4]),
        floats("mean", [4], 0.1),
        { name: "var", dims: [4], float: [1, 0.5, 2, 1.5] },
        { name: "low", dims: [], float: [-1] },
        { name: "high", dims: [], float: [1] },
        { name: "two", dims: [], float: [2] },
        int64s("axis1", [1], []),
      ],
      inputs: [{ name: "x", dims: [2, 4, 3, 3] }],
      outputs: [{ name: "y", dims: [2, 4] }, { name: "cs", dims: [2, 4] }],
    }),
    // Recurrent layers: a bidirectional LSTM with every optional input, a GRU with
    // linear_before_reset, a reverse RNN with Relu; their outputs are views of packed results.
    "recurrent.onnx": onnx({
      opset: 14,
      nodes: [
        {
          op: "LSTM",
          inputs: ["x", "lstm_w", "lstm_r", "lstm_b", "", "h0", "c0", "peepholes"],
          outputs: ["y", "y_h", "y_c"],
          attributes: { hidden_size: { i: 3 }, direction: { s: "bidirectional" } },
        },
        {
          op: "GRU",
          inputs: ["x", "gru_w", "gru_r"],
          outputs: ["", "gru_h"],
          attributes: { hidden_size: { i: 3 }, linear_before_reset: { i: 1 } },
        },
        {
          op: "RNN",
          inputs: ["x", "rnn_w", "rnn_r"],
          outputs: ["rnn_y"],
          attributes: { hidden_size: { i: 3 }, direction: { s: "reverse" }, activations: { strings: ["Relu"] } },
        },
      ],
      initializers: [
        floats("lstm_w", [2, 12, 4]),
        floats("lstm_r", [2, 12, 3]),
        floats("lstm_b", [2, 24], 0.1),
        floats("h0", [2, 2, 3]),
        floats("c0", [2, 2, 3]),
        floats("peepholes", [2, 9]),
        floats("gru_w", [1, 9, 4]),
        floats("gru_r", [1, 9, 3]),
        floats("rnn_w", [1, 3, 4]),
        floats("rnn_r", [1, 3, 3]),
      ],
      inputs: [{ name: "x", dims: [5, 2, 4] }],
      outputs: [
        { name: "y", dims: [5, 2, 2, 3] },
        { name: "y_h", dims: [2, 2, 3] },
        { name: "y_c", dims: [2, 2, 3] },
        { name: "gru_h", dims: [1, 2, 3] },
        { name: "rnn_y", dims: [5, 1, 2, 3] },
      ],
    }),
    // Opset 11: a Constant node, Resize with roi and sizes (nearest), Split-free Concat, Tanh.
    "resize11.onnx": onnx({
      opset: 11,
      nodes: [
        {
          op: "Constant",
          inputs: [],
          outputs: ["k"],
          attributes: { value: { t: { name: "k", dims: [1, 2, 1, 1], float: [0.5, -0.5] } } },
        },
        { op: "Add", inputs: ["x", "k"], outputs: ["a"] },
        {
          op: "Resize",
          inputs: ["a", "roi", "", "sizes"],
          outputs: ["r"],
          attributes: { mode: { s: "nearest" }, nearest_mode: { s: "floor" } },
        },
        { op: "Tanh", inputs: ["r"], outputs: ["y"] },
      ],
      initializers: [{ name: "roi", dims: [0], float: [] }, int64s("sizes", [1, 2, 6, 6])],
      inputs: [{ name: "x", dims: [1, 2, 3, 3] }],
      outputs: [{ name: "y", dims: [1, 2, 6, 6] }],
    }),
  };
}

// ------------------------------------------------------------------------------------------
// Spindle model files from scripted modules.

/** Traces `fn` on `inputs` into a module and returns its image (what `save` writes). */
function scripted(fn: (...args: Tensor[]) => Tensor | Tensor[], inputs: Tensor[], name: string): Uint8Array {
  try {
    using module = Module.fromScript(script(fn, name), inputs, name);
    return module.image.slice();
  } finally {
    for (const t of inputs) t.dispose();
  }
}

/** Runs `body` with weights that are disposed afterwards. */
function withWeights(make: () => Tensor[], body: (weights: Tensor[]) => Uint8Array): Uint8Array {
  const weights = make();
  try {
    return body(weights);
  } finally {
    for (const w of weights) w.dispose();
  }
}

/** The Spindle seeds: small scripted models saved as model files. */
export function spindleSeeds(): Record<string, Uint8Array> {
  return {
    // A two-layer perceptron with a softmax head.
    "mlp.spindle": withWeights(
      () => [randn([6, 8], { seed: 1 }), randn([8], { seed: 2 }), randn([4, 8], { seed: 3 })],
      ([w1, b1, w2]) =>
        scripted((x) => softmax(linear(relu(add(mm(x, w1), b1)), w2)), [randn([2, 6], { seed: 4 })], "mlp"),
    ),
    // Conv → BatchNorm → MaxPool → adaptive average pool → flatten → linear.
    "cnn.spindle": withWeights(
      () => [
        randn([4, 3, 3, 3], { seed: 5 }),
        randn([4], { seed: 6 }),
        tensor([0, 0.1, -0.1, 0.2]),
        tensor([1, 0.5, 2, 1.5]),
        randn([2, 4], { seed: 7 }),
      ],
      ([w, b, mean, variance, head]) =>
        scripted(
          (x) => {
            const c = conv2d(x, w, b, { padding: 1 });
            const n = relu(batchNorm(c, mean, variance));
            const p = adaptiveAvgPool2d(maxPool2d(n, 2), 1);
            return linear(flatten(p, 1), head);
          },
          [randn([1, 3, 6, 6], { seed: 8 })],
          "cnn",
        ),
    ),
    // A fork/wait pair: a second graph run on the inter-op pool, joined by concat.
    "fork.spindle": withWeights(
      () => [randn([4, 4], { seed: 9 }), randn([4, 4], { seed: 10 })],
      ([wa, wb]) => {
        const branch = script((x: Tensor) => sigmoid(mm(x, wb)), "branch");
        return scripted(
          (x) => {
            const future = fork(branch, x);
            const here = relu(mm(x, wa));
            return concat([here, wait(future)], 1);
          },
          [randn([3, 4], { seed: 11 })],
          "fork",
        );
      },
    ),
    // Embeddings over int64 ids, a layer norm and GELU.
    "embedding.spindle": withWeights(
      () => [randn([10, 4], { seed: 12 }), tensor([0, 2], [2], { dtype: "int64" })],
      ([table, offsets]) =>
        scripted(
          (ids) => {
            const rows = embedding(table, ids);
            const bag = embeddingBag(table, ids, offsets, { mode: "sum" });
            return add(gelu(layerNorm(rows, [4])), sum(bag));
          },
          [tensor([1, 3, 5, 7], [4], { dtype: "int64" })],
          "embedding",
        ),
    ),
    // Shape ops and several outputs of different dtypes.
    "shapes.spindle": scripted(
      (x) => {
        const r = reshape(x, [3, 2, 4]);
        const p = permute(r, [2, 0, 1]);
        const s = slice(p, 0, 1, 3);
        const u = unsqueeze(cumsum(s, 1), 0);
        return [mul(u, 2), argmax(x, 1)];
      },
      [randn([6, 4], { seed: 13 })],
      "shapes",
    ),
  };
}

/** An imported ONNX model with a symbolic batch dimension, saved as a Spindle file. */
function importedSeed(onnxBytes: Uint8Array): Uint8Array {
  return importOnnx(onnxBytes);
}

/** Every seed file of the committed corpus, by file name. */
export function corpus(): Record<string, Uint8Array> {
  const onnxFiles = onnxSeeds();
  return {
    ...onnxFiles,
    ...spindleSeeds(),
    "linear_imported.spindle": importedSeed(onnxFiles["linear.onnx"]),
    "dynamic_imported.spindle": importedSeed(onnxFiles["dynamic_shape.onnx"]),
  };
}

/** Rewrites tests/fuzz/corpus/ (removing files that are no longer seeds). */
export async function writeCorpus(dir = CORPUS_DIR): Promise<string[]> {
  const files = corpus();
  await Deno.mkdir(dir, { recursive: true });
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile && !(entry.name in files)) await Deno.remove(`${dir}/${entry.name}`);
  }
  for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${dir}/${name}`, bytes);
  return Object.keys(files).sort();
}

if (import.meta.main) {
  const names = await writeCorpus();
  let total = 0;
  for (const name of names) total += (await Deno.stat(`${CORPUS_DIR}/${name}`)).size;
  console.log(`fuzz corpus: ${names.length} files, ${total} bytes in tests/fuzz/corpus/`);
}

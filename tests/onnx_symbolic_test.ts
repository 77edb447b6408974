import assert from "node:assert/strict";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as tools/test.ts and the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { importOnnx, load, type Module, randn, SpindleError, type Tensor } from "../mod.ts";
import { decodeDescription } from "../lib/program/format.ts";
import { fetchModels, type RealModel } from "../tools/fetch_models.ts";
import { type Initializer, type Node, onnx, type ValueInfo } from "../tools/fuzz_corpus.ts";

// Models whose input sizes are symbolic, loaded with no options and run at many shapes:
// shape computations stay in the graph (shape_of, int_binary, reshape_to, …), so every size
// the model allows gives what onnxruntime gives.

/** |a − b| ≤ 1e-4 · max(1, |b|) everywhere, and the same shape. */
function assertClose(got: Tensor, want: ort.Tensor, label: string): void {
  assert.deepEqual(got.shape, [...want.dims], `${label}: shape`);
  const values = got.toArray();
  const expected = want.data as Float32Array | BigInt64Array;
  for (let i = 0; i < expected.length; i++) {
    const a = Number(values[i]);
    const b = Number(expected[i]);
    assert.ok(Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b)), `${label} [${i}]: ${a} vs ${b}`);
  }
}

async function compare(module: Module, session: ort.InferenceSession, feeds: Record<string, Tensor>, label: string) {
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) {
    const data = t.toArray();
    ortFeeds[name] = new ort.Tensor(data instanceof BigInt64Array ? "int64" : "float32", data, t.shape);
  }
  const expected = await session.run(ortFeeds);
  const outputs = await module.run(feeds);
  for (const name of session.outputNames) {
    using got = outputs[name];
    assertClose(got, expected[name], `${label} ${name}`);
  }
}

// ------------------------------------------------------------------------------------------
// PaddleOCR as its files come, with no inputShapes.

let models: RealModel[] = [];
let missing = "";
try {
  models = await fetchModels();
} catch (error) {
  missing = (error as Error).message;
}

const SIZES: Record<string, number[][]> = {
  "ocr-det": [[1, 3, 320, 320], [1, 3, 480, 640], [1, 3, 960, 960]],
  "ocr-rec": [[1, 3, 48, 100], [1, 3, 48, 320], [1, 3, 48, 800], [4, 3, 48, 320]],
  "ocr-cls": [[1, 3, 48, 192], [4, 3, 48, 192], [1, 3, 48, 100]],
};

for (const name of Object.keys(SIZES)) {
  const model = models.find((m) => m.name === name);
  Deno.test({
    name: `${name} loads with no options and matches onnxruntime at every size (${SIZES[name].join(" · ")})`,
    ignore: model === undefined,
    fn: async () => {
      using module = await load(model!.file);
      const session = await ort.InferenceSession.create(model!.file, { intraOpNumThreads: 1 });
      for (const [i, shape] of SIZES[name].entries()) {
        using x = randn(shape, { seed: i + 1 });
        await compare(module, session, { [model!.input]: x }, `${name} [${shape}]`);
      }
      await session.release();
    },
  });
}
if (models.length === 0) console.warn(`onnx_symbolic_test: the PaddleOCR models are not available (${missing})`);

Deno.test({
  name: "a wrong-rank or wrong-size input is shape_mismatch naming the input, its symbolic shape and the given one",
  ignore: models.length === 0,
  fn: async () => {
    const cls = models.find((m) => m.name === "ocr-cls")!;
    using module = await load(cls.file);
    for (const shape of [[3, 48, 192], [1, 4, 48, 192]]) {
      using x = randn(shape);
      await assert.rejects(
        module.forward(x),
        (error) =>
          error instanceof SpindleError && error.code === "shape_mismatch" &&
          error.message.includes(`input 0 'x' has shape [${shape.join(", ")}]`) &&
          error.message.includes("[p2o.DynamicDimension.0, 3, p2o.DynamicDimension.1, p2o.DynamicDimension.2]"),
      );
    }
  },
});

// ------------------------------------------------------------------------------------------
// Small graphs, one shape computation each, against onnxruntime at several sizes.

const ints = (name: string, values: number[], dims = [values.length]): Initializer => ({
  name,
  dims,
  int64: values,
});

async function checkGraph(
  label: string,
  graph: { nodes: Node[]; initializers?: Initializer[]; inputs: ValueInfo[]; outputs: ValueInfo[]; opset?: number },
  shapes: number[][][],
) {
  const bytes = onnx({ opset: 17, initializers: [], ...graph });
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeFile(path, bytes);
  try {
    using module = await load(path);
    const session = await ort.InferenceSession.create(path);
    for (const [round, shapeSet] of shapes.entries()) {
      const feeds: Record<string, Tensor> = {};
      graph.inputs.forEach((info, i) => feeds[info.name] = randn(shapeSet[i], { seed: round * 7 + i }));
      try {
        await compare(module, session, feeds, `${label} ${JSON.stringify(shapeSet)}`);
      } finally {
        for (const t of Object.values(feeds)) t.dispose();
      }
    }
    await session.release();
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("Shape → Gather → Unsqueeze → Concat → Reshape runs at sizes the import never saw", async () => {
  await checkGraph("reshape", {
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Gather", inputs: ["s", "zero"], outputs: ["n"], attributes: { axis: { i: 0 } } },
      { op: "Gather", inputs: ["s", "one"], outputs: ["t"], attributes: { axis: { i: 0 } } },
      { op: "Unsqueeze", inputs: ["n", "axes"], outputs: ["n1"] },
      { op: "Unsqueeze", inputs: ["t", "axes"], outputs: ["t1"] },
      { op: "Concat", inputs: ["n1", "t1", "tail"], outputs: ["target"], attributes: { axis: { i: 0 } } },
      { op: "Reshape", inputs: ["x", "target"], outputs: ["y"] },
    ],
    initializers: [ints("zero", [0], []), ints("one", [1], []), ints("axes", [0]), ints("tail", [2, 4])],
    inputs: [{ name: "x", dims: ["batch", "sequence", 8] }],
    outputs: [{ name: "y", dims: ["batch", "sequence", 2, 4] }],
  }, [[[1, 5, 8]], [[3, 7, 8]], [[2, 1, 8]]]);
});

Deno.test("Range over a computed length, Size, and integer Add/Mul/Div on sizes", async () => {
  await checkGraph("range", {
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Gather", inputs: ["s", "zero"], outputs: ["n"] },
      { op: "Range", inputs: ["zero", "n", "one"], outputs: ["r"] },
      { op: "Cast", inputs: ["r"], outputs: ["rf"], attributes: { to: { i: 1 } } },
      { op: "Size", inputs: ["x"], outputs: ["count"] },
      { op: "Mul", inputs: ["n", "two"], outputs: ["n2"] },
      { op: "Div", inputs: ["count", "n2"], outputs: ["q"] },
      { op: "Add", inputs: ["q", "count"], outputs: ["sum"] },
      { op: "Cast", inputs: ["sum"], outputs: ["sf"], attributes: { to: { i: 1 } } },
      { op: "Add", inputs: ["x", "rf"], outputs: ["xr"] },
      { op: "Add", inputs: ["xr", "sf"], outputs: ["y"] },
    ],
    initializers: [ints("zero", [0], []), ints("one", [1], []), ints("two", [2], [])],
    inputs: [{ name: "x", dims: ["n"] }],
    outputs: [{ name: "y", dims: ["n"] }],
  }, [[[1]], [[5]], [[17]]]);
});

// A BERT-style position table shorter than the sizes import makes up for a symbolic
// sequence: positions 0..seq-1 gathered from 64 rows. onnxruntime loads it; so must load().
const POSITIONS = {
  nodes: [
    { op: "Shape", inputs: ["x"], outputs: ["s"] },
    { op: "Gather", inputs: ["s", "one"], outputs: ["seq"], attributes: { axis: { i: 0 } } },
    { op: "Range", inputs: ["zero", "seq", "one"], outputs: ["positions"] },
    { op: "Gather", inputs: ["table", "positions"], outputs: ["pe"], attributes: { axis: { i: 0 } } },
    { op: "Add", inputs: ["x", "pe"], outputs: ["y"] },
  ],
  initializers: [
    ints("zero", [0], []),
    ints("one", [1], []),
    { name: "table", dims: [64, 4], float: Array.from({ length: 256 }, (_, i) => Math.sin(i)) },
  ],
  inputs: [{ name: "x", dims: ["batch", "sequence", 4] }],
  outputs: [{ name: "y", dims: ["batch", "sequence", 4] }],
};

Deno.test("a position table shorter than import's made-up sequence loads, runs up to its length, and refuses past it", async () => {
  await checkGraph("positions", POSITIONS, [[[1, 3, 4]], [[2, 64, 4]], [[1, 1, 4]]]);
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeFile(path, onnx({ opset: 17, ...POSITIONS }));
  try {
    using module = await load(path);
    using x = randn([1, 65, 4]);
    await assert.rejects(
      module.forward(x),
      (error) => error instanceof SpindleError && error.code === "index_out_of_range" && /64/.test(error.message),
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("Slice with step −1 over a whole dynamic axis (torch.flip's export) and over part of a static one", async () => {
  await checkGraph("flip", {
    nodes: [
      { op: "Slice", inputs: ["x", "start", "end", "axes", "step"], outputs: ["flipped"] },
      { op: "Slice", inputs: ["flipped", "start2", "end2", "axes2", "step"], outputs: ["y"] },
    ],
    initializers: [
      ints("start", [-1]),
      ints("end", [-(2 ** 63)]),
      ints("axes", [1]),
      ints("step", [-1]),
      ints("start2", [3]),
      ints("end2", [0]),
      ints("axes2", [2]),
    ],
    inputs: [{ name: "x", dims: ["batch", "sequence", 5] }],
    outputs: [{ name: "y", dims: ["batch", "sequence", 3] }],
  }, [[[1, 3, 5]], [[2, 7, 5]], [[1, 1, 5]]]);
});

Deno.test("ConvTranspose with asymmetric pads, SAME_UPPER on a 1-D input, and an output_shape past the full output", async () => {
  const weight = (name: string, dims: number[]) => ({
    name,
    dims,
    float: Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.cos(i)),
  });
  await checkGraph("convtranspose", {
    nodes: [
      {
        op: "ConvTranspose",
        inputs: ["x", "w", "b"],
        outputs: ["asymmetric"],
        attributes: { strides: { ints: [2, 1] }, pads: { ints: [0, 1, 2, 0] } },
      },
      {
        op: "ConvTranspose",
        inputs: ["x", "w"],
        outputs: ["shaped"],
        attributes: { strides: { ints: [3, 2] }, output_shape: { ints: [14, 12] } },
      },
      {
        op: "ConvTranspose",
        inputs: ["line", "w1"],
        outputs: ["same"],
        attributes: { strides: { ints: [2] }, auto_pad: { s: "SAME_UPPER" } },
      },
    ],
    initializers: [weight("w", [2, 3, 3, 3]), { name: "b", dims: [3], float: [0.5, -1, 2] }, weight("w1", [2, 1, 4])],
    inputs: [{ name: "x", dims: [1, 2, 4, 5] }, { name: "line", dims: [2, 2, 7] }],
    outputs: [
      { name: "asymmetric", dims: [1, 3, 7, 6] },
      { name: "shaped", dims: [1, 3, 14, 12] },
      { name: "same", dims: [2, 1, 14] },
    ],
  }, [[[1, 2, 4, 5], [2, 2, 7]]]);
});

Deno.test("Pad in wrap mode, and negative pads that crop, in constant and wrap modes", async () => {
  await checkGraph("pad", {
    nodes: [
      { op: "Pad", inputs: ["x", "wrapPads"], outputs: ["wrapped"], attributes: { mode: { s: "wrap" } } },
      { op: "Pad", inputs: ["x", "mixedPads", "value"], outputs: ["mixed"] },
    ],
    initializers: [
      ints("wrapPads", [0, 0, 2, -1, 0, 0, 1, 3]),
      ints("mixedPads", [0, -1, 1, 0, 0, 0, -2, 2]),
      { name: "value", dims: [], float: [0.5] },
    ],
    inputs: [{ name: "x", dims: [1, 2, 5, 6] }],
    outputs: [{ name: "wrapped", dims: [1, 2, 8, 8] }, { name: "mixed", dims: [1, 1, 4, 8] }],
  }, [[[1, 2, 5, 6]]]);
});

Deno.test("NonZero of a mask computed at run time, its coordinates gathering the selected values (x[x > 0])", async () => {
  await checkGraph("nonzero", {
    nodes: [
      { op: "Greater", inputs: ["x", "zero"], outputs: ["mask"] },
      { op: "NonZero", inputs: ["mask"], outputs: ["where"] },
      { op: "Transpose", inputs: ["where"], outputs: ["rows"], attributes: { perm: { ints: [1, 0] } } },
      { op: "GatherND", inputs: ["x", "rows"], outputs: ["selected"] },
    ],
    initializers: [{ name: "zero", dims: [], float: [0] }],
    inputs: [{ name: "x", dims: ["batch", 5] }],
    outputs: [{ name: "where", type: 7, dims: [2, "count"] }, { name: "selected", dims: ["count"] }],
  }, [[[1, 5]], [[3, 5]], [[6, 5]]]);
});

Deno.test("LRN (4-D, an odd window: what onnxruntime takes) and Compress over the flattened input", async () => {
  await checkGraph("lrn", {
    nodes: [
      {
        op: "LRN",
        inputs: ["x"],
        outputs: ["y"],
        attributes: { size: { i: 5 }, alpha: { f: 0.02 }, beta: { f: 0.6 }, bias: { f: 1.5 } },
      },
      { op: "Cast", inputs: ["keep"], outputs: ["mask"], attributes: { to: { i: 9 } } },
      { op: "Compress", inputs: ["x", "mask"], outputs: ["kept"] },
    ],
    initializers: [ints("keep", [1, 0, 0, 1, 1])],
    inputs: [{ name: "x", dims: ["batch", 6, 3, 2] }],
    outputs: [{ name: "y", dims: ["batch", 6, 3, 2] }, { name: "kept", dims: [3] }],
  }, [[[1, 6, 3, 2]], [[3, 6, 3, 2]]]);
});

Deno.test("GridSample in every mode, padding and corner alignment, grid points inside and outside", async () => {
  const nodes: Node[] = [];
  const outputs: ValueInfo[] = [];
  for (const mode of ["nearest", "bilinear", "bicubic"]) {
    for (const padding of ["zeros", "border", "reflection"]) {
      for (const align of [0, 1]) {
        const name = `${mode}_${padding}_${align}`;
        nodes.push({
          op: "GridSample",
          inputs: ["x", "grid"],
          outputs: [name],
          attributes: { mode: { s: mode }, padding_mode: { s: padding }, align_corners: { i: align } },
        });
        outputs.push({ name, dims: ["batch", 2, 3, 4] });
      }
    }
  }
  // randn grids put about a third of the points outside [-1, 1].
  await checkGraph("gridsample", {
    nodes,
    inputs: [{ name: "x", dims: ["batch", 2, 5, 6] }, { name: "grid", dims: ["batch", 3, 4, 2] }],
    outputs,
  }, [[[1, 2, 5, 6], [1, 3, 4, 2]], [[2, 2, 5, 6], [2, 3, 4, 2]]]);
});

Deno.test("ReverseSequence along either axis, with a trailing feature dim", async () => {
  await checkGraph("reversesequence", {
    nodes: [
      { op: "ReverseSequence", inputs: ["x", "lens"], outputs: ["time_major"] },
      {
        op: "ReverseSequence",
        inputs: ["y", "lens2"],
        outputs: ["batch_major"],
        attributes: { time_axis: { i: 1 }, batch_axis: { i: 0 } },
      },
    ],
    initializers: [ints("lens", [4, 1, 3]), ints("lens2", [2, 5])],
    inputs: [{ name: "x", dims: [4, 3, 2] }, { name: "y", dims: [2, 5] }],
    outputs: [{ name: "time_major", dims: [4, 3, 2] }, { name: "batch_major", dims: [2, 5] }],
  }, [[[4, 3, 2], [2, 5]]]);
});

Deno.test("DFT: a padded onesided real transform, and a cut inverse complex one along axis 2", async () => {
  await checkGraph("dft", {
    nodes: [
      { op: "DFT", inputs: ["x", "sixteen"], outputs: ["spectrum"], attributes: { onesided: { i: 1 } } },
      { op: "DFT", inputs: ["z", "six"], outputs: ["signal"], attributes: { axis: { i: 2 }, inverse: { i: 1 } } },
    ],
    initializers: [ints("sixteen", [16], []), ints("six", [6], [])],
    inputs: [{ name: "x", dims: ["batch", 12, 1] }, { name: "z", dims: [2, 3, 8, 2] }],
    outputs: [{ name: "spectrum", dims: ["batch", 9, 2] }, { name: "signal", dims: [2, 3, 6, 2] }],
  }, [[[1, 12, 1], [2, 3, 8, 2]], [[3, 12, 1], [2, 3, 8, 2]]]);
});

Deno.test("Col2Im with strides, dilations and asymmetric pads sums the blocks back", async () => {
  // image 7×6, block 2×3, stride 2×1, dilation 1×2, pads (top 1, left 0, bottom 0, right 2):
  // (7 + 1 − 2) / 2 + 1 = 4 by (6 + 2 − 5) / 1 + 1 = 4 blocks.
  await checkGraph("col2im", {
    opset: 18,
    nodes: [{
      op: "Col2Im",
      inputs: ["x", "image", "block"],
      outputs: ["y"],
      attributes: { strides: { ints: [2, 1] }, dilations: { ints: [1, 2] }, pads: { ints: [1, 0, 0, 2] } },
    }],
    initializers: [ints("image", [7, 6]), ints("block", [2, 3])],
    inputs: [{ name: "x", dims: ["batch", 12, 16] }],
    outputs: [{ name: "y", dims: ["batch", 2, 7, 6] }],
  }, [[[1, 12, 16]], [[2, 12, 16]]]);
});

Deno.test("Expand and ConstantOfShape to a shape known only at run time", async () => {
  await checkGraph("expand", {
    nodes: [
      { op: "Shape", inputs: ["y"], outputs: ["s"] },
      { op: "Expand", inputs: ["x", "s"], outputs: ["wide"] },
      {
        op: "ConstantOfShape",
        inputs: ["s"],
        outputs: ["filled"],
        attributes: { value: { t: { name: "v", dims: [1], float: [1.5] } } },
      },
      { op: "Add", inputs: ["wide", "filled"], outputs: ["z"] },
    ],
    inputs: [{ name: "x", dims: ["rows", 1] }, { name: "y", dims: ["rows", "columns"] }],
    outputs: [{ name: "z", dims: ["rows", "columns"] }],
  }, [[[2, 1], [2, 3]], [[5, 1], [5, 9]], [[1, 1], [1, 1]]]);
});

Deno.test("Slice with ends computed from a dynamic size (the first half of each row)", async () => {
  await checkGraph("slice", {
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Slice", inputs: ["s", "one", "two"], outputs: ["t"] },
      { op: "Div", inputs: ["t", "two"], outputs: ["half"] },
      { op: "Slice", inputs: ["x", "zero", "half", "one"], outputs: ["y"] },
    ],
    initializers: [ints("zero", [0]), ints("one", [1]), ints("two", [2])],
    inputs: [{ name: "x", dims: ["rows", "columns"] }],
    outputs: [{ name: "y", dims: ["rows", "half"] }],
  }, [[[2, 6]], [[3, 7]], [[1, 1]]]);
});

Deno.test("float arithmetic on a size (Shape → Cast → Mul → Cast) decides a Slice's end", async () => {
  // Import's eager runs stand zeros in for elementwise results on activations (stand_in.ts);
  // these floats derive from a shape, so they stay computed, and the run gets every size right.
  await checkGraph("float-size", {
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Slice", inputs: ["s", "one", "two"], outputs: ["t"] },
      { op: "Cast", inputs: ["t"], outputs: ["tf"], attributes: { to: { i: 1 } } },
      { op: "Mul", inputs: ["tf", "half"], outputs: ["hf"] },
      { op: "Relu", inputs: ["hf"], outputs: ["hr"] },
      { op: "Cast", inputs: ["hr"], outputs: ["h"], attributes: { to: { i: 7 } } },
      { op: "Sigmoid", inputs: ["x"], outputs: ["xs"] },
      { op: "Slice", inputs: ["xs", "zero", "h", "one"], outputs: ["y"] },
    ],
    initializers: [ints("zero", [0]), ints("one", [1]), ints("two", [2]), { name: "half", dims: [1], float: [0.5] }],
    inputs: [{ name: "x", dims: ["rows", "columns"] }],
    outputs: [{ name: "y", dims: ["rows", "half"] }],
  }, [[[2, 6]], [[3, 7]], [[1, 1]], [[2, 64]]]);
});

Deno.test("Where and Equal on a shape (PyTorch's -1 → size pattern) feed Expand", async () => {
  await checkGraph("where", {
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Gather", inputs: ["s", "zero"], outputs: ["n"] },
      { op: "Unsqueeze", inputs: ["n", "zero1"], outputs: ["n1"] },
      { op: "Concat", inputs: ["n1", "minus"], outputs: ["target"], attributes: { axis: { i: 0 } } },
      { op: "Equal", inputs: ["target", "minus"], outputs: ["mask"] },
      { op: "Where", inputs: ["mask", "s", "target"], outputs: ["fixed"] },
      { op: "Expand", inputs: ["c", "fixed"], outputs: ["filled"] },
      { op: "Mul", inputs: ["x", "filled"], outputs: ["y"] },
    ],
    initializers: [
      ints("zero", [0], []),
      ints("zero1", [0]),
      ints("minus", [-1]),
      { name: "c", dims: [1, 1], float: [2] },
    ],
    inputs: [{ name: "x", dims: ["n", "m"] }],
    outputs: [{ name: "y", dims: ["n", "m"] }],
  }, [[[1, 4]], [[3, 2]], [[6, 5]]]);
});

Deno.test("a static Shape still folds to a constant; a dynamic one is a shape_of node", () => {
  const opsOf = (dims: (number | string)[]) =>
    decodeDescription(importOnnx(onnx({
      opset: 17,
      nodes: [
        { op: "Shape", inputs: ["x"], outputs: ["s"] },
        { op: "Reshape", inputs: ["x", "s"], outputs: ["y"] },
      ],
      initializers: [],
      inputs: [{ name: "x", dims }],
      outputs: [{ name: "y", dims }],
    }))).graphs[0].nodes.map((n) => n.op);
  assert.ok(!opsOf([2, 3]).includes("shape_of"), `ops: ${opsOf([2, 3])}`);
  assert.ok(opsOf(["n", 3]).includes("shape_of"), `ops: ${opsOf(["n", 3])}`);
  assert.ok(opsOf(["n", 3]).includes("reshape_to"), `ops: ${opsOf(["n", 3])}`);
});

Deno.test("Gather with index lists, Squeeze and Sub on a run-time shape (int64 1-D tensors)", async () => {
  await checkGraph("gather", {
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Gather", inputs: ["s", "picks"], outputs: ["ac"] },
      { op: "Sub", inputs: ["ac", "ones"], outputs: ["smaller"] },
      { op: "Slice", inputs: ["smaller", "zero", "one"], outputs: ["first"] },
      { op: "Squeeze", inputs: ["first", "zero"], outputs: ["scalar"] },
      { op: "Unsqueeze", inputs: ["scalar", "zero"], outputs: ["again"] },
      { op: "Concat", inputs: ["again", "ac"], outputs: ["dims"], attributes: { axis: { i: 0 } } },
      {
        op: "ConstantOfShape",
        inputs: ["dims"],
        outputs: ["y"],
        attributes: { value: { t: { name: "v", dims: [1], float: [0.25] } } },
      },
    ],
    initializers: [ints("picks", [2, 0]), ints("ones", [1, 1]), ints("zero", [0]), ints("one", [1])],
    inputs: [{ name: "x", dims: ["a", "b", "c"] }],
    outputs: [{ name: "y", dims: ["p", "q", "r"] }],
  }, [[[2, 3, 4]], [[5, 1, 2]], [[1, 7, 3]]]);
});

Deno.test({
  name: "concurrent requests at more input shapes than the per-shape plan cache keeps give the sequential results",
  ignore: models.length === 0,
  fn: async () => {
    const cls = models.find((m) => m.name === "ocr-cls")!;
    using module = await load(cls.file);
    // 12 widths (the cache keeps 8), each requested three times at once, twice over.
    const widths = Array.from({ length: 12 }, (_, i) => 64 + 16 * i);
    const inputs = widths.map((width, i) => randn([1, 3, 48, width], { seed: 100 + i }));
    const expected: Float32Array[] = [];
    for (const x of inputs) {
      using y = await module.forward(x);
      expected.push(y.toArray() as Float32Array);
    }
    for (let pass = 0; pass < 2; pass++) {
      const results = await Promise.all(inputs.flatMap((x) => [x, x, x]).map((x) => module.forward(x)));
      results.forEach((y, k) => {
        assert.deepEqual(y.toArray(), expected[Math.floor(k / 3)], `width ${widths[Math.floor(k / 3)]}`);
        y.dispose();
      });
    }
    for (const x of inputs) x.dispose();
  },
});

Deno.test("a constant Range folds, and one of 2^40 elements is too_large before anything is allocated", () => {
  const rangeModel = (limit: number) =>
    onnx({
      opset: 17,
      nodes: [
        { op: "Range", inputs: ["start", "limit", "delta"], outputs: ["r"] },
        { op: "Cast", inputs: ["r"], outputs: ["rf"], attributes: { to: { i: 1 } } },
        { op: "Add", inputs: ["x", "rf"], outputs: ["y"] },
      ],
      initializers: [ints("start", [0], []), ints("limit", [limit], []), ints("delta", [1], [])],
      inputs: [{ name: "x", dims: [4] }],
      outputs: [{ name: "y", dims: [4] }],
    });
  const ops = decodeDescription(importOnnx(rangeModel(4))).graphs[0].nodes.map((n) => n.op);
  assert.ok(!ops.includes("range"), `ops: ${ops}`);
  assert.throws(
    () => importOnnx(rangeModel(2 ** 40)),
    (error) =>
      error instanceof SpindleError && error.code === "too_large" && /1099511627776 elements/.test(error.message),
  );
});

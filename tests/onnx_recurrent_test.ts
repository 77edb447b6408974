import assert from "node:assert/strict";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as tools/test.ts and the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { importOnnx, load, SpindleError, type Tensor, tensor } from "../mod.ts";
import { assertClose } from "./reference.ts";
import { Program } from "../lib/program/program.ts";
import { type Attribute, type Initializer, onnx, type ValueInfo } from "../tools/fuzz_corpus.ts";

// ONNX LSTM, GRU and RNN imported by Spindle and run by onnxruntime-node on the same inputs.

type CellOp = "LSTM" | "GRU" | "RNN";
type Direction = "forward" | "reverse" | "bidirectional";

interface RecurrentCase {
  op: CellOp;
  direction: Direction;
  seq?: number;
  batch?: number;
  input?: number;
  hidden?: number;
  layout?: 0 | 1;
  /** Feed initial_h (and initial_c for LSTM) as graph inputs. */
  states?: boolean;
  /** sequence_lens, an int32 graph input. */
  lengths?: number[];
  bias?: boolean;
  peepholes?: boolean;
  attributes?: Record<string, Attribute>;
  /** Which outputs the node names (others are ""). */
  outputs?: ("Y" | "Y_h" | "Y_c")[];
}

const GATES = { LSTM: 4, GRU: 3, RNN: 1 };

/** Deterministic values in [-scale, scale). */
function values(count: number, seed: number, scale = 1): Float32Array {
  let state = seed * 7919 + 17;
  return Float32Array.from({ length: count }, () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return (state / 2147483648 * 2 - 1) * scale;
  });
}

interface Feed {
  data: Float32Array | Int32Array;
  dims: number[];
}

/** Swaps the first two axes of a [a, b, rest] array. */
function swapLeading(data: Float32Array, a: number, b: number): Float32Array {
  const rest = data.length / (a * b);
  const out = new Float32Array(data.length);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) out.set(data.subarray((i * b + j) * rest, (i * b + j + 1) * rest), (j * a + i) * rest);
  }
  return out;
}

/**
 * The model in `layout` and its feeds; the values are drawn in layout 0 and transposed, so a
 * layout-1 model and its layout-0 twin see the same numbers.
 */
function build(
  c: RecurrentCase,
  layout = c.layout ?? 0,
): { bytes: Uint8Array; feeds: Record<string, Feed>; outputs: string[] } {
  const [seq, batch, input, hidden] = [c.seq ?? 5, c.batch ?? 3, c.input ?? 4, c.hidden ?? 6];
  const directions = c.direction === "bidirectional" ? 2 : 1;
  const width = GATES[c.op] * hidden;
  const floats = (name: string, dims: number[], seed: number, scale: number): Initializer => ({
    name,
    dims,
    float: Array.from(values(dims.reduce((a, b) => a * b, 1), seed, scale)),
  });
  const initializers = [
    floats("W", [directions, width, input], 1, 0.6),
    floats("R", [directions, width, hidden], 2, 0.4),
  ];
  const names = ["X", "W", "R", "", "", "", "", ""];
  if (c.bias ?? true) {
    initializers.push(floats("B", [directions, 2 * width], 3, 0.3));
    names[3] = "B";
  }
  if (c.peepholes) {
    initializers.push(floats("P", [directions, 3 * hidden], 4, 0.5));
    names[7] = "P";
  }
  const batchFirst = layout === 1;
  const feeds: Record<string, Feed> = {};
  const inputs: ValueInfo[] = [];
  const feed = (name: string, dims: number[], data: Float32Array | Int32Array, type = 1) => {
    feeds[name] = { data, dims };
    inputs.push({ name, dims, type });
  };
  const xDims = batchFirst ? [batch, seq, input] : [seq, batch, input];
  const x = values(seq * batch * input, 5);
  feed("X", xDims, batchFirst ? swapLeading(x, seq, batch) : x);
  if (c.lengths) {
    feed("sequence_lens", [batch], Int32Array.from(c.lengths), 6);
    names[4] = "sequence_lens";
  }
  const stateDims = batchFirst ? [batch, directions, hidden] : [directions, batch, hidden];
  if (c.states) {
    const state = (seed: number) => {
      const data = values(directions * batch * hidden, seed);
      return batchFirst ? swapLeading(data, directions, batch) : data;
    };
    feed("initial_h", stateDims, state(6));
    names[5] = "initial_h";
    if (c.op === "LSTM") {
      feed("initial_c", stateDims, state(7));
      names[6] = "initial_c";
    }
  }
  while (names[names.length - 1] === "") names.pop();
  const wanted = c.outputs ?? (c.op === "LSTM" ? ["Y", "Y_h", "Y_c"] : ["Y", "Y_h"]);
  const all = c.op === "LSTM" ? ["Y", "Y_h", "Y_c"] : ["Y", "Y_h"];
  const nodeOutputs = all.map((name) => (wanted.includes(name as "Y") ? name : ""));
  while (nodeOutputs[nodeOutputs.length - 1] === "") nodeOutputs.pop();
  const yDims = batchFirst ? [batch, seq, directions, hidden] : [seq, directions, batch, hidden];
  const bytes = onnx({
    opset: 14,
    nodes: [{
      op: c.op,
      inputs: names,
      outputs: nodeOutputs,
      attributes: {
        hidden_size: { i: hidden },
        direction: { s: c.direction },
        ...(c.layout === undefined ? {} : { layout: { i: layout } }),
        ...c.attributes,
      },
    }],
    initializers,
    inputs,
    outputs: wanted.map((name) => ({ name, dims: name === "Y" ? yDims : stateDims })),
  });
  return { bytes, feeds, outputs: wanted };
}

function spindleInput(feed: Feed): Tensor {
  return feed.data instanceof Int32Array
    ? tensor(feed.data, feed.dims, { dtype: "int32" })
    : tensor(feed.data, feed.dims);
}

/**
 * onnxruntime's outputs for `c`, in c's layout: onnxruntime runs layout 0 only, so a layout-1
 * case runs its layout-0 twin and the outputs are transposed back.
 */
async function ortOutputs(c: RecurrentCase): Promise<Record<string, { dims: number[]; data: Float32Array }>> {
  const { bytes, feeds } = build(c, 0);
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const [name, feed] of Object.entries(feeds)) {
    ortFeeds[name] = new ort.Tensor(feed.data instanceof Int32Array ? "int32" : "float32", feed.data, feed.dims);
  }
  const results = await session.run(ortFeeds);
  await session.release();
  const outputs: Record<string, { dims: number[]; data: Float32Array }> = {};
  for (const [name, t] of Object.entries(results)) {
    const dims = [...t.dims] as number[];
    const data = t.data as Float32Array;
    if (c.layout === 1 && name === "Y") {
      // [seq, directions, batch, hidden] → [batch, seq, directions, hidden].
      const rows = dims[0] * dims[1];
      outputs[name] = { dims: [dims[2], dims[0], dims[1], dims[3]], data: swapLeading(data, rows, dims[2]) };
    } else if (c.layout === 1) {
      outputs[name] = { dims: [dims[1], dims[0], dims[2]], data: swapLeading(data, dims[0], dims[1]) };
    } else {
      outputs[name] = { dims, data };
    }
  }
  return outputs;
}

async function expectMatchesOrt(c: RecurrentCase): Promise<void> {
  const { bytes, feeds, outputs } = build(c);
  const expected = await ortOutputs(c);
  using program = {
    p: Program.load(importOnnx(bytes)),
    [Symbol.dispose]() {
      this.p.dispose();
    },
  };
  const inputs = Object.values(feeds).map(spindleInput);
  const results = program.p.runSync(inputs);
  try {
    assert.equal(results.length, outputs.length);
    outputs.forEach((name, i) => {
      const want = expected[name];
      assert.deepEqual(results[i].shape, want.dims, `${name} of ${JSON.stringify(c)}`);
      const got = results[i].toArray() as Float32Array;
      const reference = want.data;
      for (let k = 0; k < reference.length; k++) {
        assert.ok(
          Math.abs(got[k] - reference[k]) <= 2e-5 + 1e-4 * Math.abs(reference[k]),
          `${name}[${k}] is ${got[k]}, onnxruntime gives ${reference[k]} (${JSON.stringify(c)})`,
        );
      }
    });
  } finally {
    for (const t of [...inputs, ...results]) t.dispose();
  }
}

const DIRECTIONS: Direction[] = ["forward", "reverse", "bidirectional"];

for (const op of ["LSTM", "GRU", "RNN"] as const) {
  Deno.test(`${op}: every direction matches onnxruntime-node, plain and with initial states and sequence_lens`, async () => {
    for (const direction of DIRECTIONS) {
      await expectMatchesOrt({ op, direction });
      await expectMatchesOrt({ op, direction, states: true, lengths: [5, 2, 4] });
      await expectMatchesOrt({ op, direction, states: true, lengths: [1, 5, 3], layout: 1, bias: false });
      await expectMatchesOrt({ op, direction, seq: 1, batch: 1, hidden: 1, input: 3 });
    }
  });
}

Deno.test("GRU: linear_before_reset 0 and 1, with clip, match onnxruntime-node", async () => {
  for (const direction of DIRECTIONS) {
    for (const linear of [0, 1]) {
      await expectMatchesOrt({
        op: "GRU",
        direction,
        states: true,
        lengths: [3, 5, 1],
        attributes: { linear_before_reset: { i: linear } },
      });
      await expectMatchesOrt({
        op: "GRU",
        direction,
        attributes: { linear_before_reset: { i: linear }, clip: { f: 0.5 } },
      });
    }
  }
});

Deno.test("LSTM: peepholes, clip, input_forget and a subset of outputs match onnxruntime-node", async () => {
  for (const direction of DIRECTIONS) {
    await expectMatchesOrt({ op: "LSTM", direction, peepholes: true, states: true, lengths: [4, 5, 2] });
    await expectMatchesOrt({ op: "LSTM", direction, attributes: { clip: { f: 0.4 } } });
    await expectMatchesOrt({ op: "LSTM", direction, attributes: { input_forget: { i: 1 } } });
    await expectMatchesOrt({ op: "LSTM", direction, outputs: ["Y_h"] });
    await expectMatchesOrt({ op: "LSTM", direction, outputs: ["Y_c"], layout: 1 });
  }
});

Deno.test("recurrent activations other than the defaults match onnxruntime-node", async () => {
  const cases: [CellOp, string[], number[], number[]][] = [
    ["RNN", ["Relu"], [], []],
    ["RNN", ["LeakyRelu"], [0.3], []],
    ["RNN", ["ThresholdedRelu"], [0.1], []],
    ["RNN", ["Softsign"], [], []],
    ["RNN", ["Softplus"], [], []],
    ["RNN", ["Affine"], [0.5], [0.1]],
    ["RNN", ["ScaledTanh"], [1.5], [0.7]],
    ["GRU", ["HardSigmoid", "Elu"], [0.3, 0.8], [0.4]],
    ["LSTM", ["Sigmoid", "Relu", "Tanh"], [], []],
  ];
  for (const [op, activations, alpha, beta] of cases) {
    for (const direction of ["forward", "bidirectional"] as const) {
      const attributes: Record<string, Attribute> = { activations: { strings: activations } };
      if (alpha.length > 0) attributes.activation_alpha = { floats: alpha };
      if (beta.length > 0) attributes.activation_beta = { floats: beta };
      // onnxruntime wants the full list for both directions.
      if (direction === "bidirectional") {
        attributes.activations = { strings: [...activations, ...activations] };
        if (alpha.length > 0) attributes.activation_alpha = { floats: [...alpha, ...alpha] };
        if (beta.length > 0) attributes.activation_beta = { floats: [...beta, ...beta] };
      }
      await expectMatchesOrt({ op, direction, attributes });
    }
  }
});

Deno.test("recurrent import refuses bad weights, hidden_size and sequence_lens with typed errors", () => {
  const hidden = build({ op: "LSTM", direction: "forward", attributes: { hidden_size: { i: 5 } } });
  assert.throws(() => importOnnx(hidden.bytes), (error: unknown) => {
    assert.ok(error instanceof SpindleError);
    assert.equal(error.code, "shape_mismatch");
    assert.match(error.message, /hidden_size is 5/);
    return true;
  });
  const direction = build({ op: "GRU", direction: "forward", attributes: { direction: { s: "sideways" } } });
  assert.throws(() => importOnnx(direction.bytes), /direction 'sideways'/);
  const { bytes, feeds } = build({ op: "RNN", direction: "reverse", lengths: [5, 2, 4] });
  using program = {
    p: Program.load(importOnnx(bytes)),
    [Symbol.dispose]() {
      this.p.dispose();
    },
  };
  using x = spindleInput(feeds.X);
  using lengths = tensor([5, 6, 1], [3], { dtype: "int32" });
  assert.throws(() => program.p.runSync([x, lengths]), (error: unknown) => {
    assert.ok(error instanceof SpindleError);
    assert.equal(error.code, "index_out_of_range");
    assert.match(error.message, /sequence_lens\[1\] is 6, outside \[0, 5\]/);
    return true;
  });
});

Deno.test("a streaming model's state goes out and comes back in, with a scalar input, as in onnxruntime", async () => {
  // stateN = tanh(x·W + state·R); y = stateN · scale, with scale a rank-0 input.
  const bytes = onnx({
    opset: 17,
    nodes: [
      { op: "MatMul", inputs: ["x", "W"], outputs: ["a"] },
      { op: "MatMul", inputs: ["state", "R"], outputs: ["b"] },
      { op: "Add", inputs: ["a", "b"], outputs: ["c"] },
      { op: "Tanh", inputs: ["c"], outputs: ["stateN"] },
      { op: "Mul", inputs: ["stateN", "scale"], outputs: ["y"] },
    ],
    initializers: [
      { name: "W", dims: [4, 8], float: Array.from({ length: 32 }, (_, i) => Math.sin(i)) },
      { name: "R", dims: [8, 8], float: Array.from({ length: 64 }, (_, i) => Math.cos(i) / 4) },
    ],
    inputs: [{ name: "x", dims: ["batch", 4] }, { name: "state", dims: ["batch", 8] }, { name: "scale", dims: [] }],
    outputs: [{ name: "y", dims: ["batch", 8] }, { name: "stateN", dims: ["batch", 8] }],
  });
  const file = await Deno.makeTempFile({ suffix: ".onnx" });
  try {
    await Deno.writeFile(file, bytes);
    using module = await load(file);
    assert.deepEqual(module.inputMetadata.map((m) => m.shape), [["batch", 4], ["batch", 8], []]);
    const session = await ort.InferenceSession.create(file);
    let reference: Float32Array = new Float32Array(16);
    let state: Tensor = tensor(new Float32Array(16), [2, 8]);
    for (let step = 0; step < 4; step++) {
      const x = Float32Array.from({ length: 8 }, (_, i) => Math.sin(step + i));
      using scale = tensor([1.5], []);
      using input = tensor(x, [2, 4]);
      const outputs = await module.run({ x: input, state, scale });
      const expected = await session.run({
        x: new ort.Tensor("float32", x, [2, 4]),
        state: new ort.Tensor("float32", reference, [2, 8]),
        scale: new ort.Tensor("float32", Float32Array.of(1.5), []),
      });
      assertClose(outputs.y.toArray() as Float32Array, expected.y.data as Float32Array, {
        absolute: 1e-5,
        label: `y, step ${step}`,
      });
      outputs.y.dispose();
      state.dispose();
      state = outputs.stateN;
      reference = expected.stateN.data as Float32Array;
    }
    assertClose(state.toArray() as Float32Array, reference, { absolute: 1e-5, label: "final state" });
    state.dispose();
    await session.release();
  } finally {
    await Deno.remove(file);
  }
});

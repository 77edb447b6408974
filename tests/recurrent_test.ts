import assert from "node:assert/strict";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as tools/test.ts and the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import {
  gru,
  lstm,
  Module,
  randn,
  type RecurrentActivation,
  rnn,
  script,
  SpindleError,
  type Tensor,
  tensor,
  zeros,
} from "../mod.ts";
import { decodeDescription } from "../lib/program/format.ts";
import { onnx } from "../tools/fuzz_corpus.ts";

// The eager recurrent layers against onnxruntime-node running the same layer as an ONNX node.

type Op = "LSTM" | "GRU" | "RNN";
const GATES = { LSTM: 4, GRU: 3, RNN: 1 };
const [seq, batch, input, hidden] = [6, 3, 4, 5];

function floats(t: Tensor): number[] {
  return Array.from(t.toArray() as Float32Array);
}

async function ortRun(
  op: Op,
  direction: string,
  named: Record<string, Tensor>,
  attributes: Record<string, { i: number } | { f: number } | { strings: string[] } | { floats: number[] }>,
): Promise<Record<string, ort.Tensor>> {
  const order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"];
  const inputs = order.map((name) => (name in named ? name : ""));
  while (inputs[inputs.length - 1] === "") inputs.pop();
  const outputs = op === "LSTM" ? ["Y", "Y_h", "Y_c"] : ["Y", "Y_h"];
  const bytes = onnx({
    opset: 14,
    nodes: [{
      op,
      inputs,
      outputs,
      attributes: { hidden_size: { i: hidden }, direction: { s: direction }, ...attributes },
    }],
    initializers: [],
    inputs: Object.entries(named).map(([name, t]) => ({
      name,
      dims: t.shape.slice(),
      type: t.dtype === "int32" ? 6 : 1,
    })),
    outputs: outputs.map((name) => ({ name, dims: [] })),
  });
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(named)) {
    feeds[name] = new ort.Tensor(
      t.dtype === "int32" ? "int32" : "float32",
      t.toArray() as Float32Array,
      t.shape.slice(),
    );
  }
  const results = await session.run(feeds);
  await session.release();
  return results;
}

function assertClose(got: Tensor, want: ort.Tensor, what: string): void {
  assert.deepEqual(got.shape, [...want.dims], what);
  const values = floats(got);
  (want.data as Float32Array).forEach((v, i) => {
    assert.ok(Math.abs(values[i] - v) <= 2e-5 + 1e-4 * Math.abs(v), `${what}[${i}]: ${values[i]} vs ${v}`);
  });
}

for (const op of ["LSTM", "GRU", "RNN"] as const) {
  Deno.test(`${op.toLowerCase()}: the eager layer with every option matches onnxruntime-node`, async () => {
    for (const direction of ["forward", "reverse", "bidirectional"] as const) {
      const directions = direction === "bidirectional" ? 2 : 1;
      const width = GATES[op] * hidden;
      using x = randn([seq, batch, input], { seed: 1 });
      using w = randn([directions, width, input], { seed: 2 });
      using r = randn([directions, width, hidden], { seed: 3 });
      using b = randn([directions, 2 * width], { seed: 4 });
      using lengths = tensor([6, 2, 4], [batch], { dtype: "int32" });
      using h0 = randn([directions, batch, hidden], { seed: 5 });
      using c0 = randn([directions, batch, hidden], { seed: 6 });
      using p = randn([directions, 3 * hidden], { seed: 7 });
      const activations: RecurrentActivation[] = op === "RNN"
        ? [{ kind: "leaky_relu", alpha: 0.2 }]
        : op === "GRU"
        ? [{ kind: "hard_sigmoid" }, { kind: "softsign" }]
        : [{ kind: "sigmoid" }, { kind: "scaled_tanh", alpha: 0.9, beta: 1.1 }, { kind: "tanh" }];
      const named: Record<string, Tensor> = { X: x, W: w, R: r, B: b, sequence_lens: lengths, initial_h: h0 };
      if (op === "LSTM") Object.assign(named, { initial_c: c0, P: p });
      const onnxActivations = activations.map((a) =>
        a.kind.replace(/(^|_)([a-z])/g, (_, __, letter: string) => letter.toUpperCase())
      );
      const repeated = (values: string[]) => (directions === 2 ? [...values, ...values] : values);
      const alphas = activations.flatMap((
        a,
      ) => (a.alpha === undefined ? a.kind === "hard_sigmoid" ? [0.2] : [] : [a.alpha]));
      const betas = activations.flatMap((
        a,
      ) => (a.beta === undefined ? a.kind === "hard_sigmoid" ? [0.5] : [] : [a.beta]));
      const expected = await ortRun(op, direction, named, {
        activations: { strings: repeated(onnxActivations) },
        ...(alphas.length > 0
          ? { activation_alpha: { floats: directions === 2 ? [...alphas, ...alphas] : alphas } }
          : {}),
        ...(betas.length > 0 ? { activation_beta: { floats: directions === 2 ? [...betas, ...betas] : betas } } : {}),
        ...(op === "GRU" ? { linear_before_reset: { i: 1 } } : {}),
        clip: { f: 2.5 },
      });
      const common = { direction, bias: b, sequenceLengths: lengths, initialH: h0, clip: 2.5, activations };
      const got = op === "LSTM"
        ? lstm(x, w, r, { ...common, initialC: c0, peepholes: p })
        : op === "GRU"
        ? gru(x, w, r, { ...common, linearBeforeReset: true })
        : rnn(x, w, r, common);
      try {
        assertClose(got.y, expected.Y, `${op} ${direction} Y`);
        assertClose(got.yH, expected.Y_h, `${op} ${direction} Y_h`);
        if (op === "LSTM") assertClose(got.yC!, expected.Y_c, `${op} ${direction} Y_c`);
        else assert.equal(got.yC, undefined);
      } finally {
        for (const t of [got.y, got.yH, got.yC]) t?.dispose();
      }
    }
  });
}

Deno.test("recurrent layers refuse bad arguments with TypeError, RangeError or a typed SpindleError", () => {
  using x = zeros([2, 1, 3]);
  using w = zeros([1, 8, 3]);
  using r = zeros([1, 8, 2]);
  assert.throws(() => lstm(x, w, [] as unknown as Tensor), TypeError);
  assert.throws(() => lstm(x, w, r, { bias: 3 as unknown as Tensor }), /lstm: bias must be a Tensor/);
  assert.throws(() => lstm(x, w, r, { activations: [{ kind: "tanh" }] }), /1 activations; it takes 3 per direction/);
  assert.throws(
    () => lstm(x, w, r, { activations: [{ kind: "swish" as "tanh" }, { kind: "tanh" }, { kind: "tanh" }] }),
    /unknown activation 'swish'/,
  );
  assert.throws(() => gru(x, w, r), (error: unknown) => {
    assert.ok(error instanceof SpindleError);
    assert.equal(error.code, "shape_mismatch");
    assert.match(error.message, /gru: W has shape \[1, 8, 3\], expected \[1, 6, 3\]/);
    return true;
  });
  using lengths = tensor([3], [1], { dtype: "int32" });
  assert.throws(() => lstm(x, w, r, { sequenceLengths: lengths }), /sequence_lens\[0\] is 3, outside \[0, 2\]/);
});

Deno.test("an lstm traced into a script runs as one native op and matches the eager layer", () => {
  using w = randn([2, 16, 3], { seed: 8 });
  using r = randn([2, 16, 4], { seed: 9 });
  using x = randn([5, 2, 3], { seed: 10 });
  using module = Module.fromScript(
    script((input: Tensor) => {
      const { y, yH, yC } = lstm(input, w, r, { direction: "bidirectional" });
      return [y, yH, yC!];
    }, "lstm_layer"),
    [x],
  );
  const graph = decodeDescription(module.image).graphs[0];
  assert.equal(graph.nodes.filter((n) => n.op === "lstm").length, 1);
  const traced = module.forwardAllSync(x);
  const eager = lstm(x, w, r, { direction: "bidirectional" });
  try {
    [eager.y, eager.yH, eager.yC!].forEach((want, i) => {
      assert.deepEqual(traced[i].shape, want.shape);
      assert.deepEqual(floats(traced[i]), floats(want));
    });
  } finally {
    for (const t of [...traced, eager.y, eager.yH, eager.yC!]) t.dispose();
  }
});

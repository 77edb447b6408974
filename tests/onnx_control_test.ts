import assert from "node:assert/strict";
import { importOnnx, load, type Module, SpindleError, type Tensor, tensor } from "../mod.ts";
import { decodeDescription } from "../lib/program/format.ts";
import { onnx, type OnnxGraph } from "../tools/fuzz_corpus.ts";

// ONNX If, Loop and Scan run natively (zig/src/interpreter/control.zig), checked against
// onnxruntime's outputs recorded by tools/make_torch_fixtures.py in tests/fixtures/torch/:
// hand-made models whose conditions and trip counts come from the inputs, and models exported
// with torch.onnx.export (a scripted If/Loop module, a GRU tagger, a BERT-style encoder).

const FIXTURES = new URL("./fixtures/torch/", import.meta.url);

interface FixtureTensor {
  dtype: "float32" | "int64" | "int32" | "bool";
  shape: number[];
  data: number[];
}

interface Fixture {
  outputs: string[];
  cases: { inputs: Record<string, FixtureTensor>; outputs: FixtureTensor[] }[];
}

function toTensor(t: FixtureTensor): Tensor {
  if (t.dtype === "float32") return tensor(Float32Array.from(t.data), t.shape);
  if (t.dtype === "int64") return tensor(BigInt64Array.from(t.data, (v) => BigInt(v)), t.shape, { dtype: "int64" });
  return tensor(Int32Array.from(t.data), t.shape, { dtype: "int32" });
}

/** |a − b| ≤ 1e-4 · max(1, |b|) everywhere, and the same shape. */
function assertClose(got: Tensor, want: FixtureTensor, label: string): void {
  assert.deepEqual(got.shape, want.shape, `${label}: shape`);
  const values = got.toArray();
  for (let i = 0; i < want.data.length; i++) {
    const a = Number(values[i]);
    const b = want.data[i];
    assert.ok(Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b)), `${label} [${i}]: ${a} vs ${b}`);
  }
}

async function checkFixture(name: string): Promise<Module> {
  const fixture: Fixture = JSON.parse(await Deno.readTextFile(new URL(`${name}.json`, FIXTURES)));
  const module = await load(new URL(`${name}.onnx`, FIXTURES).pathname);
  assert.ok(fixture.cases.length >= 2);
  for (const [index, example] of fixture.cases.entries()) {
    const feeds: Record<string, Tensor> = {};
    for (const [input, value] of Object.entries(example.inputs)) feeds[input] = toTensor(value);
    try {
      const outputs = await module.run(feeds);
      fixture.outputs.forEach((output, i) => {
        using got = outputs[output];
        assertClose(got, example.outputs[i], `${name} case ${index} ${output}`);
      });
    } finally {
      for (const t of Object.values(feeds)) t.dispose();
    }
  }
  return module;
}

/** The op names of every graph of a model's image, by graph. */
async function graphOps(name: string): Promise<string[][]> {
  const image = importOnnx(await Deno.readFile(new URL(`${name}.onnx`, FIXTURES)));
  return decodeDescription(image).graphs.map((g) => g.nodes.map((n) => n.op));
}

Deno.test("If with a run-time condition runs natively, only the branch taken, at every input size", async () => {
  const ops = await graphOps("control_if");
  assert.ok(ops[0].includes("if"), `graph 0: ${ops[0]}`);
  assert.equal(ops.length, 3); // the entry graph and the two branches
  using _module = await checkFixture("control_if");
});

Deno.test("Loop with a run-time trip count and a data-dependent condition stacks its scanned outputs", async () => {
  assert.ok((await graphOps("control_loop"))[0].includes("loop"));
  using _module = await checkFixture("control_loop");
});

Deno.test("Scan over axis 1, one input reversed, outputs stacked at axis 1 and reversed, an outer value captured", async () => {
  assert.ok((await graphOps("control_scan"))[0].includes("scan"));
  using _module = await checkFixture("control_scan");
});

Deno.test("a scripted torch module with a data-dependent if and a for loop matches onnxruntime", async () => {
  const ops = await graphOps("torch_control");
  assert.ok(ops[0].includes("if") && ops[0].includes("loop"), `graph 0: ${ops[0]}`);
  using _module = await checkFixture("torch_control");
});

Deno.test("Loop refuses a negative trip count and one over the step limit with typed errors", async () => {
  using module = await load(new URL("control_loop.onnx", FIXTURES).pathname);
  using x = tensor(new Float32Array([1, 2]), [1, 2]);
  using limit = tensor(new Float32Array([1e30]), []);
  for (
    const [steps, code, part] of [[-1n, "invalid_argument", "trip count is -1"], [
      1n << 40n,
      "too_large",
      "over the limit",
    ]] as const
  ) {
    using n = tensor(new BigInt64Array([steps]), [], { dtype: "int64" });
    await assert.rejects(
      module.run({ x, n, limit }),
      (error) => error instanceof SpindleError && error.code === code && error.message.includes(part),
    );
  }
});

Deno.test("a torch-exported GRU tagger (embedding, GRU, linear) matches onnxruntime at three batch sizes and lengths", async () => {
  using _module = await checkFixture("torch_gru");
});

Deno.test("a torch-exported 2-layer BERT-style encoder with symbolic batch and sequence matches onnxruntime", async () => {
  using _module = await checkFixture("torch_bert");
});

Deno.test("a streaming model takes back the state it returned on the next call, and a scalar input", async () => {
  const fixture: Fixture = JSON.parse(await Deno.readTextFile(new URL("streaming_state.json", FIXTURES)));
  using module = await load(new URL("streaming_state.onnx", FIXTURES).pathname);
  assert.deepEqual(module.inputs.find((i) => i.name === "gain")?.shape, []);
  let state = toTensor(fixture.cases[0].inputs.state);
  try {
    for (const [index, example] of fixture.cases.entries()) {
      using chunk = toTensor(example.inputs.chunk);
      using gain = toTensor(example.inputs.gain);
      const outputs = await module.run({ chunk, state, gain });
      using out = outputs.out;
      assertClose(out, example.outputs[0], `call ${index} out`);
      assertClose(outputs.state_out, example.outputs[1], `call ${index} state_out`);
      // The next call gets this call's state, as a streaming voice model is run.
      state.dispose();
      state = outputs.state_out;
    }
  } finally {
    state.dispose();
  }
});

Deno.test("profile times the ops of the branch taken and of every loop step, and none of the branch not taken", async () => {
  using module = await load(new URL("torch_control.onnx", FIXTURES).pathname);
  const graphs = decodeDescription(importOnnx(await Deno.readFile(new URL("torch_control.onnx", FIXTURES)))).graphs;
  const bodyOf = (op: string) => graphs[0].nodes.find((n) => n.op === op)!.graphs!;
  const [thenGraph, elseGraph] = bodyOf("if");
  const [loopBody] = bodyOf("loop");
  for (const sign of [1, -1]) {
    using x = tensor(Float32Array.from({ length: 8 }, (_, i) => sign * (i + 1)), [2, 4]);
    using steps = tensor(new BigInt64Array([3n]), [], { dtype: "int64" });
    const report = module.profile([x, steps], { runs: 2, warmup: 0 });
    const graphsRun = new Set(report.ops.map((op) => op.graph));
    // sum(linear(x)) > 0 picks a branch: which one depends on the weights, but exactly one runs.
    assert.ok(graphsRun.has(thenGraph) !== graphsRun.has(elseGraph), `graphs run: ${[...graphsRun]}`);
    for (const op of report.ops.filter((o) => o.graph === loopBody)) {
      assert.equal(op.calls, 3, `${op.op} steps per run`);
    }
    assert.ok(report.ops.some((o) => o.graph === loopBody));
  }
});

const BOOL = 9;
const INT64 = 7;

/** if (cond) x + x else x, as an ONNX file: `cond` is a graph input of shape `condShape`. */
function ifModel(condShape: (number | string)[]): Uint8Array {
  const branch = (op: string): OnnxGraph => ({
    nodes: [{ op, inputs: op === "Identity" ? ["x"] : ["x", "x"], outputs: [`${op}_y`] }],
    initializers: [],
    inputs: [],
    outputs: [{ name: `${op}_y`, dims: [2] }],
  });
  return onnx({
    opset: 13,
    nodes: [{
      op: "If",
      inputs: ["cond"],
      outputs: ["y"],
      attributes: { then_branch: { g: branch("Add") }, else_branch: { g: branch("Identity") } },
    }],
    initializers: [],
    inputs: [{ name: "cond", type: BOOL, dims: condShape }, { name: "x", dims: [2] }],
    outputs: [{ name: "y", dims: [2] }],
  });
}

Deno.test("an If condition fed at run time picks the branch on each call; one of several values is refused", async () => {
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  try {
    await Deno.writeFile(path, ifModel([]));
    using module = await load(path);
    using x = tensor(new Float32Array([1, -2]), [2]);
    for (const [value, want] of [[1, [2, -4]], [0, [1, -2]]] as const) {
      using cond = tensor(new Int32Array([value]), [], { dtype: "int32" });
      const outputs = await module.run({ cond, x });
      using y = outputs.y;
      assert.deepEqual([...y.toArray()], want);
    }
    // A condition of any length: import's stand-in run (a length of 2) already fails, naming why.
    await Deno.writeFile(path, ifModel(["n"]));
    await assert.rejects(
      load(path),
      (error) =>
        error instanceof SpindleError && error.code === "malformed_model" &&
        error.message.includes(
          "(If): running it on import's stand-in inputs: if: the condition has shape [2]; it must hold exactly one value",
        ),
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("a file whose Loop runs past the step limit, or whose subgraphs nest too deep, is refused", () => {
  const body: OnnxGraph = {
    nodes: [{ op: "Identity", inputs: ["c"], outputs: ["c_out"] }, {
      op: "Add",
      inputs: ["v", "v"],
      outputs: ["v_out"],
    }],
    initializers: [],
    inputs: [{ name: "i", type: INT64, dims: [] }, { name: "c", type: BOOL, dims: [] }, { name: "v", dims: [1] }],
    outputs: [{ name: "c_out", type: BOOL, dims: [] }, { name: "v_out", dims: [1] }],
  };
  const loop = (trips: number) =>
    onnx({
      opset: 13,
      nodes: [{ op: "Loop", inputs: ["n", "", "x"], outputs: ["y"], attributes: { body: { g: body } } }],
      initializers: [{ name: "n", dims: [], int64: [trips] }],
      inputs: [{ name: "x", dims: [1] }],
      outputs: [{ name: "y", dims: [1] }],
    });
  assert.ok(decodeDescription(importOnnx(loop(3))).graphs[0].nodes.some((n) => n.op === "loop"));
  assert.throws(
    () => importOnnx(loop(2 ** 40)),
    (error) => error instanceof SpindleError && error.code === "too_large" && error.message.includes("over the limit"),
  );
  // Ifs nested 20 deep, each in the last one's then branch.
  const leaf: OnnxGraph = { nodes: [], initializers: [], inputs: [], outputs: [{ name: "x", dims: [1] }] };
  let graph = leaf;
  for (let depth = 0; depth < 20; depth++) {
    graph = {
      nodes: [{
        op: "If",
        inputs: ["c"],
        outputs: [`y${depth}`],
        attributes: { then_branch: { g: graph }, else_branch: { g: leaf } },
      }],
      initializers: [],
      inputs: [],
      outputs: [{ name: `y${depth}`, dims: [1] }],
    };
  }
  const nested = onnx({ opset: 13, ...graph, inputs: [{ name: "c", type: BOOL, dims: [] }, { name: "x", dims: [1] }] });
  assert.throws(
    () => importOnnx(nested),
    (error) =>
      error instanceof SpindleError && error.code === "malformed_model" && error.message.includes("nest more than 16"),
  );
});

Deno.test("a Loop whose carried value grows each step (and whose body reads its size) matches a plain reference", async () => {
  // Each step appends the vector's current length: x ++ [3, 4, 5, ...], and scans out twice
  // the sum. x has a fixed size, so the body's first build folds Size(v) to 3 until import
  // sees the value grow and builds it again with that axis open.
  const body: OnnxGraph = {
    nodes: [
      { op: "Identity", inputs: ["c"], outputs: ["c_out"] },
      { op: "Size", inputs: ["v"], outputs: ["size"] },
      { op: "Cast", inputs: ["size"], outputs: ["sizef"], attributes: { to: { i: 1 } } },
      { op: "Reshape", inputs: ["sizef", "one"], outputs: ["tail"] },
      { op: "Concat", inputs: ["v", "tail"], outputs: ["v_out"], attributes: { axis: { i: 0 } } },
      { op: "ReduceSum", inputs: ["v_out"], outputs: ["sum"], attributes: { keepdims: { i: 0 } } },
      { op: "Add", inputs: ["sum", "sum"], outputs: ["twice"] },
    ],
    initializers: [{ name: "one", dims: [1], int64: [1] }],
    inputs: [{ name: "i", type: INT64, dims: [] }, { name: "c", type: BOOL, dims: [] }, { name: "v", dims: ["k"] }],
    outputs: [{ name: "c_out", type: BOOL, dims: [] }, { name: "v_out", dims: ["k2"] }, { name: "twice", dims: [] }],
  };
  for (const [trips, fixed] of [[4, true], [6, false]] as const) {
    const path = await Deno.makeTempFile({ suffix: ".onnx" });
    await Deno.writeFile(
      path,
      onnx({
        opset: 13,
        nodes: [{ op: "Loop", inputs: ["n", "", "x"], outputs: ["y", "sums"], attributes: { body: { g: body } } }],
        initializers: [{ name: "n", dims: [], int64: [trips] }],
        inputs: [{ name: "x", dims: [fixed ? 3 : "m"] }],
        outputs: [{ name: "y", dims: ["out"] }, { name: "sums", dims: [trips] }],
      }),
    );
    try {
      using module = await load(path);
      const start = [1.5, 2.5, 1];
      const expected = [...start];
      const sums: number[] = [];
      for (let step = 0; step < trips; step++) {
        expected.push(expected.length);
        sums.push(2 * expected.reduce((a, b) => a + b, 0));
      }
      using x = tensor(Float32Array.from(start), [3]);
      const outputs = await module.run({ x });
      using y = outputs.y;
      using twice = outputs.sums;
      assert.deepEqual([...y.toArray()], expected, `${trips} steps`);
      assert.deepEqual([...twice.toArray()], sums, `${trips} steps`);
    } finally {
      await Deno.remove(path);
    }
  }
});

Deno.test("Scan of opset 8 (a batch axis first) runs as a scan over the batch of scans over time, either direction", async () => {
  const body: OnnxGraph = {
    nodes: [{ op: "Add", inputs: ["s", "x"], outputs: ["s_out"] }, {
      op: "Identity",
      inputs: ["s_out"],
      outputs: ["y"],
    }],
    initializers: [],
    inputs: [{ name: "s", dims: [2] }, { name: "x", dims: [2] }],
    outputs: [{ name: "s_out", dims: [2] }, { name: "y", dims: [2] }],
  };
  for (const direction of [0, 1]) {
    const bytes = onnx({
      opset: 8,
      nodes: [{
        op: "Scan",
        inputs: ["", "initial", "xs"],
        outputs: ["final", "partial"],
        attributes: { body: { g: body }, num_scan_inputs: { i: 1 }, directions: { ints: [direction] } },
      }],
      initializers: [],
      inputs: [{ name: "initial", dims: ["batch", 2] }, { name: "xs", dims: ["batch", "time", 2] }],
      outputs: [{ name: "final", dims: ["batch", 2] }, { name: "partial", dims: ["batch", "time", 2] }],
    });
    const path = await Deno.makeTempFile({ suffix: ".onnx" });
    try {
      await Deno.writeFile(path, bytes);
      using module = await load(path);
      // Two batch entries, three steps: entry 0 counts 1…6, entry 1 tens, from 100 and 0.
      using initial = tensor(new Float32Array([100, 0, 0, 0]), [2, 2]);
      using xs = tensor(new Float32Array([1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60]), [2, 3, 2]);
      const { final, partial } = await module.run({ initial, xs });
      using _final = final;
      using _partial = partial;
      assert.deepEqual([...final.toArray()], [109, 12, 90, 120]);
      const want = direction === 0
        ? [101, 2, 104, 6, 109, 12, 10, 20, 40, 60, 90, 120]
        : [105, 6, 108, 10, 109, 12, 50, 60, 80, 100, 90, 120];
      assert.deepEqual(partial.shape, [2, 3, 2]);
      assert.deepEqual([...partial.toArray()], want);
    } finally {
      await Deno.remove(path);
    }
  }
});

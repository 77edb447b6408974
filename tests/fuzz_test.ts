/**
 * The fuzz suite (tools/fuzz.ts) in small: fixed mutants of the committed corpus through the
 * same children and classifier as `deno task fuzz`, the classifier's rules, and the files the
 * fuzzer found, each reduced to the defect.
 */
import assert from "node:assert/strict";
import { BAD_OUTCOMES, type Case, listSeeds, makeCase, runCases } from "../tools/fuzz.ts";
import { mutate, Rng } from "../tools/fuzz_mutate.ts";
import { classifyError } from "../tools/fuzz_worker.ts";
import { onnx } from "../tools/fuzz_corpus.ts";
import { importOnnx, SpindleError } from "../mod.ts";
import { parseFuzzSummary } from "../tools/test.ts";

const SEED = 17;

Deno.test("a case's mutant depends only on the campaign seed and the case index", async () => {
  const groups = await listSeeds(true);
  const a = await makeCase(groups, SEED, 5);
  const b = await makeCase(groups, SEED, 5);
  const c = await makeCase(groups, SEED, 6);
  assert.equal(a.seed.name, b.seed.name);
  assert.deepEqual(a.bytes, b.bytes);
  assert.deepEqual(a.applied, b.applied);
  assert.notDeepEqual([c.seed.name, c.bytes], [a.seed.name, a.bytes]);
  // Structural mutations re-encode the file: an ONNX seed stays a parseable protobuf.
  const seed = groups.corpus.find((s) => s.name === "conv.onnx")!;
  const bytes = await Deno.readFile(seed.path);
  for (let i = 0; i < 20; i++) {
    const out = mutate(bytes, "onnx", Rng.forCase(SEED, i));
    assert.ok(out.applied.length >= 1 && out.applied.length <= 3);
  }
});

Deno.test("the classifier: Spindle's refusals are typed, engine errors and internal codes are bugs", () => {
  const outcome = (error: unknown) => classifyError(error).outcome;
  assert.equal(outcome(new SpindleError("malformed_model", "bad file")), "typed");
  assert.equal(outcome(new RangeError("tensor 'w' has dimension -1")), "typed");
  assert.equal(outcome(new Deno.errors.NotFound("load: no model file")), "typed");
  assert.equal(outcome(new SpindleError("internal", "an invariant broke")), "untyped");
  assert.equal(outcome(new SpindleError("out_of_memory", "out of memory allocating 8 bytes")), "budget");
  assert.equal(outcome(new TypeError("x.map is not a function")), "untyped");
  assert.equal(outcome(new TypeError("Cannot read properties of undefined (reading 'shape')")), "untyped");
  assert.equal(outcome(new RangeError("Maximum call stack size exceeded")), "untyped");
  assert.equal(outcome(new SyntaxError("Unexpected token")), "untyped");
  assert.equal(outcome(new Error("import failed unexpectedly")), "untyped");
  assert.equal(outcome(new TypeError("")), "untyped");
  assert.equal(outcome("a string"), "untyped");
});

Deno.test("fixed-seed mutants of the corpus: no crash, hang, untyped error or memory overrun", async () => {
  const groups = await listSeeds(true);
  const cases: Case[] = [];
  for (let index = 0; index < 24; index++) cases.push(await makeCase(groups, SEED, index));
  const results = await runCases(cases);
  assert.equal(results.length, cases.length);
  const bad = results.filter((r) => BAD_OUTCOMES.includes(r.outcome));
  assert.deepEqual(bad.map((r) => `${r.outcome} case ${r.case.index} (${r.case.seed.name}): ${r.message}`), []);
  // The seeds themselves load and run.
  const seeds = groups.corpus.map((seed, index) => ({ index, seed, bytes: Deno.readFileSync(seed.path), applied: [] }));
  for (const r of await runCases(seeds)) assert.equal(r.outcome, "ok", `${r.case.seed.name}: ${r.message}`);
});

Deno.test("the CI step reads the fuzz run's last line: any untyped, crash, hang or budget case fails it", () => {
  const line = (bad: number[]) =>
    `fuzz: 120 cases in 60.1 s, 2.0 files/s (seed 17): ok 10, typed 110, untyped ${bad[0]}, crash ${bad[1]}, ` +
    `hang ${bad[2]}, budget ${bad[3]}; over 5 s 1`;
  assert.deepEqual(parseFuzzSummary(`noise\n${line([0, 0, 0, 0])}\n`), { cases: 120, bad: 0 });
  assert.deepEqual(parseFuzzSummary(line([1, 0, 2, 1])), { cases: 120, bad: 4 });
  assert.equal(parseFuzzSummary("error: Uncaught (in promise) Error"), null);
});

// ------------------------------------------------------------------------------------------
// What the fuzzer found, reduced.

function refused(bytes: Uint8Array, code: string, message: RegExp): void {
  assert.throws(() => importOnnx(bytes), (error: unknown) => {
    assert.ok(error instanceof SpindleError, `expected a SpindleError, got ${error}`);
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  });
}

Deno.test("a Constant holding a tensor of an element type Spindle lacks is unsupported, not an import bug", () => {
  for (const type of [0, 100, -1]) {
    const bytes = onnx({
      opset: 17,
      nodes: [
        {
          op: "Constant",
          inputs: [],
          outputs: ["k"],
          attributes: { value: { t: { name: "k", dims: [1], float: [1], dataType: type } } },
        },
        { op: "Add", inputs: ["x", "k"], outputs: ["y"] },
      ],
      initializers: [],
      inputs: [{ name: "x", dims: [2] }],
      outputs: [{ name: "y", dims: [2] }],
    });
    refused(bytes, "unsupported", new RegExp(`tensor 'k' has unsupported element type ${type}`));
  }
  // A 'value' attribute that holds no tensor at all is malformed.
  const empty = onnx({
    opset: 17,
    nodes: [{ op: "Constant", inputs: [], outputs: ["y"], attributes: { value: { i: 1 } } }],
    initializers: [],
    inputs: [],
    outputs: [{ name: "y", dims: [] }],
  });
  refused(empty, "malformed_model", /Constant's 'value' attribute holds no tensor/);
});

Deno.test("Pad with too few pads (or none, before opset 11) is malformed, not an import bug", () => {
  for (const [opset, pads] of [[10, undefined], [10, [1, 1, 1]], [17, [0, 1]]] as const) {
    const bytes = onnx({
      opset,
      nodes: [{
        op: "Pad",
        inputs: opset < 11 ? ["x"] : ["x", "pads"],
        outputs: ["y"],
        attributes: opset < 11 && pads !== undefined ? { pads: { ints: [...pads] } } : {},
      }],
      initializers: opset < 11 ? [] : [{ name: "pads", dims: [pads!.length], int64: [...pads!] }],
      inputs: [{ name: "x", dims: [2, 3] }],
      outputs: [{ name: "y", dims: [] }],
    });
    refused(bytes, "malformed_model", new RegExp(`Pad has ${pads?.length ?? 0} pads for 2 axes \\(it needs 4\\)`));
  }
});

Deno.test("conv and pooling attributes with a wrong number of values are malformed, not import bugs", () => {
  const cases: [string, Record<string, number[]>, string][] = [
    ["Conv", { pads: [1, 1, 1] }, "Conv's 'pads' has 3 values; an input with 2 spatial axes needs 4"],
    ["Conv", { strides: [] }, "Conv's 'strides' has 0 values; an input with 2 spatial axes needs 2"],
    ["ConvTranspose", { strides: [2] }, "ConvTranspose's 'strides' has 1 values; an input with 2 spatial axes needs 2"],
    ["AveragePool", { kernel_shape: [] }, "AveragePool's 'kernel_shape' has 0 values; an input with 2 spatial axes"],
    ["MaxPool", { kernel_shape: [2, 2], dilations: [1, 1, 1] }, "MaxPool's 'dilations' has 3 values"],
  ];
  for (const [op, attributes, message] of cases) {
    const weighted = op.startsWith("Conv");
    const bytes = onnx({
      opset: 17,
      nodes: [{
        op,
        inputs: weighted ? ["x", "w"] : ["x"],
        outputs: ["y"],
        attributes: Object.fromEntries(Object.entries(attributes).map(([name, ints]) => [name, { ints }])),
      }],
      initializers: weighted ? [{ name: "w", dims: [1, 1, 2, 2], float: [1, 1, 1, 1] }] : [],
      inputs: [{ name: "x", dims: [1, 1, 4, 4] }],
      outputs: [{ name: "y", dims: [] }],
    });
    refused(bytes, "malformed_model", new RegExp(message.replace(/[()]/g, "\\$&")));
  }
});

Deno.test("Resize with sizes or scales for another number of axes is malformed, not an import bug", () => {
  for (
    const [input, values, message] of [
      ["sizes", [1, 1, 8], "Resize has 3 sizes for 4 axes"],
      ["scales", [1, 2], "Resize has 2 scales for 4 axes"],
    ] as const
  ) {
    const bytes = onnx({
      opset: 17,
      nodes: [{ op: "Resize", inputs: input === "sizes" ? ["x", "", "", "v"] : ["x", "", "v"], outputs: ["y"] }],
      initializers: [
        input === "sizes" ? { name: "v", dims: [3], int64: [...values] } : { name: "v", dims: [2], float: [...values] },
      ],
      inputs: [{ name: "x", dims: [1, 1, 4, 4] }],
      outputs: [{ name: "y", dims: [] }],
    });
    refused(bytes, "malformed_model", new RegExp(message));
  }
});

Deno.test("Concat without inputs is malformed, not an import bug", () => {
  const bytes = onnx({
    opset: 17,
    nodes: [{ op: "Concat", inputs: [], outputs: ["y"], attributes: { axis: { i: 0 } } }],
    initializers: [],
    inputs: [],
    outputs: [{ name: "y", dims: [] }],
  });
  refused(bytes, "malformed_model", /Concat has no inputs/);
});

Deno.test("CumSum with an axis tensor that is not one value is malformed, not an import bug", () => {
  for (const axis of [[], [0, 1]]) {
    const bytes = onnx({
      opset: 17,
      nodes: [{ op: "CumSum", inputs: ["x", "axis"], outputs: ["y"] }],
      initializers: [{ name: "axis", dims: [axis.length], int64: axis }],
      inputs: [{ name: "x", dims: [2, 3] }],
      outputs: [{ name: "y", dims: [2, 3] }],
    });
    refused(bytes, "malformed_model", new RegExp(`CumSum's axis has ${axis.length} values; it takes one`));
  }
});

Deno.test("Gather of constants with a fractional index is malformed, not an import bug", () => {
  const bytes = onnx({
    opset: 17,
    nodes: [
      { op: "Shape", inputs: ["x"], outputs: ["s"] },
      { op: "Gather", inputs: ["s", "i"], outputs: ["d"] },
      { op: "Reshape", inputs: ["x", "d"], outputs: ["y"] },
    ],
    initializers: [{ name: "i", dims: [1], float: [0.25] }],
    inputs: [{ name: "x", dims: [2, 3] }],
    outputs: [{ name: "y", dims: [] }],
  });
  refused(bytes, "malformed_model", /Gather: index 0.25 is not an integer/);
});

Deno.test("Reshape with a 0 past the input's rank is malformed, not an import bug", () => {
  const bytes = onnx({
    opset: 17,
    nodes: [{ op: "Reshape", inputs: ["x", "shape"], outputs: ["y"] }],
    initializers: [{ name: "shape", dims: [3], int64: [3, 2, 0] }],
    inputs: [{ name: "x", dims: [2, 3] }],
    outputs: [{ name: "y", dims: [] }],
  });
  refused(bytes, "malformed_model", /Reshape's 0 at position 2 copies a dimension the 2-D input lacks/);
});

Deno.test("Transpose with a perm that is not a permutation, and Slice with mismatched lists, are malformed", () => {
  for (const perm of [[0], [0, 0], [0, 2]]) {
    const bytes = onnx({
      opset: 17,
      nodes: [{ op: "Transpose", inputs: ["x"], outputs: ["y"], attributes: { perm: { ints: perm } } }],
      initializers: [],
      inputs: [{ name: "x", dims: [2, 3] }],
      outputs: [{ name: "y", dims: [] }],
    });
    refused(bytes, "malformed_model", /Transpose's perm \[.*\] is not a permutation of the 2 axes/);
  }
  const slice = onnx({
    opset: 17,
    nodes: [{ op: "Slice", inputs: ["x", "starts", "ends"], outputs: ["y"] }],
    initializers: [{ name: "starts", dims: [2], int64: [0, 0] }, { name: "ends", dims: [1], int64: [1] }],
    inputs: [{ name: "x", dims: [2, 3] }],
    outputs: [{ name: "y", dims: [] }],
  });
  refused(slice, "malformed_model", /Slice has 2 starts, 1 ends and no steps for 2 axes/);
});

Deno.test("Attention with Q, K, V (or past key and value) of mismatched ranks is malformed, not an import bug", () => {
  // Found by the fuzzer: a 4-D grouped-query model whose K lost a dim reached the head
  // expansion with undefined sizes.
  const attention = (k: number[], past?: number[]) =>
    onnx({
      opset: 23,
      nodes: [{
        op: "Attention",
        inputs: past === undefined ? ["q", "k", "v"] : ["q", "k", "v", "", "pk", "pv"],
        outputs: ["y"],
      }],
      initializers: [],
      inputs: [
        { name: "q", dims: [1, 4, 3, 8] },
        { name: "k", dims: k },
        { name: "v", dims: [1, 2, 5, 8] },
        ...(past === undefined ? [] : [{ name: "pk", dims: past }, { name: "pv", dims: past }]),
      ],
      outputs: [{ name: "y", dims: [] }],
    });
  refused(attention([2, 5, 8]), "malformed_model", /Attention: Q is 4-D but K is 3-D/);
  refused(attention([1, 2, 5, 8], [2, 4, 8]), "malformed_model", /Attention: past_key is 3-D; it must be 4-D/);
});

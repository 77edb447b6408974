import assert from "node:assert/strict";
import { importOnnx, SpindleError, tensor } from "../mod.ts";
import { Program } from "../lib/program/program.ts";
import { parseEinsum } from "../lib/onnx/einsum.ts";
import { assertClose, randomValues } from "./reference.ts";
import { onnx } from "../tools/fuzz_corpus.ts";

// ONNX Einsum, imported as native ops, against a plain loop over every label assignment.

/**
 * The reference: for every assignment of sizes to labels, the product of the operands'
 * elements, added into the output element the output labels pick. Labels come from
 * parseEinsum, so ellipsis dims broadcast (size 1 against any size) as numpy's do.
 */
function reference(equation: string, operands: { data: Float32Array; shape: number[] }[]) {
  const { inputs, output } = parseEinsum(equation, operands.map((o) => o.shape.length));
  const sizes = new Map<string, number>();
  inputs.forEach((labels, k) =>
    labels.forEach((l, axis) => sizes.set(l, Math.max(sizes.get(l) ?? 1, operands[k].shape[axis])))
  );
  const labels = [...sizes.keys()];
  const outShape = output.map((l) => sizes.get(l)!);
  const result = new Float64Array(outShape.reduce((a, b) => a * b, 1));
  const at = new Map<string, number>();
  const offset = (shape: number[], names: string[]) =>
    names.reduce((flat, l, axis) => flat * shape[axis] + (shape[axis] === 1 ? 0 : at.get(l)!), 0);
  const visit = (depth: number) => {
    if (depth === labels.length) {
      let term = 1;
      operands.forEach((o, k) => term *= o.data[offset(o.shape, inputs[k])]);
      result[offset(outShape, output)] += term;
      return;
    }
    for (let i = 0; i < sizes.get(labels[depth])!; i++) {
      at.set(labels[depth], i);
      visit(depth + 1);
    }
  };
  visit(0);
  return { data: result, shape: outShape };
}

function einsumModel(equation: string, shapes: (number | string)[][]): Uint8Array {
  const names = shapes.map((_, k) => `x${k}`);
  return onnx({
    opset: 17,
    nodes: [{ op: "Einsum", inputs: names, outputs: ["y"], attributes: { equation: { s: equation } } }],
    initializers: [],
    inputs: shapes.map((dims, k) => ({ name: names[k], dims })),
    outputs: [{ name: "y", dims: [] }],
  });
}

function check(equation: string, shapes: number[][]) {
  const operands = shapes.map((shape, k) => ({
    data: randomValues(shape.reduce((a, b) => a * b, 1), 31 + k),
    shape,
  }));
  const want = reference(equation, operands);
  const program = Program.load(importOnnx(einsumModel(equation, shapes)));
  const inputs = operands.map((o) => tensor(o.data, o.shape));
  try {
    const [y] = program.runSync(inputs);
    using _ = y;
    assert.deepEqual(y.shape, want.shape, `${equation}: shape`);
    assertClose(y.toArray() as Float32Array, want.data, { relative: 1e-4, absolute: 1e-5, label: equation });
  } finally {
    program.dispose();
    for (const t of inputs) t.dispose();
  }
}

Deno.test("Einsum: batched matmul, transposes, diagonals, sums, dot and outer products match the reference", () => {
  const cases: [string, number[][]][] = [
    ["bij,bjk->bik", [[3, 2, 5], [3, 5, 4]]],
    ["ij->ji", [[3, 7]]],
    ["ii->i", [[5, 5]]],
    ["ii", [[4, 4]]], // implicit: the trace
    ["...ij,...jk->...ik", [[2, 3, 4, 5], [2, 3, 5, 2]]],
    ["...ij,...jk->...ik", [[4, 5], [2, 3, 5, 2]]], // a narrower ellipsis broadcasts
    ["...ij,...jk", [[2, 1, 4, 5], [3, 5, 2]]], // size 1 under the ellipsis broadcasts
    ["i,i->", [[7], [7]]], // dot product
    ["i,j->ij", [[3], [4]]], // outer product
    ["i,j", [[3], [4]]],
    ["ij,jk", [[3, 4], [4, 2]]], // implicit output: i, k
    ["cb,ba", [[3, 4], [4, 2]]], // implicit output in alphabetical order: a, c
    ["ij->", [[3, 4]]],
    ["ij->i", [[3, 4]]],
    ["iij->ji", [[3, 3, 2]]],
    ["iii->i", [[3, 3, 3]]],
    ["bii->b", [[2, 4, 4]]],
    ["ijk,ikl,lm->jm", [[2, 3, 4], [2, 4, 5], [5, 3]]], // three operands
    ["ij,ij->ij", [[3, 4], [3, 4]]], // elementwise (batch labels only)
    ["ab,cd->", [[2, 3], [4, 5]]], // nothing shared: each summed alone
    ["Ab,bA->A", [[3, 2], [2, 3]]], // upper-case labels
    [" b i j , b j k -> b i k ", [[2, 3, 4], [2, 4, 1]]], // spaces
    ["...->...", [[2, 3]]],
    ["...i->", [[2, 3]]], // an ellipsis missing from the output is summed
    ["->", [[]]],
  ];
  for (const [equation, shapes] of cases) check(equation, shapes);
});

Deno.test("Einsum: symbolic batch and sequence sizes stay dynamic, and each size runs", () => {
  // Attention scores and a batched matmul over symbolic dims: no reshape merges them.
  const cases: [string, (number | string)[][], number[][][]][] = [
    ["bhqd,bhkd->bhqk", [["b", 2, "q", 4], ["b", 2, "k", 4]], [[[1, 2, 3, 4], [1, 2, 5, 4]], [[3, 2, 1, 4], [
      3,
      2,
      2,
      4,
    ]]]],
    ["bij,bjk->bik", [["b", 3, 4], ["b", 4, 2]], [[[1, 3, 4], [1, 4, 2]], [[5, 3, 4], [5, 4, 2]]]],
  ];
  for (const [equation, symbolic, runs] of cases) {
    const program = Program.load(importOnnx(einsumModel(equation, symbolic)));
    try {
      for (const shapes of runs) {
        const operands = shapes.map((shape, k) => ({
          data: randomValues(shape.reduce((a, b) => a * b, 1), 7 + k),
          shape,
        }));
        const want = reference(equation, operands);
        const inputs = operands.map((o) => tensor(o.data, o.shape));
        const [y] = program.runSync(inputs);
        for (const t of inputs) t.dispose();
        using _ = y;
        assert.deepEqual(y.shape, want.shape, `${equation} at ${JSON.stringify(shapes)}`);
        assertClose(y.toArray() as Float32Array, want.data, { relative: 1e-4, absolute: 1e-5, label: equation });
      }
    } finally {
      program.dispose();
    }
  }
});

Deno.test("Einsum: the implicit output lists the ellipsis dims, then the letters named once, sorted", () => {
  assert.deepEqual(parseEinsum("ba,ac", [2, 2]).output, ["b", "c"]);
  assert.deepEqual(parseEinsum("...ij,jk", [3, 2]).output, ["…0", "i", "k"]);
  assert.deepEqual(parseEinsum("b...i,...j", [4, 1]).inputs, [["b", "…0", "…1", "i"], ["j"]]);
  assert.deepEqual(parseEinsum("ii", [2]).output, []);
});

Deno.test("Einsum: a malformed equation is a malformed_model error naming the equation and the fault", () => {
  const cases: [string, number[][], RegExp][] = [
    ["ij,jk->ik", [[2, 3]], /'ij,jk->ik' has 2 input terms for 1 inputs/],
    ["ij->ji", [[2, 3, 4]], /'ij->ji' names 2 dims in input term 0 \('ij'\), but input 0 has rank 3/],
    ["ij,jk->ik", [[2, 3], [4, 5]], /'ij,jk->ik' gives label 'j' sizes 3 and 4/],
    ["ij->k", [[2, 3]], /'ij->k' has 'k' in its output but in no input term/],
    ["ij->ii", [[2, 2]], /'ij->ii' names 'i' twice in its output/],
    ["i1->i", [[2, 3]], /'i1->i' has '1' in input term 0/],
    ["i..j->i", [[2, 3]], /'i..j->i' has a '.' in input term 0/],
    ["...i...->i", [[2, 3]], /has two ellipses in input term 0/],
    ["ij->i->j", [[2, 3]], /has more than one '->'/],
    ["ij->...i", [[2, 3]], /has '...' in its output but in no input/],
    ["...ij,...jk->...ik", [[2, 3, 4], [5, 4, 2]], /gives a dim under '...' sizes 2 and 5/],
  ];
  for (const [equation, shapes, pattern] of cases) {
    assert.throws(() => importOnnx(einsumModel(equation, shapes)), (error: unknown) => {
      assert.ok(error instanceof SpindleError, `${equation}: ${error}`);
      assert.equal(error.code, "malformed_model");
      assert.match(error.message, pattern);
      assert.match(error.message, /Einsum/);
      return true;
    });
  }
});

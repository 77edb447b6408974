import assert from "node:assert/strict";
import { standInShape } from "../lib/onnx/stand_in.ts";
import { type OpName, type ParamsOf, runOp } from "../lib/ops/dispatch.ts";
import { SpindleError } from "../ffi/status.ts";
import { zeros } from "../mod.ts";

/** A small deterministic generator (the cases must be the same on every run). */
function lcg(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
}

/**
 * Import stands zeros in for the heavy ops' results in its eager runs: the shape it derives
 * must be the native op's, and where the native op refuses the inputs, it must derive none
 * (so that the op runs and its own error names the problem).
 */
function agrees<K extends OpName>(op: K, shapes: number[][], params: ParamsOf<K>): "derived" | "refused" {
  const inputs = shapes.map((s) => zeros(s));
  try {
    const derived = standInShape(op, inputs, params, true);
    let native: number[] | SpindleError;
    try {
      const out = runOp(op, inputs, params);
      native = [...out.shape];
      out.dispose();
    } catch (error) {
      if (!(error instanceof SpindleError)) throw error;
      native = error;
    }
    const what = `${op} ${JSON.stringify(shapes)} ${JSON.stringify(params)}`;
    if (native instanceof SpindleError) {
      assert.equal(derived, undefined, `${what}: the native op refuses (${native.message}) but a shape was derived`);
      return "refused";
    }
    // Deriving nothing for inputs the op takes only costs time; deriving a wrong shape is a bug.
    if (derived !== undefined) assert.deepEqual(derived, native, what);
    return derived === undefined ? "refused" : "derived";
  } finally {
    for (const t of inputs) t.dispose();
  }
}

Deno.test("stand-in shapes: conv2d and conv_transpose2d match the native ops, or defer to them", () => {
  const next = lcg(7);
  const tally = { derived: 0, refused: 0 };
  for (let i = 0; i < 300; i++) {
    const groups = [1, 1, 2, 3][next(4)];
    const c = groups * (1 + next(3)) + (next(8) === 0 ? 1 : 0); // sometimes not divisible
    const m = groups * (1 + next(3)) + (next(8) === 0 ? 1 : 0);
    const k = [1 + next(3), 1 + next(3)] as [number, number];
    const size = [1 + next(9), 1 + next(9)];
    const stride = [1 + next(3), 1 + next(3)] as [number, number];
    const padding = [next(3), next(3)] as [number, number];
    const dilation = [1 + next(2), 1 + next(2)] as [number, number];
    const bias = next(2) === 0;
    const badBias = bias && next(6) === 0;
    if (next(2) === 0) {
      const shapes = [[1 + next(2), c, ...size], [m, Math.max(1, Math.floor(c / groups)), ...k]];
      if (bias) shapes.push([badBias ? m + 1 : m]);
      tally[agrees("conv2d", shapes, { stride, padding, dilation, groups, has_bias: bias })]++;
    } else {
      const outputPadding = [next(3), next(2)] as [number, number];
      const shapes = [[1 + next(2), c, ...size], [c, Math.max(1, Math.floor(m / groups)), ...k]];
      const outChannels = Math.max(1, Math.floor(m / groups)) * groups;
      if (bias) shapes.push([badBias ? outChannels + 1 : outChannels]);
      tally[
        agrees("conv_transpose2d", shapes, {
          stride,
          padding,
          dilation,
          groups,
          output_padding: outputPadding,
          has_bias: bias,
        })
      ]++;
    }
  }
  // Both kinds occur, so neither branch of the check is vacuous.
  assert.ok(tally.derived > 100 && tally.refused > 20, JSON.stringify(tally));
});

Deno.test("stand-in shapes: mm, matmul and gemm match the native ops, or defer to them", () => {
  const next = lcg(11);
  const tally = { derived: 0, refused: 0 };
  const dim = () => 1 + next(4);
  for (let i = 0; i < 300; i++) {
    const [m, k, n] = [dim(), dim(), dim()];
    const kb = next(6) === 0 ? k + 1 : k;
    const pick = next(3);
    if (pick === 0) {
      tally[agrees("mm", [[m, k], [kb, n]], {})]++;
    } else if (pick === 1) {
      const batch = () => Array.from({ length: next(3) }, () => [1, 2, 3][next(3)]);
      const a = next(5) === 0 ? [k] : [...batch(), m, k];
      const b = next(5) === 0 ? [kb] : [...batch(), kb, n];
      tally[agrees("matmul", [a, b], {})]++;
    } else {
      const transA = next(2) === 0;
      const transB = next(2) === 0;
      const batch = () => Array.from({ length: next(3) === 0 ? 1 + next(2) : 0 }, () => [1, 2, 3][next(3)]);
      const shapes = [[...batch(), ...(transA ? [k, m] : [m, k])], [...batch(), ...(transB ? [n, kb] : [kb, n])]];
      const bias = next(2) === 0;
      if (bias) shapes.push([[n], [1, n], [m, n], [n + 1]][next(4)]);
      tally[agrees("gemm", shapes, { trans_a: transA, trans_b: transB, has_bias: bias, alpha: 1, beta: 1 })]++;
    }
  }
  assert.ok(tally.derived > 100 && tally.refused > 20, JSON.stringify(tally));
});

Deno.test("stand-in shapes: elementwise ops and batch norm on activations, never on shape-derived values", () => {
  const next = lcg(13);
  const tally = { derived: 0, refused: 0 };
  const shape = () => Array.from({ length: next(4) }, () => [1, 2, 3][next(3)]);
  for (let i = 0; i < 200; i++) {
    const pick = next(3);
    if (pick === 0) {
      const op = (["relu", "sigmoid", "exp", "abs", "erf", "hard_swish"] as const)[next(6)];
      tally[agrees(op, [shape()], {})]++;
    } else if (pick === 1) {
      const op = (["add", "sub", "mul", "div", "maximum", "pow"] as const)[next(6)];
      if (next(3) === 0) tally[agrees(op, [shape()], { scalar: 0.5, scalar_first: next(2) === 0 })]++;
      else tally[agrees(op, [shape(), shape()], {})]++;
    } else {
      const channels = 1 + next(3);
      const x = [1 + next(2), channels, ...shape()];
      const stat = () => [next(8) === 0 ? channels + 1 : channels];
      const hasWeight = next(2) === 0;
      const hasBias = next(2) === 0;
      const shapes = [x, stat(), stat(), ...(hasWeight ? [stat()] : []), ...(hasBias ? [stat()] : [])];
      tally[agrees("batch_norm", shapes, { eps: 1e-5, has_weight: hasWeight, has_bias: hasBias })]++;
    }
  }
  assert.ok(tally.derived > 80 && tally.refused > 10, JSON.stringify(tally));
  // Values derived from a shape (the flag off) are always computed.
  const x = { dtype: "float32" as const, shape: [2, 3] };
  assert.equal(standInShape("mul", [x, x], {}, false), undefined);
  assert.equal(standInShape("relu", [x], {}, false), undefined);
  assert.deepEqual(standInShape("mm", [x, { dtype: "float32", shape: [3, 4] }], {}, false), [2, 4]);
});

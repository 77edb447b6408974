/**
 * Output shapes of the heavy ops (convolutions and matrix products), for import's eager runs.
 *
 * Import runs every op eagerly on stand-in inputs (zeros at made-up sizes) to learn dtypes and
 * static dims. Computing the convolutions and matrix products of those runs was more than a
 * third of the import time of PaddleOCR's recogniser (two forward passes of its convolutions
 * at probe sizes) and tells nothing the shapes do not: a float product's values never decide a
 * size. So for these ops the eager run only derives the output shape, here, from the same
 * rules the native op checks, and stands a zero tensor in for the result. When anything is
 * off (a rank, a channel count, a size that comes out below 1) the shape is not derived and
 * the op runs natively, so that its own error names the problem. The load-time check then
 * runs the whole program natively at real sizes, so nothing skipped here goes unchecked.
 *
 * Elementwise ops and batch norm on activations stand in too (in the unfused graph import
 * sees, they are most of the remaining eager ops): `activation` says whether every runtime
 * input derives from the graph's inputs' values rather than from their shapes. Shape
 * arithmetic done in floats (Shape → Cast → Mul → Floor → Cast → Resize) must be computed,
 * so values derived from `shape_of` never stand in.
 *
 * @module
 */
import type { OpName, ParamsOf } from "../ops/dispatch.ts";
import type { DType } from "../tensor.ts";
import { broadcastShapes } from "./host.ts";

/** What the shape rules need to know of an input. */
export interface InputSpec {
  dtype: DType;
  shape: readonly number[];
}

type Pair = readonly [number, number];

/** The most dims a native tensor has. */
const MAX_DIMS = 8;

function pairOr(value: Pair | undefined, fallback: number): Pair {
  return value ?? [fallback, fallback];
}

function conv2dShape(inputs: readonly InputSpec[], p: ParamsOf<"conv2d">): number[] | undefined {
  const [x, w, bias] = inputs;
  if (x.shape.length !== 4 || w.shape.length !== 4) return undefined;
  const groups = p.groups ?? 1;
  const [n, c, h, width] = x.shape;
  const [m, cPerGroup, kh, kw] = w.shape;
  if (c !== cPerGroup * groups || m % groups !== 0 || m === 0) return undefined;
  if (p.has_bias === true && (bias === undefined || bias.shape.length !== 1 || bias.shape[0] !== m)) return undefined;
  const [sh, sw] = pairOr(p.stride, 1);
  const [ph, pw] = pairOr(p.padding, 0);
  const [dh, dw] = pairOr(p.dilation, 1);
  const oh = Math.floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const ow = Math.floor((width + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (!(oh >= 1 && ow >= 1 && kh >= 1 && kw >= 1)) return undefined;
  return [n, m, oh, ow];
}

function convTranspose2dShape(inputs: readonly InputSpec[], p: ParamsOf<"conv_transpose2d">): number[] | undefined {
  const [x, w, bias] = inputs;
  if (x.shape.length !== 4 || w.shape.length !== 4) return undefined;
  const groups = p.groups ?? 1;
  const [n, c, h, width] = x.shape;
  const [cw, mPerGroup, kh, kw] = w.shape;
  const m = mPerGroup * groups;
  if (c !== cw || c % groups !== 0 || m === 0) return undefined;
  if (p.has_bias === true && (bias === undefined || bias.shape.length !== 1 || bias.shape[0] !== m)) return undefined;
  const [sh, sw] = pairOr(p.stride, 1);
  const [ph, pw] = pairOr(p.padding, 0);
  const [oph, opw] = pairOr(p.output_padding, 0);
  const [dh, dw] = pairOr(p.dilation, 1);
  // Output padding must be smaller than the stride or the dilation (as the native op checks).
  if ((oph >= sh && oph >= dh) || (opw >= sw && opw >= dw)) return undefined;
  const oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1;
  const ow = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1;
  if (!(oh >= 1 && ow >= 1 && kh >= 1 && kw >= 1 && h >= 1 && width >= 1)) return undefined;
  return [n, m, oh, ow];
}

function mmShape(inputs: readonly InputSpec[]): number[] | undefined {
  const [a, b] = inputs;
  if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== b.shape[0]) return undefined;
  return [a.shape[0], b.shape[1]];
}

/** numpy matmul: 1-D operands gain and then lose a dim; batch dims broadcast. */
function matmulShape(inputs: readonly InputSpec[]): number[] | undefined {
  const [a, b] = inputs;
  if (a.shape.length === 0 || b.shape.length === 0) return undefined;
  const aShape = a.shape.length === 1 ? [1, a.shape[0]] : a.shape;
  const bShape = b.shape.length === 1 ? [b.shape[0], 1] : b.shape;
  const k = aShape[aShape.length - 1];
  if (k !== bShape[bShape.length - 2]) return undefined;
  const batch = broadcastShapes(aShape.slice(0, -2), bShape.slice(0, -2));
  if (batch === undefined) return undefined;
  const out = [...batch];
  if (a.shape.length > 1) out.push(aShape[aShape.length - 2]);
  if (b.shape.length > 1) out.push(bShape[bShape.length - 1]);
  return out.length <= MAX_DIMS ? out : undefined;
}

function gemmShape(inputs: readonly InputSpec[], p: ParamsOf<"gemm">): number[] | undefined {
  const [a, b, bias] = inputs;
  if (a.shape.length < 2 || b.shape.length < 2) return undefined;
  const [aRows, aCols] = a.shape.slice(-2);
  const [bRows, bCols] = b.shape.slice(-2);
  const [m, k] = p.trans_a === true ? [aCols, aRows] : [aRows, aCols];
  const [kb, n] = p.trans_b === true ? [bCols, bRows] : [bRows, bCols];
  if (k !== kb) return undefined;
  // Leading dims broadcast as batches (the native op's batched gemm).
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (batch === undefined || batch.length + 2 > MAX_DIMS) return undefined;
  if (p.has_bias === true) {
    // A row of n values added to every row, as the native op takes it.
    if (bias === undefined) return undefined;
    const count = bias.shape.reduce((x, y) => x * y, 1);
    if (count !== n || (bias.shape.length > 0 && bias.shape[bias.shape.length - 1] !== n)) return undefined;
  }
  return [...batch, m, n];
}

function sameShape(inputs: readonly InputSpec[]): number[] | undefined {
  return inputs.length === 1 ? inputs[0].shape.slice() : undefined;
}

/** Two tensors broadcast together, or one tensor with a scalar parameter (`{ scalar }`). */
function broadcast(inputs: readonly InputSpec[], p: { scalar?: number | null }): number[] | undefined {
  if (inputs.length === 1) return p.scalar !== undefined && p.scalar !== null ? inputs[0].shape.slice() : undefined;
  const tensors = inputs.length === 2 && (p.scalar === undefined || p.scalar === null);
  return tensors ? broadcastShapes(inputs[0].shape, inputs[1].shape) : undefined;
}

function batchNormShape(inputs: readonly InputSpec[], p: ParamsOf<"batch_norm">): number[] | undefined {
  const [x, ...stats] = inputs;
  const expected = 3 + Number(p.has_weight === true) + Number(p.has_bias === true);
  const eps = p.eps ?? 1e-5;
  if (inputs.length !== expected || x.shape.length < 2 || !(eps >= 0 && Number.isFinite(eps))) return undefined;
  const channels = x.shape[1];
  return stats.every((t) => t.shape.length === 1 && t.shape[0] === channels) ? x.shape.slice() : undefined;
}

type Rule = (inputs: readonly InputSpec[], params: never) => number[] | undefined;

/** Ops whose results stand in whatever their inputs. */
const HEAVY: Partial<Record<OpName, Rule>> = {
  conv2d: conv2dShape,
  conv_transpose2d: convTranspose2dShape,
  mm: mmShape,
  matmul: matmulShape,
  gemm: gemmShape,
};

/** Ops whose results stand in when their runtime inputs are activations. */
const ELEMENTWISE: Partial<Record<OpName, Rule>> = {
  ...Object.fromEntries(
    (["relu", "sigmoid", "tanh", "exp", "log", "sqrt", "neg", "abs", "hard_swish", "erf"] as const).map((
      op,
    ) => [op, sameShape]),
  ),
  gelu: sameShape,
  clamp: sameShape,
  leaky_relu: sameShape,
  elu: sameShape,
  hard_sigmoid: sameShape,
  ...Object.fromEntries(
    (["add", "sub", "mul", "div", "pow", "maximum", "minimum"] as const).map((op) => [op, broadcast]),
  ),
  batch_norm: batchNormShape,
};

/**
 * The float32 output shape of op `op` on float32 inputs of these specs, when its result may
 * stand in: a heavy op, or an elementwise op on activations. Undefined when it may not or
 * the inputs do not check out (then the op must run natively).
 *
 * @param activation Whether every runtime input of the op derives from the values of the
 *   graph's inputs, none from their shapes.
 */
export function standInShape<K extends OpName>(
  op: K,
  inputs: readonly InputSpec[],
  params: ParamsOf<K>,
  activation: boolean,
): number[] | undefined {
  const rule = HEAVY[op] ?? (activation ? ELEMENTWISE[op] : undefined);
  if (rule === undefined || inputs.length === 0) return undefined;
  if (inputs.some((i) => i.dtype !== "float32" || i.shape.some((d) => !Number.isSafeInteger(d) || d < 0))) {
    return undefined;
  }
  const shape = rule(inputs, params as never);
  return shape !== undefined && shape.every((d) => Number.isSafeInteger(d) && d >= 0) ? shape : undefined;
}

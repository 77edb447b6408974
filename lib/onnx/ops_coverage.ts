/**
 * ONNX op types beyond the core set (issue 12's coverage list), as families: one-input math
 * functions (one native op, `unary_math`), the logical and bitwise integer ops
 * (`int_binary`'s kinds), the remaining Reduce* ops, and ops that are exact compositions of
 * native ops (Split as slices, Tile as expand, DepthToSpace as reshape and permute, the
 * normalizations as reductions and elementwise ops). Masks and index tables that depend
 * only on static shapes are built at import; everything that depends on values runs natively.
 * Einsum is lowered in einsum.ts; NonMaxSuppression is one native op (ops/detection.zig).
 *
 * @module
 */
import { DATA_TYPE } from "./proto.ts";
import { broadcastMap, host, numel, spindleDType } from "./host.ts";
import { constInts, shapeOf, unsupported, type Value } from "./graph.ts";
import type { ParamsOf } from "../ops/dispatch.ts";
import {
  allConst,
  asDType,
  attrFloat,
  attrInt,
  attrInts,
  attrString,
  binary,
  cast,
  constValue,
  cumulative,
  type Handler,
  hostPerRun,
  input,
  intBinary,
  type NodeContext,
  normAxis,
  pool,
  reduce,
  reshapeTo,
  typeOf,
} from "./ops.ts";
import { einsum } from "./einsum.ts";

type MathKind = ParamsOf<"unary_math">["kind"];

/** A float32 scalar constant. */
function scalar(value: number, type: number = DATA_TYPE.FLOAT): Value {
  return constValue(host(type, [], [value]));
}

/** x as float32 (constants converted on the host; run-time integers refused). */
function floatInput(n: NodeContext, index: number): Value {
  const x = input(n, index);
  if (x.kind === "runtime" && x.dtype !== "float32") unsupported(`${n.node.opType} of ${x.dtype} tensors`);
  return asDType(x, "float32");
}

/** A static dimension, or `unsupported` naming the op when it is dynamic. */
function staticDim(n: NodeContext, size: number): number {
  if (size < 0) unsupported(`${n.node.opType} over a dynamic dimension`);
  return size;
}

// ----------------------------------------------------------------------------------------
// One-input math (kernels/elementwise.zig)

function math(kind: MathKind, params: (n: NodeContext) => { alpha?: number; beta?: number } = () => ({})): Handler {
  return (n) => [n.b.emit("unary_math", [floatInput(n, 0)], { kind, ...params(n) })];
}

/** IsNaN and IsInf: the kernel's 1/0 as ONNX's bool (int32). */
function predicate(kind: "is_nan" | "is_inf"): Handler {
  return (n) => {
    const params = kind === "is_inf"
      ? { alpha: attrInt(n, "detect_negative", 1), beta: attrInt(n, "detect_positive", 1) }
      : {};
    const y = n.b.emit("unary_math", [floatInput(n, 0)], { kind, ...params });
    return [n.b.emit("cast", [y], { dtype: "int32" })];
  };
}

/** The rounding that a Cast to a narrow type carried in float32 (or int32) is. */
const NARROW_CASTS: Record<number, MathKind> = {
  [DATA_TYPE.FLOAT16]: "to_float16",
  [DATA_TYPE.BFLOAT16]: "to_bfloat16",
  [DATA_TYPE.FLOAT8E4M3FN]: "to_e4m3fn",
  [DATA_TYPE.FLOAT8E4M3FNUZ]: "to_e4m3fnuz",
  [DATA_TYPE.FLOAT8E5M2]: "to_e5m2",
  [DATA_TYPE.FLOAT8E5M2FNUZ]: "to_e5m2fnuz",
  [DATA_TYPE.FLOAT4E2M1]: "to_e2m1",
  [DATA_TYPE.FLOAT8E8M0]: "to_e8m0",
  [DATA_TYPE.INT4]: "to_int4",
  [DATA_TYPE.UINT4]: "to_uint4",
  [DATA_TYPE.INT2]: "to_int2",
  [DATA_TYPE.UINT2]: "to_uint2",
};

const E8M0_ROUNDING = ["up", "nearest", "down"];

/**
 * Cast and CastLike: to a narrow type, the native rounding to its values (saturating the
 * float8 types unless saturate = 0; float8e8m0 rounding as round_mode says); otherwise
 * ops.ts's cast.
 */
function castNarrow(n: NodeContext): Value[] {
  const like = n.node.opType === "CastLike" ? input(n, 1) : undefined;
  const to = like === undefined
    ? attrInt(n, "to", DATA_TYPE.FLOAT)
    : like.kind === "runtime" && like.elemType !== undefined
    ? like.elemType
    : typeOf(like);
  const kind = NARROW_CASTS[to];
  if (kind === undefined) return cast(n);
  let x = input(n, 0);
  if (x.kind === "runtime" && x.dtype !== "float32") x = n.b.emit("cast", [x], { dtype: "float32" });
  const mode = E8M0_ROUNDING.indexOf(attrString(n, "round_mode", "up"));
  if (mode < 0) {
    throw new RangeError(`Cast's round_mode is '${attrString(n, "round_mode", "")}'; it is up, nearest or down`);
  }
  const rounded = n.b.emit("unary_math", [asDType(x, "float32")], {
    kind,
    alpha: attrInt(n, "saturate", 1),
    beta: mode,
  });
  return [spindleDType(to) === "int32" ? n.b.emit("cast", [rounded], { dtype: "int32" }) : rounded];
}

// ----------------------------------------------------------------------------------------
// Logical and bitwise (bools and small integers ride as int32; int_binary's kinds)

type IntKind = ParamsOf<"int_binary">["kind"];

/** The integer dtype the operands share (a run-time operand's, else the first constant's). */
function intDType(n: NodeContext, values: Value[]) {
  const runtime = values.find((v) => v.kind === "runtime");
  const dtype = runtime?.kind === "runtime" ? runtime.dtype : spindleDType(typeOf(values[0]));
  if (dtype === undefined || dtype === "float32") unsupported(`${n.node.opType} of float tensors`);
  return dtype;
}

function bitwise(kind: IntKind): Handler {
  return (n) => {
    const [a, b] = [input(n, 0), input(n, 1)];
    return [intBinary(n, kind, a, b, intDType(n, [a, b]))];
  };
}

/** All ones in an unsigned ONNX type's width (the carrier is wider); -1 for signed ones. */
function widthMask(type: number): number {
  switch (type) {
    case DATA_TYPE.UINT8:
      return 0xff;
    case DATA_TYPE.UINT16:
      return 0xffff;
    case DATA_TYPE.UINT32:
      return 0xffffffff;
    case DATA_TYPE.BOOL:
      return 1;
    default:
      return -1;
  }
}

/** Not (bools) and BitwiseNot: x xor the type's all-ones mask. */
function bitwiseNot(n: NodeContext): Value[] {
  const x = input(n, 0);
  const dtype = intDType(n, [x]);
  // A run-time value's ONNX type is not tracked: Not takes bools, BitwiseNot is exact for the
  // signed types (an unsigned run-time input would need its width).
  const type = x.kind === "const" ? typeOf(x) : n.node.opType === "Not" ? DATA_TYPE.BOOL : -1;
  if (x.kind === "runtime" && n.node.opType === "BitwiseNot") {
    unsupported("BitwiseNot at run time (the width of an unsigned input is not known there)");
  }
  const mask = scalar(widthMask(type), dtype === "int64" ? DATA_TYPE.INT64 : DATA_TYPE.INT32);
  return [intBinary(n, "bit_xor", x, mask, dtype)];
}

/** BitShift on unsigned types: a left shift drops the bits past the type's width. */
function bitShift(n: NodeContext): Value[] {
  const [a, b] = [input(n, 0), input(n, 1)];
  const dtype = intDType(n, [a, b]);
  const left = attrString(n, "direction", "") === "LEFT";
  if (!left && attrString(n, "direction", "") !== "RIGHT") {
    throw new RangeError(`BitShift's direction is '${attrString(n, "direction", "")}'; it is LEFT or RIGHT`);
  }
  if (left && a.kind === "runtime") unsupported("BitShift LEFT at run time (the input's unsigned width is not known)");
  const shifted = intBinary(n, left ? "shift_left" : "shift_right", a, b, dtype);
  const mask = widthMask(typeOf(a));
  if (!left || mask === -1) return [shifted];
  return [intBinary(n, "bit_and", shifted, scalar(mask, dtype === "int64" ? DATA_TYPE.INT64 : DATA_TYPE.INT32), dtype)];
}

/** Mod: integers natively (fmod 0: the divisor's sign; 1: the dividend's); floats (fmod 1) natively, or folded. */
function mod(n: NodeContext): Value[] {
  const [a, b] = [input(n, 0), input(n, 1)];
  const fmod = attrInt(n, "fmod", 0) === 1;
  const float = [a, b].some((v) => spindleDType(typeOf(v)) === "float32");
  if (float) {
    if (!fmod) throw new RangeError("Mod of float tensors needs fmod = 1 (ONNX)");
    if (!allConst([a, b])) return [n.b.emit("fmod", [asDType(a, "float32"), asDType(b, "float32")])];
    return [hostPerRun([a, b], (h) => {
      const out = broadcastMap(h, typeOf(a), (x, y) => x % y);
      out.values = out.values!.map(Math.fround);
      return out;
    })];
  }
  return [intBinary(n, fmod ? "rem" : "mod", a, b, intDType(n, [a, b]))];
}

// ----------------------------------------------------------------------------------------
// Reductions

function reduceWith(body: (n: NodeContext, x: Value, dims: number[], keepdim: boolean) => Value): Handler {
  return (n) => reduce(n, (x, dims, keepdim) => body(n, x, dims, keepdim));
}

function squareOf(n: NodeContext, x: Value): Value {
  return n.b.emit("mul", [x, x]);
}

/** log Σ exp(x), shifted by the maximum (no overflow); unshifted over an empty set (−inf). */
function logSumExp(n: NodeContext, x: Value, dims: number[], keepdim: boolean): Value {
  const shape = shapeOf(x);
  if (dims.some((d) => shape[d] <= 0)) {
    return n.b.emit("log", [n.b.emit("sum", [n.b.emit("exp", [x])], { dims, keepdim })]);
  }
  const peak = n.b.emit("max", [x], { dims, keepdim: true });
  const total = n.b.emit("sum", [n.b.emit("exp", [n.b.emit("sub", [x, peak])])], { dims, keepdim: true });
  const result = n.b.emit("add", [n.b.emit("log", [total]), peak]);
  if (keepdim) return result;
  let out = result;
  for (const d of [...dims].sort((p, q) => q - p)) out = n.b.emit("squeeze", [out], { dim: d });
  return out;
}

/** ArgMax, and ArgMin as the argmax of −x (the first or, with select_last_index, the last of ties). */
function argExtreme(min: boolean): Handler {
  return (n) => {
    let x = input(n, 0);
    const rank = shapeOf(x).length;
    if (x.kind === "runtime" && x.dtype !== "float32") x = n.b.emit("cast", [x], { dtype: "float32" });
    x = asDType(x, "float32");
    if (min) x = n.b.emit("neg", [x]);
    const dim = normAxis(attrInt(n, "axis", 0), rank);
    const last = attrInt(n, "select_last_index", 0) === 1;
    return [n.b.emit("argmax", [x], { dim, keepdim: attrInt(n, "keepdims", 1) === 1, last })];
  };
}

/** Hardmax: 1 where the argmax along the axis is, 0 elsewhere. */
function hardmax(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const shape = shapeOf(x);
  const axis = normAxis(attrInt(n, "axis", n.opset < 13 ? 1 : -1), shape.length);
  if (n.opset < 13 && axis !== shape.length - 1) unsupported("Hardmax (opset < 13) over more than the last axis");
  const size = staticDim(n, shape[axis]);
  const index = n.b.emit("argmax", [x], { dim: axis, keepdim: true });
  const trailing = new Array<number>(shape.length - 1 - axis).fill(1);
  const positions = constValue(host(DATA_TYPE.INT64, [size, ...trailing], [...Array(size).keys()]));
  const hit = n.b.emit("compare", [index, positions], { kind: "equal" });
  return [n.b.emit("cast", [hit], { dtype: "float32" })];
}

// ----------------------------------------------------------------------------------------
// Variadic elementwise

function variadic(op: "add" | "maximum" | "minimum", mean = false): Handler {
  return (n) => {
    const values = n.inputs.filter((v): v is Value => v !== undefined);
    if (values.length === 0) throw new RangeError(`${n.node.opType} needs at least one input`);
    if (values.length === 2 && !mean && n.node.opType !== "Sum") return binary(n);
    let out = values[0];
    for (const v of values.slice(1)) out = n.b.emit(op, [out, v]);
    if (mean && values.length > 1) out = n.b.emit("div", [out], { scalar: values.length });
    return [out];
  };
}

function prelu(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const slope = floatInput(n, 1);
  const negative = n.b.emit("compare", [x, scalar(0)], { kind: "less" });
  return [n.b.emit("where", [negative, n.b.emit("mul", [x, slope]), x])];
}

// ----------------------------------------------------------------------------------------
// Shape compositions

function split(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x);
  const axis = normAxis(attrInt(n, "axis", 0), shape.length);
  const count = n.node.outputs.length;
  const given = n.opset >= 13
    ? (n.inputs[1] ? constInts(n.inputs[1], "Split's split") : undefined)
    : n.node.attributes.find((a) => a.name === "split")?.ints.map(Number);
  const dim = shape[axis];
  let sizes = given !== undefined && given.length > 0 ? given : undefined;
  if (sizes === undefined) {
    const parts = n.opset >= 18 ? attrInt(n, "num_outputs", count) : count;
    const chunk = Math.ceil(staticDim(n, dim) / parts);
    sizes = Array.from({ length: parts }, (_, i) => Math.max(0, Math.min(chunk, dim - i * chunk)));
  }
  if (sizes.length !== count) {
    throw new RangeError(`Split has ${sizes.length} sizes for ${count} outputs`);
  }
  if (sizes.some((s) => s < 0) || (dim >= 0 && sizes.reduce((p, q) => p + q, 0) !== dim)) {
    throw new RangeError(`Split's sizes [${sizes}] must be non-negative and add up to the axis size ${dim}`);
  }
  let start = 0;
  return sizes.map((size) => {
    const part = n.b.emit("slice", [x], { dim: axis, start, end: start + size });
    start += size;
    return part;
  });
}

/** Tile: x viewed as [1, d0, 1, d1, …], expanded to [r0, d0, r1, d1, …], merged pairwise. */
function tile(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x).map((d) => staticDim(n, d));
  const repeats = constInts(n.inputs[1], "Tile's repeats");
  if (repeats.length !== shape.length || repeats.some((r) => r < 0)) {
    throw new RangeError(`Tile's repeats [${repeats}] must be ${shape.length} non-negative values`);
  }
  if (shape.length * 2 > 8) unsupported(`Tile of a ${shape.length}-D tensor (4-D at most)`);
  const lifted = reshapeTo(n.b, x, shape.flatMap((d) => [1, d]));
  const expanded = n.b.emit("expand", [lifted], { shape: shape.flatMap((d, i) => [repeats[i], d]) });
  return [reshapeTo(n.b, expanded, shape.map((d, i) => d * repeats[i]))];
}

function depthToSpace(n: NodeContext): Value[] {
  const x = input(n, 0);
  const [batch, channels, height, width] = shapeOf(x).map((d) => staticDim(n, d));
  const b = attrInt(n, "blocksize", 0);
  if (shapeOf(x).length !== 4 || b < 1 || channels % (b * b) !== 0) {
    throw new RangeError(`DepthToSpace needs a 4-D input with channels divisible by blocksize² (blocksize ${b})`);
  }
  const depth = channels / (b * b);
  const crd = attrString(n, "mode", "DCR") === "CRD";
  const split = reshapeTo(n.b, x, crd ? [batch, depth, b, b, height, width] : [batch, b, b, depth, height, width]);
  const moved = n.b.emit("permute", [split], { dims: crd ? [0, 1, 4, 2, 5, 3] : [0, 3, 4, 1, 5, 2] });
  return [reshapeTo(n.b, moved, [batch, depth, height * b, width * b])];
}

function spaceToDepth(n: NodeContext): Value[] {
  const x = input(n, 0);
  const [batch, channels, height, width] = shapeOf(x).map((d) => staticDim(n, d));
  const b = attrInt(n, "blocksize", 0);
  if (shapeOf(x).length !== 4 || b < 1 || height % b !== 0 || width % b !== 0) {
    throw new RangeError(`SpaceToDepth needs a 4-D input with height and width divisible by blocksize ${b}`);
  }
  const split = reshapeTo(n.b, x, [batch, channels, height / b, b, width / b, b]);
  const moved = n.b.emit("permute", [split], { dims: [0, 3, 5, 1, 2, 4] });
  return [reshapeTo(n.b, moved, [batch, channels * b * b, height / b, width / b])];
}

/**
 * CenterCropPad: per axis, a centered slice where the target is smaller, centered zero
 * padding where it is larger (the extra element of an odd difference at the end).
 */
function centerCropPad(n: NodeContext): Value[] {
  let x = input(n, 0);
  const rank = shapeOf(x).length;
  const targets = constInts(n.inputs[1], "CenterCropPad's shape");
  const axes = (n.node.attributes.find((a) => a.name === "axes")?.ints.map(Number) ?? [...Array(rank).keys()])
    .map((a) => normAxis(a, rank));
  if (targets.length !== axes.length) {
    throw new RangeError(`CenterCropPad has ${targets.length} sizes for ${axes.length} axes`);
  }
  axes.forEach((axis, i) => {
    const size = staticDim(n, shapeOf(x)[axis]);
    const target = targets[i];
    if (target < 0) throw new RangeError(`CenterCropPad's size ${target} is negative`);
    const begin = Math.floor(Math.abs(size - target) / 2);
    if (target < size) x = n.b.emit("slice", [x], { dim: axis, start: begin, end: begin + target });
    if (target > size) {
      const pads = new Array<number>(2 * rank).fill(0);
      pads[axis] = begin;
      pads[rank + axis] = target - size - begin;
      x = n.b.emit("pad", [x], { mode: "constant", value: 0, pads });
    }
  });
  return [x];
}

/**
 * LpPool: (Σ over the window of |x|^p)^(1/p), as an average pool of |x|^p that counts the
 * padding (so the mean times the window's size is the sum over it).
 */
function lpPool(n: NodeContext): Value[] {
  const p = attrInt(n, "p", 2);
  if (p < 1) throw new RangeError(`LpPool's p is ${p}; it must be at least 1`);
  const x = floatInput(n, 0);
  const powered = p === 2 ? squareOf(n, x) : n.b.emit("pow", [n.b.emit("abs", [x])], { scalar: p });
  const kernel = n.node.attributes.find((a) => a.name === "kernel_shape")?.ints.map(Number) ??
    unsupported("LpPool without kernel_shape");
  const attributes = [
    ...n.node.attributes.filter((a) => a.name !== "p" && a.name !== "count_include_pad"),
    { name: "count_include_pad", type: 2, i: 1n, floats: [], ints: [], strings: [] },
  ];
  const [mean] = pool(false)({ ...n, node: { ...n.node, attributes }, inputs: [powered] });
  const sum = n.b.emit("mul", [mean!], { scalar: kernel.reduce((a, b) => a * b, 1) });
  return [p === 1 ? sum : n.b.emit("pow", [sum], { scalar: 1 / p })];
}

/** Trilu: where(mask, x, 0) with the [rows, cols] mask of the kept triangle. */
function trilu(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x);
  if (shape.length < 2) throw new RangeError(`Trilu needs a tensor of rank 2 or more, got rank ${shape.length}`);
  const rows = staticDim(n, shape[shape.length - 2]);
  const cols = staticDim(n, shape[shape.length - 1]);
  const k = n.inputs[1] ? constInts(n.inputs[1], "Trilu's k")[0] : 0;
  const upper = attrInt(n, "upper", 1) === 1;
  const mask: number[] = [];
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) mask.push((upper ? j - i >= k : j - i <= k) ? 1 : 0);
  }
  const zero = scalar(0, typeOf(x));
  return [n.b.emit("where", [constValue(host(DATA_TYPE.BOOL, [rows, cols], mask)), x, zero])];
}

/** EyeLike: ones on diagonal k of a static 2-D shape (a constant). */
function eyeLike(n: NodeContext): Value[] {
  const [rows, cols] = shapeOf(input(n, 0)).map((d) => staticDim(n, d));
  if (shapeOf(input(n, 0)).length !== 2) throw new RangeError("EyeLike takes a 2-D input");
  const k = attrInt(n, "k", 0);
  const type = attrInt(n, "dtype", typeOf(input(n, 0)));
  if (spindleDType(type) === undefined) unsupported(`EyeLike of ONNX element type ${type}`);
  const values = new Array<number>(rows * cols).fill(0);
  for (let i = 0; i < rows; i++) if (i + k >= 0 && i + k < cols) values[i * cols + i + k] = 1;
  return [constValue(host(type, [rows, cols], values))];
}

// ----------------------------------------------------------------------------------------
// Normalizations as reductions and elementwise ops

/** (x − mean) / sqrt(var + eps) over `dims`, with the statistics kept for broadcasting. */
function standardize(n: NodeContext, x: Value, dims: number[], eps: number): Value {
  const mean = n.b.emit("mean", [x], { dims, keepdim: true });
  const centered = n.b.emit("sub", [x, mean]);
  const variance = n.b.emit("mean", [squareOf(n, centered)], { dims, keepdim: true });
  return n.b.emit("div", [centered, n.b.emit("sqrt", [n.b.emit("add", [variance], { scalar: eps })])]);
}

/** A per-channel vector [C] as [C, 1, …] against an input of `rank` (channels on dim 1). */
function perChannel(n: NodeContext, v: Value, rank: number): Value {
  return reshapeTo(n.b, v, [-1, ...new Array<number>(rank - 2).fill(1)]);
}

function rmsNormalization(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const rank = shapeOf(x).length;
  const axis = normAxis(attrInt(n, "axis", -1), rank);
  const eps = attrFloat(n, "epsilon", 1e-5);
  const dims = [...Array(rank - axis).keys()].map((d) => d + axis);
  const meanSquare = n.b.emit("mean", [squareOf(n, x)], { dims, keepdim: true });
  const rms = n.b.emit("sqrt", [n.b.emit("add", [meanSquare], { scalar: eps })]);
  return [n.b.emit("mul", [n.b.emit("div", [x, rms]), floatInput(n, 1)])];
}

function instanceNormalization(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const rank = shapeOf(x).length;
  if (rank < 3) throw new RangeError(`InstanceNormalization needs a [N, C, …] input, got rank ${rank}`);
  const dims = [...Array(rank - 2).keys()].map((d) => d + 2);
  const y = standardize(n, x, dims, attrFloat(n, "epsilon", 1e-5));
  const scaled = n.b.emit("mul", [y, perChannel(n, floatInput(n, 1), rank)]);
  return [n.b.emit("add", [scaled, perChannel(n, floatInput(n, 2), rank)])];
}

function groupNormalization(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const shape = shapeOf(x).map((d) => staticDim(n, d));
  const groups = attrInt(n, "num_groups", 0);
  const channels = shape[1];
  if (shape.length < 3 || groups < 1 || channels % groups !== 0) {
    throw new RangeError(`GroupNormalization: ${channels} channels do not split into ${groups} groups`);
  }
  const grouped = reshapeTo(n.b, x, [shape[0], groups, -1]);
  const y = standardize(n, grouped, [2], attrFloat(n, "epsilon", 1e-5));
  const [scale, bias] = [floatInput(n, 1), floatInput(n, 2)];
  if (numel(shapeOf(scale)) === groups && groups !== channels) {
    // Opset 18: one scale and bias per group.
    const affine = n.b.emit("add", [
      n.b.emit("mul", [y, reshapeTo(n.b, scale, [groups, 1])]),
      reshapeTo(n.b, bias, [groups, 1]),
    ]);
    return [reshapeTo(n.b, affine, shape)];
  }
  const back = reshapeTo(n.b, y, shape);
  return [
    n.b.emit("add", [n.b.emit("mul", [back, perChannel(n, scale, shape.length)]), perChannel(n, bias, shape.length)]),
  ];
}

function lpNormalization(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const rank = shapeOf(x).length;
  const dims = [normAxis(attrInt(n, "axis", -1), rank)];
  const p = attrInt(n, "p", 2);
  if (p !== 1 && p !== 2) throw new RangeError(`LpNormalization's p is ${p}; it is 1 or 2`);
  const norm = p === 1
    ? n.b.emit("sum", [n.b.emit("abs", [x])], { dims, keepdim: true })
    : n.b.emit("sqrt", [n.b.emit("sum", [squareOf(n, x)], { dims, keepdim: true })]);
  // A zero vector stays zero (ONNX's reference), not 0/0.
  const zero = n.b.emit("compare", [norm, scalar(0)], { kind: "equal" });
  return [n.b.emit("div", [x, n.b.emit("where", [zero, scalar(1), norm])])];
}

function meanVarianceNormalization(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const rank = shapeOf(x).length;
  const axes = n.node.attributes.find((a) => a.name === "axes")?.ints.map((a) => normAxis(Number(a), rank)) ??
    [0, 2, 3];
  const mean = n.b.emit("mean", [x], { dims: axes, keepdim: true });
  const centered = n.b.emit("sub", [x, mean]);
  const deviation = n.b.emit("sqrt", [n.b.emit("mean", [squareOf(n, centered)], { dims: axes, keepdim: true })]);
  // ONNX's function body: (X − E[X]) / (sqrt(Var[X]) + 1e-9).
  return [n.b.emit("div", [centered, n.b.emit("add", [deviation], { scalar: 1e-9 })])];
}

// ----------------------------------------------------------------------------------------
// Element-indexed ops (ops/scatter.zig) and what composes from them

type ScatterReduction = ParamsOf<"scatter_nd">["reduction"];

function scatterReduction(n: NodeContext): ScatterReduction {
  const name = attrString(n, "reduction", "none");
  if (!["none", "add", "mul", "max", "min"].includes(name)) {
    throw new RangeError(`${n.node.opType}'s reduction is '${name}'; it is none, add, mul, max or min`);
  }
  return name as ScatterReduction;
}

function gatherElements(n: NodeContext): Value[] {
  const x = input(n, 0);
  const axis = normAxis(attrInt(n, "axis", 0), shapeOf(x).length);
  return [n.b.emit("gather_elements", [x, input(n, 1)], { axis })];
}

/**
 * ReverseSequence: along time_axis, the first sequence_lens[b] elements of each batch entry
 * reversed, the rest kept: GatherElements at index len − 1 − t where t < len, else t (the
 * time and batch sizes static, the lengths computed at run time or not).
 */
function reverseSequence(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x);
  const timeAxis = attrInt(n, "time_axis", 0);
  const batchAxis = attrInt(n, "batch_axis", 1);
  if (shape.length < 2 || ![0, 1].includes(timeAxis) || batchAxis !== 1 - timeAxis) {
    throw new RangeError(
      `ReverseSequence's time_axis ${timeAxis} and batch_axis ${batchAxis} must be 0 and 1 in some order (rank ${shape.length})`,
    );
  }
  const steps = staticDim(n, shape[timeAxis]);
  staticDim(n, shape[batchAxis]);
  if (shape.some((d) => d < 0)) unsupported("ReverseSequence over dynamic dimensions");
  const lens = asDType(input(n, 1), "int64");
  // t varies along the time axis, the lengths along the batch axis: a [T, B] or [B, T] grid.
  const t = constValue(host(DATA_TYPE.INT64, timeAxis === 0 ? [steps, 1] : [1, steps], [...Array(steps).keys()]));
  const lengths = n.b.emit("unsqueeze", [lens], { dim: timeAxis });
  const inside = n.b.emit("compare", [t, lengths], { kind: "less" });
  const last = n.b.emit("int_binary", [lengths, scalar(1, DATA_TYPE.INT64)], { kind: "sub" });
  const reversed = n.b.emit("int_binary", [last, t], { kind: "sub" });
  let index = n.b.emit("where", [inside, reversed, t]);
  for (let axis = 2; axis < shape.length; axis++) index = n.b.emit("unsqueeze", [index], { dim: axis });
  index = n.b.emit("expand", [index], { shape });
  return [n.b.emit("gather_elements", [x, index], { axis: timeAxis })];
}

function scatterElements(n: NodeContext): Value[] {
  const data = input(n, 0);
  const axis = normAxis(attrInt(n, "axis", 0), shapeOf(data).length);
  return [n.b.emit("scatter_elements", [data, input(n, 1), input(n, 2)], { axis, reduction: scatterReduction(n) })];
}

function gatherNd(n: NodeContext): Value[] {
  return [n.b.emit("gather_nd", [input(n, 0), input(n, 1)], { batch_dims: attrInt(n, "batch_dims", 0) })];
}

function scatterNd(n: NodeContext): Value[] {
  return [n.b.emit("scatter_nd", [input(n, 0), input(n, 1), input(n, 2)], { reduction: scatterReduction(n) })];
}

/** TopK: the native op's indices, and the values gathered at them. */
function topK(n: NodeContext): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  const axis = normAxis(attrInt(n, "axis", -1), rank);
  const k = n.opset < 10 ? attrInt(n, "k", -1) : constInts(n.inputs[1], "TopK's K")[0];
  if (k === undefined || k < 0) throw new RangeError(`TopK's K is ${k}; it must be a non-negative integer`);
  const keys = x.kind === "runtime" && x.dtype !== "float32"
    ? n.b.emit("cast", [x], { dtype: "float32" })
    : asDType(x, "float32");
  const indices = n.b.emit("top_k", [keys], { k, axis, largest: attrInt(n, "largest", 1) === 1 });
  return [n.b.emit("gather_elements", [x, indices], { axis }), indices];
}

/**
 * OneHot: `on` where the (wrapped) index equals the position along the new axis, `off`
 * elsewhere; indices outside [-depth, depth) match no position, as ONNX says.
 */
function oneHot(n: NodeContext): Value[] {
  const indices = floatInput(n, 0);
  const depth = Math.trunc(constInts(input(n, 1), "OneHot's depth")[0]);
  if (!(depth >= 1)) throw new RangeError(`OneHot's depth is ${depth}; it must be at least 1`);
  const values = input(n, 2);
  const rank = shapeOf(indices).length;
  const axis = normAxis(attrInt(n, "axis", -1), rank + 1);
  const negative = n.b.emit("compare", [indices, scalar(0)], { kind: "less" });
  const wrapped = n.b.emit("where", [negative, n.b.emit("add", [indices], { scalar: depth }), indices]);
  const lifted = n.b.emit("unsqueeze", [n.b.emit("unary_math", [wrapped], { kind: "floor" })], { dim: axis });
  const positions = constValue(
    host(DATA_TYPE.FLOAT, [depth, ...new Array<number>(rank - axis).fill(1)], [...Array(depth).keys()]),
  );
  const hit = n.b.emit("compare", [lifted, positions], { kind: "equal" });
  const off = n.b.emit("slice", [values], { dim: 0, start: 0, end: 1 });
  const on = n.b.emit("slice", [values], { dim: 0, start: 1, end: 2 });
  return [n.b.emit("where", [hit, on, off])];
}

/**
 * NegativeLogLikelihoodLoss on log-probabilities [N, C, d…] and targets [N, d…]: each loss
 * is −input[n, target, d…] · weight[target] (0 at ignore_index), then none, sum, or the
 * weighted mean (the sum over the sum of the weights that count).
 */
function nllLoss(n: NodeContext, logProb: Value, target: Value, weight: Value | undefined): Value {
  const reduction = attrString(n, "reduction", "mean");
  if (!["none", "sum", "mean"].includes(reduction)) {
    throw new RangeError(`${n.node.opType}'s reduction is '${reduction}'; it is none, sum or mean`);
  }
  const ignore = n.node.attributes.find((a) => a.name === "ignore_index");
  const targetType = typeOf(target);
  let safe = target;
  let ignored: Value | undefined;
  if (ignore?.i !== undefined) {
    ignored = n.b.emit("compare", [target, scalar(Number(ignore.i), targetType)], { kind: "equal" });
    // Ignored positions read class 0 (any valid index) and weigh 0.
    safe = n.b.emit("where", [ignored, scalar(0, targetType), target]);
  }
  const picked = n.b.emit(
    "squeeze",
    [n.b.emit("gather_elements", [logProb, n.b.emit("unsqueeze", [safe], { dim: 1 })], { axis: 1 })],
    { dim: 1 },
  );
  let weights = weight === undefined ? undefined : n.b.emit("take", [weight, safe], { axis: 0 });
  if (ignored !== undefined) weights = n.b.emit("where", [ignored, scalar(0), weights ?? scalar(1)]);
  const losses = n.b.emit("neg", [weights === undefined ? picked : n.b.emit("mul", [picked, weights])]);
  if (reduction === "none") return losses;
  const all = [...Array(shapeOf(losses).length).keys()];
  const total = n.b.emit("sum", [losses], { dims: all, keepdim: false });
  if (reduction === "sum") return total;
  if (weights === undefined) return n.b.emit("div", [total], { scalar: staticDim(n, numel(shapeOf(losses))) });
  // The weights have the targets' shape (taken per target, or 0/1 for ignore_index).
  return n.b.emit("div", [total, n.b.emit("sum", [weights], { dims: all, keepdim: false })]);
}

function negativeLogLikelihoodLoss(n: NodeContext): Value[] {
  return [nllLoss(n, floatInput(n, 0), input(n, 1), n.inputs[2] && floatInput(n, 2))];
}

function softmaxCrossEntropyLoss(n: NodeContext): Value[] {
  const logProb = n.b.emit("log_softmax", [floatInput(n, 0)], { dim: 1 });
  return [nllLoss(n, logProb, input(n, 1), n.inputs[2] && floatInput(n, 2)), logProb];
}

// ----------------------------------------------------------------------------------------
// Attention (opset 23), expanded into native ops as ONNX's function body and reference do

/** [B, S, H·D] → [B, H, S, D] (3-D Attention inputs). */
function splitHeads(n: NodeContext, v: Value, heads: number): Value {
  const [batch, , hidden] = shapeOf(v);
  if (hidden < 0 || hidden % heads !== 0) {
    throw new RangeError(`Attention: a hidden size of ${hidden} does not split into ${heads} heads`);
  }
  const split = reshapeTo(n.b, v, [staticDim(n, batch), -1, heads, hidden / heads]);
  return n.b.emit("permute", [split], { dims: [0, 2, 1, 3] });
}

/** The additive bias of a mask: a float mask as it is, a bool one as 0 (attend) or −inf. */
function additiveMask(n: NodeContext, mask: Value): Value {
  const bool = mask.kind === "runtime" ? mask.dtype !== "float32" : spindleDType(typeOf(mask)) !== "float32";
  return bool ? n.b.emit("where", [mask, scalar(0), scalar(-Infinity)]) : mask;
}

function attention(n: NodeContext): Value[] {
  if (n.inputs[6] !== undefined) unsupported("Attention with nonpad_kv_seqlen");
  if (attrInt(n, "left_window_size", -1) !== -1 || attrInt(n, "right_window_size", -1) !== -1) {
    unsupported("Attention with a sliding window");
  }
  let [q, k, v] = [0, 1, 2].map((i) => floatInput(n, i));
  const rank = shapeOf(q).length;
  if (rank !== 3 && rank !== 4) throw new RangeError(`Attention takes 3-D or 4-D inputs, got rank ${rank}`);
  for (const [name, t] of [["K", k], ["V", v]] as const) {
    const other = shapeOf(t).length;
    if (other !== rank) {
      throw new RangeError(`Attention: Q is ${rank}-D but ${name} is ${other}-D; Q, K and V are all 3-D or all 4-D`);
    }
  }
  for (const [index, name] of [[4, "past_key"], [5, "past_value"]] as const) {
    const past = n.inputs[index];
    if (past !== undefined && shapeOf(past).length !== 4) {
      throw new RangeError(
        `Attention: ${name} is ${shapeOf(past).length}-D; it must be 4-D [batch, heads, length, size]`,
      );
    }
  }
  if (rank === 3) {
    const qHeads = attrInt(n, "q_num_heads", 0);
    const kvHeads = attrInt(n, "kv_num_heads", 0);
    if (qHeads < 1 || kvHeads < 1) throw new RangeError("Attention on 3-D inputs needs q_num_heads and kv_num_heads");
    [q, k, v] = [splitHeads(n, q, qHeads), splitHeads(n, k, kvHeads), splitHeads(n, v, kvHeads)];
  }
  const headSize = staticDim(n, shapeOf(q)[3]);
  const scaleAttribute = n.node.attributes.find((a) => a.name === "scale")?.f;
  // Q and K are each scaled by sqrt(scale) in float32, as the reference does.
  const rootScale = Math.fround(Math.sqrt(scaleAttribute ?? 1 / Math.sqrt(headSize)));
  const pastLength = n.inputs[4] ? staticDim(n, shapeOf(n.inputs[4])[2]) : 0;
  if ((n.inputs[4] === undefined) !== (n.inputs[5] === undefined)) {
    throw new RangeError("Attention takes past_key and past_value together");
  }
  const presentKey = n.inputs[4] ? n.b.emit("concat", [floatInput(n, 4), k], { dim: 2 }) : k;
  const presentValue = n.inputs[5] ? n.b.emit("concat", [floatInput(n, 5), v], { dim: 2 }) : v;
  const queries = staticDim(n, shapeOf(q)[2]);
  const keys = staticDim(n, shapeOf(presentKey)[2]);
  // The additive bias: the mask (padded to all keys with −inf), plus the causal frontier
  // j ≤ i + past length.
  let bias: Value | undefined;
  if (n.inputs[3] !== undefined) {
    bias = additiveMask(n, n.inputs[3]);
    const width = staticDim(n, shapeOf(bias).at(-1)!);
    if (width < keys) {
      const pads = new Array<number>(2 * shapeOf(bias).length).fill(0);
      pads[pads.length - 1] = keys - width;
      bias = n.b.emit("pad", [bias], { mode: "constant", value: -Infinity, pads });
    }
  }
  if (attrInt(n, "is_causal", 0) === 1) {
    const causal: number[] = [];
    for (let i = 0; i < queries; i++) for (let j = 0; j < keys; j++) causal.push(j <= i + pastLength ? 0 : -Infinity);
    const frontier = constValue(host(DATA_TYPE.FLOAT, [queries, keys], causal));
    bias = bias === undefined ? frontier : n.b.emit("add", [bias, frontier]);
  }
  // Grouped-query attention: each key/value head serves q_heads / kv_heads query heads.
  const [batch, qHeads] = shapeOf(q);
  const kvHeads = staticDim(n, shapeOf(presentKey)[1]);
  let [kAll, vAll] = [presentKey, presentValue];
  if (qHeads !== kvHeads) {
    if (qHeads % kvHeads !== 0) throw new RangeError(`Attention: ${qHeads} query heads for ${kvHeads} key heads`);
    const repeat = (t: Value) => {
      const [, , length, size] = shapeOf(t);
      const lifted = n.b.emit("unsqueeze", [t], { dim: 2 });
      const wide = n.b.emit("expand", [lifted], {
        shape: [staticDim(n, batch), kvHeads, qHeads / kvHeads, length, size],
      });
      return reshapeTo(n.b, wide, [staticDim(n, batch), qHeads, length, size]);
    };
    [kAll, vAll] = [repeat(kAll), repeat(vAll)];
  }
  const scaledQ = n.b.emit("mul", [q], { scalar: rootScale });
  const scaledK = n.b.emit("mul", [kAll], { scalar: rootScale });
  // The order of the pinned suite (onnx 1.21, opset 23): QK (output mode 0), plus the bias
  // (mode 1), softcap (mode 2), softmax (mode 3).
  const scores = n.b.emit("gemm", [scaledQ, scaledK], { trans_b: true });
  const biased = bias === undefined ? scores : n.b.emit("add", [scores, bias]);
  const softcap = attrFloat(n, "softcap", 0);
  let capped = biased;
  if (softcap > 0) {
    const squashed = n.b.emit("tanh", [n.b.emit("div", [biased], { scalar: softcap })]);
    capped = n.b.emit("mul", [squashed], { scalar: softcap });
  }
  let probabilities = n.b.emit("softmax", [capped], { dim: -1 });
  if (bias !== undefined) {
    // A row whose bias is −inf everywhere attends nothing: its probabilities are 0.
    const peak = n.b.emit("max", [bias], { dims: [shapeOf(bias).length - 1], keepdim: true });
    const none = n.b.emit("compare", [peak, scalar(-Infinity)], { kind: "equal" });
    probabilities = n.b.emit("where", [none, scalar(0), probabilities]);
  }
  let y = n.b.emit("gemm", [probabilities, vAll]);
  if (rank === 3) {
    const merged = n.b.emit("permute", [y], { dims: [0, 2, 1, 3] });
    y = reshapeTo(n.b, merged, [staticDim(n, batch), queries, -1]);
  }
  const mode = attrInt(n, "qk_matmul_output_mode", 0);
  const qkOutput = [scores, biased, capped, probabilities][mode] ??
    unsupported(`Attention's qk_matmul_output_mode ${mode} (0 to 3)`);
  return [y, presentKey, presentValue, qkOutput];
}

// ----------------------------------------------------------------------------------------
// Detection (ops/detection.zig)

/**
 * NonMaxSuppression: boxes and scores as float32, the optional one-element inputs as they
 * are (a skipped one before a given one is its default: 0 boxes, IoU 0). The output's
 * length depends on the values, so its dims are dynamic.
 */
function nonMaxSuppression(n: NodeContext): Value[] {
  const boxes = floatInput(n, 0);
  const scores = floatInput(n, 1);
  const last = [4, 3, 2].find((k) => n.inputs[k] !== undefined) ?? 1;
  const optional = [2, 3, 4].filter((k) => k <= last).map((k) => {
    const given = n.inputs[k];
    if (k === 2) return given ?? scalar(0, DATA_TYPE.INT64);
    return given === undefined ? scalar(0) : floatInput(n, k);
  });
  const centerPointBox = attrInt(n, "center_point_box", 0);
  if (centerPointBox !== 0 && centerPointBox !== 1) {
    throw new RangeError(`NonMaxSuppression's center_point_box is ${centerPointBox}; it is 0 or 1`);
  }
  const params = { center_point_box: centerPointBox === 1 };
  return [n.b.emit("non_max_suppression", [boxes, scores, ...optional], params, { dtype: "int64" })];
}

// ----------------------------------------------------------------------------------------
// Classic and signal ops built from native ones

/**
 * LRN: x / (bias + alpha / size · Σ x²)^beta, the sum over a window of `size` channels
 * around each (floor((size − 1) / 2) before, the rest after, clipped at the edges): a 1×1
 * convolution of x² with a banded [C, C] weight of ones (the channel count is static).
 */
function lrn(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const shape = shapeOf(x);
  if (shape.length !== 4) unsupported(`LRN on a ${shape.length}-D input (4-D only, as onnxruntime)`);
  const size = attrInt(n, "size", 0);
  if (!(size >= 1)) throw new RangeError(`LRN's size is ${size}; it must be at least 1`);
  const channels = staticDim(n, shape[1]);
  const before = Math.floor((size - 1) / 2);
  const after = size - 1 - before;
  const band: number[] = [];
  for (let out = 0; out < channels; out++) {
    for (let c = 0; c < channels; c++) band.push(c >= out - before && c <= out + after ? 1 : 0);
  }
  const squares = n.b.emit("mul", [x, x]);
  const weight = constValue(host(DATA_TYPE.FLOAT, [channels, channels, 1, 1], band));
  const sums = n.b.emit("conv2d", [squares, weight], {});
  const alpha = attrFloat(n, "alpha", 1e-4);
  const beta = attrFloat(n, "beta", 0.75);
  const bias = attrFloat(n, "bias", 1);
  const base = n.b.emit("add", [n.b.emit("mul", [sums, scalar(alpha / size)]), scalar(bias)]);
  return [n.b.emit("mul", [x, n.b.emit("pow", [base, scalar(-beta)])])];
}

/**
 * Compress: the slices of the input along `axis` (of the flattened input without one)
 * where the 1-D condition is true, gathered at NonZero's indices. A condition shorter than
 * the axis selects among its first elements; a longer one is refused by the gather's check
 * when it selects past the end.
 */
function compress(n: NodeContext): Value[] {
  let x = input(n, 0);
  const condition = input(n, 1);
  if (shapeOf(condition).length !== 1) {
    throw new RangeError(`Compress's condition must be 1-D, got shape [${shapeOf(condition)}]`);
  }
  const axisAttr = n.node.attributes.find((a) => a.name === "axis");
  let axis = 0;
  if (axisAttr === undefined) x = n.b.emit("reshape", [x], { shape: [-1] });
  else axis = normAxis(attrInt(n, "axis", 0), shapeOf(x).length);
  const where = n.b.emit("non_zero", [condition], {}, { dtype: "int64" });
  const indices = n.b.emit("reshape", [where], { shape: [-1] });
  return [n.b.emit("take", [x, indices], { axis })];
}

/**
 * HannWindow, HammingWindow, BlackmanWindow: Σ_k a_k cos(2πkj / N) for j = 0 … size − 1, with
 * N = size (periodic, the default) or size − 1 (symmetric). The size may be computed at run
 * time; a constant one folds to a constant window.
 */
function cosineWindow(coefficients: number[]): Handler {
  return (n) => {
    const size = asDType(input(n, 0), "int64");
    const periodic = attrInt(n, "periodic", 1) === 1;
    const zero = scalar(0, DATA_TYPE.INT64);
    const one = scalar(1, DATA_TYPE.INT64);
    const runtime = size.kind === "runtime";
    const j = n.b.emit("cast", [n.b.emit("range", [zero, size, one], {}, runtime ? { dtype: "int64" } : undefined)], {
      dtype: "float32",
    });
    const span = n.b.emit("cast", [periodic ? size : n.b.emit("int_binary", [size, one], { kind: "sub" })], {
      dtype: "float32",
    });
    const phase = n.b.emit("div", [n.b.emit("mul", [j, scalar(2 * Math.PI)]), span]);
    const term = (k: number) =>
      n.b.emit("mul", [
        n.b.emit("unary_math", [n.b.emit("mul", [phase, scalar(k)])], { kind: "cos" }),
        scalar(coefficients[k]),
      ]);
    let window = term(1);
    for (let k = 2; k < coefficients.length; k++) window = n.b.emit("add", [window, term(k)]);
    return [n.b.emit("add", [window, scalar(coefficients[0])])];
  };
}

/**
 * GridSample (opsets 16 and 20) on 4-D inputs: modes nearest, linear (opset 16's bilinear)
 * and cubic (bicubic), padding zeros, border or reflection. Volumetric (5-D) inputs are
 * refused.
 */
function gridSample(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const grid = floatInput(n, 1);
  if (shapeOf(x).length !== 4) unsupported(`GridSample on a ${shapeOf(x).length}-D input (4-D only)`);
  const modeName = attrString(n, "mode", n.opset >= 20 ? "linear" : "bilinear");
  const mode =
    ({ nearest: "nearest", bilinear: "linear", linear: "linear", bicubic: "cubic", cubic: "cubic" } as const)[
      modeName
    ];
  if (mode === undefined) throw new RangeError(`GridSample's mode '${modeName}' is not nearest, linear or cubic`);
  const paddingName = attrString(n, "padding_mode", "zeros");
  if (paddingName !== "zeros" && paddingName !== "border" && paddingName !== "reflection") {
    throw new RangeError(`GridSample's padding_mode '${paddingName}' is not zeros, border or reflection`);
  }
  return [
    n.b.emit("grid_sample", [x, grid], {
      mode,
      padding: paddingName,
      align_corners: attrInt(n, "align_corners", 0) === 1,
    }),
  ];
}

/**
 * RotaryEmbedding (opset 23): the first rotary_embedding_dim features of each head rotated by
 * the cached angles (halves, or interleaved pairs), the rest kept. Input [B, H, S, D], or
 * [B, S, H·D] with num_heads; caches [positions, rot/2] read at position_ids, or [B, S, rot/2]
 * without them. Built from slices, products and concatenations.
 */
function rotaryEmbedding(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const shape = shapeOf(x);
  let heads: Value;
  let headSize: number;
  if (shape.length === 4) {
    heads = n.b.emit("permute", [x], { dims: [0, 2, 1, 3] }); // [B, S, H, D]
    headSize = staticDim(n, shape[3]);
  } else if (shape.length === 3) {
    const numHeads = attrInt(n, "num_heads", 0);
    const hidden = staticDim(n, shape[2]);
    if (!(numHeads >= 1) || hidden % numHeads !== 0) {
      throw new RangeError(`RotaryEmbedding's num_heads ${numHeads} must divide the hidden size ${hidden}`);
    }
    headSize = hidden / numHeads;
    heads = reshapeTo(n.b, x, [shape[0], shape[1], numHeads, headSize]);
  } else {
    throw new RangeError(`RotaryEmbedding's input must be 3-D or 4-D, got [${shape}]`);
  }
  const rot = attrInt(n, "rotary_embedding_dim", 0) || headSize;
  if (rot % 2 !== 0 || rot > headSize) {
    throw new RangeError(
      `RotaryEmbedding's rotary_embedding_dim ${rot} must be even and at most the head size ${headSize}`,
    );
  }
  const half = rot / 2;
  const interleaved = attrInt(n, "interleaved", 0) === 1;
  const slice = (v: Value, dim: number, start: number, end: number, step = 1) =>
    n.b.emit("slice", [v], { dim, start, end, step });
  const angles = (index: number) => {
    let cache = floatInput(n, index);
    if (n.inputs[3] !== undefined) cache = n.b.emit("take", [cache, asDType(input(n, 3), "int64")], { axis: 0 });
    return n.b.emit("unsqueeze", [slice(cache, 2, 0, half)], { dim: 2 }); // [B, S, 1, rot/2]
  };
  const [cos, sin] = [angles(1), angles(2)];
  const rotate = slice(heads, 3, 0, rot);
  const x1 = interleaved ? slice(rotate, 3, 0, rot, 2) : slice(rotate, 3, 0, half);
  const x2 = interleaved ? slice(rotate, 3, 1, rot, 2) : slice(rotate, 3, half, rot);
  const real = n.b.emit("sub", [n.b.emit("mul", [cos, x1]), n.b.emit("mul", [sin, x2])]);
  const imag = n.b.emit("add", [n.b.emit("mul", [sin, x1]), n.b.emit("mul", [cos, x2])]);
  let rotated: Value;
  if (interleaved) {
    const pairs = n.b.emit("concat", [
      n.b.emit("unsqueeze", [real], { dim: 4 }),
      n.b.emit("unsqueeze", [imag], { dim: 4 }),
    ], { dim: 4 });
    const dims = shapeOf(rotate);
    rotated = reshapeTo(n.b, pairs, [dims[0], dims[1], dims[2], rot]);
  } else {
    rotated = n.b.emit("concat", [real, imag], { dim: 3 });
  }
  const out = rot < headSize ? n.b.emit("concat", [rotated, slice(heads, 3, rot, headSize)], { dim: 3 }) : rotated;
  return [shape.length === 4 ? n.b.emit("permute", [out], { dims: [0, 2, 1, 3] }) : reshapeTo(n.b, out, shape)];
}

/**
 * AffineGrid (opset 20): grid [N, *sizes, nd] = the base grid of normalised coordinates
 * (x first, then y[, z], then 1) times thetaᵀ, for a 2-D or 3-D size given at run time or
 * not. Coordinates along an axis of L: −1 + 2i / max(L − 1, 1) with aligned corners, else
 * (2i + 1) / L − 1.
 */
function affineGrid(n: NodeContext): Value[] {
  const theta = floatInput(n, 0);
  const size = asDType(input(n, 1), "int64");
  const count = shapeOf(size)[0];
  if (shapeOf(size).length !== 1 || (count !== 4 && count !== 5)) {
    throw new RangeError(
      `AffineGrid's size must hold 4 or 5 values (N, C, then 2 or 3 sizes), got shape [${shapeOf(size)}]`,
    );
  }
  const nd = count - 2;
  const align = attrInt(n, "align_corners", 0) === 1;
  const int = (v: number) => scalar(v, DATA_TYPE.INT64);
  const part = (start: number, end: number) => n.b.emit("slice", [size], { dim: 0, start, end, step: 1 });
  const spatial = part(2, count);
  const runtime = size.kind === "runtime" ? { dtype: "int64" as const } : undefined;
  const columns: Value[] = [];
  // The grid's last dim runs x (the last spatial axis) first.
  for (let k = nd - 1; k >= 0; k--) {
    const length = n.b.emit("reshape", [part(2 + k, 3 + k)], { shape: [] });
    const i = n.b.emit("cast", [n.b.emit("range", [int(0), length, int(1)], {}, runtime)], { dtype: "float32" });
    const lengthF = n.b.emit("cast", [length], { dtype: "float32" });
    const coords = align
      ? n.b.emit("sub", [
        n.b.emit("div", [
          n.b.emit("mul", [i, scalar(2)]),
          n.b.emit("cast", [
            n.b.emit("int_binary", [n.b.emit("int_binary", [length, int(1)], { kind: "sub" }), int(1)], {
              kind: "max",
            }),
          ], { dtype: "float32" }),
        ]),
        scalar(1),
      ])
      : n.b.emit("sub", [
        n.b.emit("div", [n.b.emit("add", [n.b.emit("mul", [i, scalar(2)]), scalar(1)]), lengthF]),
        scalar(1),
      ]);
    // Along axis k of the spatial shape, then broadcast over the others.
    let placed = coords;
    for (let axis = k + 1; axis < nd; axis++) placed = n.b.emit("unsqueeze", [placed], { dim: 1 });
    for (let axis = 0; axis < k; axis++) placed = n.b.emit("unsqueeze", [placed], { dim: 0 });
    columns.push(n.b.emit("unsqueeze", [n.b.emit("expand_to", [placed, spatial])], { dim: nd }));
  }
  columns.push(n.b.emit("unsqueeze", [n.b.emit("expand_to", [scalar(1), spatial])], { dim: nd }));
  const base = n.b.emit("reshape", [n.b.emit("concat", columns, { dim: nd })], { shape: [-1, nd + 1] });
  const grid = n.b.emit("matmul", [base, n.b.emit("permute", [theta], { dims: [0, 2, 1] })]);
  const target = n.b.emit("concat", [part(0, 1), spatial, constValue(host(DATA_TYPE.INT64, [1], [nd]))], { dim: 0 });
  return [n.b.emit("reshape_to", [grid, target], {})];
}

/**
 * DFT (opsets 17–20) as products with constant cosine and sine matrices: the signal axis
 * moved last, cut or zero-padded to dft_length L, X_re = re·C + im·S and X_im = im·C − re·S
 * (the inverse: signs swapped and divided by L), onesided keeping the first L/2 + 1
 * frequencies, as ONNX's reference. The axis and dft_length must be constants.
 */
function dft(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const shape = shapeOf(x);
  const rank = shape.length - 1; // the signal's rank, without the real/imaginary dim
  const parts = shape[rank];
  if (rank < 1 || (parts !== 1 && parts !== 2)) {
    throw new RangeError(`DFT's input must end in a dim of 1 (real) or 2 (complex), got shape [${shape}]`);
  }
  const rawAxis = n.opset >= 20 ? (n.inputs[2] ? constInts(n.inputs[2], "DFT axis")[0] : -2) : attrInt(n, "axis", 1);
  // Opset 20 counts a negative axis over the input's dims (the last is the parts dim).
  const axis = n.opset >= 20 && rawAxis < 0 ? rawAxis + rank + 1 : rawAxis;
  if (!(axis >= 0 && axis < rank)) throw new RangeError(`DFT's axis ${rawAxis} is not a signal axis of [${shape}]`);
  const size = staticDim(n, shape[axis]);
  const inverse = attrInt(n, "inverse", 0) === 1;
  const onesided = attrInt(n, "onesided", 0) === 1;
  // The inverse of a onesided spectrum (irfft) is a real signal of dft_length, by default
  // 2 · (frequencies − 1).
  const irfft = inverse && onesided;
  const length = n.inputs[1] ? constInts(n.inputs[1], "DFT dft_length")[0] : irfft ? 2 * (size - 1) : size;
  // The two matrices hold L · (L/2 + 1) values or more each: bounded at L = 4096 (2 × 34 MB).
  if (!(length >= 1)) throw new RangeError(`DFT's dft_length ${length} must be at least 1`);
  if (length > 4096) unsupported(`DFT of length ${length} (at most 4096)`);
  const frequencies = onesided ? Math.floor(length / 2) + 1 : length;
  // Rows: the input's samples (irfft: its frequencies), columns: the outputs.
  const [rows, columns] = irfft ? [frequencies, length] : [length, frequencies];
  const order = [...Array(rank).keys()].filter((d) => d !== axis).concat([axis]);
  const part = (k: number) => {
    const p = n.b.emit("squeeze", [n.b.emit("slice", [x], { dim: rank, start: k, end: k + 1, step: 1 })], {
      dim: rank,
    });
    let moved = n.b.emit("permute", [p], { dims: order });
    if (rows < size) moved = n.b.emit("slice", [moved], { dim: rank - 1, start: 0, end: rows, step: 1 });
    if (rows > size) {
      const pads = new Array<number>(2 * rank).fill(0);
      pads[2 * rank - 1] = rows - size;
      moved = n.b.emit("pad", [moved], { mode: "constant", value: 0, pads });
    }
    return moved;
  };
  const matrix = (f: (angle: number) => number) => {
    const values: number[] = [];
    for (let j = 0; j < rows; j++) {
      // irfft: every frequency but 0 and L/2 stands for its conjugate too.
      const weight = irfft ? (j === 0 || 2 * j === length ? 1 : 2) / length : inverse ? 1 / length : 1;
      for (let k = 0; k < columns; k++) values.push(weight * f((2 * Math.PI * ((j * k) % length)) / length));
    }
    return constValue(host(DATA_TYPE.FLOAT, [rows, columns], values));
  };
  const [cos, sin] = [matrix(Math.cos), matrix(Math.sin)];
  const re = part(0);
  const back = order.map((_, d) => order.indexOf(d)).concat([rank]);
  if (irfft) {
    // x_j = Σ_k w_k (Re X_k cos θ − Im X_k sin θ) / L: a real signal, one value per sample.
    const signal = parts === 2
      ? n.b.emit("sub", [n.b.emit("matmul", [re, cos]), n.b.emit("matmul", [part(1), sin])])
      : n.b.emit("matmul", [re, cos]);
    return [n.b.emit("permute", [n.b.emit("unsqueeze", [signal], { dim: rank })], { dims: back })];
  }
  const reCos = n.b.emit("matmul", [re, cos]);
  const reSin = n.b.emit("matmul", [re, sin]);
  let real: Value;
  let imag: Value;
  const sign = inverse ? -1 : 1;
  if (parts === 2) {
    const im = part(1);
    const imCos = n.b.emit("matmul", [im, cos]);
    const imSin = n.b.emit("matmul", [im, sin]);
    real = n.b.emit(sign > 0 ? "add" : "sub", [reCos, imSin]);
    imag = n.b.emit(sign > 0 ? "sub" : "add", [imCos, reSin]);
  } else {
    real = reCos;
    imag = sign > 0 ? n.b.emit("neg", [reSin]) : reSin;
  }
  const stacked = n.b.emit("concat", [
    n.b.emit("unsqueeze", [real], { dim: rank }),
    n.b.emit("unsqueeze", [imag], { dim: rank }),
  ], { dim: rank });
  return [n.b.emit("permute", [stacked], { dims: back })];
}

/**
 * Col2Im (2-D): the columns of input [N, C·kh·kw, L] summed back into [N, C, H, W], as a
 * transposed convolution with C groups whose kernels are one-hot (column t of a block lands
 * at tap t). The image and block shapes must be constants.
 */
function col2im(n: NodeContext): Value[] {
  const x = floatInput(n, 0);
  const image = constInts(n.inputs[1], "Col2Im image_shape");
  const block = constInts(n.inputs[2], "Col2Im block_shape");
  if (image.length !== 2 || block.length !== 2) unsupported(`Col2Im over ${image.length} spatial dims (2 only)`);
  const dilation = attrInts(n, "dilations") ?? [1, 1];
  const stride = attrInts(n, "strides") ?? [1, 1];
  const pads = attrInts(n, "pads") ?? [0, 0, 0, 0];
  const [kh, kw] = block;
  const taps = kh * kw;
  const shape = shapeOf(x);
  const rows = staticDim(n, shape[1]);
  if (shape.length !== 3 || !(taps >= 1) || rows % taps !== 0) {
    throw new RangeError(`Col2Im's input [${shape}] must be [N, C·${kh}·${kw}, L]`);
  }
  const channels = rows / taps;
  const blocks = [0, 1].map((a) =>
    Math.floor((image[a] + pads[a] + pads[a + 2] - dilation[a] * (block[a] - 1) - 1) / stride[a]) + 1
  );
  if (blocks.some((b) => b < 1) || (shape[2] >= 0 && shape[2] !== blocks[0] * blocks[1])) {
    throw new RangeError(
      `Col2Im's input has ${shape[2]} blocks; image [${image}] with these blocks gives ${blocks[0] * blocks[1]}`,
    );
  }
  const weights = new Array<number>(rows * taps).fill(0);
  for (let c = 0; c < channels; c++) for (let t = 0; t < taps; t++) weights[(c * taps + t) * taps + t] = 1;
  const common = [Math.min(pads[0], pads[2]), Math.min(pads[1], pads[3])];
  // The transposed convolution's size falls short of the padded image by the stride's remainder.
  const outputPadding = [0, 1].map((a) =>
    image[a] + pads[a] + pads[a + 2] - ((blocks[a] - 1) * stride[a] + dilation[a] * (block[a] - 1) + 1)
  );
  let out = n.b.emit("conv_transpose2d", [
    reshapeTo(n.b, x, [shape[0], rows, blocks[0], blocks[1]]),
    constValue(host(DATA_TYPE.FLOAT, [rows, 1, kh, kw], weights)),
  ], {
    stride: [stride[0], stride[1]],
    padding: [common[0], common[1]],
    output_padding: [outputPadding[0], outputPadding[1]],
    dilation: [dilation[0], dilation[1]],
    groups: channels,
  });
  for (const a of [0, 1]) {
    const [begin, end] = [pads[a] - common[a], pads[a + 2] - common[a]];
    if (begin === 0 && end === 0) continue;
    out = n.b.emit("slice", [out], { dim: a + 2, start: begin, end: begin + image[a], step: 1 });
  }
  return [out];
}

/** NonZero: the int64 [rank, count] coordinates of the nonzero elements; count depends on the values. */
function nonZero(n: NodeContext): Value[] {
  return [n.b.emit("non_zero", [input(n, 0)], {}, { dtype: "int64" })];
}

/** The handlers of this module, spread into ops.ts's HANDLERS. */
export const COVERAGE_HANDLERS: Record<string, Handler> = {
  Cast: castNarrow,
  CastLike: castNarrow,
  CumProd: cumulative("cum_prod", "CumProd"),
  Reciprocal: math("reciprocal"),
  Sin: math("sin"),
  Cos: math("cos"),
  Tan: math("tan"),
  Asin: math("asin"),
  Acos: math("acos"),
  Atan: math("atan"),
  Sinh: math("sinh"),
  Cosh: math("cosh"),
  Asinh: math("asinh"),
  Acosh: math("acosh"),
  Atanh: math("atanh"),
  Floor: math("floor"),
  Ceil: math("ceil"),
  Round: math("round"),
  Sign: math("sign"),
  Softsign: math("softsign"),
  Softplus: math("softplus"),
  Selu: math("selu", (n) => ({
    alpha: attrFloat(n, "alpha", 1.67326319217681884765625),
    beta: attrFloat(n, "gamma", 1.05070102214813232421875),
  })),
  ThresholdedRelu: math("thresholded_relu", (n) => ({ alpha: attrFloat(n, "alpha", 1) })),
  Celu: math("celu", (n) => ({ alpha: attrFloat(n, "alpha", 1) })),
  Mish: math("mish"),
  Shrink: math("shrink", (n) => ({ alpha: attrFloat(n, "lambd", 0.5), beta: attrFloat(n, "bias", 0) })),
  Swish: math("swish", (n) => ({ alpha: attrFloat(n, "alpha", 1) })),
  IsNaN: predicate("is_nan"),
  IsInf: predicate("is_inf"),
  And: bitwise("bit_and"),
  Or: bitwise("bit_or"),
  Xor: bitwise("bit_xor"),
  Not: bitwiseNot,
  BitwiseAnd: bitwise("bit_and"),
  BitwiseOr: bitwise("bit_or"),
  BitwiseXor: bitwise("bit_xor"),
  BitwiseNot: bitwiseNot,
  BitShift: bitShift,
  Mod: mod,
  ReduceProd: reduceWith((n, x, dims, keepdim) => n.b.emit("prod", [x], { dims, keepdim })),
  ReduceL1: reduceWith((n, x, dims, keepdim) => n.b.emit("sum", [n.b.emit("abs", [x])], { dims, keepdim })),
  ReduceL2: reduceWith((n, x, dims, keepdim) =>
    n.b.emit("sqrt", [n.b.emit("sum", [squareOf(n, x)], { dims, keepdim })])
  ),
  ReduceSumSquare: reduceWith((n, x, dims, keepdim) => n.b.emit("sum", [squareOf(n, x)], { dims, keepdim })),
  ReduceLogSum: reduceWith((n, x, dims, keepdim) => n.b.emit("log", [n.b.emit("sum", [x], { dims, keepdim })])),
  ReduceLogSumExp: reduceWith(logSumExp),
  ArgMax: argExtreme(false),
  ArgMin: argExtreme(true),
  Hardmax: hardmax,
  Sum: variadic("add"),
  Mean: variadic("add", true),
  Max: variadic("maximum"),
  Min: variadic("minimum"),
  PRelu: prelu,
  Split: split,
  Tile: tile,
  DepthToSpace: depthToSpace,
  SpaceToDepth: spaceToDepth,
  Trilu: trilu,
  CenterCropPad: centerCropPad,
  LpPool: lpPool,
  EyeLike: eyeLike,
  RMSNormalization: rmsNormalization,
  InstanceNormalization: instanceNormalization,
  GroupNormalization: groupNormalization,
  LpNormalization: lpNormalization,
  MeanVarianceNormalization: meanVarianceNormalization,
  GatherElements: gatherElements,
  ReverseSequence: reverseSequence,
  ScatterElements: scatterElements,
  Scatter: scatterElements,
  GatherND: gatherNd,
  ScatterND: scatterNd,
  TopK: topK,
  OneHot: oneHot,
  NegativeLogLikelihoodLoss: negativeLogLikelihoodLoss,
  SoftmaxCrossEntropyLoss: softmaxCrossEntropyLoss,
  Attention: attention,
  Einsum: einsum,
  NonMaxSuppression: nonMaxSuppression,
  NonZero: nonZero,
  Col2Im: col2im,
  DFT: dft,
  AffineGrid: affineGrid,
  RotaryEmbedding: rotaryEmbedding,
  GridSample: gridSample,
  LRN: lrn,
  Compress: compress,
  HannWindow: cosineWindow([0.5, -0.5]),
  HammingWindow: cosineWindow([25 / 46, -21 / 46]),
  BlackmanWindow: cosineWindow([0.42, -0.5, 0.08]),
};

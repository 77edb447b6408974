/**
 * ONNX op types → Spindle native ops. Each handler receives the node's inputs as graph
 * values and returns its outputs; constants fold (shape arithmetic on the host, float ops
 * natively), everything else is emitted into the graph. Fusing ops is lib/onnx/fuse.ts's job,
 * after import; here ONNX's Gemm keeps its bias operand as the native gemm's.
 *
 * @module
 */
import type { AttributeProto, NodeProto, TensorProto } from "./proto.ts";
import { DATA_TYPE } from "./proto.ts";
import {
  broadcastMap,
  castValues,
  checkFoldedSize,
  concatHost,
  fromProto,
  gatherHost,
  type Host,
  host,
  numel,
  sliceHost,
  spindleDType,
  transposeHost,
  valuesOf,
} from "./host.ts";
import {
  constInts,
  type ConstValue,
  fixedHost,
  type GraphBuilder,
  isScalar,
  runShape,
  type RuntimeValue,
  shapeOf,
  unsupported,
  type Value,
} from "./graph.ts";
import type { OpName, ParamsOf } from "../ops/dispatch.ts";
import {
  activationParams,
  RECURRENT_ACTIVATION_DEFAULTS,
  RECURRENT_ACTIVATION_KINDS,
  type RecurrentActivation,
  type RecurrentActivationKind,
} from "../ops/recurrent.ts";
import { OP_SCHEMAS, type ParamSchema } from "../../ffi/abi.ts";
import type { DType } from "../tensor.ts";
// A cycle: ops_coverage.ts uses this file's helpers (function declarations, hoisted, so they
// exist before either module's body runs) and this file spreads its handlers into HANDLERS.
import { COVERAGE_HANDLERS } from "./ops_coverage.ts";

/** What a handler sees of its node. */
export interface NodeContext {
  node: NodeProto;
  b: GraphBuilder;
  opset: number;
  /** Inputs by position; undefined for omitted optional inputs. */
  inputs: (Value | undefined)[];
  /** How many nodes (and graph outputs) read each output of this node's inputs. */
  uses(value: Value): number;
}

/** Converts one ONNX node. */
export type Handler = (n: NodeContext) => (Value | undefined)[];

const decoder = new TextDecoder();

export function attribute(n: NodeContext, name: string): AttributeProto | undefined {
  return n.node.attributes.find((a) => a.name === name);
}
export function attrInt(n: NodeContext, name: string, fallback: number): number {
  const a = attribute(n, name);
  return a?.i !== undefined ? Number(a.i) : fallback;
}
export function attrFloat(n: NodeContext, name: string, fallback: number): number {
  return attribute(n, name)?.f ?? fallback;
}
export function attrInts(n: NodeContext, name: string): number[] | undefined {
  const a = attribute(n, name);
  return a === undefined ? undefined : a.ints.map(Number);
}
export function attrString(n: NodeContext, name: string, fallback: string): string {
  const a = attribute(n, name);
  return a?.s !== undefined ? decoder.decode(a.s) : fallback;
}
export function input(n: NodeContext, index: number): Value {
  return n.inputs[index] ?? unsupported(`${n.node.opType}: input ${index} is missing`);
}
export function constValue(v: ConstValue | Host): ConstValue {
  return "kind" in v ? v : { kind: "const", hosts: [v] };
}
export function allConst(values: readonly (Value | undefined)[]): boolean {
  return values.every((v) => v === undefined || v.kind === "const");
}
export function normAxis(axis: number, rank: number): number {
  if (axis < -rank || axis >= Math.max(rank, 1)) unsupported(`axis ${axis} is out of range for rank ${rank}`);
  return axis < 0 ? axis + rank : axis;
}
/** Runs a host op per run over constant inputs. */
export function hostPerRun(values: readonly Value[], fn: (hosts: Host[]) => Host): ConstValue {
  const runs = Math.max(...values.map((v) => (v as ConstValue).hosts.length));
  const hosts: Host[] = [];
  for (let r = 0; r < runs; r++) {
    hosts.push(fn(values.map((v) => {
      const hs = (v as ConstValue).hosts;
      return hs[Math.min(r, hs.length - 1)];
    })));
  }
  return { kind: "const", hosts };
}
export function typeOf(v: Value): number {
  if (v.kind === "const") return v.hosts[0].type;
  return v.dtype === "float32" ? DATA_TYPE.FLOAT : v.dtype === "int64" ? DATA_TYPE.INT64 : DATA_TYPE.INT32;
}

// ----------------------------------------------------------------------------------------
// Shapes as ops

/** Reshapes to `dims` (at most one -1). */
export function reshapeTo(b: GraphBuilder, v: Value, dims: number[]): Value {
  if (dims.filter((d) => d === -1).length > 1) unsupported(`a reshape to [${dims}] with two dynamic dimensions`);
  return b.emit("reshape", [v], { shape: dims });
}
function unsqueezeAll(b: GraphBuilder, v: Value, axes: number[]): Value {
  const rank = shapeOf(v).length + axes.length;
  let out = v;
  for (const axis of axes.map((a) => normAxis(a, rank)).sort((x, y) => x - y)) {
    out = b.emit("unsqueeze", [out], { dim: axis });
  }
  return out;
}
function squeezeAll(b: GraphBuilder, v: Value, axes: number[]): Value {
  const rank = shapeOf(v).length;
  let out = v;
  for (const axis of axes.map((a) => normAxis(a, rank)).sort((x, y) => y - x)) {
    out = b.emit("squeeze", [out], { dim: axis });
  }
  return out;
}

// ----------------------------------------------------------------------------------------
// Elementwise

export function unary<K extends OpName>(
  op: K,
  params: (n: NodeContext) => ParamsOf<K> = () => ({} as ParamsOf<K>),
): Handler {
  return (n) => [n.b.emit(op, [input(n, 0)], params(n))];
}

const hostBinary: Record<string, (x: number, y: number, isFloat: boolean) => number> = {
  Add: (x, y) => x + y,
  Sub: (x, y) => x - y,
  Mul: (x, y) => x * y,
  Div: (x, y, f) => (f ? x / y : Math.trunc(x / y)),
  Pow: (x, y) => x ** y,
  Max: (x, y) => Math.max(x, y),
  Min: (x, y) => Math.min(x, y),
};
const nativeBinary: Record<string, "add" | "sub" | "mul" | "div" | "pow" | "maximum" | "minimum"> = {
  Add: "add",
  Sub: "sub",
  Mul: "mul",
  Div: "div",
  Pow: "pow",
  Max: "maximum",
  Min: "minimum",
};

export function binary(n: NodeContext): Value[] {
  const type = n.node.opType;
  const a = input(n, 0);
  const b = input(n, 1);
  if (allConst([a, b])) {
    const t = typeOf(a);
    const isFloat = spindleDType(t) === "float32";
    return [hostPerRun([a, b], (h) => {
      const out = broadcastMap(h, t, (x, y) => hostBinary[type](x, y, isFloat));
      if (t === DATA_TYPE.FLOAT) out.values = out.values!.map(Math.fround);
      return out;
    })];
  }
  const integer = [a, b].find((v) => v.kind === "runtime" && v.dtype !== "float32") as RuntimeValue | undefined;
  if (integer !== undefined && type in intKinds) return [intBinary(n, intKinds[type], a, b, integer.dtype)];
  if (type === "Pow") {
    const toFloat = (v: Value) =>
      v.kind === "runtime" && v.dtype !== "float32"
        ? n.b.emit("cast", [v], { dtype: "float32" })
        : v.kind === "const" && spindleDType(typeOf(v)) !== "float32"
        ? hostPerRun([v], ([h]) => host(DATA_TYPE.FLOAT, h.shape, castValues(valuesOf(h), DATA_TYPE.FLOAT)))
        : v;
    const original = spindleDType(typeOf(a))!;
    if (typeOf(a) !== typeOf(b)) return binaryNative(n, "pow", toFloat(a), toFloat(b), original);
  }
  return binaryNative(n, nativeBinary[type], a, b, "float32");
}

/** ONNX binary ops on integers → int_binary's kinds (Pow stays in float32). */
const intKinds: Record<string, ParamsOf<"int_binary">["kind"]> = {
  Add: "add",
  Sub: "sub",
  Mul: "mul",
  Div: "div",
  Mod: "mod",
  Max: "max",
  Min: "min",
};

/** A constant as a tensor of `dtype` (shape arithmetic mixes int64 shapes and int32 casts). */
export function asDType(v: Value, dtype: DType): Value {
  if (v.kind === "runtime" || spindleDType(typeOf(v)) === dtype) return v;
  const to = dtype === "int64" ? DATA_TYPE.INT64 : dtype === "int32" ? DATA_TYPE.INT32 : DATA_TYPE.FLOAT;
  return hostPerRun([v], ([h]) => host(to, h.shape, castValues(valuesOf(h), to)));
}

/** Integer a ⋈ b at run time (shape arithmetic on sizes known only when the model runs). */
export function intBinary(
  n: NodeContext,
  kind: ParamsOf<"int_binary">["kind"],
  a: Value,
  b: Value,
  dtype: DType,
): Value {
  const [x, y] = [a, b].map((v) => asDType(v, dtype));
  if ([x, y].some((v) => v.kind === "runtime" && v.dtype !== dtype)) {
    unsupported(`${n.node.opType} of ${dtype} and ${[x, y].map((v) => v.kind === "runtime" ? v.dtype : "")}`);
  }
  return n.b.emit("int_binary", [x, y], { kind });
}

/** The native binary op (scalar form for a one-element constant), cast to `result`. */
function binaryNative(
  n: NodeContext,
  op: "add" | "sub" | "mul" | "div" | "pow" | "maximum" | "minimum",
  a: Value,
  b: Value,
  result: DType,
): Value[] {
  if (result !== "float32") return [n.b.emit("cast", binaryNative(n, op, a, b, "float32"), { dtype: result })];
  const rankA = shapeOf(a).length;
  const rankB = shapeOf(b).length;
  if (b.kind === "const" && isScalar(b) && rankB <= rankA && fixedHost(b)) {
    return [n.b.emit(op, [a], { scalar: valuesOf(fixedHost(b)!)[0] })];
  }
  if (a.kind === "const" && isScalar(a) && rankA <= rankB && fixedHost(a)) {
    return [n.b.emit(op, [b], { scalar: valuesOf(fixedHost(a)!)[0], scalar_first: true })];
  }
  return [n.b.emit(op, [a, b])];
}

function negate(n: NodeContext, x: Value): Value[] {
  if (x.kind === "runtime" && x.dtype !== "float32") {
    const zero = x.dtype === "int64" ? DATA_TYPE.INT64 : DATA_TYPE.INT32;
    return [n.b.emit("int_binary", [constValue(host(zero, [], [0])), x], { kind: "sub" })];
  }
  return [n.b.emit("neg", [x])];
}

function compare(kind: ParamsOf<"compare">["kind"], fn: (x: number, y: number) => boolean): Handler {
  return (n) => {
    const a = input(n, 0);
    const b = input(n, 1);
    if (allConst([a, b])) {
      return [hostPerRun([a, b], (h) => broadcastMap(h, DATA_TYPE.BOOL, (x, y) => (fn(x, y) ? 1 : 0)))];
    }
    return [n.b.emit("compare", [a, b], { kind })];
  };
}

// ----------------------------------------------------------------------------------------
// Linear algebra

function matmul(n: NodeContext): Value[] {
  let a = input(n, 0);
  let b = input(n, 1);
  const vectorA = shapeOf(a).length === 1;
  const vectorB = shapeOf(b).length === 1;
  if (vectorA) a = n.b.emit("unsqueeze", [a], { dim: 0 });
  if (vectorB) b = n.b.emit("unsqueeze", [b], { dim: 1 });
  let out = n.b.emit("gemm", [a, b]);
  if (vectorA) out = n.b.emit("squeeze", [out], { dim: -2 });
  if (vectorB) out = n.b.emit("squeeze", [out], { dim: -1 });
  return [out];
}

function gemm(n: NodeContext): Value[] {
  const alpha = attrFloat(n, "alpha", 1);
  const beta = attrFloat(n, "beta", 1);
  const transA = attrInt(n, "transA", 0);
  const transB = attrInt(n, "transB", 0);
  const c = n.inputs[2];
  const product = n.b.emit("gemm", [input(n, 0), input(n, 1)], { trans_a: transA !== 0, trans_b: transB !== 0, alpha });
  if (c === undefined || beta === 0) return [product];
  const cShape = shapeOf(c);
  const outShape = shapeOf(product);
  if (
    c.kind === "const" && cShape.length <= 2 && numel(cShape) === outShape[1] && outShape[1] >= 0 &&
    cShape[0] === (cShape.length === 2 ? 1 : cShape[0])
  ) {
    const node = (product as RuntimeValue).node;
    if (node !== undefined) {
      node.inputs!.push(n.b.constId(c));
      node.params = { ...node.params, beta, has_bias: true };
      return [product];
    }
  }
  const scaled = beta === 1 ? c : n.b.emit("mul", [c], { scalar: beta });
  return [n.b.emit("add", [product, scaled])];
}

// ----------------------------------------------------------------------------------------
// Normalization and reductions

function softmax(log: boolean): Handler {
  return (n) => {
    const x = input(n, 0);
    const shape = shapeOf(x);
    const axis = normAxis(attrInt(n, "axis", n.opset < 13 ? 1 : -1), shape.length);
    const op = log ? "log_softmax" : "softmax";
    if (n.opset >= 13 || axis === shape.length - 1) return [n.b.emit(op, [x], { dim: axis })];
    const inner = shape.slice(axis);
    if (inner.some((d) => d < 0)) unsupported("Softmax (opset < 13) over a dynamic dimension");
    const flat = n.b.emit(op, [reshapeTo(n.b, x, [-1, numel(inner)])], { dim: 1 });
    return [reshapeTo(n.b, flat, shape)];
  };
}

function layerNormalization(n: NodeContext): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  const axis = normAxis(attrInt(n, "axis", -1), rank);
  const eps = attrFloat(n, "epsilon", 1e-5);
  const inputs = [x, input(n, 1)];
  if (n.inputs[2]) inputs.push(n.inputs[2]);
  const y = n.b.emit("layer_norm", inputs, {
    normalized_ndim: rank - axis,
    eps,
    has_weight: true,
    has_bias: n.inputs[2] !== undefined,
  });
  if (n.node.outputs.slice(1).every((o) => o === "")) return [y];
  // Mean and InvStdDev outputs, composed (keepdim over the normalized dims).
  const dims = [...Array(rank - axis).keys()].map((d) => d + axis);
  const mean = n.b.emit("mean", [x], { dims, keepdim: true });
  const centered = n.b.emit("sub", [x, mean]);
  const variance = n.b.emit("mean", [n.b.emit("mul", [centered, centered])], { dims, keepdim: true });
  const invStd = n.b.emit("div", [n.b.emit("sqrt", [n.b.emit("add", [variance], { scalar: eps })])], {
    scalar: 1,
    scalar_first: true,
  });
  return [y, mean, invStd];
}

function batchNormalization(n: NodeContext): Value[] {
  if (attrInt(n, "training_mode", 0) !== 0) unsupported("BatchNormalization in training mode");
  const [x, scale, bias, mean, variance] = [0, 1, 2, 3, 4].map((i) => input(n, i));
  const eps = attrFloat(n, "epsilon", 1e-5);
  return [n.b.emit("batch_norm", [x, mean, variance, scale, bias], { eps, has_weight: true, has_bias: true })];
}

const reductions: Record<string, "mean" | "sum" | "max" | "min"> = {
  ReduceMean: "mean",
  ReduceSum: "sum",
  ReduceMax: "max",
  ReduceMin: "min",
};

/**
 * ReduceMean/Sum/Max/Min natively. Integer (bool) inputs of Max and Min reduce in float32 and
 * come back as int32 (exact below 2^24); Max and Min over an empty set give −inf and +inf
 * (ONNX's identities), as a constant of the output's static shape.
 */
function reduceNative(n: NodeContext, x: Value, dims: number[], keepdim: boolean): Value {
  const op = reductions[n.node.opType];
  const shape = shapeOf(x);
  if ((op === "max" || op === "min") && dims.some((d) => shape[d] === 0)) {
    const out = shape.flatMap((d, i) => (dims.includes(i) ? (keepdim ? [1] : []) : [d]));
    if (out.some((d) => d < 0)) unsupported(`${n.node.opType} over an empty set with dynamic dims`);
    return constValue(
      host(DATA_TYPE.FLOAT, out, new Array<number>(numel(out)).fill(op === "max" ? -Infinity : Infinity)),
    );
  }
  const dtype = x.kind === "runtime" ? x.dtype : spindleDType(typeOf(x))!;
  if (dtype === "float32" || (op !== "max" && op !== "min")) return n.b.emit(op, [x], { dims, keepdim });
  const reduced = n.b.emit(op, [n.b.emit("cast", [x], { dtype: "float32" })], { dims, keepdim });
  return n.b.emit("cast", [reduced], { dtype });
}

/**
 * An ONNX Reduce* node: `body` reduces x over `dims` (its opset's axes, all when none) with
 * keepdim as the node says; a no-op (noop_with_empty_axes, or a 0-D input) passes x on.
 */
export function reduce(
  n: NodeContext,
  body: (x: Value, dims: number[], keepdim: boolean) => Value = (x, dims, keepdim) => reduceNative(n, x, dims, keepdim),
): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  const keepdims = attrInt(n, "keepdims", 1);
  const axesFromInput = n.node.opType === "ReduceSum" ? n.opset >= 13 : n.opset >= 18;
  let axes = axesFromInput
    ? (n.inputs[1] ? constInts(n.inputs[1], `${n.node.opType} axes`) : [])
    : attrInts(n, "axes") ?? [];
  if (axes.length === 0) {
    if (attrInt(n, "noop_with_empty_axes", 0) === 1) return [x];
    axes = [...Array(rank).keys()];
  }
  axes = axes.map((a) => normAxis(a, rank));
  if (rank === 0) return [x];
  return [body(x, axes, keepdims === 1)];
}

function globalPool(op: "mean" | "max"): Handler {
  return (n) => {
    const x = input(n, 0);
    const rank = shapeOf(x).length;
    return [n.b.emit(op, [x], { dims: [...Array(rank - 2).keys()].map((d) => d + 2), keepdim: true })];
  };
}

// ----------------------------------------------------------------------------------------
// Convolution and pooling

/** Explicit [begin_h, begin_w, end_h, end_w] pads from auto_pad or pads. */
export function spatialPads(
  n: NodeContext,
  x: Value,
  kernel: number[],
  stride: number[],
  dilation: number[],
): number[] {
  const autoPad = attrString(n, "auto_pad", "NOTSET");
  if (autoPad === "NOTSET") return attrInts(n, "pads") ?? [0, 0, 0, 0];
  if (autoPad === "VALID") return [0, 0, 0, 0];
  const shape = shapeOf(x);
  const pads = [0, 0, 0, 0];
  for (let d = 0; d < 2; d++) {
    const size = shape[2 + d];
    if (size < 0) unsupported(`${n.node.opType} auto_pad over a dynamic dimension`);
    const out = Math.ceil(size / stride[d]);
    const total = Math.max(0, (out - 1) * stride[d] + (kernel[d] - 1) * dilation[d] + 1 - size);
    const small = Math.floor(total / 2);
    pads[d] = autoPad === "SAME_UPPER" ? small : total - small;
    pads[d + 2] = total - pads[d];
  }
  return pads;
}

/**
 * Refuses absurd pads before anything runs (issue 17: a hostile file's pads must not make
 * import compute on huge padded tensors). Pooling follows onnxruntime, which requires each
 * pad to be smaller than the kernel. Convolution pads may reach past the kernel (ONNX allows
 * it; the extra outputs see padding only), but not past the dilated kernel and the input
 * together: beyond that a file only inflates the work.
 */
export function checkPads(
  n: NodeContext,
  x: Value,
  pads: number[],
  kernel: number[],
  dilation: number[],
  pooling: boolean,
): void {
  const runs = Math.max(n.b.runCount, 1);
  pads.forEach((pad, i) => {
    const axis = i % 2;
    const extent = (kernel[axis] - 1) * dilation[axis] + 1;
    // A dynamic size differs between import's runs on stand-in sizes: take the largest.
    const size = Math.max(...Array.from({ length: runs }, (_, r) => runShape(x, r)[2 + axis] ?? 0));
    const limit = pooling ? kernel[axis] - 1 : extent + Math.max(size, 0);
    if (pad < 0 || pad > limit) {
      const which = `${i < 2 ? "begin" : "end"} pad of the ${axis === 0 ? "height" : "width"}`;
      const rule = pooling
        ? `smaller than the kernel (${kernel[axis]}), as onnxruntime requires`
        : `at most the dilated kernel (${extent}) plus the input (${size}) on that axis`;
      throw new RangeError(`${n.node.opType}: the ${which} is ${pad}; it must be ${rule}`);
    }
  });
}

/**
 * Pads [top, left, bottom, right] as the symmetric [height, width] padding of a native op,
 * padding explicitly (with `value`) where the native op cannot: asymmetric pads, and, when
 * `limit` ([height, width]) is given, pads above it (PyTorch's pooling takes at most half
 * the effective kernel; ONNX allows any).
 */
export function symmetric(
  n: NodeContext,
  x: Value,
  pads: number[],
  value: number,
  limit?: number[],
): { x: Value; pads: number[] } {
  const fits = limit === undefined || (pads[0] <= limit[0] && pads[1] <= limit[1]);
  if (pads[0] === pads[2] && pads[1] === pads[3] && fits) return { x, pads: [pads[0], pads[1]] };
  const full = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]];
  return { x: n.b.emit("pad", [x], { mode: "constant", value, pads: full }), pads: [0, 0] };
}

/** Attributes of convolution and pooling with one entry per spatial axis (pads: two). */
const SPATIAL_ATTRIBUTES = ["kernel_shape", "strides", "dilations", "pads", "output_padding"];

/** Checks the lengths of the spatial attributes present against the input's spatial axes. */
function checkSpatialAttributes(n: NodeContext, axes: number): void {
  for (const name of SPATIAL_ATTRIBUTES) {
    const values = attrInts(n, name);
    const expected = name === "pads" ? 2 * axes : axes;
    if (values !== undefined && values.length !== expected) {
      throw new RangeError(
        `${n.node.opType}'s '${name}' has ${values.length} values; an input with ${axes} spatial axes needs ${expected}`,
      );
    }
  }
}

/** Runs a 2-D op on a 3-D (1-D spatial) input by inserting a height of 1. */
function spatial2d(
  n: NodeContext,
  body: (x: Value, lift: (v: number[] | undefined, fill: number) => number[] | undefined) => Value,
): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  if (rank !== 3 && rank !== 4) unsupported(`${n.node.opType} on a ${rank}-D input (1-D and 2-D spatial only)`);
  checkSpatialAttributes(n, rank - 2);
  if (rank === 4) return [body(x, (v) => v)];
  const lifted = n.b.emit("unsqueeze", [x], { dim: 2 });
  const lift = (v: number[] | undefined, fill: number) => {
    if (v === undefined) return undefined;
    if (v.length === 2) return [0, v[0], 0, v[1]]; // pads [begin, end]
    return [fill, ...v];
  };
  return [n.b.emit("squeeze", [body(lifted, lift)], { dim: 2 })];
}

function conv(n: NodeContext): Value[] {
  return spatial2d(n, (x, lift) => {
    let weight = input(n, 1);
    if (shapeOf(weight).length === 3) weight = n.b.emit("unsqueeze", [weight], { dim: 2 });
    const kernel = shapeOf(weight).slice(2);
    const stride = lift(attrInts(n, "strides"), 1) ?? [1, 1];
    const dilation = lift(attrInts(n, "dilations"), 1) ?? [1, 1];
    const explicit = attrInts(n, "pads");
    const pads = explicit && explicit.length === 2 ? lift(explicit, 0)! : spatialPads(n, x, kernel, stride, dilation);
    checkPads(n, x, pads, kernel, dilation, false);
    const padded = symmetric(n, x, pads, 0);
    const bias = n.inputs[2];
    const inputs = bias ? [padded.x, weight, bias] : [padded.x, weight];
    return n.b.emit("conv2d", inputs, {
      stride: pair(stride),
      padding: pair(padded.pads),
      dilation: pair(dilation),
      groups: attrInt(n, "group", 1),
      has_bias: bias !== undefined,
    });
  });
}

function convTranspose(n: NodeContext): Value[] {
  return spatial2d(n, (x, lift) => {
    let weight = input(n, 1);
    if (shapeOf(weight).length === 3) weight = n.b.emit("unsqueeze", [weight], { dim: 2 });
    const stride = lift(attrInts(n, "strides"), 1) ?? [1, 1];
    const dilation = lift(attrInts(n, "dilations"), 1) ?? [1, 1];
    const outputPadding = lift(attrInts(n, "output_padding"), 0) ?? [0, 0];
    const rawPads = attrInts(n, "pads");
    let pads = rawPads ? (rawPads.length === 2 ? lift(rawPads, 0)! : rawPads) : [0, 0, 0, 0];
    const autoPad = attrString(n, "auto_pad", "NOTSET");
    const outputShape = attrInts(n, "output_shape");
    if (outputShape !== undefined || autoPad === "SAME_UPPER" || autoPad === "SAME_LOWER") {
      pads = transposedPads(x, weight, stride, dilation, outputPadding, outputShape, autoPad);
    } else if (autoPad !== "NOTSET" && autoPad !== "VALID") {
      throw new RangeError(`ConvTranspose's auto_pad '${autoPad}' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID`);
    }
    // The native op pads symmetrically: pad by the smaller side, then crop the rest. Negative
    // pads (an output_shape past the full output) extend the output with bias-only rows and
    // columns: zeros padded on, then the bias added.
    const crop = pads.map((p) => Math.max(0, p));
    const extend = pads.map((p) => Math.max(0, -p));
    const extended = extend.some((p) => p > 0);
    const common = [Math.min(crop[0], crop[2]), Math.min(crop[1], crop[3])];
    const bias = n.inputs[2];
    const inputs = bias && !extended ? [x, weight, bias] : [x, weight];
    let out = n.b.emit("conv_transpose2d", inputs, {
      stride: pair(stride),
      padding: pair(common),
      output_padding: pair(outputPadding),
      dilation: pair(dilation),
      groups: attrInt(n, "group", 1),
      has_bias: inputs.length === 3,
    });
    for (const axis of [0, 1]) {
      const [begin, end] = [crop[axis] - common[axis], crop[axis + 2] - common[axis]];
      if (begin === 0 && end === 0) continue;
      const size = shapeOf(out)[axis + 2];
      out = n.b.emit("slice", [out], { dim: axis + 2, start: begin, end: size - end, step: 1 });
    }
    if (!extended) return out;
    out = n.b.emit("pad", [out], {
      mode: "constant",
      value: 0,
      pads: [0, 0, extend[0], extend[1], 0, 0, extend[2], extend[3]],
    });
    if (bias === undefined) return out;
    return n.b.emit("add", [out, n.b.emit("reshape", [bias], { shape: [1, -1, 1, 1] })]);
  });
}

/**
 * ConvTranspose's pads from `output_shape` or SAME auto_pad (output = input · stride), as
 * ONNX defines them: total = stride · (in − 1) + output_padding + (kernel − 1) · dilation + 1 −
 * out, split with the odd one at the end for SAME_UPPER and at the start otherwise. A negative
 * total is a negative end pad: the output extends at the end.
 */
function transposedPads(
  x: Value,
  weight: Value,
  stride: number[],
  dilation: number[],
  outputPadding: number[],
  outputShape: number[] | undefined,
  autoPad: string,
): number[] {
  const spatial = shapeOf(x).slice(2);
  const kernel = shapeOf(weight).slice(2);
  if (spatial.some((d) => d < 0)) {
    unsupported("ConvTranspose with output_shape or SAME auto_pad on a dynamic spatial size");
  }
  let wanted = outputShape === undefined ? spatial.map((d, i) => d * stride[i]) : outputShape.slice(-spatial.length);
  if (wanted.length === 1) wanted = [1, wanted[0]]; // a 1-D input lifted to 2-D
  if (wanted.length !== 2) throw new RangeError(`ConvTranspose's output_shape [${outputShape}] does not fit the input`);
  const pads = [0, 0, 0, 0];
  for (const axis of [0, 1]) {
    const total = stride[axis] * (spatial[axis] - 1) + outputPadding[axis] + (kernel[axis] - 1) * dilation[axis] + 1 -
      wanted[axis];
    const half = Math.floor(total / 2);
    // An output past the full output grows at the end, as onnxruntime grows it (it clamps the
    // total to 0 and leaves the extra rows to the bias).
    if (total < 0) [pads[axis], pads[axis + 2]] = [0, total];
    else [pads[axis], pads[axis + 2]] = autoPad === "SAME_UPPER" ? [half, total - half] : [total - half, half];
  }
  return pads;
}

export function pool(max: boolean): Handler {
  return (n) => {
    if (n.node.outputs.length > 1 && n.node.outputs[1] !== "") unsupported("MaxPool's Indices output");
    const x = input(n, 0);
    const dtype = x.kind === "runtime" ? x.dtype : spindleDType(typeOf(x))!;
    if (max && dtype !== "float32") {
      // Integer max pooling in float32 (exact below 2^24), back to the input's dtype.
      const floats = n.b.emit("cast", [x], { dtype: "float32" });
      const pooled = pool(true)({ ...n, inputs: [floats, ...n.inputs.slice(1)] });
      return [n.b.emit("cast", [pooled[0]!], { dtype })];
    }
    return spatial2d(n, (x, lift) => {
      const kernel = lift(attrInts(n, "kernel_shape"), 1) ?? unsupported("pooling without kernel_shape");
      const stride = lift(attrInts(n, "strides"), 1) ?? [1, 1];
      const dilation = lift(attrInts(n, "dilations"), 1) ?? [1, 1];
      const explicit = attrInts(n, "pads");
      const pads = explicit && explicit.length === 2 ? lift(explicit, 0)! : spatialPads(n, x, kernel, stride, dilation);
      checkPads(n, x, pads, kernel, dilation, true);
      const ceil = attrInt(n, "ceil_mode", 0) === 1;
      const halfKernel = kernel.map((k, axis) => Math.floor(((k - 1) * dilation[axis] + 1) / 2));
      if (max) {
        const padded = symmetric(n, x, pads, -Infinity, halfKernel);
        return n.b.emit("max_pool2d", [padded.x], {
          kernel_size: pair(kernel),
          stride: pair(stride),
          padding: pair(padded.pads),
          dilation: pair(dilation),
          ceil_mode: ceil,
        });
      }
      if (dilation.some((d) => d !== 1)) unsupported("AveragePool with dilations");
      const countIncludePad = attrInt(n, "count_include_pad", 0) === 1;
      const large = pads.some((p, i) => p > halfKernel[i % 2]);
      if (!countIncludePad && (large || pads[0] !== pads[2] || pads[1] !== pads[3])) {
        return averageOverReal(n, x, pads, { kernel_size: pair(kernel), stride: pair(stride), ceil_mode: ceil });
      }
      const padded = symmetric(n, x, pads, 0, halfKernel);
      return n.b.emit("avg_pool2d", [padded.x], {
        kernel_size: pair(kernel),
        stride: pair(stride),
        padding: pair(padded.pads),
        ceil_mode: ceil,
        count_include_pad: countIncludePad,
      });
    });
  };
}

/**
 * AveragePool over the real elements of each window when its pads are asymmetric or wider
 * than the native op pads (half the kernel): the window sums of x padded with zeros over the
 * window sums of ones padded likewise (the count of real elements; a constant, folded at
 * import). Both pool with the same divisor, which cancels.
 */
function averageOverReal(
  n: NodeContext,
  x: Value,
  pads: number[],
  window: { kernel_size: [number, number]; stride: [number, number]; ceil_mode: boolean },
): Value {
  const spatial = shapeOf(x).slice(2);
  if (spatial.some((d) => d < 0)) {
    unsupported("AveragePool excluding asymmetric or wide padding from the count on a dynamic spatial size");
  }
  const full = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]];
  const params = { ...window, padding: [0, 0] as [number, number], count_include_pad: true };
  const sums = n.b.emit("avg_pool2d", [n.b.emit("pad", [x], { mode: "constant", value: 0, pads: full })], params);
  const ones = constValue(host(DATA_TYPE.FLOAT, [1, 1, ...spatial], new Array(spatial[0] * spatial[1]).fill(1)));
  const counts = n.b.emit("avg_pool2d", [n.b.emit("pad", [ones], { mode: "constant", value: 0, pads: full })], params);
  return n.b.emit("div", [sums, counts]);
}

/** [height, width] from a list of two (spatial attributes after lifting to 2-D). */
function pair(values: readonly number[]): [number, number] {
  return [values[0], values[1]];
}

// ----------------------------------------------------------------------------------------
// Shape ops

function reshape(n: NodeContext): Value[] {
  const x = input(n, 0);
  const target = n.inputs[1] ?? unsupported("Reshape without a shape");
  const allowZero = attrInt(n, "allowzero", 0) === 1;
  // A shape computed at run time, or a 0 that copies a dynamic dim: the native op reads it.
  const copiesDynamic = target.kind === "const" && !allowZero &&
    valuesOf(target.hosts[0]).some((d, i) => d === 0 && shapeOf(x)[i] === -1);
  if (target.kind !== "const" || copiesDynamic) {
    return [n.b.emit("reshape_to", [x, asDType(target, "int64")], { allow_zero: allowZero })];
  }
  const runs = Math.max(n.b.runCount, target.hosts.length);
  const resolved: number[][] = [];
  for (let r = 0; r < runs; r++) {
    const inShape = runShape(x, r);
    const dims = valuesOf(target.hosts[Math.min(r, target.hosts.length - 1)]).map((d, i) => {
      if (d !== 0 || allowZero) return d;
      if (i >= inShape.length) {
        throw new RangeError(`Reshape's 0 at position ${i} copies a dimension the ${inShape.length}-D input lacks`);
      }
      return inShape[i];
    });
    const known = numel(dims.filter((d) => d !== -1));
    resolved.push(dims.map((d) => (d === -1 ? numel(inShape) / Math.max(known, 1) : d)));
  }
  const dims = resolved[0].map((d, i) => (resolved.every((s) => s[i] === d) ? d : -1));
  if (x.kind === "const") return [hostPerRun([x], ([h]) => ({ ...h, shape: resolved[0] }))];
  return [
    reshapeTo(
      n.b,
      x,
      runs === 1 ? valuesOf(target.hosts[0]).map((d, i) => (d === 0 && !allowZero ? dims[i] : d)) : dims,
    ),
  ];
}

function flatten(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x);
  const rawAxis = attrInt(n, "axis", 1);
  const axis = rawAxis < 0 ? normAxis(rawAxis, shape.length) : normAxis(rawAxis, shape.length + 1);
  if (x.kind === "const") {
    return [hostPerRun([x], ([h]) => ({ ...h, shape: [numel(h.shape.slice(0, axis)), numel(h.shape.slice(axis))] }))];
  }
  if (axis === 0) return [reshapeTo(n.b, x, [1, -1])];
  let out: Value = x;
  if (axis === shape.length) out = n.b.emit("unsqueeze", [out], { dim: axis });
  else if (axis < shape.length - 1) out = n.b.emit("flatten", [out], { start: axis, end: -1 });
  if (axis > 1) out = n.b.emit("flatten", [out], { start: 0, end: axis - 1 });
  return [out];
}

function axesOf(n: NodeContext, inputIndex: number, sinceOpset: number): number[] | undefined {
  if (n.opset >= sinceOpset) {
    return n.inputs[inputIndex] ? constInts(n.inputs[inputIndex], `${n.node.opType} axes`) : undefined;
  }
  return attrInts(n, "axes");
}

function squeeze(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x);
  const axes = axesOf(n, 1, 13) ?? shape.flatMap((d, i) => (d === 1 ? [i] : []));
  if (x.kind === "const") {
    const drop = new Set(axes.map((a) => normAxis(a, shape.length)));
    return [hostPerRun([x], ([h]) => ({ ...h, shape: h.shape.filter((_, i) => !drop.has(i)) }))];
  }
  return [squeezeAll(n.b, x, axes)];
}

function unsqueeze(n: NodeContext): Value[] {
  const x = input(n, 0);
  const axes = axesOf(n, 1, 13) ?? unsupported("Unsqueeze without axes");
  if (x.kind === "const") {
    return [hostPerRun([x], ([h]) => {
      const rank = h.shape.length + axes.length;
      const set = new Set(axes.map((a) => normAxis(a, rank)));
      const shape: number[] = [];
      let k = 0;
      for (let i = 0; i < rank; i++) shape.push(set.has(i) ? 1 : h.shape[k++]);
      return { ...h, shape };
    })];
  }
  return [unsqueezeAll(n.b, x, axes)];
}

function transpose(n: NodeContext): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  const perm = attrInts(n, "perm") ?? [...Array(rank).keys()].reverse();
  const axes = new Set(perm.map((p) => (p < 0 ? p + rank : p)));
  if (perm.length !== rank || axes.size !== rank || [...axes].some((axis) => axis < 0 || axis >= rank)) {
    throw new RangeError(`Transpose's perm [${perm}] is not a permutation of the ${rank} axes of its input`);
  }
  if (x.kind === "const" && spindleDType(typeOf(x)) !== "float32") {
    return [hostPerRun([x], ([h]) => transposeHost(h, perm))];
  }
  return [n.b.emit("contiguous", [n.b.emit("permute", [x], { dims: perm })])];
}

function concat(n: NodeContext): Value[] {
  const parts = n.inputs.filter((v): v is Value => v !== undefined);
  if (parts.length === 0) throw new RangeError("Concat has no inputs");
  const rank = shapeOf(parts[0]).length;
  const axis = normAxis(attrInt(n, "axis", 0), rank);
  if (allConst(parts)) {
    return [hostPerRun(parts, (hosts) =>
      concatHost(
        hosts.filter((h) => numel(h.shape) > 0 || h.shape.length === rank),
        axis,
      ))];
  }
  // Shape arithmetic mixes run-time int64 shapes with constants of another integer type.
  const runtime = parts.find((p) => p.kind === "runtime") as RuntimeValue;
  const nonEmpty = parts.filter((p) => shapeOf(p)[axis] !== 0).map((p) => asDType(p, runtime.dtype));
  if (nonEmpty.length === 1) return [nonEmpty[0]];
  return [n.b.emit("concat", nonEmpty, { dim: axis })];
}

function slice(n: NodeContext): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  let starts: number[];
  let ends: number[];
  let axes: number[] | undefined;
  let steps: number[] | undefined;
  if (n.opset < 10) {
    starts = attrInts(n, "starts") ?? [];
    ends = attrInts(n, "ends") ?? [];
    axes = attrInts(n, "axes");
  } else if (fixedHost(n.inputs[1]) === undefined || fixedHost(n.inputs[2]) === undefined) {
    return [sliceAtRunTime(n, x, rank)];
  } else {
    starts = constInts(n.inputs[1], "Slice starts");
    ends = constInts(n.inputs[2], "Slice ends");
    axes = n.inputs[3] ? constInts(n.inputs[3], "Slice axes") : undefined;
    steps = n.inputs[4] ? constInts(n.inputs[4], "Slice steps") : undefined;
  }
  axes ??= starts.map((_, i) => i);
  if (
    starts.length !== axes.length || ends.length !== axes.length ||
    (steps !== undefined && steps.length !== axes.length)
  ) {
    throw new RangeError(
      `Slice has ${starts.length} starts, ${ends.length} ends and ${
        steps?.length ?? "no"
      } steps for ${axes.length} axes`,
    );
  }
  let out: Value = x;
  const limit = 9e15;
  axes.forEach((rawAxis, i) => {
    const axis = normAxis(rawAxis, rank);
    const step = steps?.[i] ?? 1;
    const start = Math.max(-limit, Math.min(limit, starts[i]));
    const end = Math.max(-limit, Math.min(limit, ends[i]));
    if (out.kind === "const") {
      out = hostPerRun([out], ([h]) => sliceHost(h, axis, start, end, step));
      return;
    }
    if (step < 0) {
      out = sliceBackwards(n, out, axis, start, end, step);
      return;
    }
    if (step === 0) throw new RangeError(`Slice's step for axis ${rawAxis} is 0`);
    out = n.b.emit("slice", [out], { dim: axis, start, end, step });
  });
  return [out];
}

/**
 * Slice with a negative step: the elements at start, start + step, … while above end (ONNX's
 * clamping: start to [0, size − 1], end to [−1, size − 1], negatives counted from the end),
 * gathered with `take`. A static size gives constant indices; a dynamic one is supported for
 * the whole axis reversed (torch.flip's export: start −1 or past the end, end before the
 * start), with indices size − 1 … 0 computed at run time.
 */
function sliceBackwards(n: NodeContext, x: Value, axis: number, start: number, end: number, step: number): Value {
  const size = shapeOf(x)[axis];
  if (size >= 0) {
    const first = start < 0 ? Math.max(-1, start + size) : Math.min(size - 1, start);
    const last = end < 0 ? Math.max(-1, end + size) : Math.min(size - 1, end);
    const indices: number[] = [];
    for (let i = first; i > last; i += step) indices.push(i);
    return n.b.emit("take", [x, constValue(host(DATA_TYPE.INT64, [indices.length], indices))], { axis });
  }
  if (step !== -1 || !(start === -1 || start >= 2 ** 31 - 1) || end > -(2 ** 31)) {
    unsupported("Slice with a negative step over part of a dynamic axis (only the whole axis reversed)");
  }
  const sizeValue = n.b.emit("shape_of", [x], { start: axis, end: axis + 1 });
  const scalar = (v: number) => constValue(host(DATA_TYPE.INT64, [], [v]));
  const lastIndex = n.b.emit("int_binary", [n.b.emit("reshape", [sizeValue], { shape: [] }), scalar(1)], {
    kind: "sub",
  });
  const indices = n.b.emit("range", [lastIndex, scalar(-1), scalar(-1)], {}, { dtype: "int64" });
  return n.b.emit("take", [x, indices], { axis });
}

/** Slice whose starts or ends are computed at run time (axes and steps stay constants). */
function sliceAtRunTime(n: NodeContext, x: Value, rank: number): Value {
  const axes = n.inputs[3] ? constInts(n.inputs[3], "Slice axes").map((a) => normAxis(a, rank)) : [];
  const steps = n.inputs[4] ? constInts(n.inputs[4], "Slice steps") : [];
  if (steps.some((step) => step <= 0)) unsupported("Slice with a non-positive step and bounds computed at run time");
  const [starts, ends] = [input(n, 1), input(n, 2)].map((v) => asDType(v, "int64"));
  return n.b.emit("slice_to", [x, starts, ends], { axes, steps });
}

function gather(n: NodeContext): Value[] {
  const data = input(n, 0);
  const indices = input(n, 1);
  const rank = shapeOf(data).length;
  const axis = normAxis(attrInt(n, "axis", 0), rank);
  if (allConst([data, indices])) return [hostPerRun([data, indices], ([d, i]) => gatherHost(d, i, axis))];
  const index = fixedHost(indices);
  if (index !== undefined && index.shape.length === 0) {
    const size = shapeOf(data)[axis];
    let i = valuesOf(index)[0];
    if (i < 0 && size >= 0) i += size;
    if (i >= 0) {
      return [n.b.emit("squeeze", [n.b.emit("slice", [data], { dim: axis, start: i, end: i + 1 })], { dim: axis })];
    }
  }
  return [n.b.emit("take", [data, indices], { axis })];
}

function shape(n: NodeContext): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  const clip = (v: number) => Math.min(rank, Math.max(0, v < 0 ? v + rank : v));
  const start = clip(attrInt(n, "start", 0));
  const end = clip(attrInt(n, "end", rank));
  // Sizes known only at run time stay in the graph (nothing folds from the probe's sizes).
  if (shapeOf(x).slice(start, Math.max(start, end)).includes(-1)) {
    return [n.b.emit("shape_of", [x], { start, end: Math.max(start, end) })];
  }
  const runs = x.kind === "runtime" ? x.runs.length : x.hosts.length;
  const hosts: Host[] = [];
  for (let r = 0; r < runs; r++) {
    const dims = runShape(x, r).slice(start, Math.max(start, end));
    hosts.push(host(DATA_TYPE.INT64, [dims.length], dims.slice()));
  }
  return [{ kind: "const", hosts }];
}

function size(n: NodeContext): Value[] {
  const x = input(n, 0);
  const dims = shapeOf(x);
  if (dims.includes(-1)) {
    // The product of the dims, as int64 ops (one per dim).
    const sizes = n.b.emit("shape_of", [x]);
    let product: Value = n.b.emit("slice", [sizes], { dim: 0, start: 0, end: 1 });
    for (let axis = 1; axis < dims.length; axis++) {
      const next = n.b.emit("slice", [sizes], { dim: 0, start: axis, end: axis + 1 });
      product = n.b.emit("int_binary", [product, next], { kind: "mul" });
    }
    return [n.b.emit("reshape", [product], { shape: [] })];
  }
  const runs = x.kind === "runtime" ? x.runs.length : x.hosts.length;
  const hosts: Host[] = [];
  for (let r = 0; r < runs; r++) hosts.push(host(DATA_TYPE.INT64, [], [numel(runShape(x, r))]));
  return [{ kind: "const", hosts }];
}

/**
 * A tensor attribute's value. As for initializers, an element type Spindle lacks (or data in
 * an external file) is unsupported; an attribute without a tensor is malformed.
 */
function tensorAttribute(n: NodeContext, name: string, t: TensorProto | undefined): Host {
  if (t === undefined) throw new RangeError(`${n.node.opType}'s '${name}' attribute holds no tensor`);
  try {
    return fromProto(t);
  } catch (error) {
    if (error instanceof TypeError) unsupported(error.message);
    throw error;
  }
}

function constant(n: NodeContext): Value[] {
  const a = n.node.attributes[0] ?? unsupported("Constant without a value");
  switch (a.name) {
    case "value":
      return [constValue(tensorAttribute(n, "value", a.t))];
    case "value_float":
      return [constValue(host(DATA_TYPE.FLOAT, [], [a.f ?? 0]))];
    case "value_floats":
      return [constValue(host(DATA_TYPE.FLOAT, [a.floats.length], a.floats))];
    case "value_int":
      return [constValue(host(DATA_TYPE.INT64, [], [Number(a.i ?? 0n)]))];
    case "value_ints":
      return [constValue(host(DATA_TYPE.INT64, [a.ints.length], a.ints.map(Number)))];
    default:
      return unsupported(`Constant with attribute '${a.name}'`);
  }
}

function constantOfShape(n: NodeContext): Value[] {
  const target = input(n, 0);
  const valueAttr = attribute(n, "value")?.t;
  const fill = valueAttr ? tensorAttribute(n, "value", valueAttr) : host(DATA_TYPE.FLOAT, [1], [0]);
  const fillValue = valuesOf(fill)[0];
  if (target.kind !== "const") {
    const dtype = spindleDType(fill.type) ?? unsupported(`ConstantOfShape of ONNX element type ${fill.type}`);
    if (!Number.isFinite(fillValue)) unsupported("ConstantOfShape at run time with a non-finite value");
    return [n.b.emit("constant_of_shape", [target], { dtype, value: fillValue })];
  }
  return [hostPerRun([target], ([h]) => {
    const dims = valuesOf(h);
    if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new RangeError(`ConstantOfShape's shape [${dims.join(", ")}] must hold non-negative integers`);
    }
    checkFoldedSize(dims);
    return host(fill.type, dims.slice(), new Array<number>(numel(dims)).fill(fillValue));
  })];
}

export function cast(n: NodeContext): Value[] {
  const x = input(n, 0);
  // CastLike: the element type of its second input (a run-time value's is its dtype's).
  const to = n.node.opType === "CastLike" ? typeOf(input(n, 1)) : attrInt(n, "to", DATA_TYPE.FLOAT);
  const dtype = spindleDType(to) ?? unsupported(`Cast to ONNX element type ${to}`);
  if (x.kind === "const") return [hostPerRun([x], ([h]) => host(to, h.shape, castValues(valuesOf(h), to)))];
  if (x.dtype === dtype && to !== DATA_TYPE.BOOL) return [x];
  return [n.b.emit("cast", [x], { dtype, as_bool: to === DATA_TYPE.BOOL })];
}

function where(n: NodeContext): Value[] {
  const [c, x, y] = [0, 1, 2].map((i) => input(n, i));
  if (allConst([c, x, y])) return [hostPerRun([c, x, y], (h) => broadcastMap(h, h[1].type, (p, a, b) => (p ? a : b)))];
  return [n.b.emit("where", [c, x, y])];
}

function expand(n: NodeContext): Value[] {
  const x = input(n, 0);
  const target = input(n, 1);
  if (fixedHost(target) === undefined) return [n.b.emit("expand_to", [x, target])];
  const dims = constInts(target, "Expand shape");
  return [n.b.emit("expand", [x], { shape: dims })];
}

const PAD_MODES = new Map<string, ParamsOf<"pad">["mode"]>([["constant", "constant"], ["reflect", "reflect"], [
  "edge",
  "edge",
]]);

function pad(n: NodeContext): Value[] {
  const x = input(n, 0);
  const rank = shapeOf(x).length;
  const wrap = attrString(n, "mode", "constant") === "wrap";
  const mode = wrap ? "constant" : PAD_MODES.get(attrString(n, "mode", "constant")) ??
    unsupported(`Pad mode '${attrString(n, "mode", "")}'`);
  let pads: number[];
  let value = 0;
  if (n.opset < 11) {
    pads = attrInts(n, "pads") ?? [];
    value = attrFloat(n, "value", 0);
  } else {
    pads = constInts(n.inputs[1], "Pad pads");
    if (n.inputs[2]) {
      value = valuesOf(fixedHost(n.inputs[2]) ?? unsupported("Pad constant_value must be a constant"))[0] ?? 0;
    }
  }
  const axes = n.inputs[3] ? constInts(n.inputs[3], "Pad axes").map((a) => normAxis(a, rank)) : [...Array(rank).keys()];
  if (pads.length !== 2 * axes.length) {
    throw new RangeError(`Pad has ${pads.length} pads for ${axes.length} axes (it needs ${2 * axes.length})`);
  }
  const full = new Array<number>(2 * rank).fill(0);
  axes.forEach((axis, i) => {
    full[axis] = pads[i];
    full[rank + axis] = pads[axes.length + i];
  });
  // A negative pad removes elements: those are sliced off first.
  let out = x;
  for (let axis = 0; axis < rank; axis++) {
    const [begin, end] = [full[axis], full[rank + axis]];
    if (begin >= 0 && end >= 0) continue;
    out = n.b.emit("slice", [out], { dim: axis, start: Math.max(0, -begin), end: end < 0 ? end : 9e15, step: 1 });
  }
  const grow = full.map((p) => Math.max(0, p));
  if (wrap) return [wrapPad(n, out, grow)];
  return [grow.some((p) => p > 0) ? n.b.emit("pad", [out], { mode, value, pads: grow }) : out];
}

/** Pad mode 'wrap': each padded axis is the end of x, x, then its start (a static size at least the pads). */
function wrapPad(n: NodeContext, x: Value, pads: number[]): Value {
  const shape = shapeOf(x);
  const rank = shape.length;
  let out = x;
  for (let axis = 0; axis < rank; axis++) {
    const [begin, end] = [pads[axis], pads[rank + axis]];
    if (begin === 0 && end === 0) continue;
    if (shape[axis] < 0 || begin > shape[axis] || end > shape[axis]) {
      unsupported(`Pad mode 'wrap' by more than the axis' size, or on a dynamic axis (axis ${axis})`);
    }
    const parts: Value[] = [];
    if (begin > 0) {
      parts.push(n.b.emit("slice", [out], { dim: axis, start: shape[axis] - begin, end: shape[axis], step: 1 }));
    }
    parts.push(out);
    if (end > 0) parts.push(n.b.emit("slice", [out], { dim: axis, start: 0, end, step: 1 }));
    out = n.b.emit("concat", parts, { dim: axis });
  }
  return out;
}

/** The value of enum parameter `param` of native op `op` named `name`, if the schema has it. */
function enumValue<K extends OpName>(op: K, param: string, name: string): string | undefined {
  const schema = OP_SCHEMAS[op].params.find((p) => p.name === param) as ParamSchema | undefined;
  return schema?.values?.includes(name) ? name : undefined;
}

function resize(n: NodeContext): Value[] {
  const x = input(n, 0);
  const shape = shapeOf(x);
  const rank = shape.length;
  const modeName = attrString(n, "mode", "nearest");
  const mode = (enumValue("resize", "mode", modeName) ?? unsupported(`Resize mode '${modeName}'`)) as ParamsOf<
    "resize"
  >["mode"];
  const upsample = n.node.opType === "Upsample";
  const coordName = upsample || n.opset < 11
    ? "asymmetric"
    : attrString(n, "coordinate_transformation_mode", "half_pixel");
  const coordinate = (enumValue("resize", "coordinate", coordName) ??
    unsupported(`Resize coordinate_transformation_mode '${coordName}'`)) as ParamsOf<"resize">["coordinate"];
  const nearestName = upsample || n.opset < 11 ? "floor" : attrString(n, "nearest_mode", "round_prefer_floor");
  const nearest = (enumValue("resize", "nearest", nearestName) ??
    unsupported(`Resize nearest_mode '${nearestName}'`)) as ParamsOf<"resize">["nearest"];
  if (attrInt(n, "antialias", 0) !== 0) unsupported("Resize with antialias");
  const policy = attrString(n, "keep_aspect_ratio_policy", "stretch");
  if (policy !== "stretch" && policy !== "not_larger" && policy !== "not_smaller") {
    throw new RangeError(`Resize's keep_aspect_ratio_policy '${policy}' is not stretch, not_larger or not_smaller`);
  }
  const cubic = {
    cubic_coeff_a: attrFloat(n, "cubic_coeff_a", -0.75),
    exclude_outside: attrInt(n, "exclude_outside", 0) !== 0,
  };
  const axes = (attrInts(n, "axes") ?? [...Array(rank).keys()]).map((a) => normAxis(a, rank));
  const scalesInput = upsample || n.opset < 11 ? n.inputs[1] : n.inputs[2];
  const sizesInput = upsample || n.opset < 11 ? undefined : n.inputs[3];
  const scales = new Array<number>(rank).fill(1);
  const sizes = shape.slice();
  const scaleValues = upsample && n.opset < 9
    ? attribute(n, "scales")?.floats
    : scalesInput
    ? constInts(scalesInput, "Resize scales")
    : undefined;
  if (sizesInput?.kind === "runtime") {
    if (policy !== "stretch") unsupported("Resize keep_aspect_ratio_policy with sizes computed at run time");
    if (mode === "cubic" && (cubic.cubic_coeff_a !== -0.75 || cubic.exclude_outside)) {
      unsupported("Resize cubic with sizes computed at run time and a non-default cubic_coeff_a or exclude_outside");
    }
    return [n.b.emit("resize_to", [x, asDType(sizesInput, "int64")], { mode, coordinate, nearest, axes })];
  }
  if (scalesInput?.kind === "runtime") unsupported("Resize with scales computed at run time");
  if (sizesInput && numel(shapeOf(sizesInput)) > 0) {
    const given = constInts(sizesInput, "Resize sizes");
    if (given.length !== axes.length) {
      throw new RangeError(`Resize has ${given.length} sizes for ${axes.length} axes`);
    }
    if (axes.some((axis) => shape[axis] < 0)) unsupported("Resize sizes over a dynamic dimension");
    // keep_aspect_ratio_policy: one scale for every axis, the smallest (not_larger) or the
    // largest (not_smaller) of the given ratios; each size is that scale times the input's,
    // rounded half to even as ONNX's reference rounds.
    const ratios = axes.map((axis, i) => given[i] / shape[axis]);
    const kept = policy === "not_larger" ? Math.min(...ratios) : Math.max(...ratios);
    axes.forEach((axis, i) => {
      sizes[axis] = policy === "stretch" ? given[i] : roundHalfEven(kept * shape[axis]);
      scales[axis] = policy === "stretch" ? ratios[i] : kept;
    });
  } else if (scaleValues && scaleValues.length > 0) {
    if (scaleValues.length !== axes.length) {
      throw new RangeError(`Resize has ${scaleValues.length} scales for ${axes.length} axes`);
    }
    axes.forEach((axis, i) => {
      scales[axis] = scaleValues[i];
      sizes[axis] = shape[axis] < 0 ? -1 : Math.floor(shape[axis] * scaleValues[i]);
    });
  } else {
    unsupported("Resize without scales or sizes");
  }
  return [n.b.emit("resize", [x], { mode, coordinate, nearest, sizes, scales, ...cubic })];
}

/** Rounds to the nearest integer, ties to even (numpy's round). */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction !== 0.5) return Math.round(value);
  return floor % 2 === 0 ? floor : floor + 1;
}

function clip(n: NodeContext): Value[] {
  let low: number | null = null;
  let high: number | null = null;
  if (n.opset < 11) {
    low = attrFloat(n, "min", -Infinity);
    high = attrFloat(n, "max", Infinity);
  } else {
    if (n.inputs[1]) low = valuesOf(fixedHost(n.inputs[1]) ?? unsupported("Clip min must be a constant"))[0];
    if (n.inputs[2]) high = valuesOf(fixedHost(n.inputs[2]) ?? unsupported("Clip max must be a constant"))[0];
  }
  const x = input(n, 0);
  if (low !== null && high !== null && low > high) low = high; // ONNX: min(max(x, low), high) is high everywhere.
  const dtype = x.kind === "runtime" ? x.dtype : spindleDType(typeOf(x))!;
  if (dtype === "float32") return [n.b.emit("clamp", [x], { min: low, max: high })];
  // Integers: max and min against the bounds, exactly (clamp is float32).
  const type = dtype === "int64" ? DATA_TYPE.INT64 : DATA_TYPE.INT32;
  let out = x;
  if (low !== null && Number.isFinite(low)) out = intBinary(n, "max", out, constValue(host(type, [], [low])), dtype);
  if (high !== null && Number.isFinite(high)) out = intBinary(n, "min", out, constValue(host(type, [], [high])), dtype);
  return [out];
}

/** CumSum and CumProd: one handler, the native op and the ONNX name as parameters. */
export function cumulative(op: "cum_sum" | "cum_prod", name: string): (n: NodeContext) => Value[] {
  return (n) => {
    const axis = constInts(n.inputs[1], `${name} axis`);
    if (axis.length !== 1) throw new RangeError(`${name}'s axis has ${axis.length} values; it takes one`);
    return [
      n.b.emit(op, [input(n, 0)], {
        dim: axis[0],
        exclusive: attrInt(n, "exclusive", 0) === 1,
        reverse: attrInt(n, "reverse", 0) === 1,
      }),
    ];
  };
}

// ----------------------------------------------------------------------------------------
// Recurrent layers

/**
 * The node's activations. ONNX lists alphas and betas only for the activations that take
 * them, in order; one direction's list serves both when bidirectional.
 */
function recurrentActivations(n: NodeContext, cell: "lstm" | "gru" | "rnn", directions: number) {
  const names = (attribute(n, "activations")?.strings ?? []).map((s) => decoder.decode(s));
  const alphas = [...(attribute(n, "activation_alpha")?.floats ?? [])];
  const betas = [...(attribute(n, "activation_beta")?.floats ?? [])];
  const activations = names.map((name): RecurrentActivation => {
    // LeakyRelu → leaky_relu.
    const kind = name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase() as RecurrentActivationKind;
    if (!RECURRENT_ACTIVATION_KINDS.includes(kind)) unsupported(`${n.node.opType} with the activation ${name}`);
    const defaults = RECURRENT_ACTIVATION_DEFAULTS[kind] ?? [];
    return {
      kind,
      alpha: defaults.length > 0 ? alphas.shift() : undefined,
      beta: defaults.length > 1 ? betas.shift() : undefined,
    };
  });
  return activationParams(n.node.opType, cell, directions, activations);
}

/**
 * LSTM, GRU and RNN as one native op each, whose output packs Y, Y_h and (LSTM) Y_c along
 * dim 0 (zig/src/ops.zig `Recurrent`); the outputs are views of it. Layout 1 (batch first)
 * is permuted to layout 0 around the op.
 */
function recurrent(cell: "lstm" | "gru" | "rnn"): Handler {
  return (n) => {
    const op = n.node.opType;
    const layout = attrInt(n, "layout", 0);
    if (layout !== 0 && layout !== 1) throw new RangeError(`${op}: layout ${layout}; it is 0 or 1`);
    const direction = attrString(n, "direction", "forward");
    if (direction !== "forward" && direction !== "reverse" && direction !== "bidirectional") {
      throw new RangeError(`${op}: direction '${direction}'; it is forward, reverse or bidirectional`);
    }
    const directions = direction === "bidirectional" ? 2 : 1;
    const batchFirst = (v: Value) => (layout === 1 ? n.b.emit("permute", [v], { dims: [1, 0, 2] }) : v);
    const inputs = [batchFirst(input(n, 0)), input(n, 1), input(n, 2)];
    const optional = (index: number, layoutDependent = false) => {
      const v = n.inputs[index];
      if (v === undefined) return false;
      inputs.push(layoutDependent ? batchFirst(v) : v);
      return true;
    };
    const hiddenSize = attribute(n, "hidden_size");
    const clip = attribute(n, "clip");
    const params = {
      direction,
      hidden_size: hiddenSize?.i === undefined ? null : Number(hiddenSize.i),
      clip: clip?.f === undefined ? null : clip.f,
      ...recurrentActivations(n, cell, directions),
      linear_before_reset: cell === "gru" && attrInt(n, "linear_before_reset", 0) !== 0,
      input_forget: cell === "lstm" && attrInt(n, "input_forget", 0) !== 0,
      has_bias: optional(3),
      has_sequence_lens: optional(4),
      has_initial_h: optional(5, true),
      has_initial_c: cell === "lstm" && optional(6, true),
      has_peepholes: cell === "lstm" && optional(7),
    } as const;
    const packed = n.b.emit(cell, inputs, params);
    const states = cell === "lstm" ? 2 : 1;
    const state = (index: number) => {
      const start = index - states;
      const row = n.b.emit("slice", [packed], start === -1 ? { dim: 0, start } : { dim: 0, start, end: start + 1 });
      const squeezed = n.b.emit("squeeze", [row], { dim: 0 });
      return layout === 1 ? n.b.emit("permute", [squeezed], { dims: [1, 0, 2] }) : squeezed;
    };
    const y = n.b.emit("slice", [packed], { dim: 0, start: 0, end: -states });
    const outputs = [layout === 1 ? n.b.emit("permute", [y], { dims: [2, 0, 1, 3] }) : y, state(0)];
    if (cell === "lstm") outputs.push(state(1));
    return outputs;
  };
}

function range(n: NodeContext): Value[] {
  const [start, limit, delta] = [0, 1, 2].map((i) => input(n, i));
  const dtype = spindleDType(typeOf(start)) ?? unsupported(`Range of ONNX element type ${typeOf(start)}`);
  // All constant: folds natively (emit runs it once), bounded like any folded constant.
  const inputs = [start, limit, delta].map((v) => asDType(v, dtype));
  const [first, end, step] = inputs.map((v) => fixedHost(v) && valuesOf(fixedHost(v)!)[0]);
  if (typeof first === "number" && typeof end === "number" && typeof step === "number" && step !== 0) {
    // Folding copies the values into JavaScript: bound them first, as other folds are.
    checkFoldedSize([Math.max(0, Math.ceil((end - first) / step))]);
  }
  // Bounds computed at run time (from sizes, or from a graph input's values, which are zeros
  // in import's eager runs): the length is dynamic.
  const runtime = inputs.some((v) => v.kind === "runtime");
  return [n.b.emit("range", inputs, {}, runtime ? { dtype } : undefined)];
}

/**
 * Dropout at inference (or in training with ratio 0, which drops nothing): the input, and
 * a mask of ones. Training with a nonzero ratio is random and unsupported.
 */
function dropout(n: NodeContext): Value[] {
  const x = input(n, 0);
  const training = n.inputs[2] && fixedHost(n.inputs[2]);
  const ratio = n.inputs[1]
    ? valuesOf(fixedHost(n.inputs[1]) ?? unsupported("Dropout's ratio must be a constant"))[0]
    : 0.5;
  if (training && valuesOf(training)[0] && ratio !== 0) unsupported("Dropout in training mode (it is random)");
  if (n.node.outputs.length < 2 || n.node.outputs[1] === "") return [x];
  const shape = shapeOf(x);
  if (shape.some((d) => d < 0)) unsupported("Dropout's mask of a dynamic shape");
  checkFoldedSize(shape);
  return [x, constValue(host(DATA_TYPE.BOOL, shape, new Array<number>(numel(shape)).fill(1)))];
}

function identity(n: NodeContext): Value[] {
  return [input(n, 0)];
}

/** Every ONNX op type import handles (default domain). */
export const HANDLERS: Record<string, Handler> = {
  Relu: unary("relu"),
  Sigmoid: unary("sigmoid"),
  Tanh: unary("tanh"),
  Exp: unary("exp"),
  Log: unary("log"),
  Sqrt: unary("sqrt"),
  Neg: (
    n,
  ) => (allConst(n.inputs)
    ? [hostPerRun([input(n, 0)], ([h]) => broadcastMap([h], h.type, (x) => -x))]
    : negate(n, input(n, 0))),
  Abs: unary("abs"),
  Erf: unary("erf"),
  Gelu: unary("gelu", (n) => ({ approximate: attrString(n, "approximate", "none") === "tanh" ? "tanh" : "none" })),
  Elu: unary("elu", (n) => ({ alpha: attrFloat(n, "alpha", 1) })),
  CumSum: cumulative("cum_sum", "CumSum"),
  LSTM: recurrent("lstm"),
  GRU: recurrent("gru"),
  RNN: recurrent("rnn"),
  LeakyRelu: unary("leaky_relu", (n) => ({ alpha: attrFloat(n, "alpha", 0.01) })),
  HardSigmoid: unary("hard_sigmoid", (n) => ({ alpha: attrFloat(n, "alpha", 0.2), beta: attrFloat(n, "beta", 0.5) })),
  HardSwish: unary("hard_swish"),
  Clip: clip,
  Add: binary,
  Sub: binary,
  Mul: binary,
  Div: binary,
  Pow: binary,
  Max: (
    n,
  ) => (n.inputs.length === 2
    ? binary(n)
    : n.inputs.length === 1
    ? [input(n, 0)]
    : unsupported("Max of more than 2 inputs")),
  Min: (
    n,
  ) => (n.inputs.length === 2
    ? binary(n)
    : n.inputs.length === 1
    ? [input(n, 0)]
    : unsupported("Min of more than 2 inputs")),
  Equal: compare("equal", (x, y) => x === y),
  Less: compare("less", (x, y) => x < y),
  Greater: compare("greater", (x, y) => x > y),
  LessOrEqual: compare("less_equal", (x, y) => x <= y),
  GreaterOrEqual: compare("greater_equal", (x, y) => x >= y),
  MatMul: matmul,
  Gemm: gemm,
  Softmax: softmax(false),
  LogSoftmax: softmax(true),
  LayerNormalization: layerNormalization,
  BatchNormalization: batchNormalization,
  ReduceMean: (n) => reduce(n),
  ReduceSum: (n) => reduce(n),
  ReduceMax: (n) => reduce(n),
  ReduceMin: (n) => reduce(n),
  GlobalAveragePool: globalPool("mean"),
  GlobalMaxPool: globalPool("max"),
  Conv: conv,
  ConvTranspose: convTranspose,
  MaxPool: pool(true),
  AveragePool: pool(false),
  Flatten: flatten,
  Reshape: reshape,
  Transpose: transpose,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Concat: concat,
  Slice: slice,
  Gather: gather,
  Shape: shape,
  Size: size,
  Constant: constant,
  ConstantOfShape: constantOfShape,
  Cast: cast,
  Pad: pad,
  Resize: resize,
  Upsample: resize,
  Identity: identity,
  Dropout: dropout,
  Where: where,
  Expand: expand,
  Range: range,
  ...COVERAGE_HANDLERS,
};

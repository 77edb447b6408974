/**
 * Quantized ONNX ops, as onnxruntime's quantization tools write them: the QDQ format
 * (QuantizeLinear/DequantizeLinear pairs around float ops), the QOperator format
 * (QLinearConv, QLinearMatMul, com.microsoft's QLinearAdd, QGemm, …) and dynamic
 * quantization (DynamicQuantizeLinear, MatMulInteger, ConvInteger).
 *
 * Quantized values ride as float32 tensors holding integers (zig/src/ops/quantized.zig says
 * why). Convolutions and matrix products with constant int8 weights become the native
 * integer ops `matmul_int8`/`conv2d_int8` (weights packed once, at import, by folding
 * `pack_int8`); in the QDQ format the pair DequantizeLinear(QuantizeLinear(x)) before a
 * Conv/MatMul/Gemm is fused into that op, which quantizes x on the fly. Everything else
 * (QLinearAdd, QLinearSigmoid, depthwise and grouped convolutions, …) runs as dequantize,
 * the float op, quantize.
 *
 * @module
 */
import { DATA_TYPE, type GraphProto } from "./proto.ts";
import { castValues, type Host, host, numel, spindleDType, valuesOf } from "./host.ts";
import { fixedHost, type GraphBuilder, type RuntimeValue, shapeOf, unsupported, type Value } from "./graph.ts";
import {
  attrInt,
  attrInts,
  checkPads,
  HANDLERS,
  hostPerRun,
  input,
  type NodeContext,
  spatialPads,
  symmetric,
  typeOf,
} from "./ops.ts";
import type { ParamsOf } from "../ops/dispatch.ts";

type Handler = (n: NodeContext) => (Value | undefined)[];

/** A quantized element type's range. */
interface QType {
  type: number;
  min: number;
  max: number;
}
const U8: QType = { type: DATA_TYPE.UINT8, min: 0, max: 255 };
const S8: QType = { type: DATA_TYPE.INT8, min: -128, max: 127 };
/** Biases of the QDQ format: DequantizeLinear of int32 (zero point 0). */
const I32: QType = { type: DATA_TYPE.INT32, min: -(2 ** 31), max: 2 ** 31 - 1 };

/** Constant quantization parameters: one scale (and zero point) per tensor or per channel. */
interface QParams {
  scales: number[];
  zeros: number[];
  qtype: QType;
  scale: Value;
  zero: Value;
}

/** What DequantizeLinear(QuantizeLinear(x)) of a runtime x came from: fusions read x itself. */
interface ActivationRecord {
  real: Value;
  params: QParams;
}
/** A DequantizeLinear of constant integers (weights): their values and parameters. */
interface WeightRecord {
  values: number[];
  shape: number[];
  params: QParams;
  axis: number;
}

const quantizedOf = new WeakMap<Value, ActivationRecord>();
/** Values that hold DequantizeLinear(QuantizeLinear(·)) already: a fused Q/DQ epilogue. */
const roundTripped = new WeakMap<Value, QParams>();
/** Per graph being built: the op types reading each value name ("" for a graph output). */
const consumersOf = new WeakMap<GraphBuilder, Map<string, string[]>>();

/** Records, before a graph's nodes are converted, which nodes read each value. */
export function indexConsumers(b: GraphBuilder, graph: GraphProto): void {
  const consumers = new Map<string, string[]>();
  const add = (name: string, opType: string) => consumers.set(name, [...(consumers.get(name) ?? []), opType]);
  for (const node of graph.nodes) for (const name of node.inputs) if (name !== "") add(name, node.opType);
  for (const output of graph.outputs) add(output.name, "");
  consumersOf.set(b, consumers);
}

/** Whether only DequantizeLinear nodes read this node's output 0 (no graph output either). */
function onlyDequantized(n: NodeContext): boolean {
  const readers = consumersOf.get(n.b)?.get(n.node.outputs[0]);
  return readers !== undefined && readers.length > 0 && readers.every((op) => op === "DequantizeLinear");
}
const dequantizedActivation = new WeakMap<Value, ActivationRecord>();
const dequantizedWeight = new WeakMap<Value, WeightRecord>();

function qtypeOf(type: number, what: string, int32 = false): QType {
  if (type === DATA_TYPE.UINT8) return U8;
  if (type === DATA_TYPE.INT8) return S8;
  if (int32 && type === DATA_TYPE.INT32) return I32;
  return unsupported(`${what} of ONNX element type ${type} (int8 and uint8 only)`);
}

/**
 * Reads scale and zero point constants, checking them: scales finite and > 0, zero points
 * integers in the type's range, as many zero points as scales.
 */
function qparams(n: NodeContext, scaleIndex: number, zeroIndex: number, fallbackType = U8): QParams {
  const op = n.node.opType;
  const scale = input(n, scaleIndex);
  const scaleHost = fixedHost(scale) ?? unsupported(`${op}: a scale computed at run time (input ${scaleIndex})`);
  const scales = valuesOf(scaleHost);
  scales.forEach((s, i) => {
    if (!(s > 0) || !Number.isFinite(s)) {
      throw new RangeError(`${op}: scale ${i} is ${s}; quantization scales must be finite and greater than 0`);
    }
  });
  const zero = n.inputs[zeroIndex];
  let zeros: number[];
  let qtype = fallbackType;
  let zeroValue: Value;
  if (zero === undefined) {
    const outputType = attrInt(n, "output_dtype", 0);
    if (outputType !== 0) qtype = qtypeOf(outputType, `${op}'s output_dtype`);
    zeros = scales.map(() => 0);
    zeroValue = { kind: "const", hosts: [host(DATA_TYPE.FLOAT, scaleHost.shape.slice(), zeros)] };
  } else {
    const zeroHost = fixedHost(zero) ?? unsupported(`${op}: a zero point computed at run time (input ${zeroIndex})`);
    qtype = qtypeOf(zeroHost.type, `${op}'s zero point`, op === "DequantizeLinear");
    zeros = valuesOf(zeroHost);
    if (zeros.length !== scales.length) {
      throw new RangeError(
        `${op}: ${scales.length} scales but ${zeros.length} zero points; give one zero point per scale`,
      );
    }
    zeros.forEach((z, i) => {
      if (!Number.isInteger(z) || z < qtype.min || z > qtype.max) {
        throw new RangeError(`${op}: zero point ${i} is ${z}, outside [${qtype.min}, ${qtype.max}]`);
      }
    });
    zeroValue = zero;
  }
  return { scales, zeros, qtype, scale, zero: zeroValue };
}

function checkBlockSize(n: NodeContext): void {
  if (attrInt(n, "block_size", 0) !== 0) unsupported(`${n.node.opType} with block_size (blocked quantization)`);
}

/**
 * A value as float32: graph inputs of u8/s8 type arrive as int32, and integer constants (a
 * baked-in input) keep their declared type.
 */
function asFloat(b: GraphBuilder, v: Value): Value {
  if (v.kind === "runtime") return v.dtype !== "float32" ? b.emit("cast", [v], { dtype: "float32" }) : v;
  if (spindleDType(typeOf(v)) === "float32") return v;
  return hostPerRun([v], ([h]) => host(DATA_TYPE.FLOAT, h.shape, castValues(valuesOf(h), DATA_TYPE.FLOAT)));
}

function quantize(b: GraphBuilder, x: Value, p: QParams, axis: number): Value {
  return b.emit("quantize_linear", [asFloat(b, x), p.scale, p.zero], { axis, qmin: p.qtype.min, qmax: p.qtype.max });
}
function dequantize(b: GraphBuilder, x: Value, p: QParams, axis: number): Value {
  return b.emit("dequantize_linear", [x, p.scale, p.zero], { axis, qmin: p.qtype.min, qmax: p.qtype.max });
}

function quantizeLinear(n: NodeContext): Value[] {
  checkBlockSize(n);
  const x = input(n, 0);
  const p = qparams(n, 1, 2);
  const axis = attrInt(n, "axis", 1);
  const fused = fuseOutput(n, x, p);
  if (fused !== undefined) return [fused];
  const out = quantize(n.b, x, p, axis);
  if (x.kind === "runtime" && p.scales.length === 1) quantizedOf.set(out, { real: x, params: p });
  return [out];
}

/**
 * A QDQ pair after an integer op (conv2d_int8/matmul_int8 → Q → DQ): the op requantizes and
 * dequantizes in its epilogue, and Q's output stands for both (only DequantizeLinear nodes
 * with the same parameters may read it, which `dequantizeLinear` checks).
 */
function fuseOutput(n: NodeContext, x: Value, p: QParams): Value | undefined {
  if (x.kind !== "runtime" || x.node === undefined || p.scales.length !== 1 || n.uses(x) !== 1) return undefined;
  if (x.node.op !== "conv2d_int8" && x.node.op !== "matmul_int8") return undefined;
  if (x.node.params?.requantize === true || !onlyDequantized(n)) return undefined;
  x.node.params = {
    ...x.node.params,
    ...outputParams({ scale: p.scales[0], zero: p.zeros[0], qtype: p.qtype, dequantize: true }),
  };
  roundTripped.set(x, p);
  return x;
}

function dequantizeLinear(n: NodeContext): Value[] {
  checkBlockSize(n);
  const x = input(n, 0);
  const done = roundTripped.get(x);
  if (done !== undefined) {
    const p = qparams(n, 1, 2, done.qtype);
    if (!sameParams(done, p)) unsupported("DequantizeLinear with other parameters than its QuantizeLinear");
    dequantizedActivation.set(x, { real: x, params: p });
    return [x];
  }
  const xHost = fixedHost(x);
  const p = qparams(n, 1, 2, xHost ? qtypeOf(xHost.type, "DequantizeLinear's input", true) : U8);
  const axis = attrInt(n, "axis", 1);
  const out = dequantize(n.b, x, p, axis);
  const pair = quantizedOf.get(x);
  if (pair !== undefined && sameParams(pair.params, p) && out.kind === "runtime" && out.node !== undefined) {
    // DQ(Q(real)) in one pass: this node becomes quantize_linear(real) with
    // dequantize_output (its eager runs, DQ of Q's, are the same values).
    out.node.op = "quantize_linear";
    out.node.inputs![0] = (pair.real as RuntimeValue).id;
    out.node.params = { ...out.node.params, dequantize_output: true };
  }
  if (xHost !== undefined && (xHost.type === DATA_TYPE.UINT8 || xHost.type === DATA_TYPE.INT8)) {
    const rank = xHost.shape.length;
    dequantizedWeight.set(out, {
      values: valuesOf(xHost),
      shape: xHost.shape,
      params: p,
      axis: axis < 0 ? axis + rank : axis,
    });
  }
  const record = quantizedOf.get(x);
  if (record !== undefined && sameParams(record.params, p)) dequantizedActivation.set(out, record);
  return [out];
}

function sameParams(a: QParams, b: QParams): boolean {
  return a.qtype === b.qtype && a.scales.length === b.scales.length && a.scales.every((s, i) => s === b.scales[i]) &&
    a.zeros.every((z, i) => z === b.zeros[i]);
}

function dynamicQuantizeLinear(n: NodeContext): Value[] {
  const x = asFloat(n.b, input(n, 0));
  const params = n.b.emit("dynamic_quantize", [x]);
  const scale = n.b.emit("reshape", [n.b.emit("slice", [params], { dim: 0, start: 0, end: 1 })], { shape: [] });
  const zero = n.b.emit("reshape", [n.b.emit("slice", [params], { dim: 0, start: 1, end: 2 })], { shape: [] });
  const q = n.b.emit("quantize_linear", [x, scale, zero], { axis: 1, qmin: 0, qmax: 255 });
  return [q, scale, zero];
}

// ----------------------------------------------------------------------------------------
// The integer GEMM ops.

/**
 * Weights for `matmul_int8`/`conv2d_int8`: [K, N] (or [N, K] when `transposed`) integers of
 * `qtype` with per-column (axis of N) or per-tensor scales and zero points, packed once.
 * Returns the packed constant and the info rows (scale, bias, zero point, column sum).
 */
function prepareWeights(
  b: GraphBuilder,
  values: number[],
  k: number,
  cols: number,
  transposed: boolean,
  qtype: QType,
  scales: number[],
  zeros: number[],
  bias: number[] | undefined,
): { packed: Value; info: Value } {
  // u8 weights become s8 by subtracting 128 from values and zero points alike.
  const shift = qtype === U8 ? 128 : 0;
  const stored = shift === 0 ? values : values.map((v) => v - shift);
  const colSum = new Array<number>(cols).fill(0);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < cols; j++) colSum[j] += stored[transposed ? j * k + i : i * cols + j];
  }
  const info: number[] = [];
  for (let j = 0; j < cols; j++) info.push(scales.length === 1 ? scales[0] : scales[j]);
  for (let j = 0; j < cols; j++) info.push(bias === undefined ? 0 : bias[j]);
  for (let j = 0; j < cols; j++) info.push((zeros.length === 1 ? zeros[0] : zeros[j]) - shift);
  info.push(...colSum);
  const weights: Value = { kind: "const", hosts: [host(DATA_TYPE.INT32, [stored.length], stored)] };
  const packed = b.emit("pack_int8", [weights], { k, n: cols, transposed });
  return { packed, info: { kind: "const", hosts: [host(DATA_TYPE.FLOAT, [4, cols], info)] } };
}

function scalarConst(value: number): Value {
  return { kind: "const", hosts: [host(DATA_TYPE.FLOAT, [1], [value])] };
}

/** How A reaches the integer op: reals to quantize (with constant or runtime parameters) or integers. */
interface Activation {
  a: Value;
  /**
   * The value the graph reads instead of `a` (a QDQ pair's real input x, whose eager tensors
   * import has freed by then; `a` is the pair's output, equal to x after quantization).
   */
  source?: RuntimeValue;
  integer: boolean;
  qtype: QType;
  scale: Value;
  zero: Value;
}

/** An output requantization: to integers (QOperator) or back to reals (a fused Q/DQ pair). */
interface Output {
  scale: number;
  zero: number;
  qtype: QType;
  dequantize: boolean;
}

function outputParams(out: Output | undefined): Partial<ParamsOf<"matmul_int8">> {
  if (out === undefined) return {};
  return {
    requantize: true,
    dequantize_output: out.dequantize,
    out_scale: out.scale,
    out_zero: out.zero,
    out_min: out.qtype.min,
    out_max: out.qtype.max,
  };
}

function activationParams(act: Activation): Partial<ParamsOf<"matmul_int8">> {
  return { a_integer: act.integer, a_min: act.qtype.min, a_max: act.qtype.max };
}

/** A [..., K] × weights [K, N] → [..., N]. */
function emitMatmul(
  b: GraphBuilder,
  act: Activation,
  weights: { packed: Value; info: Value },
  k: number,
  cols: number,
  out?: Output,
): Value {
  const a = asFloat(b, act.a);
  const result = b.emit("matmul_int8", [a, weights.packed, weights.info, act.scale, act.zero], {
    n: cols,
    k,
    ...activationParams(act),
    ...outputParams(out),
  });
  rewire(result, a, act.source);
  return result;
}

/** Makes the node of `value` read `to` where it read `from` (graph only: eager runs stay). */
function rewire(value: Value, from: Value, to: RuntimeValue | undefined): void {
  if (to === undefined || from.kind !== "runtime" || value.kind !== "runtime" || value.node === undefined) return;
  value.node.inputs = value.node.inputs!.map((id) => (id === from.id ? to.id : id));
}

/** The per-column scales of weights quantized along `axis`, when that axis is the output's. */
function columnScales(record: WeightRecord, columnAxis: number): boolean {
  return record.params.scales.length === 1 || record.axis === columnAxis;
}

/** A fused QDQ MatMul: DQ(Q(x)) × DQ(W const), W 2-D. Undefined when the pattern does not hold. */
function fusedMatmul(n: NodeContext, aValue: Value, bValue: Value, bias?: number[], transB = false): Value | undefined {
  const act = dequantizedActivation.get(aValue);
  const w = dequantizedWeight.get(bValue);
  if (act === undefined || w === undefined || w.shape.length !== 2) return undefined;
  if (shapeOf(aValue).length < 1 || act.real.kind !== "runtime") return undefined;
  if (!columnScales(w, transB ? 0 : 1)) return undefined;
  const [k, cols] = transB ? [w.shape[1], w.shape[0]] : w.shape;
  if (shapeOf(aValue).at(-1) !== k) return undefined;
  const weights = prepareWeights(n.b, w.values, k, cols, transB, w.params.qtype, w.params.scales, w.params.zeros, bias);
  const p = act.params;
  const source = act.real as RuntimeValue;
  return emitMatmul(
    n.b,
    { a: aValue, source, integer: false, qtype: p.qtype, scale: p.scale, zero: p.zero },
    weights,
    k,
    cols,
  );
}

function biasValues(v: Value | undefined, count: number): number[] | undefined | null {
  if (v === undefined) return undefined;
  const h = fixedHost(v);
  if (h === undefined || numel(h.shape) !== count) return null;
  return valuesOf(h);
}

/** MatMul: fused when it is a QDQ MatMul, else the float handler. */
function matmul(n: NodeContext): (Value | undefined)[] {
  return [fusedMatmul(n, input(n, 0), input(n, 1)) ?? HANDLERS.MatMul(n)[0]];
}

/** Gemm (alpha = beta = 1, no transA): fused when its operands are a QDQ pair and DQ weights. */
function gemm(n: NodeContext): (Value | undefined)[] {
  const plain = attrInt(n, "transA", 0) === 0 && (n.node.attributes.find((a) => a.name === "alpha")?.f ?? 1) === 1 &&
    (n.node.attributes.find((a) => a.name === "beta")?.f ?? 1) === 1;
  const transB = attrInt(n, "transB", 0) !== 0;
  const w = dequantizedWeight.get(input(n, 1));
  const cols = w === undefined ? 0 : transB ? w.shape[0] : w.shape[1];
  const bias = biasValues(n.inputs[2], cols);
  if (plain && bias !== null && shapeOf(input(n, 0)).length === 2) {
    const fused = fusedMatmul(n, input(n, 0), input(n, 1), bias, transB);
    if (fused !== undefined) return [fused];
  }
  return HANDLERS.Gemm(n);
}

/** Conv geometry of a node over a 4-D x with weights [C_out, C_in, kh, kw]. */
function convGeometry(n: NodeContext, x: Value, weightShape: number[]) {
  const kernel = weightShape.slice(2);
  const stride = attrInts(n, "strides") ?? [1, 1];
  const dilation = attrInts(n, "dilations") ?? [1, 1];
  const pads = spatialPads(n, x, kernel, stride, dilation);
  checkPads(n, x, pads, kernel, dilation, false);
  return { kernel, stride, dilation, pads, group: attrInt(n, "group", 1) };
}

/**
 * conv2d_int8 of `act` with integer weights (C_out, C_in, kh, kw; per-output-channel or
 * per-tensor parameters), groups 1, 4-D x. Undefined when that does not hold.
 */
function emitConv(
  n: NodeContext,
  act: Activation,
  w: { values: number[]; shape: number[]; qtype: QType; scales: number[]; zeros: number[] },
  bias: number[] | undefined,
  out?: Output,
): Value | undefined {
  if (shapeOf(act.a).length !== 4 || w.shape.length !== 4) return undefined;
  const g = convGeometry(n, act.a, w.shape);
  if (g.group !== 1 || w.shape[1] !== shapeOf(act.a)[1]) return undefined;
  const cols = w.shape[0];
  const k = w.shape[1] * w.shape[2] * w.shape[3];
  const asymmetric = g.pads[0] !== g.pads[2] || g.pads[1] !== g.pads[3];
  const zeroHost = fixedHost(act.zero);
  // Padding reads as a real 0, which quantizes to the zero point; integer inputs pad with it.
  if (asymmetric && act.integer && zeroHost === undefined) return undefined;
  const padValue = act.integer && asymmetric ? valuesOf(zeroHost!)[0] : 0;
  const a = asFloat(n.b, act.a);
  const padded = symmetric(n, a, g.pads, padValue);
  rewire(padded.x, a, act.source);
  const weights = prepareWeights(n.b, tapMajor(w.values, w.shape), k, cols, true, w.qtype, w.scales, w.zeros, bias);
  const result = n.b.emit("conv2d_int8", [padded.x, weights.packed, weights.info, act.scale, act.zero], {
    n: cols,
    k,
    ...activationParams(act),
    ...outputParams(out),
    kernel: [g.kernel[0], g.kernel[1]],
    stride: [g.stride[0], g.stride[1]],
    padding: [padded.pads[0], padded.pads[1]],
    dilation: [g.dilation[0], g.dilation[1]],
  });
  if (padded.x === a) rewire(result, a, act.source);
  return result;
}

/** ONNX conv weights [C_out, C_in, kh, kw] in conv2d_int8's order [C_out, kh, kw, C_in]. */
function tapMajor(values: number[], shape: number[]): number[] {
  const [cols, channels, kh, kw] = shape;
  const taps = kh * kw;
  const out = new Array<number>(values.length);
  for (let o = 0; o < cols; o++) {
    for (let c = 0; c < channels; c++) {
      for (let t = 0; t < taps; t++) out[(o * taps + t) * channels + c] = values[(o * channels + c) * taps + t];
    }
  }
  return out;
}

/** Conv: fused when x is a QDQ pair and the weights DQ of integers (per output channel). */
function conv(n: NodeContext): (Value | undefined)[] {
  const x = input(n, 0);
  const act = dequantizedActivation.get(x);
  const w = dequantizedWeight.get(input(n, 1));
  if (act !== undefined && w !== undefined && act.real.kind === "runtime" && columnScales(w, 0)) {
    const bias = biasValues(n.inputs[2], w.shape[0]);
    if (bias !== null) {
      const p = act.params;
      const fused = emitConv(
        n,
        { a: x, source: act.real as RuntimeValue, integer: false, qtype: p.qtype, scale: p.scale, zero: p.zero },
        { values: w.values, shape: w.shape, qtype: w.params.qtype, scales: w.params.scales, zeros: w.params.zeros },
        bias,
      );
      if (fused !== undefined) return [fused];
    }
  }
  return HANDLERS.Conv(n);
}

/** Constant integer weights of a QOperator node's input. */
function weightInput(n: NodeContext, index: number, what: string): Host {
  const h = fixedHost(input(n, index)) ?? unsupported(`${n.node.opType}: ${what} computed at run time`);
  qtypeOf(h.type, `${n.node.opType}'s ${what}`);
  return h;
}

/** Runs float handler `opType` on the given inputs, as a node with this node's attributes. */
function floatOp(n: NodeContext, opType: string, inputs: (Value | undefined)[]): Value[] {
  const node = { ...n.node, opType, domain: "", inputs: inputs.map((_, i) => `${n.node.name}:${i}`) };
  return HANDLERS[opType]({ ...n, node, inputs }) as Value[];
}

/** Integer weights dequantized to a float constant (for the float fallbacks). */
function dequantizedConst(b: GraphBuilder, w: Host, p: QParams, axis: number): Value {
  return dequantize(b, { kind: "const", hosts: [w] }, p, axis);
}

/** Integer bias (scale = x_scale · w_scale[c]) as reals. */
function realBias(
  n: NodeContext,
  index: number,
  xScale: number,
  wScales: number[],
  cols: number,
): number[] | undefined {
  const v = n.inputs[index];
  if (v === undefined) return undefined;
  const values = valuesOf(fixedHost(v) ?? unsupported(`${n.node.opType}: a bias computed at run time`));
  if (values.length !== cols) {
    throw new RangeError(`${n.node.opType}: ${values.length} bias values for ${cols} output channels`);
  }
  return values.map((value, c) => value * xScale * (wScales.length === 1 ? wScales[0] : wScales[c]));
}

function checkPerChannel(n: NodeContext, p: QParams, channels: number, what: string): void {
  if (p.scales.length !== 1 && p.scales.length !== channels) {
    throw new RangeError(`${n.node.opType}: ${p.scales.length} ${what} scales for ${channels} output channels`);
  }
}

/** QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B?): integers in, integers out. */
function qlinearConv(n: NodeContext): Value[] {
  const x = input(n, 0);
  const xp = qparams(n, 1, 2);
  const w = weightInput(n, 3, "weights");
  const wp = qparams(n, 4, 5, qtypeOf(w.type, "weights"));
  const yp = qparams(n, 6, 7);
  if (xp.scales.length !== 1 || yp.scales.length !== 1) {
    unsupported(`${n.node.opType} with per-channel activation scales`);
  }
  checkPerChannel(n, wp, w.shape[0], "weight");
  const bias = realBias(n, 8, xp.scales[0], wp.scales, w.shape[0]);
  const act: Activation = { a: x, integer: true, qtype: xp.qtype, scale: xp.scale, zero: xp.zero };
  const out: Output = { scale: yp.scales[0], zero: yp.zeros[0], qtype: yp.qtype, dequantize: false };
  const fused = emitConv(
    n,
    act,
    { values: valuesOf(w), shape: w.shape, qtype: wp.qtype, scales: wp.scales, zeros: wp.zeros },
    bias,
    out,
  );
  if (fused !== undefined) return [fused];
  // Grouped (depthwise) or non-2-D: dequantize, convolve in float, quantize.
  const xf = dequantize(n.b, asFloat(n.b, x), xp, 1);
  const wf = dequantizedConst(n.b, w, wp, 0);
  const bf = bias === undefined
    ? undefined
    : { kind: "const" as const, hosts: [host(DATA_TYPE.FLOAT, [bias.length], bias)] };
  return [quantize(n.b, floatOp(n, "Conv", [xf, wf, bf])[0], yp, 1)];
}

/** ConvInteger(x, w, xz?, wz?): integer sums. */
function convInteger(n: NodeContext): Value[] {
  const x = input(n, 0);
  const w = weightInput(n, 1, "weights");
  const zero = n.inputs[2];
  const xType = zero !== undefined ? qtypeOf(fixedHost(zero)?.type ?? DATA_TYPE.UINT8, "x's zero point") : U8;
  const wZeros = n.inputs[3] === undefined ? [0] : valuesOf(weightInput(n, 3, "weight zero point"));
  checkPerChannel(n, { scales: wZeros } as QParams, w.shape[0], "weight zero point");
  const weights = {
    values: valuesOf(w),
    shape: w.shape,
    qtype: qtypeOf(w.type, "weights"),
    scales: [1],
    zeros: wZeros,
  };
  const act: Activation = { a: x, integer: true, qtype: xType, scale: scalarConst(1), zero: zero ?? scalarConst(0) };
  const fused = emitConv(n, act, weights, undefined);
  if (fused !== undefined) return [fused];
  const xf = n.b.emit("dequantize_linear", [asFloat(n.b, x), scalarConst(1), act.zero], {
    qmin: xType.min,
    qmax: xType.max,
  });
  const wf: Value = {
    kind: "const",
    hosts: [
      host(
        DATA_TYPE.FLOAT,
        w.shape,
        weights.values.map((v, i) =>
          v - (wZeros.length === 1 ? wZeros[0] : wZeros[Math.floor(i / (weights.values.length / w.shape[0]))])
        ),
      ),
    ],
  };
  return floatOp(n, "Conv", [xf, wf]);
}

/** MatMulInteger(a, b, az?, bz?) with constant 2-D b: integer sums. */
function matmulInteger(n: NodeContext): Value[] {
  const a = input(n, 0);
  const b = weightInput(n, 1, "b");
  if (b.shape.length !== 2) unsupported("MatMulInteger with a b of other than 2 dimensions");
  const [k, cols] = b.shape;
  const zero = n.inputs[2];
  const aType = zero !== undefined ? qtypeOf(fixedHost(zero)?.type ?? DATA_TYPE.UINT8, "a's zero point") : U8;
  const bZeros = n.inputs[3] === undefined ? [0] : valuesOf(weightInput(n, 3, "b's zero point"));
  if (bZeros.length !== 1 && bZeros.length !== cols) {
    throw new RangeError(`MatMulInteger: ${bZeros.length} zero points of b for ${cols} columns`);
  }
  const weights = prepareWeights(n.b, valuesOf(b), k, cols, false, qtypeOf(b.type, "b"), [1], bZeros, undefined);
  const act: Activation = { a, integer: true, qtype: aType, scale: scalarConst(1), zero: zero ?? scalarConst(0) };
  return [emitMatmul(n.b, act, weights, k, cols)];
}

/** QLinearMatMul(a, as, az, b, bs, bz, ys, yz) with constant 2-D b. */
function qlinearMatmul(n: NodeContext): Value[] {
  const a = input(n, 0);
  const ap = qparams(n, 1, 2);
  if (fixedHost(input(n, 3)) === undefined || shapeOf(input(n, 3)).length !== 2) {
    // Both operands computed (attention): dequantize, multiply in float, quantize.
    return qlinear("MatMul", [0, 3], [6, 7])(n) as Value[];
  }
  const b = weightInput(n, 3, "b");
  const bp = qparams(n, 4, 5, qtypeOf(b.type, "b"));
  const yp = qparams(n, 6, 7);
  if (b.shape.length !== 2) unsupported("QLinearMatMul with a b of other than 2 dimensions");
  if (ap.scales.length !== 1 || yp.scales.length !== 1) unsupported("QLinearMatMul with per-row scales of a or y");
  const [k, cols] = b.shape;
  if (bp.scales.length !== 1 && bp.scales.length !== cols) {
    throw new RangeError(`QLinearMatMul: ${bp.scales.length} scales of b for ${cols} columns`);
  }
  const weights = prepareWeights(n.b, valuesOf(b), k, cols, false, bp.qtype, bp.scales, bp.zeros, undefined);
  const act: Activation = { a, integer: true, qtype: ap.qtype, scale: ap.scale, zero: ap.zero };
  return [
    emitMatmul(n.b, act, weights, k, cols, {
      scale: yp.scales[0],
      zero: yp.zeros[0],
      qtype: yp.qtype,
      dequantize: false,
    }),
  ];
}

/** com.microsoft QGemm(A, as, az, B, bs, bz, C?, ys?, yz?): y quantized when ys is given. */
function qgemm(n: NodeContext): Value[] {
  const a = input(n, 0);
  const ap = qparams(n, 1, 2);
  const b = weightInput(n, 3, "B");
  const bp = qparams(n, 4, 5, qtypeOf(b.type, "B"));
  const transB = attrInt(n, "transB", 0) !== 0;
  if (attrInt(n, "transA", 0) !== 0) unsupported("QGemm with transA");
  if ((n.node.attributes.find((x) => x.name === "alpha")?.f ?? 1) !== 1) unsupported("QGemm with alpha other than 1");
  const [k, cols] = transB ? [b.shape[1], b.shape[0]] : b.shape;
  const bias = realBias(n, 6, ap.scales[0], bp.scales, cols);
  const weights = prepareWeights(n.b, valuesOf(b), k, cols, transB, bp.qtype, bp.scales, bp.zeros, bias);
  const act: Activation = { a, integer: true, qtype: ap.qtype, scale: ap.scale, zero: ap.zero };
  let out: Output | undefined;
  if (n.inputs[7] !== undefined) {
    const yp = qparams(n, 7, 8);
    out = { scale: yp.scales[0], zero: yp.zeros[0], qtype: yp.qtype, dequantize: false };
  }
  return [emitMatmul(n.b, act, weights, k, cols, out)];
}

/**
 * A com.microsoft QLinear op over `floatType`: the quantized inputs at `operands` (each
 * followed by its scale and zero point) are dequantized, the float op runs, and its output
 * is quantized with the parameters at `output`.
 */
function qlinear(floatType: string, operands: number[], output: [number, number]): Handler {
  return (n) => {
    const reals = operands.map((i) => dequantize(n.b, asFloat(n.b, input(n, i)), qparams(n, i + 1, i + 2), 1));
    const y = floatOp(n, floatType, reals)[0];
    return [quantize(n.b, y, qparams(n, output[0], output[1]), 1)];
  };
}

/** com.microsoft QLinearConcat(ys, yz, x0, s0, z0, x1, s1, z1, …). */
function qlinearConcat(n: NodeContext): Value[] {
  const operands: number[] = [];
  for (let i = 2; i + 2 < n.inputs.length; i += 3) operands.push(i);
  return qlinear("Concat", operands, [0, 1])(n) as Value[];
}

/** QLinearGlobalAveragePool with channels_last = 0 only. */
function qlinearGlobalAveragePool(n: NodeContext): Value[] {
  if (attrInt(n, "channels_last", 0) !== 0) unsupported("QLinearGlobalAveragePool with channels_last");
  return qlinear("GlobalAveragePool", [0], [3, 4])(n) as Value[];
}

/** Handlers of the default domain's quantized ops, and of MatMul/Gemm/Conv for QDQ fusion. */
export const QUANTIZED_HANDLERS: Record<string, Handler> = {
  QuantizeLinear: quantizeLinear,
  DequantizeLinear: dequantizeLinear,
  DynamicQuantizeLinear: dynamicQuantizeLinear,
  MatMulInteger: matmulInteger,
  QLinearMatMul: qlinearMatmul,
  ConvInteger: convInteger,
  QLinearConv: qlinearConv,
  MatMul: matmul,
  Gemm: gemm,
  Conv: conv,
};

/** com.microsoft's quantized ops (onnxruntime's QOperator format writes them). */
export const MICROSOFT_HANDLERS: Record<string, Handler> = {
  QLinearAdd: qlinear("Add", [0, 3], [6, 7]),
  QLinearMul: qlinear("Mul", [0, 3], [6, 7]),
  QLinearSigmoid: qlinear("Sigmoid", [0], [3, 4]),
  QLinearLeakyRelu: qlinear("LeakyRelu", [0], [3, 4]),
  QLinearSoftmax: qlinear("Softmax", [0], [3, 4]),
  QLinearAveragePool: qlinear("AveragePool", [0], [3, 4]),
  QLinearGlobalAveragePool: qlinearGlobalAveragePool,
  QLinearConcat: qlinearConcat,
  QGemm: qgemm,
  DynamicQuantizeLinear: dynamicQuantizeLinear,
  QuantizeLinear: quantizeLinear,
  DequantizeLinear: dequantizeLinear,
};

/** The handler of a node: quantized ops and QDQ fusions first, by domain. */
export function quantizedHandler(domain: string, opType: string): Handler | undefined {
  const table = domain === "com.microsoft" ? MICROSOFT_HANDLERS : domain === "" ? QUANTIZED_HANDLERS : {};
  return Object.hasOwn(table, opType) ? table[opType] : undefined;
}

/**
 * One fusion for quantized (QDQ) models, run after `fuse`: the chains of elementwise ops
 * between two quantized convolutions become one `quantized_pointwise` node.
 *
 * onnxruntime's QDQ format puts a QuantizeLinear/DequantizeLinear pair after every op, so
 * PaddleOCR det's `conv → ·scale → +bias → hard_swish (as +3, ·x, /6) → ·scale → +bias`
 * imports as nine passes over memory (five float ops, each followed by a QDQ round trip,
 * which import already made one `quantize_linear` with `dequantize_output`): two thirds of
 * det's int8 time. The fused node runs the same steps, in the same order and with the same
 * float operations (zig/src/ops/quantized.zig's `pointwise`), on a piece of each channel
 * while it is in cache, so it computes exactly what the nodes did one by one.
 *
 * A chain grows only through values with no other reader; a step may read the chain's input
 * again (HardSwish's `x · clip(x + 3)`), so such an x, read twice, starts a new chain.
 *
 * An Add or Mul of another run-time tensor, of the chain's shape or one value per plane (det's
 * residual adds and squeeze-excitation gates, each between two round trips), joins a chain as
 * an operand step; the node then reads that tensor too (at most two), and does not fold into
 * a conv's epilogue.
 * A batch_norm with constant statistics joins as a per-channel multiply-add.
 *
 * @module
 */
import type { GraphDescription, NodeDescription, ParamValue, ProgramSource } from "../program/format.ts";
import { Index } from "./fuse.ts";
import { opSchema } from "../ops/dispatch.ts";

/** The step codes of zig/src/ops/quantized.zig's `PointwiseStep`. */
const STEP = {
  round_trip: 0,
  add: 1,
  sub: 2,
  sub_from: 3,
  mul: 4,
  div: 5,
  div_into: 6,
  add_channel: 7,
  sub_channel: 8,
  sub_from_channel: 9,
  mul_channel: 10,
  div_channel: 11,
  div_into_channel: 12,
  add_root: 13,
  mul_root: 14,
  set_root: 15,
  quantize: 16,
  dequantize: 17,
  add_operand: 18,
  mul_operand: 19,
  affine_channel: 20,
} as const;
/** The most run-time tensors one node reads besides its root (quantized_pointwise's `a`, `b`). */
const MAX_OPERANDS = 2;
/** Values per step record. */
const STEP_LEN = 5;
/** The most steps one node takes (the op's bound). */
const MAX_STEPS = 1024;

interface Chain {
  /** The value the chain starts from (the node's `x`). */
  root: number;
  /** Channels of the root (axis 1 of its static 4-D shape), 0 when not 4-D. */
  channels: number;
  /** A step's `operand` is the run-time value it reads (record[1] becomes its input slot). */
  steps: { record: number[]; table?: Float32Array; operand?: number }[];
  members: NodeDescription[];
  roundTrips: number;
  /** Taken into the chain before it (`mergeShared`). */
  merged?: boolean;
}

/**
 * Joins chain B to the chain A that makes B's root when B's steps are all that read it
 * (HardSwish's x, read by x + 3 and by x · clip(…)): A's steps, `set_root`, B's steps.
 */
function mergeShared(index: Index, chains: Chain[]): void {
  const byLast = new Map<number, Chain>();
  for (const chain of chains) {
    const owner = byLast.get(chain.root);
    const reads = chain.members.reduce((n, m) => n + (m.inputs ?? []).filter((v) => v === chain.root).length, 0);
    if (
      owner !== undefined && reads === index.readers.get(chain.root) &&
      owner.steps.length + chain.steps.length < MAX_STEPS
    ) {
      owner.steps.push({ record: [STEP.set_root, 0, 0, 0, 0] }, ...chain.steps);
      owner.members.push(...chain.members);
      owner.roundTrips += chain.roundTrips;
      chain.merged = true;
      byLast.delete(chain.root);
      byLast.set(chain.members.at(-1)!.outputs[0], owner);
    } else {
      byLast.set(chain.members.at(-1)!.outputs[0], chain);
    }
  }
}

function param(node: NodeDescription, name: string): ParamValue | undefined {
  const given = node.params?.[name];
  if (given !== undefined) return given;
  return opSchema(node.op).params.find((p) => p.name === name)?.default as ParamValue | undefined;
}

/** A float32 or int32 constant's values and shape. */
function constantOf(
  source: ProgramSource,
  index: Index,
  value: number,
): { data: number[]; shape: number[] } | undefined {
  const node = index.producer.get(value);
  if (node?.op !== "constant" || node.tensor === undefined) return undefined;
  const t = source.tensors[node.tensor];
  const bytes = t.data.slice().buffer;
  if (t.dtype === "float32") return { data: [...new Float32Array(bytes)], shape: t.shape.slice() };
  if (t.dtype === "int32") return { data: [...new Int32Array(bytes)], shape: t.shape.slice() };
  return undefined;
}

const SCALAR_CODES: Record<string, [number, number]> = {
  add: [STEP.add, STEP.add],
  sub: [STEP.sub, STEP.sub_from],
  mul: [STEP.mul, STEP.mul],
  div: [STEP.div, STEP.div_into],
};
const CHANNEL_CODES: Record<string, [number, number]> = {
  add: [STEP.add_channel, STEP.add_channel],
  sub: [STEP.sub_channel, STEP.sub_from_channel],
  mul: [STEP.mul_channel, STEP.mul_channel],
  div: [STEP.div_channel, STEP.div_into_channel],
};

/**
 * The step `node` applies to chain value `x` (the chain's root being `root`, channels
 * `channels`), or undefined when it is not an elementwise step of this kind. `operandFits`
 * says whether a run-time value may be an Add's or Mul's other operand (x's shape, or one
 * value per plane: det's residual adds and squeeze-excitation gates).
 */
function stepOf(
  source: ProgramSource,
  index: Index,
  node: NodeDescription,
  x: number,
  root: number | undefined,
  channels: number,
  operandFits: (value: number) => boolean,
): { record: number[]; table?: Float32Array; roundTrip?: boolean; operand?: number } | undefined {
  const inputs = node.inputs ?? [];
  if (node.outputs.length !== 1 || inputs[0] === undefined) return undefined;
  if (node.op === "quantize_linear" || node.op === "dequantize_linear") {
    if (inputs[0] !== x || inputs.length < 2) return undefined;
    const scale = constantOf(source, index, inputs[1]);
    const zero = inputs.length > 2 ? constantOf(source, index, inputs[2]) : { data: [0], shape: [] };
    if (scale?.data.length !== 1 || zero?.data.length !== 1) return undefined;
    const qmin = param(node, "qmin") as number;
    const qmax = param(node, "qmax") as number;
    // QOperator ops run as dequantize, the float op, quantize (lib/onnx/quantized.ts).
    const code = node.op === "dequantize_linear"
      ? STEP.dequantize
      : param(node, "dequantize_output") === true
      ? STEP.round_trip
      : STEP.quantize;
    return { record: [code, scale.data[0], zero.data[0], qmin, qmax], roundTrip: code !== STEP.dequantize };
  }
  if (node.op === "batch_norm") return batchNormStep(source, index, node, x, channels);
  const codes = SCALAR_CODES[node.op];
  if (codes === undefined) return undefined;
  if (inputs.length === 1) {
    const scalar = param(node, "scalar");
    if (inputs[0] !== x || typeof scalar !== "number") return undefined;
    return { record: [codes[param(node, "scalar_first") === true ? 1 : 0], scalar, 0, 0, 0] };
  }
  if (inputs.length !== 2) return undefined;
  const position = inputs[0] === x ? 0 : inputs[1] === x ? 1 : -1;
  if (position < 0 || inputs[0] === inputs[1]) return undefined;
  const other = inputs[1 - position];
  if (other === root && (node.op === "add" || node.op === "mul")) {
    return { record: [node.op === "add" ? STEP.add_root : STEP.mul_root, 0, 0, 0, 0] };
  }
  const constant = constantOf(source, index, other);
  if (constant === undefined) {
    if ((node.op !== "add" && node.op !== "mul") || index.producer.get(other)?.op === "constant") return undefined;
    if (!operandFits(other)) return undefined;
    // acc + y and acc · y: float addition and multiplication commute exactly.
    return { record: [node.op === "add" ? STEP.add_operand : STEP.mul_operand, 0, 0, 0, 0], operand: other };
  }
  const first = position === 1 ? 1 : 0;
  if (constant.data.length === 1 && constant.shape.length <= 4) {
    return { record: [codes[first], constant.data[0], 0, 0, 0] };
  }
  const perChannel = channels > 0 && constant.data.length === channels &&
    (constant.shape.length === 3 || (constant.shape.length === 4 && constant.shape[0] === 1)) &&
    constant.shape.at(-3) === channels && constant.shape.at(-1) === 1 && constant.shape.at(-2) === 1;
  if (!perChannel) return undefined;
  return { record: [CHANNEL_CODES[node.op][first], 0, 0, 0, 0], table: new Float32Array(constant.data) };
}

/**
 * batch_norm of x with constant statistics (det's head, between a chain and a round trip) as
 * an affine_channel step: the scales and shifts its kernel computes in float32
 * (zig/src/ops/normalization.zig), which the step applies as the kernel does, with one
 * multiply-add per value.
 */
function batchNormStep(
  source: ProgramSource,
  index: Index,
  node: NodeDescription,
  x: number,
  channels: number,
): { record: number[]; table: Float32Array } | undefined {
  const inputs = node.inputs ?? [];
  const hasWeight = param(node, "has_weight") === true;
  const hasBias = param(node, "has_bias") === true;
  if (inputs[0] !== x || channels <= 0 || inputs.length !== 3 + Number(hasWeight) + Number(hasBias)) return undefined;
  const [mean, variance] = [inputs[1], inputs[2]].map((v) => constantOf(source, index, v));
  const weight = hasWeight ? constantOf(source, index, inputs[3]) : undefined;
  const bias = hasBias ? constantOf(source, index, inputs.at(-1)!) : undefined;
  const fits = (c: { data: number[]; shape: number[] } | undefined) =>
    c?.shape.length === 1 && c.data.length === channels;
  if (!fits(mean) || !fits(variance) || (hasWeight && !fits(weight)) || (hasBias && !fits(bias))) return undefined;
  const f = Math.fround;
  const eps = f(param(node, "eps") as number);
  const table = new Float32Array(2 * channels);
  for (let c = 0; c < channels; c++) {
    const inverse = f(1 / f(Math.sqrt(f(variance!.data[c] + eps))));
    const scale = f(inverse * (weight?.data[c] ?? 1));
    table[c] = scale;
    table[channels + c] = f((bias?.data[c] ?? 0) - f(mean!.data[c] * scale));
  }
  return { record: [STEP.affine_channel, 0, 0, 0, 0], table };
}

/**
 * Fuses chains of elementwise steps with at least one QDQ round trip in graph 0 of `source`
 * (in place). `spec` gives the dtype and shape of a value where known.
 *
 * @returns How many chains were fused.
 */
export function fuseQuantizedChains(
  source: ProgramSource,
  spec: (value: number) => { dtype: string; shape: readonly number[] } | undefined,
): number {
  // float32 values only: a graph input of u8 arrives as int32, which dequantize_linear reads.
  const shape = (value: number) => spec(value)?.dtype === "float32" ? spec(value)?.shape : undefined;
  const graph = source.graphs[0];
  if (!graph.nodes.some((node) => node.op === "quantize_linear")) return 0;
  mergeDequantizes(source, graph);
  foldDequantizes(source, graph);
  dropRepeatedRoundTrips(source, graph);
  const index = new Index(graph);
  const byOutput = new Map<number, Chain>();
  const chains: Chain[] = [];
  const sameShape = (a: number, b: number) => {
    const sa = shape(a);
    const sb = shape(b);
    return sa !== undefined && sb !== undefined && sa.length === sb.length && sa.every((d, i) => d === sb[i] && d >= 0);
  };
  /** An operand of x's shape, or of x's first two dims then 1's (one value per plane). */
  const operandFitsOf = (x: number) => (value: number) => {
    const sv = shape(value);
    const sx = shape(x);
    if (sameShape(value, x)) return true;
    return sv !== undefined && sx !== undefined && sx.length >= 2 && sv.length === sx.length &&
      sv.every((d, i) => i < 2 ? d === sx[i] && d >= 0 : d === 1);
  };
  for (const node of graph.nodes) {
    const inputs = node.inputs ?? [];
    let extended = false;
    for (const v of new Set(inputs)) {
      const chain = byOutput.get(v);
      if (chain === undefined || index.readers.get(v) !== 1 || chain.steps.length >= MAX_STEPS) continue;
      const step = stepOf(source, index, node, v, chain.root, chain.channels, operandFitsOf(chain.root));
      if (step === undefined || !sameShape(node.outputs[0], chain.root)) continue;
      chain.steps.push(step);
      chain.members.push(node);
      if (step.roundTrip === true) chain.roundTrips++;
      byOutput.delete(v);
      byOutput.set(node.outputs[0], chain);
      extended = true;
      break;
    }
    if (extended || inputs.length === 0) continue;
    for (const x of new Set(inputs)) {
      const rootShape = shape(x);
      if (rootShape === undefined || !sameShape(node.outputs[0], x)) continue;
      const channels = rootShape.length === 4 ? rootShape[1] : 0;
      const step = stepOf(source, index, node, x, undefined, channels, operandFitsOf(x));
      if (step === undefined) continue;
      const chain: Chain = { root: x, channels, steps: [step], members: [node], roundTrips: step.roundTrip ? 1 : 0 };
      chains.push(chain);
      byOutput.set(node.outputs[0], chain);
      break;
    }
  }
  mergeShared(index, chains);
  const removed = new Set<NodeDescription>();
  let count = 0;
  for (const chain of chains) {
    if (chain.merged) continue;
    if (chain.members.length < 2 || chain.roundTrips === 0) continue;
    const operands = [...new Set(chain.steps.flatMap((step) => step.operand ?? []))];
    const made = new Set(chain.members.flatMap((member) => member.outputs));
    // An operand made inside the chain would be removed with it (none is: a member's
    // output read by a later step has two readers, which ends a chain).
    if (operands.length > MAX_OPERANDS || operands.some((v) => made.has(v))) continue;
    const program: number[] = [];
    const tables: number[] = [];
    const tableStart = chain.steps.length * STEP_LEN;
    for (const step of chain.steps) {
      const record = step.record.slice();
      if (step.table !== undefined) {
        record[1] = tableStart + tables.length;
        tables.push(...step.table);
      }
      if (step.operand !== undefined) record[1] = operands.indexOf(step.operand);
      program.push(...record);
    }
    program.push(...tables);
    const last = chain.members.at(-1)!;
    const programValue = addConstant(source, graph, new Float32Array(program));
    // conv2d_int8's epilogue takes no operands.
    const conv = operands.length === 0 ? foldableConv(index, chain) : undefined;
    if (conv !== undefined) {
      // The chain runs in the conv's epilogue on each value before it is stored: the conv's
      // f32 output is never written and read back.
      conv.inputs = [...conv.inputs!, programValue];
      conv.params = { ...conv.params, steps: chain.steps.length };
      conv.outputs = [last.outputs[0]];
      for (const member of chain.members) removed.add(member);
      count++;
      continue;
    }
    last.op = "quantized_pointwise";
    last.inputs = [chain.root, programValue, ...operands];
    last.params = { steps: chain.steps.length };
    for (const member of chain.members.slice(0, -1)) removed.add(member);
    count++;
  }
  graph.nodes = graph.nodes.filter((node) => !removed.has(node));
  return count;
}

/**
 * The conv2d_int8 node making the chain's root when the chain's steps are all that read it
 * (the root may be read by several steps: HardSwish's x) and its channels are known, so
 * that its epilogue can run the chain (channel c of the chain is column c of the conv).
 */
function foldableConv(index: Index, chain: Chain): NodeDescription | undefined {
  const conv = index.producer.get(chain.root);
  if (conv?.op !== "conv2d_int8" || (conv.inputs ?? []).length !== 5 || chain.channels <= 0) return undefined;
  if (conv.params?.n !== chain.channels) return undefined;
  const reads = chain.members.reduce((n, m) => n + (m.inputs ?? []).filter((v) => v === chain.root).length, 0);
  return reads === index.readers.get(chain.root) ? conv : undefined;
}

/** Scale and zero point of a dequantize_linear node when both are one-value constants. */
function scalarParams(source: ProgramSource, index: Index, node: NodeDescription): [number, number] | undefined {
  const inputs = node.inputs ?? [];
  const scale = inputs[1] === undefined ? undefined : constantOf(source, index, inputs[1]);
  const zero = inputs[2] === undefined ? { data: [0] } : constantOf(source, index, inputs[2]);
  if (scale?.data.length !== 1 || zero?.data.length !== 1) return undefined;
  return [scale.data[0], zero.data[0]];
}

/**
 * QOperator models dequantize a value once per reader (QLinearMul(x, hard_sigmoid(x)) and
 * the QLinear ops around it each dequantize x): dequantize_linear nodes of one input with
 * equal constant parameters become the first of them. Their single output can then start a
 * chain that `mergeShared` joins and `foldableConv` folds (det_qop's 73 dequantize nodes).
 */
function mergeDequantizes(source: ProgramSource, graph: GraphDescription): void {
  const index = new Index(graph);
  const first = new Map<string, number>();
  const replaced = new Map<number, number>();
  const outputs = new Set(graph.outputs);
  for (const node of graph.nodes) {
    if (node.inputs !== undefined) node.inputs = node.inputs.map((v) => replaced.get(v) ?? v);
    if (node.op !== "dequantize_linear" || node.outputs.length !== 1 || outputs.has(node.outputs[0])) continue;
    const params = scalarParams(source, index, node);
    if (params === undefined) continue;
    const key = JSON.stringify([
      node.inputs![0],
      params,
      param(node, "axis"),
      param(node, "qmin"),
      param(node, "qmax"),
    ]);
    const kept = first.get(key);
    if (kept === undefined) first.set(key, node.outputs[0]);
    else replaced.set(node.outputs[0], kept);
  }
  if (replaced.size > 0) graph.nodes = graph.nodes.filter((node) => !replaced.has(node.outputs[0]));
}

/**
 * A requantizing conv2d_int8 or matmul_int8 whose integer output only a dequantize_linear
 * of the same scale and zero point reads dequantizes it in its epilogue instead
 * (dequantize_output: (q - zero) · scale, the dequantize's own operations), as QDQ models'
 * convs already do; the dequantize's output is then a conv output that chains fold into.
 */
function foldDequantizes(source: ProgramSource, graph: GraphDescription): void {
  const index = new Index(graph);
  const removed = new Set<NodeDescription>();
  for (const node of graph.nodes) {
    if (node.op !== "dequantize_linear" || node.outputs.length !== 1) continue;
    const x = node.inputs?.[0];
    const producer = x === undefined ? undefined : index.producer.get(x);
    if (producer?.op !== "conv2d_int8" && producer?.op !== "matmul_int8") continue;
    if (index.readers.get(x!) !== 1 || producer.outputs.length !== 1) continue;
    if (param(producer, "requantize") !== true || param(producer, "dequantize_output") === true) continue;
    const params = scalarParams(source, index, node);
    if (params === undefined) continue;
    const same = Math.fround(params[0]) === Math.fround(param(producer, "out_scale") as number) &&
      params[1] === param(producer, "out_zero");
    if (!same) continue;
    producer.params = { ...producer.params, dequantize_output: true };
    producer.outputs = [node.outputs[0]];
    removed.add(node);
  }
  if (removed.size > 0) graph.nodes = graph.nodes.filter((node) => !removed.has(node));
}

/** Ops that only move values (nearest resize copies them): their outputs are inputs' values. */
const MOVES = new Set(["reshape", "permute", "contiguous", "squeeze", "unsqueeze", "slice", "flatten", "transpose"]);

function moves(node: NodeDescription): boolean {
  if (node.op === "resize") return param(node, "mode") === "nearest" || param(node, "mode") === 0;
  return MOVES.has(node.op);
}

/** The grid a node's output lies on (scale, zero point, range), when it is a QDQ round trip. */
function gridOf(source: ProgramSource, index: Index, node: NodeDescription | undefined): string | undefined {
  if (node === undefined || param(node, "dequantize_output") !== true) return undefined;
  if (node.op === "quantize_linear") {
    const params = scalarParams(source, index, node);
    if (params === undefined) return undefined;
    return JSON.stringify([Math.fround(params[0]), params[1], param(node, "qmin"), param(node, "qmax")]);
  }
  if (node.op !== "conv2d_int8" && node.op !== "matmul_int8") return undefined;
  if (param(node, "requantize") !== true || ((param(node, "steps") as number | undefined) ?? 0) > 0) return undefined;
  const scale = Math.fround(param(node, "out_scale") as number);
  return JSON.stringify([scale, param(node, "out_zero"), param(node, "out_min"), param(node, "out_max")]);
}

/**
 * A QDQ round trip of values that only moved (reshape, permute, slice, nearest resize …)
 * since a round trip onto the same grid is the identity: each value is (q - zero) · scale
 * already, which quantizes back to q and dequantizes to itself, bit for bit. QDQ models
 * repeat the pair after every such op (det_qdq's 6 nearest resizes, rec_qdq's 14 reshapes and
 * 10 permutes); their readers read the moved values instead.
 */
function dropRepeatedRoundTrips(source: ProgramSource, graph: GraphDescription): void {
  const index = new Index(graph);
  const replaced = new Map<number, number>();
  const outputs = new Set(graph.outputs);
  for (const node of graph.nodes) {
    if (node.inputs !== undefined) node.inputs = node.inputs.map((v) => replaced.get(v) ?? v);
    if (node.op !== "quantize_linear" || node.outputs.length !== 1 || outputs.has(node.outputs[0])) continue;
    const grid = gridOf(source, index, node);
    if (grid === undefined) continue;
    let mover = index.producer.get(node.inputs![0]);
    let steps = 0;
    while (mover !== undefined && moves(mover) && steps++ < 16) {
      const from = mover.inputs?.[0];
      mover = from === undefined ? undefined : index.producer.get(from);
    }
    if (steps === 0 || mover === undefined || gridOf(source, index, mover) !== grid) continue;
    replaced.set(node.outputs[0], node.inputs![0]);
  }
  if (replaced.size > 0) graph.nodes = graph.nodes.filter((node) => !replaced.has(node.outputs[0]));
}

/** A new float32 constant at the start of the graph; returns its value. */
function addConstant(source: ProgramSource, graph: GraphDescription, data: Float32Array): number {
  source.tensors.push({ dtype: "float32", shape: [data.length], data: new Uint8Array(data.buffer) });
  const value = graph.values++;
  graph.nodes.unshift({ op: "constant", outputs: [value], tensor: source.tensors.length - 1 });
  return value;
}

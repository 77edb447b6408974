/**
 * Peephole fusions over an imported graph, run once after import: exported models spell
 * out in many small ops what Spindle runs as one, and every op is a pass over memory.
 *
 * - `x · clamp(x + 3, 0, 6) / 6` and `x · hard_sigmoid(x)` (α = 1/6, β = 1/2) → `hard_swish(x)`;
 * - a scalar affine (`mul`, `add`, `sub`, `div` by a constant) right after a convolution
 *   without activation → folded into the convolution's weights and bias;
 * - `batch_norm` with constant statistics, or an `add` of a per-channel constant, right after
 *   such a convolution → folded into its weights and bias;
 * - `x · (erf(x / √2) + 1) · 0.5`, the exported erf GELU → `gelu(x)`;
 * - `x + x · g` with a gate g smaller than x (squeeze-and-excitation) → `x · (g + 1)`;
 * - `relu` or `hard_swish` right after such a convolution → its fused activation;
 * - a scalar affine after a convolution with an activation → its post-activation scale and
 *   shift (PaddleOCR's "learnable affine blocks");
 * - `add` of a constant row right after a `gemm` (MatMul + Add) or an `mm` (a scripted
 *   linear layer) → the gemm's fused bias;
 * - `relu`, `gelu`, `sigmoid`, `tanh` or `hard_swish` right after such a product (after its
 *   bias) → the gemm's fused activation;
 * - the decomposed LayerNorm `(x − mean) / sqrt(mean((x − mean)²) + ε) · γ + β` over the
 *   last axis → one `layer_norm`;
 * - products of one input by several constant weights (query, key and value projections),
 *   alike in all else → one `gemm` on the weights side by side, and a `slice` of its columns
 *   for each.
 *
 * A fusion only happens where the intermediate values have no other reader, so the graph
 * computes the same function (up to float rounding). This is the one place graph fusions
 * live, for every model source: ONNX import (lib/onnx/ops.ts only translates ONNX ops into
 * native ones) and traced scripts (lib/script/script.ts), so the built-in models too.
 *
 * @module
 */
import type { GraphDescription, NodeDescription, ParamValue, ProgramSource } from "../program/format.ts";
import { opSchema } from "../ops/dispatch.ts";

/** Parameter `name` of `node`: the value it gives, or its op's schema default. */
function param(node: NodeDescription, name: string): ParamValue | undefined {
  const given = node.params?.[name];
  if (given !== undefined) return given;
  return opSchema(node.op).params.find((p) => p.name === name)?.default as ParamValue | undefined;
}

/** Whether `node` is a convolution (whose epilogue can take an activation and an affine). */
function isConvolution(node: NodeDescription): boolean {
  return node.op === "conv2d" || node.op === "conv_transpose2d";
}

/** What the graph passes know about values: who makes each, and who reads it. */
export class Index {
  /** The node making each value. */
  producer = new Map<number, NodeDescription>();
  /** The position of that node in the graph's node list. */
  position = new Map<number, number>();
  /** Reads of each value: a node reading it twice counts twice, a graph output once. */
  readers = new Map<number, number>();
  /** The distinct nodes reading each value, by position, in order. */
  readingNodes = new Map<number, number[]>();

  constructor(graph: GraphDescription) {
    graph.nodes.forEach((node, index) => {
      for (const v of node.outputs) {
        this.producer.set(v, node);
        this.position.set(v, index);
      }
      for (const v of node.inputs ?? []) this.readers.set(v, (this.readers.get(v) ?? 0) + 1);
      for (const v of new Set(node.inputs ?? [])) {
        this.readingNodes.set(v, [...(this.readingNodes.get(v) ?? []), index]);
      }
    });
    for (const v of graph.outputs) this.readers.set(v, (this.readers.get(v) ?? 0) + 1);
  }

  /** The node making `value` when it has that op and exactly one reader. */
  soleUse(value: number, op?: string): NodeDescription | undefined {
    const node = this.producer.get(value);
    if (node === undefined || this.readers.get(value) !== 1) return undefined;
    return op === undefined || node.op === op ? node : undefined;
  }
}

/** A one-input op by a scalar constant, as y = a·x + b, or undefined for anything else. */
function scalarAffine(node: NodeDescription): [number, number] | undefined {
  if ((node.inputs ?? []).length !== 1 || !["mul", "add", "sub", "div"].includes(node.op)) return undefined;
  const s = param(node, "scalar");
  const first = param(node, "scalar_first") === true;
  if (typeof s !== "number" || !Number.isFinite(s)) return undefined;
  switch (node.op) {
    case "mul":
      return [s, 0];
    case "add":
      return [1, s];
    case "sub":
      return first ? [-1, s] : [1, -s];
    case "div":
      return !first && s !== 0 ? [1 / s, 0] : undefined;
  }
  return undefined;
}

/** `node`'s scalar operand when it is `op` of one tensor by a number on the right. */
function scalarRight(node: NodeDescription | undefined, op: string): number | undefined {
  if (node?.op !== op || node.inputs?.length !== 1 || param(node, "scalar_first") !== false) return undefined;
  const s = param(node, "scalar");
  return typeof s === "number" ? s : undefined;
}

/** The scalar of a one-input commutative op (`add`, `mul`) by a constant, on either side. */
function scalarEither(node: NodeDescription | undefined, op: string): number | undefined {
  if (node?.op !== op || node.inputs?.length !== 1) return undefined;
  const s = param(node, "scalar");
  return typeof s === "number" ? s : undefined;
}

/**
 * The exported erf GELU, x · (erf(x / √2) + 1) · 0.5 (torch.onnx before opset 20, BERT):
 * `last` is mul(mul(x, t), 0.5) or mul(mul(x, 0.5), t) with t = add(erf(x / √2), 1) (the
 * division also as a multiplication by 1/√2, the commutative operands in either order).
 */
function decomposedGelu(index: Index, last: NodeDescription): { x: number; dead: NodeDescription[] } | undefined {
  /** t = add(erf(x/√2), 1) of the value `t`, for x = `x`: its nodes, or undefined. */
  const erfTerm = (t: number, x: number): NodeDescription[] | undefined => {
    const shifted = index.soleUse(t, "add");
    if (!near(scalarEither(shifted, "add"), 1)) return undefined;
    const erf = index.soleUse(shifted!.inputs![0], "erf");
    if (erf === undefined) return undefined;
    const scaled = index.soleUse(erf.inputs![0]);
    const byDivision = near(scalarRight(scaled, "div"), Math.SQRT2);
    const byProduct = near(scalarEither(scaled, "mul"), Math.SQRT1_2);
    if (!(byDivision || byProduct) || scaled!.inputs![0] !== x) return undefined;
    return [shifted!, erf, scaled!];
  };
  if (near(scalarEither(last, "mul"), 0.5)) {
    // mul(mul(x, t), 0.5)
    const product = index.soleUse(last.inputs![0], "mul");
    if (product?.inputs?.length !== 2) return undefined;
    for (const [x, t] of [[0, 1], [1, 0]]) {
      const nodes = erfTerm(product.inputs[t], product.inputs[x]);
      if (nodes !== undefined) return { x: product.inputs[x], dead: [product, ...nodes] };
    }
    return undefined;
  }
  if (last.op !== "mul" || last.inputs?.length !== 2) return undefined;
  // mul(mul(x, 0.5), t)
  for (const [h, t] of [[0, 1], [1, 0]]) {
    const half = index.soleUse(last.inputs[h], "mul");
    if (!near(scalarEither(half, "mul"), 0.5)) continue;
    const nodes = erfTerm(last.inputs[t], half!.inputs![0]);
    if (nodes !== undefined) return { x: half!.inputs![0], dead: [half!, ...nodes] };
  }
  return undefined;
}

function near(value: ParamValue | undefined, want: number): boolean {
  return typeof value === "number" && Math.abs(value - want) <= 1e-6 * Math.max(1, Math.abs(want));
}

/** Extra facts about the graphs the pass may use. */
export interface FuseHints {
  /** The shape of value `value` of graph `graph` where known (-1 for a dynamic dimension). */
  shape?(value: number, graph: number): readonly number[] | undefined;
}

/** What one graph's sweep may ask about its values. */
interface GraphHints {
  shape?(value: number): readonly number[] | undefined;
}

/**
 * Runs the fusions on every graph of `source` (in place) until none applies. Every model
 * source goes through it: ONNX import, traced scripts and so the built-in models.
 *
 * @returns How many fusions were made.
 */
export function fuse(source: ProgramSource, hints: FuseHints = {}): number {
  let total = 0;
  source.graphs.forEach((graph, graphIndex) => {
    const shape = hints.shape;
    const graphHints: GraphHints = shape === undefined ? {} : { shape: (value) => shape(value, graphIndex) };
    for (;;) {
      const count = fuseOnce(source, graph, graphHints);
      if (count === 0) break;
      total += count;
    }
    // After the chains above: a product must have its bias and activation before it joins
    // its siblings.
    total += fuseSiblingProducts(source, graph, graphHints);
  });
  return total;
}

/** A product that may share one gemm with others of the same input (fuseSiblingProducts). */
interface Sibling {
  node: NodeDescription;
  weight: { data: Float32Array; shape: number[] };
  bias: Float32Array | undefined;
  /** The weight is stored [n, k] (a gemm's transB). */
  transB: boolean;
  /** Output columns (the weight's n) and depth (its k). */
  n: number;
  k: number;
}

/**
 * Products of one input by different constant weights, the same in everything else (a
 * transformer's query, key and value projections, each with its bias) → one gemm on the
 * weights side by side and a slice of its columns for each: the input is packed and read
 * once, and one wide product runs where several narrow ones did (builtin:transformer's
 * [256, 256] · [256, 64] projections ran at 60-108 GFLOPS in the model, the joined
 * [256, 192] ones at about 140).
 */
function fuseSiblingProducts(source: ProgramSource, graph: GraphDescription, hints: GraphHints): number {
  const index = new Index(graph);
  const groups = new Map<string, Sibling[]>();
  for (const node of graph.nodes) {
    const sibling = siblingOf(source, index, node, hints);
    if (sibling === undefined) continue;
    const key = JSON.stringify([
      node.inputs![0],
      sibling.transB,
      sibling.k,
      node.op === "gemm" ? param(node, "alpha") : 1,
      node.op === "gemm" ? param(node, "beta") : 1,
      sibling.bias !== undefined,
      node.op === "gemm" ? param(node, "activation") : "none",
    ]);
    groups.set(key, [...(groups.get(key) ?? []), sibling]);
  }
  let count = 0;
  for (const members of groups.values()) {
    if (members.length < 2) continue;
    const first = members[0].node;
    const { transB, k: depth } = members[0];
    const total = members.reduce((sum, m) => sum + m.n, 0);
    const weight = new Float32Array(total * depth);
    let column = 0;
    for (const member of members) {
      if (transB) {
        weight.set(member.weight.data, column * depth); // [n, k] blocks one after the other
      } else {
        for (let row = 0; row < depth; row++) {
          weight.set(member.weight.data.subarray(row * member.n, (row + 1) * member.n), row * total + column);
        }
      }
      column += member.n;
    }
    const inputs = [first.inputs![0], addConstant(source, graph, weight, transB ? [total, depth] : [depth, total])];
    if (members[0].bias !== undefined) {
      const bias = new Float32Array(total);
      let at = 0;
      for (const member of members) {
        bias.set(member.bias!, at);
        at += member.n;
      }
      inputs.push(addConstant(source, graph, bias, [total]));
    }
    const fused = graph.values++;
    const params: Record<string, ParamValue> = first.op === "gemm"
      ? { ...first.params, has_bias: inputs.length === 3 }
      : { has_bias: false };
    // At the first member's place: every member reads the same input, so it is ready there.
    graph.nodes.splice(graph.nodes.indexOf(first), 0, { op: "gemm", inputs, outputs: [fused], params });
    let start = 0;
    for (const member of members) {
      member.node.op = "slice";
      member.node.inputs = [fused];
      member.node.params = { dim: -1, start, end: start + member.n, step: 1 };
      start += member.n;
    }
    count += members.length - 1;
  }
  return count;
}

/** `node` as a Sibling: a gemm (no transposed input), mm or 2-D matmul by a 2-D float constant. */
function siblingOf(source: ProgramSource, index: Index, node: NodeDescription, hints: GraphHints): Sibling | undefined {
  if (!["gemm", "mm", "matmul"].includes(node.op) || !becomesGemm(node, hints)) return undefined;
  const inputs = node.inputs ?? [];
  const gemm = node.op === "gemm";
  if (gemm && param(node, "trans_a") === true) return undefined;
  const weight = constant(source, index, inputs[1]);
  if (weight === undefined || weight.shape.length !== 2 || inputs[0] === inputs[1]) return undefined;
  const transB = gemm && param(node, "trans_b") === true;
  const [n, k] = transB ? weight.shape : [weight.shape[1], weight.shape[0]];
  if (n === 0 || weight.data.length === 0) return undefined;
  if (!gemm || param(node, "has_bias") !== true) return { node, weight, bias: undefined, transB, n, k };
  const bias = constant(source, index, inputs[2]);
  // A bias of one value per column; one broadcast any other way stays on its own.
  if (bias === undefined || bias.data.length !== n || bias.shape.slice(0, -1).some((d) => d !== 1)) return undefined;
  return { node, weight, bias: bias.data, transB, n, k };
}

/** One sweep: each node is the last op of a pattern at most once. */
function fuseOnce(source: ProgramSource, graph: GraphDescription, hints: GraphHints): number {
  const index = new Index(graph);
  const removed = new Set<NodeDescription>();
  let count = 0;
  /** `last` now computes the pattern: its inputs, op and params are replaced. */
  const replace = (
    last: NodeDescription,
    op: string,
    inputs: number[],
    params: Record<string, ParamValue>,
    dead: NodeDescription[],
  ) => {
    last.op = op;
    last.inputs = inputs;
    last.params = params;
    for (const node of dead) removed.add(node);
    count++;
  };
  /** `producer` takes over `consumer`'s output (consumer reads producer's only output). */
  const absorb = (producer: NodeDescription, consumer: NodeDescription) => {
    producer.outputs = consumer.outputs.slice();
    removed.add(consumer);
    count++;
  };
  for (const node of graph.nodes) {
    if (removed.has(node)) continue;
    const inputs = node.inputs ?? [];
    // hard_swish: div(mul(x, clamp(add(x, 3), 0, 6)), 6), or mul(x, hard_sigmoid(x)).
    if (near(scalarRight(node, "div"), 6) || near(scalarRight(node, "mul"), 1 / 6)) {
      const product = index.soleUse(inputs[0], "mul");
      if (product !== undefined && product.inputs?.length === 2 && !removed.has(product)) {
        for (const [x, other] of [[0, 1], [1, 0]]) {
          const clamp = index.soleUse(product.inputs[other], "clamp");
          if (clamp === undefined || !near(param(clamp, "min"), 0) || !near(param(clamp, "max"), 6)) continue;
          const shifted = index.soleUse(clamp.inputs![0], "add");
          if (shifted === undefined || !near(scalarRight(shifted, "add"), 3)) continue;
          if (shifted.inputs![0] !== product.inputs[x]) continue;
          replace(node, "hard_swish", [product.inputs[x]], {}, [product, clamp, shifted]);
          break;
        }
        if ((node.op as string) === "hard_swish") continue;
      }
    }
    const gelu = node.op === "mul" ? decomposedGelu(index, node) : undefined;
    if (gelu !== undefined && !gelu.dead.some((n) => removed.has(n))) {
      replace(node, "gelu", [gelu.x], {}, gelu.dead);
      continue;
    }
    if (node.op === "mul" && inputs.length === 2) {
      for (const [x, other] of [[0, 1], [1, 0]]) {
        const gate = index.soleUse(inputs[other], "hard_sigmoid");
        if (gate === undefined || gate.inputs?.[0] !== inputs[x]) continue;
        if (!near(param(gate, "alpha"), 1 / 6) || !near(param(gate, "beta"), 0.5)) continue;
        replace(node, "hard_swish", [inputs[x]], {}, [gate]);
        break;
      }
      if ((node.op as string) === "hard_swish") continue;
    }
    // Into a convolution: its output must be read by this node alone.
    if (inputs.length === 1) {
      const conv = index.soleUse(inputs[0]);
      if (conv !== undefined && !removed.has(conv) && isConvolution(conv)) {
        const activation = param(conv, "activation");
        const scale = param(conv, "post_scale") as number;
        const shift = param(conv, "post_shift") as number;
        const post = scale !== 1 || shift !== 0;
        const affine = scalarAffine(node);
        if (activation === "none" && !post) {
          if (affine !== undefined && foldAffine(source, graph, index, conv, affine)) {
            absorb(conv, node);
            continue;
          }
          if (node.op === "relu" || node.op === "hard_swish") {
            conv.params = { ...conv.params, activation: node.op };
            absorb(conv, node);
            continue;
          }
        } else if (activation !== "none" && affine !== undefined) {
          conv.params = { ...conv.params, post_scale: affine[0] * scale, post_shift: affine[0] * shift + affine[1] };
          absorb(conv, node);
          continue;
        }
      }
    }
    if (addGemmActivation(index, removed, node, hints)) {
      absorb(index.producer.get(inputs[0])!, node);
      continue;
    }
    if (node.op === "batch_norm") {
      const conv = index.soleUse(inputs[0], "conv2d") ?? index.soleUse(inputs[0], "conv_transpose2d");
      if (conv !== undefined && !removed.has(conv) && foldBatchNorm(source, graph, index, conv, node)) {
        absorb(conv, node);
        continue;
      }
    }
    if (node.op === "add" && inputs.length === 2) {
      const channelBias = [[0, 1], [1, 0]].find(([p, c]) => {
        const conv = index.soleUse(inputs[p]);
        return conv !== undefined && !removed.has(conv) && isConvolution(conv) &&
          foldChannelBias(source, graph, index, conv, inputs[c], hints);
      });
      if (channelBias !== undefined) {
        absorb(index.producer.get(inputs[channelBias[0]])!, node);
        continue;
      }
      if (gatedResidual(index, removed, node, hints)) {
        count++;
        continue;
      }
      const bias = [[0, 1], [1, 0]].find(([p, c]) => {
        const product = index.soleUse(inputs[p], "gemm") ?? index.soleUse(inputs[p], "mm") ??
          index.soleUse(inputs[p], "matmul");
        return product !== undefined && !removed.has(product) && addGemmBias(source, index, product, inputs[c], hints);
      });
      if (bias !== undefined) {
        absorb(index.producer.get(inputs[bias[0]])!, node);
        continue;
      }
      const fused = layerNorm(source, index, node, hints);
      if (fused !== undefined) {
        replace(node, "layer_norm", fused.inputs, fused.params, fused.dead);
        continue;
      }
    }
  }
  graph.nodes = graph.nodes.filter((node) => !removed.has(node));
  return count;
}

/** The float32 data of the constant `value` (a copy) and its shape. */
function constant(
  source: ProgramSource,
  index: Index,
  value: number,
): { data: Float32Array; shape: number[] } | undefined {
  const node = index.producer.get(value);
  if (node?.op !== "constant" || node.tensor === undefined) return undefined;
  const t = source.tensors[node.tensor];
  if (t.dtype !== "float32") return undefined;
  return { data: new Float32Array(t.data.slice().buffer), shape: t.shape.slice() };
}

/** A new constant node (and tensor) at the start of the graph; returns its value. */
function addConstant(source: ProgramSource, graph: GraphDescription, data: Float32Array, shape: number[]): number {
  source.tensors.push({ dtype: "float32", shape, data: new Uint8Array(data.buffer) });
  const value = graph.values++;
  graph.nodes.unshift({ op: "constant", outputs: [value], tensor: source.tensors.length - 1 });
  return value;
}

/** Folds y = a·conv(x) + b into the convolution's weight and bias (new constants). */
function foldAffine(
  source: ProgramSource,
  graph: GraphDescription,
  index: Index,
  conv: NodeDescription,
  [a, b]: [number, number],
): boolean {
  const inputs = conv.inputs!;
  const weight = constant(source, index, inputs[1]);
  if (weight === undefined) return false;
  const groups = param(conv, "groups") as number;
  const channels = conv.op === "conv2d" ? weight.shape[0] : weight.shape[1] * groups;
  const bias = inputs.length === 3
    ? constant(source, index, inputs[2])
    : { data: new Float32Array(channels), shape: [channels] };
  if (bias === undefined || bias.data.length !== channels) return false;
  if (a !== 1) { for (let i = 0; i < weight.data.length; i++) weight.data[i] *= a; }
  for (let c = 0; c < channels; c++) bias.data[c] = bias.data[c] * a + b;
  const weightValue = a === 1 ? inputs[1] : addConstant(source, graph, weight.data, weight.shape);
  conv.inputs = [inputs[0], weightValue, addConstant(source, graph, bias.data, [channels])];
  conv.params = { ...conv.params, has_bias: true };
  return true;
}

/** Whether a convolution's epilogue is still the identity (no activation, no affine). */
function bareEpilogue(conv: NodeDescription): boolean {
  return param(conv, "activation") === "none" && param(conv, "post_scale") === 1 && param(conv, "post_shift") === 0;
}

/**
 * The output channels of a convolution with a weight of `shape`: conv2d's weight is
 * [out, in / groups, kh, kw], conv_transpose2d's [in, out / groups, kh, kw].
 */
function outputChannels(conv: NodeDescription, shape: readonly number[]): number {
  return conv.op === "conv2d" ? shape[0] : shape[1] * (param(conv, "groups") as number);
}

/** Multiplies every weight of output channel c of a 4-D convolution weight by factors[c]. */
function scaleOutputChannels(
  conv: NodeDescription,
  weight: { data: Float32Array; shape: number[] },
  factors: Float32Array,
) {
  const [first, second, kh, kw] = weight.shape;
  const taps = kh * kw;
  if (conv.op === "conv2d") {
    const perChannel = second * taps;
    for (let c = 0; c < first; c++) {
      for (let k = 0; k < perChannel; k++) weight.data[c * perChannel + k] *= factors[c];
    }
    return;
  }
  // conv_transpose2d: input channel i of group ⌊i / (in / groups)⌋ feeds outputs
  // group · (out / groups) + j through weight[i, j].
  const perGroup = first / (param(conv, "groups") as number);
  for (let i = 0; i < first; i++) {
    const base = Math.floor(i / perGroup) * second;
    for (let j = 0; j < second; j++) {
      const at = (i * second + j) * taps;
      for (let k = 0; k < taps; k++) weight.data[at + k] *= factors[base + j];
    }
  }
}

/**
 * conv(x) + c with c a float constant holding one value per output channel ([C, 1, 1] or
 * [1, C, 1, 1]; exported models add the bias of a bias-less ConvTranspose this way): c
 * joins the convolution's bias. Only while the epilogue is bare, and only where c does not
 * add dimensions to the output.
 */
function foldChannelBias(
  source: ProgramSource,
  graph: GraphDescription,
  index: Index,
  conv: NodeDescription,
  value: number,
  hints: GraphHints,
): boolean {
  if (!bareEpilogue(conv)) return false;
  const added = constant(source, index, value);
  const outShape = hints.shape?.(conv.outputs[0]);
  const weight = constant(source, index, conv.inputs![1]);
  if (added === undefined || outShape === undefined || weight === undefined || weight.shape.length !== 4) return false;
  const channels = outputChannels(conv, weight.shape);
  const rank = added.shape.length;
  if (rank < 3 || rank > outShape.length || added.data.length !== channels) return false;
  if (added.shape[rank - 3] !== channels || added.shape.some((d, i) => i !== rank - 3 && d !== 1)) return false;
  const inputs = conv.inputs!;
  const bias = inputs.length === 3 ? constant(source, index, inputs[2])?.data : new Float32Array(channels);
  if (bias === undefined || bias.length !== channels) return false;
  for (let c = 0; c < channels; c++) bias[c] = Math.fround(bias[c] + added.data[c]);
  conv.inputs = [inputs[0], inputs[1], addConstant(source, graph, bias, [channels])];
  conv.params = { ...conv.params, has_bias: true };
  return true;
}

/**
 * x + x · g → x · (g + 1) when g is smaller than x (a squeeze-and-excitation gate of one
 * value per channel, as PP-OCRv4's residual SE blocks end): the full-size add disappears,
 * the + 1 runs on the gate. The mul node becomes the gate's + 1 and the add node the
 * product, so the graph keeps its order. Rounding differs by at most an ulp or two.
 */
function gatedResidual(index: Index, removed: Set<NodeDescription>, node: NodeDescription, hints: GraphHints): boolean {
  const inputs = node.inputs!;
  for (const [x, p] of [[0, 1], [1, 0]]) {
    const product = index.soleUse(inputs[p], "mul");
    if (product?.inputs?.length !== 2 || removed.has(product)) continue;
    const gateAt = product.inputs.indexOf(inputs[x]) === 0 ? 1 : product.inputs.indexOf(inputs[x]) === 1 ? 0 : -1;
    if (gateAt < 0 || product.inputs[gateAt] === inputs[x]) continue;
    const gate = product.inputs[gateAt];
    const xShape = hints.shape?.(inputs[x]);
    const gateShape = hints.shape?.(gate);
    if (xShape === undefined || gateShape === undefined || gateShape.length > xShape.length) continue;
    if ([...xShape, ...gateShape].some((d) => d < 0)) continue;
    // The gate must broadcast into x without growing it, and be smaller.
    const offset = xShape.length - gateShape.length;
    if (gateShape.some((d, i) => d !== 1 && d !== xShape[offset + i])) continue;
    if (gateShape.reduce((a, b) => a * b, 1) >= xShape.reduce((a, b) => a * b, 1)) continue;
    product.op = "add";
    product.inputs = [gate];
    product.params = { scalar: 1 };
    node.op = "mul";
    node.inputs = [inputs[x], inputs[p]];
    node.params = {};
    return true;
  }
  return false;
}

/**
 * Folds batch_norm(conv(x)) with constant statistics into the convolution: each output
 * channel's weights scale by γ / sqrt(σ² + ε), its bias becomes (b − μ)·that + β.
 */
function foldBatchNorm(
  source: ProgramSource,
  graph: GraphDescription,
  index: Index,
  conv: NodeDescription,
  norm: NodeDescription,
): boolean {
  if (!bareEpilogue(conv)) return false;
  const convInputs = conv.inputs!;
  const weight = constant(source, index, convInputs[1]);
  if (weight === undefined || weight.shape.length !== 4) return false;
  const channels = outputChannels(conv, weight.shape);
  const [, meanValue, varianceValue, ...affine] = norm.inputs!;
  const stat = (value: number | undefined, fill: number) =>
    value === undefined ? new Float32Array(channels).fill(fill) : constant(source, index, value)?.data;
  const mean = stat(meanValue, 0);
  const variance = stat(varianceValue, 1);
  const gamma = stat(param(norm, "has_weight") === true ? affine[0] : undefined, 1);
  const beta = stat(param(norm, "has_bias") === true ? affine[affine.length - 1] : undefined, 0);
  const bias = convInputs.length === 3 ? constant(source, index, convInputs[2])?.data : new Float32Array(channels);
  const stats = [mean, variance, gamma, beta, bias];
  if (stats.some((v) => v === undefined || v.length !== channels)) return false;
  const eps = param(norm, "eps") as number;
  const factors = new Float32Array(channels);
  const newBias = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    factors[c] = gamma![c] / Math.sqrt(variance![c] + eps);
    newBias[c] = (bias![c] - mean![c]) * factors[c] + beta![c];
  }
  scaleOutputChannels(conv, weight, factors);
  conv.inputs = [
    convInputs[0],
    addConstant(source, graph, weight.data, weight.shape),
    addConstant(source, graph, newBias, [channels]),
  ];
  conv.params = { ...conv.params, has_bias: true };
  return true;
}

/**
 * gemm(a, b) + bias (or mm(a, b) or a 2-D matmul(a, b) + bias, which becomes such a gemm:
 * scripted linear layers),
 * the bias a float constant holding one value per output column (ones in every other
 * dimension, and no more dimensions than the product): the gemm adds it itself.
 */
function addGemmBias(
  source: ProgramSource,
  index: Index,
  product: NodeDescription,
  biasValue: number,
  hints: GraphHints,
): boolean {
  const isMm = product.op === "mm" || product.op === "matmul";
  if (!isMm && (param(product, "has_bias") !== false || param(product, "beta") !== 1)) return false;
  // The bias goes in before the activation: not after a gemm that already has one.
  if (!isMm && param(product, "activation") !== "none") return false;
  if (!becomesGemm(product, hints)) return false;
  const bias = constant(source, index, biasValue);
  const outShape = hints.shape?.(product.outputs[0]);
  if (bias === undefined || outShape === undefined) return false;
  const columns = outShape[outShape.length - 1];
  if (columns < 0 || bias.data.length !== columns || bias.shape.length > outShape.length) return false;
  if (bias.shape.slice(0, -1).some((d) => d !== 1)) return false;
  product.inputs = [...product.inputs!, biasValue];
  if (isMm) product.op = "gemm";
  product.params = { ...product.params, has_bias: true };
  return true;
}

/** Whether `product` is a gemm, or an mm or a 2-D matmul that a gemm can replace. */
function becomesGemm(product: NodeDescription, hints: GraphHints): boolean {
  if (product.op === "gemm" || product.op === "mm") return true;
  // A matmul becomes a gemm only as a product of two matrices (gemm takes no batch).
  return product.op === "matmul" && product.inputs!.every((v) => hints.shape?.(v)?.length === 2);
}

/** The gemm activation each activation op becomes (gelu by its `approximate`). */
function gemmActivation(node: NodeDescription): string | undefined {
  switch (node.op) {
    case "relu":
    case "sigmoid":
    case "tanh":
    case "hard_swish":
      return node.op;
    case "gelu":
      return param(node, "approximate") === "tanh" ? "gelu_tanh" : "gelu";
    default:
      return undefined;
  }
}

/**
 * An activation right after a gemm (or an mm or 2-D matmul, which becomes one) that has
 * none yet, the product read by it alone: the gemm applies it to each tile of its output.
 */
function addGemmActivation(
  index: Index,
  removed: Set<NodeDescription>,
  node: NodeDescription,
  hints: GraphHints,
): boolean {
  const activation = gemmActivation(node);
  if (activation === undefined || node.inputs?.length !== 1) return false;
  const product = index.soleUse(node.inputs[0]);
  if (product === undefined || removed.has(product) || !becomesGemm(product, hints)) return false;
  if (product.op === "gemm" && param(product, "activation") !== "none") return false;
  if (product.op !== "gemm") product.op = "gemm";
  product.params = { ...product.params, activation };
  return true;
}

/**
 * add(mul(div(d, sqrt(add(mean(pow(d, 2)), ε))), γ), β) with d = sub(x, mean(x)), the means
 * over the last axis (keepdim), γ and β constants of the last axis' size.
 */
function layerNorm(
  source: ProgramSource,
  index: Index,
  last: NodeDescription,
  hints: GraphHints,
): { inputs: number[]; params: Record<string, ParamValue>; dead: NodeDescription[] } | undefined {
  const [scaledValue, betaValue] = last.inputs!;
  const scaled = index.soleUse(scaledValue, "mul");
  if (scaled?.inputs?.length !== 2) return undefined;
  const normalized = index.soleUse(scaled.inputs[0], "div");
  if (normalized?.inputs?.length !== 2) return undefined;
  const [d, rootValue] = normalized.inputs;
  const root = index.soleUse(rootValue, "sqrt");
  const epsilon = root && index.soleUse(root.inputs![0], "add");
  const eps = scalarRight(epsilon, "add");
  if (epsilon === undefined || eps === undefined) return undefined;
  const variance = index.soleUse(epsilon.inputs![0], "mean");
  const square = variance && index.soleUse(variance.inputs![0], "pow");
  if (square === undefined || scalarRight(square, "pow") !== 2 || square.inputs![0] !== d) return undefined;
  // d is read by the square and the division only.
  const centered = index.producer.get(d);
  if (centered?.op !== "sub" || index.readers.get(d) !== 2 || centered.inputs?.length !== 2) return undefined;
  const [x, meanValue] = centered.inputs;
  const mean = index.soleUse(meanValue, "mean");
  if (mean?.inputs?.[0] !== x) return undefined;
  const rank = hints.shape?.(x)?.length;
  if (rank === undefined) return undefined;
  const lastAxis = (node: NodeDescription) => {
    const dims = param(node, "dims") as readonly number[];
    return param(node, "keepdim") === true && dims.length === 1 && (dims[0] === -1 || dims[0] === rank - 1);
  };
  if (!lastAxis(mean) || !lastAxis(variance!)) return undefined;
  const gamma = constant(source, index, scaled.inputs[1]);
  const beta = constant(source, index, betaValue);
  if (gamma === undefined || beta === undefined) return undefined;
  const size = gamma.data.length;
  const vector = (shape: number[]) =>
    shape.length >= 1 && shape[shape.length - 1] === size && shape.every((s, i) => i === shape.length - 1 || s === 1);
  if (beta.data.length !== size || !vector(gamma.shape) || !vector(beta.shape)) return undefined;
  // layer_norm wants weight and bias of the normalized shape, [size]: reshape the constants
  // in place where nothing else reads them.
  const operands = [scaled.inputs[1], betaValue];
  const shapes = [gamma.shape, beta.shape];
  if (shapes.some((shape, i) => shape.length !== 1 && index.readers.get(operands[i]) !== 1)) return undefined;
  operands.forEach((value, i) => {
    if (shapes[i].length === 1) return;
    const node = index.producer.get(value)!;
    source.tensors[node.tensor!] = { ...source.tensors[node.tensor!], shape: [size] };
  });
  return {
    inputs: [x, ...operands],
    params: { normalized_ndim: 1, eps, has_weight: true, has_bias: true },
    dead: [scaled, normalized, root!, epsilon, variance!, square, centered, mean],
  };
}

/**
 * Moves every constant node ahead of the other nodes of its graph (a stable sort): fusions
 * make a node read a constant (a bias, folded weights) that was defined after it. Constants
 * read nothing, so the order stays valid.
 */
export function hoistConstants(source: ProgramSource): void {
  for (const graph of source.graphs) {
    graph.nodes = [
      ...graph.nodes.filter((node) => node.op === "constant"),
      ...graph.nodes.filter((node) => node.op !== "constant"),
    ];
  }
}

/**
 * Removes constant nodes nobody reads (in every graph), and tensors no constant node
 * refers to. Run once after the passes that leave constants behind.
 */
export function dropDeadConstants(source: ProgramSource): void {
  const tensors: ProgramSource["tensors"] = [];
  const renumbered = new Map<number, number>();
  for (const graph of source.graphs) {
    const index = new Index(graph);
    graph.nodes = graph.nodes.filter((node) => node.op !== "constant" || (index.readers.get(node.outputs[0]) ?? 0) > 0);
    for (const node of graph.nodes) {
      if (node.op !== "constant" || node.tensor === undefined) continue;
      if (!renumbered.has(node.tensor)) {
        renumbered.set(node.tensor, tensors.length);
        tensors.push(source.tensors[node.tensor]);
      }
      node.tensor = renumbered.get(node.tensor);
    }
  }
  source.tensors = tensors;
}

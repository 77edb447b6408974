/**
 * Independent branches as fork/wait: ONNX Runtime's parallel execution mode, in Spindle's
 * terms. A branch is a region of the graph with one way in and one way out: its ops read
 * one value from outside (plus constants) and only one of the values they make is read
 * outside. When the calling thread has other heavy work (a convolution or a matrix
 * product) to do between the moment the branch's input exists and the first use of its
 * result, the branch moves into a graph of its own: a `fork` right after its input is made
 * starts it on the inter-op pool, and a `wait` just before the first use of its result
 * joins it (helping, not blocking, when the task has not started; see zig/src/pool/future.zig).
 * Branches whose result is a graph output stay inline.
 *
 * @module
 */
import type { DType } from "../tensor.ts";
import type { GraphDescription, NodeDescription, ProgramSource } from "../program/format.ts";
import { Index } from "./fuse.ts";

/** Ops worth a task of their own (everything else is memory-bound and cheap). */
const HEAVY = new Set(["conv2d", "conv_transpose2d", "gemm", "mm", "matmul"]);
/** Nodes that never move into a branch (control-flow nodes have several outputs). */
const STAYS = new Set(["fork", "wait", "constant", "if", "loop", "scan"]);
/** How far past its first node a region may reach (in nodes). */
const REGION_SPAN = 48;

/** What the pass needs to know about values to declare a forked graph's input. */
export interface BranchHints {
  /** The dtype and shape (-1 for a dimension that varies) of a runtime value. */
  spec(value: number): { dtype: DType; shape: number[] } | undefined;
}

/**
 * Moves independent branches of graph 0 into forked graphs (in place).
 *
 * @returns How many branches were forked.
 */
export function forkBranches(source: ProgramSource, hints: BranchHints): number {
  const graph = source.graphs[0];
  const nodes = graph.nodes;
  const index = new Index(graph);
  const producer = index.position;
  const readers = index.readingNodes;
  const outputs = new Set(graph.outputs);
  const isConstant = (v: number) => nodes[producer.get(v) ?? -1]?.op === "constant";
  const runtimeInputs = (node: NodeDescription) => [...new Set((node.inputs ?? []).filter((v) => !isConstant(v)))];
  const movable = (node: NodeDescription) => !STAYS.has(node.op);
  const moved = new Set<number>();

  /** The largest region starting at node `start` with one way in and one way out. */
  const regionFrom = (start: number): { nodes: number[]; input: number; output: number } | undefined => {
    const first = nodes[start];
    const inputs = runtimeInputs(first);
    if (!movable(first) || inputs.length !== 1 || moved.has(start)) return undefined;
    const input = inputs[0];
    const members = [start];
    const made = new Set(first.outputs);
    let best: { nodes: number[]; input: number; output: number } | undefined;
    for (let j = start + 1; j < Math.min(nodes.length, start + REGION_SPAN); j++) {
      const node = nodes[j];
      const reads = runtimeInputs(node);
      if (moved.has(j) || !movable(node) || !reads.some((v) => made.has(v))) continue;
      if (!reads.every((v) => made.has(v) || v === input)) continue;
      members.push(j);
      for (const v of node.outputs) made.add(v);
      const inside = new Set(members);
      const leaving = [...made].filter((v) => outputs.has(v) || (readers.get(v) ?? []).some((r) => !inside.has(r)));
      if (leaving.length === 1 && !outputs.has(leaving[0]) && members.some((m) => HEAVY.has(nodes[m].op))) {
        best = { nodes: members.slice(), input, output: leaving[0] };
      }
    }
    if (best === undefined && HEAVY.has(first.op)) {
      const out = first.outputs[0];
      if (!outputs.has(out) && (readers.get(out) ?? []).length > 0) best = { nodes: [start], input, output: out };
    }
    return best;
  };

  /** Nodes to insert before a given original index (forks after the input, waits before the join). */
  const before = new Map<number, NodeDescription[]>();
  const insert = (at: number, node: NodeDescription) => before.set(at, [...(before.get(at) ?? []), node]);
  /** Where the wait of each forked branch's result sits. */
  const joinOf = new Map<number, number>();
  let forked = 0;
  for (let start = 0; start < nodes.length; start++) {
    const region = regionFrom(start);
    if (region === undefined) continue;
    const spec = hints.spec(region.input);
    if (spec === undefined) continue;
    // The input must exist in graph 0: made by a node that stays, or by the wait of an
    // earlier branch (then the fork goes after that wait).
    const made = producer.get(region.input);
    if (made !== undefined && moved.has(made) && !joinOf.has(region.input)) continue;
    const from = joinOf.get(region.input) ?? (made === undefined ? 0 : made + 1);
    const join = Math.min(...readers.get(region.output)!);
    const inside = new Set(region.nodes);
    let overlap = false;
    for (let i = from; i < join; i++) if (!inside.has(i) && !moved.has(i) && HEAVY.has(nodes[i].op)) overlap = true;
    if (!overlap) continue;
    source.graphs.push(subgraph(nodes, region.nodes, region.input, region.output, spec, isConstant));
    const future = graph.values++;
    insert(from, { op: "fork", graph: source.graphs.length - 1, inputs: [region.input], outputs: [future] });
    insert(join, { op: "wait", inputs: [future], outputs: [region.output] });
    for (const i of region.nodes) moved.add(i);
    joinOf.set(region.output, join);
    forked++;
  }
  if (forked === 0) return 0;
  const rebuilt: NodeDescription[] = [];
  nodes.forEach((node, index) => {
    rebuilt.push(...(before.get(index) ?? []));
    if (!moved.has(index)) rebuilt.push(node);
  });
  graph.nodes = rebuilt;
  return forked;
}

/** A graph running the `region` nodes on one input (`value`), with its own constants. */
function subgraph(
  nodes: NodeDescription[],
  region: number[],
  value: number,
  output: number,
  spec: { dtype: DType; shape: number[] },
  isConstant: (v: number) => boolean,
): GraphDescription {
  const renumbered = new Map<number, number>([[value, 0]]);
  const body: NodeDescription[] = [];
  let next = 1;
  const map = (v: number): number => {
    let mapped = renumbered.get(v);
    if (mapped === undefined) {
      mapped = next++;
      renumbered.set(v, mapped);
      if (isConstant(v)) {
        const constant = nodes.find((n) => n.op === "constant" && n.outputs[0] === v)!;
        body.push({ op: "constant", outputs: [mapped], tensor: constant.tensor });
      }
    }
    return mapped;
  };
  for (const index of region) {
    const node = nodes[index];
    const inputs = (node.inputs ?? []).map(map);
    body.push({ ...node, inputs, outputs: node.outputs.map(map) });
  }
  return {
    name: `branch_${nodes[region[0]].op}_${value}`,
    inputs: [{ dtype: spec.dtype, shape: spec.shape }],
    values: next,
    nodes: body,
    outputs: [renumbered.get(output)!],
  };
}

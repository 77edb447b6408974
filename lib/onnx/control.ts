/**
 * ONNX If, Loop and Scan → Spindle's native control-flow nodes (zig/src/interpreter/control.zig).
 * Each subgraph becomes a graph of the program: its formal inputs first, then every value it
 * reads from outer scopes that is computed at run time (captured, passed by the node as a
 * trailing input); outer constants fold into it. An If whose condition is a constant imports
 * only the branch it takes, inline. The node's eager results (which import needs, as for
 * every op) come from running the node natively on the eager values.
 *
 * @module
 */
import { SpindleError } from "../../ffi/status.ts";
import { type DType, type Tensor, tensor } from "../tensor.ts";
import {
  encodeImage,
  type GraphDescription,
  type InputDescription,
  type ParamValue,
  type ProgramSource,
} from "../program/format.ts";
import { Program } from "../program/program.ts";
import type { AttributeProto, GraphProto, NodeProto } from "./proto.ts";
import { fromProto, spindleDType } from "./host.ts";
import { fixedHost, GraphBuilder, type RuntimeValue, shapeOf, unsupported, type Value } from "./graph.ts";
import { valuesOf } from "./host.ts";

/** The subgraphs of a program being imported, after graph 0 (graph i + 1 is graphs[i]). */
export class Subgraphs {
  readonly graphs: GraphDescription[] = [];
  readonly tensors: ProgramSource["tensors"] = [];

  /** Adds a finished subgraph (its constants renumbered into the shared tensors). */
  add(source: ProgramSource): number {
    const offset = this.tensors.length;
    this.tensors.push(...source.tensors);
    const graph = source.graphs[0];
    for (const node of graph.nodes) if (node.op === "constant") node.tensor! += offset;
    this.graphs.push(graph);
    return this.graphs.length;
  }

  /** Where the subgraphs end now, for {@link Subgraphs.rollback}. */
  mark(): { graphs: number; tensors: number } {
    return { graphs: this.graphs.length, tensors: this.tensors.length };
  }

  /** Drops what was added after `mark` (an import attempt given up, nested graphs included). */
  rollback(mark: { graphs: number; tensors: number }): void {
    this.graphs.length = mark.graphs;
    this.tensors.length = mark.tensors;
  }

  /** Appends the subgraphs to the finished program `source` (graph 0 only so far). */
  appendTo(source: ProgramSource): void {
    if (source.graphs.length !== 1) throw new Error("subgraphs append to a program of one graph");
    const offset = source.tensors.length;
    for (const graph of this.graphs) {
      for (const node of graph.nodes) if (node.op === "constant") node.tensor! += offset;
      source.graphs.push(graph);
    }
    source.tensors.push(...this.tensors);
  }
}

/** What converting a subgraph needs from import.ts. */
export interface Scope {
  opset: number;
  subgraphs: Subgraphs;
  runCount: number;
  memoryBudget: number;
  /** Converts a graph's nodes into `b` (import.ts convertGraph), binding names in `values`. */
  convert(graph: GraphProto, b: GraphBuilder, values: Map<string, Value>): void;
}

export const CONTROL_OPS = new Set(["If", "Loop", "Scan"]);

function attribute(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attributes.find((a) => a.name === name);
}

function graphAttribute(node: NodeProto, name: string): GraphProto {
  const g = attribute(node, name)?.g;
  if (g === undefined) throw new RangeError(`${node.opType} has no '${name}' graph`);
  return g;
}

/** The names a graph reads from outer scopes, in order of first use (nested graphs too). */
export function freeNames(graph: GraphProto): string[] {
  const defined = new Set<string>([...graph.inputs.map((i) => i.name), ...graph.initializers.map((t) => t.name)]);
  const free: string[] = [];
  const use = (name: string) => {
    if (name !== "" && !defined.has(name) && !free.includes(name)) free.push(name);
  };
  for (const node of graph.nodes) {
    node.inputs.forEach(use);
    for (const a of node.attributes) if (a.g !== undefined) freeNames(a.g).forEach(use);
    node.outputs.forEach((name) => defined.add(name));
  }
  graph.outputs.forEach((o) => use(o.name));
  return free;
}

/** The names a node's subgraphs read from outer scopes. */
export function capturedNames(node: NodeProto): string[] {
  const names: string[] = [];
  for (const a of node.attributes) {
    if (a.g === undefined) continue;
    for (const name of freeNames(a.g)) if (!names.includes(name)) names.push(name);
  }
  return names;
}

/** A formal input of a subgraph: its declaration and its eager runs (borrowed). */
interface Formal {
  dtype: DType;
  shape: number[];
  runs: Tensor[];
  /** Axes whose size the eager runs must not fix (a carried value that changes shape). */
  dynamic?: readonly number[];
}

/** A converted subgraph: its program graph index and the outer values it captures. */
interface Built {
  index: number;
  captured: RuntimeValue[];
}

function valueDType(value: Value): DType {
  if (value.kind === "runtime") return value.dtype;
  return spindleDType(value.hosts[0].type) ?? unsupported(`a value of ONNX element type ${value.hosts[0].type}`);
}

/**
 * Converts subgraph `graph` into a program graph taking `formals` then `captures` (the outer
 * runtime values it reads, from `lookup`), and registers it.
 */
function buildSubgraph(
  scope: Scope,
  graph: GraphProto,
  formals: Formal[],
  captures: RuntimeValue[],
  lookup: (name: string) => Value,
): Built {
  const b = new GraphBuilder(formals.length + captures.length, scope.runCount);
  try {
    const values = new Map<string, Value>();
    for (const name of freeNames(graph)) {
      const outer = lookup(name);
      // A copy: a constant's value number belongs to the builder that numbered it.
      if (outer.kind === "const") values.set(name, { kind: "const", hosts: outer.hosts });
    }
    captures.forEach((outer, i) => {
      const inner = b.input(formals.length + i, outer.dtype, outer.runs, true);
      for (const name of freeNames(graph)) if (lookup(name) === outer) values.set(name, inner);
    });
    if (graph.inputs.length !== formals.length) {
      throw new RangeError(`subgraph '${graph.name}' takes ${graph.inputs.length} inputs, expected ${formals.length}`);
    }
    formals.forEach((formal, i) => {
      const inner = b.input(i, formal.dtype, formal.runs, true);
      if (formal.dynamic !== undefined && formal.dynamic.length > 0) {
        inner.open = formal.dynamic;
        for (const axis of formal.dynamic) b.markDynamic(inner, axis);
      }
      values.set(graph.inputs[i].name, inner);
    });
    for (const initializer of graph.initializers) {
      values.set(initializer.name, { kind: "const", hosts: [fromProto(initializer)] });
    }
    scope.convert(graph, b, values);
    const outputs = graph.outputs.map((o) =>
      values.get(o.name) ?? unsupported(`subgraph output '${o.name}' is never computed`)
    );
    const inputs: InputDescription[] = [
      ...formals.map((f) => ({ dtype: f.dtype, shape: f.shape })),
      ...captures.map((c) => ({ dtype: c.dtype, shape: shapeOf(c) })),
    ];
    const source = b.finish(graph.name, inputs, outputs);
    // Output shapes are open but where the file declares a size (a step may change them): a
    // loop of no steps makes its empty stacks of these, as onnxruntime does.
    source.graphs[0].results = outputs.map((v, i) => ({
      dtype: valueDType(v),
      shape: shapeOf(v).map((_, axis) => {
        const declared = graph.outputs[i].dims?.[axis];
        return typeof declared === "number" ? declared : -1;
      }),
    }));
    return { index: scope.subgraphs.add(source), captured: captures };
  } finally {
    b.dispose();
  }
}

/** The runtime outer values a node's subgraphs read (constants fold into them). */
function runtimeCaptures(node: NodeProto, lookup: (name: string) => Value): RuntimeValue[] {
  const captures: RuntimeValue[] = [];
  for (const name of capturedNames(node)) {
    const value = lookup(name);
    if (value.kind === "runtime" && !captures.includes(value)) captures.push(value);
  }
  return captures;
}

/** A scalar (shape []) of `dtype` holding `value`, one per run. */
function scalarRuns(dtype: DType, value: number, runCount: number): Tensor[] {
  return Array.from(
    { length: runCount },
    () =>
      dtype === "int64"
        ? tensor(new BigInt64Array([BigInt(value)]), [], { dtype })
        : dtype === "int32"
        ? tensor(new Int32Array([value]), [], { dtype })
        : tensor(new Float32Array([value]), [], { dtype }),
  );
}

/**
 * Runs one control-flow node natively on the eager values of its inputs: per run, a program
 * whose graph 0 holds the inputs as constants and the node, with every subgraph so far.
 */
function runEager(
  scope: Scope,
  b: GraphBuilder,
  node: { op: string; graphs: number[]; params?: Record<string, ParamValue> },
  inputs: Value[],
  outputCount: number,
): Tensor[][] {
  const runs: Tensor[][] = Array.from({ length: outputCount }, () => []);
  for (let r = 0; r < scope.runCount; r++) {
    const tensors: ProgramSource["tensors"] = [];
    const nodes: GraphDescription["nodes"] = inputs.map((value, i) => {
      const t = value.kind === "runtime" ? value.runs[r] : b.nativeConst(value, r);
      const data = t.toArray();
      tensors.push({
        dtype: t.dtype,
        shape: t.shape.slice(),
        data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      });
      return { op: "constant", outputs: [i], tensor: tensors.length - 1 };
    });
    const outputs = Array.from({ length: outputCount }, (_, i) => inputs.length + i);
    nodes.push({ ...node, inputs: inputs.map((_, i) => i), outputs });
    const wrapper: GraphDescription = { inputs: [], values: inputs.length + outputCount, nodes, outputs };
    const source: ProgramSource = { graphs: [wrapper], tensors };
    const shared = new Subgraphs();
    shared.graphs.push(...scope.subgraphs.graphs.map((g) => structuredClone(g)));
    shared.tensors.push(...scope.subgraphs.tensors);
    shared.appendTo(source);
    let program: Program | undefined;
    try {
      program = Program.load(encodeImage(source), scope.memoryBudget);
      program.runSync([]).forEach((t, i) => runs[i].push(t));
    } catch (error) {
      if (!(error instanceof SpindleError)) throw error;
      // The load-time check names the stand-in program's own graph 0 node: say what ran.
      const reason = error.message.replace(/^model: [^:]*: graph 0 node \d+ \(\w+\): /, "");
      throw new SpindleError(error.status, `running it on import's stand-in inputs: ${reason}`, { cause: error });
    } finally {
      program?.dispose();
    }
  }
  return runs;
}

/** A control-flow node being converted, and what converting it needs. */
interface ControlNode {
  scope: Scope;
  b: GraphBuilder;
  node: NodeProto;
  inputs: (Value | undefined)[];
  /** The value of an outer name a subgraph reads. */
  lookup: (name: string) => Value;
}

/** Converts an If, Loop or Scan node; returns its outputs. */
export function convertControl(
  scope: Scope,
  b: GraphBuilder,
  node: NodeProto,
  inputs: (Value | undefined)[],
  lookup: (name: string) => Value,
): Value[] {
  const c: ControlNode = { scope, b, node, inputs, lookup };
  switch (node.opType) {
    case "If":
      return convertIf(c);
    case "Loop":
      return convertLoop(c);
    case "Scan":
      return convertScan(c);
  }
  return unsupported(`control-flow op ${node.opType}`);
}

function convertIf(c: ControlNode): Value[] {
  const { scope, b, node, inputs, lookup } = c;
  const cond = inputs[0] ?? unsupported("If without a condition");
  const thenGraph = graphAttribute(node, "then_branch");
  const elseGraph = graphAttribute(node, "else_branch");
  const host = fixedHost(cond);
  if (host !== undefined) {
    // A constant condition: the branch taken is known, so it is imported inline.
    const values = valuesOf(host);
    if (values.length !== 1) throw new RangeError(`If's condition has ${values.length} values, expected one`);
    const branch = values[0] !== 0 ? thenGraph : elseGraph;
    const scopeValues = new Map<string, Value>();
    for (const name of freeNames(branch)) scopeValues.set(name, lookup(name));
    for (const t of branch.initializers) scopeValues.set(t.name, { kind: "const", hosts: [fromProto(t)] });
    scope.convert(branch, b, scopeValues);
    return branch.outputs.map((o) =>
      scopeValues.get(o.name) ?? unsupported(`If branch output '${o.name}' is never computed`)
    );
  }
  const captures = runtimeCaptures(node, lookup);
  const thenBuilt = buildSubgraph(scope, thenGraph, [], captures, lookup);
  const elseBuilt = buildSubgraph(scope, elseGraph, [], captures, lookup);
  const description = { op: "if", graphs: [thenBuilt.index, elseBuilt.index] };
  const nodeInputs = [cond, ...captures];
  const runs = runEager(scope, b, description, nodeInputs, node.outputs.length);
  const outputs = b.emitNode(description, nodeInputs, runs);
  // The branches may make outputs of different shapes: every dim is open.
  for (const output of outputs) {
    for (let axis = 0; axis < output.runs[0].shape.length; axis++) b.markDynamic(output, axis);
  }
  return outputs;
}

function convertLoop(c: ControlNode): Value[] {
  const { scope, b, node, inputs, lookup } = c;
  const body = graphAttribute(node, "body");
  const tripCount = inputs[0];
  const condition = inputs[1];
  const carried = inputs.slice(2).map((v, i) => v ?? unsupported(`Loop's carried input ${i} is missing`));
  if (body.inputs.length !== 2 + carried.length) {
    throw new RangeError(`Loop's body takes ${body.inputs.length} inputs for ${carried.length} carried values`);
  }
  const condDType = spindleDType(body.inputs[1].elemType) ?? "int32";
  const counters: Formal[] = [
    { dtype: "int64", shape: [], runs: scalarRuns("int64", 0, scope.runCount) },
    { dtype: condDType, shape: [], runs: scalarRuns(condDType, 1, scope.runCount) },
  ];
  // The body is built with the carried values' first sizes, which shape computations on them
  // fold. A carried value whose size changes over the steps (a sequence that grows) is seen
  // in the eager run: the body is built again with those axes open (or every axis, when the
  // folded sizes made the eager run fail), at most twice.
  const dynamic = carried.map(() => new Set<number>());
  try {
    for (let attempt = 0;; attempt++) {
      const mark = scope.subgraphs.mark();
      const formals: Formal[] = [
        ...counters,
        ...carried.map((v, i) => ({
          dtype: valueDType(v),
          shape: shapeOf(v).map(() => -1),
          runs: Array.from(
            { length: scope.runCount },
            (_, r) => v.kind === "runtime" ? v.runs[r] : b.nativeConst(v, r),
          ),
          dynamic: [...dynamic[i]],
        })),
      ];
      const captures = runtimeCaptures(node, lookup);
      const params = {
        carried: carried.length,
        trip_count: tripCount !== undefined,
        condition: condition !== undefined,
      };
      const nodeInputs = [
        ...(tripCount === undefined ? [] : [tripCount]),
        ...(condition === undefined ? [] : [condition]),
        ...carried,
        ...captures,
      ];
      let runs: Tensor[][];
      let description;
      try {
        const built = buildSubgraph(scope, body, formals, captures, lookup);
        description = { op: "loop", graphs: [built.index], params };
        runs = runEager(scope, b, description, nodeInputs, node.outputs.length);
      } catch (error) {
        if (attempt >= 2 || !(error instanceof SpindleError)) throw error;
        scope.subgraphs.rollback(mark);
        carried.forEach((v, i) => shapeOf(v).forEach((_, axis) => dynamic[i].add(axis)));
        continue;
      }
      const opened = openedAxes(carried, runs, b, dynamic);
      if (opened && attempt < 2) {
        for (const output of runs) for (const t of output) t.dispose();
        scope.subgraphs.rollback(mark);
        continue;
      }
      const outputs = b.emitNode(description, nodeInputs, runs);
      // How many steps run depends on values: stacked outputs' first dim is open, and so is
      // every axis of a carried value along which it changed.
      for (const output of outputs.slice(carried.length)) b.markDynamic(output, 0);
      carried.forEach((_, i) => {
        if (dynamic[i].size === 0) return;
        outputs[i].open = [...dynamic[i]];
        for (const axis of dynamic[i]) b.markDynamic(outputs[i], axis);
      });
      checkCarriedShapes(carried, outputs, "Loop", dynamic);
      return outputs;
    }
  } finally {
    for (const formal of counters) for (const t of formal.runs) t.dispose();
  }
}

/**
 * Adds to `dynamic` the axes along which a carried value's eager result differs from its
 * initial value in some run; whether any was added.
 */
function openedAxes(carried: Value[], runs: Tensor[][], b: GraphBuilder, dynamic: Set<number>[]): boolean {
  let opened = false;
  carried.forEach((v, i) => {
    runs[i].forEach((result, r) => {
      const initial = v.kind === "runtime" ? v.runs[r] : b.nativeConst(v, r);
      if (result.shape.length !== initial.shape.length) return; // refused by checkCarriedShapes
      result.shape.forEach((d, axis) => {
        if (d !== initial.shape[axis] && !dynamic[i].has(axis)) {
          dynamic[i].add(axis);
          opened = true;
        }
      });
    });
  });
  return opened;
}

/**
 * A carried value whose shape changes from step to step would have been imported with its
 * first step's sizes as constants (shape computations on it fold): refuse it.
 */
function checkCarriedShapes(carried: Value[], outputs: RuntimeValue[], op: string, open?: Set<number>[]): void {
  carried.forEach((value, i) => {
    const masked = (shape: number[]) => shape.map((d, axis) => (open?.[i].has(axis) ? -1 : d)).join(",");
    const before = masked(shapeOf(value));
    const after = masked(shapeOf(outputs[i]));
    if (before !== after) {
      throw new SpindleError(
        "unsupported",
        `${op} carried value ${i} changes shape over the steps ([${before}] to [${after}]), which Spindle does not import yet`,
      );
    }
  });
}

function convertScan(c: ControlNode): Value[] {
  const { scope, b, node, inputs, lookup } = c;
  if (scope.opset < 9) return convertBatchedScan(c);
  const body = graphAttribute(node, "body");
  const scanInputs = Number(attribute(node, "num_scan_inputs")?.i ?? 0);
  const all = inputs.map((v, i) => v ?? unsupported(`Scan input ${i} is missing`));
  const carried = all.length - scanInputs;
  if (scanInputs < 1 || carried < 0) {
    throw new RangeError(`Scan has ${all.length} inputs and ${scanInputs} scan inputs`);
  }
  const scanOutputs = node.outputs.length - carried;
  const ints = (name: string, count: number) => {
    const a = attribute(node, name);
    const list = a === undefined ? Array(count).fill(0) : a.ints.map(Number);
    if (list.length !== count) throw new RangeError(`Scan's ${name} lists ${list.length} values for ${count}`);
    return list;
  };
  const inputAxes = ints("scan_input_axes", scanInputs);
  const inputReverse = ints("scan_input_directions", scanInputs);
  const outputAxes = ints("scan_output_axes", scanOutputs);
  const outputReverse = ints("scan_output_directions", scanOutputs);
  const owned: Tensor[] = [];
  const slices = all.slice(carried).map((v, i) => {
    const rank = shapeOf(v).length;
    const axis = inputAxes[i] < 0 ? inputAxes[i] + rank : inputAxes[i];
    if (axis < 0 || axis >= rank) throw new RangeError(`Scan input axis ${inputAxes[i]} for rank ${rank}`);
    const runs = Array.from({ length: scope.runCount }, (_, r) => {
      const t = v.kind === "runtime" ? v.runs[r] : b.nativeConst(v, r);
      const dims = t.shape.filter((_, a) => a !== axis);
      const first = t.shape[axis] === 0 ? zeros(t.dtype, dims) : sliceFirst(t, axis, dims);
      owned.push(first);
      return first;
    });
    return { dtype: valueDType(v), shape: shapeOf(v).filter((_, a) => a !== axis).map(() => -1), runs };
  });
  try {
    const formals: Formal[] = [
      ...all.slice(0, carried).map((v) => ({
        dtype: valueDType(v),
        shape: shapeOf(v).map(() => -1),
        runs: Array.from({ length: scope.runCount }, (_, r) => v.kind === "runtime" ? v.runs[r] : b.nativeConst(v, r)),
      })),
      ...slices,
    ];
    const captures = runtimeCaptures(node, lookup);
    const built = buildSubgraph(scope, body, formals, captures, lookup);
    const params = {
      carried,
      scan_inputs: scanInputs,
      input_axes: inputAxes,
      input_reverse: inputReverse,
      output_axes: outputAxes,
      output_reverse: outputReverse,
    };
    const description = { op: "scan", graphs: [built.index], params };
    const nodeInputs = [...all, ...captures];
    const runs = runEager(scope, b, description, nodeInputs, node.outputs.length);
    const outputs = b.emitNode(description, nodeInputs, runs);
    checkCarriedShapes(all.slice(0, carried), outputs, "Scan");
    return outputs;
  } finally {
    for (const t of owned) t.dispose();
  }
}

/**
 * Scan of opset 8: inputs [sequence_lens, state…, scanned…] with a batch axis first on
 * all (time is axis 1 of scanned inputs and outputs). Without sequence lengths it is a scan
 * over the batch whose body is a scan over time: the outer one slices axis 0 of every input
 * and stacks every output at axis 0, the inner one is opset 9's with the file's body.
 */
function convertBatchedScan(c: ControlNode): Value[] {
  const { scope, b, node, inputs, lookup } = c;
  if (inputs[0] !== undefined) unsupported("Scan (opset 8) with sequence_lens");
  const body = graphAttribute(node, "body");
  const scanInputs = Number(attribute(node, "num_scan_inputs")?.i ?? 0);
  const all = inputs.slice(1).map((v, i) => v ?? unsupported(`Scan input ${i + 1} is missing`));
  const carried = all.length - scanInputs;
  if (scanInputs < 1 || carried < 0) {
    throw new RangeError(`Scan has ${all.length} inputs and ${scanInputs} scan inputs`);
  }
  const directions = attribute(node, "directions")?.ints.map(Number) ?? Array(scanInputs).fill(0);
  if (directions.length !== scanInputs) throw new RangeError(`Scan's directions list ${directions.length} values`);
  const scanOutputs = node.outputs.length - carried;
  const owned: Tensor[] = [];
  /** The first slice along axis 0, `times` over (a state per batch entry, a step of it). */
  const firstSlices = (v: Value, times: number): Formal => {
    const runs = Array.from({ length: scope.runCount }, (_, r) => {
      let t = v.kind === "runtime" ? v.runs[r] : b.nativeConst(v, r);
      for (let i = 0; i < times; i++) {
        if (t.shape[0] === 0) unsupported("Scan (opset 8) over an empty batch or sequence at import");
        t = sliceFirst(t, 0, t.shape.slice(1));
        owned.push(t);
      }
      return t;
    });
    return { dtype: valueDType(v), shape: runs[0].shape.map(() => -1), runs };
  };
  try {
    const captures = runtimeCaptures(node, lookup);
    const formals = all.map((v, i) => firstSlices(v, i < carried ? 1 : 2));
    const inner = buildSubgraph(scope, body, formals, captures, lookup);
    // The per-batch-entry graph: [state…, scanned…, captured…] → one inner scan over time.
    const count = all.length + captures.length;
    const outputs = Array.from({ length: node.outputs.length }, (_, i) => count + i);
    const perEntry: GraphDescription = {
      name: `${body.name}_batch_entry`,
      inputs: [
        ...all.map((v) => ({ dtype: valueDType(v), shape: shapeOf(v).slice(1).map(() => -1) })),
        ...captures.map((c) => ({ dtype: c.dtype, shape: shapeOf(c) })),
      ],
      values: count + node.outputs.length,
      nodes: [{
        op: "scan",
        inputs: Array.from({ length: count }, (_, i) => i),
        outputs,
        graphs: [inner.index],
        params: { carried, scan_inputs: scanInputs, input_reverse: directions },
      }],
      outputs,
    };
    const entryIndex = scope.subgraphs.add({ graphs: [perEntry], tensors: [] });
    const description = {
      op: "scan",
      graphs: [entryIndex],
      params: { carried: 0, scan_inputs: all.length },
    };
    const nodeInputs = [...all, ...captures];
    const runs = runEager(scope, b, description, nodeInputs, node.outputs.length);
    if (scanOutputs < 0) throw new RangeError(`Scan has ${node.outputs.length} outputs for ${carried} states`);
    return b.emitNode(description, nodeInputs, runs);
  } finally {
    for (const t of owned) t.dispose();
  }
}

function zeros(dtype: DType, shape: number[]): Tensor {
  const count = shape.reduce((a, d) => a * d, 1);
  const data = dtype === "int64"
    ? new BigInt64Array(count)
    : dtype === "int32"
    ? new Int32Array(count)
    : new Float32Array(count);
  return tensor(data, shape, { dtype });
}

/** The first slice of `t` along `axis`, the axis dropped (a scan body's first step). */
function sliceFirst(t: Tensor, axis: number, dims: number[]): Tensor {
  const data = t.toArray();
  const outer = t.shape.slice(0, axis).reduce((a, d) => a * d, 1);
  const inner = t.shape.slice(axis + 1).reduce((a, d) => a * d, 1);
  const length = t.shape[axis];
  const parts = Array.from({ length: outer }, (_, o) => data.subarray(o * length * inner, o * length * inner + inner));
  if (data instanceof BigInt64Array) {
    const target = new BigInt64Array(outer * inner);
    parts.forEach((part, o) => target.set(part as BigInt64Array, o * inner));
    return tensor(target, dims, { dtype: t.dtype });
  }
  const target = data instanceof Int32Array ? new Int32Array(outer * inner) : new Float32Array(outer * inner);
  parts.forEach((part, o) => target.set(part as Float32Array, o * inner));
  return tensor(target, dims, { dtype: t.dtype });
}

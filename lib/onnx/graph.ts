/**
 * The graph builder ONNX import emits into. Every emitted op also runs eagerly on dummy
 * inputs (zeros; a dynamic dimension gets two different sizes in two runs), which gives
 * each value its shape as Spindle itself computes it, with no shape-inference rules to keep
 * in sync. Ops whose inputs are all constants are folded at import; a dimension that differs
 * between the runs is dynamic. What is computed from a dynamic dimension (Shape of a value
 * whose size varies, and the arithmetic on it) stays in the graph as int64 ops, so nothing
 * is folded from the made-up sizes.
 *
 * @module
 */
import { SpindleError } from "../../ffi/status.ts";
import { type OpName, type ParamsOf, runOp } from "../ops/dispatch.ts";
import { type DType, type Tensor, tensor, tensorFromBytes, zeros } from "../tensor.ts";
import type { GraphDescription, NodeDescription, ParamValue, ProgramSource } from "../program/format.ts";
import { standInShape } from "./stand_in.ts";
import { bytesOf, type Host, numel, onnxType, sameHost, spindleDType, valuesOf } from "./host.ts";

/** A value computed at run time (its eager results on the dummy inputs, one per run). */
export interface RuntimeValue {
  kind: "runtime";
  id: number;
  dtype: DType;
  runs: Tensor[];
  /** The node that makes it (fusions rewrite it in place). */
  node?: NodeDescription;
  /**
   * Whether it derives from the shape of a runtime value (shape_of): its contents matter
   * to sizes, so its eager results are always computed (see stand_in.ts).
   */
  shapeDerived?: boolean;
  /** A graph input's declared ONNX element type (CastLike reads a narrow one, which rides in `dtype`). */
  elemType?: number;
  /**
   * Axes open whatever the eager runs say: a Loop body's carried value that changes size over
   * the steps, which every eager run starts at the same size (lib/onnx/control.ts).
   */
  open?: readonly number[];
}

/** A constant (per run when it derives from a dynamic dimension, e.g. Shape). */
export interface ConstValue {
  kind: "const";
  hosts: Host[];
  id?: number;
  native?: Tensor[];
}

/** A value of the graph being built. */
export type Value = RuntimeValue | ConstValue;

/** Throws SpindleError "unsupported". */
export function unsupported(message: string): never {
  throw new SpindleError("unsupported", message);
}

/** Builds one Spindle graph while running it eagerly on dummy inputs. */
export class GraphBuilder {
  readonly nodes: NodeDescription[] = [];
  readonly tensors: ProgramSource["tensors"] = [];
  readonly runCount: number;
  /**
   * The dtype and shape of each runtime value (graph inputs and op outputs); -1 marks a
   * dimension that differs between the eager runs (a dynamic one).
   */
  readonly specs = new Map<number, { dtype: DType; shape: number[] }>();
  #nextValue: number;
  #owned: Tensor[] = [];
  /**
   * Stand-in zeros by shape, shared by every value whose stand-in has that shape (nothing
   * writes an eager tensor in place), with the number of values holding each: filling a fresh
   * zero tensor per heavy or elementwise op was a third of an import's time.
   */
  #standIns = new Map<string, Tensor>();
  #holders = new Map<Tensor, number>();
  #runsOf = new Map<number, { shape: number[] }[]>();

  constructor(inputCount: number, runCount: number) {
    this.#nextValue = inputCount;
    this.runCount = runCount;
  }

  /**
   * A graph input (value `index`) with its dummy tensors; `borrowed` ones (a subgraph's view
   * of its caller's values) stay the caller's to free.
   */
  input(index: number, dtype: DType, runs: Tensor[], borrowed = false): RuntimeValue {
    if (!borrowed) this.#owned.push(...runs);
    this.#record(index, runs);
    return { kind: "runtime", id: index, dtype, runs };
  }

  /** The value number of a constant, adding the tensor and its constant node on first use. */
  constId(value: ConstValue): number {
    if (value.id !== undefined) return value.id;
    const first = value.hosts[0];
    if (!value.hosts.every((h) => sameHost(h, first))) {
      unsupported("a shape computation depends on a dynamic input dimension and feeds a tensor op");
    }
    const dtype = spindleDType(first.type);
    if (dtype === undefined) unsupported(`constants of ONNX element type ${first.type}`);
    this.tensors.push({ dtype, shape: first.shape, data: bytesOf(first) });
    value.id = this.#nextValue++;
    this.nodes.push({ op: "constant", outputs: [value.id], tensor: this.tensors.length - 1 });
    return value.id;
  }

  /** The native tensor of a constant in run `run` (created once). */
  nativeConst(value: ConstValue, run: number): Tensor {
    value.native ??= value.hosts.map((h) => {
      const dtype = spindleDType(h.type) ?? unsupported(`constants of ONNX element type ${h.type}`);
      // Copied once, natively, straight from the file's bytes (no aligned JavaScript copy).
      const t = tensorFromBytes(bytesOf(h), h.shape.slice(), dtype);
      this.#owned.push(t);
      return t;
    });
    return value.native[Math.min(run, value.native.length - 1)];
  }

  /**
   * Emits native op `op` on `inputs` with `params`, or folds it when all are constant.
   * `dataDependent` (an op whose output size depends on input values, such as Range over
   * values read from a graph input): the stand-in inputs are zeros, on which such an op may
   * fail or say nothing of real sizes, so a failed eager run stands in an empty 1-D tensor of
   * `dataDependent.dtype` and every dim of the value is dynamic.
   */
  emit<K extends OpName>(
    op: K,
    inputs: readonly Value[],
    params: ParamsOf<K> = {} as ParamsOf<K>,
    dataDependent?: { dtype: DType },
  ): Value {
    if (inputs.every((v) => v.kind === "const")) {
      const runs = Math.max(1, ...inputs.map((v) => (v as ConstValue).hosts.length));
      const hosts: Host[] = [];
      for (let r = 0; r < runs; r++) {
        const result = runOp(op, inputs.map((v) => this.nativeConst(v as ConstValue, r)), params);
        hosts.push(toHost(result));
        result.dispose();
      }
      return { kind: "const", hosts };
    }
    const shapeDerived = op === "shape_of" || inputs.some((v) => v.kind === "runtime" && v.shapeDerived === true);
    const runs: Tensor[] = [];
    let unknown = false;
    for (let r = 0; r < this.runCount; r++) {
      try {
        const operands = inputs.map((v) => this.#tensorOf(v, r));
        const standIn = standInShape(op, operands, params, !shapeDerived);
        runs.push(standIn === undefined ? runOp(op, operands, params) : this.#standIn(standIn));
      } catch (error) {
        const madeUp = this.#madeUpIndices(op, inputs, error, r, params);
        if (madeUp !== null) {
          runs.push(madeUp);
          continue;
        }
        if (dataDependent === undefined || !(error instanceof SpindleError)) throw error;
        const dtype = dataDependent.dtype;
        const empty = dtype === "int64"
          ? new BigInt64Array(0)
          : dtype === "int32"
          ? new Int32Array(0)
          : new Float32Array(0);
        runs.push(tensor(empty, [0], { dtype: dataDependent.dtype }));
        unknown = true;
      }
    }
    this.#owned.push(...runs.filter((t) => !this.#holders.has(t)));
    const node: NodeDescription = {
      op,
      inputs: inputs.map((v) => (v.kind === "runtime" ? v.id : this.constId(v))),
      outputs: [this.#nextValue++],
      params: { ...params } as Record<string, ParamValue>,
    };
    this.nodes.push(node);
    this.#record(node.outputs[0], runs);
    if (unknown || dataDependent !== undefined) this.specs.get(node.outputs[0])!.shape.fill(-1);
    return { kind: "runtime", id: node.outputs[0], dtype: runs[0].dtype, runs, node, shapeDerived };
  }

  /**
   * Emits a node with several outputs whose eager runs the caller computed (a control-flow
   * node: lib/onnx/control.ts runs it natively); `runs[i][r]` is output i in run r, which the
   * builder now owns.
   */
  emitNode(
    node: Omit<NodeDescription, "inputs" | "outputs">,
    inputs: readonly Value[],
    runs: Tensor[][],
  ): RuntimeValue[] {
    const ids = inputs.map((v) => (v.kind === "runtime" ? v.id : this.constId(v)));
    const description: NodeDescription = { ...node, inputs: ids, outputs: runs.map(() => this.#nextValue++) };
    this.nodes.push(description);
    return runs.map((outputRuns, i) => {
      this.#owned.push(...outputRuns);
      const id = description.outputs[i];
      this.#record(id, outputRuns);
      return { kind: "runtime", id, dtype: outputRuns[0].dtype, runs: outputRuns, node: description };
    });
  }

  /** Marks axis `axis` of runtime value `value` as dynamic (a loop's step count). */
  markDynamic(value: RuntimeValue, axis: number): void {
    const spec = this.specs.get(value.id);
    if (spec !== undefined && axis < spec.shape.length) spec.shape[axis] = -1;
  }

  /** The shape of runtime value `value` in eager run `run` (graph inputs included). */
  specShape(value: number, run: number): number[] {
    const runs = this.#runsOf.get(value) ?? unsupported(`value ${value} has no eager runs`);
    return runs[run].shape.slice();
  }

  #record(value: number, runs: readonly Tensor[]): void {
    this.#runsOf.set(value, runs.map((t) => ({ shape: t.shape.slice() })));
    const shape = runs[0].shape.map((d, axis) => (runs.every((t) => t.shape[axis] === d) ? d : -1));
    this.specs.set(value, { dtype: runs[0].dtype, shape });
  }

  #tensorOf(value: Value, run: number): Tensor {
    return value.kind === "runtime" ? value.runs[run] : this.nativeConst(value, run);
  }

  /**
   * Zeros standing in for a `take` whose indices derive from the made-up sizes of this run and
   * fell out of range: positions 0..seq-1 gathered from a table of 64 position embeddings when
   * the run made seq up as 128. onnxruntime loads such a model; so must import, which only
   * needs the result's shape (the indices' shape with the table's other dims). Null for any
   * other failure, which stays the model's.
   */
  #madeUpIndices(op: string, inputs: readonly Value[], error: unknown, run: number, params: object): Tensor | null {
    if (op !== "take" || !(error instanceof SpindleError) || error.code !== "index_out_of_range") return null;
    const [data, indices] = inputs;
    if (indices?.kind !== "runtime" || indices.shapeDerived !== true) return null;
    const table = this.#tensorOf(data, run);
    const at = this.#tensorOf(indices, run);
    const rank = table.shape.length;
    const axis = (params as { axis?: number }).axis ?? 0;
    const dim = axis < 0 ? axis + rank : axis;
    if (!(dim >= 0 && dim < rank)) return null;
    const shape = [...table.shape.slice(0, dim), ...at.shape, ...table.shape.slice(dim + 1)];
    return zeros(shape, { dtype: table.dtype });
  }

  /** A shared stand-in of zeros of `shape` (see #standIns), one more holder counted. */
  #standIn(shape: number[]): Tensor {
    const key = shape.join(",");
    let t = this.#standIns.get(key);
    if (t === undefined) {
      t = zeros(shape);
      this.#standIns.set(key, t);
    }
    this.#holders.set(t, (this.#holders.get(t) ?? 0) + 1);
    return t;
  }

  /** Frees the eager tensors of a value nothing reads any more (a shared stand-in at its last holder). */
  release(value: Value): void {
    if (value.kind !== "runtime") return;
    for (const t of value.runs) {
      const holders = this.#holders.get(t);
      if (holders === undefined) t.dispose();
      else if (holders > 1) this.#holders.set(t, holders - 1);
      else {
        this.#holders.delete(t);
        this.#standIns.delete(t.shape.join(","));
        t.dispose();
      }
    }
  }

  /** Frees every eager tensor. */
  dispose(): void {
    for (const t of this.#owned) t.dispose();
    for (const t of this.#holders.keys()) t.dispose();
    this.#owned = [];
    this.#standIns.clear();
    this.#holders.clear();
  }

  /**
   * The finished graph: nodes no output depends on are dropped, and so are the tensors of
   * dropped constants.
   */
  finish(name: string, inputs: GraphDescription["inputs"], outputs: Value[]): ProgramSource {
    const outputIds = outputs.map((v) => (v.kind === "runtime" ? v.id : this.constId(v)));
    const live = new Set<number>(outputIds);
    const kept: NodeDescription[] = [];
    // Fusions add constants (a folded bias, scaled weights) after the node that reads them;
    // constants read nothing, so all of them go first (a stable sort keeps the rest in order).
    const ordered = this.nodes.slice().sort((a, b) => Number(b.op === "constant") - Number(a.op === "constant"));
    for (let i = ordered.length - 1; i >= 0; i--) {
      const node = ordered[i];
      if (!node.outputs.some((v) => live.has(v))) continue;
      for (const v of node.inputs ?? []) live.add(v);
      kept.push(node);
    }
    kept.reverse();

    const tensors: ProgramSource["tensors"] = [];
    for (const node of kept) {
      if (node.op !== "constant") continue;
      tensors.push(this.tensors[node.tensor!]);
      node.tensor = tensors.length - 1;
    }
    return {
      graphs: [{ name, inputs, values: this.#nextValue, nodes: kept, outputs: outputIds }],
      tensors,
    };
  }
}

/** Copies a native tensor into a host constant. */
export function toHost(t: Tensor): Host {
  const data = t.toArray();
  const values = data instanceof BigInt64Array ? Array.from(data, Number) : Array.from(data);
  return { type: onnxType(t.dtype), shape: t.shape.slice(), values };
}

/** The static shape of a value: -1 where the runs disagree (a dynamic dimension). */
export function shapeOf(value: Value): number[] {
  const shapes = value.kind === "runtime" ? value.runs.map((t) => t.shape) : value.hosts.map((h) => h.shape);
  const first = shapes[0];
  if (shapes.some((s) => s.length !== first.length)) unsupported("a value whose rank depends on a dynamic dimension");
  const open = value.kind === "runtime" ? value.open : undefined;
  return first.map((d, i) => (open?.includes(i) !== true && shapes.every((s) => s[i] === d) ? d : -1));
}

/** The shape of a value in one run. */
export function runShape(value: Value, run: number): readonly number[] {
  return value.kind === "runtime" ? value.runs[run].shape : value.hosts[Math.min(run, value.hosts.length - 1)].shape;
}

/** The single host of a constant that is the same in every run, else undefined. */
export function fixedHost(value: Value | undefined): Host | undefined {
  if (value === undefined || value.kind !== "const") return undefined;
  const first = value.hosts[0];
  return value.hosts.every((h) => sameHost(h, first)) ? first : undefined;
}

/** Integer values of a constant that must not vary between runs. */
export function constInts(value: Value | undefined, what: string): number[] {
  const h = fixedHost(value) ?? unsupported(`${what} must be a constant`);
  return valuesOf(h);
}

/** Whether a value holds exactly one element. */
export function isScalar(value: Value): boolean {
  return numel(shapeOf(value)) === 1;
}

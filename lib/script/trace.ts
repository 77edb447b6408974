/**
 * Tracing: while a scripted function runs under a trace, every op runs eagerly (so shapes
 * are concrete) and is recorded as a graph node. Tensors read by an op that the graph did
 * not produce become constants (captured weights). `fork` of a scripted function records a
 * fork node and traces the callee as a graph of its own — once per input signature, however
 * often it is forked; `wait` records a wait node.
 *
 * This module holds the tracing state only; ops, fork and wait call into it.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import type { GraphDescription, InputDescription, NodeDescription, ProgramSource } from "../program/format.ts";

/**
 * Thrown when a function cannot be traced (e.g. it reads tensor values to branch on them).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { relu, script, sum, type Tensor, tensor, TracingError } from "@spindle/spindle";
 * const branchy = script((x: Tensor) => (sum(x).toArray()[0] > 0 ? relu(x) : x));
 * using x = tensor([1, -2]);
 * assert.throws(() => branchy(x), TracingError);
 * ```
 */
export class TracingError extends Error {
  /**
   * Creates the error.
   *
   * @param message What the traced function did that a graph cannot express.
   */
  constructor(message: string) {
    super(message);
    this.name = "TracingError";
  }
}

interface GraphTrace {
  /** The graph's index in the program. */
  index: number;
  name: string;
  inputs: InputDescription[];
  nodes: NodeDescription[];
  values: Map<Tensor, number>;
  futures: Map<object, number>;
  count: number;
}

/** A graph traced for a function: its index and the outputs of the eager run that traced it. */
export interface TracedGraph {
  index: number;
  outputs: readonly Tensor[];
}

/** One trace: graphs (0 is the entry), captured constants, and tensors made while tracing. */
export class Trace {
  readonly graphs: GraphDescription[] = [];
  readonly source: ProgramSource = { graphs: [], tensors: [] };
  readonly created: Tensor[] = [];
  readonly #constants = new Map<Tensor, number>();
  readonly #stack: GraphTrace[] = [];
  /** Per graph, the shape of each input and op output while tracing (for the optimiser). */
  readonly #shapes: Map<number, number[]>[] = [];
  /** Per function, per input signature: its graph, or null while it is being traced. */
  readonly #traced = new Map<object, Map<string, TracedGraph | null>>();

  /**
   * The graph traced for `fn` on inputs of `signature`: undefined if there is none yet, null
   * while it is still being traced (a fork of it now would be a graph forking itself).
   */
  tracedGraph(fn: object, signature: string): TracedGraph | null | undefined {
    return this.#traced.get(fn)?.get(signature);
  }

  /** Records the graph of `fn` for `signature` (null: its trace has begun). */
  rememberGraph(fn: object, signature: string, graph: TracedGraph | null): void {
    let bySignature = this.#traced.get(fn);
    if (bySignature === undefined) this.#traced.set(fn, bySignature = new Map());
    bySignature.set(signature, graph);
  }

  /** Starts a graph whose inputs are `inputs`; returns its index. */
  beginGraph(name: string, inputs: readonly Tensor[]): number {
    const graph: GraphTrace = {
      index: this.graphs.length,
      name,
      inputs: inputs.map((t) => ({ dtype: t.dtype, shape: [...t.shape] })),
      nodes: [],
      values: new Map(),
      futures: new Map(),
      count: 0,
    };
    const shapes = new Map<number, number[]>();
    for (const input of inputs) {
      if (!graph.values.has(input)) graph.values.set(input, graph.count);
      shapes.set(graph.count, [...input.shape]);
      graph.count++;
    }
    const index = this.graphs.length;
    this.#shapes.push(shapes);
    this.graphs.push({ name, inputs: graph.inputs, values: 0, nodes: graph.nodes, outputs: [] });
    this.#stack.push(graph);
    return index;
  }

  /** Ends the innermost graph with `outputs`. */
  endGraph(index: number, outputs: readonly Tensor[]): void {
    const graph = this.#stack.pop()!;
    const description = this.graphs[index];
    description.outputs = outputs.map((t) => this.#valueOf(graph, t));
    description.results = outputs.map((t) => ({ dtype: t.dtype, shape: [...t.shape] }));
    description.values = graph.count;
  }

  #valueOf(graph: GraphTrace, t: Tensor): number {
    const known = graph.values.get(t);
    if (known !== undefined) return known;
    // Not produced in this graph: capture it as a constant.
    let index = this.#constants.get(t);
    if (index === undefined) {
      index = this.source.tensors.length;
      const data = readForCapture(t);
      this.source.tensors.push({ dtype: t.dtype, shape: [...t.shape], data });
      this.#constants.set(t, index);
    }
    const value = graph.count++;
    graph.nodes.push({ op: "constant", outputs: [value], tensor: index });
    graph.values.set(t, value);
    this.#shapes[graph.index].set(value, [...t.shape]);
    return value;
  }

  #current(): GraphTrace {
    return this.#stack[this.#stack.length - 1];
  }

  /** Records `op(inputs, params) = output` in the innermost graph. */
  recordOp(op: string, inputs: readonly Tensor[], params: object, output: Tensor): void {
    const graph = this.#current();
    this.created.push(output);
    // Constant folding: an op whose inputs are all captured constants (weights, or results of
    // ops folded so) computes the same value on every run, so the graph does not run it: its
    // eager result is captured as a constant where something reads it (transpose(weight) in
    // a linear layer becomes the transposed weight).
    if (inputs.length > 0 && inputs.every((t) => !graph.values.has(t))) return;
    const ids = inputs.map((t) => this.#valueOf(graph, t));
    const value = graph.count++;
    graph.nodes.push({ op, inputs: ids, outputs: [value], params: { ...params } });
    graph.values.set(output, value);
    this.#shapes[graph.index].set(value, [...output.shape]);
  }

  /** Records a fork of graph `callee` on `args`; `future` stands for its result. */
  recordFork(callee: number, args: readonly Tensor[], future: object): void {
    const graph = this.#current();
    const ids = args.map((t) => this.#valueOf(graph, t));
    const value = graph.count++;
    graph.nodes.push({ op: "fork", graph: callee, inputs: ids, outputs: [value] });
    graph.futures.set(future, value);
  }

  /** Records a wait on a future forked in this graph; false if the future is not known. */
  recordWait(future: object, output: Tensor): boolean {
    const graph = this.#current();
    const id = graph.futures.get(future);
    if (id === undefined) return false;
    const value = graph.count++;
    graph.nodes.push({ op: "wait", inputs: [id], outputs: [value] });
    graph.values.set(output, value);
    return true;
  }

  /** The shape value `value` of graph `graph` had while tracing, where it is known. */
  shapeOf(graph: number, value: number): readonly number[] | undefined {
    return this.#shapes[graph]?.get(value);
  }

  /** The graphs and constants as a program source (after every graph ended). */
  finish(): ProgramSource {
    return { graphs: this.graphs, tensors: this.source.tensors };
  }
}

let active: Trace | null = null;
let capturing = false;

/** The trace in progress on this thread, if any. */
export function activeTrace(): Trace | null {
  return active;
}

/** Runs `body` with `trace` active (nested traces are not allowed). */
export function withTrace<T>(trace: Trace, body: () => T): T {
  if (active !== null) throw new TracingError("script: a trace is already running");
  active = trace;
  try {
    return body();
  } finally {
    active = null;
  }
}

/** Called by Tensor.toArray: reading values while tracing means data-dependent control flow. */
export function checkValueRead(what: string): void {
  if (active !== null && !capturing) {
    throw new TracingError(
      `script: ${what} reads a tensor's values while tracing; a traced graph cannot depend on data ` +
        "(branch on shapes, or compute with tensor ops instead)",
    );
  }
}

/** A tensor's values, read while tracing for a purpose the graph does not depend on. */
export function readUntraced(t: Tensor): Float32Array | BigInt64Array | Int32Array {
  capturing = true;
  try {
    return t.toArray();
  } finally {
    capturing = false;
  }
}

function readForCapture(t: Tensor): Uint8Array {
  const values = readUntraced(t);
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

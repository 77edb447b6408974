/**
 * `script(fn)`: turns a TypeScript function of tensors into a native graph by tracing it,
 * then runs it through the interpreter.
 *
 * @module
 */
import { dropDeadConstants, fuse, hoistConstants } from "../onnx/fuse.ts";
import { Tensor, tensor } from "../tensor.ts";
import { encodeImage } from "../program/format.ts";
import { Program } from "../program/program.ts";
import { activeTrace, readUntraced, Trace, TracingError, withTrace } from "./trace.ts";

/**
 * What a scripted function may return: one tensor, or several.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { max, min, script, type ScriptResult, type Tensor, tensor } from "@spindle/spindle";
 * const range = script((x: Tensor) => [min(x), max(x)]);
 * using x = tensor([4, 1, 3]);
 * const result: ScriptResult = range(x);
 * assert.ok(Array.isArray(result));
 * const [low, high] = result;
 * assert.deepEqual([...low.toArray(), ...high.toArray()], [1, 4]);
 * low.dispose();
 * high.dispose();
 * ```
 */
export type ScriptResult = Tensor | Tensor[];

/** What `script` keeps about a scripted function (looked up by the function itself). */
export interface ScriptState {
  fn: (...args: Tensor[]) => ScriptResult;
  name: string;
  programs: Map<string, Program>;
}

/**
 * A traced function: call it with tensors to run its graph natively. It is traced on the
 * first call for each combination of input shapes and dtypes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mul, script, type ScriptFunction, type Tensor, tensor } from "@spindle/spindle";
 * const double: ScriptFunction<[Tensor], Tensor> = script((x: Tensor) => mul(x, 2), "double");
 * using y = double(tensor([1, 2]));
 * assert.equal(double.scriptName, "double");
 * assert.deepEqual([...y.toArray()], [2, 4]);
 * ```
 */
export type ScriptFunction<A extends Tensor[] = Tensor[], R extends ScriptResult = ScriptResult> =
  & ((...args: A) => R)
  & { readonly scriptName: string };

const states = new WeakMap<object, ScriptState>();

function normalize(name: string, result: unknown): Tensor[] {
  const outputs = Array.isArray(result) ? result : [result];
  outputs.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new TracingError(`script ${name}: output ${i} is not a Tensor`);
  });
  if (outputs.length === 0) throw new TracingError(`script ${name}: returns no tensor`);
  return outputs as Tensor[];
}

function signature(args: readonly Tensor[]): string {
  return args.map((t) => `${t.dtype}[${t.shape.join(",")}]`).join(";");
}

/**
 * The graph of `state.fn` on inputs like `args` in `trace`: traced on first use, then reused
 * for every later fork with the same input dtypes and shapes, so a function forked from many
 * places is one graph. Returns the graph index and the outputs of an eager run (for a reused
 * graph, copies of the first run's outputs, so that each fork's result is a tensor of its own).
 */
export function traceGraph(
  trace: Trace,
  state: ScriptState,
  args: readonly Tensor[],
): { index: number; outputs: Tensor[] } {
  const key = signature(args);
  const known = trace.tracedGraph(state.fn, key);
  if (known === null) {
    throw new TracingError(`script ${state.name}: forks itself on inputs ${key}; a graph cannot fork itself`);
  }
  if (known !== undefined) return { index: known.index, outputs: known.outputs.map((t) => copyForTrace(trace, t)) };
  trace.rememberGraph(state.fn, key, null);
  const index = trace.beginGraph(state.name, args);
  const outputs = normalize(state.name, state.fn(...args));
  trace.endGraph(index, outputs);
  // The trace keeps copies: the caller may dispose these outputs before the next fork.
  trace.rememberGraph(state.fn, key, { index, outputs: outputs.map((t) => copyForTrace(trace, t)) });
  return { index, outputs };
}

/** A copy of `t` that the trace owns (freed with it) and records nowhere. */
function copyForTrace(trace: Trace, t: Tensor): Tensor {
  const copy = tensor(readUntraced(t), [...t.shape], { dtype: t.dtype });
  trace.created.push(copy);
  return copy;
}

/** Traces `state` on `args` into a whole program. */
function buildProgram(state: ScriptState, args: readonly Tensor[]): Program {
  const trace = new Trace();
  try {
    withTrace(trace, () => traceGraph(trace, state, args));
    const source = trace.finish();
    // The same graph optimiser as ONNX import: conv + batch norm, conv + activation,
    // matmul + bias, layer norm; then the constants the fusions left unread go.
    if (fuse(source, { shape: (value, graph) => trace.shapeOf(graph, value) }) > 0) {
      hoistConstants(source);
      dropDeadConstants(source);
    }
    return Program.load(encodeImage(source));
  } finally {
    // Everything the eager run of the trace made is garbage now.
    for (const t of trace.created) t.dispose();
  }
}

/** The scripted state behind a function, if it is one. */
export function scriptState(fn: unknown): ScriptState | undefined {
  return typeof fn === "function" ? states.get(fn) : undefined;
}

/** The program of a scripted function for inputs like `args` (traced on first use). */
export function programFor(fn: ScriptFunction, args: readonly Tensor[]): Program {
  const state = states.get(fn);
  if (state === undefined) throw new TypeError("expected a function made by script()");
  const key = signature(args);
  let program = state.programs.get(key);
  if (program === undefined) {
    program = buildProgram(state, args);
    state.programs.set(key, program);
  }
  return program;
}

/**
 * Traces `fn` into a graph that runs natively, op by op, on the calling thread — with
 * `fork`/`wait` of other scripted functions running on the inter-op pool.
 *
 * Tracing runs `fn` once on the actual inputs and records every op; tensors it uses that
 * are not inputs become constants (weights). Data-dependent control flow (reading values
 * with `toArray()` while tracing) is refused with a {@link TracingError}. A function forked
 * several times while tracing is traced once per input signature (dtypes and shapes) and
 * becomes one graph that every such fork runs, as TorchScript compiles a function once: it
 * must not depend on JavaScript state that changes between the forks.
 *
 * @param fn A function of tensors returning a tensor or an array of tensors.
 * @param name The graph's name in model files and error messages.
 * @returns The scripted function.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, fork, mm, randn, script, wait } from "@spindle/spindle";
 * using wY = randn([16, 16], { seed: 1 });
 * using wZ = randn([16, 16], { seed: 2 });
 * const computeZ = script((x) => mm(x, wZ));
 * const forward = script((x) => {
 *   const future = fork(computeZ, x); // a fork node: runs on the inter-op pool
 *   const y = mm(x, wY);
 *   return add(y, wait(future));
 * });
 * using x = randn([4, 16], { seed: 3 });
 * using out = forward(x);
 * using y = mm(x, wY);
 * using z = mm(x, wZ);
 * using expected = add(y, z);
 * // Equal up to rounding: a scripted product by a constant runs on the weight packed once,
 * // whose kernel may add the same products in another order.
 * const [got, want] = [out.toArray() as Float32Array, expected.toArray() as Float32Array];
 * assert.ok(got.every((v, i) => Math.abs(v - want[i]) <= 1e-5 * Math.max(1, Math.abs(want[i]))));
 * ```
 */
export function script<A extends Tensor[], R extends ScriptResult>(
  fn: (...args: A) => R,
  name?: string,
): ScriptFunction<A, R> {
  if (typeof fn !== "function") throw new TypeError(`script: expected a function, got ${typeof fn}`);
  const state: ScriptState = {
    fn: fn as unknown as ScriptState["fn"],
    name: name ?? (fn.name || "forward"),
    programs: new Map(),
  };
  const scripted = (...args: A): R => {
    args.forEach((t, i) => {
      if (!(t instanceof Tensor)) throw new TypeError(`${state.name}: argument ${i} must be a Tensor`);
    });
    // Called directly inside another trace: inline it into that graph.
    if (activeTrace() !== null) return fn(...args);
    const outputs = programFor(scripted as unknown as ScriptFunction, args).runSync(args);
    return (outputs.length === 1 ? outputs[0] : outputs) as R;
  };
  Object.defineProperty(scripted, "scriptName", { value: state.name, enumerable: true });
  states.set(scripted, state);
  return scripted as ScriptFunction<A, R>;
}

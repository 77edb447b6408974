/**
 * Inter-op parallelism from TypeScript: `fork` runs a native op on the process-wide
 * inter-op pool and returns a {@link Future}; `wait` joins it.
 *
 * @module
 */
import { check, native } from "../ffi/load.ts";
import { lastErrorMessage, SpindleError } from "../ffi/status.ts";
import { Tensor } from "./tensor.ts";
import { nativeOpInfo, OP, packArguments } from "./ops/dispatch.ts";
import { watch } from "./completions.ts";
import { activeTrace, type Trace, TracingError } from "./script/trace.ts";
import { scriptState, traceGraph } from "./script/script.ts";

const outBuffer = new BigUint64Array(1);

/**
 * Disposes native futures that JavaScript dropped without waiting. A failed one is then
 * reported by the native side (unobserved error), never silently lost.
 */
const finalizer = new FinalizationRegistry<bigint>((handle) => {
  native().spindle_future_dispose(handle);
});

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * The result of a forked task. Wait for it with {@link Future.wait} (blocking) or `await`
 * (the event loop stays free). A future can be waited on any number of times; every wait
 * returns the same value or throws the same error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fork, mm, rand } from "@spindle/spindle";
 * using a = rand([64, 64], { seed: 1 });
 * const future = fork(mm, a, a);
 * using product = await future;
 * using direct = mm(a, a);
 * assert.deepEqual(product.toArray(), direct.toArray());
 * ```
 */
export class Future<T> implements PromiseLike<T> {
  #handle: bigint | null;
  #outcome: Outcome<T> | null;
  #pending: Promise<T> | null = null;

  /**
   * @ignore Futures come from {@link fork}.
   * @param handle A native future handle, or null for an already completed future.
   */
  private constructor(handle: bigint | null, outcome: Outcome<T> | null) {
    this.#handle = handle;
    this.#outcome = outcome;
    if (handle !== null) finalizer.register(this, handle, this);
  }

  /** @ignore Internal: wraps a native future handle. */
  static fromHandle(handle: bigint): Future<Tensor> {
    return new Future<Tensor>(handle, null);
  }

  /**
   * A future that is already complete (what forking a plain TypeScript function returns).
   *
   * @ignore Internal: futures come from {@link fork}.
   * @param outcome The value or error.
   * @returns A completed future.
   */
  static completed<T>(outcome: Outcome<T>): Future<T> {
    return new Future<T>(null, outcome);
  }

  /**
   * Whether the task has finished (successfully or not).
   *
   * @returns True once complete.
   */
  done(): boolean {
    if (this.#outcome !== null || this.#handle === null) return true;
    const state = native().spindle_future_done(this.#handle);
    if (state < 0) throw new SpindleError(-state, "future handle is no longer valid");
    return state === 1;
  }

  /**
   * Blocks the calling thread until the task finishes.
   *
   * @returns The task's value.
   * @throws {SpindleError} the task's error, naming the failing op.
   */
  wait(): T {
    if (this.#outcome === null) this.#settle(native().spindle_future_wait(this.#handle!, outBuffer));
    const value = this.#result();
    // While tracing, a wait on a future forked in the traced function is a wait node.
    if (value instanceof Tensor) activeTrace()?.recordWait(this, value);
    return value;
  }

  /** Awaits the task without blocking the event loop. */
  then<R1 = T, R2 = never>(
    onfulfilled?: ((value: T) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.#promise().then(onfulfilled, onrejected);
  }

  #promise(): Promise<T> {
    if (this.#pending !== null) return this.#pending;
    if (this.#outcome !== null) {
      this.#pending = this.#outcome.ok ? Promise.resolve(this.#outcome.value) : Promise.reject(this.#outcome.error);
      return this.#pending;
    }
    const handle = this.#handle!;
    this.#pending = new Promise<T>((resolve, reject) => {
      watch(handle, () => {
        // Complete: the wait returns at once, on this thread, with the value or the error.
        if (this.#outcome === null) this.#settle(native().spindle_future_wait(handle, outBuffer));
        try {
          resolve(this.#result());
        } catch (error) {
          reject(error);
        }
      });
    });
    return this.#pending;
  }

  #settle(status: number): void {
    if (this.#outcome !== null) return;
    if (status === 0) {
      this.#settleValue(outBuffer[0]);
      return;
    }
    const error = new SpindleError(status, lastErrorMessage(native().spindle_last_error));
    this.#outcome = { ok: false, error };
    this.#release();
  }

  #settleValue(tensorHandle: bigint): void {
    if (this.#outcome !== null) {
      native().spindle_tensor_dispose(tensorHandle);
      return;
    }
    this.#outcome = { ok: true, value: new Tensor(tensorHandle) as T };
    this.#release();
  }

  #release(): void {
    if (this.#handle === null) return;
    finalizer.unregister(this);
    check(native().spindle_future_dispose(this.#handle));
    this.#handle = null;
  }

  #result(): T {
    const outcome = this.#outcome!;
    if (outcome.ok) return outcome.value;
    throw outcome.error;
  }
}

/**
 * Runs `fn(...args)` as a task on the process-wide inter-op pool and returns a
 * {@link Future} at once. `fn` is a native op such as `mm`; the input tensors stay alive
 * until the task finishes, whatever happens to them meanwhile. A plain TypeScript function
 * runs inline and returns a completed future (as PyTorch's eager `fork` does).
 *
 * @param fn A native op (e.g. `mm`, `add`) or any function.
 * @param args Its arguments.
 * @returns A future for the result.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, fork, mm, rand, wait } from "@spindle/spindle";
 * using x = rand([32, 32], { seed: 1 });
 * const future = fork(mm, x, x); // runs on the inter-op pool
 * using y = mm(x, x);            // meanwhile, on this thread
 * using z = wait(future);
 * using sum = add(y, z);
 * using doubled = add(y, y);
 * assert.deepEqual(sum.toArray(), doubled.toArray());
 * ```
 */
export function fork<A extends unknown[], T>(fn: (...args: A) => T, ...args: A): Future<T> {
  if (typeof fn !== "function") throw new TypeError(`fork: expected a function, got ${typeof fn}`);
  const trace = activeTrace();
  if (trace !== null) return traceFork(trace, fn, args);
  const info = nativeOpInfo(fn);
  const state = scriptState(fn);
  if (state !== undefined) {
    // A scripted function forked from eager code: run its graph on the inter-op pool is the
    // interpreter's job; eagerly, run it on an inference thread and complete a future.
    return Future.completed<T>({ ok: true, value: fn(...args) });
  }
  if (info === undefined) {
    try {
      return Future.completed<T>({ ok: true, value: fn(...args) });
    } catch (error) {
      return Future.completed<T>({ ok: false, error });
    }
  }
  const { inputs, params } = info.prepare(args);
  const packed = packArguments(info.op, info.name, inputs, params);
  const status = native().spindle_fork_op(
    OP[info.op],
    packed.inputs,
    BigInt(inputs.length),
    packed.params,
    BigInt(packed.paramCount),
    outBuffer,
  );
  check(status);
  return Future.fromHandle(outBuffer[0]) as unknown as Future<T>;
}

/**
 * While tracing: the callee becomes a graph of its own (one per function and input signature,
 * however often it is forked) and a fork node refers to it.
 */
function traceFork<A extends unknown[], T>(trace: Trace, fn: (...args: A) => T, args: A): Future<T> {
  const tensors = args.map((arg, i) => {
    if (!(arg instanceof Tensor)) throw new TracingError(`fork: argument ${i} of a traced fork must be a Tensor`);
    return arg;
  });
  const state = scriptState(fn) ?? {
    fn: fn as unknown as (...args: Tensor[]) => Tensor,
    name: nativeOpInfo(fn)?.name ?? (fn.name || "forked"),
    programs: new Map(),
  };
  const { index, outputs } = traceGraph(trace, state, tensors);
  if (outputs.length !== 1) throw new TracingError(`fork: ${state.name} must return exactly one tensor to be forked`);
  const future = Future.completed<T>({ ok: true, value: outputs[0] as T });
  trace.recordFork(index, tensors, future);
  return future;
}

/**
 * Native futures alive in the process, pending or held (tests use it to check for leaks).
 *
 * @returns The count of live native futures.
 */
export function liveFutureCount(): number {
  return Number(native().spindle_future_live_count());
}

/**
 * Blocks until `future` completes and returns its value (same as `future.wait()`).
 *
 * @param future A future from {@link fork}.
 * @returns The task's value.
 * @throws {SpindleError} the task's error.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { fork, mm, rand, wait } from "@spindle/spindle";
 * using a = rand([8, 8], { seed: 3 });
 * using b = wait(fork(mm, a, a));
 * using direct = mm(a, a);
 * assert.deepEqual(b.toArray(), direct.toArray());
 * ```
 */
export function wait<T>(future: Future<T>): T {
  if (!(future instanceof Future)) throw new TypeError("wait: expected a Future");
  return future.wait();
}

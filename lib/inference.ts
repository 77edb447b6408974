/**
 * Inference threads (threading spec §1, level 1): the native pool that runs asynchronous
 * forward passes (zig/src/pool/inference.zig). Each `forward`/`run` is submitted to it; at
 * most {@link getNumInferenceThreads} run at once, each on one of the pool's threads (which
 * keeps its intra-op team), and the rest wait in a first-in, first-out queue holding no
 * thread. One waiter per isolate — a single `nonblocking` FFI call on the isolate's own
 * completion channel — takes the tokens of its finished runs, for all of them. So any
 * number of concurrent calls keeps the thread count flat: as plain nonblocking FFI calls,
 * 48 concurrent forwards took a 2-core process from 7 to 46 threads.
 *
 * Synchronous calls (`forwardSync`, `runSync`) run on the calling thread and are not counted.
 *
 * @module
 */
import { check, native } from "../ffi/load.ts";
import { MAX_THREADS } from "./threads.ts";
import { Completions, isolateChannel } from "./completions.ts";

/** Settles submitted calls as the inference pool finishes them. */
const calls = new Completions(
  (tokens, capacity, timeout) => native().spindle_inference_wait(isolateChannel(), tokens, capacity, timeout),
  (tokens, capacity) => native().spindle_inference_spin(isolateChannel(), tokens, capacity),
);

/**
 * Sets how many asynchronous forward passes (`forward`, `forwardAll`, `run`) run at once,
 * process-wide; more wait in a queue and start, in order, as running ones finish. Allowed at
 * any time: a larger value starts waiting calls at once, a smaller one lets running calls
 * finish.
 *
 * @param n A positive integer.
 * @throws {TypeError} when `n` is not an integer.
 * @throws {RangeError} when `n` is not in 1…1024.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumInferenceThreads, setNumInferenceThreads } from "@spindle/spindle";
 * setNumInferenceThreads(4);
 * assert.equal(getNumInferenceThreads(), 4);
 * ```
 */
export function setNumInferenceThreads(n: number): void {
  if (typeof n !== "number" || !Number.isInteger(n)) {
    throw new TypeError(`setNumInferenceThreads expects a positive integer, got ${typeof n} ${String(n)}`);
  }
  if (n <= 0 || n > MAX_THREADS) {
    throw new RangeError(`setNumInferenceThreads expects a positive integer up to ${MAX_THREADS}, got ${n}`);
  }
  check(native().spindle_set_num_inference_threads(BigInt(n)));
}

/**
 * How many asynchronous forward passes run at once: set by {@link setNumInferenceThreads},
 * else the physical cores divided by the intra-op threads (`getNumThreads()`), at least 1 —
 * the split that keeps inference threads × intra-op threads within the cores, as PyTorch's
 * threading note advises. The default follows later `setNumThreads` calls.
 *
 * @returns The inference thread count.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumInferenceThreads } from "@spindle/spindle";
 * assert.ok(getNumInferenceThreads() >= 1);
 * ```
 */
export function getNumInferenceThreads(): number {
  return native().spindle_get_num_inference_threads();
}

const loadBuffer = new BigUint64Array(3);

/** The pool's threads, runs in progress and runs waiting (diagnostics and tests). */
export function inferenceLoad(): { threads: number; running: number; waiting: number } {
  native().spindle_inference_load(loadBuffer);
  return { threads: Number(loadBuffer[0]), running: Number(loadBuffer[1]), waiting: Number(loadBuffer[2]) };
}

/** Calls of this isolate submitted and not yet settled. */
export function pendingCalls(): number {
  return calls.size;
}

/** How a submitted call ended: its status and how long the native run took. */
export interface SubmitResult {
  status: number;
  runMicros: number;
}

/**
 * Submits the pinned call `call` to the inference pool and settles once it has run: its
 * output handles are then in `outputs`, its status and run time are the result (and its
 * message is in `message` on error). The caller keeps `outputs` and `message` referenced
 * until the promise settles (it reads them then), so the native run never writes into
 * collected memory. The call is taken whatever happens.
 */
export function submitCall(call: bigint, outputs: BigUint64Array, message: Uint8Array): Promise<SubmitResult> {
  const result = new BigInt64Array(2);
  let settle: (outcome: SubmitResult) => void = () => {};
  const done = new Promise<SubmitResult>((resolve) => (settle = resolve));
  const token = calls.register(() => settle({ status: Number(result[0]), runMicros: Number(result[1]) / 1000 }));
  try {
    check(
      native().spindle_call_submit(
        call,
        outputs,
        BigInt(outputs.length),
        message,
        BigInt(message.length),
        result,
        isolateChannel(),
        token,
      ),
    );
  } catch (error) {
    calls.cancel(token);
    throw error;
  }
  calls.arm();
  return done;
}

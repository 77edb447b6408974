/**
 * Thread settings (threading spec §3). The numbers live in libspindle; these functions
 * validate arguments and forward them.
 *
 * @module
 */
import { check, native } from "../ffi/load.ts";
import { LIMITS } from "../ffi/abi.ts";

/** Largest thread count the native side accepts (zig/src/settings.zig `max_threads`). */
export const MAX_THREADS: number = LIMITS.maxThreads;

function checkCount(name: string, n: unknown): number {
  if (typeof n !== "number") throw new TypeError(`${name} expects a positive integer, got ${typeof n} ${String(n)}`);
  if (!Number.isInteger(n)) throw new TypeError(`${name} expects a positive integer, got ${n}`);
  if (n <= 0 || n > MAX_THREADS) {
    throw new RangeError(`${name} expects a positive integer up to ${MAX_THREADS}, got ${n}`);
  }
  return n;
}

/**
 * Sets the number of intra-op threads (used inside GEMM, convolution, large elementwise ops…).
 * Allowed at any time; applies process-wide from the next parallel region on every thread.
 * Overrides `MKL_NUM_THREADS` and `OMP_NUM_THREADS`.
 *
 * @param n A positive integer.
 * @throws {TypeError} when `n` is not an integer.
 * @throws {RangeError} when `n` is not in 1…1024.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumThreads, setNumThreads } from "@spindle/spindle";
 * setNumThreads(1);
 * assert.equal(getNumThreads(), 1);
 * ```
 */
export function setNumThreads(n: number): void {
  check(native().spindle_set_num_threads(BigInt(checkCount("setNumThreads", n))));
}

/**
 * The number of intra-op threads: set by {@link setNumThreads}, else `MKL_NUM_THREADS`, else
 * `OMP_NUM_THREADS`, else the number of physical cores.
 *
 * @returns The intra-op thread count.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumThreads } from "@spindle/spindle";
 * assert.ok(getNumThreads() >= 1);
 * ```
 */
export function getNumThreads(): number {
  return native().spindle_get_num_threads();
}

/**
 * Sets the size of the process-wide inter-op pool (which runs forked tasks). Works once, and
 * only before the pool starts (the first fork); afterwards it throws a `SpindleError` with
 * code `thread_settings`, even for the same value.
 *
 * @param n A positive integer.
 * @throws {TypeError} when `n` is not an integer.
 * @throws {RangeError} when `n` is not in 1…1024.
 * @throws {SpindleError} when already set or the pool has started.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumInteropThreads, setNumInteropThreads, SpindleError } from "@spindle/spindle";
 * try {
 *   setNumInteropThreads(2);
 * } catch (error) {
 *   if (!(error instanceof SpindleError)) throw error; // already set in this process
 * }
 * assert.ok(getNumInteropThreads() >= 1);
 * ```
 */
export function setNumInteropThreads(n: number): void {
  check(native().spindle_set_num_interop_threads(BigInt(checkCount("setNumInteropThreads", n))));
}

/**
 * The size of the inter-op pool: set by {@link setNumInteropThreads}, else the number of
 * physical cores.
 *
 * @returns The inter-op thread count.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumInteropThreads } from "@spindle/spindle";
 * assert.ok(getNumInteropThreads() >= 1);
 * ```
 */
export function getNumInteropThreads(): number {
  return native().spindle_get_num_interop_threads();
}

/**
 * The bridge from native future completions to JavaScript promises. Each awaited future
 * registers a token with `spindle_future_watch`; one waiter — a single `nonblocking` FFI call
 * on Deno's blocking pool — drains the native completion queue and settles every future
 * whose token arrived, many per wake-up. Awaiting therefore costs one OS thread in total,
 * not one per pending future.
 *
 * @module
 */
import { check, native } from "../ffi/load.ts";

const BATCH = 1024;
/** The waiter re-arms after this long even if nothing completed (a bound, not a poll). */
const WAIT_TIMEOUT_MS = 10_000;

const pending = new Map<bigint, () => void>();
let nextToken = 1n;
let waiting = false;
const tokens = new BigUint64Array(BATCH);

/**
 * Calls `onDone` (on the JavaScript thread) once the native future `handle` completes.
 *
 * @param handle A live native future handle.
 * @param onDone Called once, after completion.
 */
export function watch(handle: bigint, onDone: () => void): void {
  const token = nextToken++;
  check(native().spindle_future_watch(handle, token));
  pending.set(token, onDone);
  if (!waiting) void drain();
}

async function drain(): Promise<void> {
  waiting = true;
  try {
    while (pending.size > 0) {
      const count = Number(await native().spindle_completions_wait(tokens, BigInt(BATCH), WAIT_TIMEOUT_MS));
      // Copy the batch out first: settling can start another watch, which reuses `tokens`.
      const arrived = Array.from(tokens.subarray(0, count));
      for (const token of arrived) {
        const onDone = pending.get(token);
        pending.delete(token);
        onDone?.();
      }
    }
  } finally {
    waiting = false;
  }
}

/**
 * Futures being awaited right now (for tests and diagnostics).
 *
 * @returns The number of registered, not yet completed, awaits.
 */
export function pendingAwaits(): number {
  return pending.size;
}

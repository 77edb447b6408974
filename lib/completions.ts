/**
 * The bridge from native completions to JavaScript promises. Native work that TypeScript
 * awaits — watched futures (`spindle_future_watch`), calls submitted to the inference pool
 * (`spindle_call_submit`) — is named by a token; one waiter per kind, a single `nonblocking`
 * FFI call on Deno's blocking pool, takes the tokens of finished work in batches and settles
 * each one, many per wake-up. Awaiting therefore costs one OS thread per kind in total, not
 * one per pending future or call.
 *
 * @module
 */
import { check, native } from "../ffi/load.ts";

const BATCH = 1024;
/** A waiter re-arms after this long even if nothing completed (a bound, not a poll). */
const WAIT_TIMEOUT_MS = 10_000;

/** The native wait: fills `tokens` with finished tokens, returns how many. */
type WaitFn = (tokens: BigUint64Array, capacity: bigint, timeoutMs: number) => Promise<number | bigint>;
/**
 * A synchronous native spin for a completion that is about to arrive (bounded, on the
 * JavaScript thread), called when the wait returned none; fills `tokens` like the wait.
 */
type SpinFn = (tokens: BigUint64Array, capacity: bigint) => number | bigint;

/** Tokens for native work, and the drain loop that settles them. */
export class Completions {
  readonly #wait: WaitFn;
  readonly #spin: SpinFn | undefined;
  readonly #pending = new Map<bigint, () => void>();
  readonly #tokens = new BigUint64Array(BATCH);
  #nextToken = 1n;
  #waiting = false;

  constructor(wait: WaitFn, spin?: SpinFn) {
    this.#wait = wait;
    this.#spin = spin;
  }

  /** A fresh token for `onDone`, which runs (on the JavaScript thread) when it comes back. */
  register(onDone: () => void): bigint {
    const token = this.#nextToken++;
    this.#pending.set(token, onDone);
    return token;
  }

  /** Forgets a token whose work never started (its native submit failed). */
  cancel(token: bigint): void {
    this.#pending.delete(token);
  }

  /** Starts the waiter unless one is running; call after the native side has the token. */
  arm(): void {
    if (!this.#waiting) void this.#drain();
  }

  /** Registered tokens not yet settled. */
  get size(): number {
    return this.#pending.size;
  }

  async #drain(): Promise<void> {
    this.#waiting = true;
    try {
      while (this.#pending.size > 0) {
        let count = Number(await this.#wait(this.#tokens, BigInt(BATCH), WAIT_TIMEOUT_MS));
        // None yet: the wait may have returned just before a completion it predicted, so
        // that this thread is awake to take it (the native spin decides, and is bounded).
        if (count === 0 && this.#spin !== undefined) count = Number(this.#spin(this.#tokens, BigInt(BATCH)));
        // Copy the batch out first: settling can register more work, and the next wait
        // reuses the buffer.
        const arrived = Array.from(this.#tokens.subarray(0, count));
        for (const token of arrived) {
          const onDone = this.#pending.get(token);
          this.#pending.delete(token);
          onDone?.();
        }
      }
    } finally {
      this.#waiting = false;
    }
  }
}

/**
 * This isolate's completion channel. The library is process-wide, but each isolate (the main
 * thread, every Worker) numbers its own tokens and runs its own waiters, so its tokens must
 * come back to it alone (zig/src/pool/channels.zig). Opened on first use.
 */
let channel: number | null = null;

/** The completion channel of this isolate (futures and inference-pool calls share it). */
export function isolateChannel(): number {
  if (channel === null) {
    const out = new Uint32Array(1);
    check(native().spindle_channel_open(out));
    channel = out[0];
  }
  return channel;
}

const futures = new Completions((tokens, capacity, timeout) =>
  native().spindle_completions_wait(isolateChannel(), tokens, capacity, timeout)
);

/**
 * Calls `onDone` (on the JavaScript thread) once the native future `handle` completes.
 *
 * @param handle A live native future handle.
 * @param onDone Called once, after completion.
 */
export function watch(handle: bigint, onDone: () => void): void {
  const token = futures.register(onDone);
  try {
    check(native().spindle_future_watch(handle, isolateChannel(), token));
  } catch (error) {
    futures.cancel(token);
    throw error;
  }
  futures.arm();
}

/**
 * Futures being awaited right now (for tests and diagnostics).
 *
 * @returns The number of registered, not yet completed, awaits.
 */
export function pendingAwaits(): number {
  return futures.size;
}

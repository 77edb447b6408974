/**
 * Native status codes (zig/src/status.zig, same order) and their conversion into
 * {@link SpindleError}s carrying the native message.
 *
 * @module
 */
import { LIMITS, STATUS_NAMES as ABI_STATUS_NAMES } from "./abi.ts";

/**
 * A native status name such as `"shape_mismatch"` (the `code` of a {@link SpindleError}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SpindleError, type StatusName, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2]);
 * let code: StatusName = "ok";
 * try {
 *   x.dispose();
 *   x.toArray(); // a disposed tensor
 * } catch (error) {
 *   if (error instanceof SpindleError) code = error.code;
 * }
 * assert.equal(code, "invalid_handle");
 * ```
 */
export type StatusName =
  | "ok"
  | "invalid_argument"
  | "shape_mismatch"
  | "dtype_mismatch"
  | "index_out_of_range"
  | "invalid_handle"
  | "out_of_memory"
  | "too_large"
  | "thread_settings"
  | "malformed_model"
  | "unsupported"
  | "task_failed"
  | "internal";

/** Status names, indexed by the native status code (from the native library, via ffi/abi.ts). */
export const STATUS_NAMES: readonly StatusName[] = ABI_STATUS_NAMES;

// The union above is spelled out for the public docs; the type checker ties it to the
// library's list both ways (a name added or removed there fails `deno check`).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const statusNamesMatch: Same<StatusName, typeof ABI_STATUS_NAMES[number]> = true;
void statusNamesMatch;

/**
 * An error the native library reported: a shape mismatch, an index out of range, a
 * malformed model file, a misuse of the thread settings, …
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mm, SpindleError, zeros } from "@spindle/spindle";
 * using a = zeros([2, 3]);
 * assert.throws(() => mm(a, a), (error) => error instanceof SpindleError && error.code === "shape_mismatch");
 * ```
 */
export class SpindleError extends Error {
  /** The native status name, e.g. `"shape_mismatch"`. */
  readonly code: StatusName;
  /** The native status number. */
  readonly status: number;

  /**
   * Creates an error for a native status.
   *
   * @param status The native status number, or its name.
   * @param message What went wrong, naming the operation and the offending value.
   * @param options The underlying error (`cause`), if any.
   */
  constructor(status: number | StatusName, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SpindleError";
    this.status = typeof status === "number" ? status : STATUS_NAMES.indexOf(status);
    this.code = STATUS_NAMES[this.status] ?? "internal";
  }
}

const decoder = new TextDecoder();
const messageBuffer = new Uint8Array(LIMITS.messageCapacity);

/** Reads the calling thread's last native error message. */
export function lastErrorMessage(
  lastError: (buffer: Uint8Array, capacity: bigint) => bigint,
): string {
  const length = Number(lastError(messageBuffer, BigInt(messageBuffer.length)));
  return decoder.decode(messageBuffer.subarray(0, Math.min(length, messageBuffer.length)));
}

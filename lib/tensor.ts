/**
 * Tensors: n-dimensional arrays whose data lives in native memory owned by libspindle.
 *
 * @module
 */
import { check, native } from "../ffi/load.ts";
import { SpindleError } from "../ffi/status.ts";
import { checkValueRead } from "./script/trace.ts";
import { DTYPE_NAMES, LIMITS } from "../ffi/abi.ts";

/**
 * Element types of a {@link Tensor}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type DType, tensor } from "@spindle/spindle";
 * const dtype: DType = "int32";
 * using ids = tensor([1, 2], [2], { dtype });
 * assert.ok(ids.toArray() instanceof Int32Array);
 * ```
 */
export type DType = "float32" | "int64" | "int32";

/** Native dtype codes are the positions in this list (ffi/abi.ts, from the library). */
const DTYPES: readonly DType[] = DTYPE_NAMES;
const BYTES_PER_ELEMENT: Record<DType, number> = { float32: 4, int64: 8, int32: 4 };
/** The native side allows at most this many dimensions. */
export const MAX_DIMS: number = LIMITS.maxDims;

/** Safety net only: tensors are meant to be disposed deterministically. */
const finalizer = new FinalizationRegistry<bigint>((handle) => {
  native().spindle_tensor_dispose(handle);
});

/** spindle_tensor_info's output: dtype, ndim, storage address, storage bytes, shape. */
const infoBuffer = new BigInt64Array(4 + MAX_DIMS);

/**
 * Storage of at least this many bytes is reported to V8 as external memory. V8 sees only a
 * tensor's small wrapper object, so code that never disposes would let native memory grow
 * between GCs (2–4× that of disposing code in issue 17's soak). An ArrayBuffer over the
 * native bytes, held by the tensor and never read, makes V8 count them and collect sooner.
 * Smaller tensors skip it: creating the view costs a few hundred nanoseconds.
 */
const EXTERNAL_REPORT_MIN_BYTES = 16 * 1024;
const handleBuffer = new BigUint64Array(1);

/**
 * An n-dimensional array of `float32`, `int64` or `int32` values in native memory.
 *
 * Dispose tensors when done (`using t = …` or `t.dispose()`); a finalizer frees forgotten
 * ones eventually, but native memory is only returned deterministically by dispose.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "@spindle/spindle";
 * using t = tensor([1, 2, 3, 4], [2, 2]);
 * assert.deepEqual([t.shape, t.dtype, t.numel], [[2, 2], "float32", 4]);
 * assert.deepEqual(t.toArray(), new Float32Array([1, 2, 3, 4]));
 * ```
 */
export class Tensor {
  /** The size of each dimension. */
  readonly shape: readonly number[];
  /** The element type. */
  readonly dtype: DType;
  /** The number of elements (product of the shape). */
  readonly numel: number;
  #handle: bigint | null;
  /** The native storage as V8 external memory (see EXTERNAL_REPORT_MIN_BYTES): never read. */
  #external: ArrayBuffer | null = null;

  /**
   * Wraps a native handle. Use {@link tensor}, {@link zeros}, … or an op to create tensors.
   *
   * @ignore Internal: the native handle's owner is this tensor from now on.
   * @param handle The native handle; this tensor takes ownership of it.
   * @param reportExternal Whether V8 is told of a large tensor's native bytes (see
   *   EXTERNAL_REPORT_MIN_BYTES); false only for tensors their maker always disposes.
   */
  constructor(handle: bigint, reportExternal = true) {
    check(native().spindle_tensor_info(handle, infoBuffer));
    const dtype = DTYPES[Number(infoBuffer[0])];
    const ndim = Number(infoBuffer[1]);
    const shape: number[] = [];
    for (let axis = 0; axis < ndim; axis++) shape.push(Number(infoBuffer[4 + axis]));
    const storageBytes = Number(infoBuffer[3]);
    if (reportExternal && storageBytes >= EXTERNAL_REPORT_MIN_BYTES) {
      const address = Deno.UnsafePointer.create(BigInt.asUintN(64, infoBuffer[2]));
      if (address !== null) this.#external = Deno.UnsafePointerView.getArrayBuffer(address, storageBytes);
    }
    this.shape = Object.freeze(shape);
    this.dtype = dtype;
    this.numel = shape.reduce((a, b) => a * b, 1);
    this.#handle = handle;
    finalizer.register(this, handle, this);
  }

  /**
   * The native handle; throws once the tensor is disposed.
   *
   * @ignore Internal: for the FFI calls of ops.
   * @returns The native handle.
   */
  get handle(): bigint {
    if (this.#handle === null) {
      throw new SpindleError("invalid_handle", "tensor used after dispose()");
    }
    return this.#handle;
  }

  /** Whether {@link Tensor.dispose} was called. */
  get disposed(): boolean {
    return this.#handle === null;
  }

  /**
   * Copies the values out, row-major.
   *
   * @returns A new typed array matching the dtype.
   */
  toArray(): Float32Array | BigInt64Array | Int32Array {
    checkValueRead("toArray()");
    const handle = this.handle;
    const out = this.dtype === "float32"
      ? new Float32Array(this.numel)
      : this.dtype === "int64"
      ? new BigInt64Array(this.numel)
      : new Int32Array(this.numel);
    check(native().spindle_tensor_read(handle, new Uint8Array(out.buffer), BigInt(out.byteLength)));
    return out;
  }

  /** Frees the native memory. Idempotent. */
  dispose(): void {
    if (this.#handle === null) return;
    const handle = this.#handle;
    this.#handle = null;
    this.#external = null;
    finalizer.unregister(this);
    check(native().spindle_tensor_dispose(handle));
  }

  /** Same as {@link Tensor.dispose}, for `using`. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /**
   * Describes the tensor without its values.
   *
   * @returns A short description such as `Tensor(float32, [2, 3])`.
   */
  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(", ")}])`;
  }
}

/**
 * Options for tensor factories.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full, type TensorOptions } from "@spindle/spindle";
 * const options: TensorOptions = { dtype: "int64" };
 * using t = full([2], 3, options);
 * assert.deepEqual(t.toArray(), new BigInt64Array([3n, 3n]));
 * ```
 */
export interface TensorOptions {
  /** Element type; `float32` unless the data is an Int32Array or BigInt64Array. */
  dtype?: DType;
}

/** Checks a shape and returns it as the BigInt64Array the native side reads. */
export function shapeBuffer(shape: readonly number[], what = "shape"): BigInt64Array {
  if (!Array.isArray(shape)) throw new TypeError(`${what} must be an array of integers, got ${String(shape)}`);
  if (shape.length > MAX_DIMS) {
    throw new RangeError(`${what} has ${shape.length} dimensions; at most ${MAX_DIMS} are supported`);
  }
  const buffer = new BigInt64Array(Math.max(shape.length, 1));
  shape.forEach((d, axis) => {
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new RangeError(`${what}[${axis}] must be a non-negative integer, got ${d}`);
    }
    buffer[axis] = BigInt(d);
  });
  return buffer;
}

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Takes the handle written by a native factory into a new Tensor. */
function adopt(status: number, reportExternal = true): Tensor {
  check(status);
  return new Tensor(handleBuffer[0], reportExternal);
}

function toTypedData(
  data: ArrayLike<number> | Float32Array | Int32Array | BigInt64Array,
  dtype: DType,
): Float32Array | Int32Array | BigInt64Array {
  if (dtype === "float32") {
    if (data instanceof BigInt64Array) throw new TypeError("tensor: BigInt64Array data needs dtype int64");
    return data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
  }
  if (dtype === "int32") {
    if (data instanceof Int32Array) return data;
    if (data instanceof BigInt64Array) throw new TypeError("tensor: BigInt64Array data needs dtype int64");
    const out = new Int32Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const value = data[i];
      if (!Number.isInteger(value) || value < -2147483648 || value > 2147483647) {
        throw new RangeError(`tensor: element ${i} (${value}) is not an int32`);
      }
      out[i] = value;
    }
    return out;
  }
  if (data instanceof BigInt64Array) return data;
  const out = new BigInt64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const value = (data as ArrayLike<number>)[i];
    if (!Number.isSafeInteger(value)) throw new RangeError(`tensor: element ${i} (${value}) is not a safe integer`);
    out[i] = BigInt(value);
  }
  return out;
}

/**
 * Creates a tensor from values (copied into native memory).
 *
 * @param data The values, row-major.
 * @param shape The shape; defaults to `[data.length]`.
 * @param options `dtype`; inferred from Int32Array / BigInt64Array data, else float32.
 * @returns A new tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor } from "@spindle/spindle";
 * using ids = tensor([3, 1, 4], [3], { dtype: "int64" });
 * assert.deepEqual(ids.toArray(), new BigInt64Array([3n, 1n, 4n]));
 * ```
 */
export function tensor(
  data: ArrayLike<number> | Float32Array | Int32Array | BigInt64Array,
  shape?: number[],
  options: TensorOptions = {},
): Tensor {
  if (data === null || typeof data !== "object" || typeof data.length !== "number") {
    throw new TypeError(`tensor: data must be an array or typed array, got ${String(data)}`);
  }
  const dims = shape ?? [data.length];
  const dtype = options.dtype ??
    (data instanceof Int32Array ? "int32" : data instanceof BigInt64Array ? "int64" : "float32");
  if (!DTYPES.includes(dtype)) throw new TypeError(`tensor: unknown dtype '${dtype}'`);
  shapeBuffer(dims);
  const count = numelOf(dims);
  if (count !== data.length) {
    throw new RangeError(`tensor: ${data.length} values do not fill shape [${dims.join(", ")}] (${count} elements)`);
  }
  const typed = toTypedData(data, dtype);
  return tensorFromBytes(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength), dims, dtype);
}

/**
 * A tensor from raw little-endian element bytes, copied into native memory. The bytes need no
 * alignment, so a tensor inside a larger buffer (an HTTP request body) is read in place.
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param bytes The elements' bytes, row-major.
 * @param shape The shape.
 * @param dtype The element type.
 * @param reportExternal Whether V8 is told of the native bytes (see EXTERNAL_REPORT_MIN_BYTES):
 *   the server's request inputs, disposed as soon as their forward ends, skip it, so that
 *   each request's input does not count towards V8's next collection.
 * @returns A new tensor.
 */
export function tensorFromBytes(
  bytes: Uint8Array,
  shape: readonly number[],
  dtype: DType,
  reportExternal = true,
): Tensor {
  return bytesTensor("tensorFromBytes", native().spindle_tensor_create, bytes, shape, dtype, reportExternal);
}

/** Checks `bytes` against shape and dtype, then makes the tensor with `make` (create or borrow). */
function bytesTensor(
  what: string,
  make: (
    dtype: number,
    ndim: number,
    shape: BigInt64Array,
    data: Uint8Array | null,
    bytes: bigint,
    out: BigUint64Array,
  ) => number,
  bytes: Uint8Array,
  shape: readonly number[],
  dtype: DType,
  reportExternal: boolean,
): Tensor {
  if (!DTYPES.includes(dtype)) throw new TypeError(`${what}: unknown dtype '${dtype}'`);
  const dimsBuffer = shapeBuffer(shape);
  const needed = numelOf(shape) * BYTES_PER_ELEMENT[dtype];
  if (bytes.byteLength !== needed) {
    throw new RangeError(
      `${what}: ${bytes.byteLength} bytes do not fill shape [${shape.join(", ")}] of ${dtype} (${needed})`,
    );
  }
  const data = bytes.byteLength > 0 ? bytes : null;
  return adopt(
    make(DTYPES.indexOf(dtype), shape.length, dimsBuffer, data, BigInt(bytes.byteLength), handleBuffer),
    reportExternal,
  );
}

/** Alignment the native side needs of borrowed bytes (zig/src/tensor.zig `alignment`). */
export const BORROW_ALIGNMENT = 64;

/**
 * Buffers whose borrow could not be ended (the native copy for the tensor's other holders
 * failed): kept reachable for good, so the collector never frees bytes native code may read.
 */
const stuckBorrows: Uint8Array[] = [];

/**
 * A tensor over `bytes` themselves, with no copy, when they are {@link BORROW_ALIGNMENT}-byte
 * aligned and not empty; else null (then copy them with {@link tensorFromBytes}). The caller
 * keeps `bytes` alive and unchanged until every forward reading the tensor has ended, then
 * ends it with {@link endBorrow}, never with dispose alone.
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param bytes The elements' bytes, row-major.
 * @param shape The shape.
 * @param dtype The element type.
 * @returns The tensor, or null when the bytes cannot be borrowed.
 */
export function tensorBorrowingBytes(bytes: Uint8Array, shape: readonly number[], dtype: DType): Tensor | null {
  if (bytes.byteLength === 0) return null;
  const pointer = Deno.UnsafePointer.of(bytes);
  if (pointer === null || Number(BigInt(Deno.UnsafePointer.value(pointer)) % BigInt(BORROW_ALIGNMENT)) !== 0) {
    return null;
  }
  return bytesTensor("tensorBorrowingBytes", native().spindle_tensor_borrow, bytes, shape, dtype, false);
}

/**
 * Whether a borrow of bytes of `bytes`' buffer could not be ended (see {@link endBorrow}):
 * then the buffer must never be reused.
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param bytes Any view of the buffer.
 * @returns True when native code may still read the buffer.
 */
export function borrowStuck(bytes: Uint8Array): boolean {
  return stuckBorrows.some((stuck) => stuck.buffer === bytes.buffer);
}

/**
 * Ends the borrow of {@link tensorBorrowingBytes}' tensor and disposes it: a view or output
 * that still holds its storage gets a native copy first, so once this returns nothing native
 * reads `bytes` and the caller may reuse them. Call it after every forward that read the
 * tensor has ended.
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param t The borrowing tensor.
 * @param bytes The bytes it borrows.
 * @throws {SpindleError} when the copy could not be made: then `bytes` stay referenced here
 *   for good (native code may still read them), and the caller must not reuse them either.
 */
export function endBorrow(t: Tensor, bytes: Uint8Array): void {
  if (t.disposed) return;
  try {
    check(native().spindle_tensor_detach(t.handle));
  } catch (error) {
    stuckBorrows.push(bytes);
    throw error;
  }
  t.dispose();
}

/**
 * Copies a tensor's values, row-major, into `into`, which must hold exactly its bytes: the
 * server reads an output straight into its place in the response body, one copy in all.
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param t The tensor.
 * @param into Its destination, `t.numel` × the element size bytes long; needs no alignment.
 * @throws {SpindleError} `shape_mismatch` when `into` has another length.
 */
export function readTensorBytes(t: Tensor, into: Uint8Array): void {
  check(native().spindle_tensor_read(t.handle, into, BigInt(into.byteLength)));
}

/**
 * A tensor filled with `value`.
 *
 * @param shape The shape.
 * @param value The fill value.
 * @param options `dtype` (default float32).
 * @returns A new tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { full } from "@spindle/spindle";
 * using t = full([2], 7);
 * assert.deepEqual([...t.toArray()], [7, 7]);
 * ```
 */
export function full(shape: number[], value: number, options: TensorOptions = {}): Tensor {
  const dtype = options.dtype ?? "float32";
  if (!DTYPES.includes(dtype)) throw new TypeError(`full: unknown dtype '${dtype}'`);
  if (typeof value !== "number") throw new TypeError(`full: value must be a number, got ${typeof value}`);
  const dims = shapeBuffer(shape);
  return adopt(native().spindle_tensor_full(DTYPES.indexOf(dtype), shape.length, dims, value, handleBuffer));
}

/**
 * A tensor of zeros.
 *
 * @param shape The shape.
 * @param options `dtype` (default float32).
 * @returns A new tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { zeros } from "@spindle/spindle";
 * using z = zeros([2, 3]);
 * assert.equal(z.numel, 6);
 * assert.ok(z.toArray().every((v) => v === 0));
 * ```
 */
export function zeros(shape: number[], options: TensorOptions = {}): Tensor {
  return full(shape, 0, options);
}

/**
 * A tensor of ones.
 *
 * @param shape The shape.
 * @param options `dtype` (default float32).
 * @returns A new tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ones } from "@spindle/spindle";
 * using o = ones([3]);
 * assert.deepEqual([...o.toArray()], [1, 1, 1]);
 * ```
 */
export function ones(shape: number[], options: TensorOptions = {}): Tensor {
  return full(shape, 1, options);
}

/**
 * Evenly spaced values: `arange(n)` is 0…n-1, `arange(start, end, step)` like NumPy.
 *
 * @param startOrEnd The end (one argument) or the start.
 * @param end The end, exclusive.
 * @param step The step (non-zero).
 * @returns A new 1-D float32 tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange } from "@spindle/spindle";
 * using r = arange(1, 7, 2);
 * assert.deepEqual([...r.toArray()], [1, 3, 5]);
 * ```
 */
export function arange(startOrEnd: number, end?: number, step = 1): Tensor {
  const start = end === undefined ? 0 : startOrEnd;
  const stop = end === undefined ? startOrEnd : end;
  for (const [name, value] of [["start", start], ["end", stop], ["step", step]] as const) {
    if (!Number.isFinite(value)) throw new RangeError(`arange: ${name} must be finite, got ${value}`);
  }
  if (step === 0) throw new RangeError("arange: step must not be 0");
  const count = Math.max(0, Math.ceil((stop - start) / step));
  if (count > 2 ** 31) throw new RangeError(`arange: ${count} elements is too many`);
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = start + i * step;
  return tensor(values, [count]);
}

/**
 * Options for random tensors.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rand, type RandomOptions } from "@spindle/spindle";
 * const options: RandomOptions = { seed: 7 };
 * using a = rand([3], options);
 * using b = rand([3], options);
 * assert.deepEqual(a.toArray(), b.toArray()); // the same seed gives the same values
 * ```
 */
export interface RandomOptions {
  /** Seed; the same seed gives the same values on every machine. Random when omitted. */
  seed?: number | bigint;
}

function randomTensor(shape: number[], options: RandomOptions, normal: boolean, name: string): Tensor {
  let seed: bigint;
  if (options.seed === undefined) {
    seed = crypto.getRandomValues(new BigUint64Array(1))[0];
  } else if (typeof options.seed === "bigint") {
    seed = BigInt.asUintN(64, options.seed);
  } else if (Number.isSafeInteger(options.seed)) {
    seed = BigInt.asUintN(64, BigInt(options.seed));
  } else {
    throw new TypeError(`${name}: seed must be an integer, got ${options.seed}`);
  }
  const dims = shapeBuffer(shape);
  return adopt(native().spindle_tensor_random(shape.length, dims, seed, normal ? 1 : 0, handleBuffer));
}

/**
 * Uniform random float32 values in [0, 1).
 *
 * @param shape The shape.
 * @param options `seed` for reproducible values.
 * @returns A new tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rand } from "@spindle/spindle";
 * using a = rand([2, 2], { seed: 1 });
 * using b = rand([2, 2], { seed: 1 });
 * assert.deepEqual(a.toArray(), b.toArray());
 * assert.ok(a.toArray().every((v) => v >= 0 && v < 1));
 * ```
 */
export function rand(shape: number[], options: RandomOptions = {}): Tensor {
  return randomTensor(shape, options, false, "rand");
}

/**
 * Standard normal random float32 values.
 *
 * @param shape The shape.
 * @param options `seed` for reproducible values.
 * @returns A new tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { randn } from "@spindle/spindle";
 * using w = randn([4, 4], { seed: 42 });
 * using again = randn([4, 4], { seed: 42 });
 * assert.deepEqual(w.shape, [4, 4]);
 * assert.deepEqual(w.toArray(), again.toArray());
 * ```
 */
export function randn(shape: number[], options: RandomOptions = {}): Tensor {
  return randomTensor(shape, options, true, "randn");
}

/** Element size in bytes of a dtype. */
export function bytesPerElement(dtype: DType): number {
  return BYTES_PER_ELEMENT[dtype];
}

/**
 * Live native tensors in this process (tests use it to check for leaks).
 *
 * @returns The count of live tensor handles.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { liveTensorCount, zeros } from "@spindle/spindle";
 * const before = liveTensorCount();
 * const t = zeros([4]);
 * assert.equal(liveTensorCount(), before + 1);
 * t.dispose();
 * assert.equal(liveTensorCount(), before);
 * ```
 */
export function liveTensorCount(): number {
  return Number(native().spindle_tensor_live_count());
}

/**
 * Host tensors: ONNX constants (initializers, Constant nodes, folded shape computations) held
 * in JavaScript while a model is imported, with the few integer ops that shape arithmetic
 * needs (Spindle's native kernels are float32 only).
 *
 * @module
 */
import type { DType } from "../tensor.ts";
import { DATA_TYPE, type TensorProto } from "./proto.ts";
import { SpindleError } from "../../ffi/status.ts";

/** A constant: ONNX element type, shape, and either little-endian bytes or decoded values. */
export interface Host {
  /** ONNX TensorProto.DataType. */
  type: number;
  shape: number[];
  /** Raw little-endian bytes in the Spindle dtype (`spindleDType(type)`), when not decoded. */
  bytes?: Uint8Array;
  /** Decoded values (int64 as numbers: shape arithmetic stays far below 2^53). */
  values?: number[];
}

/**
 * The Spindle dtype that carries an ONNX element type: bool and small ints (down to int2)
 * ride as int32; float16, double, bfloat16 and the float8/float4 formats as float32 (a Cast
 * to a narrow type rounds to its values, kernels/formats.zig).
 */
export function spindleDType(type: number): DType | undefined {
  switch (type) {
    case DATA_TYPE.FLOAT:
    case DATA_TYPE.DOUBLE:
    case DATA_TYPE.FLOAT16:
    case DATA_TYPE.BFLOAT16:
    case DATA_TYPE.FLOAT8E4M3FN:
    case DATA_TYPE.FLOAT8E4M3FNUZ:
    case DATA_TYPE.FLOAT8E5M2:
    case DATA_TYPE.FLOAT8E5M2FNUZ:
    case DATA_TYPE.FLOAT4E2M1:
    case DATA_TYPE.FLOAT8E8M0:
      return "float32";
    case DATA_TYPE.INT64:
    case DATA_TYPE.UINT64:
    case DATA_TYPE.UINT32:
      return "int64";
    case DATA_TYPE.INT32:
    case DATA_TYPE.INT16:
    case DATA_TYPE.INT8:
    case DATA_TYPE.UINT8:
    case DATA_TYPE.UINT16:
    case DATA_TYPE.BOOL:
    case DATA_TYPE.INT4:
    case DATA_TYPE.UINT4:
    case DATA_TYPE.INT2:
    case DATA_TYPE.UINT2:
      return "int32";
    default:
      return undefined;
  }
}

/** The ONNX element type a Spindle dtype stands for. */
export function onnxType(dtype: DType): number {
  return dtype === "float32" ? DATA_TYPE.FLOAT : dtype === "int64" ? DATA_TYPE.INT64 : DATA_TYPE.INT32;
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The most elements import folds into one constant in JavaScript. Folding is for shape
 * arithmetic and small constants; a file whose values ask for more (a ConstantOfShape of
 * 10^9 elements) would otherwise build a JavaScript array that size before anything checks
 * it, past any memory budget (issue 17: 17 s and 1.4 GB for one fuzzed file).
 */
export const MAX_FOLDED_ELEMENTS = 1 << 24;

/** Refuses, before allocating, a folded constant of `shape` past MAX_FOLDED_ELEMENTS. */
export function checkFoldedSize(shape: readonly number[]): void {
  const count = numel(shape);
  if (count <= MAX_FOLDED_ELEMENTS) return;
  throw new SpindleError(
    "too_large",
    `folding it would make a constant of shape [${shape.join(", ")}] (${count} elements); import folds ` +
      `constants of at most ${MAX_FOLDED_ELEMENTS} elements, so the model's shape values are out of range`,
  );
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** A float of `exponentBits` and `mantissaBits` from its bits (`nan` says which are NaN). */
function minifloat(
  bits: number,
  exponentBits: number,
  mantissaBits: number,
  bias: number,
  nan: (bits: number) => boolean,
): number {
  if (nan(bits)) return NaN;
  const sign = bits >> (exponentBits + mantissaBits) & 1 ? -1 : 1;
  const exponent = (bits >> mantissaBits) & ((1 << exponentBits) - 1);
  const fraction = bits & ((1 << mantissaBits) - 1);
  const scale = 2 ** mantissaBits;
  if (exponent === 0) return sign * 2 ** (1 - bias) * (fraction / scale);
  return sign * 2 ** (exponent - bias) * (1 + fraction / scale);
}

/** Decoders of the one-byte (and bfloat16) narrow types. */
const NARROW: Record<number, (bits: number) => number> = {
  [DATA_TYPE.BFLOAT16]: (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0],
  [DATA_TYPE.FLOAT8E4M3FN]: (b) => minifloat(b, 4, 3, 7, (x) => (x & 0x7f) === 0x7f),
  [DATA_TYPE.FLOAT8E4M3FNUZ]: (b) => minifloat(b, 4, 3, 8, (x) => x === 0x80),
  [DATA_TYPE.FLOAT8E5M2]: (b) =>
    (b & 0x7f) === 0x7c ? (b & 0x80 ? -Infinity : Infinity) : minifloat(b, 5, 2, 15, (x) => (x & 0x7f) > 0x7c),
  [DATA_TYPE.FLOAT8E5M2FNUZ]: (b) => minifloat(b, 5, 2, 16, (x) => x === 0x80),
  [DATA_TYPE.FLOAT8E8M0]: (b) => (b === 0xff ? NaN : 2 ** (b - 127)),
  [DATA_TYPE.FLOAT4E2M1]: (b) => minifloat(b, 2, 1, 1, () => false),
};

/** Packed sub-byte types: bits per element and whether signed. */
const PACKED: Record<number, { bits: number; signed: boolean; float?: boolean }> = {
  [DATA_TYPE.UINT4]: { bits: 4, signed: false },
  [DATA_TYPE.INT4]: { bits: 4, signed: true },
  [DATA_TYPE.FLOAT4E2M1]: { bits: 4, signed: false, float: true },
  [DATA_TYPE.UINT2]: { bits: 2, signed: false },
  [DATA_TYPE.INT2]: { bits: 2, signed: true },
};

/** Unpacks `count` sub-byte elements (the first in the lowest bits of each byte). */
function decodePacked(type: number, raw: Uint8Array, count: number): number[] {
  const { bits, signed, float } = PACKED[type];
  const perByte = 8 / bits;
  if (raw.byteLength !== Math.ceil(count / perByte)) {
    throw new RangeError(`raw_data has ${raw.byteLength} bytes, ${Math.ceil(count / perByte)} expected`);
  }
  const out = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const field = (raw[Math.floor(i / perByte)] >> ((i % perByte) * bits)) & ((1 << bits) - 1);
    out[i] = float ? NARROW[type](field) : signed && field >= 1 << (bits - 1) ? field - (1 << bits) : field;
  }
  return out;
}

/** Decodes raw_data of `type` into numbers. */
function decodeRaw(type: number, raw: Uint8Array, count: number): number[] {
  if (type in PACKED) return decodePacked(type, raw, count);
  if (type in NARROW) {
    const width = type === DATA_TYPE.BFLOAT16 ? 2 : 1;
    if (raw.byteLength !== count * width) {
      throw new RangeError(`raw_data has ${raw.byteLength} bytes, ${count} elements of ${width} bytes expected`);
    }
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return Array.from({ length: count }, (_, i) => NARROW[type](width === 2 ? view.getUint16(2 * i, true) : raw[i]));
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const size: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8 };
  const width = size[type];
  if (width === undefined) throw new TypeError(`tensor element type ${type} is not supported`);
  if (raw.byteLength !== count * width) {
    throw new RangeError(`raw_data has ${raw.byteLength} bytes, ${count} elements of ${width} bytes expected`);
  }
  const out = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const o = i * width;
    switch (type) {
      case 1:
        out[i] = view.getFloat32(o, true);
        break;
      case 2:
      case 9:
        out[i] = view.getUint8(o);
        break;
      case 3:
        out[i] = view.getInt8(o);
        break;
      case 4:
        out[i] = view.getUint16(o, true);
        break;
      case 5:
        out[i] = view.getInt16(o, true);
        break;
      case 6:
        out[i] = view.getInt32(o, true);
        break;
      case 7:
        out[i] = Number(view.getBigInt64(o, true));
        break;
      case 10:
        out[i] = halfToFloat(view.getUint16(o, true));
        break;
      case 11:
        out[i] = view.getFloat64(o, true);
        break;
      case 12:
        out[i] = view.getUint32(o, true);
        break;
      case 13:
        out[i] = Number(view.getBigUint64(o, true));
        break;
    }
  }
  return out;
}

/**
 * A host tensor from a TensorProto. Float32, int64 and int32 raw_data stay views of the file.
 *
 * @throws {RangeError} when the data does not match the shape.
 * @throws {TypeError} for element types import does not read (strings, complex, external data).
 */
export function fromProto(t: TensorProto): Host {
  if (t.externalData) throw new TypeError(`tensor '${t.name}' keeps its data in an external file`);
  const count = numel(t.dims);
  const dtype = spindleDType(t.dataType);
  if (dtype === undefined) throw new TypeError(`tensor '${t.name}' has unsupported element type ${t.dataType}`);
  const shape = t.dims;
  if (t.rawData !== undefined) {
    const direct =
      (t.dataType === DATA_TYPE.FLOAT || t.dataType === DATA_TYPE.INT32) && t.rawData.byteLength === count * 4 ||
      t.dataType === DATA_TYPE.INT64 && t.rawData.byteLength === count * 8;
    if (direct) return { type: t.dataType, shape, bytes: t.rawData };
    return { type: t.dataType, shape, values: decodeRaw(t.dataType, t.rawData, count) };
  }
  let values: number[];
  if (t.dataType === DATA_TYPE.FLOAT) values = t.floatData;
  else if (t.dataType === DATA_TYPE.DOUBLE) values = t.doubleData;
  else if (t.dataType === DATA_TYPE.INT64) values = t.int64Data.map(Number);
  else if (t.dataType === DATA_TYPE.UINT64 || t.dataType === DATA_TYPE.UINT32) values = t.uint64Data.map(Number);
  else if (t.dataType === DATA_TYPE.FLOAT16) values = t.int32Data.map(halfToFloat);
  else if (t.dataType in PACKED) {
    // int32_data holds the packed bytes, one per value.
    values = decodePacked(t.dataType, Uint8Array.from(t.int32Data), count);
  } else if (t.dataType in NARROW) values = t.int32Data.map(NARROW[t.dataType]);
  else values = t.int32Data;
  if (values.length !== count) {
    throw new RangeError(`tensor '${t.name}' has ${values.length} values for shape [${shape}]`);
  }
  return { type: t.dataType, shape, values };
}

/** The values of a host tensor as numbers (decoded once, then cached). */
export function valuesOf(h: Host): number[] {
  if (h.values !== undefined) return h.values;
  const bytes = h.bytes!;
  h.values = decodeRaw(
    h.type === DATA_TYPE.FLOAT || h.type === DATA_TYPE.INT64 ? h.type : DATA_TYPE.INT32,
    bytes,
    numel(h.shape),
  );
  return h.values;
}

/** The little-endian bytes of a host tensor in its Spindle dtype. */
export function bytesOf(h: Host): Uint8Array {
  const dtype = spindleDType(h.type)!;
  if (h.bytes !== undefined) return h.bytes;
  const values = valuesOf(h);
  if (dtype === "float32") return new Uint8Array(Float32Array.from(values).buffer);
  if (dtype === "int32") {
    return new Uint8Array(Int32Array.from(values, (v) => h.type === DATA_TYPE.BOOL ? (v ? 1 : 0) : v).buffer);
  }
  return new Uint8Array(BigInt64Array.from(values, (v) => BigInt(Math.trunc(v))).buffer);
}

/** A host tensor of `values`. */
export function host(type: number, shape: number[], values: number[]): Host {
  return { type, shape, values };
}

/** Converts values to another element type (Cast on constants). */
export function castValues(values: readonly number[], to: number): number[] {
  if (to === DATA_TYPE.FLOAT) return Array.from(Float32Array.from(values));
  if (to === DATA_TYPE.DOUBLE || to === DATA_TYPE.FLOAT16) return values.slice();
  if (to === DATA_TYPE.BOOL) return values.map((v) => (v !== 0 ? 1 : 0));
  return values.map((v) => (Number.isFinite(v) ? Math.trunc(v) : 0));
}

/** The broadcast of two shapes (numpy rules), or undefined when they do not broadcast. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] | undefined {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** The element of `shape` (broadcast into `out`) that flat output index `index` reads. */
function sourceIndex(index: number, out: readonly number[], shape: readonly number[]): number {
  let source = 0;
  let stride = 1;
  let rest = index;
  const offset = out.length - shape.length;
  const coordinates = new Array<number>(out.length);
  for (let d = out.length - 1; d >= 0; d--) {
    coordinates[d] = rest % out[d];
    rest = Math.floor(rest / out[d]);
  }
  for (let d = shape.length - 1; d >= 0; d--) {
    const c = shape[d] === 1 ? 0 : coordinates[d + offset];
    source += c * stride;
    stride *= shape[d];
  }
  return source;
}

/** Elementwise op over broadcast host tensors. */
export function broadcastMap(inputs: readonly Host[], type: number, fn: (...x: number[]) => number): Host {
  let shape: number[] | undefined = [];
  for (const input of inputs) shape = shape && broadcastShapes(shape, input.shape);
  if (shape === undefined) {
    throw new RangeError(`shapes ${inputs.map((i) => `[${i.shape}]`).join(", ")} do not broadcast`);
  }
  checkFoldedSize(shape);
  const values = inputs.map(valuesOf);
  const count = numel(shape);
  const out = new Array<number>(count);
  const args = new Array<number>(inputs.length);
  for (let i = 0; i < count; i++) {
    for (let k = 0; k < inputs.length; k++) args[k] = values[k][sourceIndex(i, shape, inputs[k].shape)];
    out[i] = fn(...args);
  }
  return host(type, shape, out);
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  let stride = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = stride;
    stride *= shape[d];
  }
  return out;
}

/** Gathers along `axis` with `indices` (ONNX Gather on constants). */
export function gatherHost(data: Host, indices: Host, axis: number): Host {
  const values = valuesOf(data);
  const index = valuesOf(indices);
  const outer = numel(data.shape.slice(0, axis));
  const size = data.shape[axis];
  const inner = numel(data.shape.slice(axis + 1));
  checkFoldedSize([...data.shape.slice(0, axis), ...indices.shape, ...data.shape.slice(axis + 1)]);
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const raw of index) {
      if (!Number.isInteger(raw)) throw new RangeError(`Gather: index ${raw} is not an integer`);
      const i = raw < 0 ? raw + size : raw;
      if (!(i >= 0 && i < size)) throw new RangeError(`Gather: index ${raw} is out of range for size ${size}`);
      for (let k = 0; k < inner; k++) out.push(values[(o * size + i) * inner + k]);
    }
  }
  return host(data.type, [...data.shape.slice(0, axis), ...indices.shape, ...data.shape.slice(axis + 1)], out);
}

/** Concatenates along `axis`. */
export function concatHost(parts: readonly Host[], axis: number): Host {
  const first = parts[0];
  const outer = numel(first.shape.slice(0, axis));
  checkFoldedSize([outer, parts.reduce((sum, p) => sum + numel(p.shape.slice(axis)), 0)]);
  const out: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const part of parts) {
      const chunk = numel(part.shape.slice(axis));
      const values = valuesOf(part);
      for (let k = 0; k < chunk; k++) out.push(values[o * chunk + k]);
    }
  }
  const shape = first.shape.slice();
  shape[axis] = parts.reduce((sum, p) => sum + p.shape[axis], 0);
  return host(first.type, shape, out);
}

/** Slices one axis with a positive or negative step (ONNX Slice semantics, clamped). */
export function sliceHost(data: Host, axis: number, start: number, end: number, step: number): Host {
  const size = data.shape[axis];
  const clampIndex = (v: number, low: number, high: number) => Math.min(Math.max(v < 0 ? v + size : v, low), high);
  const picks: number[] = [];
  if (step > 0) {
    for (let i = clampIndex(start, 0, size); i < clampIndex(end, 0, size); i += step) picks.push(i);
  } else {
    for (let i = clampIndex(start, -1, size - 1); i > clampIndex(end, -1, size - 1); i += step) picks.push(i);
  }
  return gatherHost(data, host(DATA_TYPE.INT64, [picks.length], picks), axis);
}

/** Permutes dims. */
export function transposeHost(data: Host, perm: readonly number[]): Host {
  const values = valuesOf(data);
  const shape = perm.map((p) => data.shape[p]);
  const inStrides = strides(data.shape);
  const count = numel(shape);
  const out = new Array<number>(count);
  const outStrides = strides(shape);
  for (let i = 0; i < count; i++) {
    let source = 0;
    for (let d = 0; d < shape.length; d++) source += (Math.floor(i / outStrides[d]) % shape[d]) * inStrides[perm[d]];
    out[i] = values[source];
  }
  return host(data.type, shape, out);
}

/** Whether two host tensors hold the same type, shape and values. */
export function sameHost(a: Host, b: Host): boolean {
  if (a === b) return true;
  if (a.type !== b.type || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return false;
  const x = valuesOf(a);
  const y = valuesOf(b);
  return x.every((v, i) => Object.is(v, y[i]));
}

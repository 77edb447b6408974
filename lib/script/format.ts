/**
 * The Spindle model file (zig/src/interpreter/format.zig has the byte layout): a 64-byte
 * header, a JSON graph description, and 64-byte-aligned little-endian tensor data. Traced
 * scripts are handed to the interpreter in this same form, so one validated native path
 * loads both.
 *
 * @module
 */
import type { DType } from "../tensor.ts";

/** One node of a graph: an op, a constant, a fork of another graph, or a wait. */
export interface NodeDescription {
  op: string;
  inputs?: number[];
  outputs: number[];
  /** Named parameters, as the op's schema (ffi/abi.ts) names them; absent ones default. */
  params?: Record<string, ParamValue>;
  graph?: number;
  tensor?: number;
}

/** A parameter value: a number, flag, enum name, list, or null (an absent optional). */
export type ParamValue = number | boolean | string | null | readonly number[];

/** A graph input: dtype and shape (-1 = any size). */
export interface InputDescription {
  /** The input's name, if the model gives one. */
  name?: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions; -1 marks a dimension of any size. */
  shape: number[];
}

/** A graph over numbered values; values 0 … inputs.length - 1 are its inputs. */
export interface GraphDescription {
  name?: string;
  inputs: InputDescription[];
  values: number;
  nodes: NodeDescription[];
  outputs: number[];
}

/** A tensor of the data region. */
export interface TensorDescription {
  name?: string;
  dtype: DType;
  shape: number[];
  offset: number;
  bytes: number;
}

/** The whole description. */
export interface Description {
  format: "spindle-graph";
  version: 2;
  graphs: GraphDescription[];
  tensors: TensorDescription[];
}

const MAGIC = new TextEncoder().encode("SPINDLE\0");
/** The file format version (zig/src/interpreter/format.zig `version`). */
const VERSION = 2;
const HEADER_SIZE = 64;
const ALIGNMENT = 64;

function align(offset: number): number {
  return Math.ceil(offset / ALIGNMENT) * ALIGNMENT;
}

/** Graphs plus the raw bytes of each tensor, before layout. */
export interface ProgramSource {
  graphs: GraphDescription[];
  tensors: { name?: string; dtype: DType; shape: number[]; data: Uint8Array }[];
}

/**
 * Lays out a program as a model image: tensors at 64-byte offsets, the description with
 * their offsets, and the header.
 */
export function encodeImage(source: ProgramSource): Uint8Array {
  let dataLength = 0;
  const tensors: TensorDescription[] = source.tensors.map((t) => {
    const offset = align(dataLength);
    dataLength = offset + t.data.byteLength;
    return { name: t.name, dtype: t.dtype, shape: t.shape, offset, bytes: t.data.byteLength };
  });
  const description: Description = { format: "spindle-graph", version: VERSION, graphs: source.graphs, tensors };
  // JSON has no NaN or infinities: parameters spell them "NaN", "Infinity" and "-Infinity"
  // (max pooling's -Infinity padding, a NaN scalar), which the native decoder reads back.
  const json = new TextEncoder().encode(
    JSON.stringify(
      description,
      (_key, value) => typeof value === "number" && !Number.isFinite(value) ? String(value) : value,
    ),
  );
  const dataOffset = align(HEADER_SIZE + json.byteLength);
  const image = new Uint8Array(dataOffset + dataLength);
  const view = new DataView(image.buffer);
  image.set(MAGIC, 0);
  view.setUint32(8, VERSION, true);
  view.setBigUint64(16, BigInt(HEADER_SIZE), true);
  view.setBigUint64(24, BigInt(json.byteLength), true);
  view.setBigUint64(32, BigInt(dataOffset), true);
  view.setBigUint64(40, BigInt(dataLength), true);
  image.set(json, HEADER_SIZE);
  source.tensors.forEach((t, i) => image.set(t.data, dataOffset + tensors[i].offset));
  return image;
}

/** Reads the description of an image (TypeScript only needs it for input specs and names). */
export function decodeDescription(image: Uint8Array): Description {
  if (image.byteLength < HEADER_SIZE || MAGIC.some((b, i) => image[i] !== b)) {
    throw new TypeError("not a Spindle model file (bad magic)");
  }
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const offset = Number(view.getBigUint64(16, true));
  const length = Number(view.getBigUint64(24, true));
  if (offset + length > image.byteLength) throw new RangeError("model description lies outside the file");
  return JSON.parse(new TextDecoder().decode(image.subarray(offset, offset + length)));
}

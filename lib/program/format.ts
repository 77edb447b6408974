/**
 * The Spindle model file (zig/src/interpreter/format.zig has the byte layout): a 64-byte
 * header, a JSON graph description (format version 2: each node's parameters named as its
 * op's schema in ffi/abi.ts names them), and 64-byte-aligned little-endian tensor data.
 * Traced scripts and imported ONNX models are handed to the interpreter in this same form,
 * so one validated native path loads every model.
 *
 * @module
 */
import type { DType } from "../tensor.ts";

/**
 * One node of a graph: an op, a constant, a fork of another graph, a wait, or a control-flow
 * node (if, loop, scan: the only ones with several outputs).
 */
export interface NodeDescription {
  op: string;
  inputs?: number[];
  outputs: number[];
  /** Named parameters, as the op's schema (ffi/abi.ts) names them; absent ones default. */
  params?: Record<string, ParamValue>;
  graph?: number;
  /** if: the then and else graphs; loop, scan: the body (zig/src/interpreter/control.zig). */
  graphs?: number[];
  tensor?: number;
}

/** A parameter value: a number, flag, enum name, list, or null (an absent optional). */
export type ParamValue = number | boolean | string | null | readonly number[];

/**
 * A graph input (or, in a graph's `results`, an output): name, dtype and shape (-1 = any
 * size).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type InputDescription, Module, relu, script, zeros } from "@spindle/spindle";
 * using x = zeros([2, 4]);
 * using model = Module.fromScript(script((input) => relu(input)), [x], { inputNames: ["x"] });
 * const input: InputDescription = model.inputs[0];
 * assert.deepEqual(input, { name: "x", dtype: "float32", shape: [2, 4] });
 * ```
 */
export interface InputDescription {
  /** The name, if the model gives one (a model names all of its inputs, or none). */
  name?: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions; -1 marks a dimension of any size. */
  shape: number[];
  /**
   * Names of symbolic dimensions (ONNX `dim_param`), one per dimension, null where a
   * dimension has none; absent when none has one. Only dimensions of any size (-1) are named.
   */
  symbols?: (string | null)[];
}

/** A graph over numbered values; values 0 … inputs.length - 1 are its inputs. */
export interface GraphDescription {
  name?: string;
  inputs: InputDescription[];
  values: number;
  nodes: NodeDescription[];
  outputs: number[];
  /** Name, dtype and shape of each output, in the order of `outputs` (optional). */
  results?: InputDescription[];
  /**
   * One shape per input that the model accepts, its open dimensions given sizes (optional):
   * the load-time check runs the model at these sizes instead of 1 for every open dimension
   * (a detector whose sizes must be multiples of 32 fails at 1).
   */
  check_shapes?: number[][];
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
  const graphs = source.graphs.map(spellNonFinite);
  const description: Description = { format: "spindle-graph", version: VERSION, graphs, tensors };
  // No replacer: a replacer is a JavaScript call per value, a tenth of an import's time.
  const json = new TextEncoder().encode(JSON.stringify(description));
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

/**
 * JSON has no NaN or infinities: parameters spell them "NaN", "Infinity" and "-Infinity"
 * (max pooling's -Infinity padding, a NaN scalar), which the native decoder reads back. Only
 * parameters can hold them; a graph whose nodes have none is returned as it is.
 */
function spellNonFinite(graph: GraphDescription): GraphDescription {
  let nodes: NodeDescription[] | null = null;
  graph.nodes.forEach((node, i) => {
    if (node.params === undefined) return;
    let params: Record<string, ParamValue> | null = null;
    for (const [key, value] of Object.entries(node.params)) {
      const spelled = typeof value === "number"
        ? (Number.isFinite(value) ? value : String(value))
        : Array.isArray(value) && value.some((v) => !Number.isFinite(v))
        ? value.map((v) => (Number.isFinite(v) ? v : String(v)))
        : value;
      if (spelled === value) continue;
      params ??= { ...node.params };
      params[key] = spelled as ParamValue;
    }
    if (params === null) return;
    nodes ??= graph.nodes.slice();
    nodes[i] = { ...node, params };
  });
  return nodes === null ? graph : { ...graph, nodes };
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

/** Splits an image back into its graphs and tensor bytes (the inverse of encodeImage). */
export function decodeSource(image: Uint8Array): ProgramSource {
  const description = decodeDescription(image);
  const dataOffset = Number(new DataView(image.buffer, image.byteOffset, image.byteLength).getBigUint64(32, true));
  const tensors = description.tensors.map((t) => ({
    name: t.name,
    dtype: t.dtype,
    shape: t.shape,
    data: image.subarray(dataOffset + t.offset, dataOffset + t.offset + t.bytes),
  }));
  return { graphs: description.graphs, tensors };
}

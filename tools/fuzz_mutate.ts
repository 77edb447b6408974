/**
 * The fuzzer's mutations: byte-level ones for any file (bit flips, byte sets, truncation,
 * chunk duplication and removal), structural ones for ONNX (the protobuf parsed along the
 * ONNX schema, so varints, dims, op types, attributes and whole nodes can be rewritten and
 * the enclosing lengths re-encoded), and description edits for Spindle files (the JSON after
 * the 64-byte header: parameters, shapes, value counts, op names, tensor offsets). Every
 * choice comes from a seeded generator, so a (seed, case index) pair always makes the same
 * bytes.
 *
 * @module
 */
import { OP_SCHEMAS } from "../ffi/abi.ts";
import { HANDLERS } from "../lib/onnx/ops.ts";

// ------------------------------------------------------------------------------------------
// A seeded generator (mulberry32: small, fast, good enough to pick mutations).

/** A deterministic pseudo-random generator. */
export class Rng {
  #state: number;

  /** @param seed Any 32-bit integer. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The generator of case `index` under campaign seed `seed`. */
  static forCase(seed: number, index: number): Rng {
    // Mix both through a multiplicative hash so neighbouring cases start far apart.
    let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35);
    h ^= h >>> 16;
    return new Rng(Math.imul(h, 0x27d4eb2f));
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

// ------------------------------------------------------------------------------------------
// Interesting values.

/** Integers that sit on the edges of what parsers and shape checks handle. */
const INTERESTING_INTS: readonly bigint[] = [
  0n,
  1n,
  2n,
  3n,
  -1n,
  -2n,
  7n,
  8n,
  9n,
  64n,
  255n,
  256n,
  65535n,
  65536n,
  2n ** 31n - 1n,
  2n ** 31n,
  2n ** 32n,
  2n ** 32n + 1n,
  2n ** 40n,
  2n ** 40n + 1n,
  2n ** 53n,
  2n ** 63n - 1n,
  -(2n ** 31n),
  -(2n ** 63n),
];

/** Dimension sizes: degenerate, awkward and huge (the "huge declared shapes" mutation). */
const INTERESTING_DIMS: readonly bigint[] = [0n, 1n, 2n, 3n, 5n, 16n, 1000n, 65536n, 2n ** 31n, 2n ** 40n, -1n, -5n];

/** Strings that probe name lookups (prototype members included). */
const INTERESTING_STRINGS = ["", "toString", "__proto__", "constructor", "hasOwnProperty", "valueOf", "x", "y"];

/** Op types import knows, unknown ones, and names of Object.prototype members. */
const ONNX_OP_TYPES = [
  ...Object.keys(HANDLERS),
  ...INTERESTING_STRINGS,
  "Foo",
  "relu",
  "If",
  "Loop",
  "Scan",
  "ArgMax",
  "NonZero",
  "Split",
];

/** Attribute names the handlers read, so a swap changes meaning instead of just dropping one. */
const ONNX_ATTRIBUTE_NAMES = [
  "axis",
  "axes",
  "perm",
  "pads",
  "strides",
  "kernel_shape",
  "dilations",
  "group",
  "mode",
  "transA",
  "transB",
  "alpha",
  "beta",
  "to",
  "value",
  "keepdims",
  "allowzero",
  "coordinate_transformation_mode",
  "nearest_mode",
  "auto_pad",
  "ceil_mode",
  "epsilon",
  "starts",
  "ends",
  "output_padding",
  "output_shape",
  "count_include_pad",
  "exclusive",
  "reverse",
  "noop_with_empty_axes",
  "training_mode",
  "approximate",
  "scales",
  "__proto__",
  "toString",
];

/** String attribute values (modes) import switches on. */
const ONNX_ATTRIBUTE_STRINGS = [
  "constant",
  "reflect",
  "edge",
  "wrap",
  "nearest",
  "linear",
  "cubic",
  "bilinear",
  "half_pixel",
  "asymmetric",
  "align_corners",
  "pytorch_half_pixel",
  "tf_crop_and_resize",
  "round_prefer_floor",
  "round_prefer_ceil",
  "floor",
  "ceil",
  "NOTSET",
  "SAME_UPPER",
  "SAME_LOWER",
  "VALID",
  "tanh",
  "none",
  ...INTERESTING_STRINGS,
];

/** ONNX TensorProto.DataType values: every defined one, and a few that are not. */
const ONNX_DATA_TYPES: readonly bigint[] = [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n, 12n, 13n, 16n, 100n, -1n];

/** Opset versions around the ones import special-cases. */
const ONNX_OPSETS: readonly bigint[] = [0n, 1n, 7n, 9n, 10n, 11n, 12n, 13n, 17n, 18n, 21n, 22n, 1000n, -1n];

// ------------------------------------------------------------------------------------------
// Byte-level mutations (any file).

/** One applied mutation: its name and what it did, for the reproducer's notes. */
export interface Applied {
  name: string;
  detail: string;
}

function bitFlip(bytes: Uint8Array, rng: Rng): [Uint8Array, string] {
  if (bytes.length === 0) return [bytes, "empty"];
  const out = bytes.slice();
  const count = 1 + rng.int(8);
  for (let i = 0; i < count; i++) out[rng.int(out.length)] ^= 1 << rng.int(8);
  return [out, `${count} bits`];
}

function byteSet(bytes: Uint8Array, rng: Rng): [Uint8Array, string] {
  if (bytes.length === 0) return [bytes, "empty"];
  const out = bytes.slice();
  const count = 1 + rng.int(4);
  for (let i = 0; i < count; i++) out[rng.int(out.length)] = rng.pick([0, 1, 0x7f, 0x80, 0xff, rng.int(256)]);
  return [out, `${count} bytes`];
}

function truncate(bytes: Uint8Array, rng: Rng): [Uint8Array, string] {
  const at = rng.int(bytes.length);
  return [bytes.slice(0, at), `at ${at} of ${bytes.length}`];
}

function duplicateChunk(bytes: Uint8Array, rng: Rng): [Uint8Array, string] {
  if (bytes.length === 0) return [bytes, "empty"];
  const start = rng.int(bytes.length);
  const length = 1 + rng.int(Math.min(256, bytes.length - start));
  const at = rng.int(bytes.length + 1);
  const chunk = bytes.subarray(start, start + length);
  const out = new Uint8Array(bytes.length + length);
  out.set(bytes.subarray(0, at), 0);
  out.set(chunk, at);
  out.set(bytes.subarray(at), at + length);
  return [out, `${length} bytes from ${start} to ${at}`];
}

function removeChunk(bytes: Uint8Array, rng: Rng): [Uint8Array, string] {
  if (bytes.length === 0) return [bytes, "empty"];
  const start = rng.int(bytes.length);
  const length = 1 + rng.int(Math.min(256, bytes.length - start));
  const out = new Uint8Array(bytes.length - length);
  out.set(bytes.subarray(0, start), 0);
  out.set(bytes.subarray(start + length), start);
  return [out, `${length} bytes at ${start}`];
}

const BYTE_MUTATIONS: Record<string, (bytes: Uint8Array, rng: Rng) => [Uint8Array, string]> = {
  bitFlip,
  byteSet,
  truncate,
  duplicateChunk,
  removeChunk,
};

// ------------------------------------------------------------------------------------------
// ONNX: the protobuf as a tree of fields, parsed along the schema.

/** One protobuf field: a varint, fixed bytes, opaque bytes, or a parsed submessage. */
interface Field {
  no: number;
  wire: number;
  /** varint (wire 0) */
  int?: bigint;
  /** fixed64/fixed32 (wire 1/5) and opaque length-delimited bytes */
  bytes?: Uint8Array;
  /** a submessage (wire 2 at a message-typed position) */
  message?: Field[];
  /** the submessage's type, e.g. "Node" */
  type?: string;
}

/** Which fields of each ONNX message are submessages (the rest stay opaque). */
const ONNX_SCHEMA: Record<string, Record<number, string>> = {
  Model: { 7: "Graph", 8: "Opset" },
  Graph: { 1: "Node", 5: "Tensor", 11: "ValueInfo", 12: "ValueInfo", 13: "ValueInfo" },
  Node: { 5: "Attribute" },
  Attribute: { 5: "Tensor", 6: "Graph" },
  ValueInfo: { 2: "Type" },
  Type: { 1: "TensorType" },
  TensorType: { 2: "Shape" },
  Shape: { 1: "Dim" },
  Tensor: {},
  Opset: {},
  Dim: {},
};

/** String fields, by message type (what op-type and name mutations rewrite). */
const ONNX_STRINGS: Record<string, readonly number[]> = {
  Node: [1, 2, 3, 4, 7],
  Attribute: [1, 4],
  Tensor: [8],
  ValueInfo: [1],
  Dim: [2],
  Graph: [2],
  Opset: [1],
};

const MAX_DEPTH = 16;

function readVarint(bytes: Uint8Array, at: { pos: number }): bigint {
  let value = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (at.pos >= bytes.length) throw new RangeError("varint past the end");
    const b = bytes[at.pos++];
    value |= BigInt(b & 0x7f) << shift;
    if ((b & 0x80) === 0) return BigInt.asUintN(64, value);
  }
  throw new RangeError("varint too long");
}

/** Parses a message; null when the bytes are not a well-formed message of that type. */
function parseMessage(bytes: Uint8Array, type: string, depth = 0): Field[] | null {
  if (depth > MAX_DEPTH) return null;
  const fields: Field[] = [];
  const at = { pos: 0 };
  try {
    while (at.pos < bytes.length) {
      const tag = readVarint(bytes, at);
      const no = Number(tag >> 3n);
      const wire = Number(tag & 7n);
      if (no === 0) return null;
      if (wire === 0) fields.push({ no, wire, int: readVarint(bytes, at) });
      else if (wire === 1 || wire === 5) {
        const size = wire === 1 ? 8 : 4;
        if (at.pos + size > bytes.length) return null;
        fields.push({ no, wire, bytes: bytes.subarray(at.pos, at.pos + size) });
        at.pos += size;
      } else if (wire === 2) {
        const length = Number(readVarint(bytes, at));
        if (at.pos + length > bytes.length) return null;
        const body = bytes.subarray(at.pos, at.pos + length);
        at.pos += length;
        const childType = ONNX_SCHEMA[type]?.[no];
        const child = childType === undefined ? null : parseMessage(body, childType, depth + 1);
        if (child === null) fields.push({ no, wire, bytes: body });
        else fields.push({ no, wire, message: child, type: childType });
      } else return null;
    }
  } catch {
    return null;
  }
  return fields;
}

function varint(value: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, value);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/** Encodes fields as pieces (tags and lengths small, bodies as they are), then joins them once. */
function pieces(fields: readonly Field[], into: Uint8Array[]): number {
  let length = 0;
  const push = (piece: Uint8Array) => {
    into.push(piece);
    length += piece.length;
  };
  for (const f of fields) {
    push(Uint8Array.from(varint((BigInt(f.no) << 3n) | BigInt(f.wire))));
    if (f.wire === 0) push(Uint8Array.from(varint(f.int ?? 0n)));
    else if (f.wire === 2 && f.message !== undefined) {
      const body: Uint8Array[] = [];
      const size = pieces(f.message, body);
      push(Uint8Array.from(varint(BigInt(size))));
      for (const piece of body) push(piece);
    } else if (f.wire === 2) {
      const body = f.bytes ?? new Uint8Array();
      push(Uint8Array.from(varint(BigInt(body.length))));
      push(body);
    } else push(f.bytes ?? new Uint8Array());
  }
  return length;
}

function serialize(fields: readonly Field[]): Uint8Array {
  const all: Uint8Array[] = [];
  const out = new Uint8Array(pieces(fields, all));
  let at = 0;
  for (const piece of all) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/** A field with where it sits: its parent message's type and its siblings. */
interface Located {
  field: Field;
  parent: string;
  siblings: Field[];
}

function walk(fields: Field[], type: string, into: Located[] = []): Located[] {
  for (const field of fields) {
    into.push({ field, parent: type, siblings: fields });
    if (field.message !== undefined && field.type !== undefined) walk(field.message, field.type, into);
  }
  return into;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Sets an integer-list attribute (`pads`, `strides`, …) of the first node of type `opType`
 * that has it: a hand-made hostile file from a real model (tests/hostile_test.ts).
 *
 * @param bytes An ONNX model.
 * @param opType The node type, e.g. "Conv".
 * @param name The attribute's name.
 * @param values The new list.
 * @returns The edited model.
 */
export function setOnnxAttributeInts(
  bytes: Uint8Array,
  opType: string,
  name: string,
  values: readonly number[],
): Uint8Array {
  const model = parseMessage(bytes, "Model");
  if (model === null) throw new Error("setOnnxAttributeInts: not an ONNX model");
  const text = (field: Field | undefined) => (field?.bytes === undefined ? undefined : decoder.decode(field.bytes));
  for (const { field } of walk(model, "Model")) {
    if (field.type !== "Node" || text(field.message!.find((f) => f.no === 4)) !== opType) continue;
    const attribute = field.message!.find((f) =>
      f.type === "Attribute" && text(f.message!.find((a) => a.no === 1)) === name
    );
    if (attribute === undefined) continue;
    // AttributeProto.ints is field 8; written unpacked, one varint each.
    const kept = attribute.message!.filter((f) => f.no !== 8);
    attribute.message = [...kept, ...values.map((v) => ({ no: 8, wire: 0, int: BigInt(v) }))];
    return serialize(model);
  }
  throw new Error(`setOnnxAttributeInts: no ${opType} node with attribute '${name}'`);
}

function isString(l: Located): boolean {
  return l.field.wire === 2 && l.field.bytes !== undefined && (ONNX_STRINGS[l.parent]?.includes(l.field.no) ?? false);
}

function setString(field: Field, value: string): void {
  field.bytes = encoder.encode(value);
}

type TreeMutation = (all: Located[], rng: Rng) => string | null;

function choose(all: Located[], rng: Rng, test: (l: Located) => boolean): Located | null {
  const matches = all.filter(test);
  return matches.length === 0 ? null : rng.pick(matches);
}

const ONNX_MUTATIONS: Record<string, TreeMutation> = {
  varint(all, rng) {
    const l = choose(all, rng, (l) => l.field.wire === 0);
    if (l === null) return null;
    const before = l.field.int;
    l.field.int = rng.chance(0.8) ? rng.pick(INTERESTING_INTS) : (l.field.int ?? 0n) + BigInt(rng.int(5) - 2);
    return `${l.parent}.${l.field.no}: ${BigInt.asIntN(64, before ?? 0n)} → ${BigInt.asIntN(64, l.field.int)}`;
  },
  dims(all, rng) {
    // Tensor dims, shape dims, and integer attributes (axes, pads, perm, kernel sizes …).
    const l = choose(all, rng, (l) =>
      l.field.wire === 0 &&
      ((l.parent === "Tensor" && l.field.no === 1) || (l.parent === "Dim" && l.field.no === 1) ||
        (l.parent === "Attribute" && (l.field.no === 3 || l.field.no === 8))));
    if (l === null) return null;
    const value = rng.pick(INTERESTING_DIMS);
    // Sometimes every dim of the same shape at once: a huge declared shape.
    const targets = rng.chance(0.3) ? l.siblings.filter((f) => f.no === l.field.no && f.wire === 0) : [l.field];
    for (const f of targets) f.int = value;
    return `${l.parent}.${l.field.no} ×${targets.length} → ${value}`;
  },
  dimKind(all, rng) {
    // A fixed dim becomes symbolic or the other way round.
    const l = choose(all, rng, (l) => l.parent === "Dim");
    if (l === null) return null;
    if (l.field.no === 1) {
      const name = rng.pick(["batch", "", "__proto__", "toString", "h"]);
      Object.assign(l.field, { no: 2, wire: 2, int: undefined, bytes: encoder.encode(name) });
      return `dim → '${name}'`;
    }
    const value = rng.pick(INTERESTING_DIMS);
    Object.assign(l.field, { no: 1, wire: 0, int: value, bytes: undefined });
    return `dim param → ${value}`;
  },
  opType(all, rng) {
    const l = choose(all, rng, (l) => l.parent === "Node" && l.field.no === 4 && l.field.bytes !== undefined);
    if (l === null) return null;
    const before = decoder.decode(l.field.bytes);
    const after = rng.pick(ONNX_OP_TYPES);
    setString(l.field, after);
    return `${before} → ${after}`;
  },
  domain(all, rng) {
    const node = choose(all, rng, (l) => l.parent === "Graph" && l.field.type === "Node");
    if (node === null || node.field.message === undefined) return null;
    const domain = rng.pick(["", "ai.onnx", "com.microsoft", "ai.onnx.ml", "__proto__"]);
    const fields = node.field.message.filter((f) => f.no !== 7);
    fields.push({ no: 7, wire: 2, bytes: encoder.encode(domain) });
    node.field.message = fields;
    return `domain '${domain}'`;
  },
  name(all, rng) {
    // Rename a value, attribute or tensor: to another name of the model (dangling or
    // repeated references, cycles) or to a probing string.
    const l = choose(all, rng, isString);
    if (l === null) return null;
    const names = all.filter((o) => isString(o) && o.parent !== "Attribute").map((o) => decoder.decode(o.field.bytes));
    const after = rng.chance(0.6) && names.length > 0 ? rng.pick(names) : rng.pick(INTERESTING_STRINGS);
    const before = decoder.decode(l.field.bytes);
    setString(l.field, after);
    return `${l.parent}.${l.field.no} '${before}' → '${after}'`;
  },
  attributeName(all, rng) {
    const l = choose(all, rng, (l) => l.parent === "Attribute" && l.field.no === 1 && l.field.bytes !== undefined);
    if (l === null) return null;
    const after = rng.pick(ONNX_ATTRIBUTE_NAMES);
    const before = decoder.decode(l.field.bytes);
    setString(l.field, after);
    return `'${before}' → '${after}'`;
  },
  attributeValue(all, rng) {
    const attribute = choose(all, rng, (l) => l.field.type === "Attribute");
    if (attribute === null || attribute.field.message === undefined) return null;
    const fields = attribute.field.message;
    const kind = rng.int(4);
    if (kind === 0) {
      // A string (a mode) attribute.
      const value = rng.pick(ONNX_ATTRIBUTE_STRINGS);
      attribute.field.message = [...fields.filter((f) => f.no !== 4), { no: 4, wire: 2, bytes: encoder.encode(value) }];
      return `s = '${value}'`;
    }
    if (kind === 1) {
      // A list of ints of another length (pads with 3 entries, a rank-9 perm …).
      const length = rng.pick([0, 1, 2, 3, 4, 5, 8, 9]);
      const ints = Array.from({ length }, () => ({ no: 8, wire: 0, int: rng.pick(INTERESTING_DIMS) }));
      attribute.field.message = [...fields.filter((f) => f.no !== 8), ...ints];
      return `ints ×${length}`;
    }
    if (kind === 2) {
      // A float: NaN, infinities, zero, negative.
      const f = rng.pick([NaN, Infinity, -Infinity, 0, -1, 1e-30, 3.5e38]);
      const data = new Uint8Array(new Float32Array([f]).buffer);
      attribute.field.message = [...fields.filter((x) => x.no !== 2), { no: 2, wire: 5, bytes: data }];
      return `f = ${f}`;
    }
    const type = BigInt(rng.int(16));
    attribute.field.message = [...fields.filter((f) => f.no !== 20), { no: 20, wire: 0, int: type }];
    return `type = ${type}`;
  },
  dataType(all, rng) {
    const l = choose(
      all,
      rng,
      (l) =>
        l.field.wire === 0 &&
        ((l.parent === "Tensor" && l.field.no === 2) || (l.parent === "TensorType" && l.field.no === 1)),
    );
    if (l === null) return null;
    l.field.int = rng.pick(ONNX_DATA_TYPES);
    return `${l.parent} type → ${l.field.int}`;
  },
  rawData(all, rng) {
    const l = choose(all, rng, (l) => l.parent === "Tensor" && l.field.no === 9 && l.field.bytes !== undefined);
    if (l === null || l.field.bytes === undefined) return null;
    const before = l.field.bytes.length;
    const length = rng.pick([0, 1, 3, Math.max(0, before - 4), before + 4, before * 2]);
    const data = new Uint8Array(length);
    data.set(l.field.bytes.subarray(0, Math.min(length, before)));
    l.field.bytes = data;
    return `raw_data ${before} → ${length} bytes`;
  },
  opset(all, rng) {
    const l = choose(all, rng, (l) => l.parent === "Opset" && l.field.no === 2);
    if (l === null) return null;
    l.field.int = rng.pick(ONNX_OPSETS);
    return `opset → ${l.field.int}`;
  },
  remove(all, rng) {
    const l = choose(all, rng, (l) => l.field.message !== undefined || isString(l));
    if (l === null) return null;
    l.siblings.splice(l.siblings.indexOf(l.field), 1);
    return `${l.field.type ?? `${l.parent}.${l.field.no}`}`;
  },
  duplicate(all, rng) {
    const l = choose(all, rng, (l) => l.field.message !== undefined || isString(l));
    if (l === null) return null;
    const copy = parseMessage(serialize([l.field]), l.parent) ?? [];
    l.siblings.splice(rng.int(l.siblings.length + 1), 0, ...copy);
    return `${l.field.type ?? `${l.parent}.${l.field.no}`}`;
  },
  swapNodes(all, rng) {
    // Two nodes trade places: a value read before it is written.
    const nodes = all.filter((l) => l.field.type === "Node");
    if (nodes.length < 2) return null;
    const a = rng.pick(nodes);
    const b = rng.pick(nodes.filter((l) => l.siblings === a.siblings)); // the same graph
    const i = a.siblings.indexOf(a.field);
    const j = a.siblings.indexOf(b.field);
    [a.siblings[i], a.siblings[j]] = [a.siblings[j], a.siblings[i]];
    return `nodes ${i} ↔ ${j}`;
  },
};

function mutateOnnx(bytes: Uint8Array, rng: Rng): [Uint8Array, Applied] | null {
  const tree = parseMessage(bytes, "Model");
  if (tree === null) return null;
  const names = Object.keys(ONNX_MUTATIONS);
  // A few tries: a mutation that finds nothing to change (no attributes …) gives way.
  for (let attempt = 0; attempt < 4; attempt++) {
    const name = rng.pick(names);
    const detail = ONNX_MUTATIONS[name](walk(tree, "Model"), rng);
    if (detail !== null) return [serialize(tree), { name: `onnx.${name}`, detail }];
  }
  return null;
}

// ------------------------------------------------------------------------------------------
// Spindle files: edits of the JSON description.

const HEADER_SIZE = 64;
const ALIGNMENT = 64;

interface SpindleParts {
  description: unknown;
  data: Uint8Array;
}

function splitSpindle(bytes: Uint8Array): SpindleParts | null {
  if (bytes.length < HEADER_SIZE) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offset = Number(view.getBigUint64(16, true));
  const length = Number(view.getBigUint64(24, true));
  const dataOffset = Number(view.getBigUint64(32, true));
  const dataLength = Number(view.getBigUint64(40, true));
  if (offset + length > bytes.length || dataOffset + dataLength > bytes.length) return null;
  try {
    const description = JSON.parse(decoder.decode(bytes.subarray(offset, offset + length)));
    return { description, data: bytes.subarray(dataOffset, dataOffset + dataLength) };
  } catch {
    return null;
  }
}

/** Lays the parts out again as the writer does (header, JSON, aligned data), header and all. */
function joinSpindle(header: Uint8Array, json: string, data: Uint8Array): Uint8Array {
  const text = encoder.encode(json);
  const dataOffset = Math.ceil((HEADER_SIZE + text.length) / ALIGNMENT) * ALIGNMENT;
  const out = new Uint8Array(dataOffset + data.length);
  out.set(header.subarray(0, HEADER_SIZE), 0);
  const view = new DataView(out.buffer);
  view.setBigUint64(16, BigInt(HEADER_SIZE), true);
  view.setBigUint64(24, BigInt(text.length), true);
  view.setBigUint64(32, BigInt(dataOffset), true);
  view.setBigUint64(40, BigInt(data.length), true);
  out.set(text, HEADER_SIZE);
  out.set(data, dataOffset);
  return out;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A slot of the JSON tree: a container and the key of one of its entries. */
interface Slot {
  container: Json[] | { [key: string]: Json };
  key: string | number;
  path: string;
}

function slots(value: Json, path: string, into: Slot[] = [], depth = 0): Slot[] {
  if (depth > 32 || value === null || typeof value !== "object") return into;
  const entries: [string | number, Json][] = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  for (const [key, child] of entries) {
    const childPath = `${path}.${key}`;
    into.push({ container: value, key, path: childPath });
    slots(child, childPath, into, depth + 1);
  }
  return into;
}

function get(slot: Slot): Json {
  return (slot.container as Record<string | number, Json>)[slot.key];
}

function set(slot: Slot, value: Json): void {
  (slot.container as Record<string | number, Json>)[slot.key] = value;
}

const OP_NAMES = [...Object.keys(OP_SCHEMAS), "constant", "fork", "wait", ...INTERESTING_STRINGS];
const DTYPES = ["float32", "int64", "int32", "float64", "bool", "__proto__", "toString", ""];

/** Numbers a description field may be set to: counts, indices, sizes, non-numbers. */
const JSON_NUMBERS: readonly Json[] = [
  0,
  1,
  -1,
  2,
  7,
  63,
  64,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  1e300,
  -1e300,
  0.5,
  -0,
  "NaN",
  "Infinity",
  "-Infinity",
  null,
  true,
  "1",
  [],
  {},
];

const HUGE_SHAPES: readonly number[][] = [
  [2 ** 31, 2 ** 31],
  [2 ** 40],
  [1e9],
  [65536, 65536],
  [2 ** 53],
  [0],
  [-5],
  [1, 1, 1, 1, 1, 1, 1, 1, 1],
  [],
  [3, 0, 4],
  [1e6, 1e6, 1e6],
];

type JsonMutation = (root: Json, all: Slot[], rng: Rng) => string | null;

function chooseSlot(all: Slot[], rng: Rng, test: (s: Slot) => boolean): Slot | null {
  const matches = all.filter(test);
  return matches.length === 0 ? null : rng.pick(matches);
}

const JSON_MUTATIONS: Record<string, JsonMutation> = {
  value(_root, all, rng) {
    // Any leaf or container: a number, a string, a list or an object in its place.
    const s = chooseSlot(all, rng, () => true);
    if (s === null) return null;
    const before = get(s);
    let after: Json;
    if (typeof before === "string") after = rng.pick([...INTERESTING_STRINGS, ...OP_NAMES, ...DTYPES, 0]);
    else if (Array.isArray(before) && before.length > 0 && rng.chance(0.5)) {
      after = rng.chance(0.5) ? before.slice(1) : [...before, before[rng.int(before.length)]];
    } else after = rng.pick(JSON_NUMBERS);
    set(s, after);
    return `${s.path} = ${JSON.stringify(after)}`;
  },
  number(_root, all, rng) {
    const s = chooseSlot(all, rng, (s) => typeof get(s) === "number");
    if (s === null) return null;
    const before = get(s) as number;
    const after = rng.chance(0.5) ? rng.pick(JSON_NUMBERS) : before + rng.pick([-2, -1, 1, 2, 64]);
    set(s, after);
    return `${s.path}: ${before} → ${JSON.stringify(after)}`;
  },
  shape(_root, all, rng) {
    // A declared shape (an input's, a tensor's, a result's, or a reshape target) made huge,
    // empty, negative or too long.
    const s = chooseSlot(all, rng, (s) => s.key === "shape" && Array.isArray(get(s)));
    if (s === null) return null;
    const after = rng.chance(0.7)
      ? rng.pick(HUGE_SHAPES)
      : (get(s) as number[]).map((d) => (rng.chance(0.5) ? rng.pick([0, -1, 2 ** 31, d * 1000]) : d));
    set(s, after);
    return `${s.path} = ${JSON.stringify(after)}`;
  },
  count(_root, all, rng) {
    // The value count of a graph, a tensor's offset or byte count, an index of a value.
    const s = chooseSlot(all, rng, (s) =>
      ["values", "offset", "bytes", "graph", "tensor"].includes(String(s.key)) ||
      (typeof s.key === "number" && typeof get(s) === "number" && /\.(inputs|outputs)\.\d+$/.test(s.path)));
    if (s === null) return null;
    const before = get(s) as number;
    const after = rng.pick([0, -1, before - 1, before + 1, before * 2 + 1, 2 ** 31, 2 ** 53, 1e300]);
    set(s, after);
    return `${s.path}: ${before} → ${after}`;
  },
  param(_root, all, rng) {
    // A node's parameter: another value, removed, or an unknown name added.
    const s = chooseSlot(all, rng, (s) => s.key === "params" && typeof get(s) === "object" && get(s) !== null);
    if (s === null) return null;
    const params = get(s) as Record<string, Json>;
    const keys = Object.keys(params);
    const choice = rng.int(3);
    if (choice === 0 && keys.length > 0) {
      const key = rng.pick(keys);
      const after = rng.chance(0.5) ? rng.pick(JSON_NUMBERS) : rng.pick([...INTERESTING_STRINGS, [1, 2, 3], [], [-1]]);
      params[key] = after;
      return `${s.path}.${key} = ${JSON.stringify(after)}`;
    }
    if (choice === 1 && keys.length > 0) {
      const key = rng.pick(keys);
      delete params[key];
      return `${s.path}.${key} removed`;
    }
    const key = rng.pick(["__proto__", "toString", "bogus", "dim", "shape", "alpha"]);
    Object.defineProperty(params, key, { value: rng.pick(JSON_NUMBERS), enumerable: true, writable: true });
    return `${s.path}.${key} added`;
  },
  op(_root, all, rng) {
    const s = chooseSlot(all, rng, (s) => s.key === "op");
    if (s === null) return null;
    const after = rng.pick(OP_NAMES);
    const before = get(s);
    set(s, after);
    return `${s.path}: ${before} → ${after}`;
  },
  dtype(_root, all, rng) {
    const s = chooseSlot(all, rng, (s) => s.key === "dtype");
    if (s === null) return null;
    const after = rng.pick(DTYPES);
    set(s, after);
    return `${s.path} = ${after}`;
  },
  remove(_root, all, rng) {
    const s = chooseSlot(all, rng, () => true);
    if (s === null) return null;
    if (Array.isArray(s.container)) s.container.splice(Number(s.key), 1);
    else delete s.container[s.key];
    return `${s.path} removed`;
  },
  duplicate(_root, all, rng) {
    // A node, input, graph or tensor twice.
    const s = chooseSlot(all, rng, (s) => Array.isArray(s.container) && typeof get(s) === "object");
    if (s === null || !Array.isArray(s.container)) return null;
    s.container.splice(rng.int(s.container.length + 1), 0, structuredClone(get(s)));
    return `${s.path} duplicated`;
  },
};

function mutateSpindle(bytes: Uint8Array, rng: Rng): [Uint8Array, Applied] | null {
  if (rng.chance(0.15)) {
    // The header: a length or an offset that lies.
    if (bytes.length < HEADER_SIZE) return null;
    const out = bytes.slice();
    const view = new DataView(out.buffer);
    const field = rng.pick([8, 16, 24, 32, 40]);
    const value = rng.pick(INTERESTING_INTS);
    if (field === 8) view.setUint32(8, Number(BigInt.asUintN(32, value)), true);
    else view.setBigUint64(field, BigInt.asUintN(64, value), true);
    return [out, { name: "spindle.header", detail: `bytes ${field}.. = ${value}` }];
  }
  const parts = splitSpindle(bytes);
  if (parts === null) return null;
  const root = parts.description as Json;
  const names = Object.keys(JSON_MUTATIONS);
  for (let attempt = 0; attempt < 4; attempt++) {
    const name = rng.pick(names);
    const detail = JSON_MUTATIONS[name](root, slots(root, "$"), rng);
    if (detail !== null) {
      const json = JSON.stringify(root);
      return [joinSpindle(bytes, json, parts.data), { name: `spindle.${name}`, detail }];
    }
  }
  return null;
}

// ------------------------------------------------------------------------------------------

/** The kind of a seed file, from its name. */
export type FileKind = "onnx" | "spindle";

/**
 * Mutates a seed 1–3 times: a structural mutation (ONNX tree or Spindle description) about
 * two times in three, a byte-level one otherwise.
 *
 * @param seed The seed file's bytes.
 * @param kind ONNX or Spindle.
 * @param rng The case's generator.
 * @returns The mutated bytes and what was applied.
 */
export function mutate(seed: Uint8Array, kind: FileKind, rng: Rng): { bytes: Uint8Array; applied: Applied[] } {
  let bytes = seed;
  const applied: Applied[] = [];
  const count = 1 + rng.int(3);
  for (let i = 0; i < count; i++) {
    let result: [Uint8Array, Applied] | null = null;
    if (rng.chance(0.65)) result = kind === "onnx" ? mutateOnnx(bytes, rng) : mutateSpindle(bytes, rng);
    if (result === null) {
      const name = rng.pick(Object.keys(BYTE_MUTATIONS));
      const [out, detail] = BYTE_MUTATIONS[name](bytes, rng);
      result = [out, { name, detail }];
    }
    [bytes] = result;
    applied.push(result[1]);
  }
  return { bytes, applied };
}

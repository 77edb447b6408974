/**
 * The subset of the ONNX protobuf schema (onnx/onnx.proto, IR versions 3–10) that import
 * needs, decoded with `@bufbuild/protobuf`'s wire reader. Unknown fields are skipped; bytes
 * fields (a tensor's `raw_data`) are views into the file, so weights are copied once, into
 * the model image.
 *
 * @module
 */
// An inline, pinned specifier (not the import map) so that this module also loads when
// imported by URL from a project without Spindle's deno.json.
// deno-lint-ignore no-import-prefix
import { BinaryReader, WireType } from "npm:@bufbuild/protobuf@2.17.0/wire";

/** ONNX TensorProto.DataType values import knows by name. */
export const DATA_TYPE = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
  FLOAT8E4M3FN: 17,
  FLOAT8E4M3FNUZ: 18,
  FLOAT8E5M2: 19,
  FLOAT8E5M2FNUZ: 20,
  UINT4: 21,
  INT4: 22,
  FLOAT4E2M1: 23,
  FLOAT8E8M0: 24,
  UINT2: 25,
  INT2: 26,
} as const;

/** A decoded TensorProto: exactly one of the data fields is normally set. */
export interface TensorProto {
  name: string;
  dims: number[];
  dataType: number;
  rawData?: Uint8Array;
  floatData: number[];
  int32Data: number[];
  int64Data: bigint[];
  doubleData: number[];
  uint64Data: bigint[];
  externalData: boolean;
}

/** A decoded AttributeProto (sparse tensors and type protos are not read). */
export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: bigint;
  s?: Uint8Array;
  t?: TensorProto;
  /** A subgraph (If's branches, Loop's and Scan's bodies). */
  g?: GraphProto;
  floats: number[];
  ints: bigint[];
  strings: Uint8Array[];
}

/** A decoded NodeProto. */
export interface NodeProto {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: AttributeProto[];
}

/** A graph input or output: name, element type and dims (number, symbolic name, or unknown). */
export interface ValueInfoProto {
  name: string;
  elemType: number;
  /** Null when the type has no shape (unknown rank). */
  dims: (number | string | null)[] | null;
}

/** A decoded GraphProto. */
export interface GraphProto {
  name: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfoProto[];
  outputs: ValueInfoProto[];
  sparseInitializers: number;
}

/** A decoded ModelProto. */
export interface ModelProto {
  irVersion: number;
  opsets: { domain: string; version: number }[];
  graph: GraphProto;
  functions: number;
}

type Reader = BinaryReader;

/** Calls `field` for each field of the message that ends at `end`. */
function fields(r: Reader, end: number, field: (no: number, wire: WireType) => boolean): void {
  while (r.pos < end) {
    const [no, wire] = r.tag();
    if (!field(no, wire)) r.skip(wire, no);
  }
  if (r.pos !== end) throw new RangeError("a field runs past the end of its message");
}

function messageEnd(r: Reader): number {
  const length = r.uint32();
  const end = r.pos + length;
  if (end > r.len) throw new RangeError("premature EOF");
  return end;
}

/** Reads a repeated scalar, packed or not. */
function repeated<T>(r: Reader, wire: WireType, read: () => T, into: T[]): void {
  if (wire !== WireType.LengthDelimited) {
    into.push(read());
    return;
  }
  const end = messageEnd(r);
  while (r.pos < end) into.push(read());
  if (r.pos !== end) throw new RangeError("a packed field runs past its end");
}

function decodeTensor(r: Reader, end: number): TensorProto {
  const t: TensorProto = {
    name: "",
    dims: [],
    dataType: 0,
    floatData: [],
    int32Data: [],
    int64Data: [],
    doubleData: [],
    uint64Data: [],
    externalData: false,
  };
  const dims: bigint[] = [];
  fields(r, end, (no, wire) => {
    switch (no) {
      case 1:
        repeated(r, wire, () => r.int64() as bigint, dims);
        return true;
      case 2:
        t.dataType = r.int32();
        return true;
      case 4:
        repeated(r, wire, () => r.float(), t.floatData);
        return true;
      case 5:
        repeated(r, wire, () => r.int32(), t.int32Data);
        return true;
      case 7:
        repeated(r, wire, () => r.int64() as bigint, t.int64Data);
        return true;
      case 8:
        t.name = r.string();
        return true;
      case 9:
        t.rawData = r.bytes();
        return true;
      case 10:
        repeated(r, wire, () => r.double(), t.doubleData);
        return true;
      case 11:
        repeated(r, wire, () => r.uint64() as bigint, t.uint64Data);
        return true;
      case 14:
        t.externalData = r.int32() === 1;
        return true;
      default:
        return false;
    }
  });
  t.dims = dims.map((d) => {
    if (d < 0n || d > 1n << 40n) throw new RangeError(`tensor '${t.name}' has dimension ${d}`);
    return Number(d);
  });
  return t;
}

function decodeAttribute(r: Reader, end: number): AttributeProto {
  const a: AttributeProto = { name: "", type: 0, floats: [], ints: [], strings: [] };
  fields(r, end, (no, wire) => {
    switch (no) {
      case 1:
        a.name = r.string();
        return true;
      case 2:
        a.f = r.float();
        return true;
      case 3:
        a.i = r.int64() as bigint;
        return true;
      case 4:
        a.s = r.bytes();
        return true;
      case 5:
        a.t = decodeTensor(r, messageEnd(r));
        return true;
      case 6:
        a.g = decodeGraph(r, messageEnd(r));
        return true;
      case 7:
        repeated(r, wire, () => r.float(), a.floats);
        return true;
      case 8:
        repeated(r, wire, () => r.int64() as bigint, a.ints);
        return true;
      case 9:
        a.strings.push(r.bytes());
        return true;
      case 20:
        a.type = r.int32();
        return true;
      default:
        return false;
    }
  });
  return a;
}

function decodeNode(r: Reader, end: number): NodeProto {
  const n: NodeProto = { name: "", opType: "", domain: "", inputs: [], outputs: [], attributes: [] };
  fields(r, end, (no) => {
    switch (no) {
      case 1:
        n.inputs.push(r.string());
        return true;
      case 2:
        n.outputs.push(r.string());
        return true;
      case 3:
        n.name = r.string();
        return true;
      case 4:
        n.opType = r.string();
        return true;
      case 5:
        n.attributes.push(decodeAttribute(r, messageEnd(r)));
        return true;
      case 7:
        n.domain = r.string();
        return true;
      default:
        return false;
    }
  });
  return n;
}

function decodeShape(r: Reader, end: number): (number | string | null)[] {
  const dims: (number | string | null)[] = [];
  fields(r, end, (no) => {
    if (no !== 1) return false;
    const dimEnd = messageEnd(r);
    let dim: number | string | null = null;
    fields(r, dimEnd, (field) => {
      if (field === 1) {
        const value = r.int64() as bigint;
        dim = value >= 0n && value <= 1n << 40n ? Number(value) : null;
        return true;
      }
      if (field === 2) {
        dim = r.string();
        return true;
      }
      return false;
    });
    dims.push(dim);
    return true;
  });
  return dims;
}

function decodeValueInfo(r: Reader, end: number): ValueInfoProto {
  const v: ValueInfoProto = { name: "", elemType: 0, dims: null };
  fields(r, end, (no) => {
    if (no === 1) {
      v.name = r.string();
      return true;
    }
    if (no !== 2) return false;
    fields(r, messageEnd(r), (typeField) => {
      if (typeField !== 1) return false; // only tensor types
      fields(r, messageEnd(r), (tensorField) => {
        if (tensorField === 1) {
          v.elemType = r.int32();
          return true;
        }
        if (tensorField === 2) {
          v.dims = decodeShape(r, messageEnd(r));
          return true;
        }
        return false;
      });
      return true;
    });
    return true;
  });
  return v;
}

/** How deep subgraphs may nest (a hostile file would otherwise overflow the stack). */
const MAX_GRAPH_DEPTH = 16;
let graphDepth = 0;

function decodeGraph(r: Reader, end: number): GraphProto {
  if (graphDepth >= MAX_GRAPH_DEPTH) throw new RangeError(`subgraphs nest more than ${MAX_GRAPH_DEPTH} deep`);
  graphDepth++;
  try {
    return decodeGraphFields(r, end);
  } finally {
    graphDepth--;
  }
}

function decodeGraphFields(r: Reader, end: number): GraphProto {
  const g: GraphProto = { name: "", nodes: [], initializers: [], inputs: [], outputs: [], sparseInitializers: 0 };
  fields(r, end, (no) => {
    switch (no) {
      case 1:
        g.nodes.push(decodeNode(r, messageEnd(r)));
        return true;
      case 2:
        g.name = r.string();
        return true;
      case 5:
        g.initializers.push(decodeTensor(r, messageEnd(r)));
        return true;
      case 11:
        g.inputs.push(decodeValueInfo(r, messageEnd(r)));
        return true;
      case 12:
        g.outputs.push(decodeValueInfo(r, messageEnd(r)));
        return true;
      case 15:
        g.sparseInitializers++;
        return false;
      default:
        return false;
    }
  });
  return g;
}

/**
 * Decodes an ONNX model file.
 *
 * @param bytes The file.
 * @returns The model (bytes fields are views into `bytes`).
 * @throws {RangeError} when the bytes are not a well-formed protobuf message.
 */
export function decodeModel(bytes: Uint8Array): ModelProto {
  const r = new BinaryReader(bytes);
  const model: ModelProto = { irVersion: 0, opsets: [], graph: undefined as unknown as GraphProto, functions: 0 };
  fields(r, bytes.byteLength, (no) => {
    switch (no) {
      case 1:
        model.irVersion = Number(r.int64());
        return true;
      case 7:
        model.graph = decodeGraph(r, messageEnd(r));
        return true;
      case 8: {
        const opset = { domain: "", version: 0 };
        fields(r, messageEnd(r), (field) => {
          if (field === 1) opset.domain = r.string();
          else if (field === 2) opset.version = Number(r.int64());
          else return false;
          return true;
        });
        model.opsets.push(opset);
        return true;
      }
      case 25:
        model.functions++;
        return false;
      default:
        return false;
    }
  });
  if (model.graph === undefined) throw new RangeError("the model has no graph");
  return model;
}

/**
 * Decodes a serialized TensorProto (the conformance tests' input_*.pb / output_*.pb).
 *
 * @param bytes The file.
 * @returns The tensor.
 */
export function decodeTensorProto(bytes: Uint8Array): TensorProto {
  const r = new BinaryReader(bytes);
  return decodeTensor(r, bytes.byteLength);
}

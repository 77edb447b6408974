/**
 * The Open Inference Protocol (KServe v2) REST messages: parses and validates infer requests
 * (JSON tensors and the binary tensor data extension) and encodes responses. Nothing here
 * touches the network or a model; every malformed request becomes an {@link HttpError}.
 *
 * @module
 */
import type { DType } from "../tensor.ts";

/** An error answered as `{"error": message}` with an HTTP status (and extra headers). */
export class HttpError extends Error {
  /** The HTTP status code. */
  readonly status: number;
  /** Extra response headers, e.g. `Retry-After`. */
  readonly headers: Record<string, string>;
  /**
   * @param status The HTTP status code.
   * @param message What was wrong, and the fix where there is one.
   * @param headers Extra response headers.
   */
  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.headers = headers;
  }
}

/** Protocol datatype of each Spindle dtype. */
export const DATATYPE_OF: Record<DType, string> = { float32: "FP32", int64: "INT64", int32: "INT32" };
const DTYPE_OF: Record<string, DType> = { FP32: "float32", INT64: "int64", INT32: "int32" };
/** Every datatype the protocol defines; the ones Spindle lacks get a 400 that says so. */
const PROTOCOL_DATATYPES = new Set([
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP16",
  "FP32",
  "FP64",
  "BF16",
  "BYTES",
]);
const BYTES_PER_ELEMENT: Record<DType, number> = { float32: 4, int64: 8, int32: 4 };

/** Typed data of one tensor. */
export type TensorData = Float32Array | Int32Array | BigInt64Array;

/** An input or output as the server describes it (symbolic dimensions are -1). */
export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
}

/** One decoded input tensor of a request: typed values from JSON, or raw bytes from binary data. */
export interface RequestTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: TensorData | Uint8Array;
}

/** An output the request asked for, and whether it wants it as binary data. */
export interface RequestedOutput {
  name: string;
  binary: boolean;
}

/** A validated infer request. */
export interface InferRequest {
  id: string | undefined;
  /** The inputs in the model's input order. */
  inputs: RequestTensor[];
  /** The outputs to return, in the order asked (every output when the request names none). */
  outputs: RequestedOutput[];
}

/**
 * One output tensor of a response: metadata, and its values read on demand (see
 * lib/serve/model.ts `OutputTensor`, which this is structurally).
 */
export interface ResponseTensor {
  name: string;
  binary: boolean;
  dtype: DType;
  shape: readonly number[];
  /** Bytes of its values. */
  byteLength: number;
  /** Copies its values into `into` (exactly `byteLength` bytes). */
  read(into: Uint8Array): void;
  /** Its values as a typed array (for JSON `data`). */
  values(): TensorData;
}

/** Most dimensions a request tensor may declare (the native limit is lower and checked later). */
const MAX_REQUEST_DIMS = 16;
/** Nesting depth of JSON `data` arrays accepted (one level per dimension). */
const MAX_DATA_DEPTH = MAX_REQUEST_DIMS;

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** The Spindle dtype of a protocol datatype, or a 400 naming the datatype. */
export function dtypeOf(datatype: unknown, what: string): DType {
  if (typeof datatype !== "string") throw new HttpError(400, `${what}: 'datatype' must be a string such as "FP32"`);
  const dtype = Object.hasOwn(DTYPE_OF, datatype) ? DTYPE_OF[datatype] : undefined;
  if (dtype !== undefined) return dtype;
  const known = PROTOCOL_DATATYPES.has(datatype) ? "is not supported by Spindle" : "is not a protocol datatype";
  throw new HttpError(400, `${what}: datatype '${datatype}' ${known} (supported: FP32, INT64, INT32)`);
}

/**
 * Checks a declared shape against the model's and returns its element count. Counts are
 * bounded by `maxElements` as they are multiplied, so a huge declared shape is refused before
 * anything is allocated for it.
 */
function checkShape(shape: unknown, spec: TensorSpec, maxElements: number, what: string): number {
  if (!Array.isArray(shape) || shape.length > MAX_REQUEST_DIMS) {
    throw new HttpError(400, `${what}: 'shape' must be an array of at most ${MAX_REQUEST_DIMS} integers`);
  }
  const expected = `[${spec.shape.join(", ")}]`;
  if (shape.length !== spec.shape.length) {
    throw new HttpError(
      400,
      `${what}: shape [${shape.join(", ")}] has ${shape.length} dims; the model takes ${expected}`,
    );
  }
  let count = 1;
  shape.forEach((d, axis) => {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new HttpError(400, `${what}: shape[${axis}] must be a non-negative integer, got ${JSON.stringify(d)}`);
    }
    if (spec.shape[axis] !== -1 && spec.shape[axis] !== d) {
      throw new HttpError(400, `${what}: shape [${shape.join(", ")}] does not match the model's ${expected}`);
    }
    count *= d;
    if (count > maxElements) {
      throw new HttpError(400, `${what}: shape [${shape.join(", ")}] declares more elements than the body can hold`);
    }
  });
  return count;
}

/** Flattens row-major JSON `data` (flat or nested arrays) into a typed array of `count` values. */
function jsonData(data: unknown, dtype: DType, count: number, what: string): TensorData {
  if (!Array.isArray(data)) throw new HttpError(400, `${what}: 'data' must be an array (or use binary_data_size)`);
  const out = dtype === "float32"
    ? new Float32Array(count)
    : dtype === "int32"
    ? new Int32Array(count)
    : new BigInt64Array(count);
  let index = 0;
  const visit = (value: unknown, depth: number): void => {
    if (Array.isArray(value)) {
      if (depth >= MAX_DATA_DEPTH) throw new HttpError(400, `${what}: 'data' is nested too deeply`);
      for (const item of value) visit(item, depth + 1);
      return;
    }
    if (index >= count) throw new HttpError(400, `${what}: 'data' has more than the shape's ${count} elements`);
    if (typeof value !== "number") {
      throw new HttpError(400, `${what}: element ${index} is ${JSON.stringify(value)}, not a number`);
    }
    if (dtype === "float32") {
      out[index] = value;
    } else if (!Number.isSafeInteger(value)) {
      throw new HttpError(400, `${what}: element ${index} (${value}) is not an integer`);
    } else if (dtype === "int32") {
      if (value < -2147483648 || value > 2147483647) {
        throw new HttpError(400, `${what}: element ${index} (${value}) is out of INT32 range`);
      }
      out[index] = value;
    } else {
      (out as BigInt64Array)[index] = BigInt(value);
    }
    index++;
  };
  visit(data, 0);
  if (index !== count) throw new HttpError(400, `${what}: 'data' has ${index} elements; the shape needs ${count}`);
  return out;
}

/**
 * A validated request header whose inputs are all binary: what {@link parseInferRequest}
 * derives from it, kept so the same header (clients send the same one for every request of a
 * shape) is not parsed and checked again.
 */
export interface RequestPlan {
  id: string | undefined;
  /** The inputs in the model's order, with where their bytes lie in the body. */
  inputs: { name: string; dtype: DType; shape: number[]; offset: number; size: number }[];
  outputs: RequestedOutput[];
  /** The body length the header accounts for. */
  bodyLength: number;
}

/** Headers kept per plan cache; past it the cache starts over (clients whose ids vary miss anyway). */
const PLAN_CACHE_ENTRIES = 64;

/** Made once: constructing a decoder per request costs several microseconds. */
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Parses an infer request body against the model's inputs and outputs.
 *
 * @param body The whole body (already bounded by the server's --max-body).
 * @param headerLength `Inference-Header-Content-Length`, when the request has binary tensors.
 * @param inputs The model's inputs.
 * @param outputs The model's outputs.
 * @param plans Where validated all-binary headers of this model are kept (see RequestPlan):
 *   a header seen before, with a body of the length it declares, skips JSON.parse and the checks.
 * @returns The request, inputs in the model's order.
 * @throws {HttpError} 400 naming what is wrong.
 */
export function parseInferRequest(
  body: Uint8Array,
  headerLength: string | null,
  inputs: readonly TensorSpec[],
  outputs: readonly TensorSpec[],
  plans?: Map<string, RequestPlan>,
): InferRequest {
  let jsonEnd = body.length;
  if (headerLength !== null) {
    const length = Number(headerLength);
    if (!/^\d+$/.test(headerLength.trim()) || !Number.isSafeInteger(length) || length > body.length) {
      throw new HttpError(
        400,
        `Inference-Header-Content-Length is '${headerLength}', but the body has ${body.length} bytes`,
      );
    }
    jsonEnd = length;
  }
  let parsed: unknown;
  let text: string;
  try {
    text = utf8.decode(body.subarray(0, jsonEnd));
    const plan = plans?.get(text);
    if (plan !== undefined && plan.bodyLength === body.length) {
      return {
        id: plan.id,
        inputs: plan.inputs.map(({ name, dtype, shape, offset, size }) => ({
          name,
          dtype,
          shape,
          data: body.subarray(offset, offset + size),
        })),
        outputs: plan.outputs,
      };
    }
    parsed = JSON.parse(text);
  } catch (error) {
    throw new HttpError(400, `malformed JSON in the request: ${error instanceof Error ? error.message : error}`);
  }
  if (!isObject(parsed)) throw new HttpError(400, "the request must be a JSON object with an 'inputs' array");
  const { id, parameters, inputs: given, outputs: wanted } = parsed;
  if (id !== undefined && typeof id !== "string") throw new HttpError(400, "'id' must be a string");
  if (parameters !== undefined && !isObject(parameters)) throw new HttpError(400, "'parameters' must be an object");
  if (!Array.isArray(given)) throw new HttpError(400, "the request must have an 'inputs' array");
  const byName = new Map<string, RequestTensor>();
  let offset = jsonEnd;
  const names = inputs.map((spec) => `'${spec.name}'`).join(", ");
  for (const [i, input] of given.entries()) {
    if (!isObject(input) || typeof input.name !== "string") {
      throw new HttpError(400, `inputs[${i}] must be an object with a 'name'`);
    }
    const what = `input '${input.name}'`;
    const spec = inputs.find((s) => s.name === input.name);
    if (spec === undefined) throw new HttpError(400, `unknown ${what}; the model takes ${names}`);
    if (byName.has(spec.name)) throw new HttpError(400, `${what} is given twice`);
    const dtype = dtypeOf(input.datatype, what);
    if (dtype !== spec.dtype) {
      throw new HttpError(400, `${what} is ${input.datatype}; the model takes ${DATATYPE_OF[spec.dtype]}`);
    }
    const size = BYTES_PER_ELEMENT[dtype];
    const count = checkShape(input.shape, spec, Math.floor(body.length / size) + 1, what);
    const inputParameters = input.parameters;
    if (inputParameters !== undefined && !isObject(inputParameters)) {
      throw new HttpError(400, `${what}: 'parameters' must be an object`);
    }
    const binarySize = inputParameters?.binary_data_size;
    let data: TensorData | Uint8Array;
    if (binarySize !== undefined) {
      if (typeof binarySize !== "number" || !Number.isSafeInteger(binarySize) || binarySize < 0) {
        throw new HttpError(400, `${what}: binary_data_size must be a non-negative integer`);
      }
      if (binarySize !== count * size) {
        throw new HttpError(
          400,
          `${what}: binary_data_size is ${binarySize} bytes; shape [${
            (input.shape as number[]).join(", ")
          }] of ${input.datatype} needs ${count * size}`,
        );
      }
      if (offset + binarySize > body.length) {
        throw new HttpError(400, `${what}: the body ends before its ${binarySize} bytes of binary data`);
      }
      // The raw bytes, not a typed array: they need no aligned copy, the tensor copies them once.
      data = body.subarray(offset, offset + binarySize);
      offset += binarySize;
    } else {
      data = jsonData(input.data, dtype, count, what);
    }
    byName.set(spec.name, { name: spec.name, dtype, shape: input.shape as number[], data });
  }
  if (offset !== body.length) {
    throw new HttpError(400, `the body has ${body.length - offset} bytes after the tensors it declares`);
  }
  const ordered = inputs.map((spec) => {
    const input = byName.get(spec.name);
    if (input === undefined) throw new HttpError(400, `missing input '${spec.name}'; the model takes ${names}`);
    return input;
  });
  const binaryDefault = parameters?.binary_data_output === true;
  const request = { id, inputs: ordered, outputs: requestedOutputs(wanted, outputs, binaryDefault) };
  if (plans !== undefined && ordered.every((input) => input.data instanceof Uint8Array)) {
    if (plans.size >= PLAN_CACHE_ENTRIES) plans.clear();
    plans.set(text, {
      id,
      inputs: ordered.map(({ name, dtype, shape, data }) => ({
        name,
        dtype,
        shape,
        offset: data.byteOffset - body.byteOffset,
        size: data.byteLength,
      })),
      outputs: request.outputs,
      bodyLength: body.length,
    });
  }
  return request;
}

function requestedOutputs(wanted: unknown, outputs: readonly TensorSpec[], binaryDefault: boolean): RequestedOutput[] {
  if (wanted === undefined) return outputs.map((spec) => ({ name: spec.name, binary: binaryDefault }));
  if (!Array.isArray(wanted)) throw new HttpError(400, "'outputs' must be an array");
  const names = outputs.map((spec) => `'${spec.name}'`).join(", ");
  const seen = new Set<string>();
  return wanted.map((output, i) => {
    if (!isObject(output) || typeof output.name !== "string") {
      throw new HttpError(400, `outputs[${i}] must be an object with a 'name'`);
    }
    if (!outputs.some((spec) => spec.name === output.name)) {
      throw new HttpError(400, `unknown output '${output.name}'; the model has ${names}`);
    }
    if (seen.has(output.name)) throw new HttpError(400, `output '${output.name}' is asked for twice`);
    seen.add(output.name);
    const parameters = output.parameters;
    if (parameters !== undefined && !isObject(parameters)) {
      throw new HttpError(400, `output '${output.name}': 'parameters' must be an object`);
    }
    const binary = parameters?.binary_data;
    if (binary !== undefined && typeof binary !== "boolean") {
      throw new HttpError(400, `output '${output.name}': binary_data must be true or false`);
    }
    return { name: output.name, binary: binary ?? binaryDefault };
  });
}

/** Writes typed data as a JSON array; int64 values are written exactly, as digits. */
function jsonArray(data: TensorData): string {
  if (data instanceof BigInt64Array) return `[${data.join(",")}]`;
  // Non-finite floats have no JSON form; they are written as null (binary output keeps them).
  return JSON.stringify(Array.from(data));
}

/** An encoded response: the body and, for binary outputs, the JSON header's length. */
export interface EncodedResponse {
  /**
   * The body: the JSON text when no output is binary (a Response takes a string without a
   * copy in JavaScript), else the bytes, a view of the `scratch` buffer when one was given.
   */
  body: string | Uint8Array<ArrayBuffer>;
  headerLength: number | null;
}

const encoder = new TextEncoder();

/**
 * Encodes an infer response: a JSON object, followed by the binary outputs' bytes when any
 * output is binary (then `headerLength` is the JSON part's length, for
 * `Inference-Header-Content-Length`). Binary outputs are read straight into their place in
 * the body, one copy each.
 *
 * @param scratch Gives a buffer of at least the bytes asked for, for the body to be written
 *   into (the server reuses one: `new Response` copies its body); without it the body is a
 *   new buffer.
 */
export function encodeInferResponse(
  model: string,
  version: string,
  id: string | undefined,
  outputs: readonly ResponseTensor[],
  scratch: (bytes: number) => Uint8Array<ArrayBuffer> = (bytes) => new Uint8Array(bytes),
): EncodedResponse {
  const parts: string[] = [];
  let binaryBytes = 0;
  let anyBinary = false;
  for (const output of outputs) {
    const head = `{"name":${JSON.stringify(output.name)},"datatype":"${DATATYPE_OF[output.dtype]}","shape":[${
      output.shape.join(",")
    }]`;
    if (output.binary) {
      anyBinary = true;
      binaryBytes += output.byteLength;
      parts.push(`${head},"parameters":{"binary_data_size":${output.byteLength}}}`);
    } else {
      parts.push(`${head},"data":${jsonArray(output.values())}}`);
    }
  }
  const idPart = id === undefined ? "" : `"id":${JSON.stringify(id)},`;
  const text = `{${idPart}"model_name":${JSON.stringify(model)},"model_version":"${version}","outputs":[${
    parts.join(",")
  }]}`;
  if (!anyBinary) return { body: text, headerLength: null };
  // UTF-8 takes at most 3 bytes per UTF-16 code unit: room for the JSON whatever its text.
  const buffer = scratch(text.length * 3 + binaryBytes);
  const { written } = encoder.encodeInto(text, buffer);
  let offset = written;
  for (const output of outputs) {
    if (!output.binary) continue;
    output.read(buffer.subarray(offset, offset + output.byteLength));
    offset += output.byteLength;
  }
  return { body: buffer.subarray(0, offset), headerLength: written };
}

/**
 * Runs native ops: the single path from an eager TypeScript op to `spindle_op_run`, and the
 * marker that lets {@link fork} recognise native ops.
 *
 * @module
 */
import { check, native } from "../../ffi/load.ts";
import { Tensor } from "../tensor.ts";
import { activeTrace } from "../script/trace.ts";
import { LIMITS, OP_SCHEMAS, type OpParams, type OpSchema, type ParamSchema } from "../../ffi/abi.ts";

/** A native op's name, as model files and the op schema (ffi/abi.ts) spell it. */
export type OpName = keyof typeof OP_SCHEMAS;

/** The named parameters of native op `K` (absent ones take the schema's default). */
export type ParamsOf<K extends OpName> = OpParams[K];

/** Native op codes by name, from the op schema. */
export const OP: { readonly [K in OpName]: number } = Object.fromEntries(
  Object.entries(OP_SCHEMAS).map(([name, op]) => [name, op.code]),
) as { [K in OpName]: number };

/** Marks a function as a native op so that `fork` can run it on the inter-op pool. */
export const NATIVE_OP: unique symbol = Symbol("spindle.nativeOp");

/** A native op function: its name and how to turn its arguments into inputs and params. */
export interface NativeOpInfo {
  op: OpName;
  name: string;
  /** Splits the call's arguments into input tensors and named parameters (validated). */
  prepare(args: readonly unknown[]): OpCall;
}

const MAX_INPUTS = LIMITS.maxInputs;
const inputBuffer = new BigUint64Array(MAX_INPUTS);
const paramBuffer = new Float64Array(LIMITS.maxFlatValues);
const outBuffer = new BigUint64Array(1);

/** Whether this build has a native op named `op`. */
export function isOpName(op: string): op is OpName {
  return Object.hasOwn(OP_SCHEMAS, op);
}

/** The schema of native op `op`; a TypeError for a name that is not one. */
export function opSchema(op: string): OpSchema {
  if (!isOpName(op)) throw new TypeError(`unknown native op '${op}'`);
  return OP_SCHEMAS[op];
}

function flatScalar(op: string, param: ParamSchema, value: unknown): number {
  switch (param.kind) {
    case "bool":
      if (typeof value !== "boolean") {
        throw new TypeError(`${op}: '${param.name}' must be a boolean, got ${describe(value)}`);
      }
      return value ? 1 : 0;
    case "enum": {
      const index = typeof value === "string" ? param.values!.indexOf(value) : -1;
      if (index < 0) {
        throw new TypeError(
          `${op}: '${param.name}' must be one of ${param.values!.join(", ")}, got ${describe(value)}`,
        );
      }
      return index;
    }
    default:
      if (typeof value !== "number") {
        throw new TypeError(`${op}: '${param.name}' must be a number, got ${describe(value)}`);
      }
      return value;
  }
}

/**
 * Writes `params` (named) into `out` in the schema's flat encoding (zig/src/ops/schema.zig):
 * in schema order, a scalar is one value, an optional a presence flag and a value, a fixed
 * list its values, a list its length and its items. Returns the number of values. Names the
 * schema does not know, missing required parameters and values of the wrong kind are
 * TypeErrors; ranges are the native side's to check.
 */
export function encodeParams(op: string, params: Readonly<Record<string, unknown>>, out: Float64Array): number {
  const schema = opSchema(op);
  for (const name of Object.keys(params)) {
    if (!schema.params.some((p) => p.name === name)) {
      const known = schema.params.map((p) => p.name).join(", ") || "none";
      throw new TypeError(`${op}: unknown parameter '${name}' (its parameters: ${known})`);
    }
  }
  let count = 0;
  const push = (value: number) => {
    if (count >= out.length) throw new RangeError(`${op}: parameters need more than ${out.length} values`);
    out[count++] = value;
  };
  for (const param of schema.params) {
    const given = params[param.name];
    const value = given === undefined ? param.default : given;
    if (value === undefined) throw new TypeError(`${op}: missing parameter '${param.name}'`);
    if (param.optional) {
      push(value === null ? 0 : 1);
      push(value === null ? 0 : flatScalar(op, param, value));
    } else if (param.length !== undefined || param.capacity !== undefined) {
      if (!Array.isArray(value)) throw new TypeError(`${op}: '${param.name}' must be a list, got ${describe(value)}`);
      if (param.length !== undefined && value.length !== param.length) {
        throw new TypeError(`${op}: '${param.name}' must have ${param.length} values, got ${value.length}`);
      }
      if (param.capacity !== undefined) {
        if (value.length > param.capacity) {
          throw new RangeError(`${op}: '${param.name}' takes at most ${param.capacity} values, got ${value.length}`);
        }
        push(value.length);
      }
      for (const item of value) push(flatScalar(op, param, item));
    } else {
      push(flatScalar(op, param, value));
    }
  }
  return count;
}

/** Writes inputs and params into the shared argument buffers. */
export function packArguments(op: OpName, name: string, inputs: readonly Tensor[], params: object): {
  inputs: BigUint64Array;
  params: Float64Array;
  paramCount: number;
} {
  if (inputs.length > MAX_INPUTS) throw new RangeError(`${name}: at most ${MAX_INPUTS} inputs`);
  inputs.forEach((input, i) => {
    if (!(input instanceof Tensor)) {
      throw new TypeError(`${name}: argument ${i} must be a Tensor, got ${describe(input)}`);
    }
    inputBuffer[i] = input.handle;
  });
  const paramCount = encodeParams(op, params as Record<string, unknown>, paramBuffer);
  return { inputs: inputBuffer, params: paramBuffer, paramCount };
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value instanceof Tensor) return value.toString();
  if (typeof value === "object") return (value as object).constructor?.name ?? "object";
  return `${typeof value} ${String(value)}`;
}

/** Runs native op `op` synchronously on the calling thread and returns its output. */
export function runOp<K extends OpName>(
  op: K,
  inputs: readonly Tensor[],
  params: ParamsOf<K> = {} as ParamsOf<K>,
  name: string = op,
): Tensor {
  const packed = packArguments(op, name, inputs, params);
  check(
    native().spindle_op_run(
      OP_SCHEMAS[op].code,
      packed.inputs,
      BigInt(inputs.length),
      packed.params,
      BigInt(packed.paramCount),
      outBuffer,
    ),
  );
  return new Tensor(outBuffer[0]);
}

/** Inputs and named parameters of one native op call. */
export interface OpCall<K extends OpName = OpName> {
  inputs: Tensor[];
  params: ParamsOf<K>;
}

/**
 * Defines an eager op: `prepare` validates the JavaScript arguments and turns them into
 * tensors and named parameters of native op `op`; the result runs natively, is recorded by
 * an active trace, and `fork` can run it on the inter-op pool.
 */
export function defineOp<K extends OpName, A extends unknown[]>(
  op: K,
  name: string,
  prepare: (...args: A) => OpCall<K>,
): (...args: A) => Tensor {
  const fn = (...args: A): Tensor => {
    const call = prepare(...args);
    const result = runOp(op, call.inputs, call.params, name);
    activeTrace()?.recordOp(op, call.inputs, call.params, result);
    return result;
  };
  return nativeOp(fn as unknown as (...args: never[]) => Tensor, {
    op,
    name,
    prepare: (args) => prepare(...(args as A)),
  }) as unknown as (...args: A) => Tensor;
}

/** Checks that `value` is a Tensor; names the op and argument otherwise. */
export function requireTensor(name: string, what: string, value: unknown): Tensor {
  if (!(value instanceof Tensor)) throw new TypeError(`${name}: ${what} must be a Tensor, got ${describe(value)}`);
  return value;
}

/** Checks that `value` is an integer (a dim, a size). */
export function requireInteger(name: string, what: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${name}: ${what} must be an integer, got ${describe(value)}`);
  }
  return value;
}

/** Checks that `value` is a finite-or-infinite number (not NaN unless allowed). */
export function requireNumber(name: string, what: string, value: unknown): number {
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new TypeError(`${name}: ${what} must be a number, got ${describe(value)}`);
  }
  return value;
}

/** Attaches native-op metadata to an op function. */
export function nativeOp<F extends (...args: never[]) => Tensor>(fn: F, info: NativeOpInfo): F {
  Object.defineProperty(fn, NATIVE_OP, { value: info, enumerable: false });
  return fn;
}

/** The native-op metadata of `fn`, or undefined for plain functions. */
export function nativeOpInfo(fn: unknown): NativeOpInfo | undefined {
  return typeof fn === "function" ? (fn as unknown as { [NATIVE_OP]?: NativeOpInfo })[NATIVE_OP] : undefined;
}

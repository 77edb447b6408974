/**
 * Runs native ops: the single path from an eager TypeScript op to `spindle_op_run`, and the
 * marker that lets {@link fork} recognise native ops.
 *
 * @module
 */
import { check, native } from "../../ffi/load.ts";
import { Tensor } from "../tensor.ts";
import { activeTrace } from "../script/trace.ts";

/** Native op codes (zig/src/ops.zig `OpCode`): append only. */
export const OP = {
  mm: 0,
  add: 1,
  sub: 2,
  mul: 3,
  div: 4,
  pow: 5,
  maximum: 6,
  minimum: 7,
  relu: 8,
  gelu: 9,
  sigmoid: 10,
  tanh: 11,
  exp: 12,
  log: 13,
  sqrt: 14,
  neg: 15,
  abs: 16,
  clamp: 17,
  sum: 18,
  mean: 19,
  max: 20,
  min: 21,
  argmax: 22,
  softmax: 23,
  log_softmax: 24,
  layer_norm: 25,
  batch_norm: 26,
  embedding: 27,
  embedding_bag: 28,
  reshape: 29,
  flatten: 30,
  squeeze: 31,
  unsqueeze: 32,
  transpose: 33,
  permute: 34,
  slice: 35,
  concat: 36,
  gather: 37,
  contiguous: 38,
  conv2d: 39,
  conv_transpose2d: 40,
  max_pool2d: 41,
  avg_pool2d: 42,
  adaptive_avg_pool2d: 43,
  matmul: 44,
  gemm: 45,
  leaky_relu: 46,
  hard_sigmoid: 47,
  hard_swish: 48,
  erf: 49,
  where: 50,
  compare: 51,
  expand: 52,
  cast: 53,
  pad: 54,
  resize: 55,
  take: 56,
} as const;

/** Native op names by code: the names model files use (zig/src/ops.zig tags). */
export const OP_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(OP).map(([name, code]) => [code, name]),
);

/** A native op code. */
export type OpCode = typeof OP[keyof typeof OP];

/** Marks a function as a native op so that `fork` can run it on the inter-op pool. */
export const NATIVE_OP: unique symbol = Symbol("spindle.nativeOp");

/** A native op function: its code and how to turn its arguments into inputs and params. */
export interface NativeOpInfo {
  code: OpCode;
  name: string;
  /** Splits the call's arguments into input tensors and numeric parameters (validated). */
  prepare(args: readonly unknown[]): { inputs: Tensor[]; params: number[] };
}

const MAX_INPUTS = 16;
const MAX_PARAMS = 16;
const inputBuffer = new BigUint64Array(MAX_INPUTS);
const paramBuffer = new Float64Array(MAX_PARAMS);
const outBuffer = new BigUint64Array(1);

/** Writes inputs and params into the shared argument buffers. */
export function packArguments(name: string, inputs: readonly Tensor[], params: readonly number[]): {
  inputs: BigUint64Array;
  params: Float64Array;
} {
  if (inputs.length > MAX_INPUTS) throw new RangeError(`${name}: at most ${MAX_INPUTS} inputs`);
  if (params.length > MAX_PARAMS) throw new RangeError(`${name}: at most ${MAX_PARAMS} parameters`);
  inputs.forEach((input, i) => {
    if (!(input instanceof Tensor)) {
      throw new TypeError(`${name}: argument ${i} must be a Tensor, got ${describe(input)}`);
    }
    inputBuffer[i] = input.handle;
  });
  params.forEach((param, i) => paramBuffer[i] = param);
  return { inputs: inputBuffer, params: paramBuffer };
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value instanceof Tensor) return value.toString();
  if (typeof value === "object") return (value as object).constructor?.name ?? "object";
  return `${typeof value} ${String(value)}`;
}

/** Runs a native op synchronously on the calling thread and returns its output. */
export function runOp(code: OpCode, name: string, inputs: readonly Tensor[], params: readonly number[] = []): Tensor {
  const packed = packArguments(name, inputs, params);
  check(
    native().spindle_op_run(
      code,
      packed.inputs,
      BigInt(inputs.length),
      packed.params,
      BigInt(params.length),
      outBuffer,
    ),
  );
  return new Tensor(outBuffer[0]);
}

/** Inputs and parameters of one native op call. */
export interface OpCall {
  inputs: Tensor[];
  params: number[];
}

/**
 * Defines an eager op: `prepare` validates the JavaScript arguments and turns them into
 * tensors and numeric parameters; the result runs natively, and `fork` can run it on the
 * inter-op pool.
 */
export function defineOp<A extends unknown[]>(
  code: OpCode,
  name: string,
  prepare: (...args: A) => OpCall,
): (...args: A) => Tensor {
  const opName = OP_NAMES[code];
  const op = (...args: A): Tensor => {
    const call = prepare(...args);
    const result = runOp(code, name, call.inputs, call.params);
    activeTrace()?.recordOp(opName, call.inputs, call.params, result);
    return result;
  };
  return nativeOp(op as unknown as (...args: never[]) => Tensor, {
    code,
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

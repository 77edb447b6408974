/**
 * Runs native ops: the single path from an eager TypeScript op to `spindle_op_run`, and the
 * marker that lets {@link fork} recognise native ops.
 *
 * @module
 */
import { check, native } from "../../ffi/load.ts";
import { Tensor } from "../tensor.ts";

/** Native op codes (zig/src/ops.zig `OpCode`): append only. */
export const OP = {
  mm: 0,
  add: 1,
} as const;

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

/** Attaches native-op metadata to an op function. */
export function nativeOp<F extends (...args: never[]) => Tensor>(fn: F, info: NativeOpInfo): F {
  Object.defineProperty(fn, NATIVE_OP, { value: info, enumerable: false });
  return fn;
}

/** The native-op metadata of `fn`, or undefined for plain functions. */
export function nativeOpInfo(fn: unknown): NativeOpInfo | undefined {
  return typeof fn === "function" ? (fn as unknown as { [NATIVE_OP]?: NativeOpInfo })[NATIVE_OP] : undefined;
}

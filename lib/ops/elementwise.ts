/**
 * Elementwise ops. Pairs with zig/src/kernels/elementwise.zig.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import { describe, nativeOp, OP, runOp } from "./dispatch.ts";

function pair(name: string, args: readonly unknown[]): Tensor[] {
  if (args.length !== 2) throw new TypeError(`${name}: expected 2 tensors, got ${args.length} arguments`);
  return args.map((arg, i) => {
    if (!(arg instanceof Tensor)) throw new TypeError(`${name}: argument ${i} must be a Tensor, got ${describe(arg)}`);
    return arg;
  });
}

/**
 * Elementwise sum of two float32 tensors of the same shape.
 *
 * @param a First operand.
 * @param b Second operand.
 * @returns A new tensor `a + b`.
 *
 * @example
 * ```ts
 * import { add, tensor } from "@spindle/spindle";
 * using a = tensor([1, 2]);
 * using b = tensor([10, 20]);
 * using c = add(a, b);
 * console.log(c.toArray()); // Float32Array [11, 22]
 * ```
 */
export const add: (a: Tensor, b: Tensor) => Tensor = nativeOp(
  (a: Tensor, b: Tensor): Tensor => runOp(OP.add, "add", pair("add", [a, b])),
  { code: OP.add, name: "add", prepare: (args) => ({ inputs: pair("add", args), params: [] }) },
);

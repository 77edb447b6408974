/**
 * Linear algebra ops. Pairs with zig/src/kernels/gemm.zig.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import { describe, nativeOp, OP, runOp } from "./dispatch.ts";

function tensors(name: string, args: readonly unknown[], count: number): Tensor[] {
  if (args.length !== count) throw new TypeError(`${name}: expected ${count} tensors, got ${args.length} arguments`);
  return args.map((arg, i) => {
    if (!(arg instanceof Tensor)) throw new TypeError(`${name}: argument ${i} must be a Tensor, got ${describe(arg)}`);
    return arg;
  });
}

/**
 * Matrix product of `a` [m, k] and `b` [k, n], float32. Runs on the intra-op pool.
 *
 * @param a Left matrix [m, k].
 * @param b Right matrix [k, n].
 * @returns A new [m, n] tensor.
 *
 * @example
 * ```ts
 * import { mm, tensor } from "@spindle/spindle";
 * using a = tensor([1, 2, 3, 4], [2, 2]);
 * using b = tensor([5, 6, 7, 8], [2, 2]);
 * using c = mm(a, b);
 * console.log(c.toArray()); // Float32Array [19, 22, 43, 50]
 * ```
 */
export const mm: (a: Tensor, b: Tensor) => Tensor = nativeOp(
  (a: Tensor, b: Tensor): Tensor => runOp(OP.mm, "mm", tensors("mm", [a, b], 2)),
  { code: OP.mm, name: "mm", prepare: (args) => ({ inputs: tensors("mm", args, 2), params: [] }) },
);

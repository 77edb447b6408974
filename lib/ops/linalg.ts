/**
 * Linear algebra ops. Pairs with zig/src/kernels/gemm.zig.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, OP, requireTensor } from "./dispatch.ts";

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
export const mm: (a: Tensor, b: Tensor) => Tensor = defineOp(OP.mm, "mm", (a: Tensor, b: Tensor) => ({
  inputs: [requireTensor("mm", "input", a), requireTensor("mm", "mat2", b)],
  params: [],
}));

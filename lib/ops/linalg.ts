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

/** Options of {@link matmul}. */
export interface MatmulOptions {
  /** Transpose the last two dims of `a` first. */
  transA?: boolean;
  /** Transpose the last two dims of `b` first. */
  transB?: boolean;
  /** Scales the product (default 1). */
  alpha?: number;
  /** Added over the last dim, scaled by `beta` (default 1). */
  bias?: Tensor;
  /** Scales the bias (default 1). */
  beta?: number;
}

/**
 * Batched matrix product with NumPy broadcasting of the batch dims (both inputs at least
 * 2-D), optionally transposed, scaled, and with a bias over the last dim.
 *
 * @param a [..., m, k] (or [..., k, m] with transA).
 * @param b [..., k, n] (or [..., n, k] with transB).
 * @param options Transposes, alpha, bias and beta.
 * @returns alpha · a · b + beta · bias, of shape [...batch, m, n].
 *
 * @example
 * ```ts
 * import { matmul, ones, tensor } from "@spindle/spindle";
 * using a = ones([2, 3, 4]);
 * using b = ones([4, 5]);
 * using bias = tensor([1, 2, 3, 4, 5]);
 * using c = matmul(a, b, { bias });
 * console.log(c.shape, c.toArray()[4]); // [2, 3, 5] 9
 * ```
 */
export const matmul: (a: Tensor, b: Tensor, options?: MatmulOptions) => Tensor = defineOp(
  OP.matmul,
  "matmul",
  (a: Tensor, b: Tensor, options: MatmulOptions = {}) => {
    const inputs = [requireTensor("matmul", "a", a), requireTensor("matmul", "b", b)];
    if (options.bias !== undefined) inputs.push(requireTensor("matmul", "bias", options.bias));
    return {
      inputs,
      params: [
        options.transA ? 1 : 0,
        options.transB ? 1 : 0,
        options.alpha ?? 1,
        options.beta ?? 1,
        options.bias === undefined ? 0 : 1,
      ],
    };
  },
);

/**
 * Linear algebra ops. Pairs with zig/src/kernels/gemm.zig.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, requireTensor } from "./dispatch.ts";
import { add, mul } from "./elementwise.ts";
import { transpose } from "./shape.ts";

/**
 * Matrix product of `a` [m, k] and `b` [k, n], float32. Runs on the intra-op pool.
 *
 * @param a Left matrix [m, k].
 * @param b Right matrix [k, n].
 * @returns A new [m, n] tensor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mm, tensor } from "@spindle/spindle";
 * using a = tensor([1, 2, 3, 4], [2, 2]);
 * using b = tensor([5, 6, 7, 8], [2, 2]);
 * using c = mm(a, b);
 * assert.deepEqual([...c.toArray()], [19, 22, 43, 50]);
 * ```
 */
export const mm: (a: Tensor, b: Tensor) => Tensor = defineOp("mm", "mm", (a: Tensor, b: Tensor) => ({
  inputs: [requireTensor("mm", "input", a), requireTensor("mm", "mat2", b)],
  params: {},
}));

/**
 * Matrix product with NumPy semantics: batch dims broadcast, a 1-D left operand is a row and
 * a 1-D right operand a column (the added dim is removed). Transposed views are read in
 * place, without a copy.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { matmul, randn } from "@spindle/spindle";
 * using a = randn([2, 3, 4], { seed: 0 });
 * using b = randn([4, 5], { seed: 1 });
 * using c = matmul(a, b);
 * assert.deepEqual(c.shape, [2, 3, 5]); // b applies to each of a's 2 matrices
 * ```
 */
export const matmul: (a: Tensor, b: Tensor) => Tensor = defineOp("matmul", "matmul", (a: Tensor, b: Tensor) => ({
  inputs: [requireTensor("matmul", "input", a), requireTensor("matmul", "other", b)],
  params: {},
}));

/**
 * Batched matrix product: `a` [b, m, k] times `b` [b, k, n].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bmm, randn } from "@spindle/spindle";
 * using a = randn([2, 3, 4], { seed: 0 });
 * using b = randn([2, 4, 5], { seed: 1 });
 * using c = bmm(a, b);
 * assert.deepEqual(c.shape, [2, 3, 5]);
 * ```
 */
export function bmm(a: Tensor, b: Tensor): Tensor {
  requireTensor("bmm", "input", a);
  requireTensor("bmm", "mat2", b);
  if (a.shape.length !== 3 || b.shape.length !== 3 || a.shape[0] !== b.shape[0]) {
    throw new RangeError(`bmm: expected [b, m, k] and [b, k, n], got [${a.shape}] and [${b.shape}]`);
  }
  return matmul(a, b);
}

/**
 * A linear layer: `x · weightᵀ + bias`, with `weight` [out, in] as in PyTorch (read
 * transposed in place, no copy).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { linear, randn } from "@spindle/spindle";
 * using x = randn([8, 16], { seed: 0 });
 * using w = randn([4, 16], { seed: 1 });
 * using b = randn([4], { seed: 2 });
 * using y = linear(x, w, b);
 * assert.deepEqual(y.shape, [8, 4]);
 * ```
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  requireTensor("linear", "weight", weight);
  if (weight.shape.length !== 2) throw new RangeError(`linear: weight must be [out, in], got [${weight.shape}]`);
  using weightT = transpose(weight, 0, 1);
  if (bias === undefined || bias === null) return matmul(x, weightT);
  using product = matmul(x, weightT);
  return add(product, requireTensor("linear", "bias", bias));
}

/**
 * `beta · input + alpha · (a · b)` (PyTorch addmm); `input` broadcasts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { addmm, ones, randn } from "@spindle/spindle";
 * using bias = ones([5]);
 * using a = randn([3, 4], { seed: 0 });
 * using b = randn([4, 5], { seed: 1 });
 * using y = addmm(bias, a, b);
 * assert.deepEqual(y.shape, [3, 5]);
 * ```
 */
export function addmm(input: Tensor, a: Tensor, b: Tensor, options: { beta?: number; alpha?: number } = {}): Tensor {
  const { beta = 1, alpha = 1 } = options;
  using product = mm(a, b);
  using scaledProduct = alpha === 1 ? null : mul(product, alpha);
  using scaledInput = beta === 1 ? null : mul(input, beta);
  return add(scaledInput ?? input, scaledProduct ?? product);
}

/** Options of {@link gemm}. */
export interface GemmOptions {
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
 * import assert from "node:assert/strict";
 * import { gemm, ones, tensor } from "@spindle/spindle";
 * using a = ones([2, 3, 4]);
 * using b = ones([4, 5]);
 * using bias = tensor([1, 2, 3, 4, 5]);
 * using c = gemm(a, b, { bias });
 * assert.deepEqual(c.shape, [2, 3, 5]);
 * assert.equal(c.toArray()[4], 4 + 5); // a row of ones · a column of ones, plus bias[4]
 * ```
 */
export const gemm: (a: Tensor, b: Tensor, options?: GemmOptions) => Tensor = defineOp(
  "gemm",
  "gemm",
  (a: Tensor, b: Tensor, options: GemmOptions = {}) => {
    const inputs = [requireTensor("gemm", "a", a), requireTensor("gemm", "b", b)];
    if (options.bias !== undefined) inputs.push(requireTensor("gemm", "bias", options.bias));
    return {
      inputs,
      params: {
        trans_a: options.transA ?? false,
        trans_b: options.transB ?? false,
        alpha: options.alpha ?? 1,
        beta: options.beta ?? 1,
        has_bias: options.bias !== undefined,
      },
    };
  },
);

/**
 * Reductions (sum, mean, max, min, argmax over any dims, keepdim) and softmax / log-softmax.
 * Pairs with zig/src/kernels/reduction.zig.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, requireInteger, requireTensor } from "./dispatch.ts";

/** A dim, a list of dims, or undefined for all dims. */
export type Dims = number | readonly number[] | undefined;

function reduction(
  op: "sum" | "mean" | "max" | "min",
  name: string,
): (x: Tensor, dim?: Dims, keepdim?: boolean) => Tensor {
  return defineOp(op, name, (x: Tensor, dim?: Dims, keepdim = false) => {
    const dims = dim === undefined ? [] : typeof dim === "number" ? [dim] : [...dim];
    dims.forEach((d, i) => requireInteger(name, `dim[${i}]`, d));
    if (typeof keepdim !== "boolean") throw new TypeError(`${name}: keepdim must be a boolean`);
    if (dims.length > 8) throw new RangeError(`${name}: at most 8 dims, got ${dims.length}`);
    return { inputs: [requireTensor(name, "input", x)], params: { dims, keepdim } };
  });
}

/**
 * Sum over `dim` (a dim, several, or all when omitted).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sum, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2, 3, 4], [2, 2]);
 * using rows = sum(x, 1);
 * assert.deepEqual([...rows.toArray()], [3, 7]);
 * ```
 */
export const sum: (x: Tensor, dim?: Dims, keepdim?: boolean) => Tensor = reduction("sum", "sum");

/**
 * Mean over `dim` (all when omitted); NaN over zero elements.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mean, tensor } from "@spindle/spindle";
 * using m = mean(tensor([1, 2, 3, 4]));
 * assert.deepEqual([...m.toArray()], [2.5]);
 * ```
 */
export const mean: (x: Tensor, dim?: Dims, keepdim?: boolean) => Tensor = reduction("mean", "mean");

/**
 * Maximum values over `dim` (all when omitted); NaN wins.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { max, tensor } from "@spindle/spindle";
 * using m = max(tensor([1, 5, 2, 7], [2, 2]), 0);
 * assert.deepEqual([...m.toArray()], [2, 7]);
 * ```
 */
export const max: (x: Tensor, dim?: Dims, keepdim?: boolean) => Tensor = reduction("max", "max");

/**
 * Minimum values over `dim` (all when omitted); NaN wins.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { min, tensor } from "@spindle/spindle";
 * using m = min(tensor([3, 1, 2]));
 * assert.deepEqual([...m.toArray()], [1]);
 * ```
 */
export const min: (x: Tensor, dim?: Dims, keepdim?: boolean) => Tensor = reduction("min", "min");

/**
 * Index of the first maximum along `dim`, or in the flattened tensor when omitted (int64).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { argmax, tensor } from "@spindle/spindle";
 * using i = argmax(tensor([1, 9, 3, 7, 2, 8], [2, 3]), 1);
 * assert.deepEqual([...i.toArray()], [1n, 2n]);
 * ```
 */
export const argmax: (x: Tensor, dim?: number, keepdim?: boolean) => Tensor = defineOp(
  "argmax",
  "argmax",
  (x: Tensor, dim?: number, keepdim = false) => ({
    inputs: [requireTensor("argmax", "input", x)],
    params: { dim: dim === undefined ? null : requireInteger("argmax", "dim", dim), keepdim },
  }),
);

/** Options of {@link cumsum}. */
export interface CumsumOptions {
  /** Leave each element out of its own sum (ONNX's `exclusive`; default false). */
  exclusive?: boolean;
  /** Sum from the end of the dim (ONNX's `reverse`; default false). */
  reverse?: boolean;
}

/**
 * Running sums along `dim`, as `torch.cumsum` and ONNX CumSum; float32, int32 or int64.
 *
 * @example
 * ```ts
 * import { cumsum, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2, 3, 4]);
 * using y = cumsum(x, 0);
 * using z = cumsum(x, 0, { exclusive: true, reverse: true });
 * if (String(y.toArray()) !== "1,3,6,10" || String(z.toArray()) !== "9,7,4,0") throw new Error("cumsum");
 * ```
 */
export const cumsum: (x: Tensor, dim: number, options?: CumsumOptions) => Tensor = defineOp(
  "cum_sum",
  "cumsum",
  (x: Tensor, dim: number, options: CumsumOptions = {}) => ({
    inputs: [requireTensor("cumsum", "input", x)],
    params: {
      dim: requireInteger("cumsum", "dim", dim),
      exclusive: options.exclusive ?? false,
      reverse: options.reverse ?? false,
    },
  }),
);

/**
 * Softmax along `dim` (default the last).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { softmax, tensor } from "@spindle/spindle";
 * using p = softmax(tensor([0, 0]));
 * assert.ok([...p.toArray()].every((v) => Math.abs(Number(v) - 0.5) < 1e-6));
 * ```
 */
export const softmax: (x: Tensor, dim?: number) => Tensor = defineOp("softmax", "softmax", (x: Tensor, dim = -1) => ({
  inputs: [requireTensor("softmax", "input", x)],
  params: { dim: requireInteger("softmax", "dim", dim) },
}));

/**
 * log(softmax(x)) along `dim` (default the last), computed stably.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { logSoftmax, tensor } from "@spindle/spindle";
 * using p = logSoftmax(tensor([0, 0]));
 * assert.ok(Math.abs(Number(p.toArray()[0]) - Math.log(0.5)) < 1e-6);
 * ```
 */
export const logSoftmax: (x: Tensor, dim?: number) => Tensor = defineOp(
  "log_softmax",
  "logSoftmax",
  (x: Tensor, dim = -1) => ({
    inputs: [requireTensor("logSoftmax", "input", x)],
    params: { dim: requireInteger("logSoftmax", "dim", dim) },
  }),
);

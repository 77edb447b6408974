/**
 * Shape ops. Views (reshape of contiguous data, flatten, squeeze, unsqueeze, transpose,
 * permute, slice) share memory with their input; concat, gather and contiguous copy.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, describe, requireInteger, requireTensor } from "./dispatch.ts";

function integers(name: string, what: string, values: unknown): number[] {
  if (!Array.isArray(values)) {
    throw new TypeError(`${name}: ${what} must be an array of integers, got ${describe(values)}`);
  }
  if (values.length > 8) throw new RangeError(`${name}: at most 8 dims, got ${values.length}`);
  return values.map((v, i) => requireInteger(name, `${what}[${i}]`, v));
}

/**
 * The same values with another shape (one dim may be -1). A view when possible.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, reshape } from "@spindle/spindle";
 * using x = arange(6);
 * using y = reshape(x, [2, -1]);
 * assert.deepEqual(y.shape, [2, 3]);
 * ```
 */
export const reshape: (x: Tensor, shape: readonly number[]) => Tensor = defineOp(
  "reshape",
  "reshape",
  (x: Tensor, shape: readonly number[]) => ({
    inputs: [requireTensor("reshape", "input", x)],
    params: { shape: integers("reshape", "shape", shape) },
  }),
);

/**
 * Merges dims `start`…`end` (default: all) into one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { flatten, zeros } from "@spindle/spindle";
 * using y = flatten(zeros([2, 3, 4]), 1);
 * assert.deepEqual(y.shape, [2, 12]);
 * ```
 */
export const flatten: (x: Tensor, start?: number, end?: number) => Tensor = defineOp(
  "flatten",
  "flatten",
  (x: Tensor, start = 0, end = -1) => ({
    inputs: [requireTensor("flatten", "input", x)],
    params: { start: requireInteger("flatten", "start", start), end: requireInteger("flatten", "end", end) },
  }),
);

/**
 * Removes size-1 dims (only `dim` when given).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { squeeze, zeros } from "@spindle/spindle";
 * using y = squeeze(zeros([1, 3, 1]));
 * assert.deepEqual(y.shape, [3]);
 * ```
 */
export const squeeze: (x: Tensor, dim?: number) => Tensor = defineOp(
  "squeeze",
  "squeeze",
  (x: Tensor, dim?: number) => ({
    inputs: [requireTensor("squeeze", "input", x)],
    params: { dim: dim === undefined ? null : requireInteger("squeeze", "dim", dim) },
  }),
);

/**
 * Inserts a size-1 dim at `dim`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { unsqueeze, zeros } from "@spindle/spindle";
 * using y = unsqueeze(zeros([3]), 0);
 * assert.deepEqual(y.shape, [1, 3]);
 * ```
 */
export const unsqueeze: (x: Tensor, dim: number) => Tensor = defineOp(
  "unsqueeze",
  "unsqueeze",
  (x: Tensor, dim: number) => ({
    inputs: [requireTensor("unsqueeze", "input", x)],
    params: { dim: requireInteger("unsqueeze", "dim", dim) },
  }),
);

/**
 * Swaps two dims (a view).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tensor, transpose } from "@spindle/spindle";
 * using y = transpose(tensor([1, 2, 3, 4, 5, 6], [2, 3]), 0, 1);
 * assert.deepEqual(y.shape, [3, 2]);
 * assert.deepEqual([...y.toArray()], [1, 4, 2, 5, 3, 6]);
 * ```
 */
export const transpose: (x: Tensor, dim0: number, dim1: number) => Tensor = defineOp(
  "transpose",
  "transpose",
  (x: Tensor, dim0: number, dim1: number) => ({
    inputs: [requireTensor("transpose", "input", x)],
    params: { dim0: requireInteger("transpose", "dim0", dim0), dim1: requireInteger("transpose", "dim1", dim1) },
  }),
);

/**
 * Reorders dims: output dim i is input dim `dims[i]` (a view).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { permute, zeros } from "@spindle/spindle";
 * using y = permute(zeros([2, 3, 4]), [2, 0, 1]);
 * assert.deepEqual(y.shape, [4, 2, 3]);
 * ```
 */
export const permute: (x: Tensor, dims: readonly number[]) => Tensor = defineOp(
  "permute",
  "permute",
  (x: Tensor, dims: readonly number[]) => ({
    inputs: [requireTensor("permute", "input", x)],
    params: { dims: integers("permute", "dims", dims) },
  }),
);

/** Past any real dimension: `slice(x, dim, start)` runs to the end. */
const TO_END = 2 ** 52;

/**
 * `x[start:end:step]` along `dim`, with Python's rules for negative and out-of-range bounds
 * (a view; step must be positive).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, slice } from "@spindle/spindle";
 * using y = slice(arange(10), 0, 1, 8, 3);
 * assert.deepEqual([...y.toArray()], [1, 4, 7]);
 * ```
 */
export const slice: (x: Tensor, dim: number, start: number, end?: number, step?: number) => Tensor = defineOp(
  "slice",
  "slice",
  (x: Tensor, dim: number, start: number, end: number = TO_END, step = 1) => ({
    inputs: [requireTensor("slice", "input", x)],
    params: {
      dim: requireInteger("slice", "dim", dim),
      start: requireInteger("slice", "start", start),
      end: Math.min(requireInteger("slice", "end", end), TO_END),
      step: requireInteger("slice", "step", step),
    },
  }),
);

/**
 * Joins tensors along `dim` (default 0); all other dims must match.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { concat, tensor } from "@spindle/spindle";
 * using y = concat([tensor([1, 2]), tensor([3])]);
 * assert.deepEqual([...y.toArray()], [1, 2, 3]);
 * ```
 */
export const concat: (tensors: readonly Tensor[], dim?: number) => Tensor = defineOp(
  "concat",
  "concat",
  (tensors: readonly Tensor[], dim = 0) => {
    if (!Array.isArray(tensors) || tensors.length === 0) {
      throw new TypeError(`concat: expected a non-empty array of tensors, got ${describe(tensors)}`);
    }
    if (tensors.length > 16) throw new RangeError(`concat: at most 16 tensors at once, got ${tensors.length}`);
    return {
      inputs: tensors.map((t, i) => requireTensor("concat", `tensors[${i}]`, t)),
      params: { dim: requireInteger("concat", "dim", dim) },
    };
  },
);

/**
 * Picks values along `dim` by an integer `index` of the same rank:
 * `out[i][j] = x[index[i][j]][j]` for dim 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gather, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2, 3, 4], [2, 2]);
 * using index = tensor([1, 0], [2, 1], { dtype: "int64" });
 * using y = gather(x, 1, index);
 * assert.deepEqual([...y.toArray()], [2, 3]);
 * ```
 */
export const gather: (x: Tensor, dim: number, index: Tensor) => Tensor = defineOp(
  "gather",
  "gather",
  (x: Tensor, dim: number, index: Tensor) => ({
    inputs: [requireTensor("gather", "input", x), requireTensor("gather", "index", index)],
    params: { dim: requireInteger("gather", "dim", dim) },
  }),
);

/**
 * A contiguous copy (views become dense, row-major).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { contiguous, tensor, transpose } from "@spindle/spindle";
 * using t = transpose(tensor([1, 2, 3, 4], [2, 2]), 0, 1);
 * using c = contiguous(t);
 * assert.deepEqual([...c.toArray()], [1, 3, 2, 4]);
 * ```
 */
export const contiguous: (x: Tensor) => Tensor = defineOp("contiguous", "contiguous", (x: Tensor) => ({
  inputs: [requireTensor("contiguous", "input", x)],
  params: {},
}));

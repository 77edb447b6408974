/**
 * Normalisation layers: layer norm and batch norm (inference form). Pairs with
 * zig/src/kernels/normalization.zig.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, describe, requireNumber, requireTensor } from "./dispatch.ts";

function optionalTensor(name: string, what: string, value: unknown): Tensor | null {
  if (value === undefined || value === null) return null;
  return requireTensor(name, what, value);
}

/**
 * Layer norm over the trailing `normalizedShape` dims: (x - mean) / sqrt(var + eps) ·
 * weight + bias.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { layerNorm, tensor } from "@spindle/spindle";
 * using y = layerNorm(tensor([1, 3], [1, 2]), [2]);
 * const [low, high] = y.toArray();
 * assert.ok(Math.abs(Number(low) + 1) < 1e-4 && Math.abs(Number(high) - 1) < 1e-4);
 * ```
 */
export const layerNorm: (
  x: Tensor,
  normalizedShape: readonly number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps?: number,
) => Tensor = defineOp(
  "layer_norm",
  "layerNorm",
  (x: Tensor, normalizedShape: readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5) => {
    const input = requireTensor("layerNorm", "input", x);
    if (!Array.isArray(normalizedShape) || normalizedShape.length === 0) {
      throw new TypeError(`layerNorm: normalizedShape must be a non-empty array, got ${describe(normalizedShape)}`);
    }
    const trailing = input.shape.slice(input.shape.length - normalizedShape.length);
    if (normalizedShape.length > input.shape.length || trailing.some((d, i) => d !== normalizedShape[i])) {
      throw new RangeError(
        `layerNorm: normalizedShape [${normalizedShape.join(", ")}] does not match the end of input shape [${
          input.shape.join(", ")
        }]`,
      );
    }
    const w = optionalTensor("layerNorm", "weight", weight);
    const b = optionalTensor("layerNorm", "bias", bias);
    const inputs = [input, ...(w ? [w] : []), ...(b ? [b] : [])];
    return {
      inputs,
      params: {
        normalized_ndim: normalizedShape.length,
        eps: requireNumber("layerNorm", "eps", eps),
        has_weight: Boolean(w),
        has_bias: Boolean(b),
      },
    };
  },
);

/**
 * Batch norm with running statistics (inference): x is [N, C, ...]; mean, variance, weight
 * and bias are [C].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { batchNorm, tensor } from "@spindle/spindle";
 * using x = tensor([2, 4], [1, 2]);
 * using mean = tensor([1, 1]);
 * using variance = tensor([1, 4]);
 * using y = batchNorm(x, mean, variance, null, null, 0);
 * assert.deepEqual([...y.toArray()], [1, 1.5]);
 * ```
 */
export const batchNorm: (
  x: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps?: number,
) => Tensor = defineOp(
  "batch_norm",
  "batchNorm",
  (x: Tensor, runningMean: Tensor, runningVar: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5) => {
    const w = optionalTensor("batchNorm", "weight", weight);
    const b = optionalTensor("batchNorm", "bias", bias);
    const inputs = [
      requireTensor("batchNorm", "input", x),
      requireTensor("batchNorm", "runningMean", runningMean),
      requireTensor("batchNorm", "runningVar", runningVar),
      ...(w ? [w] : []),
      ...(b ? [b] : []),
    ];
    return {
      inputs,
      params: { eps: requireNumber("batchNorm", "eps", eps), has_weight: Boolean(w), has_bias: Boolean(b) },
    };
  },
);

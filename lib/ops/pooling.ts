/**
 * 2-D pooling, NCHW float32: `maxPool2d`, `avgPool2d` and `adaptiveAvgPool2d`, with
 * PyTorch's output sizes, padding limits and ceil-mode rules. Pairs with
 * zig/src/ops/pooling.zig and zig/src/kernels/pooling.zig.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { type Size2d, size2d } from "./conv.ts";
import { defineOp, describe, requireTensor } from "./dispatch.ts";

/** Options of {@link maxPool2d}; each defaults as in PyTorch. */
export interface MaxPool2dOptions {
  /** Step between windows (default: the kernel size). */
  stride?: Size2d;
  /** Implicit -∞ padding on both sides, at most half the effective kernel (default 0). */
  padding?: Size2d;
  /** Spacing between window taps (default 1). */
  dilation?: Size2d;
  /** Round the output size up, keeping windows that start inside the input (default false). */
  ceilMode?: boolean;
}

/** Options of {@link avgPool2d}; each defaults as in PyTorch. */
export interface AvgPool2dOptions {
  /** Step between windows (default: the kernel size). */
  stride?: Size2d;
  /** Implicit zero padding on both sides, at most half the kernel (default 0). */
  padding?: Size2d;
  /** Round the output size up, keeping windows that start inside the input (default false). */
  ceilMode?: boolean;
  /** Count padding positions in the divisor (default true). */
  countIncludePad?: boolean;
  /** Divide every window sum by this instead of the window size. */
  divisorOverride?: number;
}

function flag(name: string, what: string, value: unknown, fallback: boolean): boolean {
  const raw = value === undefined ? fallback : value;
  if (typeof raw !== "boolean") throw new TypeError(`${name}: ${what} must be a boolean, got ${describe(raw)}`);
  return raw;
}

/**
 * 2-D max pooling, as `torch.nn.functional.max_pool2d`, of a [N, C, H, W] or [C, H, W]
 * input. NaN propagates; padding is never chosen.
 *
 * @param x The input images.
 * @param kernelSize The window size.
 * @param options Stride, padding, dilation and ceil mode.
 * @returns A new tensor with the input's rank.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, maxPool2d, reshape } from "@spindle/spindle";
 * using values = arange(1, 17, 1);
 * using x = reshape(values, [1, 1, 4, 4]);
 * using y = maxPool2d(x, 2);
 * assert.deepEqual([...y.toArray()], [6, 8, 14, 16]);
 * ```
 */
export const maxPool2d: (x: Tensor, kernelSize: Size2d, options?: MaxPool2dOptions) => Tensor = defineOp(
  "max_pool2d",
  "maxPool2d",
  (x: Tensor, kernelSize: Size2d, options: MaxPool2dOptions = {}) => {
    const kernel = size2d("maxPool2d", "kernelSize", kernelSize, 1);
    return {
      inputs: [requireTensor("maxPool2d", "input", x)],
      params: {
        kernel_size: kernel,
        stride: size2d("maxPool2d", "stride", options.stride, kernel),
        padding: size2d("maxPool2d", "padding", options.padding, 0),
        dilation: size2d("maxPool2d", "dilation", options.dilation, 1),
        ceil_mode: flag("maxPool2d", "ceilMode", options.ceilMode, false),
      },
    };
  },
);

/**
 * 2-D average pooling, as `torch.nn.functional.avg_pool2d`, of a [N, C, H, W] or
 * [C, H, W] input.
 *
 * @param x The input images.
 * @param kernelSize The window size.
 * @param options Stride, padding, ceil mode, whether padding counts, divisor.
 * @returns A new tensor with the input's rank.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { arange, avgPool2d, reshape } from "@spindle/spindle";
 * using values = arange(1, 17, 1);
 * using x = reshape(values, [1, 1, 4, 4]);
 * using y = avgPool2d(x, 2);
 * assert.deepEqual([...y.toArray()], [3.5, 5.5, 11.5, 13.5]);
 * ```
 */
export const avgPool2d: (x: Tensor, kernelSize: Size2d, options?: AvgPool2dOptions) => Tensor = defineOp(
  "avg_pool2d",
  "avgPool2d",
  (x: Tensor, kernelSize: Size2d, options: AvgPool2dOptions = {}) => {
    const kernel = size2d("avgPool2d", "kernelSize", kernelSize, 1);
    const divisor = options.divisorOverride;
    if (divisor !== undefined && (typeof divisor !== "number" || !Number.isInteger(divisor))) {
      throw new TypeError(`avgPool2d: divisorOverride must be an integer, got ${describe(divisor)}`);
    }
    if (divisor === 0) throw new RangeError("avgPool2d: divisorOverride must be non-zero, got 0");
    return {
      inputs: [requireTensor("avgPool2d", "input", x)],
      params: {
        kernel_size: kernel,
        stride: size2d("avgPool2d", "stride", options.stride, kernel),
        padding: size2d("avgPool2d", "padding", options.padding, 0),
        ceil_mode: flag("avgPool2d", "ceilMode", options.ceilMode, false),
        count_include_pad: flag("avgPool2d", "countIncludePad", options.countIncludePad, true),
        divisor: divisor ?? null,
      },
    };
  },
);

/**
 * Adaptive 2-D average pooling, as `torch.nn.functional.adaptive_avg_pool2d`: output cell
 * (i, j) averages input rows ⌊i·H/h⌋ … ⌈(i+1)·H/h⌉ and the same for columns.
 *
 * @param x A [N, C, H, W] or [C, H, W] input.
 * @param outputSize [h, w], or one number for both; `null` keeps that input size.
 * @returns A new tensor with the input's rank.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { adaptiveAvgPool2d, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2, 3, 4], [1, 1, 2, 2]);
 * using y = adaptiveAvgPool2d(x, 1);
 * assert.deepEqual(y.shape, [1, 1, 1, 1]);
 * assert.deepEqual([...y.toArray()], [2.5]);
 * ```
 */
export const adaptiveAvgPool2d: (
  x: Tensor,
  outputSize: number | readonly [number | null, number | null],
) => Tensor = defineOp(
  "adaptive_avg_pool2d",
  "adaptiveAvgPool2d",
  (x: Tensor, outputSize: number | readonly [number | null, number | null]) => {
    const input = requireTensor("adaptiveAvgPool2d", "input", x);
    const rank = input.shape.length;
    const filled = Array.isArray(outputSize)
      ? outputSize.map((size, axis) => size ?? input.shape[rank - 2 + axis])
      : outputSize;
    return { inputs: [input], params: { output_size: size2d("adaptiveAvgPool2d", "outputSize", filled, 1) } };
  },
);

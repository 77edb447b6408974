/**
 * Convolutions, NCHW float32: `conv2d` and `convTranspose2d`. Pairs with
 * zig/src/kernels/conv.zig (depthwise kernel, im2col + GEMM in cache-sized blocks, 1×1 as a
 * plain GEMM), all on the intra-op pool.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, describe, requireTensor } from "./dispatch.ts";

/** A size per spatial axis: one number for both, or `[height, width]`. */
export type Size2d = number | readonly [number, number];

/** Options of {@link conv2d}; each defaults as in PyTorch. */
export interface Conv2dOptions {
  /** Step between windows (default 1). */
  stride?: Size2d;
  /** Zeros added on both sides of each spatial axis (default 0). */
  padding?: Size2d;
  /** Spacing between kernel taps (default 1). */
  dilation?: Size2d;
  /** Channel groups: input and output channels must both be divisible by it (default 1). */
  groups?: number;
}

/** Options of {@link convTranspose2d}; each defaults as in PyTorch. */
export interface ConvTranspose2dOptions extends Conv2dOptions {
  /** Extra rows and columns added at the bottom and right of the output (default 0). */
  outputPadding?: Size2d;
}

/** `value` as [height, width] integers; range checks are left to the native op. */
export function size2d(name: string, what: string, value: unknown, fallback: Size2d): [number, number] {
  const raw = value === undefined ? fallback : value;
  const pair = typeof raw === "number" ? [raw, raw] : raw;
  if (!Array.isArray(pair) || pair.length !== 2 || !pair.every((v) => typeof v === "number" && Number.isInteger(v))) {
    throw new TypeError(`${name}: ${what} must be an integer or a pair of integers, got ${describe(raw)}`);
  }
  return [pair[0], pair[1]];
}

function groupsOf(name: string, options: Conv2dOptions): number {
  const groups = options.groups ?? 1;
  if (typeof groups !== "number" || !Number.isInteger(groups)) {
    throw new TypeError(`${name}: groups must be an integer, got ${describe(groups)}`);
  }
  return groups;
}

function convInputs(name: string, x: unknown, weight: unknown, bias: unknown): Tensor[] {
  const inputs = [requireTensor(name, "input", x), requireTensor(name, "weight", weight)];
  if (bias !== undefined && bias !== null) inputs.push(requireTensor(name, "bias", bias));
  return inputs;
}

/**
 * 2-D convolution, as `torch.nn.functional.conv2d`: `x` is [N, C, H, W] (or [C, H, W]),
 * `weight` is [out, C / groups, kh, kw], `bias` is [out]. Output size per axis:
 * ⌊(in + 2·padding − dilation·(k − 1) − 1) / stride⌋ + 1.
 *
 * @param x The input images.
 * @param weight The filters.
 * @param bias Added per output channel (optional).
 * @param options Stride, padding, dilation and groups.
 * @returns A new [N, out, H', W'] tensor ([out, H', W'] for a 3-D input).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { conv2d, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 1, 3, 3]);
 * using weight = tensor([1, 0, 0, 1], [1, 1, 2, 2]);
 * using y = conv2d(x, weight);
 * assert.deepEqual(y.shape, [1, 1, 2, 2]);
 * assert.deepEqual([...y.toArray()], [6, 8, 12, 14]);
 * ```
 */
export const conv2d: (x: Tensor, weight: Tensor, bias?: Tensor | null, options?: Conv2dOptions) => Tensor = defineOp(
  "conv2d",
  "conv2d",
  (x: Tensor, weight: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}) => {
    const inputs = convInputs("conv2d", x, weight, bias);
    return {
      inputs,
      params: {
        stride: size2d("conv2d", "stride", options.stride, 1),
        padding: size2d("conv2d", "padding", options.padding, 0),
        dilation: size2d("conv2d", "dilation", options.dilation, 1),
        groups: groupsOf("conv2d", options),
        has_bias: inputs.length === 3,
      },
    };
  },
);

/**
 * 2-D transposed convolution, as `torch.nn.functional.conv_transpose2d`: `x` is [N, C, H, W]
 * (or [C, H, W]), `weight` is [C, out / groups, kh, kw], `bias` is [out]. Output size per
 * axis: (in − 1)·stride − 2·padding + dilation·(k − 1) + outputPadding + 1.
 *
 * @param x The input images.
 * @param weight The filters.
 * @param bias Added per output channel (optional).
 * @param options Stride, padding, output padding, dilation and groups.
 * @returns A new [N, out, H', W'] tensor ([out, H', W'] for a 3-D input).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { convTranspose2d, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2], [1, 1, 1, 2]);
 * using weight = tensor([1, 1], [1, 1, 1, 2]);
 * using y = convTranspose2d(x, weight);
 * assert.deepEqual([...y.toArray()], [1, 3, 2]);
 * ```
 */
export const convTranspose2d: (
  x: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  options?: ConvTranspose2dOptions,
) => Tensor = defineOp(
  "conv_transpose2d",
  "convTranspose2d",
  (x: Tensor, weight: Tensor, bias?: Tensor | null, options: ConvTranspose2dOptions = {}) => {
    const inputs = convInputs("convTranspose2d", x, weight, bias);
    return {
      inputs,
      params: {
        stride: size2d("convTranspose2d", "stride", options.stride, 1),
        padding: size2d("convTranspose2d", "padding", options.padding, 0),
        output_padding: size2d("convTranspose2d", "outputPadding", options.outputPadding, 0),
        dilation: size2d("convTranspose2d", "dilation", options.dilation, 1),
        groups: groupsOf("convTranspose2d", options),
        has_bias: inputs.length === 3,
      },
    };
  },
);

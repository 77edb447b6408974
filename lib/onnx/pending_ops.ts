/**
 * Native op names ONNX import maps onto, and THE one place that records what import assumes
 * about the convolution and pooling ops that land from the `conv` branch (op codes 39–43).
 * Adjust the parameter lists below at merge if the branch changes them; lib/onnx/ops.ts
 * builds every conv/pool call through these helpers.
 *
 * Assumed (PyTorch semantics, NCHW, symmetric padding):
 * - conv2d (x, weight [Cout, Cin/g, kh, kw], bias?)
 *   [stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w, groups, has_bias, activation, post_scale?, post_shift?]
 * - conv_transpose2d (x, weight [Cin, Cout/g, kh, kw], bias?)
 *   [stride_h, stride_w, padding_h, padding_w, output_padding_h, output_padding_w, dilation_h, dilation_w, groups, has_bias, activation, post_scale?, post_shift?]
 * - max_pool2d (x) [kernel_h, kernel_w, stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w, ceil_mode]
 * - avg_pool2d (x) [kernel_h, kernel_w, stride_h, stride_w, padding_h, padding_w, ceil_mode, count_include_pad, divisor (0 = window)]
 * - adaptive_avg_pool2d (x) [output_h, output_w]
 *
 * @module
 */
import { OP, type OpCode } from "../ops/dispatch.ts";
import { SpindleError } from "../../ffi/status.ts";

/**
 * Index of the fused activation in conv2d's parameters (0 none, 1 relu, 2 hard_swish); two
 * optional parameters after it scale and shift the activated value.
 */
export const CONV2D_ACTIVATION_PARAM = 8;
/** Index of the fused activation in conv_transpose2d's parameters (as conv2d's). */
export const CONV_TRANSPOSE2D_ACTIVATION_PARAM = 10;

/** The conv2d parameter list. */
export function conv2dParams(
  stride: number[],
  padding: number[],
  dilation: number[],
  groups: number,
  hasBias: boolean,
): number[] {
  return [stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups, hasBias ? 1 : 0, 0];
}

/** The conv_transpose2d parameter list. */
export function convTranspose2dParams(
  stride: number[],
  padding: number[],
  outputPadding: number[],
  dilation: number[],
  groups: number,
  hasBias: boolean,
): number[] {
  return [
    stride[0],
    stride[1],
    padding[0],
    padding[1],
    outputPadding[0],
    outputPadding[1],
    dilation[0],
    dilation[1],
    groups,
    hasBias ? 1 : 0,
    0,
  ];
}

/** The max_pool2d parameter list. */
export function maxPool2dParams(
  kernel: number[],
  stride: number[],
  padding: number[],
  dilation: number[],
  ceil: boolean,
): number[] {
  return [kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], ceil ? 1 : 0];
}

/** The avg_pool2d parameter list. */
export function avgPool2dParams(
  kernel: number[],
  stride: number[],
  padding: number[],
  ceil: boolean,
  countIncludePad: boolean,
): number[] {
  return [kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], ceil ? 1 : 0, countIncludePad ? 1 : 0, 0];
}

/** Whether this build has a native op of that name. */
export function hasNativeOp(name: string): boolean {
  return name in OP;
}

/**
 * The code of a native op by its model-file name.
 *
 * @throws {SpindleError} code `unsupported` when this build lacks the op.
 */
export function nativeOpCode(name: string): OpCode {
  const code = (OP as Record<string, OpCode>)[name];
  if (code === undefined) {
    throw new SpindleError(10, `this build of Spindle has no native '${name}' op (needed by the model)`);
  }
  return code;
}

/**
 * Spindle: a CPU inference runtime for Deno, with PyTorch's threading model — inference
 * threads, an inter-op pool for `fork`/`wait`, and intra-op parallelism inside kernels — on
 * a native library written in Zig.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, fork, mm, rand, wait } from "@spindle/spindle";
 * using x = rand([4, 4], { seed: 0 });
 * const future = fork(mm, x, x);
 * using y = mm(x, x);
 * using z = wait(future);
 * using out = add(y, z);
 * using expected = add(y, y); // the forked mm computed what the direct one did
 * assert.deepEqual(out.toArray(), expected.toArray());
 * ```
 *
 * @module
 */

export { SpindleError, type StatusName } from "./ffi/status.ts";
export {
  arange,
  type DType,
  full,
  liveTensorCount,
  ones,
  rand,
  randn,
  type RandomOptions,
  Tensor,
  tensor,
  type TensorOptions,
  zeros,
} from "./lib/tensor.ts";
export {
  abs,
  add,
  clamp,
  div,
  elu,
  erf,
  exp,
  gelu,
  type GeluOptions,
  hardSigmoid,
  hardSwish,
  leakyRelu,
  log,
  maximum,
  minimum,
  mul,
  neg,
  type Operand,
  pow,
  relu,
  sigmoid,
  sqrt,
  sub,
  tanh,
} from "./lib/ops/elementwise.ts";
export {
  argmax,
  cumsum,
  type CumsumOptions,
  type Dims,
  logSoftmax,
  max,
  mean,
  min,
  softmax,
  sum,
} from "./lib/ops/reduction.ts";
export { batchNorm, layerNorm } from "./lib/ops/normalization.ts";
export { embedding, embeddingBag, type EmbeddingBagOptions } from "./lib/ops/embedding.ts";
export {
  concat,
  contiguous,
  flatten,
  gather,
  permute,
  reshape,
  slice,
  squeeze,
  transpose,
  unsqueeze,
} from "./lib/ops/shape.ts";
export { addmm, bmm, gemm, type GemmOptions, linear, matmul, mm } from "./lib/ops/linalg.ts";
export {
  gru,
  type GruOptions,
  lstm,
  type LstmOptions,
  type RecurrentActivation,
  type RecurrentActivationKind,
  type RecurrentOptions,
  type RecurrentOutputs,
  rnn,
} from "./lib/ops/recurrent.ts";
export {
  conv2d,
  type Conv2dOptions,
  convTranspose2d,
  type ConvTranspose2dOptions,
  type Size2d,
} from "./lib/ops/conv.ts";
export {
  adaptiveAvgPool2d,
  avgPool2d,
  type AvgPool2dOptions,
  maxPool2d,
  type MaxPool2dOptions,
} from "./lib/ops/pooling.ts";
export { getNumInteropThreads, getNumThreads, setNumInteropThreads, setNumThreads } from "./lib/threads.ts";
export { getNumInferenceThreads, setNumInferenceThreads } from "./lib/inference.ts";
export { formatProfile, type ProfiledOp, type ProfileOptions, type ProfileReport } from "./lib/profile.ts";
export { type ParallelInfo, parallelInfo, parallelInfoJson } from "./lib/parallel_info.ts";
export { fork, Future, wait } from "./lib/future.ts";
export { script, type ScriptFunction, type ScriptResult } from "./lib/script/script.ts";
export { TracingError } from "./lib/script/trace.ts";
export type { InputDescription } from "./lib/program/format.ts";
export {
  load,
  type LoadOptions,
  Module,
  type NamedTensors,
  save,
  type ScriptModuleOptions,
  type ValueMetadata,
} from "./lib/module.ts";
export { bf16Supported, type Precision } from "./lib/program/program.ts";
export { importOnnx, type ImportOptions } from "./lib/onnx/import.ts";
export { type InferenceServer, serve, type ServeOptions } from "./lib/serve/serve.ts";
export { builtin, BUILTIN_NAMES, type BuiltinModel, builtinModel, type BuiltinOptions } from "./lib/models/builtin.ts";

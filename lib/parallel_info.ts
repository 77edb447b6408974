/**
 * parallel_info (threading spec §6): the PyTorch-shaped report of thread settings and
 * backends, and the same facts as an object.
 *
 * @module
 */
import { native } from "../ffi/load.ts";

/**
 * The facts behind {@link parallelInfo}, as reported by libspindle.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { getNumThreads, type ParallelInfo, parallelInfoJson } from "@spindle/spindle";
 * const info: ParallelInfo = parallelInfoJson();
 * assert.equal(info.num_threads, getNumThreads());
 * ```
 */
export interface ParallelInfo {
  /** Spindle's native library version. */
  version: string;
  /** The native ABI version. */
  abi_version: number;
  /** Intra-op threads (`getNumThreads()`). */
  num_threads: number;
  /** Where the intra-op count comes from. */
  num_threads_source: "api" | "mkl_num_threads" | "omp_num_threads" | "default";
  /** Inter-op threads (`getNumInteropThreads()`). */
  num_interop_threads: number;
  /** Whether the inter-op pool has started (its size is then fixed). */
  interop_started: boolean;
  /** Asynchronous forward passes run at once (`getNumInferenceThreads()`). */
  num_inference_threads: number;
  /** Where the inference thread count comes from. */
  num_inference_threads_source: "api" | "default";
  /** Intra-op backend chosen at build time. */
  intra_op_backend: "omp" | "tbb";
  /** GEMM backend chosen at build time. */
  blas: "openblas" | "native";
  /** BLAS library version string. */
  blas_version: string;
  /** Threads the BLAS library itself uses. */
  blas_threads: number;
  /** Where GEMM parallelism comes from. */
  blas_threading: string;
  /** Logical CPUs available to the process. */
  hardware_concurrency: number;
  /** Physical cores. */
  physical_cores: number;
  /** `OMP_NUM_THREADS` as the library sees it, or null when unset. */
  omp_num_threads: string | null;
  /** `MKL_NUM_THREADS` as the library sees it, or null when unset. */
  mkl_num_threads: string | null;
  /** CPU model the library was compiled for. */
  cpu: string;
  /** SIMD level of the kernels that run: "AVX-512", "AVX2", "baseline" (x86-64) or "NEON". */
  kernels: "AVX-512" | "AVX2" | "baseline" | "NEON";
  /**
   * How that level was chosen: "compiled for <cpu>" (a native build), "chosen by CPUID" or
   * "forced by SPINDLE_CPU_LEVEL=<level>" (the portable build), with any ignored override.
   */
  kernels_selection: string;
  /**
   * The int8 GEMM kernel of quantized models: AVX512-VNNI where CPUID reports it, else the
   * 16-bit widened one (SPINDLE_INT8_KERNEL=widened|reference forces a lower one).
   */
  int8_kernels: string;
  /**
   * The precisions a model can load with: "f32, bf16 (AMX tiles)" or "f32, bf16
   * (AVX512_BF16)" where the CPU has a bf16 kernel, else f32 only (bf16 then falls back).
   */
  precisions: string;
  /** Whether the library was built with ThreadSanitizer. */
  tsan: boolean;
}

/**
 * The thread settings and backends as an object (what `parallel_info --json` prints).
 *
 * @returns The facts, freshly read from the native library.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parallelInfoJson } from "@spindle/spindle";
 * const info = parallelInfoJson();
 * assert.ok(info.num_threads >= 1);
 * assert.ok(["omp", "tbb"].includes(info.intra_op_backend));
 * ```
 */
export function parallelInfoJson(): ParallelInfo {
  const symbols = native();
  let buffer = new Uint8Array(4096);
  let length = Number(symbols.spindle_info_json(buffer, BigInt(buffer.length)));
  if (length > buffer.length) {
    buffer = new Uint8Array(length);
    length = Number(symbols.spindle_info_json(buffer, BigInt(buffer.length)));
  }
  return JSON.parse(new TextDecoder().decode(buffer.subarray(0, length))) as ParallelInfo;
}

const BACKEND_DESCRIPTIONS = {
  omp: "omp (fork-join team per calling thread)",
  tbb: "tbb (one work-stealing pool shared by all callers)",
} as const;

/**
 * The PyTorch-shaped parallel_info report, line for line.
 *
 * @returns The report, one fact per line, tab-indented like PyTorch's.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parallelInfo } from "@spindle/spindle";
 * assert.equal(parallelInfo().split("\n")[0], "Spindle/Parallel:");
 * ```
 */
export function parallelInfo(): string {
  const info = parallelInfoJson();
  return [
    "Spindle/Parallel:",
    `\tget_num_threads() : ${info.num_threads}`,
    `\tget_num_interop_threads() : ${info.num_interop_threads}`,
    `\tget_num_inference_threads() : ${info.num_inference_threads} (async forward calls at once; more wait in a queue)`,
    `Intra-op backend: ${BACKEND_DESCRIPTIONS[info.intra_op_backend]}`,
    `\tintra-op threads : ${info.num_threads}`,
    `BLAS: ${info.blas_version}`,
    `\tblas threads : ${info.blas_threads} (GEMM runs on the ${info.blas_threading})`,
    `hardware_concurrency() : ${info.hardware_concurrency}`,
    `physical cores : ${info.physical_cores}`,
    `CPU kernels : ${info.kernels} (${info.kernels_selection})`,
    `int8 kernels : ${info.int8_kernels}`,
    `precisions : ${info.precisions}`,
    "Environment variables:",
    `\tOMP_NUM_THREADS : ${info.omp_num_threads ?? "[not set]"}`,
    `\tMKL_NUM_THREADS : ${info.mkl_num_threads ?? "[not set]"}`,
    `Spindle parallel backend: ${info.intra_op_backend}`,
  ].join("\n");
}

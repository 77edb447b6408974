import assert from "node:assert/strict";
import { runCli } from "./helpers.ts";
import { parallelInfo, parallelInfoJson } from "../mod.ts";

Deno.test("parallel_info prints the PyTorch-shaped report line for line", async () => {
  const result = await runCli(["parallel_info"], { OMP_NUM_THREADS: "3" });
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split("\n");
  const info = JSON.parse((await runCli(["parallel_info", "--json"], { OMP_NUM_THREADS: "3" })).stdout);
  const patterns = [
    /^Spindle\/Parallel:$/,
    /^\tget_num_threads\(\) : 3$/,
    new RegExp(`^\\tget_num_interop_threads\\(\\) : ${info.physical_cores}$`),
    // The default: physical cores / intra-op threads, at least 1.
    new RegExp(`^\\tget_num_inference_threads\\(\\) : ${Math.max(1, Math.floor(info.physical_cores / 3))} \\(`),
    new RegExp(`^Intra-op backend: ${info.intra_op_backend} \\(`),
    /^\tintra-op threads : 3$/,
    /^BLAS: (OpenBLAS \d+\.\d+\.\d+.*|Spindle native GEMM)$/,
    /^\tblas threads : \d+ \(GEMM runs on the .+\)$/,
    new RegExp(`^hardware_concurrency\\(\\) : ${info.hardware_concurrency}$`),
    new RegExp(`^physical cores : ${info.physical_cores}$`),
    /^CPU kernels : (AVX-512|AVX2|baseline|NEON) \((compiled for \S+|chosen by CPUID|forced by SPINDLE_CPU_LEVEL=\w+)\)$/,
    /^int8 kernels : (AMX int8|AVX512-VNNI|16-bit widened|reference loops)/,
    /^precisions : f32(, bf16 \((AMX tiles|AVX512_BF16)\)| \(bf16 falls back)/,
    /^Environment variables:$/,
    /^\tOMP_NUM_THREADS : 3$/,
    /^\tMKL_NUM_THREADS : \[not set\]$/,
    /^Spindle parallel backend: (omp|tbb)$/,
  ];
  assert.equal(lines.length, patterns.length, result.stdout);
  lines.forEach((line, i) => assert.match(line, patterns[i]));
});

Deno.test("parallel_info shows MKL_NUM_THREADS and its precedence", async () => {
  const result = await runCli(["parallel_info"], { OMP_NUM_THREADS: "3", MKL_NUM_THREADS: "1" });
  assert.match(result.stdout, /^\tget_num_threads\(\) : 1$/m);
  assert.match(result.stdout, /^\tMKL_NUM_THREADS : 1$/m);
  assert.match(result.stdout, /^\tOMP_NUM_THREADS : 3$/m);
});

Deno.test("parallel_info --json has every fact of the text report", async () => {
  const result = await runCli(["parallel_info", "--json"]);
  assert.equal(result.code, 0, result.stderr);
  const info = JSON.parse(result.stdout);
  for (
    const key of [
      "num_threads",
      "num_interop_threads",
      "num_inference_threads",
      "intra_op_backend",
      "blas",
      "blas_version",
      "blas_threads",
      "hardware_concurrency",
      "physical_cores",
      "omp_num_threads",
      "mkl_num_threads",
      "kernels",
      "kernels_selection",
      "int8_kernels",
    ]
  ) assert.ok(key in info, key);
  assert.equal(info.omp_num_threads, null);
  assert.ok(info.physical_cores >= 1 && info.physical_cores <= info.hardware_concurrency);
});

Deno.test("parallel_info names the int8 kernel, and SPINDLE_INT8_KERNEL lowers it", async () => {
  const lowered = JSON.parse((await runCli(["parallel_info", "--json"], { SPINDLE_INT8_KERNEL: "widened" })).stdout);
  assert.match(lowered.int8_kernels, /^16-bit widened/);
  const forced = JSON.parse((await runCli(["parallel_info", "--json"], { SPINDLE_INT8_KERNEL: "reference" })).stdout);
  assert.match(forced.int8_kernels, /^reference loops/);
});

Deno.test("parallelInfo() in-process matches parallelInfoJson()", () => {
  const info = parallelInfoJson();
  const text = parallelInfo();
  assert.match(text, new RegExp(`get_num_threads\\(\\) : ${info.num_threads}\\n`));
  assert.match(text, new RegExp(`Spindle parallel backend: ${info.intra_op_backend}$`));
});

Deno.test("parallel_info rejects unknown flags with usage and exit code 2", async () => {
  const result = await runCli(["parallel_info", "--bogus"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /bogus/);
  const help = await runCli(["parallel_info", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: .*parallel_info/);
});

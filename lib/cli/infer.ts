/**
 * `infer`: builds or loads a model, runs R requests with C concurrent inference threads, and
 * reports an output checksum, latency percentiles, throughput and the thread settings.
 *
 * @module
 */
import { decodeModel } from "../onnx/proto.ts";
import { getNumInteropThreads, getNumThreads, MAX_THREADS, setNumInteropThreads, setNumThreads } from "../threads.ts";
import { parallelInfoJson } from "../parallel_info.ts";
import { BUILTIN_NAMES, type BuiltinModel, builtinModel } from "../models/builtin.ts";
import { load, type Module } from "../module.ts";
import type { Precision } from "../program/program.ts";
import { type DType, randn, type Tensor, tensor } from "../tensor.ts";
import { getNumInferenceThreads, setNumInferenceThreads } from "../inference.ts";
import { formatProfile, type ProfileReport } from "../profile.ts";
import { byteSize, parse, positiveInteger, UsageError } from "./usage.ts";

/** Usage text of `infer`. */
export const INFER_USAGE = `Usage: deno run -A main.ts infer [options]

Builds or loads a model, runs R requests with C concurrent inference threads, and prints
an output checksum, p50/p90/p99 latency, throughput and the thread settings. With no
options it runs the embedded default model builtin:example, the threading spec's
  forward(x) = mm(x, Wy) + wait(fork(mm, x, Wz))   (x: 64x1024, W: 1024x1024)

Options:
  --model NAME|FILE       builtin:${BUILTIN_NAMES.join(", builtin:")} (default builtin:example),
                          or a Spindle model file (inputs: fixed-seed randn, -1 dims = batch)
  --int-values N          integer inputs (token ids, indices) get fixed-seed values in
                          [0, N) (default 1: all zeros, an index valid for any table)
  --threads N             intra-op threads (default: MKL/OMP_NUM_THREADS or physical cores)
  --interop-threads N     inter-op threads (default: physical cores)
  --batch B               rows per request (default: the model's)
  --requests R            timed requests (default 100)
  --concurrency C         concurrent inference threads (default 1, at most 32)
  --warmup W              untimed requests first (default 5)
  --input-shape NAME=DIMS fixed sizes for an .onnx input with dynamic dims, e.g.
                          x=-1x3x48x192 (-1 keeps the batch dynamic); repeatable
  --memory-budget SIZE    model files: the most tensor bytes its load check and each run
                          may hold at once, e.g. 8G (default 4G)
  --precision f32|bf16    run convolutions and matrix products in bf16 with f32
                          accumulation (AMX or AVX512_BF16; falls back to f32 with a
                          warning on other CPUs); default f32
  --parallel-branches     .onnx models: run independent branches as fork/wait tasks on
                          the inter-op pool (ONNX Runtime's parallel execution mode)
  --profile               also time every op node (--profile-runs runs, default 10) and
                          print the slowest nodes (time, share, shapes, GFLOPS) and the
                          time per op; with --json, as the report's "profile"
  --profile-runs N        runs to profile (default 10)
  --json                  print one JSON object instead of text
  -h, --help              show this help`;

/** What `infer` measured. */
export interface InferReport {
  model: string;
  summary: string;
  batch: number | null;
  requests: number;
  concurrency: number;
  checksum: number;
  threads: number;
  interop_threads: number;
  intra_op_backend: string;
  blas: string;
  latency_ms: { p50: number; p90: number; p99: number; mean: number };
  throughput_per_s: number;
  elapsed_ms: number;
  /** Asynchronous forward passes run at once (getNumInferenceThreads()). */
  inference_threads: number;
  /** Per-op profile (with --profile). */
  profile?: ProfileReport;
}

/** The value at quantile `q` of sorted samples (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Options `infer` runs with, already validated. */
export interface InferOptions {
  model: string;
  batch?: number;
  requests: number;
  concurrency: number;
  warmup: number;
  progress: boolean;
  /** For .onnx models: fixed sizes of dynamic input dims, by input name. */
  inputShapes?: Record<string, number[]>;
  /** For .onnx models: fork independent branches (see ImportOptions.executionMode). */
  parallelBranches?: boolean;
  /** For model files: the load option memoryBudget. */
  memoryBudget?: number;
  /** The load option precision (default "f32"). */
  precision?: Precision;
  /** Profile this many runs after the timed requests (0 or absent: no profile). */
  profileRuns?: number;
  /** Integer inputs get fixed-seed values in [0, intValues) (default 1: zeros). */
  intValues?: number;
}

interface Runnable {
  module: Module;
  inputs(): Tensor[];
  summary: string;
  dispose(): void;
}

/** Parses repeated `NAME=D1xD2x…` flags into ONNX import input shapes. */
export function parseInputShapes(values: readonly string[]): Record<string, number[]> {
  const shapes: Record<string, number[]> = {};
  for (const value of values) {
    const match = value.match(/^([^=]+)=(-?\d+(?:x-?\d+)*)$/);
    if (match === null) throw new UsageError(`--input-shape expects NAME=D1xD2x..., got '${value}'`);
    shapes[match[1]] = match[2].split("x").map(Number);
  }
  return shapes;
}

/**
 * Stops with a usage error naming the input, its symbolic shape and the flag to pass when an
 * ONNX model has dynamic dimensions other than the batch (the first) and --input-shape does
 * not give them: import cannot guess sizes that a model may need to be multiples of 32.
 * Files that cannot be read or decoded are left to load(), whose errors say why.
 */
export async function checkOnnxInputShapes(model: string, inputShapes: Record<string, number[]>): Promise<void> {
  let bytes: Uint8Array;
  let graph: ReturnType<typeof decodeModel>["graph"];
  try {
    bytes = await Deno.readFile(model);
    graph = decodeModel(bytes).graph;
  } catch {
    return;
  }
  const initializers = new Set(graph.initializers.map((t) => t.name));
  for (const input of graph.inputs) {
    if (initializers.has(input.name) || input.dims === null || Object.hasOwn(inputShapes, input.name)) continue;
    const dynamic = input.dims.some((d, axis) => axis > 0 && typeof d !== "number");
    if (!dynamic) continue;
    const shape = input.dims.map((d) => (typeof d === "number" ? String(d) : d || "?"));
    const template = input.dims.map((d, axis) => (typeof d === "number" ? String(d) : axis === 0 ? "1" : d || "N"));
    throw new UsageError(
      `${model}: input '${input.name}' has the symbolic shape [${shape.join(", ")}]; give the sizes to run at with ` +
        `--input-shape ${input.name}=${template.join("x")} (numbers for the named sizes)`,
    );
  }
}

async function open(
  model: string,
  batch: number | undefined,
  inputShapes: Record<string, number[]> = {},
  parallelBranches = false,
  memoryBudget?: number,
  precision: Precision = "f32",
  intValues = 1,
): Promise<Runnable> {
  if (model.startsWith("builtin:")) {
    const name = model.slice("builtin:".length);
    if (!BUILTIN_NAMES.includes(name)) {
      throw new UsageError(`unknown model '${model}' (built-ins: builtin:${BUILTIN_NAMES.join(", builtin:")})`);
    }
    if (memoryBudget !== undefined) throw new UsageError("--memory-budget applies to model files, not built-ins");
    const built: BuiltinModel = builtinModel(name, { batch, precision });
    return built;
  }
  if (model.toLowerCase().endsWith(".onnx")) await checkOnnxInputShapes(model, inputShapes);
  const executionMode = parallelBranches ? "parallel" : "sequential";
  const module = await load(model, { inputShapes, executionMode, memoryBudget, precision });
  const inputs = () =>
    module.inputs.map((spec, i) => {
      const shape = spec.shape.map((d) => (d === -1 ? batch ?? 1 : d));
      if (spec.dtype === "float32") return randn(shape, { seed: 1000 + i });
      return integers(shape, spec.dtype, intValues, 1000 + i);
    });
  return { module, inputs, summary: `${module.name}: ${module.inputs.length} inputs`, dispose: () => module.dispose() };
}

/** Fixed-seed integers in [0, bound) (mulberry32: small, and the same on every machine). */
function integers(shape: number[], dtype: DType, bound: number, seed: number): Tensor {
  const count = shape.reduce((a, b) => a * b, 1);
  const values = new Array<number>(count);
  let state = seed >>> 0;
  for (let i = 0; i < count; i++) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    values[i] = Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * bound);
  }
  return tensor(values, shape, { dtype });
}

function checksumOf(outputs: readonly Tensor[]): number {
  let total = 0;
  for (const output of outputs) {
    for (const value of output.toArray()) total += Number(value);
  }
  return total;
}

function dispose(outputs: readonly Tensor[]): void {
  for (const output of outputs) output.dispose();
}

/** Runs `infer` and returns its report. */
export async function runInfer(options: InferOptions): Promise<InferReport> {
  const runnable = await open(
    options.model,
    options.batch,
    options.inputShapes,
    options.parallelBranches,
    options.memoryBudget,
    options.precision,
    options.intValues,
  );
  const inputs = runnable.inputs();
  try {
    const first = await runnable.module.forwardAll(...inputs);
    const checksum = checksumOf(first);
    dispose(first);
    for (let i = 0; i < options.warmup; i++) dispose(await runnable.module.forwardAll(...inputs));
    const samples: number[] = [];
    let next = 0;
    const started = performance.now();
    let lastProgress = started;
    const encoder = new TextEncoder();
    const worker = async () => {
      while (next < options.requests) {
        next++;
        const begin = performance.now();
        dispose(await runnable.module.forwardAll(...inputs));
        const end = performance.now();
        samples.push(end - begin);
        if (options.progress && end - lastProgress > 1000) {
          lastProgress = end;
          Deno.stderr.writeSync(encoder.encode(`\rinfer: ${samples.length}/${options.requests} requests`));
        }
      }
    };
    await Promise.all(Array.from({ length: options.concurrency }, worker));
    const elapsed = performance.now() - started;
    if (options.progress && lastProgress !== started) Deno.stderr.writeSync(encoder.encode("\n"));
    const sorted = [...samples].sort((a, b) => a - b);
    const info = parallelInfoJson();
    const profile = options.profileRuns ? runnable.module.profile(inputs, { runs: options.profileRuns }) : undefined;
    return {
      model: options.model,
      summary: runnable.summary,
      batch: options.batch ?? null,
      requests: options.requests,
      concurrency: options.concurrency,
      checksum,
      threads: getNumThreads(),
      interop_threads: getNumInteropThreads(),
      intra_op_backend: info.intra_op_backend,
      blas: info.blas,
      latency_ms: {
        p50: quantile(sorted, 0.5),
        p90: quantile(sorted, 0.9),
        p99: quantile(sorted, 0.99),
        mean: samples.reduce((a, b) => a + b, 0) / samples.length,
      },
      throughput_per_s: (options.requests / elapsed) * 1000,
      elapsed_ms: elapsed,
      inference_threads: getNumInferenceThreads(),
      ...(profile === undefined ? {} : { profile }),
    };
  } finally {
    inputs.forEach((t) => t.dispose());
    runnable.dispose();
  }
}

/** The --precision flag's value, checked (a usage error names the choices). */
export function precisionFlag(value: string | undefined): Precision {
  if (value === undefined) return "f32";
  if (value !== "f32" && value !== "bf16") throw new UsageError(`--precision must be f32 or bf16, got '${value}'`);
  return value;
}

/** Runs `infer` with its arguments; returns the exit code. */
export async function inferCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    model: { type: "string" },
    threads: { type: "string" },
    "interop-threads": { type: "string" },
    batch: { type: "string" },
    requests: { type: "string" },
    concurrency: { type: "string" },
    warmup: { type: "string" },
    "input-shape": { type: "string", multiple: true },
    "int-values": { type: "string" },
    "parallel-branches": { type: "boolean" },
    "memory-budget": { type: "string" },
    precision: { type: "string" },
    profile: { type: "boolean" },
    "profile-runs": { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(INFER_USAGE);
    return 0;
  }
  if (values.threads !== undefined) setNumThreads(positiveInteger("threads", values.threads, 1, MAX_THREADS));
  if (values["interop-threads"] !== undefined) {
    setNumInteropThreads(positiveInteger("interop-threads", values["interop-threads"], 1, MAX_THREADS));
  }
  const concurrency = positiveInteger("concurrency", values.concurrency, 1);
  if (concurrency > 32) throw new UsageError(`--concurrency is at most 32, got ${concurrency}`);
  // C concurrent requests each get an inference thread, even past the default split.
  if (values.concurrency !== undefined) setNumInferenceThreads(concurrency);
  if (values["profile-runs"] !== undefined && !values.profile) throw new UsageError("--profile-runs needs --profile");
  const profileRuns = values.profile ? positiveInteger("profile-runs", values["profile-runs"], 10) : 0;
  const report = await runInfer({
    model: values.model ?? "builtin:example",
    batch: values.batch === undefined ? undefined : positiveInteger("batch", values.batch, 1),
    requests: positiveInteger("requests", values.requests, 100),
    concurrency,
    warmup: values.warmup === "0" ? 0 : positiveInteger("warmup", values.warmup, 5),
    progress: !values.json,
    inputShapes: parseInputShapes(values["input-shape"] ?? []),
    parallelBranches: values["parallel-branches"] ?? false,
    memoryBudget: values["memory-budget"] === undefined
      ? undefined
      : byteSize("memory-budget", values["memory-budget"]),
    precision: precisionFlag(values.precision),
    profileRuns,
    intValues: positiveInteger("int-values", values["int-values"], 1),
  });
  if (values.json) console.log(JSON.stringify(report));
  else printReport(report);
  return 0;
}

function printReport(report: InferReport): void {
  const ms = (value: number) => `${value.toFixed(3)} ms`;
  console.log(
    [
      `model: ${report.model} (${report.summary})`,
      `checksum: ${report.checksum.toExponential(6)}`,
      `threads: intra-op ${report.threads}, inter-op ${report.interop_threads}, inference ${report.inference_threads} ` +
      `for ${report.concurrency} concurrent request${report.concurrency === 1 ? "" : "s"} ` +
      `(backend ${report.intra_op_backend}, blas ${report.blas})`,
      `latency over ${report.requests} requests: p50 ${ms(report.latency_ms.p50)}, ` +
      `p90 ${ms(report.latency_ms.p90)}, p99 ${ms(report.latency_ms.p99)}`,
      `throughput: ${report.throughput_per_s.toFixed(1)} requests/s`,
    ].join("\n"),
  );
  if (report.profile !== undefined) console.log(`\n${formatProfile(report.profile)}`);
}

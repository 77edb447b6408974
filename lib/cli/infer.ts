/**
 * `infer`: runs a model and reports a checksum, thread settings and latency.
 *
 * @module
 */
import { EXAMPLE_DEFAULTS, ExampleModel } from "../models/example.ts";
import { getNumInteropThreads, getNumThreads, setNumInteropThreads, setNumThreads } from "../threads.ts";
import { parallelInfoJson } from "../parallel_info.ts";
import { parse, positiveInteger, UsageError } from "./usage.ts";

/** Usage text of `infer`. */
export const INFER_USAGE = `Usage: deno run -A main.ts infer [options]

Runs a model and prints an output checksum, the thread settings and latency.
With no options it runs the embedded default model, builtin:example:
  forward(x) = mm(x, Wy) + wait(fork(mm, x, Wz))   (x: 64x1024, W: 1024x1024)

Options:
  --model NAME            builtin:example (default)
  --threads N             intra-op threads (default: MKL/OMP_NUM_THREADS or physical cores)
  --interop-threads N     inter-op threads (default: physical cores)
  --batch B               rows of the input (default ${EXAMPLE_DEFAULTS.batch})
  --hidden H              width of the layers (default ${EXAMPLE_DEFAULTS.hidden})
  --requests R            timed forward passes (default 100)
  --warmup W              untimed passes first (default 5)
  --json                  print one JSON object instead of text
  -h, --help              show this help`;

/** What `infer` measured. */
export interface InferReport {
  model: string;
  batch: number;
  hidden: number;
  requests: number;
  checksum: number;
  threads: number;
  interop_threads: number;
  intra_op_backend: string;
  blas: string;
  latency_ms: { p50: number; p90: number; p99: number; mean: number };
  throughput_per_s: number;
}

/** The value at quantile `q` of sorted samples (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Runs `infer` with its arguments; returns the exit code. */
export function inferCommand(args: string[]): number {
  const { values } = parse(args, {
    model: { type: "string" },
    threads: { type: "string" },
    "interop-threads": { type: "string" },
    batch: { type: "string" },
    hidden: { type: "string" },
    requests: { type: "string" },
    warmup: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(INFER_USAGE);
    return 0;
  }
  const model = values.model ?? "builtin:example";
  if (model !== "builtin:example") {
    throw new UsageError(`unknown model '${model}' (available: builtin:example)`);
  }
  if (values.threads !== undefined) setNumThreads(positiveInteger("threads", values.threads, 1));
  if (values["interop-threads"] !== undefined) {
    setNumInteropThreads(positiveInteger("interop-threads", values["interop-threads"], 1));
  }
  const batch = positiveInteger("batch", values.batch, EXAMPLE_DEFAULTS.batch);
  const hidden = positiveInteger("hidden", values.hidden, EXAMPLE_DEFAULTS.hidden);
  const requests = positiveInteger("requests", values.requests, 100);
  const warmup = values.warmup === "0" ? 0 : positiveInteger("warmup", values.warmup, 5);

  const report = run(model, batch, hidden, requests, warmup, !values.json);
  if (values.json) console.log(JSON.stringify(report));
  else printReport(report);
  return 0;
}

function run(
  model: string,
  batch: number,
  hidden: number,
  requests: number,
  warmup: number,
  progress: boolean,
): InferReport {
  using example = new ExampleModel({ batch, hidden, seed: 0 });
  using x = example.input();
  let checksum = 0;
  for (let i = 0; i < warmup; i++) example.forward(x).dispose();
  const samples: number[] = [];
  const started = performance.now();
  let lastProgress = started;
  for (let i = 0; i < requests; i++) {
    const begin = performance.now();
    using y = example.forward(x);
    const end = performance.now();
    samples.push(end - begin);
    if (i === requests - 1) checksum = sum(y.toArray() as Float32Array);
    if (progress && end - lastProgress > 1000) {
      lastProgress = end;
      Deno.stderr.writeSync(new TextEncoder().encode(`\rinfer: ${i + 1}/${requests} requests`));
    }
  }
  const elapsed = performance.now() - started;
  if (progress && lastProgress !== started) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  const sorted = [...samples].sort((a, b) => a - b);
  const info = parallelInfoJson();
  return {
    model,
    batch,
    hidden,
    requests,
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
    throughput_per_s: (requests / elapsed) * 1000,
  };
}

function sum(values: Float32Array): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

function printReport(report: InferReport): void {
  const ms = (value: number) => `${value.toFixed(3)} ms`;
  console.log(
    [
      `model: ${report.model} (batch ${report.batch}, hidden ${report.hidden})`,
      `checksum: ${report.checksum.toExponential(6)}`,
      `threads: intra-op ${report.threads}, inter-op ${report.interop_threads} ` +
      `(backend ${report.intra_op_backend}, blas ${report.blas})`,
      `latency over ${report.requests} requests: p50 ${ms(report.latency_ms.p50)}, ` +
      `p90 ${ms(report.latency_ms.p90)}, p99 ${ms(report.latency_ms.p99)}`,
      `throughput: ${report.throughput_per_s.toFixed(1)} requests/s`,
    ].join("\n"),
  );
}

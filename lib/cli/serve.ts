/**
 * `serve`: serves models over the Open Inference Protocol (KServe v2 REST) until SIGTERM or
 * SIGINT, then finishes the requests in flight and exits 0.
 *
 * @module
 */
import { BUILTIN_NAMES, builtinModel } from "../models/builtin.ts";
import { load } from "../module.ts";
import { parallelInfoJson } from "../parallel_info.ts";
import { getNumInteropThreads, getNumThreads, MAX_THREADS, setNumInteropThreads, setNumThreads } from "../threads.ts";
import { type ServedModel, servedModule } from "../serve/model.ts";
import { DATATYPE_OF, type TensorSpec } from "../serve/protocol.ts";
import { type InferenceServer, type ServeOptions, startServer } from "../serve/server.ts";
import { defaultConcurrency } from "../serve/serve.ts";
import { parseInputShapes, precisionFlag } from "./infer.ts";
import type { Precision } from "../program/program.ts";
import { byteSize, parse, positiveInteger, UsageError } from "./usage.ts";

/** Usage text of `serve`. */
export const SERVE_USAGE = `Usage: deno run -A main.ts serve --model NAME=PATH [--model ...] [options]

Serves models over the Open Inference Protocol (KServe v2 REST, with the binary tensor data
extension), as Triton does: GET /v2, /v2/health/{live,ready}, /v2/models/NAME[/versions/1],
/v2/models/NAME/ready, POST /v2/models/NAME/infer, /metrics (Prometheus), and Triton's
GET /v2/models/NAME/config and POST /v2/repository/index. SIGTERM or
SIGINT stops accepting requests, finishes those in flight and exits 0.

Options:
  --model NAME=PATH       a model to serve as NAME: a .spindle or .onnx file, or
                          builtin:${BUILTIN_NAMES.join(", builtin:")}; repeatable
  --port N                TCP port (default 8000; 0 picks a free one)
  --host HOST             address to listen on (default 127.0.0.1)
  --concurrency N         forward passes at once (default: physical cores / intra-op
                          threads, at least 1; at most 32)
  --queue N               requests that may wait for a slot; more get 503 (default 64)
  --timeout-ms N          deadline of each infer request; past it 504 (default 30000)
  --max-body SIZE         largest request body, e.g. 64M; larger get 413 (default 64M)
  --max-batch N           dynamic batching: stack up to N rows of concurrent requests to a
                          model whose inputs have a batch dimension (default 1: off)
  --batch-delay-us N      how long a batch may wait for more requests (default 0)
  --inline-max-us N       with --concurrency 1, a request alone in the server whose
                          model's forward took less than N µs lately runs it on the
                          JavaScript thread, skipping the handoff to a sleeping pool
                          thread and back (default 5000; 0: always on the pool); one
                          with less than 4 such times left before its deadline does not
  --threads N             intra-op threads per forward pass
  --interop-threads N     inter-op threads
  --input-shape [MODEL:]NAME=DIMS
                          fixed sizes for dynamic .onnx input dims other than the batch,
                          e.g. x=-1x3x48x192, for every model or only MODEL's (e.g.
                          rec:x=-1x3x48x320); repeatable
  --memory-budget SIZE    model files: the most tensor bytes each run may hold (default 4G)
  --precision f32|bf16    run every model's convolutions and matrix products in bf16 with
                          f32 accumulation (falls back to f32 with a warning on CPUs
                          without bf16 instructions); default f32
  -h, --help              show this help`;

/** Parses repeated `NAME=PATH` flags. */
export function parseModels(values: readonly string[]): { name: string; path: string }[] {
  if (values.length === 0) throw new UsageError("give at least one --model NAME=PATH (e.g. example=builtin:example)");
  const seen = new Set<string>();
  return values.map((value) => {
    const match = value.match(/^([A-Za-z0-9_.-]+)=(.+)$/);
    if (match === null) {
      throw new UsageError(`--model expects NAME=PATH (NAME of letters, digits, '_', '.', '-'), got '${value}'`);
    }
    if (seen.has(match[1])) throw new UsageError(`--model names '${match[1]}' twice`);
    seen.add(match[1]);
    return { name: match[1], path: match[2] };
  });
}

/**
 * The `--input-shape` sizes for one model: `NAME=DIMS` applies to every .onnx model,
 * `MODEL:NAME=DIMS` (MODEL one of the --model names) only to that one, and wins.
 */
export function inputShapesFor(
  model: string,
  values: readonly string[],
  models: ReadonlySet<string>,
): Record<string, number[]> {
  const general: string[] = [];
  const scoped: string[] = [];
  for (const value of values) {
    const match = value.match(/^([A-Za-z0-9_.-]+):(.+)$/);
    if (match !== null && models.has(match[1])) {
      if (match[1] === model) scoped.push(match[2]);
    } else {
      general.push(value);
    }
  }
  return { ...parseInputShapes(general), ...parseInputShapes(scoped) };
}

async function openModel(
  name: string,
  path: string,
  inputShapes: Record<string, number[]>,
  memoryBudget: number | undefined,
  precision: Precision,
): Promise<ServedModel> {
  if (path.startsWith("builtin:")) {
    const builtin = path.slice("builtin:".length);
    if (!BUILTIN_NAMES.includes(builtin)) {
      throw new UsageError(`unknown model '${path}' (built-ins: builtin:${BUILTIN_NAMES.join(", builtin:")})`);
    }
    const built = builtinModel(builtin, { precision });
    return servedModule(name, path, built.module, () => built.dispose());
  }
  // No sizes needed for symbolic dims: each request brings its shape, and load() keeps the
  // dims symbolic (infer needs them only to make up inputs).
  const module = await load(path, { inputShapes, memoryBudget, precision });
  return servedModule(name, path, module);
}

function describe(specs: readonly TensorSpec[]): string {
  return specs.map((s) => `${s.name} ${DATATYPE_OF[s.dtype]} [${s.shape.join(", ")}]`).join(", ");
}

/**
 * `--inline-max-us`'s default. The command's process serves nothing but the server, so a
 * short forward alone in a one-slot server may hold its event loop: measured with
 * bench/serve_probe.ts (load average 4.3, 2 intra-op threads, omp), inline against the pool
 * was -51 µs p50 for the PaddleOCR classifier (faster in 19 of 20 rounds) and -293 µs for
 * builtin:example (16 of 20). A forward over 5 ms gains under a few percent from it, and a
 * health check waits at most about that long. (The `serve()` API keeps 0: there the event
 * loop is the embedding application's.)
 */
const INLINE_MAX_US = 5000;

/** Runs `serve` with its arguments; resolves with the exit code once the server has stopped. */
export async function serveCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    model: { type: "string", multiple: true },
    port: { type: "string" },
    host: { type: "string" },
    concurrency: { type: "string" },
    queue: { type: "string" },
    "timeout-ms": { type: "string" },
    "max-body": { type: "string" },
    "max-batch": { type: "string" },
    "batch-delay-us": { type: "string" },
    "inline-max-us": { type: "string" },
    threads: { type: "string" },
    "interop-threads": { type: "string" },
    "input-shape": { type: "string", multiple: true },
    "memory-budget": { type: "string" },
    precision: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const specs = parseModels(values.model ?? []);
  const port = values.port === "0" ? 0 : positiveInteger("port", values.port, 8000, 65535);
  const queue = values.queue === "0" ? 0 : positiveInteger("queue", values.queue, 64, 1_000_000);
  const timeoutMs = positiveInteger("timeout-ms", values["timeout-ms"], 30_000, 2 ** 31 - 1);
  const maxBody = values["max-body"] === undefined ? 64 * 2 ** 20 : byteSize("max-body", values["max-body"]);
  const maxBatch = positiveInteger("max-batch", values["max-batch"], 1, 4096);
  const batchDelayUs = values["batch-delay-us"] === "0"
    ? 0
    : positiveInteger("batch-delay-us", values["batch-delay-us"], 0, 10_000_000);
  const inlineMaxUs = values["inline-max-us"] === "0"
    ? 0
    : positiveInteger("inline-max-us", values["inline-max-us"], INLINE_MAX_US, 10_000_000);
  const precision = precisionFlag(values.precision);
  const memoryBudget = values["memory-budget"] === undefined
    ? undefined
    : byteSize("memory-budget", values["memory-budget"]);
  if (values.threads !== undefined) setNumThreads(positiveInteger("threads", values.threads, 1, MAX_THREADS));
  if (values["interop-threads"] !== undefined) {
    setNumInteropThreads(positiveInteger("interop-threads", values["interop-threads"], 1, MAX_THREADS));
  }
  const info = parallelInfoJson();
  const intraOpThreads = getNumThreads();
  const concurrency = positiveInteger("concurrency", values.concurrency, defaultConcurrency());
  if (concurrency > 32) throw new UsageError(`--concurrency is at most 32, got ${concurrency}`);
  const modelNames = new Set(specs.map((spec) => spec.name));
  for (const { name } of specs) inputShapesFor(name, values["input-shape"] ?? [], modelNames); // usage errors first

  const models: ServedModel[] = [];
  let server: InferenceServer | undefined;
  try {
    for (const { name, path } of specs) {
      const inputShapes = inputShapesFor(name, values["input-shape"] ?? [], modelNames);
      const model = await openModel(name, path, inputShapes, memoryBudget, precision);
      models.push(model);
      const batching = maxBatch > 1
        ? model.batchable ? `on (up to ${maxBatch} rows, ${batchDelayUs} µs delay)` : "off (no batch dimension)"
        : "off";
      console.log(
        `model ${name} (${path}): inputs ${describe(model.inputs)}; outputs ${
          describe(model.outputs)
        }; dynamic batching ${batching}${precision === "f32" ? "" : `; precision ${precision}`}`,
      );
    }
    const options: ServeOptions = {
      models,
      port,
      hostname: values.host ?? "127.0.0.1",
      concurrency,
      queue,
      timeoutMs,
      maxBody,
      maxBatch,
      batchDelayUs,
      inlineMaxUs,
      intraOpThreads,
      interopThreads: getNumInteropThreads(),
      version: info.version,
    };
    server = await startServer(options);
    console.log(
      `threads: intra-op ${intraOpThreads}, inter-op ${options.interopThreads}, inference slots ${concurrency} ` +
        `(physical cores ${info.physical_cores}), queue ${queue}, backend ${info.intra_op_backend}, blas ${info.blas}`,
    );
    console.log(`listening on http://${options.hostname}:${server.port}`);
    const running = server;
    const stop = () => {
      console.log("serve: shutting down; finishing requests in flight");
      running.shutdown();
    };
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    try {
      await server.finished;
    } finally {
      Deno.removeSignalListener("SIGTERM", stop);
      Deno.removeSignalListener("SIGINT", stop);
    }
    console.log("serve: stopped");
    return 0;
  } finally {
    for (const model of models) model.dispose();
  }
}

/**
 * The HTTP server of `spindle serve`: Open Inference Protocol (KServe v2) REST routes on
 * Spindle's own HTTP/1.1 layer (./http1.ts, which says why not `Deno.serve`), the scheduler,
 * `/metrics`, and graceful shutdown.
 *
 * @module
 */
import { borrowStuck } from "../tensor.ts";
import { Deadlines } from "./deadlines.ts";
import { type HttpRequest, type HttpResponse, serveHttp1 } from "./http1.ts";
import { Metrics } from "./metrics.ts";
import type { InputValues, ServedModel } from "./model.ts";
import { encodeInferResponse, HttpError, parseInferRequest, type RequestPlan, type TensorSpec } from "./protocol.ts";
import { Scheduler, type SchedulerOptions } from "./scheduler.ts";
import { DATATYPE_OF } from "./protocol.ts";

/** Settings of a server. */
export interface ServeOptions extends SchedulerOptions {
  models: readonly ServedModel[];
  /** Port to listen on (0: any free port). */
  port: number;
  hostname: string;
  /** Deadline of each infer request, from its arrival, in milliseconds. */
  timeoutMs: number;
  /** Largest request body accepted, in bytes. */
  maxBody: number;
  /** Thread settings for `/metrics` and the log. */
  intraOpThreads: number;
  interopThreads: number;
  /** The server's version string (`GET /v2`). */
  version: string;
}

/** A running server. */
export interface InferenceServer {
  /** The port it listens on. */
  readonly port: number;
  readonly metrics: Metrics;
  /** Stops accepting requests, answers those in flight, then resolves. Idempotent. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
}

/** The only model version served: models are loaded once and never replaced. */
const VERSION = "1";
const JSON_HEADERS = { "content-type": "application/json" };
/**
 * The body offset of the first binary tensor (`Inference-Header-Content-Length`), for the
 * HTTP layer to align; 0 when there is none or it is malformed (parseInferRequest answers it).
 */
function alignmentHint(headerLength: string | null): number {
  if (headerLength === null) return 0;
  const length = Number(headerLength);
  return Number.isSafeInteger(length) && length >= 0 ? length : 0;
}

/** Most infer paths kept resolved (a few spellings of each model's path). */
const INFER_PATHS = 64;

function json(status: number, value: unknown, headers: Record<string, string> = {}): HttpResponse {
  return { status, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(value) };
}

function tensorMetadata(spec: TensorSpec) {
  return { name: spec.name, datatype: DATATYPE_OF[spec.dtype], shape: spec.shape };
}

const TRITON_TYPES = { float32: "TYPE_FP32", int64: "TYPE_INT64", int32: "TYPE_INT32" } as const;

/**
 * The model's configuration in Triton's form (`GET /v2/models/NAME/config`, which Triton's
 * tools such as perf_analyzer read): with dynamic batching on, `max_batch_size` is
 * `--max-batch` and dims leave out the batch dimension, as Triton's do.
 */
function tritonConfig(model: ServedModel, maxBatch: number) {
  const batched = model.batchable && maxBatch > 1;
  const tensor = (spec: TensorSpec) => ({
    name: spec.name,
    data_type: TRITON_TYPES[spec.dtype],
    dims: batched ? spec.shape.slice(1) : spec.shape,
  });
  return {
    name: model.name,
    platform: "spindle",
    backend: "spindle",
    max_batch_size: batched ? maxBatch : 0,
    input: model.inputs.map(tensor),
    output: model.outputs.map(tensor),
    ...(batched ? { dynamic_batching: {} } : {}),
  };
}

/**
 * Starts serving `options.models`.
 *
 * @param options Models, address, limits and thread settings.
 * @returns The running server.
 */
export function startServer(options: ServeOptions): Promise<InferenceServer> {
  const models = new Map(options.models.map((m) => [m.name, m]));
  /** Validated all-binary request headers, per model (see RequestPlan). */
  const plans = new Map(options.models.map((m) => [m, new Map<string, RequestPlan>()]));
  /** Infer paths resolved to a served model before (see route). */
  const inferPaths = new Map<string, ServedModel>();
  const metrics = new Metrics({
    intraOpThreads: options.intraOpThreads,
    interopThreads: options.interopThreads,
    concurrency: options.concurrency,
    queue: options.queue,
    maxBatch: options.maxBatch,
  });
  const deadlines = new Deadlines();
  const scheduler = new Scheduler(options, metrics, deadlines);
  let draining = false;
  /** Resolves the drain wait of shutdown() once no infer request is left. */
  let drained: (() => void) | null = null;

  const modelOf = (name: string, version: string | undefined): ServedModel => {
    const model = models.get(name);
    if (model === undefined) {
      throw new HttpError(404, `unknown model '${name}' (serving: ${[...models.keys()].join(", ")})`);
    }
    if (version !== undefined && version !== VERSION) {
      throw new HttpError(404, `model '${name}' has no version '${version}' (versions: ${VERSION})`);
    }
    return model;
  };

  const infer = async (request: HttpRequest, model: ServedModel): Promise<HttpResponse> => {
    const arrived = performance.now();
    if (draining) throw new HttpError(503, "the server is shutting down", { "retry-after": "1" });
    if (!scheduler.tryAdmit()) {
      throw new HttpError(
        503,
        `the server is full (${options.concurrency} running, ${options.queue} queued; --queue); retry later`,
        { "retry-after": "1" },
      );
    }
    try {
      const encoding = request.header("content-encoding");
      if (encoding !== null && encoding.trim().toLowerCase() !== "identity") {
        throw new HttpError(400, `Content-Encoding '${encoding}' is not supported; send the body uncompressed`);
      }
      // The HTTP layer bounds the body (--max-body, 413) and its arrival (--timeout-ms, 408).
      // The first binary tensor follows the JSON header: aligned, the forward reads it in place.
      const headerLength = request.header("inference-header-content-length");
      const body = await request.body(alignmentHint(headerLength));
      const parsed = parseInferRequest(body, headerLength, model.inputs, model.outputs, plans.get(model));
      // Binary inputs may be read in place (model.ts run): the body is held until no forward
      // reads it, which can be after the answer (a 504 while the forward runs).
      const inputs: InputValues[] = parsed.inputs.map((input) =>
        input.data instanceof Uint8Array ? { ...input, borrow: true } : input
      );
      const hold = inputs.some((input) => input.borrow)
        ? (done: Promise<void>) => request.holdBody(done.then(() => !borrowStuck(body)))
        : undefined;
      const left = Math.max(1, options.timeoutMs - (performance.now() - arrived));
      // The response is made while the outputs are alive: binary outputs are read straight into
      // the connection's response buffer, from which the HTTP layer sends them uncopied.
      return await scheduler.infer(model, inputs, left, options.timeoutMs, (outputs) => {
        const encoded = encodeInferResponse(
          model.name,
          VERSION,
          parsed.id,
          parsed.outputs.map((wanted) => {
            const output = outputs[model.outputs.findIndex((spec) => spec.name === wanted.name)];
            return {
              name: wanted.name,
              binary: wanted.binary,
              dtype: output.dtype,
              shape: output.shape,
              byteLength: output.byteLength,
              read: (into: Uint8Array) => output.read(into),
              values: () => output.values(),
            };
          }),
          (bytes) => request.responseBuffer(bytes),
        );
        if (encoded.headerLength === null) return { status: 200, headers: JSON_HEADERS, body: encoded.body };
        return {
          status: 200,
          headers: {
            "content-type": "application/octet-stream",
            "inference-header-content-length": String(encoded.headerLength),
          },
          body: encoded.body,
        };
      }, hold);
    } finally {
      scheduler.release();
      if (draining && scheduler.admitted === 0) drained?.();
    }
  };

  /** Runs an infer request of `model` (undefined: unknown, answered 404) and counts its answer. */
  const inferRoute = async (
    request: HttpRequest,
    name: string,
    model: ServedModel | undefined,
    version: string | undefined,
  ): Promise<HttpResponse> => {
    const arrived = performance.now();
    try {
      const response = await infer(request, modelOf(name, version));
      metrics.request(name, response.status);
      metrics.answered(name, (performance.now() - arrived) / 1000);
      return response;
    } catch (error) {
      metrics.request(model === undefined ? "_unknown" : name, error instanceof HttpError ? error.status : 500);
      throw error;
    }
  };

  const route = (request: HttpRequest): Promise<HttpResponse> => {
    // Clients post to the same infer path each time: a path resolved before skips the route
    // match and the percent-decoding.
    const known = request.method === "POST" ? inferPaths.get(request.path) : undefined;
    if (known !== undefined) return inferRoute(request, known.name, known, undefined);
    return routeOther(request);
  };

  const routeOther = async (request: HttpRequest): Promise<HttpResponse> => {
    const path = request.path.replace(/\/+$/, "");
    const method = request.method;
    const get = method === "GET" || method === "HEAD";
    if (path === "/v2" && get) {
      return json(200, { name: "spindle", version: options.version, extensions: ["binary_tensor_data"] });
    }
    if (path === "/v2/health/live" && get) return json(200, { live: true });
    if (path === "/v2/health/ready" && get) {
      return draining ? json(503, { ready: false, error: "the server is shutting down" }) : json(200, { ready: true });
    }
    if (path === "/metrics" && get) {
      return { status: 200, headers: { "content-type": "text/plain; version=0.0.4" }, body: metrics.render() };
    }
    if (path === "/v2/repository/index" && method === "POST") {
      // Triton's model repository extension, as tritonclient's get_model_repository_index reads it.
      return json(200, [...models.keys()].map((name) => ({ name, version: VERSION, state: "READY" })));
    }
    const match = path.match(/^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(?:\/(ready|infer|config))?$/);
    if (match === null) throw new HttpError(404, `no route for ${method} ${path} (see the Open Inference Protocol)`);
    const [, rawName, rawVersion, action] = match;
    let name: string;
    let version: string | undefined;
    try {
      name = decodeURIComponent(rawName);
      version = rawVersion === undefined ? undefined : decodeURIComponent(rawVersion);
    } catch {
      throw new HttpError(400, `the model name in ${path} is not valid percent-encoding`);
    }
    if (action === "infer") {
      if (method !== "POST") throw new HttpError(405, `use POST for ${path}`, { allow: "POST" });
      const model = models.get(name);
      // Only paths of served models (and no version, or the served one) are kept, at most
      // INFER_PATHS of them: the cache cannot grow with what clients send.
      if (model !== undefined && (version === undefined || version === VERSION) && inferPaths.size < INFER_PATHS) {
        inferPaths.set(request.path, model);
      }
      return await inferRoute(request, name, model, version);
    }
    if (!get) throw new HttpError(405, `use GET for ${path}`, { allow: "GET" });
    const model = modelOf(name, version);
    if (action === "ready") return json(200, { name: model.name, ready: true });
    if (action === "config") return json(200, tritonConfig(model, options.maxBatch));
    return json(200, {
      name: model.name,
      versions: [VERSION],
      platform: "spindle",
      inputs: model.inputs.map(tensorMetadata),
      outputs: model.outputs.map(tensorMetadata),
    });
  };

  const handler = async (request: HttpRequest): Promise<HttpResponse> => {
    try {
      return await route(request);
    } catch (error) {
      if (error instanceof HttpError) throw error; // the HTTP layer answers it as JSON {error}
      console.error(`serve: internal error: ${error instanceof Error ? error.stack : error}`);
      return json(500, { error: `internal error: ${error instanceof Error ? error.message : error}` });
    }
  };

  const server = serveHttp1({
    hostname: options.hostname,
    port: options.port,
    maxBody: options.maxBody,
    timeoutMs: options.timeoutMs,
    deadlines,
  }, handler);
  let stopping: Promise<void> | null = null;
  return Promise.resolve({
    port: server.port,
    metrics,
    finished: server.finished,
    shutdown() {
      // Requests admitted so far are answered first (new ones get 503), then it stops.
      draining = true;
      stopping ??= (async () => {
        if (scheduler.admitted > 0) await new Promise<void>((resolve) => drained = resolve);
        await server.shutdown();
      })();
      return stopping;
    },
  });
}

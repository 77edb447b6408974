/**
 * The HTTP server of `spindle serve`: Open Inference Protocol (KServe v2) REST routes on
 * `Deno.serve`, a bounded body reader, the scheduler, `/metrics`, and graceful shutdown.
 *
 * @module
 */
import { type Deadline, Deadlines } from "./deadlines.ts";
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
/** Largest response buffer kept for reuse; larger responses get a buffer of their own. */
const SCRATCH_KEEP_BYTES = 16 * 2 ** 20;

function json(status: number, value: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function errorResponse(error: HttpError): Response {
  return json(error.status, { error: error.message }, error.headers);
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

/** Rejects after `ms` with a 408 unless cleared; for reading bodies that arrive too slowly. */
function bodyDeadline(deadlines: Deadlines, ms: number): { expired: Promise<never>; clear(): void } {
  let deadline: Deadline | undefined;
  const expired = new Promise<never>((_, reject) => {
    deadline = deadlines.add(
      ms,
      () => reject(new HttpError(408, `the request body did not arrive within the ${ms} ms deadline`)),
    );
  });
  expired.catch(() => {});
  return { expired, clear: () => deadlines.cancel(deadline!) };
}

/**
 * Reads a request body of at most `maxBody` bytes. A declared Content-Length over the limit
 * is refused before reading; a body of a declared length is read whole in one native read
 * (nothing past the length is read: the HTTP layer frames the body by it); a chunked body is
 * copied as it streams in, and reading stops at the limit.
 */
async function readBody(
  request: Request,
  maxBody: number,
  timeoutMs: number,
  deadlines: Deadlines,
): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  let length: number | null = null;
  if (declared !== null) {
    length = Number(declared);
    if (!/^\d+$/.test(declared.trim()) || !Number.isSafeInteger(length)) {
      throw new HttpError(400, `Content-Length '${declared}' is not a byte count`);
    }
    if (length > maxBody) {
      throw new HttpError(413, `the body is ${length} bytes, over the ${maxBody}-byte limit (--max-body)`);
    }
  }
  if (request.body === null) return new Uint8Array(0);
  if (length !== null) {
    // A declared length at most maxBody: the HTTP layer (hyper) frames the body by it, so
    // it can be neither longer nor, without an error, shorter. One native read of the
    // whole body costs one promise where the stream loop below costs one per chunk plus a
    // copy to join them: 46 µs against 88 µs for the classifier's 110 KB request on loopback.
    const deadline = bodyDeadline(deadlines, timeoutMs);
    const whole = request.bytes();
    try {
      const body = await Promise.race([whole, deadline.expired]);
      if (body.byteLength !== length) {
        throw new HttpError(400, `the body has ${body.byteLength} bytes; Content-Length declared ${length}`);
      }
      return body;
    } catch (error) {
      // A body cut short or too slow: its read settles when the connection goes.
      whole.catch(() => {});
      if (error instanceof HttpError) throw error;
      throw new HttpError(400, `the request body could not be read: ${error instanceof Error ? error.message : error}`);
    } finally {
      deadline.clear();
    }
  }
  const reader = request.body.getReader();
  const deadline = bodyDeadline(deadlines, timeoutMs);
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await Promise.race([reader.read(), deadline.expired]);
      if (done) break;
      if (total + value.byteLength > maxBody) {
        throw new HttpError(413, `the body is over the ${maxBody}-byte limit (--max-body)`);
      }
      chunks.push(value);
      total += value.byteLength;
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    if (error instanceof HttpError) throw error;
    throw new HttpError(400, `the request body could not be read: ${error instanceof Error ? error.message : error}`);
  } finally {
    deadline.clear();
  }
  if (chunks.length === 1) return chunks[0];
  const body = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
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
  const metrics = new Metrics({
    intraOpThreads: options.intraOpThreads,
    interopThreads: options.interopThreads,
    concurrency: options.concurrency,
    queue: options.queue,
    maxBatch: options.maxBatch,
  });
  const deadlines = new Deadlines();
  const scheduler = new Scheduler(options, metrics, deadlines);
  /**
   * The buffer binary responses are encoded into, reused: `new Response` copies a byte body
   * (the Fetch standard's extract-a-body; tests/serve_test.ts checks Deno still does), so it
   * is free again once the Response exists. A fresh buffer per response costs its zeroing and
   * page faults on top of that copy. Kept up to SCRATCH_KEEP_BYTES.
   */
  let scratchBuffer = new Uint8Array(0);
  const scratch = (bytes: number): Uint8Array<ArrayBuffer> => {
    if (bytes <= scratchBuffer.byteLength) return scratchBuffer;
    const buffer = new Uint8Array(Math.max(bytes, Math.min(2 * scratchBuffer.byteLength, SCRATCH_KEEP_BYTES)));
    if (buffer.byteLength <= SCRATCH_KEEP_BYTES) scratchBuffer = buffer;
    return buffer;
  };
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

  const infer = async (request: Request, model: ServedModel): Promise<Response> => {
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
      const encoding = request.headers.get("content-encoding");
      if (encoding !== null && encoding.trim().toLowerCase() !== "identity") {
        throw new HttpError(400, `Content-Encoding '${encoding}' is not supported; send the body uncompressed`);
      }
      const body = await readBody(request, options.maxBody, options.timeoutMs, deadlines);
      const parsed = parseInferRequest(
        body,
        request.headers.get("inference-header-content-length"),
        model.inputs,
        model.outputs,
        plans.get(model),
      );
      const inputs: InputValues[] = parsed.inputs.map((t) => ({ dtype: t.dtype, shape: t.shape, data: t.data }));
      const left = Math.max(1, options.timeoutMs - (performance.now() - arrived));
      // The response is made while the outputs are alive: binary outputs are read straight into
      // the scratch body, which `new Response` copies before the next request can reuse it.
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
          scratch,
        );
        if (encoded.headerLength === null) return new Response(encoded.body, { status: 200, headers: JSON_HEADERS });
        return new Response(encoded.body, {
          status: 200,
          headers: {
            "content-type": "application/octet-stream",
            "inference-header-content-length": String(encoded.headerLength),
          },
        });
      });
    } finally {
      scheduler.release();
      if (draining && scheduler.admitted === 0) drained?.();
    }
  };

  const route = async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname.replace(/\/+$/, "");
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
      return new Response(metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } });
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

  const handler = async (request: Request): Promise<Response> => {
    try {
      return await route(request);
    } catch (error) {
      if (error instanceof HttpError) return errorResponse(error);
      console.error(`serve: internal error: ${error instanceof Error ? error.stack : error}`);
      return json(500, { error: `internal error: ${error instanceof Error ? error.message : error}` });
    }
  };

  return new Promise((resolve) => {
    const server = Deno.serve({
      port: options.port,
      hostname: options.hostname,
      onListen: () => {},
      onError: (error) => json(500, { error: `internal error: ${error instanceof Error ? error.message : error}` }),
    }, handler);
    let stopping: Promise<void> | null = null;
    resolve({
      port: server.addr.port,
      metrics,
      finished: server.finished,
      shutdown() {
        // Deno's server.shutdown() makes the bodies of requests still streaming in unreadable,
        // so the requests admitted so far are answered first (new ones get 503), then it stops.
        draining = true;
        stopping ??= (async () => {
          if (scheduler.admitted > 0) await new Promise<void>((resolve) => drained = resolve);
          await server.shutdown();
        })();
        return stopping;
      },
    });
  });
}

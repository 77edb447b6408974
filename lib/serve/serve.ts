/**
 * The serving API: {@link serve} puts modules behind the Open Inference Protocol (KServe v2
 * REST), as the `serve` command does for model files.
 *
 * @module
 */
import { getNumInferenceThreads, setNumInferenceThreads } from "../inference.ts";
import type { Module } from "../module.ts";
import { parallelInfoJson } from "../parallel_info.ts";
import { getNumInteropThreads, getNumThreads } from "../threads.ts";
import { servedModule } from "./model.ts";
import { startServer } from "./server.ts";

/**
 * Options of {@link serve}; every one has the default of the `serve` command.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import type { ServeOptions } from "@spindle/spindle";
 * const options: ServeOptions = { port: 0, maxBatch: 8, batchDelayUs: 500 };
 * assert.equal(options.maxBatch, 8);
 * ```
 */
export interface ServeOptions {
  /** TCP port (default 8000; 0 picks a free one, see {@link InferenceServer.port}). */
  port?: number;
  /** Address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** Forward passes at once (default: physical cores / intra-op threads, at least 1; at most 32). */
  concurrency?: number;
  /** Requests that may wait for a slot; more get 503 (default 64). */
  queue?: number;
  /** Deadline of each infer request in milliseconds; past it 504 (default 30,000). */
  timeoutMs?: number;
  /** Largest request body in bytes; larger get 413 (default 64 MiB). */
  maxBody?: number;
  /** Dynamic batching: most rows stacked into one forward (default 1: off). */
  maxBatch?: number;
  /** How long a batch may wait for more requests, in microseconds (default 0). */
  batchDelayUs?: number;
  /**
   * With `concurrency` 1, a request alone in the server whose model's forward took less than
   * this many microseconds lately runs it on the JavaScript thread, skipping the handoff to
   * a sleeping pool thread and back (default 0: every forward on the pool). The event loop,
   * and so the rest of the application, waits for at most about this long, which is why it
   * is off here; the `serve` command, whose process serves nothing else, defaults to 5000.
   * Measured with bench/serve_probe.ts: a gain with one intra-op thread and, since the omp
   * pool's workers sleep when they share their caller's CPU, with two (see the README).
   */
  inlineMaxUs?: number;
}

/**
 * A running server.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type InferenceServer, Module, relu, script, serve, zeros } from "@spindle/spindle";
 * using x = zeros([1, 2]);
 * using model = Module.fromScript(script((input) => relu(input)), [x]);
 * const server: InferenceServer = await serve({ relu: model }, { port: 0 });
 * assert.ok(server.port > 0);
 * await server.shutdown();
 * ```
 */
export interface InferenceServer {
  /** The port it listens on. */
  readonly port: number;
  /**
   * Stops accepting requests (new ones get 503), answers every admitted one, then stops
   * listening. Idempotent.
   */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
}

/** The default number of forward passes at once: physical cores / intra-op threads, 1 to 32. */
export function defaultConcurrency(): number {
  return Math.min(32, Math.max(1, Math.floor(parallelInfoJson().physical_cores / getNumThreads())));
}

/**
 * Serves modules over the Open Inference Protocol (KServe v2 REST with the binary tensor data
 * extension): the routes, errors, limits, dynamic batching and `/metrics` of the `serve`
 * command. The modules stay the caller's: the server does not dispose them.
 *
 * @param models The modules by the name clients use.
 * @param options Address, limits and batching.
 * @returns The running server.
 * @throws {TypeError} when a model is not a Module or a name is not URL-safe.
 * @throws {RangeError} naming an option outside its range.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, relu, script, serve, zeros } from "@spindle/spindle";
 * using x = zeros([1, 4]);
 * using model = Module.fromScript(script((input) => relu(input)), [x], { inputNames: ["x"] });
 * const server = await serve({ relu: model }, { port: 0 });
 * const response = await fetch(`http://127.0.0.1:${server.port}/v2/models/relu/infer`, {
 *   method: "POST",
 *   body: JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [-1, 2, -3, 4] }] }),
 * });
 * const { outputs } = await response.json();
 * assert.deepEqual(outputs[0].data, [0, 2, 0, 4]);
 * await server.shutdown();
 * ```
 */
export async function serve(models: Record<string, Module>, options: ServeOptions = {}): Promise<InferenceServer> {
  if (models === null || typeof models !== "object") throw new TypeError("serve: models must be an object of modules");
  const served = Object.entries(models).map(([name, module]) => {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
      throw new TypeError(`serve: model name '${name}' must be letters, digits, '_', '.' or '-'`);
    }
    if (module === null || typeof module !== "object" || typeof module.forwardAll !== "function") {
      throw new TypeError(`serve: model '${name}' is not a Module`);
    }
    return servedModule(name, "api", module);
  });
  const checked = (name: keyof ServeOptions, fallback: number, low: number, high: number): number => {
    const value = options[name] ?? fallback;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < low || value > high) {
      throw new RangeError(`serve: ${name} must be an integer from ${low} to ${high}, got ${value}`);
    }
    return value;
  };
  const limits = {
    port: checked("port", 8000, 0, 65535),
    concurrency: checked("concurrency", defaultConcurrency(), 1, 32),
    queue: checked("queue", 64, 0, 1_000_000),
    timeoutMs: checked("timeoutMs", 30_000, 1, 2 ** 31 - 1),
    maxBody: checked("maxBody", 64 * 2 ** 20, 1, Number.MAX_SAFE_INTEGER),
    maxBatch: checked("maxBatch", 1, 1, 4096),
    batchDelayUs: checked("batchDelayUs", 0, 0, 10_000_000),
    inlineMaxUs: checked("inlineMaxUs", 0, 0, 10_000_000),
  };
  // Each slot runs one forward at once: let the inference pool run that many together.
  if (getNumInferenceThreads() < limits.concurrency) setNumInferenceThreads(limits.concurrency);
  const server = await startServer({
    models: served,
    ...limits,
    hostname: options.hostname ?? "127.0.0.1",
    intraOpThreads: getNumThreads(),
    interopThreads: getNumInteropThreads(),
    version: parallelInfoJson().version,
  });
  return { port: server.port, shutdown: () => server.shutdown(), finished: server.finished };
}

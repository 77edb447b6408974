/**
 * The server's metrics in the Prometheus text exposition format: request counters by model
 * and status, latency histograms (queue and compute apart), queue depth, batch sizes and the
 * thread settings.
 *
 * @module
 */

import { liveTensorCount } from "../tensor.ts";

/** Upper bounds of the latency buckets, in seconds (100 µs … 10 s). */
const LATENCY_BUCKETS = [
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];
/** Upper bounds of the batch-size buckets, in requests per forward. */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128];

/** A Prometheus histogram: cumulative bucket counts are derived when rendered. */
class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length + 1).fill(0);
  }
  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }
  render(name: string, labels: string, out: string[]): void {
    let cumulative = 0;
    const prefix = labels === "" ? "" : `${labels},`;
    this.bounds.forEach((bound, i) => {
      cumulative += this.counts[i];
      out.push(`${name}_bucket{${prefix}le="${bound}"} ${cumulative}`);
    });
    out.push(`${name}_bucket{${prefix}le="+Inf"} ${this.count}`);
    const suffix = labels === "" ? "" : `{${labels}}`;
    out.push(`${name}_sum${suffix} ${this.sum}`, `${name}_count${suffix} ${this.count}`);
  }
}

function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Thread settings reported as gauges. */
export interface ThreadSettings {
  intraOpThreads: number;
  interopThreads: number;
  concurrency: number;
  queue: number;
  maxBatch: number;
}

/** Counters, gauges and histograms of one server. */
export class Metrics {
  readonly #requests = new Map<string, number>();
  readonly #queue = new Map<string, Histogram>();
  readonly #total = new Map<string, Histogram>();
  readonly #compute = new Map<string, Histogram>();
  readonly #batch = new Map<string, Histogram>();
  readonly #inline = new Map<string, number>();
  readonly #settings: ThreadSettings;
  /** Requests waiting for an inference slot. */
  queueDepth = 0;
  /** Forward passes running now. */
  running = 0;
  /** Infer requests admitted and not yet answered. */
  inflight = 0;

  /** @param settings The thread settings to report. */
  constructor(settings: ThreadSettings) {
    this.#settings = settings;
  }

  /** Counts a finished infer request of `model` answered with `status`. */
  request(model: string, status: number): void {
    const key = `${model}\n${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /** Records the server-side time of an answered request of `model`, from arrival to response. */
  answered(model: string, seconds: number): void {
    this.#histogram(this.#total, model, LATENCY_BUCKETS).observe(seconds);
  }

  /** Records the time a request of `model` waited for a slot. */
  queued(model: string, seconds: number): void {
    this.#histogram(this.#queue, model, LATENCY_BUCKETS).observe(seconds);
  }

  /** Records one forward pass of `model` over `requests` stacked requests. */
  computed(model: string, seconds: number, requests: number): void {
    this.#histogram(this.#compute, model, LATENCY_BUCKETS).observe(seconds);
    this.#histogram(this.#batch, model, BATCH_BUCKETS).observe(requests);
  }

  /** Counts a forward pass of `model` run on the JavaScript thread (see Scheduler). */
  ranInline(model: string): void {
    this.#inline.set(model, (this.#inline.get(model) ?? 0) + 1);
  }

  /** Forward passes of `model` run on the JavaScript thread (for tests). */
  inlineCount(model: string): number {
    return this.#inline.get(model) ?? 0;
  }

  /** How many requests of `model` were answered with `status` (for tests). */
  count(model: string, status: number): number {
    return this.#requests.get(`${model}\n${status}`) ?? 0;
  }

  #histogram(map: Map<string, Histogram>, model: string, bounds: readonly number[]): Histogram {
    let histogram = map.get(model);
    if (histogram === undefined) map.set(model, histogram = new Histogram(bounds));
    return histogram;
  }

  /** The Prometheus text exposition of every metric. */
  render(): string {
    const out: string[] = [];
    out.push("# HELP spindle_requests_total Infer requests answered, by model and HTTP status.");
    out.push("# TYPE spindle_requests_total counter");
    for (const [key, value] of this.#requests) {
      const [model, status] = key.split("\n");
      out.push(`spindle_requests_total{model="${label(model)}",status="${status}"} ${value}`);
    }
    out.push(
      "# HELP spindle_inline_forwards_total Forward passes run on the JavaScript thread (one-slot server, " +
        "request alone, short forward; see --inline-max-us).",
      "# TYPE spindle_inline_forwards_total counter",
    );
    for (const [model, value] of this.#inline) {
      out.push(`spindle_inline_forwards_total{model="${label(model)}"} ${value}`);
    }
    const histograms: [string, string, Map<string, Histogram>][] = [
      ["spindle_request_seconds", "Server-side time of successful infer requests, arrival to response.", this.#total],
      ["spindle_queue_seconds", "Time requests waited for an inference slot.", this.#queue],
      ["spindle_compute_seconds", "Time of each forward pass (one per batch).", this.#compute],
      ["spindle_batch_size", "Requests stacked into each forward pass.", this.#batch],
    ];
    for (const [name, help, map] of histograms) {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
      for (const [model, histogram] of map) histogram.render(name, `model="${label(model)}"`, out);
    }
    const gauges: [string, string, number][] = [
      ["spindle_inflight_requests", "Infer requests admitted and not yet answered.", this.inflight],
      ["spindle_queue_depth", "Requests waiting for an inference slot.", this.queueDepth],
      ["spindle_inflight_forwards", "Forward passes running now.", this.running],
      ["spindle_intra_op_threads", "Intra-op threads per forward pass.", this.#settings.intraOpThreads],
      ["spindle_interop_threads", "Threads of the inter-op pool (fork/wait).", this.#settings.interopThreads],
      ["spindle_inference_slots", "Forward passes allowed at once (--concurrency).", this.#settings.concurrency],
      ["spindle_queue_limit", "Requests allowed to wait (--queue).", this.#settings.queue],
      ["spindle_max_batch", "Most requests stacked into one forward (--max-batch).", this.#settings.maxBatch],
    ];
    const memory = Deno.memoryUsage();
    gauges.push(
      ["spindle_process_resident_memory_bytes", "Resident set size of the server process.", memory.rss],
      ["spindle_js_heap_used_bytes", "V8 heap in use.", memory.heapUsed],
      ["spindle_js_heap_total_bytes", "V8 heap reserved.", memory.heapTotal],
      ["spindle_js_external_bytes", "Memory outside the V8 heap that V8 tracks (buffers).", memory.external],
      ["spindle_live_tensors", "Native tensors alive (requests in flight hold some).", liveTensorCount()],
    );
    for (const [name, help, value] of gauges) {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
    }
    return out.join("\n") + "\n";
  }
}

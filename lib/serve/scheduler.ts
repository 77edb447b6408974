/**
 * Admission, the bounded queue, the inference slots and the dynamic batcher.
 *
 * A request is admitted when it arrives (before its body is read) if fewer than
 * `concurrency + queue` requests are in the server; otherwise it gets 503 at once, so memory
 * stays bounded under any load. Admitted requests wait in one FIFO queue for one of the
 * `concurrency` inference slots; each slot runs one forward pass off the JavaScript thread.
 * For a model with a batch dimension and `maxBatch > 1`, the slot that takes a request also
 * takes the queued requests of the same model and the same per-row shapes, up to `maxBatch`
 * rows, waiting at most `batchDelayUs` after the first one arrived for more to come (Triton's
 * dynamic batcher), stacks them into one forward and splits the outputs back.
 *
 * @module
 */
import { type Deadline, Deadlines } from "./deadlines.ts";
import type { Metrics } from "./metrics.ts";
import {
  type InputValues,
  type OutputTensor,
  runError,
  type RunOptions,
  type ServedModel,
  toValues,
  type Values,
  valuesOutput,
} from "./model.ts";
import { HttpError } from "./protocol.ts";

/** An inline forward is timed: its time decides whether the next one runs inline. */
const RUN_INLINE: RunOptions = { inline: true, timed: true };

/**
 * An inline forward needs this many times its recent run time left before its request's
 * deadline (a forward's time varies with the machine's load).
 */
const INLINE_DEADLINE_MARGIN = 4;

/** The 504 of a request whose deadline passed. */
function deadlinePassed(job: Job): HttpError {
  return new HttpError(
    504,
    `model '${job.model.name}': the request passed its ${job.deadlineMs} ms deadline (--timeout-ms)`,
  );
}

/** Settings of a scheduler. */
export interface SchedulerOptions {
  /** Forward passes at once. */
  concurrency: number;
  /** Requests that may wait for a slot beyond those running. */
  queue: number;
  /** Most rows stacked into one forward (1: no batching). */
  maxBatch: number;
  /** How long the first request of a batch may wait for others, in microseconds. */
  batchDelayUs: number;
  /**
   * A forward that took less than this lately (µs) runs on the JavaScript thread when it is
   * the only request in a one-slot server; 0 (the default): every forward on the pool. The
   * event loop is held that long at most: a health check or another request's head waits.
   */
  inlineMaxUs?: number;
}

interface Job {
  model: ServedModel;
  inputs: InputValues[];
  /** Rows along the batch dimension, or 0 when the job cannot be stacked. */
  rows: number;
  /** Model and per-row shapes: jobs with equal keys can be stacked. */
  key: string;
  enqueuedAt: number;
  settled: boolean;
  deadline: Deadline | undefined;
  /** When the deadline passes (performance.now() time, ms): an inline forward checks it itself. */
  dueAt: number;
  /** The deadline as configured, for the 504's message. */
  deadlineMs: number;
  /** Turns the outputs into the job's result (the encoded response) while they are alive. */
  finish(outputs: readonly OutputTensor[]): unknown;
  resolve(result: unknown): void;
  reject(error: HttpError): void;
  /**
   * Called once no forward reads the job's inputs any more: it ran, or it left the queue
   * without running. Its settlement can come earlier (a 504 while its forward runs), and
   * inputs read in place (InputValues.borrow) must stay unchanged until this.
   */
  done(): void;
}

/**
 * The job's finish, skipped once the job is answered (a 504 while its forward ran): the
 * response it would encode is not sent, and the connection's buffers are another request's.
 */
function unlessSettled(job: Job): (outputs: readonly OutputTensor[]) => unknown {
  return (outputs) => job.settled ? undefined : job.finish(outputs);
}

/** Admission, queue, slots and batching for one server. */
export class Scheduler {
  readonly #options: SchedulerOptions;
  readonly #metrics: Metrics;
  readonly #deadlines: Deadlines;
  readonly #queue: Job[] = [];
  #admitted = 0;
  #running = 0;
  /** How a forward on the pool runs: timed only when the inline decision reads the times. */
  readonly #runOnPool: RunOptions;

  /**
   * @param options Slots, queue bound and batching.
   * @param metrics Where queue depth, latencies and batch sizes go.
   * @param deadlines Where the requests' deadlines are kept.
   */
  constructor(options: SchedulerOptions, metrics: Metrics, deadlines = new Deadlines()) {
    this.#options = options;
    this.#metrics = metrics;
    this.#deadlines = deadlines;
    this.#runOnPool = { inline: false, timed: (options.inlineMaxUs ?? 0) > 0 };
  }

  /** Admits a request if the server has room; pair each true with {@link release}. */
  tryAdmit(): boolean {
    if (this.#admitted >= this.#options.concurrency + this.#options.queue) return false;
    this.#admitted++;
    this.#metrics.inflight = this.#admitted;
    return true;
  }

  /** Ends an admitted request. */
  release(): void {
    this.#admitted--;
    this.#metrics.inflight = this.#admitted;
  }

  /** Requests admitted and not yet answered (reading their body, queued or running). */
  get admitted(): number {
    return this.#admitted;
  }

  /**
   * Runs the inputs through the model when a slot is free, stacked with others when it can.
   *
   * @param model The model.
   * @param inputs Its inputs, in its order.
   * @param timeoutMs Milliseconds left before the request's deadline.
   * @param deadlineMs The deadline as configured, for the message.
   * @param finish Takes the outputs, in the model's order, while they are alive, and makes
   *   the result (the server encodes the response in it, reading binary outputs straight
   *   into the body). Not called once the request is answered (a 504 while its forward ran).
   * @param hold Given, at once, a promise that resolves once no forward reads `inputs` any
   *   more, which may be after this request's answer (a 504 while its forward runs): the
   *   caller keeps inputs read in place (InputValues.borrow) unchanged until then.
   * @returns What `finish` returned.
   * @throws {HttpError} 504 when the deadline passes first (the slot is reclaimed when the
   *   forward it is in, if any, completes), 400/500 when the model fails.
   */
  infer<R>(
    model: ServedModel,
    inputs: InputValues[],
    timeoutMs: number,
    deadlineMs: number,
    finish: (outputs: readonly OutputTensor[]) => R,
    hold?: (done: Promise<void>) => void,
  ): Promise<R> {
    let done = () => {};
    if (hold !== undefined) hold(new Promise<void>((resolve) => done = resolve));
    return new Promise<R>((resolve, reject) => {
      const stackable = model.batchable && this.#options.maxBatch > 1 &&
        inputs.every((v) => v.shape.length > 0 && v.shape[0] === inputs[0].shape[0]);
      const rows = stackable ? inputs[0].shape[0] : 0;
      const key = stackable ? `${model.name}\n${inputs.map((v) => v.shape.slice(1).join("x")).join("\n")}` : "";
      const job: Job = {
        model,
        inputs,
        rows,
        key,
        enqueuedAt: performance.now(),
        settled: false,
        deadline: undefined,
        dueAt: performance.now() + timeoutMs,
        deadlineMs,
        finish,
        resolve: resolve as (result: unknown) => void,
        reject,
        done,
      };
      job.deadline = this.#deadlines.add(timeoutMs, () => {
        const index = this.#queue.indexOf(job);
        if (index >= 0) {
          this.#queue.splice(index, 1);
          this.#metrics.queueDepth = this.#queue.length;
          job.done(); // it never runs
        }
        this.#settle(job, deadlinePassed(job));
      });
      this.#queue.push(job);
      this.#metrics.queueDepth = this.#queue.length;
      this.#pump();
    });
  }

  #settle(job: Job, result: unknown): void {
    if (job.settled) return;
    job.settled = true;
    if (job.deadline !== undefined) this.#deadlines.cancel(job.deadline);
    if (result instanceof HttpError) job.reject(result);
    else job.resolve(result);
  }

  #pump(): void {
    while (this.#running < this.#options.concurrency && this.#queue.length > 0) {
      const head = this.#queue.shift()!;
      this.#running++;
      this.#metrics.running = this.#running;
      const waited = (performance.now() - head.enqueuedAt) * 1000;
      const delayUs = this.#options.batchDelayUs - waited;
      if (head.rows > 0 && head.rows < this.#options.maxBatch && delayUs > 0) {
        // Timers have millisecond resolution: shorter delays round up to the next tick.
        setTimeout(() => this.#run(head), delayUs / 1000);
      } else {
        this.#run(head);
      }
      this.#metrics.queueDepth = this.#queue.length;
    }
  }

  /** Takes `head` and the queued jobs it can be stacked with, runs them, frees the slot. */
  #run(head: Job): void {
    const batch = [head];
    if (head.rows > 0) {
      let rows = head.rows;
      for (let i = 0; i < this.#queue.length && rows < this.#options.maxBatch;) {
        const job = this.#queue[i];
        if (job.key === head.key && rows + job.rows <= this.#options.maxBatch) {
          batch.push(job);
          rows += job.rows;
          this.#queue.splice(i, 1);
        } else {
          i++;
        }
      }
      this.#metrics.queueDepth = this.#queue.length;
    }
    const live = batch.filter((job) => !job.settled);
    for (const job of batch) if (job.settled) job.done(); // answered before it ran: it never runs
    this.#execute(head.model, live).finally(() => {
      this.#running--;
      this.#metrics.running = this.#running;
      this.#pump();
    });
  }

  async #execute(model: ServedModel, jobs: Job[]): Promise<void> {
    if (jobs.length === 0) return;
    try {
      await this.#executeJobs(model, jobs);
    } finally {
      // No forward reads their inputs any more (a stacked run reads copies of them).
      for (const job of jobs) job.done();
    }
  }

  async #executeJobs(model: ServedModel, jobs: Job[]): Promise<void> {
    const started = performance.now();
    for (const job of jobs) this.#metrics.queued(model.name, (started - job.enqueuedAt) / 1000);
    try {
      if (jobs.length === 1) {
        const inline = this.#inline(model, jobs[0]);
        if (inline) this.#metrics.ranInline(model.name);
        const result = await model.run(jobs[0].inputs, unlessSettled(jobs[0]), inline ? RUN_INLINE : this.#runOnPool);
        this.#metrics.computed(model.name, (performance.now() - started) / 1000, 1);
        // An inline forward held the event loop, so the deadline's timer could not fire
        // during it: a forward that ended past the deadline answers 504 as the timer would have.
        this.#settle(jobs[0], inline && performance.now() > jobs[0].dueAt ? deadlinePassed(jobs[0]) : result);
      } else {
        await this.#stacked(model, jobs);
        this.#metrics.computed(model.name, (performance.now() - started) / 1000, jobs.length);
      }
    } catch (error) {
      this.#metrics.computed(model.name, (performance.now() - started) / 1000, jobs.length);
      if (jobs.length === 1) {
        this.#settle(jobs[0], runError(model.name, error));
        return;
      }
      // One bad request must not fail the others stacked with it: run each alone.
      for (const job of jobs) {
        if (job.settled) continue;
        try {
          this.#settle(job, await model.run(job.inputs, unlessSettled(job)));
        } catch (alone) {
          this.#settle(job, runError(model.name, alone));
        }
      }
    }
  }

  /**
   * Whether `job` runs on the JavaScript thread: it is the only request in a server of one
   * slot, so no other forward could run beside it and nothing waits to be read; and its
   * model's forwards of this size took less than inlineMaxUs lately. An idle server's pool
   * threads are asleep: the handoff to one and the completion back (three thread wake-ups)
   * cost 100-300 µs per request here, more than the whole HTTP exchange (measured in
   * bench/serve_bench.ts' overhead phase). A longer forward, or one of several requests, goes
   * to the pool as before.
   */
  #inline(model: ServedModel, job: Job): boolean {
    if (this.#options.concurrency !== 1 || this.#admitted !== 1) return false;
    const micros = model.recentMicros(job.inputs);
    if (micros === null || micros >= (this.#options.inlineMaxUs ?? 0)) return false;
    // A request near its deadline goes to the pool, where the deadline's timer can answer
    // 504 on time: inline, nothing could until the forward ends.
    return micros / 1000 * INLINE_DEADLINE_MARGIN < job.dueAt - performance.now();
  }

  /** Runs the jobs as one forward, stacked along dim 0, and settles each with its rows. */
  async #stacked(model: ServedModel, jobs: Job[]): Promise<void> {
    const rows = jobs.reduce((sum, job) => sum + job.rows, 0);
    // Stacked as bytes, whatever each request sent (typed values or raw binary data).
    const inputs = jobs[0].inputs.map((first, i): InputValues => {
      const parts = jobs.map((job) => job.inputs[i].data);
      const data = new Uint8Array(parts.reduce((sum, part) => sum + part.byteLength, 0));
      let offset = 0;
      for (const part of parts) {
        data.set(new Uint8Array(part.buffer, part.byteOffset, part.byteLength), offset);
        offset += part.byteLength;
      }
      return { dtype: first.dtype, shape: [rows, ...first.shape.slice(1)], data };
    });
    const outputs = await model.run(inputs, toValues);
    for (const [i, output] of outputs.entries()) {
      if (output.shape[0] !== rows) {
        throw new HttpError(
          500,
          `model '${model.name}': output ${model.outputs[i]?.name} has ${output.shape[0]} rows for a batch of ` +
            `${rows}; serve it with --max-batch 1`,
        );
      }
    }
    let row = 0;
    for (const job of jobs) {
      const split = outputs.map((output): Values => {
        const perRow = output.data.length / rows;
        const data = output.data.slice(row * perRow, (row + job.rows) * perRow) as Values["data"];
        return { dtype: output.dtype, shape: [job.rows, ...output.shape.slice(1)], data };
      });
      row += job.rows;
      if (!job.settled) this.#settle(job, job.finish(split.map(valuesOutput)));
    }
  }
}

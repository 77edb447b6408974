/**
 * The runtime program layer: a validated model image loaded into libspindle, run
 * synchronously on the calling thread or asynchronously on one of Deno's blocking-pool
 * threads (an inference thread). Every model source ends here: traced scripts
 * (lib/script/), imported ONNX models (lib/onnx/), built-ins (lib/models/) and saved files.
 *
 * @module
 */
import { check, native } from "../../ffi/load.ts";
import { SpindleError } from "../../ffi/status.ts";
import { LIMITS } from "../../ffi/abi.ts";
import { Tensor } from "../tensor.ts";
import { decodeDescription, type Description } from "./format.ts";
import { pendingCalls, submitCall } from "../inference.ts";

const finalizer = new FinalizationRegistry<bigint>((handle) => {
  native().spindle_program_dispose(handle);
});

const MESSAGE_CAPACITY = LIMITS.messageCapacity;
/**
 * Asynchronous runs expected to take less than this many µs run on the calling thread while
 * no other asynchronous run of this isolate is pending: the hop to an inference thread and
 * back (a futex wake each way, and the event loop's wake-up) measured 10–30 µs on an idle
 * machine and several times that on a busy one, so offloading such a run would cost about as
 * much as it frees; and 50 µs of a blocked event loop is less than parsing a request takes.
 * With runs pending, calls go to the pool, so concurrent requests still use every core.
 */
export const INLINE_MAX_MICROS = 50;
/** How many recent run times the inline decision looks at. */
const RECENT_RUNS = 4;
/** u64 words per profile record (zig/src/interpreter/execute.zig `Profile.Record`). */
export const PROFILE_RECORD_WORDS = 3 + 3 * 9;
/** Where spindle_call_pin writes the token (read at once, on the same thread). */
const callBuffer = new BigUint64Array(1);
const decoder = new TextDecoder();
/**
 * The buffers of synchronous runs, reused: a run fills them and its results are read before
 * it returns, and nothing else runs on this thread meanwhile. Fresh typed arrays cost an
 * ArrayBuffer each (a calloc for the 512-byte message), a visible share of a 15 µs run.
 * Programs with more inputs or outputs than these hold get fresh arrays.
 */
const SYNC_SLOTS = 16;
const syncHandles = new BigUint64Array(SYNC_SLOTS);
const syncOutputs = new BigUint64Array(SYNC_SLOTS);
const syncMessage = new Uint8Array(MESSAGE_CAPACITY);

/**
 * The default cap on the tensor bytes a load, an ONNX import or one run of a model may hold
 * at once (4 GiB): loading checks a model by running it on inputs of its declared shapes,
 * ONNX import runs its ops on stand-in inputs, and a request's sizes decide a run's
 * intermediates, so a small hostile file or an oversized request could otherwise ask for any
 * amount of memory.
 */
export const DEFAULT_MEMORY_BUDGET = 4 * 2 ** 30;

/**
 * The arithmetic a model's convolutions and matrix products run in: "f32" (the default), or
 * "bf16": weights stored as bf16 pairs at load, products in bf16 with f32 accumulation (AMX
 * tiles or AVX512_BF16), every other op in f32. About 3 significant decimal digits per
 * product: measure a model's accuracy before serving it in bf16 (tools/bf16_accuracy.ts).
 */
export type Precision = "f32" | "bf16";

/** Checks a `precision` option, naming `where` it came from. */
export function checkPrecision(precision: unknown, where: string): Precision {
  if (precision === "f32" || precision === "bf16") return precision;
  const shown = typeof precision === "string" ? `"${precision}"` : String(precision);
  throw new TypeError(`${where}: option precision must be "f32" or "bf16", got ${shown}`);
}

let warnedNoBf16 = false;

/**
 * The native code of `precision`: bf16 only where this CPU (and kernel level) has a bf16
 * kernel; elsewhere f32, with one console warning per process.
 */
function precisionCode(precision: Precision): number {
  if (precision === "f32") return 0;
  if (bf16Supported()) return 1;
  if (!warnedNoBf16) {
    warnedNoBf16 = true;
    // The native precisions line says why: no bf16 instructions at this CPU or forced
    // kernel level (SPINDLE_CPU_LEVEL), or a bf16 kernel slower than f32 here.
    const reason = precisionsLine.replace(/^f32 \(bf16 falls back to f32: (.*)\)$/, "$1");
    console.warn(`spindle: precision "bf16" loads models in f32 here: ${reason}`);
  }
  return 0;
}

/**
 * Whether models can load with precision "bf16" here (parallel_info's precisions line).
 *
 * @returns True where the CPU and the chosen kernel level have a bf16 kernel that beats f32
 * (AMX, or AVX512_BF16 with more products per cycle than f32 FMA), or where
 * SPINDLE_BF16_KERNEL=avx512 forces the AVX512_BF16 one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bf16Supported, parallelInfoJson } from "@spindle/spindle";
 * assert.equal(bf16Supported(), parallelInfoJson().precisions.includes("bf16 ("));
 * ```
 */
export function bf16Supported(): boolean {
  // The kernel level and CPUID do not change while the process runs.
  if (bf16Answer !== undefined) return bf16Answer;
  const symbols = native();
  const buffer = new Uint8Array(4096);
  const length = Number(symbols.spindle_info_json(buffer, BigInt(buffer.length)));
  const info = JSON.parse(decoder.decode(buffer.subarray(0, Math.min(length, buffer.length)))) as {
    precisions?: string;
  };
  precisionsLine = info.precisions ?? "";
  bf16Answer = precisionsLine.includes("bf16 (");
  return bf16Answer;
}

let bf16Answer: boolean | undefined;
let precisionsLine = "";

/** `bytes` as the native side takes a budget, after checking it is a positive whole number. */
function budgetBytes(bytes: number): bigint {
  if (typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new RangeError(`memoryBudget must be a positive whole number of bytes, got ${bytes}`);
  }
  return BigInt(bytes);
}

/**
 * Runs `fn` with the calling thread's native tensor allocations capped at `bytes` (see
 * zig/src/tensor.zig `Budget`); a tensor that would pass the cap is a `too_large` error.
 */
export function withMemoryBudget<T>(bytes: number, fn: () => T): T {
  native().spindle_set_allocation_budget(budgetBytes(bytes));
  try {
    return fn();
  } finally {
    native().spindle_set_allocation_budget(0n);
  }
}

/** A loaded program (graphs + weights) owned by the native library. */
export class Program {
  /** The model image it was loaded from (what `save` writes). */
  readonly image: Uint8Array;
  /** The graph description. */
  readonly description: Description;
  #handle: bigint | null;

  private constructor(handle: bigint, image: Uint8Array) {
    this.#handle = handle;
    this.image = image;
    this.description = decodeDescription(image);
    finalizer.register(this, handle, this);
  }

  /**
   * Validates and loads a model image natively.
   *
   * @param image The file bytes.
   * @param memoryBudget The most tensor bytes the load (its weights and its check on inputs
   *   of the declared shapes) and then each run may hold at once.
   * @param precision "bf16" packs the weights of convolutions and matrix products for the bf16
   *   kernel (counted against the budget); without one it loads f32 and warns once.
   * @returns The program.
   * @throws {SpindleError} code `malformed_model` naming the defect, `too_large` past the budget.
   */
  static load(image: Uint8Array, memoryBudget: number = DEFAULT_MEMORY_BUDGET, precision: Precision = "f32"): Program {
    const out = new BigUint64Array(1);
    const code = precisionCode(checkPrecision(precision, "load"));
    check(native().spindle_program_load(image, BigInt(image.byteLength), budgetBytes(memoryBudget), code, out));
    return new Program(out[0], image);
  }

  #live(): bigint {
    if (this.#handle === null) throw new SpindleError("invalid_handle", "program used after dispose()");
    return this.#handle;
  }

  /**
   * Bytes of the per-run arena that graph `graph`'s planned op outputs share (0 when the
   * graph is not planned, e.g. because an input dimension is open).
   *
   * @param graph The graph index (0 is the entry).
   * @returns The arena size in bytes.
   */
  arenaBytes(graph = 0): number {
    const out = new BigUint64Array(5);
    check(native().spindle_program_info(this.#live(), graph, out));
    return Number(out[4]);
  }

  /** Number of outputs of graph 0. */
  get outputCount(): number {
    return this.description.graphs[0].outputs.length;
  }

  /** The input handles, each input checked to be a Tensor. */
  #handles(inputs: readonly Tensor[]): BigUint64Array {
    inputs.forEach((t, i) => {
      if (!(t instanceof Tensor)) throw new TypeError(`forward: input ${i} must be a Tensor`);
    });
    return BigUint64Array.from(inputs, (t) => t.handle);
  }

  /** As #handles, in the reused buffer of synchronous runs. */
  #syncHandles(inputs: readonly Tensor[]): BigUint64Array {
    for (let i = 0; i < inputs.length; i++) {
      const t = inputs[i];
      if (!(t instanceof Tensor)) throw new TypeError(`forward: input ${i} must be a Tensor`);
      syncHandles[i] = t.handle;
    }
    return syncHandles.subarray(0, inputs.length);
  }

  #collect(status: number, outputs: BigUint64Array, message: Uint8Array, reportExternal: boolean): Tensor[] {
    if (status !== 0) {
      const end = message.indexOf(0);
      throw new SpindleError(status, decoder.decode(message.subarray(0, end < 0 ? message.length : end)));
    }
    return Array.from(outputs, (handle) => new Tensor(handle, reportExternal));
  }

  /**
   * Runs graph 0 on the calling thread.
   *
   * @param inputs The graph's inputs.
   * @param reportExternal Whether large outputs are reported to V8 as external memory (see
   *   lib/tensor.ts); false for a caller that disposes them as soon as it has read them.
   * @returns One tensor per graph output.
   * @throws {SpindleError} code `too_large` when the run would hold more than the memory
   *   budget given to {@link Program.load}, naming the tensor and its bytes.
   */
  runSync(inputs: readonly Tensor[], reportExternal = true): Tensor[] {
    const handles = inputs.length <= SYNC_SLOTS ? this.#syncHandles(inputs) : this.#handles(inputs);
    const count = this.outputCount;
    const outputs = count <= SYNC_SLOTS ? syncOutputs.subarray(0, count) : new BigUint64Array(count);
    const message = syncMessage;
    const status = native().spindle_program_run(
      this.#live(),
      0,
      handles,
      BigInt(handles.length),
      outputs,
      BigInt(outputs.length),
      message,
      BigInt(MESSAGE_CAPACITY),
    );
    return this.#collect(status, outputs, message, reportExternal);
  }

  /**
   * Runs graph 0 on the calling thread as {@link Program.runSync} does, timing every op node
   * (forked graphs run inline). Returns the outputs and the raw records, PROFILE_RECORD_WORDS
   * u64s each (graph, node, nanoseconds, then the output's and the first two inputs' shapes
   * as rank + 8 dims).
   */
  profileSync(inputs: readonly Tensor[]): { outputs: Tensor[]; records: BigUint64Array; count: number } {
    const handles = this.#handles(inputs);
    const nodes = this.description.graphs.reduce((total, graph) => total + graph.nodes.length, 0);
    let capacity = Math.max(16, nodes);
    for (;;) {
      const records = new BigUint64Array(capacity * PROFILE_RECORD_WORDS);
      const count = new BigUint64Array(1);
      const outputs = new BigUint64Array(this.outputCount);
      const message = new Uint8Array(MESSAGE_CAPACITY);
      const status = native().spindle_program_profile(
        this.#live(),
        0,
        handles,
        BigInt(handles.length),
        outputs,
        BigInt(outputs.length),
        records,
        BigInt(capacity),
        count,
        message,
        BigInt(MESSAGE_CAPACITY),
      );
      const tensors = this.#collect(status, outputs, message, true);
      const recorded = Number(count[0]);
      if (recorded <= capacity) return { outputs: tensors, records, count: recorded };
      // A graph forked many times ran more op nodes than the graphs hold: run again.
      tensors.forEach((t) => t.dispose());
      capacity = recorded;
    }
  }

  /**
   * The last RECENT_RUNS run times of graph 0 in µs, oldest first. The inline decision takes
   * the second smallest (the smallest while only one is known): one cold first run or one
   * preempted run does not keep a cheap program off the calling thread, and a program whose
   * runs grow goes back to the pool after three slow runs out of four.
   */
  #recentMicros: number[] = [];
  /** Asynchronous runs that ran inline (on the calling thread): for tests and diagnostics. */
  inlineRuns = 0;

  /**
   * Runs graph 0 off the JavaScript thread, on the inference pool (lib/inference.ts). Before
   * it returns, the program and the inputs are pinned natively (one reference each, held until
   * the run ends): disposing them while the run is pending, as `using` does at the end of a
   * scope, is safe and does not change the result.
   *
   * A program whose recent runs took less than INLINE_MAX_MICROS runs on the calling thread
   * instead, while no other asynchronous run is pending: the hop to a pool thread and back
   * costs about that much. (onnxruntime-node's `run` always runs on the calling thread,
   * whatever the model.) Each run updates the estimate, so a program whose runs grow goes
   * back to the pool.
   *
   * @param inputs The graph's inputs.
   * @param reportExternal As {@link Program.runSync}'s.
   * @returns One tensor per graph output.
   * @throws {SpindleError} code `too_large` past the memory budget, as {@link Program.runSync}.
   */
  async run(inputs: readonly Tensor[], reportExternal = true): Promise<Tensor[]> {
    // Everything up to the first await runs on the calling thread, before run() returns.
    const estimate = this.#estimateMicros();
    if (estimate !== null && estimate < INLINE_MAX_MICROS && pendingCalls() === 0) {
      const started = performance.now();
      const results = this.runSync(inputs, reportExternal);
      this.#observe((performance.now() - started) * 1000);
      this.inlineRuns++;
      return results;
    }
    const handles = this.#handles(inputs);
    check(native().spindle_call_pin(this.#live(), 0, handles, BigInt(handles.length), callBuffer));
    const call = callBuffer[0];
    // The buffers the run writes stay referenced here until it settles.
    const outputs = new BigUint64Array(this.outputCount);
    const message = new Uint8Array(MESSAGE_CAPACITY);
    // Submitted to the inference pool (lib/inference.ts), which takes the call whatever
    // happens: at most getNumInferenceThreads() runs at once, the rest wait their turn.
    const { status, runMicros } = await submitCall(call, outputs, message);
    if (status === 0) this.#observe(runMicros);
    return this.#collect(status, outputs, message, reportExternal);
  }

  /** Records one run's time, keeping the last RECENT_RUNS. */
  #observe(micros: number): void {
    if (this.#recentMicros.length === RECENT_RUNS) this.#recentMicros.shift();
    this.#recentMicros.push(micros);
  }

  /** The run-time estimate of the inline decision (see #recentMicros); null before any run. */
  #estimateMicros(): number | null {
    const n = this.#recentMicros.length;
    if (n === 0) return null;
    if (n === 1) return this.#recentMicros[0];
    let smallest = Infinity;
    let second = Infinity;
    for (const micros of this.#recentMicros) {
      if (micros < smallest) [smallest, second] = [micros, smallest];
      else if (micros < second) second = micros;
    }
    return second;
  }

  /** Frees the native program (running calls keep their own reference). Idempotent. */
  dispose(): void {
    if (this.#handle === null) return;
    const handle = this.#handle;
    this.#handle = null;
    finalizer.unregister(this);
    check(native().spindle_program_dispose(handle));
  }
}

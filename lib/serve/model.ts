/**
 * A model as the server sees it: its inputs and outputs as protocol tensor specs, and a run
 * that takes and returns plain typed arrays (so the scheduler can stack and split them).
 *
 * @module
 */
import { SpindleError } from "../../ffi/status.ts";
import { forwardAllSyncUnreported, forwardAllUnreported, type Module, type ValueMetadata } from "../module.ts";
import { endBorrow, readTensorBytes, type Tensor, tensor, tensorBorrowingBytes, tensorFromBytes } from "../tensor.ts";
import { HttpError, type TensorData, type TensorSpec } from "./protocol.ts";

/** Output values of one run. */
export interface Values {
  dtype: TensorSpec["dtype"];
  shape: number[];
  data: TensorData;
}

/** Input values of one run: typed values, or raw little-endian bytes (binary tensor data). */
export interface InputValues {
  dtype: TensorSpec["dtype"];
  shape: number[];
  data: TensorData | Uint8Array;
  /**
   * Raw bytes the forward may read in place, with no copy into native memory, when they are
   * aligned for it (a request body's binary part): the caller keeps them unchanged until
   * the run's promise settles (the HTTP layer's holdBody), even past the request's answer.
   */
  borrow?: boolean;
}

/**
 * One output of a run as the response encoder takes it: its metadata, and its values read on
 * demand, either into a place the caller chose (a binary output goes straight into the
 * response body) or as a typed array (for JSON). Valid only while the run's `finish` runs.
 */
export interface OutputTensor {
  readonly dtype: TensorSpec["dtype"];
  readonly shape: readonly number[];
  /** Bytes of its values. */
  readonly byteLength: number;
  /** Copies its values, row-major little-endian, into `into` (exactly `byteLength` bytes). */
  read(into: Uint8Array): void;
  /** Its values as a new typed array. */
  values(): TensorData;
}

/** Output values of a run as {@link OutputTensor}s (for stacked runs, already split). */
export function valuesOutput(value: Values): OutputTensor {
  const { data } = value;
  return {
    dtype: value.dtype,
    shape: value.shape,
    byteLength: data.byteLength,
    read: (into) => into.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)),
    values: () => data,
  };
}

/** The plain values of a run's outputs. */
export function toValues(outputs: readonly OutputTensor[]): Values[] {
  return outputs.map((output) => ({ dtype: output.dtype, shape: [...output.shape], data: output.values() }));
}

/** How {@link ServedModel.run} runs a forward. */
export interface RunOptions {
  /** On the calling (JavaScript) thread instead of the inference pool. */
  readonly inline?: boolean;
  /**
   * Records its time for {@link ServedModel.recentMicros}: only the scheduler's inline
   * decision (`--inline-max-us`) reads it, so a server without that option skips the clock
   * reads and the bookkeeping per request.
   */
  readonly timed?: boolean;
}

/** A model the server serves. */
export interface ServedModel {
  /** The name clients use in URLs. */
  readonly name: string;
  /** Where it came from, for the startup log. */
  readonly source: string;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /**
   * Whether requests can be stacked along the first dimension: every input and output has a
   * first dimension of any size.
   */
  readonly batchable: boolean;
  /**
   * Runs one forward pass off the JavaScript thread and passes its outputs, in
   * {@link outputs} order, to `finish` (which encodes the response, or takes the values with
   * {@link toValues}) while they are alive; resolves to what `finish` returns. With
   * `options.inline` the forward runs on the calling (JavaScript) thread instead, before
   * run() returns; with `options.timed` its time is recorded for {@link recentMicros}.
   */
  run<R>(
    inputs: readonly InputValues[],
    finish: (outputs: readonly OutputTensor[]) => R,
    options?: RunOptions,
  ): Promise<R>;
  /**
   * How long a forward of inputs of this size took lately, in microseconds (the second
   * smallest of the last few timed runs, wall time on the JavaScript thread), or null before
   * one ran.
   * The scheduler runs a short forward `inline` (on the JavaScript thread) when nothing else
   * is in the server.
   */
  recentMicros(inputs: readonly InputValues[]): number | null;
  /** Frees the model. */
  dispose(): void;
}

const BYTES_PER_ELEMENT: Record<TensorSpec["dtype"], number> = { float32: 4, int64: 8, int32: 4 };
/** Run times kept per input size for {@link ServedModel.recentMicros}. */
const RECENT_RUNS = 4;
/** Input sizes whose run times are kept per model; past it the record starts over. */
const RECENT_SIZES = 64;

/** Bytes of a run's inputs: the key of its run times (a forward's cost follows its batch). */
function inputBytes(inputs: readonly InputValues[]): number {
  let bytes = 0;
  for (const input of inputs) bytes += input.data.byteLength;
  return bytes;
}

function specs(values: readonly ValueMetadata[]): TensorSpec[] {
  return values.map((v) => ({
    name: v.name,
    dtype: v.dtype,
    shape: v.shape.map((d) => (typeof d === "number" ? d : -1)),
  }));
}

/** SpindleError codes caused by what the request sent (answered 400, not 500). */
const INPUT_ERRORS = new Set([
  "invalid_argument",
  "shape_mismatch",
  "dtype_mismatch",
  "index_out_of_range",
  "too_large",
]);

/** Maps an error of a run to the HTTP error it is answered with. */
export function runError(model: string, error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof SpindleError && INPUT_ERRORS.has(error.code)) {
    return new HttpError(400, `model '${model}' rejected the inputs: ${error.message} (${error.code})`);
  }
  if (error instanceof RangeError || error instanceof TypeError) {
    return new HttpError(400, `model '${model}' rejected the inputs: ${error.message}`);
  }
  const code = error instanceof SpindleError ? ` (${error.code})` : "";
  return new HttpError(500, `model '${model}' failed: ${error instanceof Error ? error.message : error}${code}`);
}

/**
 * Disposes a run's outputs, then its inputs, ending the borrow of those read in place; every
 * one even when one fails (its bytes then stay referenced for good, see endBorrow).
 *
 * @returns The first failure, or null.
 */
function endRun(
  results: readonly Tensor[],
  tensors: readonly Tensor[],
  borrowed: readonly boolean[],
  values: readonly InputValues[],
): unknown {
  let failure: unknown = null;
  // Outputs first: one that aliases a borrowed input lets go of its bytes before the borrow
  // ends (else endBorrow copies them for it).
  const all = [...results, ...tensors];
  all.forEach((t, i) => {
    const input = i - results.length;
    try {
      if (input >= 0 && borrowed[input]) endBorrow(t, values[input].data as Uint8Array);
      else t.dispose();
    } catch (error) {
      failure ??= error;
    }
  });
  return failure;
}

/**
 * Wraps a module for serving.
 *
 * @param name The name clients use.
 * @param source Where the module came from.
 * @param module The module (disposed with the served model).
 * @param release Also run on dispose (e.g. to free a built-in model's weights).
 */
export function servedModule(name: string, source: string, module: Module, release?: () => void): ServedModel {
  const inputs = specs(module.inputMetadata);
  const outputs = specs(module.outputMetadata);
  const batchable = inputs.length > 0 && [...inputs, ...outputs].every((spec) => spec.shape[0] === -1);
  /** The last RECENT_RUNS run times (µs) by input bytes. */
  const recent = new Map<number, number[]>();
  const observe = (bytes: number, micros: number) => {
    let runs = recent.get(bytes);
    if (runs === undefined) {
      if (recent.size >= RECENT_SIZES) recent.clear();
      recent.set(bytes, runs = []);
    }
    if (runs.length === RECENT_RUNS) runs.shift();
    runs.push(micros);
  };
  return {
    name,
    source,
    inputs,
    outputs,
    batchable,
    recentMicros(values) {
      const runs = recent.get(inputBytes(values));
      if (runs === undefined || runs.length === 0) return null;
      // The second smallest (the smallest while one is known): one slow or preempted run
      // does not keep a short forward off the JavaScript thread, three of four do.
      let smallest = Infinity;
      let second = Infinity;
      for (const micros of runs) {
        if (micros < smallest) [smallest, second] = [micros, smallest];
        else if (micros < second) second = micros;
      }
      return runs.length === 1 ? smallest : second;
    },
    async run(values, finish, options = {}) {
      const tensors: Tensor[] = [];
      /** Which of `tensors` read their bytes in place (ended with endBorrow, not dispose). */
      const borrowed: boolean[] = [];
      let results: Tensor[] = [];
      let result;
      try {
        for (const { data, shape, dtype, borrow } of values) {
          // Aligned binary inputs are read in place (one 262 KB copy less for builtin:example);
          // the others are copied. Neither is reported to V8 as external memory: they are
          // disposed below, and a request's 100 KB+ input counted each time brings V8's
          // collections closer.
          const inPlace = borrow && data instanceof Uint8Array ? tensorBorrowingBytes(data, shape, dtype) : null;
          borrowed.push(inPlace !== null);
          tensors.push(
            inPlace ??
              (data instanceof Uint8Array
                ? tensorFromBytes(data, shape, dtype, false)
                : tensor(data, shape, { dtype })),
          );
        }
        const started = options.timed ? performance.now() : 0;
        // Outputs unreported to V8 too: they are disposed below, once finish has read them.
        results = options.inline
          ? forwardAllSyncUnreported(module, tensors)
          : await forwardAllUnreported(module, tensors);
        if (options.timed) observe(inputBytes(values), (performance.now() - started) * 1000);
        result = finish(results.map((t): OutputTensor => ({
          dtype: t.dtype,
          shape: t.shape,
          byteLength: t.numel * BYTES_PER_ELEMENT[t.dtype],
          read: (into) => readTensorBytes(t, into),
          values: () => t.toArray(),
        })));
      } catch (error) {
        endRun(results, tensors, borrowed, values); // its own failure keeps the bytes (endBorrow)
        throw error;
      }
      const failure = endRun(results, tensors, borrowed, values);
      if (failure !== null) throw failure;
      return result;
    },
    dispose() {
      module.dispose();
      release?.();
    },
  };
}

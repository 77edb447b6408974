/**
 * A model as the server sees it: its inputs and outputs as protocol tensor specs, and a run
 * that takes and returns plain typed arrays (so the scheduler can stack and split them).
 *
 * @module
 */
import { SpindleError } from "../../ffi/status.ts";
import type { Module, ValueMetadata } from "../module.ts";
import { type Tensor, tensor, tensorFromBytes } from "../tensor.ts";
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
  /** Runs one forward pass off the JavaScript thread; outputs in {@link outputs} order. */
  run(inputs: readonly InputValues[]): Promise<Values[]>;
  /** Frees the model. */
  dispose(): void;
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
  return {
    name,
    source,
    inputs,
    outputs,
    batchable,
    async run(values) {
      const tensors: Tensor[] = [];
      let results: Tensor[] = [];
      try {
        for (const { data, shape, dtype } of values) {
          tensors.push(
            data instanceof Uint8Array ? tensorFromBytes(data, shape, dtype) : tensor(data, shape, { dtype }),
          );
        }
        results = await module.forwardAll(...tensors);
        return results.map((t) => ({ dtype: t.dtype, shape: [...t.shape], data: t.toArray() }));
      } finally {
        for (const t of tensors) t.dispose();
        for (const t of results) t.dispose();
      }
    },
    dispose() {
      module.dispose();
      release?.();
    },
  };
}

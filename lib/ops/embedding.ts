/**
 * Embedding lookups, as in DLRM-style recommenders. Pairs with
 * zig/src/kernels/embedding.zig. Out-of-range indices are refused before any row is read.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, describe, requireTensor } from "./dispatch.ts";

/**
 * Rows of `weight` [rows, width] picked by integer `indices` (any shape): the result has
 * shape [...indices.shape, width].
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { embedding, tensor } from "@spindle/spindle";
 * using table = tensor([0, 0, 1, 1, 2, 2], [3, 2]);
 * using ids = tensor([2, 0], [2], { dtype: "int64" });
 * using rows = embedding(table, ids);
 * assert.deepEqual([...rows.toArray()], [2, 2, 0, 0]);
 * ```
 */
export const embedding: (weight: Tensor, indices: Tensor) => Tensor = defineOp(
  "embedding",
  "embedding",
  (weight: Tensor, indices: Tensor) => ({
    inputs: [requireTensor("embedding", "weight", weight), requireTensor("embedding", "indices", indices)],
    params: {},
  }),
);

/** Options of {@link embeddingBag}. */
export interface EmbeddingBagOptions {
  /** How each bag's rows are pooled (default `"mean"`, as in PyTorch). */
  mode?: "sum" | "mean" | "max";
  /** A float32 weight per index (same shape as indices); mode `"sum"` only. */
  perSampleWeights?: Tensor;
  /** `offsets` has one more entry: the end of the last bag. */
  includeLastOffset?: boolean;
}

const MODES: readonly string[] = ["sum", "mean", "max"];

/**
 * Pools bags of embedding rows. With 1-D `indices`, `offsets` gives where each bag starts;
 * with 2-D `indices` [bags, length], pass `offsets` as null. Empty bags give zeros.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { embeddingBag, tensor } from "@spindle/spindle";
 * using table = tensor([1, 1, 2, 2, 3, 3], [3, 2]);
 * using ids = tensor([0, 2, 1], [3], { dtype: "int64" });
 * using offsets = tensor([0, 2], [2], { dtype: "int64" });
 * using pooled = embeddingBag(table, ids, offsets, { mode: "sum" });
 * assert.deepEqual([...pooled.toArray()], [4, 4, 2, 2]);
 * ```
 */
export const embeddingBag: (
  weight: Tensor,
  indices: Tensor,
  offsets: Tensor | null,
  options?: EmbeddingBagOptions,
) => Tensor = defineOp(
  "embedding_bag",
  "embeddingBag",
  (weight: Tensor, indices: Tensor, offsets: Tensor | null, options: EmbeddingBagOptions = {}) => {
    const mode = options.mode ?? "mean";
    if (!MODES.includes(mode)) {
      throw new TypeError(`embeddingBag: mode must be sum, mean or max, got ${describe(mode)}`);
    }
    const inputs = [requireTensor("embeddingBag", "weight", weight), requireTensor("embeddingBag", "indices", indices)];
    if (offsets !== null && offsets !== undefined) inputs.push(requireTensor("embeddingBag", "offsets", offsets));
    const weights = options.perSampleWeights;
    if (weights !== undefined) inputs.push(requireTensor("embeddingBag", "perSampleWeights", weights));
    return {
      inputs,
      params: {
        mode,
        has_offsets: offsets !== null && offsets !== undefined,
        has_weights: weights !== undefined,
        include_last_offset: options.includeLastOffset ?? false,
      },
    };
  },
);

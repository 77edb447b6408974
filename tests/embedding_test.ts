import assert from "node:assert/strict";
import { embedding, embeddingBag, SpindleError, tensor } from "../mod.ts";
import { assertClose, atThreadCounts, generator, randomValues, values } from "./reference.ts";

function randomIndices(n: number, rows: number, seed: number): number[] {
  const random = generator(seed);
  return Array.from({ length: n }, () => Math.floor(random() * rows));
}

Deno.test("embedding gathers rows for int64 and int32 indices of any shape", () => {
  atThreadCounts(() => {
    for (
      const [rows, width, indexShape] of [[10, 3, [4]], [50, 17, [3, 5]], [1, 1, [1]], [1000, 64, [2048]]] as const
    ) {
      const table = randomValues(rows * width, rows);
      const count = (indexShape as readonly number[]).reduce((p, d) => p * d, 1);
      const ids = randomIndices(count, rows, width);
      for (const dtype of ["int64", "int32"] as const) {
        using weight = tensor(table, [rows, width]);
        using indices = tensor(ids, [...indexShape], { dtype });
        using out = embedding(weight, indices);
        assert.deepEqual(out.shape, [...indexShape, width]);
        const expected = ids.flatMap((i) => Array.from(table.subarray(i * width, (i + 1) * width)));
        assert.deepEqual(values(out), expected);
      }
    }
  });
});

function bagReference(
  table: Float32Array,
  width: number,
  ids: number[],
  starts: number[],
  mode: "sum" | "mean" | "max",
  weights?: Float32Array,
): number[] {
  const out: number[] = [];
  for (let b = 0; b + 1 < starts.length; b++) {
    const bag = ids.slice(starts[b], starts[b + 1]);
    for (let k = 0; k < width; k++) {
      if (bag.length === 0) {
        out.push(0);
        continue;
      }
      const column = bag.map((i, j) => table[i * width + k] * (weights ? weights[starts[b] + j] : 1));
      if (mode === "max") out.push(Math.max(...column));
      else {
        const total = column.reduce((s, x) => s + x, 0);
        out.push(mode === "mean" ? total / bag.length : total);
      }
    }
  }
  return out;
}

Deno.test("embeddingBag pools bags (sum, mean, max, weights, empty bags) at 1 and 2 threads", () => {
  atThreadCounts(() => {
    const rows = 1000;
    const width = 19;
    const table = randomValues(rows * width, 1);
    const ids = randomIndices(1500, rows, 2);
    const random = generator(3);
    const offsets = [0, ...Array.from({ length: 63 }, () => Math.floor(random() * 1500))].sort((a, b) => a - b);
    offsets[5] = offsets[4]; // an empty bag
    const weights = randomValues(1500, 4);
    using weight = tensor(table, [rows, width]);
    using indices = tensor(ids, [1500], { dtype: "int64" });
    using offsetTensor = tensor(offsets, [64], { dtype: "int64" });
    using sampleWeights = tensor(weights);
    for (const mode of ["sum", "mean", "max"] as const) {
      using out = embeddingBag(weight, indices, offsetTensor, { mode });
      assert.deepEqual(out.shape, [64, width]);
      assertClose(values(out), bagReference(table, width, ids, [...offsets, 1500], mode), { relative: 1e-5 });
    }
    using weighted = embeddingBag(weight, indices, offsetTensor, { mode: "sum", perSampleWeights: sampleWeights });
    assertClose(values(weighted), bagReference(table, width, ids, [...offsets, 1500], "sum", weights), {
      relative: 1e-5,
      absolute: 1e-5,
    });
    using fixed = tensor(ids.slice(0, 60), [6, 10], { dtype: "int32" });
    using fixedOut = embeddingBag(weight, fixed, null, { mode: "mean" });
    assertClose(values(fixedOut), bagReference(table, width, ids.slice(0, 60), [0, 10, 20, 30, 40, 50, 60], "mean"));
  });
});

Deno.test("out-of-range indices and bad offsets are refused before any memory is read", () => {
  using weight = tensor(new Float32Array(12), [4, 3]);
  for (const bad of [[4], [-1], [0, 1000000]]) {
    using ids = tensor(bad, [bad.length], { dtype: "int64" });
    assert.throws(
      () => embedding(weight, ids),
      (e) => e instanceof SpindleError && e.code === "index_out_of_range" && e.message.includes(String(bad.at(-1))),
    );
  }
  using ids = tensor([0, 1, 2], [3], { dtype: "int64" });
  using decreasing = tensor([0, 2, 1], [3], { dtype: "int64" });
  using beyond = tensor([0, 4], [2], { dtype: "int64" });
  using notZero = tensor([1, 2], [2], { dtype: "int64" });
  using floats = tensor([0, 1, 2]);
  using weights = tensor([1, 1, 1]);
  const code = (c: string) => (e: unknown) => e instanceof SpindleError && e.code === c;
  assert.throws(() => embeddingBag(weight, ids, decreasing), code("invalid_argument"));
  assert.throws(() => embeddingBag(weight, ids, beyond), code("index_out_of_range"));
  assert.throws(() => embeddingBag(weight, ids, notZero), code("invalid_argument"));
  assert.throws(() => embedding(weight, floats), code("dtype_mismatch"));
  assert.throws(() => embeddingBag(weight, ids, null), code("shape_mismatch"));
  assert.throws(
    () => embeddingBag(weight, ids, notZero, { mode: "max", perSampleWeights: weights }),
    code("invalid_argument"),
  );
  assert.throws(() => embeddingBag(weight, ids, notZero, { mode: "median" as "sum" }), TypeError);
});

import assert from "node:assert/strict";
import { batchNorm, layerNorm, SpindleError, tensor, zeros } from "../mod.ts";
import { assertClose, atThreadCounts, randomValues, values } from "./reference.ts";

function layerNormReference(data: Float32Array, row: number, weight?: Float32Array, bias?: Float32Array, eps = 1e-5) {
  const out = new Array(data.length);
  for (let start = 0; start < data.length; start += row) {
    const slice = data.subarray(start, start + row);
    const mean = slice.reduce((s, x) => s + x, 0) / row;
    const variance = slice.reduce((s, x) => s + (x - mean) ** 2, 0) / row;
    slice.forEach((x, k) => {
      out[start + k] = ((x - mean) / Math.sqrt(variance + eps)) * (weight?.[k] ?? 1) + (bias?.[k] ?? 0);
    });
  }
  return out;
}

Deno.test("layerNorm matches the reference with and without affine parameters", () => {
  atThreadCounts(() => {
    for (const [shape, normalized] of [[[4, 7], [7]], [[2, 3, 17], [3, 17]], [[1000, 33], [33]], [[5], [5]]] as const) {
      const data = randomValues((shape as readonly number[]).reduce((p, d) => p * d, 1), 3, -3, 5);
      const row = (normalized as readonly number[]).reduce((p, d) => p * d, 1);
      const w = randomValues(row, 4);
      const b = randomValues(row, 5);
      using x = tensor(data, [...shape]);
      using weight = tensor(w, [...normalized]);
      using bias = tensor(b, [...normalized]);
      using plain = layerNorm(x, normalized);
      using affine = layerNorm(x, normalized, weight, bias, 1e-3);
      assertClose(values(plain), layerNormReference(data, row), { relative: 1e-4, absolute: 1e-5 });
      assertClose(values(affine), layerNormReference(data, row, w, b, 1e-3), { relative: 1e-4, absolute: 1e-5 });
    }
  });
});

Deno.test("batchNorm folds the running statistics per channel", () => {
  atThreadCounts(() => {
    for (const shape of [[2, 3], [2, 3, 5, 7], [1, 17, 1, 1], [4, 8, 64, 64]]) {
      const channels = shape[1];
      const plane = shape.slice(2).reduce((p, d) => p * d, 1);
      const data = randomValues(shape.reduce((p, d) => p * d, 1), 9);
      const m = randomValues(channels, 10);
      const v = randomValues(channels, 11, 0.1, 3);
      const w = randomValues(channels, 12);
      const b = randomValues(channels, 13);
      using x = tensor(data, shape);
      using mean = tensor(m);
      using variance = tensor(v);
      using weight = tensor(w);
      using bias = tensor(b);
      using y = batchNorm(x, mean, variance, weight, bias, 1e-5);
      const expected = Array.from(data, (value, flat) => {
        const c = Math.floor(flat / plane) % channels;
        return ((value - m[c]) / Math.sqrt(v[c] + 1e-5)) * w[c] + b[c];
      });
      assertClose(values(y), expected, { relative: 1e-4, absolute: 1e-5 });
    }
  });
});

Deno.test("normalisation refuses mismatched shapes", () => {
  using x = zeros([2, 3]);
  using wrong = zeros([4]);
  assert.throws(() => layerNorm(x, [4]), RangeError);
  assert.throws(() => layerNorm(x, [3], wrong), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
  assert.throws(() => batchNorm(x, wrong, wrong), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
  using vector = zeros([3]);
  assert.throws(
    () => batchNorm(vector, vector, vector),
    (e) => e instanceof SpindleError && e.code === "shape_mismatch",
  );
  assert.throws(() => layerNorm(x, [3], null, null, NaN), TypeError);
});

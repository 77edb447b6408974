import assert from "node:assert/strict";
import {
  add,
  addmm,
  bmm,
  contiguous,
  getNumThreads,
  linear,
  liveTensorCount,
  matmul,
  mm,
  mul,
  rand,
  reshape,
  setNumThreads,
  slice,
  SpindleError,
  tensor,
  transpose,
  zeros,
} from "../mod.ts";
import { assertClose, atThreadCounts, values } from "./reference.ts";

function referenceMm(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += a[i * k + p] * b[p * n + j];
      out[i * n + j] = sum;
    }
  }
  return out;
}

Deno.test("mm matches the reference on awkward shapes at 1 and 2 threads", () => {
  const before = getNumThreads();
  const sizes = [1, 2, 7, 16, 17, 61, 130];
  let seed = 0;
  try {
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      for (const m of sizes) {
        for (const [k, n] of [[1, 1], [3, 17], [64, 33], [129, 70]]) {
          using a = rand([m, k], { seed: seed++ });
          using b = rand([k, n], { seed: seed++ });
          using c = mm(a, b);
          assert.deepEqual(c.shape, [m, n]);
          const expected = referenceMm(a.toArray() as Float32Array, b.toArray() as Float32Array, m, k, n);
          const got = c.toArray() as Float32Array;
          for (let i = 0; i < expected.length; i++) {
            assert.ok(
              Math.abs(got[i] - expected[i]) <= 1e-4 * (k + 1),
              `${m}x${k}x${n} [${i}] ${got[i]} vs ${expected[i]}`,
            );
          }
        }
      }
    }
  } finally {
    setNumThreads(before);
  }
});

Deno.test("mm with an empty dimension", () => {
  using a = zeros([0, 3]);
  using b = zeros([3, 4]);
  using c = mm(a, b);
  assert.deepEqual(c.shape, [0, 4]);
  using d = zeros([2, 0]);
  using e = zeros([0, 3]);
  using f = mm(d, e);
  assert.deepEqual(Array.from(f.toArray() as Float32Array), [0, 0, 0, 0, 0, 0]);
});

Deno.test("mm and add refuse bad shapes, dtypes and arguments with typed errors", () => {
  const before = liveTensorCount();
  using a = zeros([2, 3]);
  using ids = zeros([3, 2], { dtype: "int64" });
  using v = zeros([3]);
  assert.throws(
    () => mm(a, a),
    (e) => e instanceof SpindleError && e.code === "shape_mismatch" && /\[2, 3\]/.test(e.message),
  );
  assert.throws(() => mm(a, ids), (e) => e instanceof SpindleError && e.code === "dtype_mismatch");
  assert.throws(() => mm(a, v), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
  using w = zeros([2]);
  assert.throws(() => add(a, w), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
  assert.throws(() => mm(a, 3 as unknown as typeof a), TypeError);
  assert.equal(liveTensorCount(), before + 4);
});

Deno.test("add sums elementwise", () => {
  using a = tensor([1, 2, 3]);
  using b = tensor([0.5, -2, 10]);
  using c = add(a, b);
  assert.deepEqual(Array.from(c.toArray() as Float32Array), [1.5, 0, 13]);
});

Deno.test("NaN propagates through mm", () => {
  using a = tensor([NaN, 1, 2, 3], [2, 2]);
  using b = tensor([1, 0, 0, 1], [2, 2]);
  using c = mm(a, b);
  const values = c.toArray() as Float32Array;
  assert.ok(Number.isNaN(values[0]));
  assert.equal(values[3], 3);
});

Deno.test("matmul, bmm, linear and addmm match compositions of mm at 1 and 2 threads", () => {
  atThreadCounts(() => {
    using a = rand([3, 5, 7], { seed: 1 });
    using b = rand([7, 4], { seed: 2 });
    using batched = matmul(a, b);
    assert.deepEqual(batched.shape, [3, 5, 4]);
    for (let i = 0; i < 3; i++) {
      using ai = slice(a, 0, i, i + 1);
      using a2 = reshape(ai, [5, 7]);
      using expected = mm(a2, b);
      using got = slice(batched, 0, i, i + 1);
      assertClose(values(got), values(expected), { relative: 1e-5, absolute: 1e-6 });
    }
    using b3 = rand([3, 7, 2], { seed: 3 });
    using viaBmm = bmm(a, b3);
    assert.deepEqual(viaBmm.shape, [3, 5, 2]);
    using x = rand([6, 7], { seed: 4 });
    using w = rand([9, 7], { seed: 5 });
    using bias = rand([9], { seed: 6 });
    using y = linear(x, w, bias);
    using wt = transpose(w, 0, 1);
    using wtc = contiguous(wt);
    using product = mm(x, wtc);
    using expected = add(product, bias);
    assertClose(values(y), values(expected), { relative: 1e-5, absolute: 1e-6 });
    using z = addmm(bias, x, wtc, { beta: 0.5, alpha: 2 });
    using twice = mul(product, 2);
    using half = mul(bias, 0.5);
    using expectedZ = add(half, twice);
    assertClose(values(z), values(expectedZ), { relative: 1e-5, absolute: 1e-6 });
    using v = rand([7], { seed: 7 });
    using mv = matmul(x, v);
    assert.deepEqual(mv.shape, [6]);
    assert.throws(() => matmul(x, x), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
    assert.throws(() => bmm(x, x), RangeError);
  });
});

import assert from "node:assert/strict";
import {
  arange,
  concat,
  contiguous,
  flatten,
  gather,
  permute,
  rand,
  reshape,
  slice,
  SpindleError,
  squeeze,
  tensor,
  transpose,
  unsqueeze,
  zeros,
} from "../mod.ts";
import { atThreadCounts, strides, unravel, values } from "./reference.ts";

Deno.test("views: reshape, flatten, squeeze, unsqueeze keep the values", () => {
  using x = arange(24);
  using r = reshape(x, [2, 3, -1]);
  assert.deepEqual(r.shape, [2, 3, 4]);
  assert.deepEqual(values(r), values(x));
  using f = flatten(r, 1);
  assert.deepEqual(f.shape, [2, 12]);
  using u = unsqueeze(r, 1);
  assert.deepEqual(u.shape, [2, 1, 3, 4]);
  using s = squeeze(u);
  assert.deepEqual(s.shape, [2, 3, 4]);
  using only = squeeze(u, 0);
  assert.deepEqual(only.shape, [2, 1, 3, 4]);
  using scalar = reshape(tensor([5]), []);
  assert.deepEqual(scalar.shape, []);
});

Deno.test("permute and transpose match an index-by-index reference, and materialise in parallel", () => {
  atThreadCounts(() => {
    for (
      const [shape, dims] of [[[2, 3, 4], [2, 0, 1]], [[5, 7], [1, 0]], [[300, 400], [1, 0]], [[3, 1, 2, 5], [
        3,
        2,
        1,
        0,
      ]]]
    ) {
      const count = shape.reduce((p, d) => p * d, 1);
      using x = arange(count);
      using shaped = reshape(x, shape);
      using p = permute(shaped, dims);
      const outShape = dims.map((d) => shape[d]);
      assert.deepEqual(p.shape, outShape);
      const inStrides = strides(shape);
      const expected = Array.from({ length: count }, (_, flat) => {
        const index = unravel(flat, outShape);
        return dims.reduce((acc, d, i) => acc + index[i] * inStrides[d], 0);
      });
      using c = contiguous(p);
      assert.deepEqual(values(c), expected);
      assert.deepEqual(values(p), expected);
    }
  });
  using m = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  using t = transpose(m, -1, 0);
  assert.deepEqual(values(t), [1, 4, 2, 5, 3, 6]);
});

Deno.test("slice follows Python's rules", () => {
  using x = arange(10);
  const cases: [number, number | undefined, number, number[]][] = [
    [2, 5, 1, [2, 3, 4]],
    [-3, undefined, 1, [7, 8, 9]],
    [0, 100, 4, [0, 4, 8]],
    [5, 2, 1, []],
    [-100, 2, 1, [0, 1]],
  ];
  for (const [start, end, step, expected] of cases) {
    using s = slice(x, 0, start, end, step);
    assert.deepEqual(values(s), expected, `${start}:${end}:${step}`);
  }
  using m = reshape(x, [2, 5]);
  using column = slice(m, 1, 1, 2);
  assert.deepEqual(column.shape, [2, 1]);
  assert.deepEqual(values(column), [1, 6]);
  assert.throws(() => slice(x, 0, 0, 5, 0), (e) => e instanceof SpindleError && e.code === "invalid_argument");
  assert.throws(() => slice(x, 1, 0, 5), (e) => e instanceof SpindleError && e.code === "index_out_of_range");
});

Deno.test("concat along every dim, with views among the inputs", () => {
  using a = rand([2, 3, 4], { seed: 1 });
  using b = rand([2, 3, 4], { seed: 2 });
  for (let dim = 0; dim < 3; dim++) {
    using c = concat([a, b], dim);
    const expectedShape = [2, 3, 4];
    expectedShape[dim] = a.shape[dim] + b.shape[dim];
    assert.deepEqual(c.shape, expectedShape);
    using first = slice(c, dim, 0, a.shape[dim]);
    using second = slice(c, dim, a.shape[dim]);
    assert.deepEqual(values(first), values(a));
    assert.deepEqual(values(second), values(b));
  }
  using t = transpose(a, 0, 2);
  using joined = concat([t, t], 1);
  assert.deepEqual(joined.shape, [4, 6, 2]);
  // Unequal parts (one empty, one a view) along a middle dim, against a direct reference.
  using u = rand([4, 5, 2], { seed: 3 });
  using none = zeros([4, 0, 2]);
  using mixed = concat([t, none, u], 1);
  assert.deepEqual(mixed.shape, [4, 8, 2]);
  const [tv, uv] = [values(t), values(u)];
  const expected: number[] = [];
  for (let i = 0; i < 4; i++) expected.push(...tv.slice(i * 6, i * 6 + 6), ...uv.slice(i * 10, i * 10 + 10));
  assert.deepEqual(values(mixed), expected);
  using wrong = zeros([2, 3, 5]);
  assert.throws(() => concat([a, wrong], 0), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
  using ints = zeros([2, 3, 4], { dtype: "int32" });
  assert.throws(() => concat([a, ints], 0), (e) => e instanceof SpindleError && e.code === "dtype_mismatch");
});

Deno.test("gather picks along a dim and checks its indices", () => {
  using x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  using index = tensor([2, 0, 1, 1], [2, 2], { dtype: "int64" });
  using g1 = gather(x, 1, index);
  assert.deepEqual(values(g1), [3, 1, 5, 5]);
  using rowIndex = tensor([1, 0, 1], [1, 3], { dtype: "int32" });
  using g0 = gather(x, 0, rowIndex);
  assert.deepEqual(values(g0), [4, 2, 6]);
  using bad = tensor([3], [1, 1], { dtype: "int64" });
  assert.throws(() => gather(x, 1, bad), (e) => e instanceof SpindleError && e.code === "index_out_of_range");
  assert.throws(() => reshape(x, [4, -1]), (e) => e instanceof SpindleError && e.code === "shape_mismatch");
  assert.throws(() => permute(x, [0, 0]), (e) => e instanceof SpindleError && e.code === "invalid_argument");
  assert.throws(() => reshape(x, [1.5]), TypeError);
});

import assert from "node:assert/strict";
import { argmax, cumsum, logSoftmax, max, mean, min, softmax, SpindleError, sum, tensor, zeros } from "../mod.ts";
import { assertClose, atThreadCounts, randomValues, unravel, values } from "./reference.ts";

type Kind = "sum" | "mean" | "max" | "min";
const OPS = { sum, mean, max, min };

function reference(kind: Kind, data: Float32Array, shape: number[], dims: number[], keepdim: boolean) {
  const reduced = shape.map((_, axis) => dims.length === 0 || dims.includes(axis));
  const outShape = shape.flatMap((d, axis) => (reduced[axis] ? (keepdim ? [1] : []) : [d]));
  const keptShape = shape.filter((_, axis) => !reduced[axis]);
  const count = keptShape.reduce((p, d) => p * d, 1);
  const accumulators = new Array(count).fill(kind === "max" ? -Infinity : kind === "min" ? Infinity : 0);
  const counts = new Array(count).fill(0);
  data.forEach((value, flat) => {
    const index = unravel(flat, shape);
    const kept = index.filter((_, axis) => !reduced[axis]);
    const out = kept.reduce((acc, c, i) => acc * keptShape[i] + c, 0);
    counts[out]++;
    if (kind === "max") accumulators[out] = Math.max(accumulators[out], value);
    else if (kind === "min") accumulators[out] = Math.min(accumulators[out], value);
    else accumulators[out] += value;
  });
  return { outShape, expected: kind === "mean" ? accumulators.map((s, i) => s / counts[i]) : accumulators };
}

const CASES: [number[], number[]][] = [
  [[3, 5, 7], []],
  [[3, 5, 7], [0]],
  [[3, 5, 7], [2]],
  [[3, 5, 7], [0, 2]],
  [[3, 5, 7], [1, 2]],
  [[1, 17, 1], [1]],
  [[70001], [0]],
  [[4, 4099], [1]],
  [[2, 3, 4, 5], [1, 3]],
  [[13], []],
];

Deno.test("sum, mean, max, min over any dims match the reference at 1 and 2 threads", () => {
  atThreadCounts(() => {
    let seed = 1;
    for (const [shape, dims] of CASES) {
      const data = randomValues(shape.reduce((p, d) => p * d, 1), seed++);
      using x = tensor(data, shape);
      for (const kind of ["sum", "mean", "max", "min"] as const) {
        for (const keepdim of [false, true]) {
          using y = OPS[kind](x, dims.length === 0 ? undefined : dims, keepdim);
          const { outShape, expected } = reference(kind, data, shape, dims, keepdim);
          assert.deepEqual(y.shape, outShape, `${kind} ${shape} ${dims} ${keepdim}`);
          assertClose(values(y), expected, {
            relative: 1e-4,
            absolute: 1e-3,
            label: `${kind} [${shape}] dims [${dims}]`,
          });
        }
      }
    }
  });
});

Deno.test("negative dims, argmax, NaN and empty reductions", () => {
  using x = tensor([1, 9, 3, 7, 2, 8], [2, 3]);
  using s = sum(x, -1);
  assert.deepEqual(values(s), [13, 17]);
  using a = argmax(x, 1);
  assert.deepEqual(Array.from(a.toArray() as BigInt64Array), [1n, 2n]);
  using all = argmax(x);
  assert.deepEqual(Array.from(all.toArray() as BigInt64Array), [1n]);
  using kept = argmax(x, 0, true);
  assert.deepEqual(kept.shape, [1, 3]);
  using withNaN = tensor([1, NaN, 3]);
  using m = max(withNaN);
  assert.ok(Number.isNaN(values(m)[0]));
  using e = zeros([0, 4]);
  using se = sum(e, 0);
  assert.deepEqual(values(se), [0, 0, 0, 0]);
  using me = mean(e);
  assert.ok(Number.isNaN(values(me)[0]));
  assert.throws(() => max(e, 0), (err) => err instanceof SpindleError && err.code === "invalid_argument");
  assert.throws(() => sum(x, 2), (err) => err instanceof SpindleError && err.code === "index_out_of_range");
  assert.throws(() => sum(x, [0, 0]), (err) => err instanceof SpindleError && err.code === "invalid_argument");
  assert.throws(() => sum(x, 0.5), TypeError);
});

function softmaxReference(data: Float32Array, shape: number[], dim: number, log: boolean): number[] {
  const d = dim < 0 ? dim + shape.length : dim;
  const inner = shape.slice(d + 1).reduce((p, x) => p * x, 1);
  const size = shape[d];
  const out = new Array(data.length);
  for (let flat = 0; flat < data.length; flat++) {
    const position = Math.floor(flat / inner) % size;
    const base = flat - position * inner;
    let maximum = -Infinity;
    for (let r = 0; r < size; r++) maximum = Math.max(maximum, data[base + r * inner]);
    let total = 0;
    for (let r = 0; r < size; r++) total += Math.exp(data[base + r * inner] - maximum);
    out[flat] = log ? data[flat] - maximum - Math.log(total) : Math.exp(data[flat] - maximum) / total;
  }
  return out;
}

Deno.test("softmax and logSoftmax along every dim match the reference at 1 and 2 threads", () => {
  atThreadCounts(() => {
    for (const shape of [[1], [17], [3, 19, 5], [2, 1000], [7, 33]]) {
      const data = randomValues(shape.reduce((p, d) => p * d, 1), shape.length * 7, -8, 8);
      using x = tensor(data, shape);
      for (let dim = -1; dim < shape.length; dim++) {
        using p = softmax(x, dim);
        using l = logSoftmax(x, dim);
        assertClose(values(p), softmaxReference(data, shape, dim, false), { relative: 1e-5, absolute: 1e-7 });
        assertClose(values(l), softmaxReference(data, shape, dim, true), { relative: 1e-5, absolute: 1e-5 });
      }
    }
  });
});

/** Running sums along `axis` of a row-major array, one line at a time in float64. */
function cumsumReference(data: ArrayLike<number>, shape: number[], axis: number, exclusive: boolean, reverse: boolean) {
  const out = new Array<number>(data.length).fill(0);
  const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
  const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let total = 0;
      for (let step = 0; step < shape[axis]; step++) {
        const k = reverse ? shape[axis] - 1 - step : step;
        const at = (o * shape[axis] + k) * inner + i;
        if (exclusive) out[at] = total;
        total += data[at];
        if (!exclusive) out[at] = total;
      }
    }
  }
  return out;
}

Deno.test("cumsum matches a running sum on awkward shapes, every dim and mode, at 1 and 2 threads", () => {
  atThreadCounts(() => {
    for (const shape of [[1], [17], [3, 1, 5], [2, 33, 3], [70001]]) {
      const data = randomValues(shape.reduce((p, d) => p * d, 1), shape.length, -2, 2).map(Math.round);
      using x = tensor(data, shape);
      for (let axis = -shape.length; axis < shape.length; axis++) {
        for (const exclusive of [false, true]) {
          for (const reverse of [false, true]) {
            using y = cumsum(x, axis, { exclusive, reverse });
            const normalized = axis < 0 ? axis + shape.length : axis;
            assert.deepEqual(
              Array.from(values(y)),
              cumsumReference(data, shape, normalized, exclusive, reverse),
              `${shape} axis ${axis}`,
            );
          }
        }
      }
    }
  });
});

Deno.test("cumsum keeps integer dtypes and refuses bad dims", () => {
  using x = tensor(new BigInt64Array([1n, 2n, 3n, 4n, 5n, 6n]), [2, 3], { dtype: "int64" });
  using y = cumsum(x, 1);
  assert.equal(y.dtype, "int64");
  assert.deepEqual(Array.from(y.toArray() as BigInt64Array, Number), [1, 3, 6, 4, 9, 15]);
  assert.throws(() => cumsum(x, 2), (e) => e instanceof SpindleError && e.code === "index_out_of_range");
  assert.throws(() => cumsum(x, 0.5), TypeError);
  assert.throws(() => cumsum(x, 0, { reverse: "yes" as unknown as boolean }), TypeError);
});

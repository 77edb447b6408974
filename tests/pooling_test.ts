import assert from "node:assert/strict";
import { adaptiveAvgPool2d, avgPool2d, maxPool2d, SpindleError, tensor, zeros } from "../mod.ts";
import { assertClose, atThreadCounts, randomValues, values } from "./reference.ts";

interface Window {
  kernel: [number, number];
  stride?: [number, number];
  padding?: [number, number];
  dilation?: [number, number];
  ceilMode?: boolean;
}

/** PyTorch's pooling output size, with the ceil-mode rule that the last window must start inside. */
function outputSize(size: number, kernel: number, stride: number, padding: number, dilation: number, ceil: boolean) {
  const span = size + 2 * padding - dilation * (kernel - 1) - 1;
  let out = (ceil ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
  if (ceil && (out - 1) * stride >= size + padding) out--;
  return out;
}

type Reduce = (taps: number[], window: { padded: number; inside: number }) => number;

/** Slides the window over every plane; `reduce` sees the in-image taps and the window counts. */
function poolReference(shape: number[], data: Float32Array, w: Window, reduce: Reduce) {
  const [n, c, h, wid] = shape;
  const [kh, kw] = w.kernel;
  const [sh, sw] = w.stride ?? w.kernel;
  const [ph, pw] = w.padding ?? [0, 0];
  const [dh, dw] = w.dilation ?? [1, 1];
  const oh = outputSize(h, kh, sh, ph, dh, w.ceilMode ?? false);
  const ow = outputSize(wid, kw, sw, pw, dw, w.ceilMode ?? false);
  const out: number[] = [];
  for (let plane = 0; plane < n * c; plane++) {
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        const taps: number[] = [];
        for (let ky = 0; ky < kh; ky++) {
          for (let kx = 0; kx < kw; kx++) {
            const iy = y * sh - ph + ky * dh;
            const ix = x * sw - pw + kx * dw;
            if (iy >= 0 && ix >= 0 && iy < h && ix < wid) taps.push(data[(plane * h + iy) * wid + ix]);
          }
        }
        // PyTorch's avg_pool2d divisor with count_include_pad: the window clipped to the padded input.
        const rows = Math.min(y * sh - ph + kh, h + ph) - (y * sh - ph);
        const cols = Math.min(x * sw - pw + kw, wid + pw) - (x * sw - pw);
        out.push(reduce(taps, { padded: rows * cols, inside: taps.length }));
      }
    }
  }
  return { data: out, shape: [n, c, oh, ow] };
}

const maxOf: Reduce = (taps) => taps.some(Number.isNaN) ? NaN : Math.max(...taps);
const sumOf = (taps: number[]) => taps.reduce((s, v) => s + v, 0);

const windows: Window[] = [
  { kernel: [1, 1] },
  { kernel: [2, 2] },
  { kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
  { kernel: [3, 3], stride: [2, 2], padding: [1, 1], ceilMode: true },
  { kernel: [2, 2], stride: [2, 2], ceilMode: true },
  { kernel: [3, 2], stride: [3, 1], padding: [1, 1], ceilMode: true },
  { kernel: [3, 3], stride: [4, 4], padding: [1, 1], ceilMode: true },
];
const shapes = [[1, 1, 3, 3], [2, 3, 7, 11], [1, 5, 13, 6], [1, 64, 20, 20]];

Deno.test("maxPool2d matches the reference, with dilation, ceil mode and NaN, at 1 and 2 threads", () => {
  atThreadCounts((threads) => {
    let seed = 1;
    for (const shape of shapes) {
      const data = randomValues(shape.reduce((p, d) => p * d, 1), seed++);
      data[4] = NaN;
      using x = tensor(data, shape);
      for (const base of windows) {
        for (const dilation of [[1, 1], [2, 1]] as [number, number][]) {
          const w = { ...base, dilation };
          const effective = (w.kernel[0] - 1) * dilation[0] + 1;
          if (effective > shape[2] + 2 * (w.padding?.[0] ?? 0) || w.kernel[1] > shape[3]) continue;
          using y = maxPool2d(x, w.kernel, w);
          const expected = poolReference(shape, data, w, maxOf);
          const label = `maxPool2d ${shape} ${JSON.stringify(w)} threads=${threads}`;
          assert.deepEqual(y.shape, expected.shape, label);
          assertClose(values(y), expected.data, { label });
        }
      }
    }
  });
});

Deno.test("avgPool2d follows count_include_pad, ceil mode and divisorOverride at 1 and 2 threads", () => {
  atThreadCounts((threads) => {
    let seed = 20;
    for (const shape of shapes) {
      const data = randomValues(shape.reduce((p, d) => p * d, 1), seed++);
      using x = tensor(data, shape);
      for (const w of windows) {
        if (w.kernel[0] > shape[2] || w.kernel[1] > shape[3]) continue;
        for (const countIncludePad of [true, false]) {
          for (const divisorOverride of [undefined, 3]) {
            using y = avgPool2d(x, w.kernel, { ...w, countIncludePad, divisorOverride });
            const expected = poolReference(shape, data, w, (taps, counts) => {
              if (taps.length === 0) return 0;
              return sumOf(taps) / (divisorOverride ?? (countIncludePad ? counts.padded : counts.inside));
            });
            const label = `avgPool2d ${shape} ${JSON.stringify(w)} ${countIncludePad} ${divisorOverride} ${threads}`;
            assert.deepEqual(y.shape, expected.shape, label);
            assertClose(values(y), expected.data, { relative: 1e-5, absolute: 1e-6, label });
          }
        }
      }
    }
  });
});

Deno.test("adaptiveAvgPool2d averages floor/ceil ranges when shrinking and growing, at 1 and 2 threads", () => {
  atThreadCounts(() => {
    const cases: [number[], [number, number]][] = [
      [[2, 3, 7, 11], [3, 4]],
      [[1, 2, 3, 5], [7, 8]],
      [[1, 70, 7, 7], [1, 1]],
      [[1, 1, 5, 5], [5, 5]],
    ];
    for (const [shape, [oh, ow]] of cases) {
      const [n, c, h, w] = shape;
      const data = randomValues(n * c * h * w, oh * 100 + ow);
      using x = tensor(data, shape);
      using y = adaptiveAvgPool2d(x, [oh, ow]);
      const expected: number[] = [];
      for (let plane = 0; plane < n * c; plane++) {
        for (let i = 0; i < oh; i++) {
          for (let j = 0; j < ow; j++) {
            const [y0, y1] = [Math.floor((i * h) / oh), Math.ceil(((i + 1) * h) / oh)];
            const [x0, x1] = [Math.floor((j * w) / ow), Math.ceil(((j + 1) * w) / ow)];
            let sum = 0;
            for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) sum += data[(plane * h + yy) * w + xx];
            expected.push(sum / ((y1 - y0) * (x1 - x0)));
          }
        }
      }
      assert.deepEqual(y.shape, [n, c, oh, ow]);
      assertClose(values(y), expected, { relative: 1e-5, absolute: 1e-6 });
    }
    using x = tensor(randomValues(3 * 4 * 6, 3), [3, 4, 6]);
    using kept = adaptiveAvgPool2d(x, [2, null]);
    assert.deepEqual(kept.shape, [3, 2, 6]);
  });
});

function isSpindleError(code: string): (e: unknown) => boolean {
  return (e) => e instanceof SpindleError && e.code === code;
}

Deno.test("pooling refuses bad windows with typed errors", () => {
  using x = zeros([2, 5, 6]);
  assert.throws(() => maxPool2d(x, 2, { padding: [2, 0] }), isSpindleError("invalid_argument"));
  assert.throws(
    () => maxPool2d(x, 2, { padding: [2, 0] }),
    (e) => e instanceof SpindleError && /at most half of the effective kernel size \[2, 2\]/.test(e.message),
  );
  assert.throws(() => maxPool2d(x, [0, 2]), isSpindleError("invalid_argument"));
  assert.throws(() => maxPool2d(x, 2, { stride: 0 }), isSpindleError("invalid_argument"));
  assert.throws(() => maxPool2d(x, [7, 2], { stride: 1 }), isSpindleError("shape_mismatch"));
  assert.throws(() => avgPool2d(x, 3, { padding: 2 }), isSpindleError("invalid_argument"));
  assert.throws(() => adaptiveAvgPool2d(x, [-1, 2]), isSpindleError("invalid_argument"));
  assert.throws(() => adaptiveAvgPool2d(x, 2 ** 40), isSpindleError("too_large"));
  using flat = zeros([5, 6]);
  assert.throws(() => maxPool2d(flat, 2), isSpindleError("shape_mismatch"));
  assert.throws(() => avgPool2d(x, 2, { divisorOverride: 0 }), RangeError);
  assert.throws(() => maxPool2d(x, 2, { ceilMode: 1 as unknown as boolean }), TypeError);
  assert.throws(() => maxPool2d(x, 2.5), TypeError);
  using ceil = maxPool2d(x, 2, { ceilMode: true });
  assert.deepEqual(ceil.shape, [2, 3, 3]);
});

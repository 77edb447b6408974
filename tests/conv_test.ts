import assert from "node:assert/strict";
import {
  conv2d,
  convTranspose2d,
  fork,
  Module,
  relu,
  script,
  SpindleError,
  type Tensor,
  tensor,
  wait,
  zeros,
} from "../mod.ts";
import { assertClose, atThreadCounts, randomValues, values } from "./reference.ts";

interface Case {
  batch: number;
  inChannels: number;
  size: [number, number];
  outChannels: number;
  kernel: [number, number];
  stride?: [number, number];
  padding?: [number, number];
  dilation?: [number, number];
  outputPadding?: [number, number];
  groups?: number;
}

/** Direct conv2d: every output sums its window over the group's input channels. */
function conv2dReference(c: Case, x: Float32Array, w: Float32Array, b: Float32Array | null) {
  const [sh, sw] = c.stride ?? [1, 1];
  const [ph, pw] = c.padding ?? [0, 0];
  const [dh, dw] = c.dilation ?? [1, 1];
  const groups = c.groups ?? 1;
  const [h, wid] = c.size;
  const [kh, kw] = c.kernel;
  const oh = Math.floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const ow = Math.floor((wid + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  const inGroup = c.inChannels / groups;
  const outGroup = c.outChannels / groups;
  const out = new Float64Array(c.batch * c.outChannels * oh * ow);
  for (let n = 0; n < c.batch; n++) {
    for (let o = 0; o < c.outChannels; o++) {
      const g = Math.floor(o / outGroup);
      for (let y = 0; y < oh; y++) {
        for (let x0 = 0; x0 < ow; x0++) {
          let sum = b ? b[o] : 0;
          for (let i = 0; i < inGroup; i++) {
            for (let ky = 0; ky < kh; ky++) {
              for (let kx = 0; kx < kw; kx++) {
                const iy = y * sh - ph + ky * dh;
                const ix = x0 * sw - pw + kx * dw;
                if (iy < 0 || ix < 0 || iy >= h || ix >= wid) continue;
                const channel = g * inGroup + i;
                sum += x[((n * c.inChannels + channel) * h + iy) * wid + ix] *
                  w[((o * inGroup + i) * kh + ky) * kw + kx];
              }
            }
          }
          out[((n * c.outChannels + o) * oh + y) * ow + x0] = sum;
        }
      }
    }
  }
  return { data: out, shape: [c.batch, c.outChannels, oh, ow] };
}

/** Direct transposed conv2d: every input value scatters its weighted kernel into the output. */
function convTransposeReference(c: Case, x: Float32Array, w: Float32Array, b: Float32Array | null) {
  const [sh, sw] = c.stride ?? [1, 1];
  const [ph, pw] = c.padding ?? [0, 0];
  const [dh, dw] = c.dilation ?? [1, 1];
  const [oph, opw] = c.outputPadding ?? [0, 0];
  const groups = c.groups ?? 1;
  const [h, wid] = c.size;
  const [kh, kw] = c.kernel;
  const oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1;
  const ow = (wid - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1;
  const inGroup = c.inChannels / groups;
  const outGroup = c.outChannels / groups;
  const out = new Float64Array(c.batch * c.outChannels * oh * ow);
  for (let n = 0; n < c.batch; n++) {
    for (let o = 0; o < c.outChannels; o++) {
      for (let i = 0; i < oh * ow; i++) out[(n * c.outChannels + o) * oh * ow + i] = b ? b[o] : 0;
    }
    for (let i = 0; i < c.inChannels; i++) {
      const g = Math.floor(i / inGroup);
      for (let y = 0; y < h; y++) {
        for (let x0 = 0; x0 < wid; x0++) {
          const value = x[((n * c.inChannels + i) * h + y) * wid + x0];
          for (let oc = 0; oc < outGroup; oc++) {
            for (let ky = 0; ky < kh; ky++) {
              for (let kx = 0; kx < kw; kx++) {
                const oy = y * sh - ph + ky * dh;
                const ox = x0 * sw - pw + kx * dw;
                if (oy < 0 || ox < 0 || oy >= oh || ox >= ow) continue;
                const o = g * outGroup + oc;
                out[((n * c.outChannels + o) * oh + oy) * ow + ox] += value *
                  w[((i * outGroup + oc) * kh + ky) * kw + kx];
              }
            }
          }
        }
      }
    }
  }
  return { data: out, shape: [c.batch, c.outChannels, oh, ow] };
}

const convCases: Case[] = [
  { batch: 1, inChannels: 3, size: [1, 1], outChannels: 4, kernel: [1, 1] },
  { batch: 1, inChannels: 3, size: [1, 1], outChannels: 5, kernel: [3, 3], padding: [1, 1] },
  { batch: 3, inChannels: 5, size: [7, 11], outChannels: 7, kernel: [3, 3], padding: [1, 1] },
  { batch: 1, inChannels: 2, size: [3, 2], outChannels: 3, kernel: [5, 5], padding: [2, 2] },
  { batch: 2, inChannels: 3, size: [13, 17], outChannels: 4, kernel: [2, 3], stride: [4, 5], padding: [1, 0] },
  { batch: 1, inChannels: 4, size: [9, 10], outChannels: 6, kernel: [3, 2], padding: [2, 1], dilation: [2, 3] },
  { batch: 3, inChannels: 6, size: [8, 7], outChannels: 4, kernel: [3, 3], stride: [2, 1], padding: [1, 1], groups: 2 },
  { batch: 1, inChannels: 7, size: [10, 37], outChannels: 7, kernel: [3, 3], padding: [1, 1], groups: 7 },
  {
    batch: 3,
    inChannels: 5,
    size: [11, 40],
    outChannels: 5,
    kernel: [3, 3],
    stride: [2, 2],
    padding: [1, 1],
    groups: 5,
  },
  { batch: 1, inChannels: 3, size: [6, 6], outChannels: 6, kernel: [3, 3], padding: [1, 1], groups: 3 },
  { batch: 3, inChannels: 7, size: [5, 9], outChannels: 5, kernel: [1, 1] },
  { batch: 1, inChannels: 8, size: [7, 7], outChannels: 16, kernel: [1, 1], stride: [2, 2] },
  { batch: 1, inChannels: 40, size: [23, 29], outChannels: 9, kernel: [3, 3], padding: [1, 1] },
  { batch: 1, inChannels: 16, size: [5, 5], outChannels: 80, kernel: [3, 3], padding: [1, 1] },
  // Stride 2 through the implicit GEMM on stride phases: 3×3 (four phases), a dilation that
  // leaves one phase per axis, and a strided 1×1 (the input subsampled).
  { batch: 2, inChannels: 24, size: [20, 31], outChannels: 29, kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
  { batch: 1, inChannels: 9, size: [12, 9], outChannels: 7, kernel: [3, 3], stride: [2, 2], dilation: [2, 2] },
  { batch: 1, inChannels: 40, size: [9, 14], outChannels: 17, kernel: [1, 1], stride: [2, 2] },
  // A narrow map with 96 or more output channels: the input's columns copied per tap.
  { batch: 2, inChannels: 8, size: [6, 7], outChannels: 100, kernel: [3, 3], stride: [2, 2], padding: [1, 1] },
];

const transposeCases: Case[] = [
  { batch: 1, inChannels: 3, size: [1, 1], outChannels: 4, kernel: [3, 3] },
  {
    batch: 2,
    inChannels: 4,
    size: [5, 7],
    outChannels: 6,
    kernel: [3, 2],
    stride: [2, 3],
    padding: [1, 0],
    outputPadding: [1, 2],
    groups: 2,
  },
  {
    batch: 1,
    inChannels: 3,
    size: [4, 5],
    outChannels: 2,
    kernel: [3, 3],
    stride: [2, 2],
    padding: [2, 2],
    outputPadding: [0, 1],
    dilation: [2, 2],
  },
  {
    batch: 3,
    inChannels: 5,
    size: [6, 6],
    outChannels: 5,
    kernel: [3, 3],
    stride: [2, 2],
    padding: [1, 1],
    outputPadding: [1, 1],
    groups: 5,
  },
  { batch: 1, inChannels: 16, size: [12, 12], outChannels: 8, kernel: [4, 4], stride: [2, 2], padding: [1, 1] },
];

function runCases(cases: Case[], transposed: boolean): void {
  let seed = transposed ? 500 : 100;
  atThreadCounts((threads) => {
    for (const c of cases) {
      const groups = c.groups ?? 1;
      const weightShape = transposed
        ? [c.inChannels, c.outChannels / groups, ...c.kernel]
        : [c.outChannels, c.inChannels / groups, ...c.kernel];
      const xData = randomValues(c.batch * c.inChannels * c.size[0] * c.size[1], seed++);
      const wData = randomValues(weightShape.reduce((p, d) => p * d, 1), seed++);
      const bData = randomValues(c.outChannels, seed++);
      using x = tensor(xData, [c.batch, c.inChannels, ...c.size]);
      using w = tensor(wData, weightShape);
      using b = tensor(bData, [c.outChannels]);
      for (const withBias of [false, true]) {
        const options = {
          stride: c.stride,
          padding: c.padding,
          dilation: c.dilation,
          groups: c.groups,
          outputPadding: c.outputPadding,
        };
        using y = transposed
          ? convTranspose2d(x, w, withBias ? b : null, options)
          : conv2d(x, w, withBias ? b : undefined, options);
        const expected = (transposed ? convTransposeReference : conv2dReference)(
          c,
          xData,
          wData,
          withBias ? bData : null,
        );
        const label = `${transposed ? "convTranspose2d" : "conv2d"} ${
          JSON.stringify(c)
        } bias=${withBias} threads=${threads}`;
        assert.deepEqual(y.shape, expected.shape, label);
        assertClose(values(y), expected.data, { relative: 1e-4, absolute: 1e-4, label });
      }
    }
  });
}

Deno.test("conv2d matches the direct reference on awkward shapes at 1 and 2 threads", () => {
  runCases(convCases, false);
});

Deno.test("convTranspose2d matches the direct reference on awkward shapes at 1 and 2 threads", () => {
  runCases(transposeCases, true);
});

Deno.test("scripted stride-2 convolutions (weights packed at load) match the eager op at 1 and 2 threads", () => {
  // The implicit GEMM on stride phases with a packed weight: 3×3 (four phases, 24 · 9 rows
  // of depth) and 1×1 over 80 channels (one phase); the relu fused into the store.
  const cases: [number, number, [number, number]][] = [[24, 3, [20, 31]], [80, 1, [9, 14]]];
  let seed = 900;
  for (const [inChannels, kernel, size] of cases) {
    using x = tensor(randomValues(2 * inChannels * size[0] * size[1], seed++), [2, inChannels, ...size]);
    using w = tensor(randomValues(29 * inChannels * kernel * kernel, seed++), [29, inChannels, kernel, kernel]);
    using b = tensor(randomValues(29, seed++), [29]);
    const options = { stride: 2, padding: Math.floor(kernel / 2) };
    using module = Module.fromScript(script((input: Tensor) => relu(conv2d(input, w, b, options))), [x]);
    atThreadCounts((threads) => {
      using expected = relu(conv2d(x, w, b, options));
      using y = module.forwardSync(x);
      assert.deepEqual(y.shape, expected.shape);
      assertClose(values(y), values(expected), {
        relative: 1e-5,
        absolute: 1e-5,
        label: `${inChannels}x${kernel} ${threads}`,
      });
    });
  }
});

Deno.test("conv2d takes unbatched [C, H, W] inputs and runs on the inter-op pool", async () => {
  using x = tensor(randomValues(2 * 5 * 6, 7), [2, 5, 6]);
  using w = tensor(randomValues(3 * 2 * 3 * 3, 8), [3, 2, 3, 3]);
  using y = conv2d(x, w, null, { padding: 1 });
  assert.deepEqual(y.shape, [3, 5, 6]);
  using batched = tensor(x.toArray() as Float32Array, [1, 2, 5, 6]);
  using z = conv2d(batched, w, null, { padding: [1, 1] });
  assert.deepEqual(values(y), values(z));
  using forked = await fork(conv2d, x, w, null, { padding: 1 });
  assert.deepEqual(values(forked), values(y));
  using tw = tensor(randomValues(2 * 3 * 3 * 3, 9), [2, 3, 3, 3]);
  using transposed = convTranspose2d(x, tw, null, { stride: 2 });
  using waited = wait(fork(convTranspose2d, x, tw, null, { stride: 2 }));
  assert.deepEqual(waited.shape, [3, 11, 13]);
  assert.deepEqual(values(waited), values(transposed));
});

function isSpindleError(code: string): (e: unknown) => boolean {
  return (e) => e instanceof SpindleError && e.code === code;
}

Deno.test("conv2d and convTranspose2d refuse bad shapes and parameters with typed errors", () => {
  using x = zeros([1, 4, 5, 5]);
  using w = zeros([6, 2, 3, 3]);
  assert.throws(() => conv2d(x, w), isSpindleError("shape_mismatch"));
  assert.throws(() => conv2d(x, w, null, { groups: 4 }), isSpindleError("shape_mismatch"));
  assert.throws(() => conv2d(x, w, null, { groups: 0 }), isSpindleError("invalid_argument"));
  assert.throws(() => conv2d(x, w, null, { groups: 2, stride: 0 }), isSpindleError("invalid_argument"));
  assert.throws(() => conv2d(x, w, null, { groups: 2, dilation: [1, -1] }), isSpindleError("invalid_argument"));
  assert.throws(() => conv2d(x, w, null, { groups: 2, padding: -1 }), isSpindleError("invalid_argument"));
  assert.throws(() => conv2d(x, w, null, { groups: 2, dilation: 3 }), isSpindleError("shape_mismatch"));
  assert.throws(() => conv2d(x, w, null, { groups: 2, padding: 2 ** 40 }), isSpindleError("too_large"));
  using bias = zeros([5]);
  assert.throws(() => conv2d(x, w, bias, { groups: 2 }), isSpindleError("shape_mismatch"));
  assert.throws(
    () => conv2d(x, w, bias, { groups: 2 }),
    (e) => e instanceof SpindleError && /conv2d: bias has shape \[5\], expected \[6\]/.test(e.message),
  );
  using flat = zeros([4, 25]);
  assert.throws(() => conv2d(flat, w, null, { groups: 2 }), isSpindleError("shape_mismatch"));
  using ints = tensor([0, 0, 0, 0], [1, 1, 2, 2], { dtype: "int32" });
  using w1 = zeros([1, 1, 1, 1]);
  assert.throws(() => conv2d(ints, w1), isSpindleError("dtype_mismatch"));
  // TypeScript-side argument checks.
  assert.throws(() => conv2d(x, w, null, { stride: 1.5 }), TypeError);
  assert.throws(() => conv2d(x, w, null, { padding: [1, 2, 3] as unknown as [number, number] }), TypeError);
  assert.throws(() => conv2d(x, "w" as unknown as typeof w), TypeError);

  using t = zeros([2, 4, 3]);
  using tw = zeros([2, 3, 3, 3]);
  assert.throws(() => convTranspose2d(t, tw, null, { outputPadding: 1 }), isSpindleError("invalid_argument"));
  assert.throws(() => convTranspose2d(t, tw, null, { padding: [3, 0] }), isSpindleError("shape_mismatch"));
  assert.throws(() => convTranspose2d(t, tw, null, { groups: 4 }), isSpindleError("shape_mismatch"));
  using ok = convTranspose2d(t, tw, null, { stride: 2, outputPadding: [1, 0] });
  assert.deepEqual(ok.shape, [3, 10, 7]);
});

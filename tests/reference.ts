/**
 * Simple JavaScript references for the kernels, and helpers to compare against them.
 *
 * @module
 */
import assert from "node:assert/strict";
import { getNumThreads, setNumThreads, type Tensor } from "../mod.ts";

/** Runs `body` once at 1 thread and once at 2, restoring the setting afterwards. */
export function atThreadCounts(body: (threads: number) => void): void {
  const before = getNumThreads();
  try {
    for (const threads of [1, 2]) {
      setNumThreads(threads);
      body(threads);
    }
  } finally {
    setNumThreads(before);
  }
}

/** A deterministic pseudo-random generator (mulberry32). */
export function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [low, high). */
export function randomValues(n: number, seed: number, low = -2, high = 2): Float32Array {
  const random = generator(seed);
  return Float32Array.from({ length: n }, () => low + (high - low) * random());
}

/** Asserts elementwise closeness with relative and absolute tolerances; NaN matches NaN. */
export function assertClose(
  got: ArrayLike<number>,
  expected: ArrayLike<number>,
  { relative = 1e-5, absolute = 1e-6, label = "" } = {},
): void {
  assert.equal(got.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i];
    const g = got[i];
    if (Number.isNaN(e)) {
      assert.ok(Number.isNaN(g), `${label}[${i}]: expected NaN, got ${g}`);
      continue;
    }
    if (!Number.isFinite(e)) {
      assert.equal(g, e, `${label}[${i}]`);
      continue;
    }
    const tolerance = Math.max(absolute, relative * Math.abs(e));
    assert.ok(Math.abs(g - e) <= tolerance, `${label}[${i}]: expected ${e}, got ${g} (tolerance ${tolerance})`);
  }
}

/** The float32 values of a tensor as a plain array. */
export function values(t: Tensor): number[] {
  return Array.from(t.toArray() as Float32Array);
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const out = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) out[i] = out[i + 1] * shape[i + 1];
  return out;
}

/** The multi-index of flat position `flat` in `shape`. */
export function unravel(flat: number, shape: readonly number[]): number[] {
  const index = new Array(shape.length).fill(0);
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    index[axis] = flat % shape[axis];
    flat = Math.floor(flat / shape[axis]);
  }
  return index;
}

/** erf by its Maclaurin series / continued fraction, accurate to ~1e-15. */
export function erf(x: number): number {
  const a = Math.abs(x);
  let result: number;
  if (a < 2.5) {
    let term = a;
    let sum = a;
    for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    result = (sum * 2) / Math.sqrt(Math.PI);
  } else {
    let k = a;
    for (let n = 80; n >= 1; n--) k = a + n / 2 / k;
    result = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / k;
  }
  return x < 0 ? -result : result;
}

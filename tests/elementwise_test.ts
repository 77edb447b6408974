import assert from "node:assert/strict";
import {
  abs,
  add,
  clamp,
  div,
  elu,
  exp,
  gelu,
  log,
  maximum,
  minimum,
  mul,
  neg,
  pow,
  relu,
  sigmoid,
  SpindleError,
  sqrt,
  sub,
  tanh,
  type Tensor,
  tensor,
  transpose,
  zeros,
} from "../mod.ts";
import { assertClose, atThreadCounts, erf, randomValues, strides, unravel, values } from "./reference.ts";

type Unary = (x: Tensor) => Tensor;
const UNARY: [string, Unary, (x: number) => number, number[]?][] = [
  ["relu", relu, (x) => (Number.isNaN(x) ? x : Math.max(x, 0))],
  ["gelu", (x) => gelu(x), (x) => 0.5 * x * (1 + erf(x / Math.SQRT2))],
  [
    "gelu tanh",
    (x) => gelu(x, { approximate: "tanh" }),
    (x) => x / (1 + Math.exp(-2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
  ],
  ["sigmoid", sigmoid, (x) => 1 / (1 + Math.exp(-x))],
  ["tanh", tanh, Math.tanh],
  ["exp", exp, Math.exp],
  ["log", log, Math.log, [0.001, 10]],
  ["sqrt", sqrt, Math.sqrt, [0, 10]],
  ["neg", neg, (x) => -x],
  ["abs", abs, Math.abs],
  ["elu", (x) => elu(x, 0.7), (x) => (x > 0 ? x : 0.7 * Math.expm1(x))],
  ["clamp", (x) => clamp(x, -0.5, 1), (x) => (Number.isNaN(x) ? x : Math.min(Math.max(x, -0.5), 1))],
];

// Lengths: empty, 1, primes, around the vector width, and above the parallel grain.
const LENGTHS = [0, 1, 2, 15, 16, 17, 31, 97, 70001];

Deno.test("unary ops match their references on awkward lengths at 1 and 2 threads", () => {
  atThreadCounts(() => {
    for (const [name, op, reference, range] of UNARY) {
      for (const n of LENGTHS) {
        const input = randomValues(n, n + 1, range?.[0] ?? -6, range?.[1] ?? 6);
        if (n > 4 && range === undefined) input.set([NaN, Infinity, -Infinity], 1);
        using x = tensor(input, [n]);
        using y = op(x);
        assertClose(values(y), Array.from(input, reference), {
          relative: 2e-6,
          absolute: 5e-7,
          label: `${name}(${n})`,
        });
      }
    }
  });
});

type Binary = (a: Tensor | number, b: Tensor | number) => Tensor;
const BINARY: [string, Binary, (a: number, b: number) => number][] = [
  ["add", add, (a, b) => a + b],
  ["sub", sub, (a, b) => a - b],
  ["mul", mul, (a, b) => a * b],
  ["div", div, (a, b) => a / b],
  ["pow", pow, (a, b) => a ** b],
  ["maximum", maximum, (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b))],
  ["minimum", minimum, (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b))],
];

function broadcastShape(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const x = a[i - (n - a.length)] ?? 1;
    const y = b[i - (n - b.length)] ?? 1;
    return x === 1 ? y : x;
  });
}

function broadcastIndex(shape: number[], index: number[]): number {
  const offset = index.length - shape.length;
  const s = strides(shape);
  return shape.reduce((flat, d, axis) => flat + (d === 1 ? 0 : index[axis + offset] * s[axis]), 0);
}

const BROADCAST_CASES: [number[], number[]][] = [
  [[3, 5], [3, 5]],
  [[3, 5], [5]],
  [[3, 1], [1, 5]],
  [[1], [7, 3]],
  [[], [2, 3]],
  [[2, 1, 4], [3, 1]],
  [[0, 3], [3]],
  [[5, 1, 17], [1, 3, 17]],
  [[2, 40000], [40000]],
  [[40001, 2], [40001, 1]],
];

Deno.test("binary ops broadcast like NumPy and match their references at 1 and 2 threads", () => {
  atThreadCounts(() => {
    let seed = 100;
    for (const [name, op, reference] of BINARY) {
      for (const [shapeA, shapeB] of BROADCAST_CASES) {
        const countA = shapeA.reduce((p, d) => p * d, 1);
        const countB = shapeB.reduce((p, d) => p * d, 1);
        const dataA = randomValues(countA, seed++, 0.1, 2);
        const dataB = randomValues(countB, seed++, -2, 2);
        using a = tensor(dataA, shapeA);
        using b = tensor(dataB, shapeB);
        using c = op(a, b);
        const outShape = broadcastShape(shapeA, shapeB);
        assert.deepEqual(c.shape, outShape, `${name} ${shapeA} ${shapeB}`);
        const expected = Array.from({ length: c.numel }, (_, flat) => {
          const index = unravel(flat, outShape);
          return reference(dataA[broadcastIndex(shapeA, index)], dataB[broadcastIndex(shapeB, index)]);
        });
        assertClose(values(c), expected, { relative: 2e-6, label: `${name} [${shapeA}] [${shapeB}]` });
      }
    }
  });
});

Deno.test("scalar operands on either side", () => {
  using x = tensor([1, 2, 4]);
  using a = sub(x, 1);
  using b = sub(1, x);
  using c = div(8, x);
  using d = pow(2, x);
  assert.deepEqual(values(a), [0, 1, 3]);
  assert.deepEqual(values(b), [0, -1, -3]);
  assert.deepEqual(values(c), [8, 4, 2]);
  assert.deepEqual(values(d), [2, 4, 16]);
  assert.throws(() => add(1 as unknown as Tensor, 2), TypeError);
  // A NaN scalar is a number (PyTorch's x + nan): it propagates; a string is refused by name.
  using nan = add(x, NaN);
  assert.ok(values(nan).every(Number.isNaN));
  assert.throws(() => add(x, "1" as unknown as number), /add: other must be a Tensor or a number, got string 1/);
});

Deno.test("ops on views (transposed inputs) read the right elements", () => {
  using x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  using t = transpose(x, 0, 1);
  using y = mul(t, 10);
  assert.deepEqual(values(y), [10, 40, 20, 50, 30, 60]);
  using z = add(t, t);
  assert.deepEqual(values(z), [2, 8, 4, 10, 6, 12]);
});

Deno.test("elementwise ops refuse bad shapes, dtypes and options", () => {
  using a = zeros([2, 3]);
  using b = zeros([4, 3]);
  using ids = zeros([3], { dtype: "int64" });
  assert.throws(
    () => add(a, b),
    (e) => e instanceof SpindleError && e.code === "shape_mismatch" && /\[2, 3\]/.test(e.message),
  );
  assert.throws(() => relu(ids), (e) => e instanceof SpindleError && e.code === "dtype_mismatch");
  assert.throws(() => mul(a, ids), (e) => e instanceof SpindleError && e.code === "dtype_mismatch");
  assert.throws(() => clamp(a, 2, 1), (e) => e instanceof SpindleError && e.code === "invalid_argument");
  assert.throws(() => gelu(a, { approximate: "fast" as "tanh" }), TypeError);
  assert.throws(() => relu(3 as unknown as Tensor), TypeError);
});

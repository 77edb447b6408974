/**
 * Elementwise ops: binary operators with NumPy broadcasting and scalar operands, and unary
 * functions. Pairs with zig/src/kernels/elementwise.zig.
 *
 * @module
 */
import { Tensor } from "../tensor.ts";
import { defineOp, describe, type OpCall, requireNumber, requireTensor } from "./dispatch.ts";

/** A tensor or a plain number (broadcast as a scalar). */
export type Operand = Tensor | number;

function scalarOperand(name: string, what: string, value: unknown): number {
  if (typeof value !== "number") {
    throw new TypeError(`${name}: ${what} must be a Tensor or a number, got ${describe(value)}`);
  }
  return value;
}

type BinaryOp = "add" | "sub" | "mul" | "div" | "pow" | "maximum" | "minimum";
type UnaryOp = "relu" | "sigmoid" | "tanh" | "exp" | "log" | "sqrt" | "neg" | "abs" | "erf" | "hard_swish";

function binaryCall(name: string, a: Operand, b: Operand): OpCall<BinaryOp> {
  if (a instanceof Tensor && b instanceof Tensor) return { inputs: [a, b], params: {} };
  // A NaN or infinite scalar is a number like any other (x + NaN is NaN everywhere).
  if (a instanceof Tensor) return { inputs: [a], params: { scalar: scalarOperand(name, "other", b) } };
  if (b instanceof Tensor) {
    return { inputs: [b], params: { scalar: scalarOperand(name, "input", a), scalar_first: true } };
  }
  throw new TypeError(`${name}: at least one operand must be a Tensor, got ${describe(a)} and ${describe(b)}`);
}

function binary(op: BinaryOp, name: string): (a: Operand, b: Operand) => Tensor {
  return defineOp(op, name, (a: Operand, b: Operand) => binaryCall(name, a, b));
}

function unary(op: UnaryOp, name: string): (x: Tensor) => Tensor {
  return defineOp(op, name, (x: Tensor) => ({ inputs: [requireTensor(name, "input", x)], params: {} }));
}

/**
 * `a + b`, elementwise, with broadcasting; either operand may be a number.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { add, tensor } from "@spindle/spindle";
 * using a = tensor([1, 2, 3, 4], [2, 2]);
 * using b = tensor([10, 20]);
 * using c = add(a, b); // b broadcast over rows
 * assert.deepEqual([...c.toArray()], [11, 22, 13, 24]);
 * ```
 */
export const add: (a: Operand, b: Operand) => Tensor = binary("add", "add");

/**
 * `a - b`, elementwise, with broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sub, tensor } from "@spindle/spindle";
 * using c = sub(1, tensor([1, 2]));
 * assert.deepEqual([...c.toArray()], [0, -1]);
 * ```
 */
export const sub: (a: Operand, b: Operand) => Tensor = binary("sub", "sub");

/**
 * `a * b`, elementwise, with broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mul, tensor } from "@spindle/spindle";
 * using c = mul(tensor([1, 2]), 3);
 * assert.deepEqual([...c.toArray()], [3, 6]);
 * ```
 */
export const mul: (a: Operand, b: Operand) => Tensor = binary("mul", "mul");

/**
 * `a / b`, elementwise, with broadcasting (IEEE: x / 0 = ±inf).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { div, tensor } from "@spindle/spindle";
 * using c = div(tensor([1, 2]), 2);
 * assert.deepEqual([...c.toArray()], [0.5, 1]);
 * ```
 */
export const div: (a: Operand, b: Operand) => Tensor = binary("div", "div");

/**
 * `a ** b`, elementwise, with broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { pow, tensor } from "@spindle/spindle";
 * using c = pow(tensor([2, 3]), 2);
 * assert.deepEqual([...c.toArray()], [4, 9]);
 * ```
 */
export const pow: (a: Operand, b: Operand) => Tensor = binary("pow", "pow");

/**
 * Elementwise maximum (NaN propagates), with broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { maximum, tensor } from "@spindle/spindle";
 * using c = maximum(tensor([1, 5]), tensor([3, 2]));
 * assert.deepEqual([...c.toArray()], [3, 5]);
 * ```
 */
export const maximum: (a: Operand, b: Operand) => Tensor = binary("maximum", "maximum");

/**
 * Elementwise minimum (NaN propagates), with broadcasting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { minimum, tensor } from "@spindle/spindle";
 * using c = minimum(tensor([1, 5]), 2);
 * assert.deepEqual([...c.toArray()], [1, 2]);
 * ```
 */
export const minimum: (a: Operand, b: Operand) => Tensor = binary("minimum", "minimum");

/**
 * max(x, 0), elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { relu, tensor } from "@spindle/spindle";
 * using y = relu(tensor([-1, 2]));
 * assert.deepEqual([...y.toArray()], [0, 2]);
 * ```
 */
export const relu: (x: Tensor) => Tensor = unary("relu", "relu");

/** Options of {@link gelu}. */
export interface GeluOptions {
  /** `"none"` (exact, with erf; the default) or `"tanh"` (the tanh approximation). */
  approximate?: "none" | "tanh";
}

/**
 * GELU: x·Φ(x), exact (erf) or with the tanh approximation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gelu, tensor } from "@spindle/spindle";
 * using y = gelu(tensor([0, 1]), { approximate: "tanh" });
 * const [atZero, atOne] = y.toArray();
 * assert.equal(atZero, 0);
 * assert.ok(Math.abs(Number(atOne) - 0.8412) < 1e-4);
 * ```
 */
export const gelu: (x: Tensor, options?: GeluOptions) => Tensor = defineOp(
  "gelu",
  "gelu",
  (x: Tensor, options: GeluOptions = {}) => {
    const approximate = options.approximate ?? "none";
    if (approximate !== "none" && approximate !== "tanh") {
      throw new TypeError(`gelu: approximate must be "none" or "tanh", got ${describe(approximate)}`);
    }
    return { inputs: [requireTensor("gelu", "input", x)], params: { approximate } };
  },
);

/**
 * 1 / (1 + e^-x), elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sigmoid, tensor } from "@spindle/spindle";
 * using y = sigmoid(tensor([0]));
 * assert.ok(Math.abs(Number(y.toArray()[0]) - 0.5) < 1e-6);
 * ```
 */
export const sigmoid: (x: Tensor) => Tensor = unary("sigmoid", "sigmoid");

/**
 * Hyperbolic tangent, elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tanh, tensor } from "@spindle/spindle";
 * using y = tanh(tensor([0]));
 * assert.ok(Math.abs(Number(y.toArray()[0])) < 1e-6);
 * ```
 */
export const tanh: (x: Tensor) => Tensor = unary("tanh", "tanh");

/**
 * e^x, elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exp, tensor } from "@spindle/spindle";
 * using y = exp(tensor([0]));
 * assert.ok(Math.abs(Number(y.toArray()[0]) - 1) < 1e-6);
 * ```
 */
export const exp: (x: Tensor) => Tensor = unary("exp", "exp");

/**
 * Natural logarithm, elementwise (log 0 = -inf, log of a negative = NaN).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { log, tensor } from "@spindle/spindle";
 * using y = log(tensor([1]));
 * assert.ok(Math.abs(Number(y.toArray()[0])) < 1e-6);
 * ```
 */
export const log: (x: Tensor) => Tensor = unary("log", "log");

/**
 * Square root, elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sqrt, tensor } from "@spindle/spindle";
 * using y = sqrt(tensor([4, 9]));
 * const [two, three] = y.toArray();
 * assert.ok(Math.abs(Number(two) - 2) < 1e-6 && Math.abs(Number(three) - 3) < 1e-6);
 * ```
 */
export const sqrt: (x: Tensor) => Tensor = unary("sqrt", "sqrt");

/**
 * -x, elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { neg, tensor } from "@spindle/spindle";
 * using y = neg(tensor([1]));
 * assert.deepEqual([...y.toArray()], [-1]);
 * ```
 */
export const neg: (x: Tensor) => Tensor = unary("neg", "neg");

/**
 * |x|, elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { abs, tensor } from "@spindle/spindle";
 * using y = abs(tensor([-2]));
 * assert.deepEqual([...y.toArray()], [2]);
 * ```
 */
export const abs: (x: Tensor) => Tensor = unary("abs", "abs");

/**
 * Clamps into [min, max]; either bound may be omitted (`undefined`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { clamp, tensor } from "@spindle/spindle";
 * using y = clamp(tensor([-5, 0.5, 5]), 0, 1);
 * assert.deepEqual([...y.toArray()], [0, 0.5, 1]);
 * ```
 */
export const clamp: (x: Tensor, min?: number, max?: number) => Tensor = defineOp(
  "clamp",
  "clamp",
  (x: Tensor, min?: number, max?: number) => {
    const low = min === undefined ? null : requireNumber("clamp", "min", min);
    const high = max === undefined ? null : requireNumber("clamp", "max", max);
    return { inputs: [requireTensor("clamp", "input", x)], params: { min: low, max: high } };
  },
);

/**
 * The error function, elementwise.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { erf, tensor } from "@spindle/spindle";
 * using y = erf(tensor([0]));
 * assert.ok(Math.abs(Number(y.toArray()[0])) < 1e-6);
 * ```
 */
export const erf: (x: Tensor) => Tensor = unary("erf", "erf");

/**
 * x for x ≥ 0, alpha·x below (default alpha 0.01).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { leakyRelu, tensor } from "@spindle/spindle";
 * using y = leakyRelu(tensor([-2, 3]), 0.5);
 * assert.deepEqual([...y.toArray()], [-1, 3]);
 * ```
 */
export const leakyRelu: (x: Tensor, alpha?: number) => Tensor = defineOp(
  "leaky_relu",
  "leakyRelu",
  (x: Tensor, alpha = 0.01) => ({
    inputs: [requireTensor("leakyRelu", "input", x)],
    params: { alpha: requireNumber("leakyRelu", "alpha", alpha) },
  }),
);

/**
 * x for x > 0, alpha·(exp(x) − 1) below (default alpha 1), as `torch.nn.functional.elu`.
 *
 * @example
 * ```ts
 * import { elu, tensor } from "@spindle/spindle";
 * using y = elu(tensor([-1, 0, 2]), 2);
 * const [a, b, c] = y.toArray() as Float32Array;
 * if (Math.abs(a - 2 * (Math.exp(-1) - 1)) > 1e-6 || b !== 0 || c !== 2) throw new Error("elu");
 * ```
 */
export const elu: (x: Tensor, alpha?: number) => Tensor = defineOp(
  "elu",
  "elu",
  (x: Tensor, alpha = 1) => ({
    inputs: [requireTensor("elu", "input", x)],
    params: { alpha: requireNumber("elu", "alpha", alpha) },
  }),
);

/**
 * max(0, min(1, alpha·x + beta)) (ONNX defaults alpha 0.2, beta 0.5).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hardSigmoid, tensor } from "@spindle/spindle";
 * using y = hardSigmoid(tensor([-10, 0, 10]));
 * assert.deepEqual([...y.toArray()], [0, 0.5, 1]);
 * ```
 */
export const hardSigmoid: (x: Tensor, alpha?: number, beta?: number) => Tensor = defineOp(
  "hard_sigmoid",
  "hardSigmoid",
  (x: Tensor, alpha = 0.2, beta = 0.5) => ({
    inputs: [requireTensor("hardSigmoid", "input", x)],
    params: { alpha: requireNumber("hardSigmoid", "alpha", alpha), beta: requireNumber("hardSigmoid", "beta", beta) },
  }),
);

/**
 * x · max(0, min(1, x/6 + 1/2)).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { hardSwish, tensor } from "@spindle/spindle";
 * using y = hardSwish(tensor([-4, 0, 4]));
 * assert.deepEqual([...y.toArray()], [-0, 0, 4]);
 * ```
 */
export const hardSwish: (x: Tensor) => Tensor = unary("hard_swish", "hardSwish");

/**
 * Recurrent layers as ONNX defines them (LSTM, GRU, RNN; sequence first): every direction,
 * optional initial states and per-row sequence lengths, the activations ONNX allows. Pairs
 * with zig/src/ops/recurrent.zig, whose single output packs Y and the final states; the
 * functions here return them as views.
 *
 * @module
 */
import type { Tensor } from "../tensor.ts";
import { defineOp, requireNumber, requireTensor } from "./dispatch.ts";
import { slice, squeeze } from "./shape.ts";

/** An activation of a recurrent cell (ONNX's names, in snake case). */
export type RecurrentActivationKind =
  | "sigmoid"
  | "tanh"
  | "relu"
  | "leaky_relu"
  | "thresholded_relu"
  | "scaled_tanh"
  | "hard_sigmoid"
  | "elu"
  | "softsign"
  | "softplus"
  | "affine";

/** The activation kinds in the order of their native codes (kernels/recurrent.zig `Kind`). */
export const RECURRENT_ACTIVATION_KINDS: readonly RecurrentActivationKind[] = [
  "sigmoid",
  "tanh",
  "relu",
  "leaky_relu",
  "thresholded_relu",
  "scaled_tanh",
  "hard_sigmoid",
  "elu",
  "softsign",
  "softplus",
  "affine",
];

/** The default alpha (and beta) of the kinds that take them, as ONNX's own ops have them. */
export const RECURRENT_ACTIVATION_DEFAULTS: Readonly<Partial<Record<RecurrentActivationKind, readonly number[]>>> = {
  leaky_relu: [0.01],
  thresholded_relu: [1],
  scaled_tanh: [1, 1],
  hard_sigmoid: [0.2, 0.5],
  elu: [1],
  affine: [1, 0],
};

/** An activation and its parameters (absent ones take the kind's defaults). */
export interface RecurrentActivation {
  /** Which function. */
  kind: RecurrentActivationKind;
  /** ONNX's alpha: the slope, threshold or scale of the kinds that take one. */
  alpha?: number;
  /** ONNX's beta: the offset or input scale of scaled_tanh, hard_sigmoid and affine. */
  beta?: number;
}

/** Options every recurrent layer takes. Tensors are sequence first (ONNX layout 0). */
export interface RecurrentOptions {
  /** Default "forward"; "bidirectional" runs both and stacks them as dim 1 of Y. */
  direction?: "forward" | "reverse" | "bidirectional";
  /** [directions, 2 · gates · hidden]: Wb then Rb. */
  bias?: Tensor;
  /** int32 or int64 [batch]: the steps each row runs (Y is zero past them). */
  sequenceLengths?: Tensor;
  /** [directions, batch, hidden]. */
  initialH?: Tensor;
  /** Clamps every gate's input to [-clip, clip]. */
  clip?: number;
  /** Per direction ONNX's f, g, h (LSTM: 3, GRU: 2, RNN: 1); one direction's list serves both. */
  activations?: readonly RecurrentActivation[];
}

/** LSTM's own options. */
export interface LstmOptions extends RecurrentOptions {
  /** [directions, batch, hidden]. */
  initialC?: Tensor;
  /** [directions, 3 · hidden]: input, output and forget peepholes. */
  peepholes?: Tensor;
  /** Couples the forget gate to the input gate (f = 1 − i). */
  inputForget?: boolean;
}

/** GRU's own options. */
export interface GruOptions extends RecurrentOptions {
  /** Applies the reset gate after the product with R_h (default false). */
  linearBeforeReset?: boolean;
}

/** The outputs of a recurrent layer: Y [seq, directions, batch, hidden] and the final states. */
export interface RecurrentOutputs {
  /** Every step's hidden state, [seq, directions, batch, hidden] (zero past a row's length). */
  y: Tensor;
  /** The final hidden state, [directions, batch, hidden]. */
  yH: Tensor;
  /** LSTM only: the final cell state. */
  yC?: Tensor;
}

type Cell = "lstm" | "gru" | "rnn";
const PER_DIRECTION: Record<Cell, number> = { lstm: 3, gru: 2, rnn: 1 };

/**
 * Native codes, alphas and betas of `activations`, for both directions when bidirectional
 * (a list for one direction is repeated); empty for the defaults.
 */
export function activationParams(
  name: string,
  cell: Cell,
  directions: number,
  activations: readonly RecurrentActivation[] = [],
): { activations: number[]; activation_alpha: number[]; activation_beta: number[] } {
  if (activations.length === 0) return { activations: [], activation_alpha: [], activation_beta: [] };
  const perDirection = PER_DIRECTION[cell];
  if (activations.length !== perDirection && activations.length !== perDirection * directions) {
    throw new RangeError(`${name}: ${activations.length} activations; it takes ${perDirection} per direction`);
  }
  const times = perDirection * directions / activations.length;
  const all = Array.from({ length: times }, () => activations).flat();
  return {
    activations: all.map((a) => {
      const code = RECURRENT_ACTIVATION_KINDS.indexOf(a.kind);
      if (code < 0) throw new TypeError(`${name}: unknown activation '${a.kind}'`);
      return code;
    }),
    activation_alpha: all.map((a) => a.alpha ?? RECURRENT_ACTIVATION_DEFAULTS[a.kind]?.[0] ?? 0),
    activation_beta: all.map((a) => a.beta ?? RECURRENT_ACTIVATION_DEFAULTS[a.kind]?.[1] ?? 0),
  };
}

function packedOp(cell: Cell) {
  return defineOp(cell, `${cell} (packed)`, (x: Tensor, w: Tensor, r: Tensor, options: LstmOptions & GruOptions) => {
    const direction = options.direction ?? "forward";
    const inputs = [requireTensor(cell, "x", x), requireTensor(cell, "w", w), requireTensor(cell, "r", r)];
    const optional = (value: Tensor | undefined, what: string) => {
      if (value !== undefined) inputs.push(requireTensor(cell, what, value));
      return value !== undefined;
    };
    return {
      inputs,
      params: {
        direction,
        clip: options.clip === undefined ? null : requireNumber(cell, "clip", options.clip),
        ...activationParams(cell, cell, direction === "bidirectional" ? 2 : 1, options.activations),
        linear_before_reset: options.linearBeforeReset ?? false,
        input_forget: options.inputForget ?? false,
        has_bias: optional(options.bias, "bias"),
        has_sequence_lens: optional(options.sequenceLengths, "sequenceLengths"),
        has_initial_h: optional(options.initialH, "initialH"),
        has_initial_c: optional(options.initialC, "initialC"),
        has_peepholes: optional(options.peepholes, "peepholes"),
      },
    };
  });
}

const packed = { lstm: packedOp("lstm"), gru: packedOp("gru"), rnn: packedOp("rnn") };

/** Runs `cell` and returns views of its packed output. */
function run(cell: Cell, x: Tensor, w: Tensor, r: Tensor, options: LstmOptions & GruOptions): RecurrentOutputs {
  using out = packed[cell](x, w, r, options);
  const states = cell === "lstm" ? 2 : 1;
  const state = (start: number) => {
    using row = start === -1 ? slice(out, 0, start) : slice(out, 0, start, start + 1);
    return squeeze(row, 0);
  };
  const y = slice(out, 0, 0, -states);
  const yH = state(-states);
  return cell === "lstm" ? { y, yH, yC: state(-1) } : { y, yH };
}

/**
 * An ONNX LSTM layer: x [seq, batch, input], w [directions, 4 · hidden, input] and
 * r [directions, 4 · hidden, hidden], gates in the order input, output, forget, cell.
 *
 * @param x The input sequence.
 * @param w The input weights.
 * @param r The recurrent weights.
 * @param options Direction, optional inputs and attributes.
 * @returns Y, the final hidden state and the final cell state.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lstm, zeros } from "@spindle/spindle";
 * using x = zeros([5, 2, 3]);
 * using w = zeros([1, 16, 3]);
 * using r = zeros([1, 16, 4]);
 * const { y, yH, yC } = lstm(x, w, r);
 * assert.deepEqual(y.shape, [5, 1, 2, 4]);
 * assert.deepEqual(yH.shape, [1, 2, 4]);
 * for (const t of [y, yH, yC!]) t.dispose();
 * ```
 */
export function lstm(x: Tensor, w: Tensor, r: Tensor, options: LstmOptions = {}): RecurrentOutputs {
  return run("lstm", x, w, r, options);
}

/**
 * An ONNX GRU layer: w [directions, 3 · hidden, input] and r [directions, 3 · hidden,
 * hidden], gates in the order update, reset, hidden.
 *
 * @param x The input sequence [seq, batch, input].
 * @param w The input weights.
 * @param r The recurrent weights.
 * @param options Direction, optional inputs and attributes.
 * @returns Y and the final hidden state.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { gru, ones, zeros } from "@spindle/spindle";
 * using x = ones([4, 1, 2]);
 * using w = zeros([2, 9, 2]);
 * using r = zeros([2, 9, 3]);
 * const { y, yH } = gru(x, w, r, { direction: "bidirectional" });
 * assert.deepEqual(y.shape, [4, 2, 1, 3]);
 * assert.deepEqual([...yH.toArray()], [0, 0, 0, 0, 0, 0]);
 * y.dispose();
 * yH.dispose();
 * ```
 */
export function gru(x: Tensor, w: Tensor, r: Tensor, options: GruOptions = {}): RecurrentOutputs {
  return run("gru", x, w, r, options);
}

/**
 * An ONNX RNN layer: H = f(x·Wᵀ + H·Rᵀ + Wb + Rb), f = tanh unless `activations` says.
 *
 * @param x The input sequence [seq, batch, input].
 * @param w The input weights [directions, hidden, input].
 * @param r The recurrent weights [directions, hidden, hidden].
 * @param options Direction, optional inputs and attributes.
 * @returns Y and the final hidden state.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rnn, tensor } from "@spindle/spindle";
 * using x = tensor([1, 2, 3], [3, 1, 1]);
 * using w = tensor([1], [1, 1, 1]);
 * using r = tensor([1], [1, 1, 1]);
 * const { y, yH } = rnn(x, w, r, { activations: [{ kind: "relu" }] });
 * assert.deepEqual([...y.toArray()], [1, 3, 6]); // running sums
 * assert.deepEqual([...yH.toArray()], [6]);
 * y.dispose();
 * yH.dispose();
 * ```
 */
export function rnn(x: Tensor, w: Tensor, r: Tensor, options: RecurrentOptions = {}): RecurrentOutputs {
  return run("rnn", x, w, r, options);
}

/**
 * The threading spec's example model, eagerly: `forward(x) = mm(x, Wy) + wait(fork(mm, x, Wz))`.
 * One branch runs on the inter-op pool while the other runs on the calling thread; both
 * GEMMs use the intra-op pool.
 *
 * @module
 */
import { add } from "../ops/elementwise.ts";
import { mm } from "../ops/linalg.ts";
import { fork, wait } from "../future.ts";
import { randn, type Tensor, tensor } from "../tensor.ts";

/** Sizes of the example model. */
export interface ExampleConfig {
  /** Rows of the input (requests batched together). */
  batch: number;
  /** Width of the input and of both weight matrices. */
  hidden: number;
  /** Seed of the weights and of the input. */
  seed: number;
}

/** The default size: a 64×1024 input through two 1024×1024 layers. */
export const EXAMPLE_DEFAULTS: ExampleConfig = { batch: 64, hidden: 1024, seed: 0 };

/**
 * The example model with fixed-seed weights.
 *
 * @example
 * ```ts
 * import { ExampleModel } from "@spindle/spindle";
 * using model = new ExampleModel({ batch: 2, hidden: 8, seed: 0 });
 * using x = model.input();
 * using y = model.forward(x);
 * console.log(y.shape); // [2, 8]
 * ```
 */
export class ExampleModel {
  /** The model's sizes. */
  readonly config: ExampleConfig;
  readonly #wY: Tensor;
  readonly #wZ: Tensor;

  /**
   * Builds the model with fixed-seed weights.
   *
   * @param config Sizes and seed; defaults to {@link EXAMPLE_DEFAULTS}.
   */
  constructor(config: Partial<ExampleConfig> = {}) {
    this.config = { ...EXAMPLE_DEFAULTS, ...config };
    const scale = 1 / Math.sqrt(this.config.hidden);
    const { hidden, seed } = this.config;
    this.#wY = scaled(randn([hidden, hidden], { seed: seed + 1 }), scale);
    this.#wZ = scaled(randn([hidden, hidden], { seed: seed + 2 }), scale);
  }

  /**
   * A fixed-seed input of the configured size.
   *
   * @returns A [batch, hidden] tensor.
   */
  input(): Tensor {
    return randn([this.config.batch, this.config.hidden], { seed: this.config.seed + 3 });
  }

  /**
   * Runs the forward pass.
   *
   * @param x Input [batch, hidden].
   * @returns Output [batch, hidden].
   */
  forward(x: Tensor): Tensor {
    const future = fork(mm, x, this.#wZ); // launched on the inter-op pool
    using y = mm(x, this.#wY); // runs meanwhile on this thread
    using z = wait(future); // join
    return add(y, z);
  }

  /** Frees the weights. */
  dispose(): void {
    this.#wY.dispose();
    this.#wZ.dispose();
  }

  /** Same as {@link ExampleModel.dispose}. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Scales a weight matrix in place of an elementwise op (which arrives with the kernels). */
function scaled(weights: Tensor, factor: number): Tensor {
  using source = weights;
  const values = source.toArray() as Float32Array;
  for (let i = 0; i < values.length; i++) values[i] *= factor;
  return tensor(values, [...source.shape]);
}

/**
 * The embedded models used by `infer`, with fixed-seed weights, built by scripting eager
 * code: `example` (the threading spec's fork/wait example, the default), `mlp`, `resnet` (a
 * small ResNet-style CNN), `dlrm`
 * (embedding bags and MLPs, its independent towers forked) and `transformer` (an encoder
 * block with its attention heads forked).
 *
 * @module
 */
import { Module } from "../module.ts";
import { checkPrecision, type Precision } from "../program/program.ts";
import { script } from "../script/script.ts";
import { fork, wait } from "../future.ts";
import { add, gelu, mul, relu, sigmoid } from "../ops/elementwise.ts";
import { mm } from "../ops/linalg.ts";
import { layerNorm } from "../ops/normalization.ts";
import { softmax } from "../ops/reduction.ts";
import { embeddingBag } from "../ops/embedding.ts";
import { concat, flatten, slice, transpose } from "../ops/shape.ts";
import { conv2d } from "../ops/conv.ts";
import { adaptiveAvgPool2d, maxPool2d } from "../ops/pooling.ts";
import { batchNorm } from "../ops/normalization.ts";
import { rand } from "../tensor.ts";
import { randn, type Tensor, tensor } from "../tensor.ts";

/**
 * Options of a built-in model.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { builtin, type BuiltinOptions } from "@spindle/spindle";
 * const options: BuiltinOptions = { batch: 3, seed: 1 };
 * using model = builtin("mlp", options);
 * assert.equal(model.inputMetadata[0].shape[0], 3);
 * ```
 */
export interface BuiltinOptions {
  /** Rows per request (default per model). */
  batch?: number;
  /** Seed of the weights (default 0); inputs use seed + 1000. */
  seed?: number;
  /** "bf16" runs its matrix products in bf16 (see `LoadOptions.precision`); default "f32". */
  precision?: Precision;
}

/**
 * A built-in model ready to run: the module and a matching fixed-seed request.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type BuiltinModel, builtinModel } from "@spindle/spindle";
 * const model: BuiltinModel = builtinModel("mlp", { batch: 1 });
 * const inputs = model.inputs();
 * using scripted = model.module.forwardSync(...inputs);
 * using eager = model.eager(...inputs);
 * assert.deepEqual(scripted.shape, eager.shape);
 * inputs.forEach((t) => t.dispose());
 * model.dispose();
 * ```
 */
export interface BuiltinModel {
  /** The scripted module. */
  module: Module;
  /** Fixed-seed inputs for one request (the caller disposes them). */
  inputs(): Tensor[];
  /** A one-line description of the model's shape. */
  summary: string;
  /** Runs the same forward function eagerly, op by op from TypeScript (for comparisons). */
  eager(...inputs: Tensor[]): Tensor;
  /** Frees the weights and the module. */
  dispose(): void;
}

interface Definition {
  defaultBatch: number;
  build(batch: number, seed: number, precision: Precision): BuiltinModel;
}

/** Weights with variance 1/fanIn (He-like scaling keeps activations bounded). */
function weight(rows: number, columns: number, seed: number): Tensor {
  using raw = randn([rows, columns], { seed });
  return mul(raw, 1 / Math.sqrt(rows));
}

function finish(
  precision: Precision,
  fn: (...args: Tensor[]) => Tensor,
  name: string,
  weights: Tensor[],
  inputs: () => Tensor[],
  summary: string,
): BuiltinModel {
  const example = inputs();
  try {
    const module = Module.fromScript(script(fn, name), example, { name, precision });
    return {
      module,
      inputs,
      summary,
      eager: fn,
      dispose() {
        module.dispose();
        for (const w of weights) w.dispose();
      },
    };
  } finally {
    for (const t of example) t.dispose();
  }
}

const example: Definition = {
  defaultBatch: 64,
  build(batch, seed, precision) {
    const hidden = 1024;
    const wY = weight(hidden, hidden, seed + 1);
    const wZ = weight(hidden, hidden, seed + 2);
    const computeZ = script((x: Tensor) => mm(x, wZ), "compute_z");
    const forward = (x: Tensor) => {
      const future = fork(computeZ, x); // launched on the inter-op pool
      const y = mm(x, wY); // runs meanwhile on this inference thread
      return add(y, wait(future)); // join
    };
    return finish(
      precision,
      forward,
      "example",
      [wY, wZ],
      () => [randn([batch, hidden], { seed: seed + 1000 })],
      `example: mm(x, Wy) + wait(fork(mm(x, Wz))), x ${batch}x${hidden}, W ${hidden}x${hidden}`,
    );
  },
};

const mlp: Definition = {
  defaultBatch: 32,
  build(batch, seed, precision) {
    const sizes = [512, 1024, 1024, 512, 10];
    const layers = sizes.slice(1).map((out, i) => ({
      w: weight(sizes[i], out, seed + 10 + i),
      b: randn([out], { seed: seed + 20 + i }),
    }));
    const forward = (x: Tensor) => {
      let h = x;
      layers.forEach(({ w, b }, i) => {
        const z = add(mm(h, w), b);
        h = i === layers.length - 1 ? softmax(z, -1) : i % 2 === 0 ? relu(z) : gelu(z);
      });
      return h;
    };
    return finish(
      precision,
      forward,
      "mlp",
      layers.flatMap(({ w, b }) => [w, b]),
      () => [randn([batch, sizes[0]], { seed: seed + 1000 })],
      `mlp: ${sizes.join(" -> ")} (relu/gelu, softmax), batch ${batch}`,
    );
  },
};

const dlrm: Definition = {
  defaultBatch: 64,
  build(batch, seed, precision) {
    const tables = 8;
    const rows = 20_000;
    const width = 64;
    const lookups = 20;
    const denseWidth = 13;
    const tableWeights = Array.from({ length: tables }, (_, t) => randn([rows, width], { seed: seed + 100 + t }));
    const bottom = [denseWidth, 256, 128, width].slice(1).map((out, i, all) =>
      weight(i === 0 ? denseWidth : all[i - 1], out, seed + 200 + i)
    );
    const interaction = width * (tables + 1);
    const topSizes = [interaction, 512, 256, 1];
    const top = topSizes.slice(1).map((out, i) => weight(topSizes[i], out, seed + 300 + i));
    const mlpTower = (x: Tensor, layers: Tensor[]) => layers.reduce((h, w) => relu(mm(h, w)), x);
    const bottomTower = script((dense: Tensor) => mlpTower(dense, bottom), "bottom_mlp");
    const bagTowers = tableWeights.map((table, t) =>
      script((indices: Tensor, offsets: Tensor) => embeddingBag(table, indices, offsets, { mode: "sum" }), `bag_${t}`)
    );
    const forward = (dense: Tensor, offsets: Tensor, ...indices: Tensor[]) => {
      // The towers are independent: fork them all, then join for the interaction.
      const futures = [fork(bottomTower, dense), ...bagTowers.map((tower, t) => fork(tower, indices[t], offsets))];
      const features = concat(futures.map((f) => wait(f)), 1);
      const hidden = top.slice(0, -1).reduce((h, w) => relu(mm(h, w)), features);
      return sigmoid(mm(hidden, top[top.length - 1]));
    };
    const inputs = () => {
      const ids = Array.from({ length: tables }, (_, t) => {
        const values = new BigInt64Array(batch * lookups);
        let state = BigInt(seed + 1000 + t) | 1n;
        for (let i = 0; i < values.length; i++) {
          state = (state * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn;
          values[i] = (state >> 33n) % BigInt(rows);
        }
        return tensor(values, [batch * lookups]);
      });
      const offsets = tensor(Array.from({ length: batch }, (_, b) => b * lookups), [batch], { dtype: "int64" });
      return [randn([batch, denseWidth], { seed: seed + 1000 }), offsets, ...ids];
    };
    return finish(
      precision,
      forward,
      "dlrm",
      [...tableWeights, ...bottom, ...top],
      inputs,
      `dlrm: ${tables} tables ${rows}x${width} (${lookups} lookups/bag), bottom 13-256-128-64, top ${
        topSizes.join("-")
      }, batch ${batch}`,
    );
  },
};

const transformer: Definition = {
  defaultBatch: 4,
  build(batch, seed, precision) {
    const length = 64;
    const model = 256;
    const heads = 4;
    const headWidth = model / heads;
    const headWeights = Array.from({ length: heads }, (_, h) => ({
      q: weight(model, headWidth, seed + 10 * h + 1),
      k: weight(model, headWidth, seed + 10 * h + 2),
      v: weight(model, headWidth, seed + 10 * h + 3),
    }));
    const output = weight(model, model, seed + 100);
    const up = weight(model, 4 * model, seed + 101);
    const down = weight(4 * model, model, seed + 102);
    const scale = 1 / Math.sqrt(headWidth);
    const heads_ = headWeights.map(({ q, k, v }, h) =>
      script((x: Tensor) => {
        const queries = mm(x, q);
        const keys = mm(x, k);
        const values = mm(x, v);
        // Attention within each sequence of the batch (rows [b·length, (b+1)·length)).
        const parts = Array.from({ length: batch }, (_, b) => {
          const rows = (t: Tensor) => slice(t, 0, b * length, (b + 1) * length);
          const scores = mul(mm(rows(queries), transpose(rows(keys), 0, 1)), scale);
          return mm(softmax(scores, -1), rows(values));
        });
        return parts.length === 1 ? parts[0] : concat(parts, 0);
      }, `head_${h}`)
    );
    const forward = (x: Tensor) => {
      const futures = heads_.map((head) => fork(head, x)); // heads run on the inter-op pool
      const attention = mm(concat(futures.map((f) => wait(f)), 1), output);
      const normed = layerNorm(add(x, attention), [model]);
      const feedForward = mm(gelu(mm(normed, up)), down);
      return layerNorm(add(normed, feedForward), [model]);
    };
    return finish(
      precision,
      forward,
      "transformer",
      [...headWeights.flatMap(({ q, k, v }) => [q, k, v]), output, up, down],
      () => [randn([batch * length, model], { seed: seed + 1000 })],
      `transformer: encoder block, ${batch} sequences x ${length} tokens, width ${model}, ${heads} heads forked`,
    );
  },
};

const resnet: Definition = {
  defaultBatch: 1,
  build(batch, seed, precision) {
    const weights: Tensor[] = [];
    let next = seed + 500;
    const keep = (t: Tensor) => {
      weights.push(t);
      return t;
    };
    // conv + batch norm (running statistics) + optional relu, as in torchvision's ResNet.
    const convBn = (inChannels: number, outChannels: number, kernel: number) => {
      using raw = randn([outChannels, inChannels, kernel, kernel], { seed: next++ });
      const w = keep(mul(raw, Math.sqrt(2 / (inChannels * kernel * kernel))));
      const mean = keep(mul(randn([outChannels], { seed: next++ }), 0.1));
      const variance = keep(add(rand([outChannels], { seed: next++ }), 0.5));
      const gamma = keep(add(rand([outChannels], { seed: next++ }), 0.5));
      const beta = keep(mul(randn([outChannels], { seed: next++ }), 0.1));
      return (x: Tensor, stride: number, relu_: boolean) => {
        const y = batchNorm(
          conv2d(x, w, null, { stride, padding: Math.floor(kernel / 2) }),
          mean,
          variance,
          gamma,
          beta,
        );
        return relu_ ? relu(y) : y;
      };
    };
    const block = (inChannels: number, outChannels: number, stride: number) => {
      const first = convBn(inChannels, outChannels, 3);
      const second = convBn(outChannels, outChannels, 3);
      const shortcut = stride !== 1 || inChannels !== outChannels ? convBn(inChannels, outChannels, 1) : null;
      return (x: Tensor) => {
        const y = second(first(x, stride, true), 1, false);
        return relu(add(y, shortcut ? shortcut(x, stride, false) : x));
      };
    };
    const stem = convBn(3, 32, 3);
    const blocks = [block(32, 32, 1), block(32, 64, 2), block(64, 128, 2), block(128, 128, 1)];
    const head = keep(weight(128, 10, next++));
    const forward = (x: Tensor) => {
      let h = maxPool2d(stem(x, 1, true), 2, { stride: 2 });
      for (const b of blocks) h = b(h);
      return mm(flatten(adaptiveAvgPool2d(h, 1), 1), head); // logits
    };
    return finish(
      precision,
      forward,
      "resnet",
      weights,
      () => [randn([batch, 3, 64, 64], { seed: seed + 1000 })],
      `resnet: ResNet-style CNN (stem 3->32, 4 basic blocks to 128 channels, BN, max/avg pool), ${batch}x3x64x64`,
    );
  },
};

const DEFINITIONS: Record<string, Definition> = { example, mlp, resnet, dlrm, transformer };

/**
 * Names of the built-in models.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BUILTIN_NAMES } from "@spindle/spindle";
 * assert.ok(BUILTIN_NAMES.includes("example"));
 * ```
 */
export const BUILTIN_NAMES: readonly string[] = Object.keys(DEFINITIONS);

/**
 * Builds a built-in model with fixed-seed weights, and its fixed-seed request inputs.
 *
 * @param name One of {@link BUILTIN_NAMES} (`example`, `mlp`, `dlrm`, `transformer`).
 * @param options Batch and seed.
 * @returns The model; dispose it when done.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { builtinModel } from "@spindle/spindle";
 * const model = builtinModel("mlp", { batch: 2 });
 * const inputs = model.inputs();
 * using y = await model.module.forward(...inputs);
 * assert.deepEqual(y.shape, [2, 10]);
 * inputs.forEach((t) => t.dispose());
 * model.dispose();
 * ```
 */
export function builtinModel(name: string, options: BuiltinOptions = {}): BuiltinModel {
  const definition = DEFINITIONS[name];
  if (definition === undefined) {
    throw new RangeError(`unknown built-in model '${name}' (available: ${BUILTIN_NAMES.join(", ")})`);
  }
  const batch = options.batch ?? definition.defaultBatch;
  if (!Number.isInteger(batch) || batch <= 0) throw new RangeError(`batch must be a positive integer, got ${batch}`);
  const precision = checkPrecision(options.precision ?? "f32", "builtinModel");
  return definition.build(batch, options.seed ?? 0, precision);
}

/**
 * The module of a built-in model (its weights live as long as the module is used).
 *
 * @param name One of {@link BUILTIN_NAMES}.
 * @param options Batch and seed.
 * @returns The module.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { builtin } from "@spindle/spindle";
 * using model = builtin("example", { batch: 1 });
 * assert.deepEqual(model.inputMetadata[0].shape, [1, 1024]);
 * ```
 */
export function builtin(name: string, options: BuiltinOptions = {}): Module {
  return builtinModel(name, options).module;
}

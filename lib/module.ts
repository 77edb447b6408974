/**
 * Modules: a program (graphs + weights) with forward and run methods, loaded from a model
 * file, built from a scripted function, or embedded (`builtin`). `save` and `load` move them
 * to and from disk.
 *
 * @module
 */
import { SpindleError } from "../ffi/status.ts";
import { type DType, full, Tensor } from "./tensor.ts";
import { checkPrecision, type Precision, Program } from "./program/program.ts";
import { programFor, type ScriptFunction, scriptState } from "./script/script.ts";
import { decodeSource, encodeImage, type InputDescription } from "./program/format.ts";
import { importOnnx, type ImportOptions } from "./onnx/import.ts";
import { buildReport, type ProfileOptions, type ProfileReport } from "./profile.ts";

/**
 * An input or output of a module, as onnxruntime's `InferenceSession.inputMetadata` and
 * `outputMetadata` describe them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, relu, script, zeros } from "@spindle/spindle";
 * using x = zeros([2, 3]);
 * using model = Module.fromScript(script((input) => relu(input)), [x]);
 * assert.deepEqual(model.inputMetadata, [{ name: "input0", dtype: "float32", shape: [2, 3] }]);
 * ```
 */
export interface ValueMetadata {
  /** The name: the ONNX name, a name given to {@link Module.fromScript}, or `input0`, `output0`, … */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /**
   * Dimensions: a size, the name of a symbolic dimension (ONNX `dim_param`, e.g. `"batch"`),
   * or -1 for a dimension of any size that has no name.
   */
  readonly shape: readonly (number | string)[];
}

/**
 * Options of {@link Module.fromScript}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, script, type ScriptModuleOptions, tensor } from "@spindle/spindle";
 * const options: ScriptModuleOptions = { name: "identity", inputNames: ["x"], outputNames: ["y"] };
 * using x = tensor([1]);
 * using model = Module.fromScript(script((input) => input), [x], options);
 * assert.deepEqual([model.name, model.inputNames, model.outputNames], ["identity", ["x"], ["y"]]);
 * ```
 */
export interface ScriptModuleOptions {
  /** A name for messages (default: the scripted function's name). */
  name?: string;
  /** Names of the inputs, one per example input (default `input0`, `input1`, …). */
  inputNames?: readonly string[];
  /** Names of the outputs, one per tensor the function returns (default `output0`, …). */
  outputNames?: readonly string[];
  /**
   * The most tensor bytes one run of the module may hold at once (default 4 GiB,
   * `DEFAULT_MEMORY_BUDGET`); a run that would need more fails with `too_large`.
   */
  memoryBudget?: number;
  /**
   * "bf16" runs the module's convolutions and matrix products in bf16 with f32 accumulation
   * (weights packed once, here); "f32" (the default) runs everything in f32. Where the CPU
   * has no bf16 kernel, bf16 falls back to f32 with one console warning.
   */
  precision?: Precision;
}

/**
 * Feeds or results of {@link Module.run}: tensors by input or output name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, type NamedTensors, neg, script, tensor } from "@spindle/spindle";
 * using x = tensor([1]);
 * using model = Module.fromScript(script((input) => neg(input)), [x]);
 * const feeds: NamedTensors = { input0: x };
 * const results: NamedTensors = model.runSync(feeds);
 * assert.deepEqual(Object.keys(results), ["output0"]);
 * results.output0.dispose();
 * ```
 */
export type NamedTensors = Record<string, Tensor>;

let createModule: (program: Program, name: string) => Module;
let runUnreported: (module: Module, inputs: Tensor[], inline: boolean) => Tensor[] | Promise<Tensor[]>;

/**
 * {@link Module.forwardAll}, whose outputs are not reported to V8 as external memory (see
 * lib/tensor.ts): for a caller that disposes them as soon as it has read them, as the server
 * does (each request's 100 KB+ output counted brought V8's next full collection closer:
 * 54 µs of collection per request for builtin:example's 256 KB output, profiled).
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param module The module.
 * @param inputs Its inputs.
 * @returns Its outputs.
 */
export function forwardAllUnreported(module: Module, inputs: Tensor[]): Promise<Tensor[]> {
  return runUnreported(module, inputs, false) as Promise<Tensor[]>;
}

/**
 * {@link Module.forwardAllSync} with outputs not reported to V8, as
 * {@link forwardAllUnreported}.
 *
 * @ignore Internal: for the server (lib/serve), not part of the public API.
 * @param module The module.
 * @param inputs Its inputs.
 * @returns Its outputs.
 */
export function forwardAllSyncUnreported(module: Module, inputs: Tensor[]): Tensor[] {
  return runUnreported(module, inputs, true) as Tensor[];
}

/**
 * A model. Run it the way PyTorch users call a module — `forward(...inputs)` returns its
 * output, `forwardAll(...inputs)` every output of a model that has several — or the way
 * onnxruntime users run a session — `run({ [inputName]: tensor })` returns the outputs by
 * name, described by `inputNames`, `outputNames`, `inputMetadata` and `outputMetadata`.
 * The asynchronous methods run off the JavaScript thread, on Spindle's inference threads (at
 * most `getNumInferenceThreads()` at once, the rest queued); the `…Sync` ones run on the
 * calling thread. A model whose runs take under 50 µs runs its asynchronous calls on the
 * calling thread too while none is pending, since the hop to another thread would cost as
 * much as the run. An asynchronous call holds
 * its inputs and the module's program from the moment it is made until it settles, so
 * disposing them meanwhile (as `using` does at the end of a scope) is safe. Each run holds
 * at most the module's memory budget of tensors at once (the `memoryBudget` option of
 * {@link load} and {@link Module.fromScript}, default 4 GiB); a request that would need more
 * fails with a `SpindleError` of code `too_large`, naming the tensor and its bytes, before
 * allocating it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, mm, randn, relu, script } from "@spindle/spindle";
 * using w = randn([8, 8], { seed: 0 });
 * using x = randn([2, 8], { seed: 1 });
 * using model = Module.fromScript(script((input) => relu(mm(input, w))), [x], { inputNames: ["x"] });
 * using y = await model.forward(x); // PyTorch style
 * const { output0 } = await model.run({ x }); // onnxruntime style
 * using z = output0;
 * assert.deepEqual(y.shape, [2, 8]);
 * assert.deepEqual(y.toArray(), z.toArray());
 * ```
 */
export class Module {
  /** A name for messages and reports. */
  readonly name: string;
  readonly #program: Program;
  readonly #inputs: readonly ValueMetadata[];
  #outputs: readonly ValueMetadata[] | null = null;

  static {
    createModule = (program, name) => new Module(program, name);
    runUnreported = (module, inputs, inline) => {
      module.#checkInputs(inline ? "forwardAllSync" : "forwardAll", inputs);
      return inline ? module.#program.runSync(inputs, false) : module.#program.run(inputs, false);
    };
  }

  /** @ignore Modules come from {@link load}, {@link Module.fromScript} and `builtin`. */
  private constructor(program: Program, name: string) {
    this.#program = program;
    this.name = name;
    this.#inputs = metadata(program.description.graphs[0].inputs, "input");
  }

  /**
   * Traces a scripted function on example inputs into a module.
   *
   * @param fn The scripted function.
   * @param exampleInputs Inputs of the shapes the module will take.
   * @param options Input and output names, a name for messages (or just that name), and the
   *   memory budget of each run.
   * @returns The module.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { add, Module, script, sub, tensor } from "@spindle/spindle";
   * const sumAndDifference = script((a, b) => [add(a, b), sub(a, b)]);
   * using a = tensor([5, 7]);
   * using b = tensor([1, 2]);
   * using model = Module.fromScript(sumAndDifference, [a, b], {
   *   inputNames: ["a", "b"],
   *   outputNames: ["sum", "difference"],
   * });
   * const { sum, difference } = model.runSync({ a, b });
   * assert.deepEqual([...sum.toArray(), ...difference.toArray()], [6, 9, 4, 5]);
   * sum.dispose();
   * difference.dispose();
   * ```
   */
  static fromScript(
    fn: ScriptFunction,
    exampleInputs: readonly Tensor[],
    options: ScriptModuleOptions | string = {},
  ): Module {
    const state = scriptState(fn);
    if (state === undefined) throw new TypeError("Module.fromScript: expected a function made by script()");
    if (options === null || (typeof options !== "object" && typeof options !== "string")) {
      throw new TypeError(
        `Module.fromScript: options must be an object ({ name, inputNames, outputNames }), got ${kind(options)}`,
      );
    }
    const { name, inputNames, outputNames, memoryBudget, precision } = typeof options === "string"
      ? { name: options }
      : options;
    if (precision !== undefined) checkPrecision(precision, "Module.fromScript");
    let program = programFor(fn, exampleInputs);
    if (
      inputNames !== undefined || outputNames !== undefined || memoryBudget !== undefined || precision !== undefined
    ) {
      const source = decodeSource(program.image);
      const entry = source.graphs[0];
      if (inputNames !== undefined) {
        checkNames("inputNames", inputNames, entry.inputs.length, "example input");
        entry.inputs.forEach((input, i) => input.name = inputNames[i]);
      }
      if (outputNames !== undefined) {
        checkNames("outputNames", outputNames, entry.outputs.length, `output of ${state.name}`);
        entry.results = entry.results?.map((result, i) => ({ ...result, name: outputNames[i] }));
      }
      program = Program.load(encodeImage(source), memoryBudget, precision);
    }
    return new Module(program, name ?? state.name);
  }

  /** The model file bytes (what {@link save} writes). */
  get image(): Uint8Array {
    return this.#program.image;
  }

  /**
   * The inputs as the model file describes them: dtype and shape (-1 = any size), and the
   * name and the names of symbolic dimensions where the model gives them (see
   * {@link Module.inputMetadata} for the names every input has).
   */
  get inputs(): readonly InputDescription[] {
    return this.#program.description.graphs[0].inputs;
  }

  /** The input names, in the order `forward` takes the inputs. */
  get inputNames(): readonly string[] {
    return this.#inputs.map((input) => input.name);
  }

  /** The output names, in the order `forwardAll` returns the outputs. */
  get outputNames(): readonly string[] {
    return this.outputMetadata.map((output) => output.name);
  }

  /** Name, dtype and shape of each input (symbolic dimensions as their names). */
  get inputMetadata(): readonly ValueMetadata[] {
    return this.#inputs;
  }

  /**
   * Name, dtype and shape of each output (symbolic dimensions as their names). A model file
   * that does not describe its outputs gets them from a run on zeros; there, when an input
   * has a dimension of any size, every output dimension reads -1.
   */
  get outputMetadata(): readonly ValueMetadata[] {
    this.#outputs ??= metadata(
      this.#program.description.graphs[0].results ?? probeOutputs(this.#program),
      "output",
    );
    return this.#outputs;
  }

  /**
   * Profiles the model: runs it `warmup` times, then `runs` times on the calling thread
   * timing every op node, and reports each node's mean time, share, shapes and (for
   * convolutions and matrix products) GFLOPS, slowest first — what `infer --profile` prints.
   * Forked branches run inline while profiling, so that each op is timed alone.
   *
   * @param inputs The model's inputs, in the order of {@link Module.inputNames}.
   * @param options Timed and warm-up runs.
   * @returns The profile (format it with `formatProfile`).
   * @throws {TypeError} for inputs that do not match the model's.
   * @throws {RangeError} for runs or warmup that are not non-negative integers (runs ≥ 1).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Module, mm, neg, randn, script } from "@spindle/spindle";
   * using w = randn([128, 128], { seed: 1 });
   * using x = randn([16, 128], { seed: 2 });
   * using model = Module.fromScript(script((a) => neg(mm(a, w))), [x]);
   * const report = model.profile([x], { runs: 5 });
   * assert.equal(report.ops.length, 2);
   * assert.ok(report.opMs <= report.totalMs);
   * ```
   */
  profile(inputs: readonly Tensor[], options: ProfileOptions = {}): ProfileReport {
    const runs = options.runs ?? 10;
    const warmup = options.warmup ?? 2;
    if (!Number.isSafeInteger(runs) || runs < 1) {
      throw new RangeError(`profile: runs must be an integer ≥ 1, got ${runs}`);
    }
    if (!Number.isSafeInteger(warmup) || warmup < 0) {
      throw new RangeError(`profile: warmup must be an integer ≥ 0, got ${warmup}`);
    }
    if (!Array.isArray(inputs)) throw new TypeError("profile: expected the inputs as an array of Tensors");
    this.#checkInputs("profile", inputs);
    for (let i = 0; i < warmup; i++) this.#program.runSync(inputs).forEach((t) => t.dispose());
    const samples = [];
    for (let i = 0; i < runs; i++) {
      const started = performance.now();
      const { outputs, records, count } = this.#program.profileSync(inputs);
      const totalMs = performance.now() - started;
      outputs.forEach((t) => t.dispose());
      samples.push({ records, count, totalMs });
    }
    return buildReport(this.#program.description, samples);
  }

  /**
   * Runs the forward pass on an inference thread (off the JavaScript thread; a model whose
   * runs take under 50 µs runs on the calling thread while no other call is pending).
   *
   * @param inputs The model's inputs, in the order of {@link Module.inputNames}.
   * @returns The output.
   * @throws {TypeError} for a model with several outputs (use {@link Module.forwardAll} or
   *   {@link Module.run}), or inputs that do not match the model's.
   * @throws {SpindleError} code `too_large` when the run would pass the memory budget.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Module, relu, script, tensor } from "@spindle/spindle";
   * using x = tensor([-1, 2]);
   * using model = Module.fromScript(script((input) => relu(input)), [x]);
   * using y = await model.forward(x);
   * assert.deepEqual([...y.toArray()], [0, 2]);
   * ```
   */
  async forward(...inputs: Tensor[]): Promise<Tensor> {
    this.#checkInputs("forward", inputs);
    this.#checkSingleOutput("forward");
    return (await this.#program.run(inputs))[0];
  }

  /**
   * Runs the forward pass on the calling thread.
   *
   * @param inputs The model's inputs, in the order of {@link Module.inputNames}.
   * @returns The output.
   * @throws {TypeError} for a model with several outputs (use {@link Module.forwardAllSync}
   *   or {@link Module.runSync}), or inputs that do not match the model's.
   * @throws {SpindleError} code `too_large` when the run would pass the memory budget.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Module, neg, script, tensor } from "@spindle/spindle";
   * using x = tensor([1, -2]);
   * using model = Module.fromScript(script((input) => neg(input)), [x]);
   * using y = model.forwardSync(x);
   * assert.deepEqual([...y.toArray()], [-1, 2]);
   * ```
   */
  forwardSync(...inputs: Tensor[]): Tensor {
    this.#checkInputs("forwardSync", inputs);
    this.#checkSingleOutput("forwardSync");
    return this.#program.runSync(inputs)[0];
  }

  /**
   * Runs the forward pass on an inference thread and returns every output.
   *
   * @param inputs The model's inputs, in the order of {@link Module.inputNames}.
   * @returns The outputs, in the order of {@link Module.outputNames}.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { max, min, Module, script, tensor } from "@spindle/spindle";
   * using x = tensor([3, 1, 2]);
   * using model = Module.fromScript(script((input) => [min(input), max(input)]), [x]);
   * const [low, high] = await model.forwardAll(x);
   * assert.deepEqual([...low.toArray(), ...high.toArray()], [1, 3]);
   * low.dispose();
   * high.dispose();
   * ```
   */
  async forwardAll(...inputs: Tensor[]): Promise<Tensor[]> {
    this.#checkInputs("forwardAll", inputs);
    return await this.#program.run(inputs);
  }

  /**
   * Runs the forward pass on the calling thread and returns every output.
   *
   * @param inputs The model's inputs, in the order of {@link Module.inputNames}.
   * @returns The outputs, in the order of {@link Module.outputNames}.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Module, script, tensor, transpose } from "@spindle/spindle";
   * using x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
   * using model = Module.fromScript(script((input) => [input, transpose(input, 0, 1)]), [x]);
   * const outputs = model.forwardAllSync(x);
   * assert.deepEqual(outputs.map((t) => t.shape), [[2, 3], [3, 2]]);
   * outputs.forEach((t) => t.dispose());
   * ```
   */
  forwardAllSync(...inputs: Tensor[]): Tensor[] {
    this.#checkInputs("forwardAllSync", inputs);
    return this.#program.runSync(inputs);
  }

  /**
   * Runs the model on inputs given by name, on an inference thread (off the JavaScript
   * thread), as onnxruntime's `InferenceSession.run` does.
   *
   * @param feeds One tensor per input, by input name ({@link Module.inputNames}).
   * @returns One tensor per output, by output name ({@link Module.outputNames}).
   * @throws {TypeError} naming the input, when one is missing, unknown or not a Tensor.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { add, Module, script, tensor } from "@spindle/spindle";
   * using a = tensor([1, 2]);
   * using b = tensor([10, 20]);
   * using model = Module.fromScript(script((x, y) => add(x, y)), [a, b], {
   *   inputNames: ["a", "b"],
   *   outputNames: ["total"],
   * });
   * const { total } = await model.run({ a, b });
   * assert.deepEqual([...total.toArray()], [11, 22]);
   * total.dispose();
   * ```
   */
  async run(feeds: Readonly<NamedTensors>): Promise<NamedTensors> {
    return this.#named(await this.#program.run(this.#inputsOf("run", feeds)));
  }

  /**
   * Runs the model on inputs given by name, on the calling thread.
   *
   * @param feeds One tensor per input, by input name ({@link Module.inputNames}).
   * @returns One tensor per output, by output name ({@link Module.outputNames}).
   * @throws {TypeError} naming the input, when one is missing, unknown or not a Tensor.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { Module, mul, script, tensor } from "@spindle/spindle";
   * using x = tensor([1, 2]);
   * using model = Module.fromScript(script((input) => mul(input, 3)), [x]);
   * assert.throws(() => model.runSync({ y: x }), TypeError); // unknown input 'y'; the model takes 'input0'
   * const { output0 } = model.runSync({ input0: x });
   * assert.deepEqual([...output0.toArray()], [3, 6]);
   * output0.dispose();
   * ```
   */
  runSync(feeds: Readonly<NamedTensors>): NamedTensors {
    return this.#named(this.#program.runSync(this.#inputsOf("runSync", feeds)));
  }

  /** Frees the native program. Idempotent. */
  dispose(): void {
    this.#program.dispose();
  }

  /** Same as {@link Module.dispose}. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  #expected(): string {
    return `${this.name} takes ${this.#inputs.length} input(s): ${this.inputNames.map((n) => `'${n}'`).join(", ")}`;
  }

  #checkInputs(method: string, inputs: readonly unknown[]): void {
    if (inputs.length !== this.#inputs.length) {
      throw new TypeError(`${method}: got ${inputs.length} input(s); ${this.#expected()}`);
    }
    inputs.forEach((input, i) => {
      if (!(input instanceof Tensor)) {
        throw new TypeError(`${method}: input ${i} ('${this.#inputs[i].name}') must be a Tensor, got ${kind(input)}`);
      }
    });
  }

  #checkSingleOutput(method: string): void {
    const count = this.#program.outputCount;
    if (count === 1) return;
    throw new TypeError(
      `${method}: ${this.name} has ${count} outputs (${this.outputNames.join(", ")}); use ` +
        `${method === "forward" ? "forwardAll() or run()" : "forwardAllSync() or runSync()"} to get all of them`,
    );
  }

  #inputsOf(method: string, feeds: Readonly<NamedTensors>): Tensor[] {
    if (feeds === null || typeof feeds !== "object" || Array.isArray(feeds) || feeds instanceof Tensor) {
      throw new TypeError(
        `${method}: expected an object of tensors by input name, got ${kind(feeds)}; ${this.#expected()}`,
      );
    }
    const names = this.inputNames;
    for (const key of Object.keys(feeds)) {
      if (!names.includes(key)) throw new TypeError(`${method}: unknown input '${key}'; ${this.#expected()}`);
    }
    return names.map((name) => {
      if (!Object.hasOwn(feeds, name)) throw new TypeError(`${method}: missing input '${name}'; ${this.#expected()}`);
      const value: unknown = feeds[name];
      if (!(value instanceof Tensor)) {
        throw new TypeError(`${method}: input '${name}' must be a Tensor, got ${kind(value)}; ${this.#expected()}`);
      }
      return value;
    });
  }

  #named(outputs: readonly Tensor[]): NamedTensors {
    const names = this.outputNames;
    return Object.fromEntries(outputs.map((t, i) => [names[i], t]));
  }
}

/** What a value is, for messages. */
function kind(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Tensor) return "a Tensor";
  return typeof value === "object" ? (value.constructor?.name ?? "an object") : typeof value;
}

/** Names every value (defaults `input0`, … when the model names none) and its symbolic dims. */
function metadata(values: readonly InputDescription[], prefix: string): ValueMetadata[] {
  return values.map((value, i) => ({
    name: value.name || `${prefix}${i}`,
    dtype: value.dtype,
    shape: value.shape.map((d, axis) => value.symbols?.[axis] ?? d),
  }));
}

/** The outputs' dtypes and shapes from a run on zeros (open input dimensions of size 1). */
function probeOutputs(program: Program): InputDescription[] {
  const specs = program.description.graphs[0].inputs;
  const open = specs.some((spec) => spec.shape.includes(-1));
  const inputs = specs.map((spec) => full(spec.shape.map((d) => (d === -1 ? 1 : d)), 0, { dtype: spec.dtype }));
  try {
    const outputs = program.runSync(inputs);
    const results = outputs.map((t) => ({ dtype: t.dtype, shape: t.shape.map((d) => (open ? -1 : d)) }));
    outputs.forEach((t) => t.dispose());
    return results;
  } finally {
    inputs.forEach((t) => t.dispose());
  }
}

function checkNames(option: string, names: readonly string[], count: number, what: string): void {
  if (!Array.isArray(names) || names.some((n) => typeof n !== "string" || n === "")) {
    throw new TypeError(`Module.fromScript: ${option} must be an array of non-empty strings, got ${kind(names)}`);
  }
  if (names.length !== count) {
    throw new RangeError(`Module.fromScript: ${option} has ${names.length} names; give one per ${what} (${count})`);
  }
  const repeated = names.find((n, i) => names.indexOf(n) !== i);
  if (repeated !== undefined) throw new TypeError(`Module.fromScript: ${option} names '${repeated}' twice`);
}

/**
 * Writes a module to a Spindle model file (a versioned header, the graph, and 64-byte-aligned
 * weights).
 *
 * @param module The module.
 * @param path Where to write.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { load, Module, randn, relu, save, script } from "@spindle/spindle";
 * using x = randn([2, 4], { seed: 0 });
 * using model = Module.fromScript(script((input) => relu(input)), [x], { inputNames: ["features"] });
 * const path = await Deno.makeTempFile({ suffix: ".spindle" });
 * await save(model, path);
 * using again = await load(path);
 * await Deno.remove(path);
 * assert.deepEqual(again.inputMetadata, [{ name: "features", dtype: "float32", shape: [2, 4] }]);
 * ```
 */
export async function save(module: Module, path: string | URL): Promise<void> {
  if (!(module instanceof Module)) throw new TypeError("save: expected a Module");
  await Deno.writeFile(path, module.image);
}

/** Files larger than this are refused before they are read (a model image is held whole). */
const MAX_MODEL_FILE_BYTES = 16 * 2 ** 30;

/** Reads a model file: a regular file of a sane size, with errors that name the path. */
async function readModelFile(path: string | URL, name: string): Promise<Uint8Array> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`load: no model file at '${name}' (check the path)`, { cause: error });
    }
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw new Deno.errors.PermissionDenied(`load: cannot read '${name}': run Deno with --allow-read`, {
        cause: error,
      });
    }
    throw error;
  }
  if (!info.isFile) {
    throw new TypeError(`load: '${name}' is not a regular file (a directory or a device); pass a model file`);
  }
  if (info.size > MAX_MODEL_FILE_BYTES) {
    throw new SpindleError(
      "too_large",
      `load: '${name}' is ${info.size} bytes, over the ${MAX_MODEL_FILE_BYTES}-byte limit`,
    );
  }
  return await Deno.readFile(path);
}

/**
 * Options of {@link load}: ONNX import's, and the precision the model runs in.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { load, type LoadOptions } from "@spindle/spindle";
 * const options: LoadOptions = { precision: "bf16" };
 * const wrong = { precision: "fp16" } as unknown as LoadOptions;
 * await assert.rejects(load("model.onnx", wrong), TypeError);
 * assert.equal(options.precision, "bf16");
 * ```
 */
export interface LoadOptions extends ImportOptions {
  /**
   * "bf16" runs convolutions (but depthwise ones), and matmul and gemm by a constant weight,
   * in bf16 with f32 accumulation: weights packed once at load (counted against the memory
   * budget), the other operand converted as it is packed. Everything else stays f32. "f32"
   * (the default) runs everything in f32. On a CPU without AVX512_BF16 or AMX (or with a
   * lower kernel level forced) bf16 loads f32 with one console warning per process.
   */
  precision?: Precision;
}

/**
 * Loads a Spindle model file, or an ONNX model (a path ending in `.onnx`, converted by
 * {@link importOnnx}, with its input and output names and symbolic dimensions). Everything
 * is validated natively; a malformed or truncated file is a `SpindleError` with code
 * `malformed_model`, never a crash.
 *
 * @param path The file.
 * @param options The memory budget of the load and of each run (`memoryBudget`, default
 *   4 GiB), the precision (`precision`, "f32" or "bf16"); for .onnx files also inputs to bake
 *   in and fixed sizes for dynamic input dims.
 * @returns The module.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { load, SpindleError } from "@spindle/spindle";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "not a model");
 * await assert.rejects(load(path), (error) => error instanceof SpindleError && error.code === "malformed_model");
 * await Deno.remove(path);
 * ```
 */
export async function load(path: string | URL, options: LoadOptions = {}): Promise<Module> {
  if (typeof path !== "string" && !(path instanceof URL)) {
    throw new TypeError(`load: the path must be a string or a URL, got ${path === null ? "null" : typeof path}`);
  }
  const precision = checkPrecision(options.precision ?? "f32", "load");
  const name = String(path);
  const bytes = await readModelFile(path, name);
  const image = name.toLowerCase().endsWith(".onnx") ? importOnnx(bytes, options) : bytes;
  return createModule(Program.load(image, options.memoryBudget, precision), name.split("/").pop() ?? name);
}

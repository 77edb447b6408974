/**
 * Modules: a program (graphs + weights) with a forward method, loaded from a model file,
 * built from a scripted function, or embedded (`builtin`). `save` and `load` move them to
 * and from disk.
 *
 * @module
 */
import type { Tensor } from "./tensor.ts";
import { Program } from "./script/program.ts";
import { programFor, type ScriptFunction, scriptState } from "./script/script.ts";
import type { InputDescription } from "./script/format.ts";
import { importOnnx, type ImportOptions } from "./onnx/import.ts";

/**
 * A model: forward runs its graph natively. `forward` runs off the JavaScript thread, so N
 * concurrent calls run as N inference threads; `forwardSync` runs on the calling thread.
 *
 * @example
 * ```ts
 * import { Module, mm, randn, relu, script } from "@spindle/spindle";
 * using w = randn([8, 8], { seed: 0 });
 * using x = randn([2, 8], { seed: 1 });
 * using model = Module.fromScript(script((input) => relu(mm(input, w))), [x]);
 * using y = await model.forward(x) as import("@spindle/spindle").Tensor;
 * console.log(y.shape); // [2, 8]
 * ```
 */
export class Module {
  /** A name for messages and reports. */
  readonly name: string;
  readonly #program: Program;

  /**
   * Wraps a loaded program.
   *
   * @param program The native program.
   * @param name A name for messages.
   */
  constructor(program: Program, name = "module") {
    this.#program = program;
    this.name = name;
  }

  /**
   * Traces a scripted function on example inputs into a module.
   *
   * @param fn The scripted function.
   * @param exampleInputs Inputs of the shapes the module will take.
   * @param name A name for messages.
   * @returns The module.
   */
  static fromScript(fn: ScriptFunction, exampleInputs: readonly Tensor[], name?: string): Module {
    if (scriptState(fn) === undefined) throw new TypeError("Module.fromScript: expected a function made by script()");
    return new Module(programFor(fn, exampleInputs), name ?? scriptState(fn)!.name);
  }

  /** The model file bytes (what {@link save} writes). */
  get image(): Uint8Array {
    return this.#program.image;
  }

  /** The inputs the module expects: dtype and shape (-1 = any size). */
  get inputs(): readonly InputDescription[] {
    return this.#program.description.graphs[0].inputs;
  }

  /**
   * Runs the forward pass on an inference thread (off the JavaScript thread).
   *
   * @param inputs The model's inputs.
   * @returns The output, or the outputs when the model has several.
   */
  async forward(...inputs: Tensor[]): Promise<Tensor | Tensor[]> {
    const outputs = await this.#program.run(inputs);
    return outputs.length === 1 ? outputs[0] : outputs;
  }

  /**
   * Runs the forward pass on the calling thread.
   *
   * @param inputs The model's inputs.
   * @returns The output, or the outputs when the model has several.
   */
  forwardSync(...inputs: Tensor[]): Tensor | Tensor[] {
    const outputs = this.#program.runSync(inputs);
    return outputs.length === 1 ? outputs[0] : outputs;
  }

  /** Frees the native program. Idempotent. */
  dispose(): void {
    this.#program.dispose();
  }

  /** Same as {@link Module.dispose}. */
  [Symbol.dispose](): void {
    this.dispose();
  }
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
 * import { load, Module, randn, relu, save, script } from "@spindle/spindle";
 * using x = randn([2, 4], { seed: 0 });
 * using model = Module.fromScript(script((input) => relu(input)), [x]);
 * const path = await Deno.makeTempFile({ suffix: ".spindle" });
 * await save(model, path);
 * using again = await load(path);
 * console.log(again.inputs[0].shape); // [2, 4]
 * ```
 */
export async function save(module: Module, path: string | URL): Promise<void> {
  if (!(module instanceof Module)) throw new TypeError("save: expected a Module");
  await Deno.writeFile(path, module.image);
}

/**
 * Loads a Spindle model file, or an ONNX model (a path ending in `.onnx`, converted by
 * {@link importOnnx}). Everything is validated natively; a malformed or truncated
 * file is a `SpindleError` with code `malformed_model`, never a crash.
 *
 * @param path The file.
 * @param options For .onnx files: inputs to bake in, fixed sizes for dynamic input dims.
 * @returns The module.
 *
 * @example
 * ```ts
 * import { load, SpindleError } from "@spindle/spindle";
 * const path = await Deno.makeTempFile();
 * await Deno.writeTextFile(path, "not a model");
 * try {
 *   await load(path);
 * } catch (error) {
 *   console.log(error instanceof SpindleError && error.code); // "malformed_model"
 * }
 * ```
 */
export async function load(path: string | URL, options: ImportOptions = {}): Promise<Module> {
  const name = String(path);
  const bytes = await Deno.readFile(path);
  const image = name.toLowerCase().endsWith(".onnx") ? importOnnx(bytes, options) : bytes;
  return new Module(Program.load(image), name.split("/").pop() ?? name);
}

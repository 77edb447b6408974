/**
 * ONNX import: an .onnx file (opsets 9–21) → a Spindle model image, loaded like any other
 * Spindle file. Constants fold at import, dynamic dimensions stay dynamic, and unsupported
 * models fail with one error that lists every op type Spindle lacks.
 *
 * @module
 */
import { SpindleError } from "../../ffi/status.ts";
import type { DType, Tensor } from "../tensor.ts";
import { bytesPerElement, tensor } from "../tensor.ts";
import { encodeImage, type InputDescription } from "../program/format.ts";
import { DEFAULT_MEMORY_BUDGET, withMemoryBudget } from "../program/program.ts";
import { decodeModel, type GraphProto, type ModelProto } from "./proto.ts";
import { capturedNames, CONTROL_OPS, convertControl, type Scope, Subgraphs } from "./control.ts";
import { fromProto, type Host, numel, onnxType, spindleDType } from "./host.ts";
import { type ConstValue, GraphBuilder, shapeOf, unsupported, type Value } from "./graph.ts";
import { HANDLERS, type NodeContext } from "./ops.ts";
import { indexConsumers, quantizedHandler } from "./quantized.ts";
import { dropDeadConstants, fuse } from "./fuse.ts";
import { fuseQuantizedChains } from "./fuse_int8.ts";
import { forkBranches } from "./branches.ts";

/**
 * Options of {@link importOnnx} and of `load` for .onnx files.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ImportOptions, load } from "@spindle/spindle";
 * const options: ImportOptions = { inputShapes: { image: [-1, 3, 224, 224] }, executionMode: "parallel" };
 * const path = await Deno.makeTempFile({ suffix: ".onnx" });
 * await Deno.writeFile(path, new Uint8Array([0x0a, 0xff])); // not a whole ONNX file
 * await assert.rejects(load(path, options));
 * await Deno.remove(path);
 * ```
 */
export interface ImportOptions {
  /**
   * Graph inputs to bake into the model as constants (by input name); the imported model
   * no longer takes them. Useful for shape-like inputs such as Reshape's target shape.
   */
  constantInputs?: Record<string, Tensor>;
  /**
   * Fixed sizes for inputs with dynamic dimensions (by input name), an optional hint: without
   * it, dynamic (symbolic) dimensions stay dynamic and the model runs at any size it allows,
   * its shape computations (Shape → Gather → Concat → Reshape, Range, Expand, …) kept as
   * int64 ops in the graph. Fixed sizes let the load-time check plan the run's memory. Use -1
   * to keep a dimension dynamic (e.g. the batch).
   */
  inputShapes?: Record<string, number[]>;
  /**
   * "parallel" runs independent branches of the graph (chains of ops that fan out from one
   * value and meet again) as fork/wait tasks on the inter-op pool, as ONNX Runtime's
   * parallel execution mode does; "sequential" (the default) runs every op on the calling
   * thread, so that a request uses only its intra-op threads.
   */
  executionMode?: "sequential" | "parallel";
  /**
   * The most tensor bytes held at once by import, by the load-time check and then by each
   * run of the module `load` returns (default 4 GiB): import runs the model's ops on
   * stand-in inputs, the load-time check runs the model on inputs of its declared shapes,
   * and a request's sizes decide a run's intermediates, so a file declaring absurd sizes or
   * an oversized request is refused with `too_large`, naming the tensor and its bytes,
   * instead of exhausting memory. Raise it for a model that needs more. (A parallel-mode
   * model's forked branches each run under a budget of this size of their own.)
   */
  memoryBudget?: number;
}

/** The op types (with their domain when not the default one) that import cannot handle. */
export function unsupportedOps(model: ModelProto): string[] {
  const missing = new Set<string>();
  const visit = (graph: GraphProto) => {
    for (const node of graph.nodes) {
      const defaultDomain = node.domain === "" || node.domain === "ai.onnx";
      if (!defaultDomain) {
        if (quantizedHandler(node.domain, node.opType) === undefined) missing.add(`${node.domain}.${node.opType}`);
      } else if (
        !Object.hasOwn(HANDLERS, node.opType) && !CONTROL_OPS.has(node.opType) &&
        quantizedHandler("", node.opType) === undefined
      ) {
        missing.add(node.opType);
      }
      for (const a of node.attributes) if (a.g !== undefined) visit(a.g);
    }
  };
  visit(model.graph);
  return [...missing].sort();
}

/**
 * Sizes a dynamic dimension takes in the two eager runs (dim 0, then any other dim). The
 * runs only tell the dtypes and static dims that fusions use (shape computations on dynamic
 * sizes stay in the graph as ops), but they must be sizes real models accept: multiples of
 * 64 suit CNN detectors whose feature maps halve five times and are added back together.
 */
const DYNAMIC_SIZES = [[2, 3], [64, 128]];

function malformed(message: string): never {
  throw new SpindleError("malformed_model", `malformed ONNX model: ${message}`);
}

function decode(bytes: Uint8Array): ModelProto {
  try {
    return decodeModel(bytes);
  } catch (error) {
    return malformed((error as Error).message);
  }
}

function hostOfTensor(t: Tensor): Host {
  const data = t.toArray();
  return {
    type: onnxType(t.dtype),
    shape: t.shape.slice(),
    values: data instanceof BigInt64Array ? Array.from(data, Number) : Array.from(data),
  };
}

/**
 * Converts an ONNX model into a Spindle model image (what `save` writes and `load` reads),
 * keeping the ONNX input and output names and symbolic dimension names.
 *
 * @param bytes The .onnx file.
 * @param options Inputs to bake in as constants.
 * @returns The image.
 * @throws {SpindleError} `malformed_model` for a truncated or inconsistent file,
 *   `unsupported` listing every op type (or feature) Spindle lacks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { importOnnx, SpindleError } from "@spindle/spindle";
 * assert.throws(
 *   () => importOnnx(new Uint8Array([0x0a, 0xff])), // a truncated file
 *   (error) => error instanceof SpindleError && error.code === "malformed_model",
 * );
 * ```
 */
export function importOnnx(bytes: Uint8Array, options: ImportOptions = {}): Uint8Array {
  if (!(bytes instanceof Uint8Array)) throw new TypeError("importOnnx: expected the file's bytes as a Uint8Array");
  const budget = options.memoryBudget ?? DEFAULT_MEMORY_BUDGET;
  try {
    return withMemoryBudget(budget, () => importWithin(bytes, options, budget));
  } catch (error) {
    // V8's own allocation failures (a huge constant or stand-in input) are the same refusal.
    if (
      error instanceof RangeError &&
      /allocation failed|Invalid typed array length|Invalid array length/.test(error.message)
    ) {
      throw new SpindleError(
        "too_large",
        `importOnnx: the model needs more memory than it can have: ${error.message}`,
        {
          cause: error,
        },
      );
    }
    throw error;
  }
}

function importWithin(bytes: Uint8Array, options: ImportOptions, budget: number): Uint8Array {
  const model = decode(bytes);
  const missing = unsupportedOps(model);
  if (missing.length > 0) {
    throw new SpindleError("unsupported", `unsupported ONNX op types (${missing.length}): ${missing.join(", ")}`);
  }
  if (model.graph.sparseInitializers > 0) throw new SpindleError("unsupported", "ONNX sparse initializers");
  const opset = model.opsets.find((o) => o.domain === "" || o.domain === "ai.onnx")?.version ?? 1;
  const graph = model.graph;
  const values = new Map<string, Value>();
  for (const initializer of graph.initializers) {
    try {
      values.set(initializer.name, { kind: "const", hosts: [fromProto(initializer)] });
    } catch (error) {
      if (error instanceof TypeError) throw new SpindleError("unsupported", error.message);
      malformed((error as Error).message);
    }
  }
  for (const [name, t] of Object.entries(options.constantInputs ?? {})) {
    const constant = hostOfTensor(t);
    // The model's declared element type where the tensor's dtype carries it (a bool or uint8
    // input rides as int32; ops such as Not and BitwiseNot need the type, not the carrier).
    const declared = graph.inputs.find((i) => i.name === name)?.elemType;
    if (declared !== undefined && spindleDType(declared) === t.dtype) constant.type = declared;
    values.set(name, { kind: "const", hosts: [constant] });
  }
  const inputs: InputDescription[] = [];
  const inputNames: string[] = [];
  const inputTypes: number[] = [];
  for (const info of graph.inputs) {
    if (values.has(info.name)) continue;
    // float16 and double inputs ride as float32 (the caller passes float32; the math runs in
    // float32), as their constants do.
    const dtype = spindleDType(info.elemType);
    if (dtype === undefined) {
      throw new SpindleError("unsupported", `input '${info.name}' has ONNX element type ${info.elemType}`);
    }
    if (info.dims === null) throw new SpindleError("unsupported", `input '${info.name}' has no shape (unknown rank)`);
    let shape = info.dims.map((d) => (typeof d === "number" ? d : -1));
    const override = options.inputShapes?.[info.name];
    if (override !== undefined) {
      if (
        !Array.isArray(override) || override.length !== shape.length ||
        override.some((d, i) => !Number.isInteger(d) || d < -1 || d === 0 || (shape[i] !== -1 && d !== shape[i]))
      ) {
        throw new RangeError(
          `importOnnx: inputShapes['${info.name}'] = [${override}] does not fit the model's [${shape}]`,
        );
      }
      shape = override.slice();
    }
    inputs.push(describe(info.name, dtype, shape, info.dims));
    inputNames.push(info.name);
    inputTypes.push(info.elemType);
  }
  const runCount = inputs.some((i) => i.shape.includes(-1)) ? 2 : 1;
  const b = new GraphBuilder(inputs.length, runCount);
  try {
    inputs.forEach((spec, index) => {
      const runs: Tensor[] = [];
      for (let r = 0; r < runCount; r++) {
        const shape = spec.shape.map((d, axis) => (d === -1 ? DYNAMIC_SIZES[axis === 0 ? 0 : 1][r] : d));
        const count = numel(shape);
        const bytes = count * bytesPerElement(spec.dtype);
        if (bytes > budget) {
          throw new SpindleError(
            "too_large",
            `input '${inputNames[index]}' of shape [${shape}] needs ${bytes} bytes, over the ${budget}-byte memory ` +
              `budget; pass smaller inputShapes or raise memoryBudget`,
          );
        }
        const data = spec.dtype === "float32"
          ? new Float32Array(count)
          : spec.dtype === "int64"
          ? new BigInt64Array(count)
          : new Int32Array(count);
        runs.push(tensor(data, shape, { dtype: spec.dtype }));
      }
      values.set(inputNames[index], { ...b.input(index, spec.dtype, runs), elemType: inputTypes[index] });
    });
    const scope: Scope = {
      opset,
      subgraphs: new Subgraphs(),
      runCount,
      memoryBudget: budget,
      convert: (g, builder, scopeValues) => convertGraph(scope, g, builder, scopeValues, false),
    };
    convertGraph(scope, graph, b, values, true);
    const outputs = graph.outputs.map((o) =>
      values.get(o.name) ?? malformed(`graph output '${o.name}' is never computed`)
    );
    const source = b.finish(graph.name, inputs, outputs);
    if (runCount > 1) source.graphs[0].check_shapes = inputs.map((_, index) => b.specShape(index, 0));
    source.graphs[0].results = graph.outputs.map((o, i) =>
      describe(o.name, dtypeOf(outputs[i]), shapeOf(outputs[i]), o.dims)
    );
    fuse(source, { shape: (value) => b.specs.get(value)?.shape });
    fuseQuantizedChains(source, (value) => b.specs.get(value));
    // Subgraphs join after the fusions, whose shape hints know graph 0's values only.
    scope.subgraphs.appendTo(source);
    if (options.executionMode === "parallel") forkBranches(source, { spec: (value) => b.specs.get(value) });
    dropDeadConstants(source);
    return encodeImage(source);
  } finally {
    b.dispose();
  }
}

/** A graph input or output, with the ONNX names of its dimensions of any size. */
function describe(
  name: string,
  dtype: DType,
  shape: number[],
  dims: (number | string | null)[] | null,
): InputDescription {
  const symbols = shape.map((d, axis) => {
    const dim = dims?.[axis];
    return d === -1 && typeof dim === "string" && dim !== "" ? dim : null;
  });
  return symbols.some((symbol) => symbol !== null) ? { name, dtype, shape, symbols } : { name, dtype, shape };
}

function dtypeOf(value: Value): DType {
  if (value.kind === "runtime") return value.dtype;
  const type = value.hosts[0].type;
  return spindleDType(type) ?? unsupported(`a graph output of ONNX element type ${type}`);
}

/**
 * Converts `graph`'s nodes into `b`, binding their outputs in `values`. Values nothing reads
 * any more free their eager tensors; `ownsBound` says whether that includes the values bound
 * before the call (the entry graph's), or only those the graph's nodes make (a subgraph's:
 * its outer values are its caller's).
 */
function convertGraph(
  scope: Scope,
  graph: GraphProto,
  b: GraphBuilder,
  values: Map<string, Value>,
  ownsBound: boolean,
): void {
  const opset = scope.opset;
  indexConsumers(b, graph);
  const nameUses = new Map<string, number>();
  const count = (name: string) => nameUses.set(name, (nameUses.get(name) ?? 0) + 1);
  // A control-flow node reads, besides its inputs, what its subgraphs capture.
  const reads = graph.nodes.map((node) => [...node.inputs.filter((n) => n !== ""), ...capturedNames(node)]);
  for (const names of reads) names.forEach(count);
  for (const output of graph.outputs) count(output.name);
  // Reads left per value (a value can have several names: Identity, fusions).
  const valueUses = new Map<Value, number>();
  const bind = (name: string, value: Value) => {
    values.set(name, value);
    valueUses.set(value, (valueUses.get(value) ?? 0) + (nameUses.get(name) ?? 0));
  };
  // Values bound before the call that the graph does not own (a subgraph's outer values,
  // even when a node passes one on under a new name, as Identity does) are never freed here.
  const foreign = new Set<Value>(ownsBound ? [] : values.values());
  if (ownsBound) { for (const [name, value] of values) bind(name, value); }
  for (const [index, node] of graph.nodes.entries()) {
    const nodeInputs = node.inputs.map((name) => {
      if (name === "") return undefined;
      return values.get(name) ?? malformed(`node ${index} (${node.opType}) reads '${name}' before it is defined`);
    });
    const context: NodeContext = { node, b, opset, inputs: nodeInputs, uses: (value) => valueUses.get(value) ?? 0 };
    const readValues = reads[index].map((name) => values.get(name));
    let outputs: (Value | undefined)[];
    try {
      const lookup = (name: string) =>
        values.get(name) ?? malformed(`a subgraph of node ${index} reads '${name}', which is not defined`);
      const domain = node.domain === "ai.onnx" ? "" : node.domain;
      outputs = CONTROL_OPS.has(node.opType)
        ? convertControl(scope, b, node, nodeInputs, lookup)
        : (quantizedHandler(domain, node.opType) ?? HANDLERS[node.opType])(context);
    } catch (error) {
      const where = `node ${index} '${node.name}' (${node.opType})`;
      if (error instanceof SpindleError) {
        throw new SpindleError(error.status, `${where}: ${error.message}`, { cause: error });
      }
      if (error instanceof RangeError) {
        throw new SpindleError("malformed_model", `malformed ONNX model: ${where}: ${error.message}`, { cause: error });
      }
      // Anything else is a bug in the handler: keep it, with its stack, as the cause.
      throw new Error(`${where}: import failed unexpectedly: ${(error as Error).message}`, { cause: error });
    }
    outputs.forEach((value, i) => {
      const name = node.outputs[i];
      if (value !== undefined && name !== undefined && name !== "") bind(name, value);
    });
    for (const value of readValues) {
      if (value === undefined || !valueUses.has(value) || foreign.has(value)) continue;
      const left = valueUses.get(value)! - 1;
      valueUses.set(value, left);
      if (left === 0) b.release(value);
    }
  }
}

/** Whether a value is a constant (exported for tests). */
export function isConstant(value: Value): value is ConstValue {
  return value.kind === "const";
}

/**
 * Runs ONNX backend node tests (model.onnx + test_data_set_0/input_*.pb, output_*.pb)
 * through Spindle's importer. Integer and bool inputs are baked into the model as constants
 * (Spindle specialises shape-like inputs at import); float inputs stay run-time inputs.
 *
 * @module
 */
import { SpindleError } from "../ffi/status.ts";
import { decodeModel, decodeTensorProto } from "../lib/onnx/proto.ts";
import { fromProto, valuesOf } from "../lib/onnx/host.ts";
import { importOnnx, unsupportedOps } from "../lib/onnx/import.ts";
import { Program } from "../lib/program/program.ts";
import { type DType, type Tensor, tensor } from "../lib/tensor.ts";
import { spindleDType } from "../lib/onnx/host.ts";

/** The outcome of one case. */
export interface CaseResult {
  name: string;
  status: "pass" | "fail" | "unsupported";
  message?: string;
}

/** The op types of a case's model, or undefined when the model cannot be decoded. */
export function caseOps(dir: string): { ops: string[]; missing: string[] } | undefined {
  try {
    const model = decodeModel(Deno.readFileSync(`${dir}/model.onnx`));
    const missing = unsupportedOps(model);
    // Sequence, map and optional inputs or outputs are not tensors.
    if ([...model.graph.inputs, ...model.graph.outputs].some((v) => v.elemType === 0)) missing.push("non-tensor types");
    return { ops: [...new Set(model.graph.nodes.map((n) => n.opType))], missing };
  } catch {
    return undefined;
  }
}

function readTensors(dir: string, prefix: string) {
  const out = [];
  for (let i = 0;; i++) {
    try {
      out.push(decodeTensorProto(Deno.readFileSync(`${dir}/test_data_set_0/${prefix}_${i}.pb`)));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return out;
      throw error;
    }
  }
}

function toTensor(values: number[], shape: number[], dtype: DType): Tensor {
  const data = dtype === "float32"
    ? Float32Array.from(values)
    : dtype === "int64"
    ? BigInt64Array.from(values, (v) => BigInt(v))
    : Int32Array.from(values);
  return tensor(data, shape, { dtype });
}

/** Runs one node test directory. */
export function runCase(dir: string, rtol = 1e-3, atol = 1e-5): CaseResult {
  const name = dir.split("/").filter((p) => p).pop()!;
  const owned: Tensor[] = [];
  let program: Program | undefined;
  try {
    const bytes = Deno.readFileSync(`${dir}/model.onnx`);
    const model = decodeModel(bytes);
    if ([...model.graph.inputs, ...model.graph.outputs].some((v) => v.elemType === 0)) {
      throw new SpindleError("unsupported", "sequence, map and optional inputs or outputs (Spindle runs tensors only)");
    }
    const inputInfos = model.graph.inputs.filter((i) => !model.graph.initializers.some((t) => t.name === i.name));
    const inputs = readTensors(dir, "input");
    const expected = readTensors(dir, "output");
    const tensors: Tensor[] = [];
    inputs.forEach((proto, i) => {
      const info = inputInfos[i];
      if (info === undefined) throw new Error(`input_${i}.pb has no graph input`);
      const host = fromProto(proto);
      const dtype = spindleDType(proto.dataType);
      if (dtype === undefined) {
        throw new SpindleError(10, `input element type ${proto.dataType}`);
      }
      const t = toTensor(valuesOf(host), host.shape, dtype);
      owned.push(t);
      tensors.push(t);
    });
    // Integer inputs are baked in; float inputs too (all but the first) when the importer
    // needs them constant (Clip bounds, Resize scales, Pad values).
    let runtime: Tensor[] = [];
    const attempt = (bakeFloats: boolean) => {
      const constantInputs: Record<string, Tensor> = {};
      runtime = [];
      tensors.forEach((t, i) => {
        if (t.dtype !== "float32" || (bakeFloats && i > 0)) constantInputs[inputInfos[i].name] = t;
        else runtime.push(t);
      });
      return Program.load(importOnnx(bytes, { constantInputs }));
    };
    try {
      program = attempt(false);
    } catch (error) {
      if (!(error instanceof SpindleError && error.message.includes("must be a constant"))) throw error;
      program = attempt(true);
    }
    const outputs = program.runSync(runtime);
    owned.push(...outputs);
    if (outputs.length !== expected.length) {
      return { name, status: "fail", message: `${outputs.length} outputs, expected ${expected.length}` };
    }
    for (const [k, proto] of expected.entries()) {
      const want = fromProto(proto);
      const got = outputs[k];
      if (got.shape.join() !== want.shape.join()) {
        return { name, status: "fail", message: `output ${k}: shape [${got.shape}], expected [${want.shape}]` };
      }
      const data = got.toArray();
      const values = data instanceof BigInt64Array ? Array.from(data, Number) : Array.from(data);
      const reference = valuesOf(want);
      for (let i = 0; i < values.length; i++) {
        const x = values[i];
        const y = reference[i];
        const close = Number.isNaN(y) ? Number.isNaN(x) : x === y || Math.abs(x - y) <= atol + rtol * Math.abs(y);
        if (!close) return { name, status: "fail", message: `output ${k}[${i}] = ${x}, expected ${y}` };
      }
    }
    return { name, status: "pass" };
  } catch (error) {
    if (error instanceof SpindleError && error.code === "unsupported" || error instanceof TypeError) {
      return { name, status: "unsupported", message: (error as Error).message };
    }
    return { name, status: "fail", message: String((error as Error).message ?? error) };
  } finally {
    program?.dispose();
    for (const t of owned) t.dispose();
  }
}

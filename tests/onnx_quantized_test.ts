import assert from "node:assert/strict";
import { importOnnx, load, SpindleError, type Tensor, tensor } from "../mod.ts";
import { decodeSource } from "../lib/program/format.ts";
import { ROOT, runSnippet } from "./helpers.ts";

/**
 * Quantized ONNX models (issue 16), checked against onnxruntime's outputs that
 * tools/make_int8_models.py recorded beside each model: the committed one-op fixtures in
 * tests/fixtures/int8 (CI has no onnxruntime Python), and, when .cache/int8 exists, PaddleOCR
 * and a BERT-style encoder quantized with onnxruntime.quantization.
 */
const FIXTURES = `${ROOT}/tests/fixtures/int8`;
const CACHE = `${ROOT}/.cache/int8`;

interface Recorded {
  inputs: Record<string, { shape: number[]; dtype: string; data: number[] }>;
  outputs: { shape: number[]; dtype: string; data: number[] }[];
}

function recorded(path: string): Recorded {
  return JSON.parse(Deno.readTextFileSync(path.replace(/\.onnx$/, ".json")));
}

/** Inputs as Spindle tensors: u8/s8/int32 ride as int32, floats as float32. */
function inputsOf(record: Recorded): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(record.inputs).map(([name, v]) => [
      name,
      v.dtype.startsWith("float")
        ? tensor(Float32Array.from(v.data), v.shape)
        : tensor(Int32Array.from(v.data), v.shape),
    ]),
  );
}

async function runModel(path: string): Promise<{ record: Recorded; outputs: Float32Array[]; shapes: number[][] }> {
  const record = recorded(path);
  using module = await load(path);
  const inputs = inputsOf(record);
  const result = await module.run(inputs);
  Object.values(inputs).forEach((t) => t.dispose());
  const outputs: Float32Array[] = [];
  const shapes: number[][] = [];
  for (const t of Object.values(result)) {
    outputs.push(Float32Array.from(t.toArray() as ArrayLike<number>));
    shapes.push(t.shape.slice());
    t.dispose();
  }
  return { record, outputs, shapes };
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function meanAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
  return sum / a.length;
}

const FIXTURE_NAMES = [
  "qdq_axis_u8",
  "qdq_axis_s8",
  "qdq_tensor_u8",
  "qdq_tensor_s8",
  "dynamic_quantize",
  "matmul_integer",
  "qlinear_matmul",
  "qlinear_conv",
  "conv_integer",
  "qlinear_add",
  "qlinear_mul",
  "qdq_matmul",
];

// Integer outputs (quantized values, integer sums) must equal onnxruntime's: the integer
// arithmetic is exact, rounding is half to even, saturation the same. A requantized output
// may differ by one step where the float rescale rounds a tie differently (onnxruntime
// scales the integer sum by one fused multiplier; Spindle by the scales in turn): at most
// 1 step, on at most 1% of elements. Float outputs: within 1e-5 relative.
for (const name of FIXTURE_NAMES) {
  Deno.test(`int8 fixture ${name}: matches onnxruntime's recorded outputs`, async () => {
    const { record, outputs, shapes } = await runModel(`${FIXTURES}/${name}.onnx`);
    assert.equal(outputs.length, record.outputs.length);
    record.outputs.forEach((want, i) => {
      assert.deepEqual(shapes[i], want.shape, `${name} output ${i} shape`);
      if (want.dtype.startsWith("float")) {
        want.data.forEach((w, j) =>
          assert.ok(Math.abs(outputs[i][j] - w) <= 1e-5 * (1 + Math.abs(w)), `${name}[${j}]: ${outputs[i][j]} vs ${w}`)
        );
        return;
      }
      let off = 0;
      want.data.forEach((w, j) => {
        const difference = Math.abs(outputs[i][j] - w);
        assert.ok(difference <= 1, `${name}[${j}]: ${outputs[i][j]} vs ${w}`);
        off += difference === 0 ? 0 : 1;
      });
      assert.ok(off <= want.data.length / 100, `${name}: ${off} of ${want.data.length} values off by one step`);
    });
  });
}

Deno.test("int8 fixtures: the VNNI, widened and reference int8 kernels give the default (AMX or VNNI) kernel's results", async () => {
  // SPINDLE_INT8_KERNEL forces a lower kernel in a child process (the library reads it once, at its first int8 op).
  const snippet = `
    import { load, tensor, parallelInfoJson } from "${new URL("../mod.ts", import.meta.url).href}";
    const out = { kernels: parallelInfoJson().int8_kernels };
    for (const name of ["qlinear_conv", "qdq_matmul", "matmul_integer", "conv_integer"]) {
      const record = JSON.parse(Deno.readTextFileSync("${FIXTURES}/" + name + ".json"));
      const module = await load("${FIXTURES}/" + name + ".onnx");
      const inputs = Object.fromEntries(Object.entries(record.inputs).map(([k, v]) =>
        [k, v.dtype.startsWith("float") ? tensor(Float32Array.from(v.data), v.shape) : tensor(Int32Array.from(v.data), v.shape)]));
      const result = await module.run(inputs);
      out[name] = Array.from(Object.values(result)[0].toArray());
      module.dispose();
    }
    console.log(JSON.stringify(out));`;
  const runs: Record<string, number[] | string>[] = [];
  for (const kernel of ["", "widened", "reference", "vnni"]) {
    const result = await runSnippet(snippet, kernel === "" ? {} : { SPINDLE_INT8_KERNEL: kernel });
    assert.equal(result.code, 0, result.stderr);
    runs.push(JSON.parse(result.stdout.trim().split("\n").at(-1)!));
  }
  assert.match(runs[1].kernels as string, /widened/);
  assert.match(runs[2].kernels as string, /reference/);
  for (const name of ["qlinear_conv", "qdq_matmul", "matmul_integer", "conv_integer"]) {
    assert.deepEqual(runs[1][name], runs[0][name], `widened ${name}`);
    assert.deepEqual(runs[2][name], runs[0][name], `reference ${name}`);
    assert.deepEqual(runs[3][name], runs[0][name], `vnni ${name}`);
  }
});

const BAD: [string, RegExp][] = [
  ["bad_scale_zero", /scale 1 is 0; quantization scales must be finite and greater than 0/],
  ["bad_scale_nan", /scale 1 is NaN/],
  ["bad_scale_negative", /scale 0 is -0.5/],
  ["bad_channel_count", /4 per-channel scales for axis 1 of size 3/],
  ["bad_axis", /axis 5 is out of range for a rank-4 input/],
  ["bad_zero_count", /3 scales but 2 zero points/],
];
for (const [name, message] of BAD) {
  Deno.test(`int8 bad input ${name}: a typed error naming what is wrong`, async () => {
    await assert.rejects(load(`${FIXTURES}/${name}.onnx`), (error) => {
      assert.ok(error instanceof SpindleError, String(error));
      assert.match(error.message, message);
      return true;
    });
  });
}

// Real models: skipped without .cache/int8 (run tools/make_int8_models.py to make them).
function cached(name: string): boolean {
  try {
    return Deno.statSync(`${CACHE}/${name}`).isFile;
  } catch {
    return false;
  }
}
const haveCache = cached("cls_qdq.onnx");
if (!haveCache) console.log(`int8 model tests skipped: ${CACHE} is absent (make it with tools/make_int8_models.py)`);
// The BERT-style encoder needs PyTorch to export; `make_int8_models.py --paddle-only` skips it.
const haveBert = cached("bert_dyn.onnx");
if (haveCache && !haveBert) {
  console.log(
    `int8 bert_dyn test skipped: ${CACHE}/bert_dyn.onnx is absent (tools/make_int8_models.py with torch installed)`,
  );
}

/**
 * The bound for real models: Spindle's int8 output may differ from onnxruntime's int8 output
 * by no more than onnxruntime's int8 output differs from the float model's (the quantization
 * error itself; a one-step difference in an early layer propagates like quantization noise),
 * plus one step of the output's own quantization (the three models end in a softmax or
 * sigmoid that the QDQ models quantize to u8 over [0, 1]: 1/255), plus 1e-3. rec also keeps
 * ≥ 90% of its CTC argmaxes, cls its top-1. det's probability map saturates (its max abs
 * error is 1 for onnxruntime's own int8 model), so det compares mean abs errors under the same
 * rule and requires ≥ 99% of pixels on the same side of DB's 0.3 text threshold.
 */
for (const model of ["cls", "rec", "det"]) {
  for (const format of ["qdq", "qop", "dyn"]) {
    Deno.test({
      name: `int8 ${model}_${format}: within quantization error of onnxruntime's int8 output`,
      ignore: !haveCache,
      async fn() {
        const { record, outputs } = await runModel(`${CACHE}/${model}_${format}.onnx`);
        const float = recorded(`${CACHE}/${model}_f32.json`).outputs[0].data;
        const want = record.outputs[0].data;
        if (model === "det") {
          const bound = meanAbs(want, float) + 1e-3;
          const error = meanAbs(outputs[0], want);
          assert.ok(error <= bound, `det_${format}: mean abs error ${error} against onnxruntime int8, bound ${bound}`);
          let same = 0;
          want.forEach((w, i) => same += Number((w > 0.3) === (outputs[0][i] > 0.3)));
          assert.ok(
            same >= 0.99 * want.length,
            `det_${format}: ${same}/${want.length} pixels agree on the 0.3 threshold`,
          );
          return;
        }
        const bound = maxAbs(want, float) + 1 / 255 + 1e-3;
        const error = maxAbs(outputs[0], want);
        assert.ok(
          error <= bound,
          `${model}_${format}: max abs error ${error} against onnxruntime int8, bound ${bound}`,
        );
        const classes = record.outputs[0].shape.at(-1)!;
        let same = 0;
        const rows = want.length / classes;
        for (let r = 0; r < rows; r++) {
          const argmax = (v: ArrayLike<number>) => {
            let best = 0;
            for (let c = 1; c < classes; c++) if (v[r * classes + c] > v[r * classes + best]) best = c;
            return best;
          };
          if (argmax(outputs[0]) === argmax(want)) same++;
        }
        assert.ok(same >= (model === "cls" ? rows : 0.9 * rows), `${model}_${format}: ${same}/${rows} argmaxes agree`);
      },
    });
  }
}

Deno.test({
  name: "int8 bert_dyn (MatMulInteger with DynamicQuantizeLinear): within 1e-4 of onnxruntime",
  ignore: !haveBert,
  async fn() {
    const { record, outputs } = await runModel(`${CACHE}/bert_dyn.onnx`);
    const error = maxAbs(outputs[0], record.outputs[0].data);
    assert.ok(error <= 1e-4, `bert_dyn: max abs error ${error}`);
  },
});

Deno.test({
  name: "int8 cls_qdq and det_qdq: chains reading only a conv's output run in conv2d_int8's epilogue",
  ignore: !haveCache,
  fn() {
    for (const model of ["cls", "det"]) {
      const nodes = decodeSource(importOnnx(Deno.readFileSync(`${CACHE}/${model}_qdq.onnx`))).graphs[0].nodes;
      const readers = new Map<number, number>();
      for (const node of nodes) for (const v of node.inputs ?? []) readers.set(v, (readers.get(v) ?? 0) + 1);
      const convs = nodes.filter((node) => node.op === "conv2d_int8");
      // Each folded chain is one quantized_pointwise node fewer than before.
      const folded = convs.filter((node) => typeof node.params?.steps === "number" && node.params.steps > 0);
      assert.ok(folded.length > 0, `${model}_qdq: no chain was folded into a conv`);
      assert.ok(folded.every((node) => node.inputs?.length === 6), `${model}_qdq: a folded conv lacks its program`);
      // No chain left that could have been folded: a quantized_pointwise on a conv output
      // that nothing else reads.
      const convOutputs = new Set(convs.map((node) => node.outputs[0]));
      const left = nodes.filter((node) =>
        node.op === "quantized_pointwise" && convOutputs.has(node.inputs![0]) && readers.get(node.inputs![0]) === 1
      );
      assert.equal(left.length, 0, `${model}_qdq: ${left.length} chains on a sole-use conv output were not folded`);
    }
  },
});

Deno.test({
  name:
    "int8 det_qdq: residual adds, squeeze-excitation muls and batch_norm before a round trip run in quantized_pointwise",
  ignore: !haveCache,
  fn() {
    const nodes = decodeSource(importOnnx(Deno.readFileSync(`${CACHE}/det_qdq.onnx`))).graphs[0].nodes;
    const readers = new Map<number, (typeof nodes)[number][]>();
    for (const node of nodes) for (const v of node.inputs ?? []) readers.set(v, [...(readers.get(v) ?? []), node]);
    const withOperands = nodes.filter((node) => node.op === "quantized_pointwise" && node.inputs!.length > 2);
    // det_qdq's neck: 8 chains of a squeeze-excitation Mul and/or residual Adds between round
    // trips (its 11 Adds all join one; the 2 Muls whose output a conv reads directly do not).
    assert.ok(withOperands.length >= 8, `det_qdq: ${withOperands.length} chains read operands`);
    assert.equal(nodes.filter((node) => node.op === "add").length, 0, "det_qdq: an Add was left unfused");
    // The head's batch_norm, between a chain and a round trip, runs as an affine_channel step.
    assert.equal(
      nodes.filter((node) => node.op === "batch_norm").length,
      0,
      "det_qdq: its batch_norm was left unfused",
    );
    // No Add or Mul of two run-time tensors is left whose only reader is a round trip.
    const left = nodes.filter((node) =>
      (node.op === "add" || node.op === "mul") && node.inputs!.length === 2 &&
      readers.get(node.outputs[0])?.length === 1 && readers.get(node.outputs[0])![0].op === "quantize_linear"
    );
    assert.equal(left.length, 0, `det_qdq: ${left.length} adds/muls before a round trip were not fused`);
  },
});

Deno.test({
  name: "int8 QOperator models: one dequantize per value, and a conv's sole dequantize runs in its epilogue",
  ignore: !haveCache,
  fn() {
    for (const model of ["cls", "rec", "det"]) {
      const nodes = decodeSource(importOnnx(Deno.readFileSync(`${CACHE}/${model}_qop.onnx`))).graphs[0].nodes;
      const readers = new Map<number, number>();
      const producer = new Map<number, (typeof nodes)[number]>();
      for (const node of nodes) {
        for (const v of node.inputs ?? []) readers.set(v, (readers.get(v) ?? 0) + 1);
        for (const v of node.outputs) producer.set(v, node);
      }
      const dequantizes = nodes.filter((node) => node.op === "dequantize_linear");
      const perInput = new Map<number, number>();
      for (const node of dequantizes) perInput.set(node.inputs![0], (perInput.get(node.inputs![0]) ?? 0) + 1);
      const repeated = [...perInput.values()].filter((count) => count > 1).length;
      assert.equal(repeated, 0, `${model}_qop: ${repeated} values are dequantized more than once`);
      const foldable = dequantizes.filter((node) => {
        const conv = producer.get(node.inputs![0]);
        return conv?.op === "conv2d_int8" && readers.get(node.inputs![0]) === 1 && conv.params?.requantize === true;
      });
      assert.equal(
        foldable.length,
        0,
        `${model}_qop: ${foldable.length} dequantizes of a sole-use conv output are left`,
      );
      assert.ok(nodes.some((node) => node.op === "conv2d_int8" && node.params?.dequantize_output === true));
    }
  },
});

Deno.test({
  name: "int8 rec_qdq and det_qdq: no QDQ round trip is repeated after values only moved",
  ignore: !haveCache,
  fn() {
    for (const model of ["rec", "det"]) {
      const source = decodeSource(importOnnx(Deno.readFileSync(`${CACHE}/${model}_qdq.onnx`)));
      const nodes = source.graphs[0].nodes;
      const producer = new Map<number, (typeof nodes)[number]>();
      for (const node of nodes) for (const v of node.outputs) producer.set(v, node);
      // A round trip's grid: its scale and zero point constants' bytes.
      const grid = (node: (typeof nodes)[number] | undefined) =>
        node?.op !== "quantize_linear" || node.params?.dequantize_output !== true
          ? undefined
          : node.inputs!.slice(1).map((v) => [...source.tensors[producer.get(v)!.tensor!].data].join()).join("|");
      // rec repeats the pair after 14 reshapes and 10 permutes, det after 6 nearest resizes.
      // rec's last pair stays: its output is the graph's.
      const outputs = new Set(source.graphs[0].outputs);
      const repeated = nodes.filter((node) =>
        grid(node) !== undefined && !outputs.has(node.outputs[0]) &&
        ["reshape", "permute", "resize"].includes(producer.get(node.inputs![0])?.op ?? "") &&
        grid(producer.get(producer.get(node.inputs![0])!.inputs![0])) === grid(node)
      );
      assert.equal(repeated.length, 0, `${model}_qdq: ${repeated.length} round trips after a move are left`);
    }
  },
});

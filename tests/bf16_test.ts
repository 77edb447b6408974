import assert from "node:assert/strict";
import {
  bf16Supported,
  builtinModel,
  conv2d,
  flatten,
  load,
  mm,
  Module,
  mul,
  parallelInfo,
  parallelInfoJson,
  randn,
  relu,
  script,
  type Tensor,
} from "../mod.ts";
import { MOD_URL, ROOT, runSnippet } from "./helpers.ts";

/**
 * The bf16 precision (lib/program/program.ts `Precision`, zig/src/ops/bf16.zig): weights of
 * convolutions and matrix products packed at load, products in bf16 with f32 accumulation;
 * on a CPU or level without a bf16 kernel, f32 with one warning.
 */

const CLS = `${ROOT}/.cache/models/package/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx`;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function maxAbsDifference(a: Tensor, b: Tensor): number {
  const x = a.toArray() as Float32Array;
  const y = b.toArray() as Float32Array;
  assert.equal(x.length, y.length);
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i] - y[i]));
  return worst;
}

Deno.test("bf16: a scripted conv + mm module stays within bf16 rounding of f32 (equal when it falls back)", async () => {
  using rawWeight = randn([64, 32, 3, 3], { seed: 1 });
  using rawProjection = randn([64 * 8 * 8, 64], { seed: 2 });
  const weight = mul(rawWeight, 1 / Math.sqrt(32 * 9));
  const projection = mul(rawProjection, 1 / 64);
  const forward = (x: Tensor) => mm(flatten(relu(conv2d(x, weight, undefined, { padding: 1 })), 1), projection);
  const x = randn([1, 32, 8, 8], { seed: 3 });
  using f32 = Module.fromScript(script(forward, "conv_mm"), [x]);
  using bf16 = Module.fromScript(script(forward, "conv_mm"), [x], { precision: "bf16" });
  using expected = await f32.forward(x);
  using got = await bf16.forward(x);
  const difference = maxAbsDifference(expected, got);
  if (bf16Supported()) {
    // bf16 keeps 8 significant bits: each product errs by up to 2^-8 relative; sums of
    // 288 and 64 terms of unit-scale values stay well inside 0.1.
    assert.ok(difference > 0, "bf16 changed nothing: the weights were not packed");
    assert.ok(difference < 0.1, `max |bf16 - f32| = ${difference}`);
  } else {
    assert.equal(difference, 0);
  }
  [weight, projection, x].forEach((t) => t.dispose());
});

Deno.test("bf16: built-in models take the precision option", async () => {
  const f32 = builtinModel("mlp", { batch: 2 });
  const bf16 = builtinModel("mlp", { batch: 2, precision: "bf16" });
  const inputs = f32.inputs();
  using expected = await f32.module.forward(...inputs);
  using got = await bf16.module.forward(...inputs);
  assert.ok(maxAbsDifference(expected, got) < 0.05);
  inputs.forEach((t) => t.dispose());
  f32.dispose();
  bf16.dispose();
});

Deno.test("bf16: a precision other than f32 or bf16 is a TypeError naming the option", async () => {
  const path = await Deno.makeTempFile();
  try {
    const wrong = { precision: "fp16" } as unknown as { precision: "bf16" };
    await assert.rejects(
      load(path, wrong),
      (error) => error instanceof TypeError && /precision/.test(error.message) && /"fp16"/.test(error.message),
    );
    assert.throws(() => builtinModel("mlp", wrong), /option precision must be "f32" or "bf16", got "fp16"/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("bf16: parallel_info names the precisions this CPU supports", () => {
  const info = parallelInfoJson();
  assert.ok(info.precisions.startsWith("f32"));
  assert.equal(bf16Supported(), info.precisions.includes("bf16 ("));
  assert.ok(parallelInfo().includes(`precisions : ${info.precisions}`));
});

Deno.test("bf16: with a lower kernel level forced it loads f32 and warns once per process", async () => {
  const code = `
import * as s from "${MOD_URL}";
const a = s.builtinModel("mlp", { batch: 2, precision: "bf16" });
const b = s.builtinModel("mlp", { batch: 2, precision: "bf16" });
const f = s.builtinModel("mlp", { batch: 2 });
const inputs = f.inputs();
const x = (await a.module.forward(...inputs)).toArray();
const y = (await b.module.forward(...inputs)).toArray();
const z = (await f.module.forward(...inputs)).toArray();
console.log(JSON.stringify({ same: x.every((v, i) => v === z[i] && y[i] === v), precisions: s.parallelInfoJson().precisions, supported: s.bf16Supported() }));
`;
  const result = await runSnippet(code, { SPINDLE_CPU_LEVEL: "avx2" });
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
  assert.deepEqual([report.same, report.supported], [true, false]);
  assert.match(report.precisions, /^f32 \(bf16 falls back/);
  const warnings = result.stderr.split("\n").filter((line) => line.includes('precision "bf16"'));
  assert.equal(warnings.length, 1, result.stderr);
});

Deno.test("bf16: SPINDLE_BF16_KERNEL=avx512 runs the AVX512_BF16 kernel wherever the CPU has the instruction", async () => {
  // Where vdpbf16ps makes fewer products per cycle than f32 FMA (Xeons with AMX hidden) bf16
  // falls back to f32 by default; the variable still runs (and so tests) that kernel there.
  const code = `
import * as s from "${MOD_URL}";
const weight = s.mul(s.randn([64, 32, 3, 3], { seed: 1 }), 1 / Math.sqrt(32 * 9));
const projection = s.mul(s.randn([64 * 8 * 8, 64], { seed: 2 }), 1 / 64);
const forward = (x) => s.mm(s.flatten(s.relu(s.conv2d(x, weight, undefined, { padding: 1 })), 1), projection);
const x = s.randn([1, 32, 8, 8], { seed: 3 });
const f32 = s.Module.fromScript(s.script(forward, "conv_mm"), [x]);
const bf16 = s.Module.fromScript(s.script(forward, "conv_mm"), [x], { precision: "bf16" });
const a = (await f32.forward(x)).toArray();
const b = (await bf16.forward(x)).toArray();
let worst = 0;
for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
console.log(JSON.stringify({ worst, precisions: s.parallelInfoJson().precisions, supported: s.bf16Supported() }));
`;
  const result = await runSnippet(code, { SPINDLE_BF16_KERNEL: "avx512" });
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout.trim().split("\n").at(-1)!);
  const hasInstruction = /AVX512_BF16|AMX/.test(parallelInfoJson().precisions) &&
    !/no AVX512_BF16/.test(parallelInfoJson().precisions);
  if (hasInstruction) {
    assert.equal(report.precisions, "f32, bf16 (AVX512_BF16)");
    assert.ok(report.worst > 0 && report.worst < 0.1, `max |bf16 - f32| = ${report.worst}`);
  } else {
    assert.deepEqual([report.supported, report.worst], [false, 0]);
  }
});

Deno.test({
  name: "bf16: PaddleOCR cls stays within 0.02 of f32's probabilities and agrees on the class",
  ignore: !(await exists(CLS)),
  fn: async () => {
    using f32 = await load(CLS, { inputShapes: { x: [4, 3, 48, 192] } });
    using bf16 = await load(CLS, { inputShapes: { x: [4, 3, 48, 192] }, precision: "bf16" });
    for (let seed = 0; seed < 4; seed++) {
      using x = randn([4, 3, 48, 192], { seed });
      using expected = await f32.forward(x);
      using got = await bf16.forward(x);
      // tools/bf16_accuracy.ts measured at most 0.004 over its 64 inputs.
      assert.ok(maxAbsDifference(expected, got) < 0.02);
      const e = expected.toArray() as Float32Array;
      const g = got.toArray() as Float32Array;
      for (let row = 0; row < 4; row++) {
        const [e0, e1, g0, g1] = [e[2 * row], e[2 * row + 1], g[2 * row], g[2 * row + 1]];
        // Near a tie (|p0 - p1| < 0.04) the top-1 may flip within the bound above.
        if (Math.abs(e0 - e1) >= 0.04) assert.equal(e0 > e1, g0 > g1);
      }
    }
  },
});

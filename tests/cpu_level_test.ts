import assert from "node:assert/strict";
import { crossBuildArgs, crossPrefix, TARGETS } from "../tools/targets.ts";
import { MOD_URL, ROOT, runSnippet } from "./helpers.ts";

/**
 * The portable library, the linux-x86_64 release artefact of `deno task cross`, with each
 * CPU level forced through SPINDLE_CPU_LEVEL, in child processes: every level this machine
 * supports computes the same ops and models as the level CPUID picks, within float
 * tolerance (FMA contraction and vector widths change rounding, nothing else).
 */
const LINUX_X86_64 = TARGETS.find((t) => t.name === "linux-x86_64")!;
const PORTABLE_LIB = `${ROOT}/zig/${crossPrefix(LINUX_X86_64)}/${LINUX_X86_64.installPath}`;
const HOST_IS_TARGET = Deno.build.os === "linux" && Deno.build.arch === "x86_64";

async function buildPortable(): Promise<void> {
  // Cached by Zig after the first build (the first one compiles the library three times),
  // and shared with `deno task cross`.
  const output = await new Deno.Command("zig", {
    args: crossBuildArgs(LINUX_X86_64),
    cwd: `${ROOT}/zig`,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
}

/** Runs awkward-shaped GEMMs, a conv, pooling, reductions, elementwise ops and two models. */
const WORKLOAD = `
import * as s from "${MOD_URL}";
const info = s.parallelInfoJson();
const out = {};
const keep = (name, t) => { out[name] = Array.from(t.toArray()); t.dispose(); };
const a = s.randn([37, 129], { seed: 1 }), b = s.randn([129, 67], { seed: 2 });
keep("mm", s.mm(a, b));
const x = s.randn([2, 5, 19, 23], { seed: 3 }), w = s.randn([7, 5, 3, 3], { seed: 4 });
keep("conv2d", s.conv2d(x, w, undefined, { padding: 1, stride: 2 }));
keep("maxPool2d", s.maxPool2d(x, 3, { stride: 2 }));
keep("softmax", s.softmax(a, 1));
keep("sum", s.sum(b, [0]));
keep("gelu", s.gelu(a));
keep("exp", s.exp(s.tanh(a)));
for (const name of ["mlp", "resnet", "transformer"]) {
  const model = s.builtinModel(name, { batch: 2 });
  const inputs = model.inputs();
  const y = await model.module.forward(...inputs);
  keep(name, y);
  inputs.forEach((t) => t.dispose());
  model.dispose();
}
// Quantized models: the v4 copy runs the VNNI int8 kernel where CPUID has it, the others the
// widened one; integer results must agree exactly (within the float tolerance below).
for (const name of ["qlinear_conv", "qdq_matmul", "matmul_integer"]) {
  const dir = new URL("./fixtures/int8/", "${new URL("./", import.meta.url).href}").pathname;
  const record = JSON.parse(Deno.readTextFileSync(dir + name + ".json"));
  const module = await s.load(dir + name + ".onnx");
  const inputs = Object.fromEntries(Object.entries(record.inputs).map(([k, v]) =>
    [k, v.dtype.startsWith("float") ? s.tensor(Float32Array.from(v.data), v.shape) : s.tensor(Int32Array.from(v.data), v.shape)]));
  keep("int8 " + name, Object.values(await module.run(inputs))[0]);
  module.dispose();
}
console.log(JSON.stringify({ kernels: info.kernels, selection: info.kernels_selection, int8: info.int8_kernels, out }));
`;

async function runLevel(level: string | null) {
  const env: Record<string, string> = { SPINDLE_LIB: PORTABLE_LIB };
  if (level !== null) env.SPINDLE_CPU_LEVEL = level;
  const result = await runSnippet(WORKLOAD, env);
  assert.equal(result.code, 0, result.stderr);
  return { ...JSON.parse(result.stdout.trim().split("\n").at(-1)!), stderr: result.stderr };
}

function assertClose(actual: number[], expected: number[], what: string): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < actual.length; i++) {
    const tolerance = 1e-4 + 1e-4 * Math.abs(expected[i]);
    if (!(Math.abs(actual[i] - expected[i]) <= tolerance)) {
      assert.fail(`${what}[${i}]: ${actual[i]} vs ${expected[i]} (tolerance ${tolerance})`);
    }
  }
}

Deno.test({
  name: "portable library: every forced CPU level matches the CPUID level on ops and models",
  ignore: !HOST_IS_TARGET,
  sanitizeResources: false,
  async fn() {
    await buildPortable();
    const reference = await runLevel(null);
    assert.match(reference.selection, /^chosen by CPUID$/);
    const expectedKernels = { baseline: "baseline", avx2: "AVX2", avx512: "AVX-512" } as const;
    for (const level of ["baseline", "avx2", "avx512"] as const) {
      const result = await runLevel(level);
      if (result.selection.includes("ignored")) {
        // This CPU lacks the level: the override must have been refused, loudly.
        assert.match(result.stderr, /SPINDLE_CPU_LEVEL=\w+ ignored: this CPU supports at most/);
        continue;
      }
      assert.equal(result.kernels, expectedKernels[level]);
      if (level !== "avx512") assert.match(result.int8, /widened/);
      assert.equal(result.selection, `forced by SPINDLE_CPU_LEVEL=${level}`);
      for (const [name, values] of Object.entries(reference.out)) {
        assertClose(result.out[name], values as number[], `${level} ${name}`);
      }
    }
  },
});

Deno.test({
  name: "portable library: an unknown SPINDLE_CPU_LEVEL is refused with a warning naming the choices",
  ignore: !HOST_IS_TARGET,
  sanitizeResources: false,
  async fn() {
    await buildPortable();
    const result = await runSnippet(
      `import { parallelInfoJson } from "${MOD_URL}"; console.log(parallelInfoJson().kernels_selection);`,
      { SPINDLE_LIB: PORTABLE_LIB, SPINDLE_CPU_LEVEL: "sse9" },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /SPINDLE_CPU_LEVEL=sse9 ignored: not baseline, avx2 or avx512/);
    assert.match(result.stdout, /^chosen by CPUID; SPINDLE_CPU_LEVEL=sse9 ignored/);
  },
});

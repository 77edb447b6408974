import assert from "node:assert/strict";
import { runCli } from "./helpers.ts";
import { builtinModel } from "../lib/models/builtin.ts";
import { add, fork, formatProfile, mm, Module, randn, relu, script, wait } from "../mod.ts";
import { flopsOf } from "../lib/profile.ts";

Deno.test("flopsOf counts matrix products and convolutions from their shapes", () => {
  assert.equal(flopsOf("mm", {}, [8, 16], [[8, 32], [32, 16]]), 2 * 8 * 16 * 32);
  assert.equal(flopsOf("matmul", {}, [2, 8, 16], [[2, 8, 32], [32, 16]]), 2 * 2 * 8 * 16 * 32);
  assert.equal(flopsOf("gemm", { trans_a: true }, [8, 16], [[32, 8], [32, 16]]), 2 * 8 * 16 * 32);
  // conv2d: [1, 64, 16, 16] from a [64, 32/2, 3, 3] weight (groups 2): 16 · 9 MACs per output.
  assert.equal(flopsOf("conv2d", {}, [1, 64, 16, 16], [[1, 32, 16, 16], [64, 16, 3, 3]]), 2 * 64 * 256 * 16 * 9);
  assert.equal(flopsOf("conv_transpose2d", {}, [1, 8, 10, 10], [[1, 4, 5, 5], [4, 8, 2, 2]]), 2 * 100 * 32);
  assert.equal(flopsOf("relu", {}, [4], [[4]]), null);
  assert.equal(flopsOf("conv2d", {}, [1, 4], [[1, 4]]), null); // shapes it cannot read
});

Deno.test("a profile times every op node, forked graphs included, and its shares add up", () => {
  using wy = randn([64, 64], { seed: 1 });
  using wz = randn([64, 64], { seed: 2 });
  using x = randn([8, 64], { seed: 3 });
  const branch = script((a) => mm(a, wz));
  using model = Module.fromScript(script((a) => relu(add(mm(a, wy), wait(fork(branch, a))))), [x]);
  const report = model.profile([x], { runs: 4, warmup: 1 });
  assert.equal(report.runs, 4);
  // mm, add, relu in the main graph; mm in the forked one.
  assert.deepEqual(report.ops.map((op) => op.op).sort(), ["add", "mm", "mm", "relu"]);
  assert.ok(report.ops.some((op) => op.graph === 1 && op.op === "mm"));
  for (const op of report.ops) {
    assert.equal(op.calls, 1);
    assert.ok(op.ms >= 0);
    assert.deepEqual(op.outputShape, [8, 64]);
  }
  const mmOp = report.ops.find((op) => op.op === "mm")!;
  assert.equal(mmOp.flops, 2 * 8 * 64 * 64);
  assert.deepEqual(mmOp.inputShapes, [[8, 64], [64, 64]]);
  assert.ok(Math.abs(report.ops.reduce((sum, op) => sum + op.share, 0) - 1) < 1e-9);
  assert.equal(report.byOp.find((group) => group.op === "mm")?.nodes, 2);
  assert.ok(report.opMs <= report.totalMs);
  for (let i = 1; i < report.ops.length; i++) assert.ok(report.ops[i - 1].ms >= report.ops[i].ms);
  assert.match(formatProfile(report), /^profile: 4 runs/);
});

Deno.test("profile's output matches forwardSync, and bad options or inputs are refused", () => {
  const built = builtinModel("resnet", {});
  try {
    const inputs = built.inputs();
    const report = built.module.profile(inputs, { runs: 1, warmup: 0 });
    const convolutions = report.ops.filter((op) => op.op === "conv2d");
    assert.ok(convolutions.length > 0);
    for (const conv of convolutions) assert.ok(conv.gflops !== null && conv.gflops > 0, JSON.stringify(conv));
    assert.throws(() => built.module.profile(inputs, { runs: 0 }), RangeError);
    assert.throws(() => built.module.profile(inputs, { warmup: -1 }), RangeError);
    assert.throws(() => built.module.profile([], { runs: 1 }), TypeError);
    inputs.forEach((t) => t.dispose());
  } finally {
    built.dispose();
  }
});

Deno.test("infer --profile prints the per-op tables, and --json carries the profile", async () => {
  const text = await runCli(["infer", "--model", "builtin:mlp", "--requests", "2", "--profile", "--profile-runs", "3"]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^profile: 3 runs, [\d.]+ ms per run, [\d.]+ ms in ops$/m);
  assert.match(text.stdout, /^\s+[\d.]+\s+[\d.]+%\s+[\d.]+\s+0:\d+\s+(mm|gemm|matmul)/m);
  const json = await runCli(["infer", "--model", "builtin:mlp", "--requests", "2", "--profile", "--json"]);
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.profile.runs, 10);
  assert.ok(report.profile.ops.length > 0);
  const usage = await runCli(["infer", "--profile-runs", "3"]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--profile-runs needs --profile/);
});

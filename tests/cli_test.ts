import assert from "node:assert/strict";
import { MOD_URL, runCli, runSnippet } from "./helpers.ts";

Deno.test("infer with no arguments runs the embedded example and reports", async () => {
  const result = await runCli(["infer", "--requests", "5", "--warmup", "1"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^model: builtin:example \(example: .*x 64x1024, W 1024x1024\)$/m);
  assert.match(result.stdout, /^checksum: -?\d\.\d{6}e[+-]\d+$/m);
  assert.match(
    result.stdout,
    /^threads: intra-op \d+, inter-op \d+, inference \d+ for 1 concurrent request \(backend (omp|tbb), blas (openblas|native)\)$/m,
  );
  assert.match(result.stdout, /^latency over 5 requests: p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms$/m);
});

Deno.test("infer --json reports the thread settings it used, and the checksum does not depend on them", async () => {
  const one = await runCli([
    "infer",
    "--json",
    "--requests",
    "3",
    "--threads",
    "1",
    "--interop-threads",
    "1",
    "--batch",
    "8",
  ]);
  assert.equal(one.code, 0, one.stderr);
  const a = JSON.parse(one.stdout);
  assert.equal(a.threads, 1);
  assert.equal(a.interop_threads, 1);
  assert.ok(a.latency_ms.p50 > 0 && a.latency_ms.p50 <= a.latency_ms.p99);
  const two = JSON.parse(
    (await runCli(["infer", "--json", "--requests", "3", "--threads", "2", "--batch", "8"])).stdout,
  );
  assert.equal(two.threads, 2);
  assert.ok(
    Math.abs(a.checksum - two.checksum) <= 1e-3 * Math.max(1, Math.abs(a.checksum)),
    `${a.checksum} vs ${two.checksum}`,
  );
});

Deno.test("unknown subcommands and flags print usage and exit 2", async () => {
  const unknown = await runCli(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command 'frobnicate'/);
  assert.match(unknown.stderr, /Usage:/);
  const badFlag = await runCli(["infer", "--nope"]);
  assert.equal(badFlag.code, 2);
  assert.match(badFlag.stderr, /nope/);
  const badValue = await runCli(["infer", "--threads", "zero"]);
  assert.equal(badValue.code, 2);
  assert.match(badValue.stderr, /--threads expects an integer from 1 to 1024, got 'zero'/);
  const none = await runCli([]);
  assert.equal(none.code, 2);
});

Deno.test("bad thread counts, missing models, directories and devices get one-line errors, no stack trace", async () => {
  const negative = await runCli(["infer", "--threads", "-1"]);
  assert.equal(negative.code, 2);
  assert.match(negative.stderr, /--threads expects an integer from 1 to 1024, got '-1'/);
  const huge = await runCli(["infer", "--threads", "100000"]);
  assert.equal(huge.code, 2);
  assert.match(huge.stderr, /--threads expects an integer from 1 to 1024, got '100000'/);
  const proto = await runCli(["toString"]);
  assert.equal(proto.code, 2);
  assert.match(proto.stderr, /unknown command 'toString'/);
  const dir = await Deno.makeTempDir();
  try {
    for (
      const [model, pattern] of [
        [`${dir}/missing.onnx`, /no model file at '.*missing\.onnx' \(check the path\)/],
        [dir, /is not a regular file \(a directory or a device\)/],
        ["/dev/zero", /'\/dev\/zero' is not a regular file/],
      ] as const
    ) {
      const result = await runCli(["infer", "--model", model, "--requests", "1", "--warmup", "0"]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, pattern);
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("every subcommand has --help", async () => {
  for (const command of ["infer", "parallel_info", "serve"]) {
    const result = await runCli([command, "--help"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, new RegExp(`Usage: deno run -A main.ts ${command}`));
  }
  assert.equal((await runCli(["help"])).code, 0);
});

Deno.test("infer runs every built-in with concurrent inference threads", async () => {
  for (const model of ["builtin:mlp", "builtin:resnet", "builtin:dlrm", "builtin:transformer"]) {
    const result = await runCli([
      "infer",
      "--model",
      model,
      "--json",
      "--requests",
      "8",
      "--concurrency",
      "3",
      "--batch",
      "2",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout);
    assert.equal(report.concurrency, 3);
    assert.ok(Number.isFinite(report.checksum), model);
    assert.ok(report.throughput_per_s > 0);
  }
  const unknown = await runCli(["infer", "--model", "builtin:nope"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown model 'builtin:nope'/);
  const tooMany = await runCli(["infer", "--concurrency", "33"]);
  assert.equal(tooMany.code, 2);
});

Deno.test("infer loads a model file, and refuses a malformed one with a typed error", async () => {
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  const save = await runSnippet(
    `import { builtin, save } from "${MOD_URL}";
     const model = builtin("mlp", { batch: 3 });
     await save(model, "${path}");`,
  );
  assert.equal(save.code, 0, save.stderr);
  const ran = await runCli(["infer", "--model", path, "--json", "--requests", "2"]);
  assert.equal(ran.code, 0, ran.stderr);
  const builtinRun = await runCli(["infer", "--model", "builtin:mlp", "--batch", "3", "--json", "--requests", "2"]);
  assert.equal(JSON.parse(ran.stdout).checksum.toFixed(3), JSON.parse(builtinRun.stdout).checksum.toFixed(3));
  // --memory-budget: a budget too small for the model is a one-line too_large; a bad size a usage error.
  const tight = await runCli(["infer", "--model", path, "--memory-budget", "1K", "--requests", "1"]);
  assert.equal(tight.code, 1, tight.stderr);
  assert.match(tight.stderr, /1024-byte memory budget.*\(too_large\)\nhint: infer's --memory-budget raises the budget/);
  assert.doesNotMatch(tight.stderr, /\n\s+at /, "no stack trace");
  const roomy = await runCli(["infer", "--model", path, "--memory-budget", "64MiB", "--json", "--requests", "1"]);
  assert.equal(roomy.code, 0, roomy.stderr);
  const bad = await runCli(["infer", "--model", path, "--memory-budget", "lots"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--memory-budget expects a size such as 8G, 512M or 1000000 \(bytes\), got 'lots'/);
  await Deno.writeFile(path, new Uint8Array(100));
  const broken = await runCli(["infer", "--model", path]);
  assert.equal(broken.code, 1);
  assert.match(broken.stderr, /malformed_model/);
});

Deno.test("infer names an ONNX input's symbolic shape and the flag when sizes other than the batch are dynamic", async () => {
  const { onnx } = await import("../tools/fuzz_corpus.ts");
  const bytes = onnx({
    opset: 17,
    nodes: [{ op: "Relu", inputs: ["image"], outputs: ["y"] }],
    initializers: [],
    inputs: [{ name: "image", dims: ["batch", 3, "height", "width"] }],
    outputs: [{ name: "y", dims: [] }],
  });
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  try {
    await Deno.writeFile(path, bytes);
    const refused = await runCli(["infer", "--model", path, "--requests", "1", "--warmup", "0"]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /input 'image' has the symbolic shape \[batch, 3, height, width\]/);
    assert.match(refused.stderr, /--input-shape image=1x3xheightxwidth/);
    const given = await runCli(["infer", "--model", path, "--input-shape", "image=1x3x8x8", "--requests", "1"]);
    assert.equal(given.code, 0, given.stderr);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("infer feeds integer inputs (token ids) fixed-seed values in [0, --int-values)", async () => {
  const model = "tests/fixtures/torch/torch_gru.onnx";
  const args = ["infer", "--model", model, "--input-shape", "tokens=2x7", "--requests", "2", "--warmup", "0"];
  const zeros = await runCli([...args, "--json"]);
  assert.equal(zeros.code, 0, zeros.stderr);
  const some = await runCli([...args, "--json", "--int-values", "50"]);
  assert.equal(some.code, 0, some.stderr);
  assert.notEqual(JSON.parse(some.stdout).checksum, JSON.parse(zeros.stdout).checksum);
  // Past the embedding table's 50 rows: the model's own typed error, one line.
  const past = await runCli([...args, "--int-values", "51000"]);
  assert.equal(past.code, 1);
  assert.match(past.stderr, /^error: .*index \d+ is out of range for dim 0 of size 50 \(index_out_of_range\)/);
  const bad = await runCli([...args, "--int-values", "0"]);
  assert.equal(bad.code, 2);
});

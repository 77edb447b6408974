import assert from "node:assert/strict";
import { runCli } from "./helpers.ts";

Deno.test("infer with no arguments runs the embedded example and reports", async () => {
  const result = await runCli(["infer", "--requests", "5", "--warmup", "1"]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^model: builtin:example \(batch 64, hidden 1024\)$/m);
  assert.match(result.stdout, /^checksum: -?\d\.\d{6}e[+-]\d+$/m);
  assert.match(result.stdout, /^threads: intra-op \d+, inter-op \d+ \(backend (omp|tbb), blas (openblas|native)\)$/m);
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
    "--hidden",
    "256",
  ]);
  assert.equal(one.code, 0, one.stderr);
  const a = JSON.parse(one.stdout);
  assert.equal(a.threads, 1);
  assert.equal(a.interop_threads, 1);
  assert.ok(a.latency_ms.p50 > 0 && a.latency_ms.p50 <= a.latency_ms.p99);
  const two = JSON.parse(
    (await runCli(["infer", "--json", "--requests", "3", "--threads", "2", "--hidden", "256"])).stdout,
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
  assert.match(badValue.stderr, /--threads expects a positive integer, got 'zero'/);
  const none = await runCli([]);
  assert.equal(none.code, 2);
});

Deno.test("every subcommand has --help", async () => {
  for (const command of ["infer", "parallel_info"]) {
    const result = await runCli([command, "--help"]);
    assert.equal(result.code, 0);
    assert.match(result.stdout, new RegExp(`Usage: deno run -A main.ts ${command}`));
  }
  assert.equal((await runCli(["help"])).code, 0);
});

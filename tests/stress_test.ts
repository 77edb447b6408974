import assert from "node:assert/strict";
import { ROOT } from "./helpers.ts";

async function stress(interop: number, seed: number) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/tests/stress_fixture.ts`, String(interop), String(seed)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

for (const interop of [1, 2]) {
  Deno.test(`random fork/wait trees with injected errors complete on ${interop} inter-op thread(s)`, async () => {
    const summary = await stress(interop, 17 + interop);
    assert.ok(summary.runs > 0);
    assert.ok(summary.errors > 0, "some trees must fail");
    assert.equal(summary.mismatches, 0);
    assert.equal(summary.tensorsLeaked, 0);
    assert.equal(summary.futuresLeaked, 0);
  });
}

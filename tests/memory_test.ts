import assert from "node:assert/strict";
import { ROOT, runSnippet } from "./helpers.ts";

// Issue 17, "Memory when users don't dispose": native memory is reported to V8, so code
// that relies on the GC is collected as its tensors' bytes grow; idle memory goes back to
// the OS. Each case runs in a child process so that other tests' tensors and timing do not
// disturb the counts.

/** Runs `source` (imports name "ROOT/…" for the repository) in a fresh process; returns its stdout. */
async function child(source: string): Promise<string> {
  const result = await runSnippet(source.replaceAll("ROOT/", `file://${ROOT}/`));
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.trim();
}

Deno.test("tensors nobody disposes are collected as their native bytes grow", async () => {
  // 3,000 tensors of 1 MiB (3 GiB in all), dropped without dispose, the event loop free
  // every 20 so that finalizers run. Measured: at most about 100 alive at once; without the
  // external-memory report V8 sees only the small wrappers and let 1,160 pile up.
  const peak = Number(
    await child(`
      import { zeros } from "ROOT/mod.ts";
      import { liveTensorCount } from "ROOT/lib/tensor.ts";
      let peak = 0;
      for (let i = 0; i < 3000; i++) {
        zeros([256, 1024]);
        peak = Math.max(peak, liveTensorCount());
        if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      console.log(peak);
    `),
  );
  assert.ok(peak < 400, `${peak} undisposed 1 MiB tensors were alive at once`);
});

Deno.test("an idle process gives the block cache back", async () => {
  // Large tensors freed into the cache; then nothing allocates for the idle interval (3 s).
  const [cachedBusy, cachedIdle, trims] = JSON.parse(
    await child(`
      import { add, zeros } from "ROOT/mod.ts";
      import { native } from "ROOT/ffi/load.ts";
      const stats = new BigUint64Array(3);
      for (let i = 0; i < 10; i++) {
        using a = zeros([512, 1024]);
        using b = add(a, a);
      }
      native().spindle_memory_stats(stats);
      const busy = Number(stats[0]);
      const trimsBefore = stats[1];
      for (let waited = 0; waited < 8000 && stats[1] === trimsBefore; waited += 250) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        native().spindle_memory_stats(stats);
      }
      console.log(JSON.stringify([busy, Number(stats[0]), Number(stats[1] - trimsBefore)]));
    `),
  );
  assert.ok(cachedBusy >= 2 * 1024 * 1024, `${cachedBusy} bytes cached after the loop`);
  assert.equal(trims, 1);
  assert.equal(cachedIdle, 0);
});

import assert from "node:assert/strict";
import { add, fork, Future, liveTensorCount, mm, rand, SpindleError, tensor, wait, zeros } from "../mod.ts";
import { pendingAwaits } from "../lib/completions.ts";
import { liveFutureCount } from "../lib/future.ts";
import { MOD_URL, runSnippet } from "./helpers.ts";

Deno.test("fork of a native op returns a future whose value equals the direct call", async () => {
  using a = rand([33, 17], { seed: 1 });
  using b = rand([17, 9], { seed: 2 });
  const future = fork(mm, a, b);
  assert.ok(future instanceof Future);
  using direct = mm(a, b);
  using joined = wait(future);
  assert.deepEqual(joined.toArray(), direct.toArray());
  assert.ok(future.done());
  // Waiting again gives the same value.
  assert.equal(future.wait(), joined);
  const awaited = await future;
  assert.equal(awaited, joined);
});

Deno.test("await keeps the event loop free and resolves", async () => {
  using a = rand([64, 64], { seed: 3 });
  const futures = Array.from({ length: 8 }, () => fork(mm, a, a));
  const values = await Promise.all(futures);
  for (const value of values) {
    assert.deepEqual(value.shape, [64, 64]);
    value.dispose();
  }
});

Deno.test("errors of forked ops are raised by wait and by await", async () => {
  using a = zeros([2, 3]);
  const future = fork(mm, a, a);
  assert.throws(
    () => future.wait(),
    (e) => e instanceof SpindleError && e.code === "shape_mismatch" && /mm:/.test(e.message),
  );
  const second = fork(mm, a, a);
  await assert.rejects(async () => await second, (e) => e instanceof SpindleError && e.code === "shape_mismatch");
});

Deno.test("inputs stay alive while the task runs even if disposed meanwhile", () => {
  const before = liveTensorCount();
  const a = rand([256, 256], { seed: 4 });
  const expected = mm(a, a);
  const future = fork(mm, a, a);
  a.dispose();
  using got = future.wait();
  assert.deepEqual(got.toArray(), expected.toArray());
  expected.dispose();
  got.dispose();
  assert.equal(liveTensorCount(), before);
});

Deno.test("forking a plain function runs it inline and returns a completed future", async () => {
  let ran = false;
  const future = fork((x: number) => {
    ran = true;
    return x * 2;
  }, 21);
  assert.ok(ran);
  assert.ok(future.done());
  assert.equal(future.wait(), 42);
  assert.equal(await future, 42);
  const failing = fork(() => {
    throw new RangeError("boom");
  });
  assert.throws(() => failing.wait(), RangeError);
});

Deno.test("fork validates its arguments", () => {
  using a = tensor([1]);
  assert.throws(() => fork(mm, a, 5 as unknown as typeof a), TypeError);
  assert.throws(() => fork(42 as unknown as () => void), TypeError);
  assert.throws(() => wait({} as Future<number>), TypeError);
  using b = add(a, a);
  assert.equal(b.numel, 1);
});

Deno.test("a thousand futures in flight are awaited through one completion queue", async () => {
  const before = liveTensorCount();
  using a = rand([8, 8], { seed: 5 });
  const futures = Array.from({ length: 1000 }, () => fork(mm, a, a));
  const results = await Promise.all(futures);
  using expected = mm(a, a);
  const first = expected.toArray();
  for (const result of results) {
    assert.deepEqual(result.toArray(), first);
    result.dispose();
  }
  assert.equal(pendingAwaits(), 0);
  assert.equal(liveTensorCount(), before + 2);
});

Deno.test("futures are released after wait and await", async () => {
  const baseline = liveFutureCount();
  using a = rand([4, 4], { seed: 6 });
  for (let i = 0; i < 50; i++) wait(fork(mm, a, a)).dispose();
  const awaited = await Promise.all(Array.from({ length: 50 }, () => fork(mm, a, a)));
  awaited.forEach((t) => t.dispose());
  // A worker drops its last reference just after completing a future: allow it a moment.
  for (let i = 0; i < 200 && liveFutureCount() > baseline; i++) await new Promise((r) => setTimeout(r, 10));
  // At most: the GC may finalise futures other tests dropped (the 100,000 below) meanwhile.
  assert.ok(liveFutureCount() <= baseline, `${liveFutureCount()} futures alive, ${baseline} before`);
});

Deno.test("a failed future dropped without a wait is reported, not lost", async () => {
  const result = await runSnippet(
    `import { fork, mm, zeros } from "${MOD_URL}";
     const a = zeros([2, 3]);
     (() => { fork(mm, a, a); })();
     await new Promise((resolve) => setTimeout(resolve, 50));
     for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((resolve) => setTimeout(resolve, 20)); }
     console.log("done");`,
    {},
    undefined,
    ["--v8-flags=--expose-gc"],
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /mm: shapes \[2, 3\] and \[2, 3\] cannot be multiplied/);
});

Deno.test("100,000 forks nobody waits on grow the future slab instead of failing", async () => {
  using a = rand([2, 2], { seed: 7 });
  // Fire and forget: the futures are dropped at once; only the GC's finalizer releases them.
  for (let i = 0; i < 100_000; i++) fork(mm, a, a);
  assert.ok(liveFutureCount() > 65_536, `${liveFutureCount()} futures alive`);
  using after = await fork(mm, a, a);
  using expected = mm(a, a);
  assert.deepEqual(after.toArray(), expected.toArray());
});

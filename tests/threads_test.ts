import assert from "node:assert/strict";
import { MOD_URL, runCli, runSnippet } from "./helpers.ts";
import {
  getNumInteropThreads,
  getNumThreads,
  parallelInfoJson,
  setNumInteropThreads,
  setNumThreads,
  SpindleError,
} from "../mod.ts";

async function intraOpThreads(env: Record<string, string>): Promise<{ threads: number; stderr: string }> {
  const result = await runCli(["parallel_info", "--json"], env);
  assert.equal(result.code, 0, result.stderr);
  return { threads: JSON.parse(result.stdout).num_threads, stderr: result.stderr };
}

Deno.test("intra-op default is the physical core count when no variable is set", async () => {
  const result = await runCli(["parallel_info", "--json"]);
  const info = JSON.parse(result.stdout);
  assert.equal(info.num_threads, info.physical_cores);
  assert.equal(info.num_threads_source, "default");
  assert.equal(info.num_interop_threads, info.physical_cores);
});

Deno.test("OMP_NUM_THREADS sets the intra-op default", async () => {
  assert.equal((await intraOpThreads({ OMP_NUM_THREADS: "3" })).threads, 3);
});

Deno.test("MKL_NUM_THREADS wins over OMP_NUM_THREADS", async () => {
  assert.equal((await intraOpThreads({ MKL_NUM_THREADS: "1", OMP_NUM_THREADS: "3" })).threads, 1);
  assert.equal((await intraOpThreads({ MKL_NUM_THREADS: "5" })).threads, 5);
});

Deno.test("an OpenMP list takes its first value", async () => {
  assert.equal((await intraOpThreads({ OMP_NUM_THREADS: "4,2" })).threads, 4);
});

Deno.test("an invalid variable warns once and falls back", async () => {
  const physical = (await intraOpThreads({})).threads;
  for (const bad of ["abc", "0", "-3", "2.5", "100000"]) {
    const { threads, stderr } = await intraOpThreads({ OMP_NUM_THREADS: bad });
    assert.equal(threads, physical, `OMP_NUM_THREADS=${bad}`);
    const warnings = stderr.split("\n").filter((line) => line.includes("warning"));
    assert.equal(warnings.length, 1, stderr);
    assert.match(warnings[0], new RegExp(`OMP_NUM_THREADS='${bad.replace(".", "\\.")}'`));
  }
  // An invalid MKL value falls back to a valid OMP value, not to the core count.
  assert.equal((await intraOpThreads({ MKL_NUM_THREADS: "x", OMP_NUM_THREADS: "3" })).threads, 3);
});

Deno.test("the API beats both variables", async () => {
  const result = await runSnippet(
    `import { setNumThreads, getNumThreads, parallelInfoJson } from "${MOD_URL}";
     setNumThreads(2);
     console.log(getNumThreads(), parallelInfoJson().num_threads_source);`,
    { MKL_NUM_THREADS: "1", OMP_NUM_THREADS: "3" },
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), "2 api");
});

Deno.test("setNumThreads rejects non-integers and non-positive values", () => {
  const before = getNumThreads();
  assert.throws(() => setNumThreads(0), RangeError);
  assert.throws(() => setNumThreads(-1), RangeError);
  assert.throws(() => setNumThreads(5000), RangeError);
  assert.throws(() => setNumThreads(1.5), TypeError);
  assert.throws(() => setNumThreads(NaN), TypeError);
  assert.throws(() => setNumThreads("2" as unknown as number), TypeError);
  assert.throws(() => setNumThreads(0), /setNumThreads expects a positive integer up to 1024, got 0/);
  assert.equal(getNumThreads(), before);
});

Deno.test("setNumThreads applies at any time and to other threads", async () => {
  const before = getNumThreads();
  try {
    setNumThreads(3);
    assert.equal(getNumThreads(), 3);
    assert.equal(parallelInfoJson().num_threads, 3);
    setNumThreads(1);
    assert.equal(getNumThreads(), 1);
  } finally {
    setNumThreads(before);
  }
  // A worker (another OS thread, same library) sees the process-wide value.
  const result = await runSnippet(
    `import { setNumThreads } from "${MOD_URL}";
     setNumThreads(3);
     const worker = new Worker("data:text/javascript," + encodeURIComponent(
       'import { getNumThreads } from "${MOD_URL}"; postMessage(getNumThreads());'), { type: "module" });
     worker.onmessage = (event) => { console.log(event.data); worker.terminate(); };`,
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), "3");
});

Deno.test("setNumInteropThreads works once, then fails even with the same value", async () => {
  const result = await runSnippet(
    `import { setNumInteropThreads, getNumInteropThreads, SpindleError } from "${MOD_URL}";
     setNumInteropThreads(3);
     console.log(getNumInteropThreads());
     try { setNumInteropThreads(3); } catch (e) { console.log(e instanceof SpindleError, e.code, e.message); }`,
  );
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(result.stdout.trim().split("\n"), [
    "3",
    "true thread_settings cannot set number of interop threads after parallel work has started or set_num_interop_threads called",
  ]);
});

Deno.test("setNumInteropThreads fails after the first fork", async () => {
  const result = await runSnippet(
    `import { fork, mm, rand, wait, setNumInteropThreads } from "${MOD_URL}";
     const a = rand([4, 4], { seed: 1 });
     wait(fork(mm, a, a)).dispose();
     try { setNumInteropThreads(2); console.log("no error"); } catch (e) { console.log(e.code); }`,
  );
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), "thread_settings");
});

Deno.test("setNumInteropThreads validates its argument before the set-once rule", () => {
  assert.throws(() => setNumInteropThreads(0), RangeError);
  assert.throws(() => setNumInteropThreads(2.5), TypeError);
  assert.ok(getNumInteropThreads() >= 1);
  assert.ok(SpindleError);
});

Deno.test({
  name: "intra-op and inter-op worker threads carry spindle names (top -H, perf)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const result = await runSnippet(
      `import { fork, mm, randn, setNumThreads, parallelInfoJson } from "${MOD_URL}";
       setNumThreads(2);
       using a = randn([256, 256], { seed: 1 });
       mm(a, a).dispose();
       const y = await fork(mm, a, a);
       y.dispose();
       const names = [...Deno.readDirSync("/proc/self/task")].map((t) =>
         Deno.readTextFileSync("/proc/self/task/" + t.name + "/comm").trim());
       console.log(JSON.stringify({ backend: parallelInfoJson().intra_op_backend, names }));`,
    );
    assert.equal(result.code, 0, result.stderr);
    const { backend, names } = JSON.parse(result.stdout);
    assert.ok(names.includes(`spindle-${backend}`), `no spindle-${backend} thread among ${names}`);
    assert.ok(names.some((n: string) => n.startsWith("spindle-interop")), `no inter-op thread among ${names}`);
  },
});

/**
 * `deno task test`: every test of the project, ending with one line `N passed, N failed`.
 *
 * 1. Zig unit tests in Debug (LLVM, safety checks on) in two configurations that between them
 *    cover both threading backends and both GEMM backends (the default omp-native, which runs
 *    under ThreadSanitizer in step 2 and so not twice, and tbb-openblas where OpenBLAS is
 *    installed, else tbb-native), and the kernel tests compiled
 *    for each x86-64 level of the portable library (`zig build test-levels`). Debug compiles
 *    the suite in about 25 s where ReleaseSafe took about 250 s (CI's Zig time was mostly
 *    optimizing compiles) and runs it in about 45 s; the optimized code is what the Deno tests
 *    of step 3 run (ReleaseFast libraries). Steps 1, 2 and 2b, and the library builds of step 3
 *    (the portable one included), run two at a time (a Zig compile keeps one core busy);
 * 2. the unit tests under ThreadSanitizer (native GEMM): all of them with omp, and with tbb
 *    those of the code that differs between the backends (TSAN_BACKEND_FILTERS);
 * 2b. `deno task cross --debug`: every platform's library cross-compiled (Debug: quick) and
 *    checked (format, exports; this platform's also loaded), counted as one test per target;
 * 3. Deno tests (with the JSDoc examples) against the default build (omp-native); all of them
 *    again against tbb-native, the other threading backend; and the tests that exercise the
 *    GEMM backend (BLAS_TESTS) against each OpenBLAS configuration;
 * 4. the consumer test (tools/consumer_test.ts, about 10 s): the package as `deno publish` would
 *    upload it, served by a loopback JSR registry to a script in an empty folder;
 * 5. a short fuzz run with a fixed seed (tools/fuzz.ts; 60 s, 30 s with `--quick`), counted
 *    as one test: it fails when a mutant crashed, hung, overran memory or escaped untyped.
 *
 * @module
 */
import {
  allConfigs,
  type BuildConfig,
  configLibrary,
  configName,
  DEV_LOCK,
  libraryArgs,
  ROOT,
  run,
  runCaptured,
  STATIC_CHECKS,
  ZIG_DIR,
} from "./configs.ts";
import { crossBuildArgs, TARGETS } from "./targets.ts";

interface Tally {
  passed: number;
  failed: number;
}

const total: Tally = { passed: 0, failed: 0 };
const failures: string[] = [];
/** Each step's wall time, printed before the summary line (CI must stay under 30 minutes). */
const times: [string, number][] = [];
const started = performance.now();

/** Counts a step that began at `since` (performance.now()). */
function record(step: string, tally: Tally | null, code: number, since: number): void {
  times.push([step, (performance.now() - since) / 1000]);
  if (tally === null) {
    // No summary at all (a compile error, a crash): count the step as one failure.
    total.failed += 1;
    failures.push(`${step} (no test summary, exit code ${code})`);
    return;
  }
  total.passed += tally.passed;
  total.failed += tally.failed;
  if (tally.failed > 0 || code !== 0) failures.push(`${step} (${tally.failed} failed, exit code ${code})`);
  if (tally.failed === 0 && code !== 0) total.failed += 1;
}

/** Parses zig's `Build Summary: …; 22/22 tests passed; 1 skipped; 2 failed`. */
export function parseZigSummary(output: string): Tally | null {
  const match = output.match(/(\d+)\/(\d+) tests passed/);
  if (match === null) {
    const none = output.match(/Build Summary: \d+\/\d+ steps succeeded\s*$/m);
    return none === null ? null : { passed: 0, failed: 0 };
  }
  const skipped = Number(output.match(/(\d+) skipped/)?.[1] ?? 0);
  const passed = Number(match[1]);
  return { passed, failed: Number(match[2]) - passed - skipped };
}

const ANSI_ESCAPE = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");

/** Parses deno's `ok | 12 passed (3 steps) | 0 failed`. */
export function parseDenoSummary(output: string): Tally | null {
  // deno colours the summary unless NO_COLOR is set; strip ANSI escapes in any case.
  const plain = output.replace(ANSI_ESCAPE, "");
  const match = plain.match(/(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/);
  return match === null ? null : { passed: Number(match[1]), failed: Number(match[2]) };
}

/** Prints a step's banner; returns its start time for `record`. */
function banner(text: string): number {
  console.error(`\n=== ${text}`);
  return performance.now();
}

/**
 * Runs one step's command. With `echo` its output streams under the banner; without (a step
 * running beside others), banner and output are printed whole when it ends.
 */
async function stepCommand(
  step: string,
  echo: boolean,
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; output: string; since: number }> {
  const since = echo ? banner(step) : performance.now();
  const result = await runCaptured(command, args, { ...options, echo });
  if (!echo) {
    const seconds = ((performance.now() - since) / 1000).toFixed(0);
    console.error(`\n=== ${step} (${seconds} s, beside other steps)\n${result.output}`);
  }
  return { ...result, since };
}

/**
 * Runs `jobs` at most `width` at a time, each starting as a slot frees, in list order. Zig
 * compiles a test binary on one core (one LLVM module), so two compiles side by side use a
 * 2-core machine's second core; the compiles are most of CI's Zig time.
 */
async function sideBySide(jobs: (() => Promise<void>)[], width: number): Promise<void> {
  let next = 0;
  const slot = async () => {
    while (next < jobs.length) await jobs[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(width, jobs.length) }, slot));
}

/**
 * The unit tests whose names start with these run under ThreadSanitizer in the second threading
 * backend: the code that differs between backends (the pools, futures, the inference and
 * inter-op pools, in pool/) and what forks work through them (the interpreter, exported fork
 * calls, ops/parallel.zig). The kernels split their work through the same partitioning code in
 * both backends, so the first backend's full race-checked run covers them; this keeps CI under
 * 30 minutes (the full suite under TSan takes about 6 minutes per backend, compile included;
 * this part 30 s).
 */
export const TSAN_BACKEND_FILTERS = ["pool.", "interpreter.", "exports.", "ops.parallel"];

/** Runs the Zig unit tests of `config` compiled in Debug, race-checked with `tsan`. */
async function zigTests(config: BuildConfig, tsan: boolean, filters: string[] = [], echo = true): Promise<void> {
  const step = `zig test ${configName(config)} Debug${tsan ? " tsan" : ""}${
    filters.length > 0 ? ` (${filters.join(" ")})` : ""
  }`;
  const args = ["build", "test", "--summary", "all", `-Dthreading=${config.threading}`, `-Dblas=${config.blas}`];
  args.push("-Dtest-optimize=Debug");
  if (tsan) args.push("-Dtsan=true");
  for (const filter of filters) args.push(`-Dtest-filter=${filter}`);
  const { code, output, since } = await stepCommand(step, echo, "zig", args, { cwd: ZIG_DIR });
  const tally = parseZigSummary(output);
  // Filters that match nothing (tests renamed or moved) must fail, not pass with no test run.
  if (filters.length > 0 && tally !== null && tally.passed === 0) {
    console.error(`${step}: the filters matched no test; update TSAN_BACKEND_FILTERS`);
    record(step, { passed: 0, failed: 1 }, code, since);
    return;
  }
  record(step, tally, code, since);
}

async function zigLevelTests(echo = true): Promise<void> {
  const step = "zig test-levels Debug (kernels at x86_64, x86_64_v3, x86_64_v4)";
  const args = ["build", "test-levels", "--summary", "all", "-Dtest-optimize=Debug"];
  const { code, output, since } = await stepCommand(step, echo, "zig", args, { cwd: ZIG_DIR });
  record(step, parseZigSummary(output), code, since);
}

/** Parses tools/cross.ts's last line: `cross: N passed, N failed`. */
export function parseCrossSummary(output: string): Tally | null {
  const match = output.match(/^cross: (\d+) passed, (\d+) failed$/m);
  return match === null ? null : { passed: Number(match[1]), failed: Number(match[2]) };
}

async function crossBuilds(echo = true): Promise<void> {
  const step = "cross-compile every target (Debug)";
  // Debug builds: every target, the same dispatch and exports, in a fraction of the release
  // build's time (`deno task cross` builds the ReleaseFast artefacts).
  const args = ["run", "-A", "tools/cross.ts", "--debug"];
  const { code, output, since } = await stepCommand(step, echo, "deno", args, { cwd: ROOT });
  record(step, parseCrossSummary(output), code, since);
}

async function buildLibrary(config: BuildConfig | null): Promise<boolean> {
  return await run("zig", libraryArgs(config), { cwd: ZIG_DIR }) === 0;
}

/**
 * Builds the libraries the Deno steps load, beside the Zig tests; a failed build is not
 * counted here: the Deno step builds again and counts it.
 */
async function prebuildLibrary(config: BuildConfig | null): Promise<void> {
  await prebuild(`library ${config === null ? "default" : configName(config)}`, libraryArgs(config));
}

/** Runs `zig args` quietly, printing one line when it ends (and its output if it failed). */
async function prebuild(what: string, args: string[]): Promise<void> {
  const { code, output } = await runCaptured("zig", args, { cwd: ZIG_DIR, echo: false });
  console.error(`\n=== ${what} built beside the Zig tests${code === 0 ? "" : ` (failed, exit code ${code})`}`);
  if (code !== 0) console.error(output);
}

/**
 * The Deno test files that exercise the GEMM backend (matrix products, convolutions,
 * recurrent layers, whole models), run again against the OpenBLAS builds: the threading
 * backends are covered by the full runs against omp-native and tbb-native, and the other
 * files (formats, the CLI, serving, import, the node-test list, packaging, the portable
 * library's CPU levels) run no GEMM whose backend could change their outcome. CI must stay
 * under 30 minutes.
 */
export const BLAS_TESTS = [
  "conv",
  "module",
  "onnx_fuse",
  "onnx_models",
  "onnx_recurrent",
  "ops",
  "recurrent",
  "script",
  "threads",
].map((name) => `tests/${name}_test.ts`);

/** The configurations the Zig unit tests run in (see the module comment). */
function zigConfigs(configs: BuildConfig[]): BuildConfig[] {
  // omp-native is not here: its whole suite runs under TSan (the same tests, Debug too), and a
  // plain run of it added 250 s of a 2-core machine to CI without a test of its own.
  const tbb = configs.find((c) => c.threading === "tbb" && c.blas === "openblas") ??
    configs.find((c) => c.threading === "tbb")!;
  return [tbb];
}

/**
 * Builds the portable library (the linux-x86_64 release artefact) beside the Zig tests: the
 * portable-library tests (tests/cpu_level_test.ts) and the consumer test load it, and its
 * three-level compile took 4 of the Deno step's minutes when they built it themselves.
 */
async function prebuildPortable(): Promise<void> {
  await prebuild("portable library", crossBuildArgs(TARGETS.find((t) => t.name === "linux-x86_64")!));
}

async function denoTests(config: BuildConfig | null, files: string[] = ["tests/"]): Promise<void> {
  const step = `deno test ${config === null ? "default build (+ doc examples)" : configName(config)}${
    files.length > 1 ? ` (${files.length} GEMM test files)` : ""
  }`;
  const since = banner(step);
  const env: Record<string, string> = { NO_COLOR: "1" };
  if (!await buildLibrary(config)) {
    record(step, null, 1, since);
    return;
  }
  if (config !== null) env.SPINDLE_LIB = configLibrary(config);
  const args = ["test", "-A", "--no-check=remote", DEV_LOCK];
  if (config === null) args.push("--doc", "mod.ts", "lib/", "ffi/", "tests/");
  else args.push(...files);
  const { code, output } = await runCaptured("deno", args, { cwd: ROOT, env });
  record(step, parseDenoSummary(output), code, since);
}

/** Parses tools/consumer_test.ts's last line: `consumer: N passed, N failed`. */
export function parseConsumerSummary(output: string): Tally | null {
  const match = output.match(/^consumer: (\d+) passed, (\d+) failed$/m);
  return match === null ? null : { passed: Number(match[1]), failed: Number(match[2]) };
}

async function consumerRun(): Promise<void> {
  const step = "consumer (jsr: from a loopback registry)";
  const since = banner(step);
  const { code, output } = await runCaptured("deno", ["run", "-A", "tools/consumer_test.ts"], {
    cwd: ROOT,
    env: { NO_COLOR: "1" },
  });
  record(step, parseConsumerSummary(output), code, since);
}

/** The CI fuzz run's seed: the same mutants every run, so a failure reproduces. */
const FUZZ_SEED = 17;

/** Parses tools/fuzz.ts's last line: `fuzz: N cases in … (seed S): ok N, typed N, untyped N, …; over 5 s N`. */
export function parseFuzzSummary(output: string): { cases: number; bad: number } | null {
  const match = output.match(
    /^fuzz: (\d+) cases in .*: ok \d+, typed \d+, untyped (\d+), crash (\d+), hang (\d+), budget (\d+);/m,
  );
  if (match === null) return null;
  const [cases, ...bad] = match.slice(1).map(Number);
  return { cases, bad: bad.reduce((a, b) => a + b, 0) };
}

async function fuzzRun(seconds: number): Promise<void> {
  const step = `fuzz ${seconds} s (seed ${FUZZ_SEED})`;
  const since = banner(step);
  const args = ["run", "-A", "tools/fuzz.ts", "--seconds", String(seconds), "--seed", String(FUZZ_SEED)];
  const { code, output } = await runCaptured("deno", args, { cwd: ROOT, env: { NO_COLOR: "1" } });
  const summary = parseFuzzSummary(output);
  const passed = summary !== null && summary.cases > 0 && summary.bad === 0;
  record(step, summary === null ? null : { passed: passed ? 1 : 0, failed: passed ? 0 : 1 }, code, since);
}

/**
 * The static checks of `deno task ok` (tools/ok.ts), each one pass or one failure, so that CI
 * keeps formatting, lint, types and the public docs as green as the tests.
 */
async function staticChecks(): Promise<void> {
  for (const [step, command, args, cwd] of STATIC_CHECKS) {
    const since = banner(step);
    const code = await run(command, args, { cwd });
    record(step, { passed: code === 0 ? 1 : 0, failed: code === 0 ? 0 : 1 }, code, since);
  }
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const configs = allConfigs();
  await staticChecks();
  const levels = Deno.build.arch === "x86_64";
  if (quick) {
    await zigTests(configs[0], false);
    if (levels) await zigLevelTests();
  } else {
    // The Zig steps and the Deno steps' library builds run two at a time (sideBySide), the
    // longest first; each prints its output whole when it ends. TSan cannot load OpenBLAS
    // (libgfortran's constructors run before TSan's runtime), so the race checks run with the
    // native GEMM: every test with omp, the backend-specific ones with tbb.
    // In the order of their times on a 2-core Zen 5 (TSan 370 s, the portable library 240 s,
    // each library 180 s, the cross builds 150 s, the levels 95 s, each Debug suite 70 s).
    const jobs: (() => Promise<void>)[] = [];
    jobs.push(() => zigTests({ threading: "omp", blas: "native" }, true, [], false));
    if (Deno.build.os === "linux" && levels) jobs.push(prebuildPortable);
    for (const config of [null, ...configs.filter((c) => !(c.threading === "omp" && c.blas === "native"))]) {
      jobs.push(() => prebuildLibrary(config));
    }
    jobs.push(() => crossBuilds(false));
    if (levels) jobs.push(() => zigLevelTests(false));
    for (const config of zigConfigs(configs)) jobs.push(() => zigTests(config, false, [], false));
    jobs.push(() => zigTests({ threading: "tbb", blas: "native" }, true, TSAN_BACKEND_FILTERS, false));
    await sideBySide(jobs, 2);
  }
  await denoTests(null);
  if (!quick) {
    // omp-native is the default build, tested above.
    await denoTests({ threading: "tbb", blas: "native" });
    for (const config of configs.filter((c) => c.blas === "openblas")) await denoTests(config, BLAS_TESTS);
  }
  await consumerRun();
  await fuzzRun(quick ? 30 : 60);
  const wall = (performance.now() - started) / 1000;
  console.error(`\nstep times (${(wall / 60).toFixed(1)} min in all; the Zig steps ran two at a time):`);
  for (const [step, seconds] of times) console.error(`  ${seconds.toFixed(0).padStart(5)} s  ${step}`);
  if (failures.length > 0) console.error(`\nfailed steps:\n  ${failures.join("\n  ")}`);
  console.log(`${total.passed} passed, ${total.failed} failed`);
  Deno.exit(total.failed === 0 ? 0 : 1);
}

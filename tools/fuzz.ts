/**
 * `deno task fuzz [--seconds N] [--seed S]`: mutates the seed corpus (tests/fuzz/corpus/, plus
 * the PaddleOCR models and ONNX node-test models when .cache/ has them) and loads and runs
 * every mutant in child processes under a memory cap and a per-case timeout. Each case ends
 * in one outcome:
 *
 * - `ok`: it loaded and ran;
 * - `typed`: a SpindleError, TypeError, RangeError or Deno.errors.* with Spindle's own
 *   message — the expected refusal;
 * - `untyped`: any other exception (an engine TypeError such as "x is not a function", a
 *   SyntaxError, a SpindleError with code `internal`) — a bug;
 * - `crash`: the child died (a signal, an abort, an uncaught error);
 * - `hang`: it ran past the timeout (confirmed by a rerun alone with three times as long);
 * - `budget`: the child's RSS passed the cap, or memory ran out although the case loads
 *   under a 512 MiB tensor budget.
 *
 * Every untyped, crash, hang and budget outcome is printed and saved as a reproducer in
 * .fuzz/crashes/<outcome>-<hash>.<ext> (git-ignored), with a .json beside it saying which
 * seed and mutations made it; `deno task fuzz --replay FILE…` runs reproducers again. The
 * last line counts the outcomes and the files per second; the exit code is 1 when any bad
 * outcome occurred.
 *
 * Options: `--seconds N` (default 60), `--cases N` (stop after N cases instead), `--seed S`
 * (default: random, printed), `--jobs N` (children at once, default 1), `--corpus-only` (no
 * seeds from .cache/), `--replay FILE…`, `--regenerate-corpus` (rewrite tests/fuzz/corpus/).
 *
 * @module
 */
import { type Applied, type FileKind, mutate, Rng } from "./fuzz_mutate.ts";
import { type ChildResult, RESULT, START } from "./fuzz_worker.ts";
import { CORPUS_DIR, writeCorpus } from "./fuzz_corpus.ts";
import { ROOT } from "./configs.ts";
import { nodeTestsDir } from "./fetch_onnx_tests.ts";

/** How a case ended. */
export type Outcome = "ok" | "typed" | "untyped" | "crash" | "hang" | "budget";

/** Every outcome, in the order the summary lists them. */
export const OUTCOMES: readonly Outcome[] = ["ok", "typed", "untyped", "crash", "hang", "budget"];

/** The outcomes that are bugs. */
export const BAD_OUTCOMES: readonly Outcome[] = ["untyped", "crash", "hang", "budget"];

/** A file the fuzzer mutates. */
export interface Seed {
  /** For messages: the file name, or the node test's folder name. */
  name: string;
  kind: FileKind;
  path: string;
  /** Fixed sizes for dynamic input dimensions (the PaddleOCR models need them to import). */
  inputShapes?: Record<string, number[]>;
}

/** One mutant. */
export interface Case {
  /** The case index within the campaign (with the seed, it determines the bytes). */
  index: number;
  seed: Seed;
  bytes: Uint8Array;
  applied: Applied[];
}

/** A case and how it ended. */
export interface CaseResult {
  case: Case;
  outcome: Outcome;
  message: string;
  /** How long it ran (until it was killed, for a hang or an overrun). */
  ms: number;
}

/** The child's limits. */
export interface Limits {
  /** Per case; a case gets 2 s more per MB of file. */
  timeoutMs: number;
  /** The child's data segment cap (prlimit --data; V8 itself needs about 600 MB of it). */
  dataBytes: number;
  /** The child's resident memory cap, polled from /proc. */
  rssBytes: number;
}

/** The limits the fuzzer runs under. */
export const DEFAULT_LIMITS: Limits = { timeoutMs: 5000, dataBytes: 3 * 2 ** 30, rssBytes: 2 * 2 ** 30 };

/** How long a child may take to start (Deno, the module graph, the native library). */
const STARTUP_TIMEOUT_MS = 60_000;
/** Cases per child: amortises the child's start-up. */
const BATCH_SIZE = 24;
/** How often the parent checks the child's clock and memory. */
const POLL_MS = 20;
/**
 * Issue 17's bound on each hostile file: a case that takes longer (it timed out once and
 * finished on its rerun) is not a bad outcome, but it is counted (`over 5 s` in the summary)
 * and saved as a `slow-` reproducer.
 */
const SLOW_MS = 5000;
/** Reproducers saved per distinct failure (by outcome and message shape). */
const SAVED_PER_SIGNATURE = 3;

const WORKER = `${ROOT}/tools/fuzz_worker.ts`;
const CRASH_DIR = `${ROOT}/.fuzz/crashes`;
const MODELS_DIR = `${ROOT}/.cache/models/package/assets`;

/** Input sizes the PaddleOCR models import at (small: the fuzzer wants many files a second). */
const MODEL_INPUT_SHAPES: Record<string, number[]> = {
  "ch_ppocr_mobile_v2.0_cls_infer.onnx": [-1, 3, 48, 192],
  "ch_PP-OCRv4_rec_infer.onnx": [-1, 3, 48, 64],
  "ch_PP-OCRv4_det_infer.onnx": [-1, 3, 64, 64],
};

// ------------------------------------------------------------------------------------------
// Seeds

async function filesIn(dir: string, test: (name: string) => boolean): Promise<string[]> {
  try {
    const names: string[] = [];
    for await (const entry of Deno.readDir(dir)) if (entry.isFile && test(entry.name)) names.push(entry.name);
    return names.sort();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

function kindOf(name: string): FileKind | null {
  return name.endsWith(".onnx") ? "onnx" : name.endsWith(".spindle") ? "spindle" : null;
}

/** The seed groups and how often a case picks each (the committed corpus most of the time). */
export interface SeedGroups {
  corpus: Seed[];
  nodeTests: Seed[];
  models: Seed[];
}

/**
 * Lists the seeds: the committed corpus, and unless `corpusOnly`, the ONNX node-test models
 * and the PaddleOCR models found in .cache/.
 */
export async function listSeeds(corpusOnly = false): Promise<SeedGroups> {
  const corpus = (await filesIn(CORPUS_DIR, (n) => kindOf(n) !== null)).map((name) => ({
    name,
    kind: kindOf(name)!,
    path: `${CORPUS_DIR}/${name}`,
  }));
  if (corpus.length === 0) throw new Error(`fuzz: no seeds in ${CORPUS_DIR}; run deno task fuzz --regenerate-corpus`);
  if (corpusOnly) return { corpus, nodeTests: [], models: [] };
  const models = (await filesIn(MODELS_DIR, (n) => n in MODEL_INPUT_SHAPES)).map((name) => ({
    name,
    kind: "onnx" as const,
    path: `${MODELS_DIR}/${name}`,
    inputShapes: { x: MODEL_INPUT_SHAPES[name] },
  }));
  const nodeDir = nodeTestsDir();
  const nodeTests: Seed[] = [];
  try {
    const tests: string[] = [];
    for await (const entry of Deno.readDir(nodeDir)) if (entry.isDirectory) tests.push(entry.name);
    for (const name of tests.sort()) nodeTests.push({ name, kind: "onnx", path: `${nodeDir}${name}/model.onnx` });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return { corpus, nodeTests, models };
}

const seedBytes = new Map<string, Uint8Array>();

async function readSeed(seed: Seed): Promise<Uint8Array> {
  let bytes = seedBytes.get(seed.path);
  if (bytes === undefined) {
    bytes = await Deno.readFile(seed.path);
    // Keep the small ones; the PaddleOCR models are read again each time (MBs each).
    if (bytes.length < 1 << 20) seedBytes.set(seed.path, bytes);
  }
  return bytes;
}

/** Picks case `index`'s seed and mutates it: the same (seeds, seed, index) always give the same case. */
export async function makeCase(groups: SeedGroups, seed: number, index: number): Promise<Case> {
  const rng = Rng.forCase(seed, index);
  const roll = rng.int(100);
  // 69% the committed corpus, 25% node tests, 6% the PaddleOCR models (where present): a
  // mutant of one of those takes as long as ten small ones.
  const group = roll < 6 && groups.models.length > 0
    ? groups.models
    : roll < 31 && groups.nodeTests.length > 0
    ? groups.nodeTests
    : groups.corpus;
  const picked = rng.pick(group);
  const { bytes, applied } = mutate(await readSeed(picked), picked.kind, rng);
  return { index, seed: picked, bytes, applied };
}

// ------------------------------------------------------------------------------------------
// Children

/** How the child is started: under prlimit when there is one, else bash's ulimit. */
async function childCommand(args: string[], limits: Limits): Promise<[string, string[]]> {
  const deno = [Deno.execPath(), "run", "-A", WORKER, ...args];
  if (await hasPrlimit()) return ["prlimit", [`--data=${limits.dataBytes}`, ...deno]];
  return ["bash", ["-c", `ulimit -d ${Math.floor(limits.dataBytes / 1024)} && exec "$@"`, "bash", ...deno]];
}

let prlimitFound: boolean | undefined;
async function hasPrlimit(): Promise<boolean> {
  if (prlimitFound === undefined) {
    try {
      prlimitFound = (await new Deno.Command("prlimit", { args: ["--version"], stdout: "null", stderr: "null" })
        .output()).success;
    } catch {
      prlimitFound = false;
    }
  }
  return prlimitFound;
}

function rssBytes(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = status.match(/^VmRSS:\s+(\d+) kB/m);
    return kb === null ? 0 : Number(kb[1]) * 1024;
  } catch {
    return 0; // gone already
  }
}

function timeoutOf(c: Case, limits: Limits): number {
  return limits.timeoutMs + Math.round((c.bytes.length / 2 ** 20) * 2000);
}

const ANSI_ESCAPE = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");
const MEMORY_DEATH = /out of memory|allocation failed|Reached heap limit/i;

/** What one child did: results of the cases it finished, and how it ended if abnormally. */
interface ChildRun {
  results: ChildResult[];
  /** The case (index within the batch) the child was in when it died or was killed. */
  failure?: { index: number; outcome: Outcome; message: string; ms: number };
}

/** Runs cases in one child until they are done or the child dies. */
async function runChild(cases: Case[], paths: string[], limits: Limits, manifest: string): Promise<ChildRun> {
  await Deno.writeTextFile(
    manifest,
    JSON.stringify(cases.map((c, i) => ({ path: paths[i], inputShapes: c.seed.inputShapes }))),
  );
  const [command, args] = await childCommand(["--manifest", manifest], limits);
  const child = new Deno.Command(command, {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const results: ChildResult[] = [];
  let current: { index: number; since: number } | null = null;
  let killed: { outcome: Outcome; message: string } | null = null;
  const spawned = performance.now();
  const kill = (outcome: Outcome, message: string) => {
    if (killed !== null) return;
    killed = { outcome, message };
    try {
      child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
  };
  let idleSince = spawned;
  const timer = setInterval(() => {
    const now = performance.now();
    const rss = rssBytes(child.pid);
    if (rss > limits.rssBytes) kill("budget", `resident memory ${rss} bytes, over the ${limits.rssBytes}-byte cap`);
    if (current !== null) {
      const limit = timeoutOf(cases[current.index], limits);
      if (now - current.since > limit) kill("hang", `no result after ${limit} ms`);
    } else if (results.length === 0) {
      if (now - spawned > STARTUP_TIMEOUT_MS) kill("crash", "the child did not start");
    } else if (now - idleSince > limits.timeoutMs) {
      kill("hang", `the child neither went on nor exited within ${limits.timeoutMs} ms after the case`);
    }
  }, POLL_MS);
  const stderrText = new Response(child.stderr).text();
  try {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of child.stdout) {
      pending += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line.startsWith(START)) current = { index: Number(line.slice(START.length)), since: performance.now() };
        else if (line.startsWith(RESULT)) {
          results.push(JSON.parse(line.slice(RESULT.length)) as ChildResult);
          current = null;
          idleSince = performance.now();
        }
      }
    }
  } finally {
    clearInterval(timer);
  }
  const status = await child.status;
  const stderr = (await stderrText).replace(ANSI_ESCAPE, "");
  const endedBy = killed as { outcome: Outcome; message: string } | null;
  const inCase = current as { index: number; since: number } | null;
  const ms = inCase === null ? 0 : Math.round(performance.now() - inCase.since);
  if (inCase === null) {
    if (endedBy === null && status.success && results.length === cases.length) return { results };
    if (results.length === 0) {
      throw new Error(`fuzz: the worker failed before its first case (exit ${status.code}):\n${stderr.slice(-4000)}`);
    }
  }
  // Dying between cases (an uncaught asynchronous error, a crash in a finalizer) is blamed
  // on the case that ran last: what it left behind did it.
  if (inCase === null) results.pop();
  const index = inCase?.index ?? results.length;
  if (endedBy !== null) return { results, failure: { index, ...endedBy, ms } };
  const how = status.signal !== null ? `signal ${status.signal}` : `exit code ${status.code}`;
  const last = stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("at "));
  const message = `${how}: ${last.slice(-3).join(" | ").slice(0, 600)}`;
  return { results, failure: { index, outcome: MEMORY_DEATH.test(stderr) ? "budget" : "crash", message, ms } };
}

/**
 * Runs cases in children, several per child; after a crash, the remaining cases run in a
 * fresh child. A hang is rerun alone with three times the timeout before it counts.
 *
 * @param cases The cases.
 * @param limits Timeout and memory caps.
 * @returns One result per case, in order.
 */
export async function runCases(cases: Case[], limits: Limits = DEFAULT_LIMITS): Promise<CaseResult[]> {
  const dir = await Deno.makeTempDir({ prefix: "spindle-fuzz-" });
  try {
    const paths = cases.map((c, i) => `${dir}/case${i}.${c.seed.kind}`);
    for (const [i, c] of cases.entries()) await Deno.writeFile(paths[i], c.bytes);
    const results: CaseResult[] = [];
    let runs = 0;
    while (results.length < cases.length) {
      const start = results.length;
      const run = await runChild(cases.slice(start), paths.slice(start), limits, `${dir}/manifest${runs++}.json`);
      for (const r of run.results) {
        results.push({ case: cases[start + r.index], outcome: r.outcome, message: r.message, ms: r.ms });
      }
      if (run.failure === undefined) continue;
      const c = cases[start + run.failure.index];
      let { outcome, message, ms } = run.failure;
      if (outcome === "hang") {
        const slow = { ...limits, timeoutMs: limits.timeoutMs * 3 };
        const again = await runChild([c], [paths[start + run.failure.index]], slow, `${dir}/manifest${runs++}.json`);
        ({ outcome, message, ms } = again.failure ?? again.results[0]);
      }
      results.push({ case: c, outcome, message, ms });
    }
    return results;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ------------------------------------------------------------------------------------------
// Reports

async function digest(bytes: Uint8Array): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(hash.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The shape of a failure, so repeats of one bug are counted rather than printed. */
function signature(result: CaseResult): string {
  return `${result.outcome} ${result.message.replace(/-?\d+/g, "#").replace(/'[^']*'/g, "'…'").slice(0, 160)}`;
}

/** Saves a reproducer and its notes; returns the reproducer's path. */
async function saveReproducer(result: CaseResult, seed: number, label: string = result.outcome): Promise<string> {
  await Deno.mkdir(CRASH_DIR, { recursive: true });
  const c = result.case;
  const base = `${CRASH_DIR}/${label}-${await digest(c.bytes)}`;
  await Deno.writeFile(`${base}.${c.seed.kind}`, c.bytes);
  const notes = {
    outcome: result.outcome,
    ms: result.ms,
    message: result.message,
    seed: c.seed.name,
    campaign: { seed, case: c.index },
    mutations: c.applied,
    inputShapes: c.seed.inputShapes,
  };
  await Deno.writeTextFile(`${base}.json`, JSON.stringify(notes, null, 2) + "\n");
  return `${base}.${c.seed.kind}`.slice(ROOT.length + 1);
}

/** Counts of a campaign. */
export interface Summary {
  cases: number;
  seconds: number;
  counts: Record<Outcome, number>;
  /** Distinct bad outcomes: signature → count and saved reproducers. */
  failures: Map<string, { count: number; files: string[] }>;
  /** The slowest case (where a campaign's time goes). */
  slowest: CaseResult | null;
  /** Cases that took longer than SLOW_MS, whatever their outcome. */
  slow: number;
}

function summaryLine(summary: Summary, seed: number): string {
  const rate = summary.cases / Math.max(summary.seconds, 1e-9);
  const counts = OUTCOMES.map((o) => `${o} ${summary.counts[o]}`).join(", ");
  return `fuzz: ${summary.cases} cases in ${summary.seconds.toFixed(1)} s, ${
    rate.toFixed(1)
  } files/s (seed ${seed}): ${counts}; over ${SLOW_MS / 1000} s ${summary.slow}`;
}

// ------------------------------------------------------------------------------------------
// Campaigns

/** Options of {@link fuzz}. */
export interface FuzzOptions {
  seed: number;
  seconds: number;
  /** Stop after this many cases (instead of, or before, the time limit). */
  cases?: number;
  jobs?: number;
  corpusOnly?: boolean;
  limits?: Limits;
  /** Print progress and failures (default true). */
  verbose?: boolean;
}

/**
 * Runs a campaign: batches of cases until the time (or the case count) is used up.
 *
 * @param options Seed, duration, parallel children.
 * @returns The counts and the distinct failures.
 */
export async function fuzz(options: FuzzOptions): Promise<Summary> {
  const groups = await listSeeds(options.corpusOnly ?? false);
  const verbose = options.verbose ?? true;
  const limits = options.limits ?? DEFAULT_LIMITS;
  const started = performance.now();
  const deadline = started + options.seconds * 1000;
  const maxCases = options.cases ?? Infinity;
  const summary: Summary = {
    cases: 0,
    seconds: 0,
    counts: Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>,
    failures: new Map(),
    slowest: null,
    slow: 0,
  };
  if (verbose) {
    console.error(
      `fuzz: seed ${options.seed}; ${groups.corpus.length} corpus seeds, ${groups.nodeTests.length} node-test ` +
        `models, ${groups.models.length} PaddleOCR models; up to ${options.seconds} s`,
    );
  }
  let nextIndex = 0;
  let lastProgress = started;
  const lane = async () => {
    while (performance.now() < deadline && nextIndex < maxCases) {
      const count = Math.min(BATCH_SIZE, maxCases - nextIndex);
      const first = nextIndex;
      nextIndex += count;
      const cases: Case[] = [];
      for (let i = first; i < first + count; i++) cases.push(await makeCase(groups, options.seed, i));
      for (const result of await runCases(cases, limits)) {
        summary.cases++;
        summary.counts[result.outcome]++;
        if (summary.slowest === null || result.ms > summary.slowest.ms) summary.slowest = result;
        if (result.ms > SLOW_MS && summary.slow++ < SAVED_PER_SIGNATURE * 4) {
          const file = await saveReproducer(result, options.seed, "slow");
          if (verbose) console.error(`slow (${result.ms} ms, ${result.outcome}) ${file}: ${result.message}`);
        }
        if (!BAD_OUTCOMES.includes(result.outcome)) continue;
        const key = signature(result);
        const entry = summary.failures.get(key) ?? { count: 0, files: [] };
        summary.failures.set(key, entry);
        entry.count++;
        if (entry.files.length >= SAVED_PER_SIGNATURE) continue;
        const file = await saveReproducer(result, options.seed);
        entry.files.push(file);
        if (verbose) {
          const how = result.case.applied.map((a) => `${a.name} ${a.detail}`).join("; ");
          console.error(`${result.outcome} ${file}: ${result.message}\n  (seed ${result.case.seed.name}: ${how})`);
        }
      }
      const now = performance.now();
      if (verbose && now - lastProgress > 15_000 && now < deadline) {
        lastProgress = now;
        summary.seconds = (now - started) / 1000;
        console.error(summaryLine(summary, options.seed));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.jobs ?? 1) }, lane));
  summary.seconds = (performance.now() - started) / 1000;
  return summary;
}

/** Runs saved reproducers again (their .json notes give the load options). */
async function replay(files: string[]): Promise<number> {
  const cases: Case[] = [];
  for (const [index, file] of files.entries()) {
    const kind = kindOf(file);
    if (kind === null) throw new Error(`fuzz --replay: ${file} is neither .onnx nor .spindle`);
    let inputShapes: Record<string, number[]> | undefined;
    try {
      inputShapes = JSON.parse(await Deno.readTextFile(file.replace(/\.(onnx|spindle)$/, ".json"))).inputShapes;
    } catch {
      // no notes: load with defaults
    }
    const seed: Seed = { name: file, kind, path: file, inputShapes };
    cases.push({ index, seed, bytes: await Deno.readFile(file), applied: [] });
  }
  let bad = 0;
  for (const r of await runCases(cases)) {
    if (BAD_OUTCOMES.includes(r.outcome)) bad++;
    console.log(`${r.outcome} ${r.case.seed.name}${r.message === "" ? "" : `: ${r.message}`}`);
  }
  return bad === 0 ? 0 : 1;
}

function parseFlags(args: string[]): Map<string, string[]> {
  const flags = new Map<string, string[]>();
  let current = "";
  for (const arg of args) {
    if (arg.startsWith("--")) {
      current = arg.slice(2);
      flags.set(current, []);
    } else if (current === "") throw new RangeError(`fuzz: unexpected argument '${arg}'`);
    else flags.get(current)!.push(arg);
  }
  return flags;
}

function numberFlag(flags: Map<string, string[]>, name: string, fallback: number): number {
  const value = flags.get(name);
  if (value === undefined) return fallback;
  const n = Number(value[0]);
  if (value.length !== 1 || !Number.isFinite(n) || n < 0) throw new RangeError(`fuzz: --${name} takes a number`);
  return n;
}

const KNOWN_FLAGS = ["seconds", "cases", "seed", "jobs", "corpus-only", "replay", "regenerate-corpus"];

if (import.meta.main) {
  const flags = parseFlags(Deno.args);
  const unknown = [...flags.keys()].find((f) => !KNOWN_FLAGS.includes(f));
  if (unknown !== undefined) {
    console.error(`fuzz: unknown flag --${unknown} (known: ${KNOWN_FLAGS.map((f) => `--${f}`).join(", ")})`);
    Deno.exit(2);
  }
  if (flags.has("regenerate-corpus")) {
    const names = await writeCorpus();
    console.log(`fuzz: wrote ${names.length} seeds to ${CORPUS_DIR.slice(ROOT.length + 1)}/`);
    Deno.exit(0);
  }
  if (flags.has("replay")) Deno.exit(await replay(flags.get("replay")!));
  const seed = Math.trunc(numberFlag(flags, "seed", Math.floor(Math.random() * 2 ** 31)));
  const summary = await fuzz({
    seed,
    seconds: numberFlag(flags, "seconds", 60),
    cases: flags.has("cases") ? numberFlag(flags, "cases", 0) : undefined,
    jobs: numberFlag(flags, "jobs", 1),
    corpusOnly: flags.has("corpus-only"),
  });
  if (summary.failures.size > 0) {
    console.error(`\ndistinct failures (${summary.failures.size}):`);
    for (const [key, { count, files }] of summary.failures) {
      console.error(`  ${count}× ${key}\n     ${files.join(" ")}`);
    }
  }
  if (summary.slowest !== null) {
    const { case: c, ms, outcome } = summary.slowest;
    console.error(`slowest case: ${ms} ms, ${outcome} (case ${c.index}, seed ${c.seed.name})`);
  }
  console.log(summaryLine(summary, seed));
  Deno.exit(BAD_OUTCOMES.some((o) => summary.counts[o] > 0) ? 1 : 0);
}

/**
 * The fuzzer's child process: `deno run -A tools/fuzz_worker.ts FILE…` (or `--manifest
 * cases.json`, a list of `{ path, inputShapes }` from tools/fuzz.ts) loads each file with
 * the public `load()` and, when it loads, reads its metadata and runs `forwardAll` once on
 * zeros of the declared input shapes (dimensions of any size set to 1). For each file it
 * prints `fuzz:start <index>` before it begins — so a crash is attributed to its case — and
 * `fuzz:result <json>` with the outcome when it ends.
 *
 * @module
 */
import { full, load, SpindleError, type Tensor } from "../mod.ts";

/** What a case did, as far as the child can tell (crashes, hangs and kills are the parent's). */
export type ChildOutcome = "ok" | "typed" | "untyped" | "budget";

/** One case's result line. */
export interface ChildResult {
  index: number;
  outcome: ChildOutcome;
  message: string;
  /** How long the case took. */
  ms: number;
}

/** The tensor-byte budget a case loads under: far below the child's memory cap. */
export const CASE_MEMORY_BUDGET = 512 * 2 ** 20;

/** Prefixes of the protocol lines (anything else on stdout is ignored). */
export const START = "fuzz:start ";
export const RESULT = "fuzz:result ";

/**
 * Messages V8 writes for its own TypeErrors and RangeErrors: a runtime that refuses a file
 * with one of these has not checked it, it has tripped over it.
 */
const ENGINE_MESSAGES =
  /is not a function|is not iterable|Cannot read propert|Cannot set propert|is not a constructor|is not defined|Cannot convert|Cannot mix BigInt|Maximum call stack|Invalid (typed )?array length|Invalid string length|Cannot destructure|before initialization|Offset is outside the bounds|out of bounds|Invalid DataView|Invalid count value|toFixed\(\) digits|Do not know how to serialize|Reduce of empty array|Cannot create property|object is not extensible|read-only property|to a BigInt|a BigInt value/;

/** Messages of memory exhaustion: a case that loads under a budget should never see one. */
const MEMORY_MESSAGES = /allocation failed|out of memory/i;

/**
 * Classifies an exception a case threw.
 *
 * `typed`: a SpindleError (any code but `internal` and `out_of_memory`), or a
 * TypeError/RangeError/Deno.errors.* with a message of Spindle's own — the expected refusal.
 * `budget`: memory ran out although the case loads under {@link CASE_MEMORY_BUDGET}.
 * `untyped`: anything else — another class, an engine message, an empty message.
 *
 * @param error What was thrown.
 * @returns The outcome and a one-line message.
 */
export function classifyError(error: unknown): { outcome: ChildOutcome; message: string } {
  const name = error instanceof Error ? error.constructor.name : typeof error;
  const text = error instanceof Error ? error.message : String(error);
  const message = `${error instanceof SpindleError ? `SpindleError(${error.code})` : name}: ${text}`.split("\n")[0];
  if (MEMORY_MESSAGES.test(text)) return { outcome: "budget", message };
  if (text.trim() === "") return { outcome: "untyped", message: `${message} (empty message)` };
  if (error instanceof SpindleError) {
    if (error.code === "out_of_memory") return { outcome: "budget", message };
    return { outcome: error.code === "internal" ? "untyped" : "typed", message };
  }
  const deno = Object.values(Deno.errors).some((cls) => error instanceof cls);
  if (deno) return { outcome: "typed", message };
  if (error instanceof TypeError || error instanceof RangeError) {
    return { outcome: ENGINE_MESSAGES.test(text) ? "untyped" : "typed", message };
  }
  return { outcome: "untyped", message };
}

/** One file to run, and the sizes of its dynamic input dims where import needs them. */
export interface ManifestEntry {
  path: string;
  inputShapes?: Record<string, number[]>;
}

/**
 * Loads and runs one file: load, metadata, then forwardAll on zeros of the declared shapes.
 *
 * @param entry The model file (its extension picks ONNX or Spindle) and its load options.
 * @returns The outcome.
 */
export async function runCase(entry: ManifestEntry): Promise<{ outcome: ChildOutcome; message: string }> {
  try {
    using module = await load(entry.path, { memoryBudget: CASE_MEMORY_BUDGET, inputShapes: entry.inputShapes });
    void module.inputMetadata;
    void module.outputMetadata;
    const inputs: Tensor[] = [];
    try {
      for (const spec of module.inputs) {
        inputs.push(full(spec.shape.map((d) => (d === -1 ? 1 : d)), 0, { dtype: spec.dtype }));
      }
      const outputs = await module.forwardAll(...inputs);
      for (const t of outputs) t.dispose();
    } finally {
      for (const t of inputs) t.dispose();
    }
    return { outcome: "ok", message: "" };
  } catch (error) {
    return classifyError(error);
  }
}

if (import.meta.main) {
  const entries: ManifestEntry[] = Deno.args[0] === "--manifest"
    ? JSON.parse(await Deno.readTextFile(Deno.args[1]))
    : Deno.args.map((path) => ({ path }));
  for (const [index, entry] of entries.entries()) {
    console.log(`${START}${index}`);
    const started = performance.now();
    const outcome = await runCase(entry);
    const result: ChildResult = { index, ...outcome, ms: Math.round(performance.now() - started) };
    // One turn of the event loop, so that what the case left behind (a timer, a rejected
    // promise) fails it rather than the next one.
    await new Promise((resolve) => setTimeout(resolve, 0));
    console.log(`${RESULT}${JSON.stringify(result)}`);
  }
}

/**
 * Per-op profiles (`infer --profile`, {@link Module.profile}): every op node of a model
 * timed over several runs, with its share of the total, its shapes and, for convolutions and
 * matrix products, its GFLOPS — the table onnxruntime's and OpenVINO's users read to see
 * where the time goes.
 *
 * @module
 */
import type { Description } from "./program/format.ts";
import { PROFILE_RECORD_WORDS } from "./program/program.ts";

/**
 * One op node of a profile: where it is, what it is, and how long it took per run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, mm, randn, script } from "@spindle/spindle";
 * using w = randn([64, 64], { seed: 1 });
 * using x = randn([8, 64], { seed: 2 });
 * using model = Module.fromScript(script((a) => mm(a, w)), [x]);
 * const op = model.profile([x], { runs: 3 }).ops[0];
 * assert.equal(op.op, "mm");
 * assert.deepEqual(op.outputShape, [8, 64]);
 * assert.ok(op.gflops !== null && op.gflops > 0);
 * ```
 */
export interface ProfiledOp {
  /** The graph: 0 is the model's main graph, others are forked sub-graphs. */
  graph: number;
  /** The node's index in its graph. */
  node: number;
  /** The op, as the model file names it (e.g. "conv2d", "matmul"). */
  op: string;
  /** Mean milliseconds per run (summed when a forked graph runs it several times). */
  ms: number;
  /** Fraction of the total op time of a run. */
  share: number;
  /** Times it ran per run. */
  calls: number;
  /** Shape of the output. */
  outputShape: number[];
  /** Shapes of the first two inputs (fewer when the op has fewer). */
  inputShapes: number[][];
  /** Floating-point operations of one call (convolutions, matrix products), else null. */
  flops: number | null;
  /** flops / time, in GFLOPS, or null. */
  gflops: number | null;
}

/**
 * A profile: the ops, slowest first, and the totals per run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Module, mm, neg, randn, script } from "@spindle/spindle";
 * using w = randn([32, 32], { seed: 1 });
 * using x = randn([4, 32], { seed: 2 });
 * using model = Module.fromScript(script((a) => neg(mm(a, w))), [x]);
 * const report = model.profile([x], { runs: 2 });
 * assert.equal(report.runs, 2);
 * assert.deepEqual(report.ops.map((op) => op.op).sort(), ["mm", "neg"]);
 * assert.ok(Math.abs(report.ops.reduce((sum, op) => sum + op.share, 0) - 1) < 1e-9);
 * ```
 */
export interface ProfileReport {
  /** Timed runs (after the warm-up runs). */
  runs: number;
  /** Mean milliseconds per run spent inside ops. */
  opMs: number;
  /** Mean milliseconds per run, start to end. */
  totalMs: number;
  /** Every op node that ran, slowest first. */
  ops: ProfiledOp[];
  /** The same time grouped by op, slowest first. */
  byOp: { op: string; ms: number; share: number; nodes: number }[];
}

/** Options of {@link Module.profile}. */
export interface ProfileOptions {
  /** Timed runs (default 10). */
  runs?: number;
  /** Untimed runs first (default 2). */
  warmup?: number;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Floating-point operations of one call of `op`, from its shapes and parameters. */
export function flopsOf(
  op: string,
  params: Readonly<Record<string, unknown>> | undefined,
  output: readonly number[],
  inputs: readonly (readonly number[])[],
): number | null {
  const [a, b] = inputs;
  switch (op) {
    case "mm":
    case "matmul": {
      if (a === undefined || a.length === 0) return null;
      return 2 * numel(output) * a[a.length - 1];
    }
    case "gemm": {
      if (a === undefined || a.length !== 2) return null;
      return 2 * numel(output) * (params?.trans_a === true ? a[0] : a[1]);
    }
    case "conv2d": {
      // weight [out channels, in channels / groups, kh, kw]: each output element is a dot
      // product over one filter.
      if (b === undefined || b.length !== 4) return null;
      return 2 * numel(output) * (numel(b) / b[0]);
    }
    case "conv_transpose2d": {
      // weight [in channels, out channels / groups, kh, kw]: each input element scatters one
      // filter slice.
      if (a === undefined || b === undefined || b.length !== 4) return null;
      return 2 * numel(a) * (numel(b) / b[0]);
    }
    default:
      return null;
  }
}

/** Reads one shape (rank, then 8 dims) at `offset` of a record. */
function shapeAt(records: BigUint64Array, offset: number): number[] {
  const rank = Number(records[offset]);
  return Array.from(records.subarray(offset + 1, offset + 1 + Math.min(rank, 8)), Number);
}

/** Folds the raw records of `runs` profiled runs into a report. */
export function buildReport(
  description: Description,
  samples: { records: BigUint64Array; count: number; totalMs: number }[],
): ProfileReport {
  const byNode = new Map<string, ProfiledOp>();
  for (const sample of samples) {
    for (let i = 0; i < sample.count; i++) {
      const base = i * PROFILE_RECORD_WORDS;
      const graph = Number(sample.records[base]);
      const node = Number(sample.records[base + 1]);
      const ms = Number(sample.records[base + 2]) / 1e6;
      const key = `${graph}:${node}`;
      let entry = byNode.get(key);
      if (entry === undefined) {
        const described = description.graphs[graph]?.nodes[node];
        const outputShape = shapeAt(sample.records, base + 3);
        const inputCount = Math.min(described?.inputs?.length ?? 0, 2);
        const inputShapes = [shapeAt(sample.records, base + 12), shapeAt(sample.records, base + 21)].slice(
          0,
          inputCount,
        );
        const op = described?.op ?? "?";
        entry = {
          graph,
          node,
          op,
          ms: 0,
          share: 0,
          calls: 0,
          outputShape,
          inputShapes,
          flops: flopsOf(op, described?.params, outputShape, inputShapes),
          gflops: null,
        };
        byNode.set(key, entry);
      }
      entry.ms += ms;
      entry.calls += 1;
    }
  }
  const runs = samples.length;
  const ops = [...byNode.values()];
  let opMs = 0;
  for (const entry of ops) {
    entry.ms /= runs;
    entry.calls /= runs;
    opMs += entry.ms;
  }
  for (const entry of ops) {
    entry.share = opMs > 0 ? entry.ms / opMs : 0;
    entry.gflops = entry.flops === null || entry.ms <= 0 ? null : (entry.flops * entry.calls) / (entry.ms * 1e6);
  }
  ops.sort((x, y) => y.ms - x.ms);
  const groups = new Map<string, { op: string; ms: number; share: number; nodes: number }>();
  for (const entry of ops) {
    const group = groups.get(entry.op) ?? { op: entry.op, ms: 0, share: 0, nodes: 0 };
    group.ms += entry.ms;
    group.share += entry.share;
    group.nodes += 1;
    groups.set(entry.op, group);
  }
  const totalMs = samples.reduce((sum, sample) => sum + sample.totalMs, 0) / Math.max(1, runs);
  return { runs, opMs, totalMs, ops, byOp: [...groups.values()].sort((x, y) => y.ms - x.ms) };
}

/**
 * The profile as text tables: the slowest op nodes, then the time per op.
 *
 * @param report A profile from {@link Module.profile}.
 * @param options `top`: how many op nodes to list (default 25).
 * @returns The tables, one line per row.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatProfile, Module, mm, randn, script } from "@spindle/spindle";
 * using w = randn([16, 16], { seed: 1 });
 * using x = randn([2, 16], { seed: 2 });
 * using model = Module.fromScript(script((a) => mm(a, w)), [x]);
 * const text = formatProfile(model.profile([x], { runs: 1 }));
 * assert.match(text, /mm/);
 * ```
 */
export function formatProfile(report: ProfileReport, options: { top?: number } = {}): string {
  const top = options.top ?? 25;
  const pct = (share: number) => `${(share * 100).toFixed(1)}%`.padStart(6);
  const ms = (value: number) => value.toFixed(3).padStart(9);
  const lines = [
    `profile: ${report.runs} runs, ${report.totalMs.toFixed(3)} ms per run, ${report.opMs.toFixed(3)} ms in ops`,
    "",
    `${"ms".padStart(9)}  ${"share".padStart(6)}  ${
      "GFLOPS".padStart(7)
    }  node        op                 output <- inputs`,
  ];
  for (const op of report.ops.slice(0, top)) {
    const gflops = op.gflops === null ? "" : op.gflops.toFixed(1);
    const where = `${op.graph}:${op.node}`.padEnd(10);
    const shapes = `[${op.outputShape.join("x")}] <- ${op.inputShapes.map((s) => `[${s.join("x")}]`).join(" ")}`;
    lines.push(`${ms(op.ms)}  ${pct(op.share)}  ${gflops.padStart(7)}  ${where}  ${op.op.padEnd(18)} ${shapes}`);
  }
  if (report.ops.length > top) lines.push(`  ... ${report.ops.length - top} more op nodes`);
  lines.push("", `${"ms".padStart(9)}  ${"share".padStart(6)}  ${"nodes".padStart(5)}  op`);
  for (const group of report.byOp) {
    lines.push(`${ms(group.ms)}  ${pct(group.share)}  ${String(group.nodes).padStart(5)}  ${group.op}`);
  }
  return lines.join("\n");
}

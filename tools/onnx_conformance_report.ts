/**
 * Runs every ONNX backend node test through Spindle's importer (the harness is
 * tests/onnx_conformance.ts) and prints two pass rates: over all cases, and over the cases
 * whose op types Spindle implements.
 *
 *   deno run -A tools/onnx_conformance_report.ts [--json] [--failures] [--missing] [--passing]
 *
 * --failures lists why implemented cases fail, --missing counts the cases each set of missing
 * op types blocks, --passing lists the passing cases (the CI list in
 * tests/onnx_conformance_test.ts holds every one).
 *
 * @module
 */
import { fetchNodeTests } from "./fetch_onnx_tests.ts";
import { caseOps, type CaseResult, runCase } from "../tests/onnx_conformance.ts";

/** Pass/fail/unsupported counts over every case; `failed` and `unsupported` list implemented ones. */
export interface ConformanceReport {
  /** Every node test case. */
  total: number;
  /** The cases whose op types Spindle implements. */
  implemented: number;
  /** Passing cases (all of them implemented). */
  passed: number;
  /** The names of the passing cases, sorted. */
  passing: string[];
  failed: CaseResult[];
  unsupported: CaseResult[];
  /** Cases with op types Spindle lacks, by the op types missing. */
  missing: Map<string, number>;
}

/** Runs every node test (those with op types Spindle lacks are counted, not run). */
export async function conformanceReport(): Promise<ConformanceReport> {
  const root = await fetchNodeTests();
  const names = [...Deno.readDirSync(root)].filter((e) => e.isDirectory && e.name.startsWith("test_")).map((e) =>
    e.name
  )
    .sort();
  const report: ConformanceReport = {
    total: names.length,
    implemented: 0,
    passed: 0,
    passing: [],
    failed: [],
    unsupported: [],
    missing: new Map(),
  };
  for (const name of names) {
    const ops = caseOps(`${root}/${name}`);
    if (ops === undefined || ops.missing.length > 0) {
      const key = ops === undefined ? "(model does not decode)" : ops.missing.join("+");
      report.missing.set(key, (report.missing.get(key) ?? 0) + 1);
      continue;
    }
    report.implemented++;
    const result = runCase(`${root}/${name}`);
    if (result.status === "pass") {
      report.passed++;
      report.passing.push(name);
    } else if (result.status === "fail") report.failed.push(result);
    else report.unsupported.push(result);
  }
  return report;
}

/** The report's summary line: the pass rate over all cases, then over implemented ones. */
export function summary(report: ConformanceReport): string {
  const percent = (part: number, whole: number) => (100 * part / Math.max(whole, 1)).toFixed(1);
  return `ONNX node tests: ${report.passed}/${report.total} of all cases pass (${
    percent(report.passed, report.total)
  }%); ${report.passed}/${report.implemented} of the cases whose ops Spindle implements (${
    percent(report.passed, report.implemented)
  }%): ${report.failed.length} fail, ${report.unsupported.length} use unsupported features, ${
    report.total - report.implemented
  } use op types Spindle lacks`;
}

if (import.meta.main) {
  const report = await conformanceReport();
  if (Deno.args.includes("--json")) {
    console.log(JSON.stringify({ ...report, missing: Object.fromEntries(report.missing) }, null, 2));
    Deno.exit(0);
  }
  console.log(summary(report));
  if (Deno.args.includes("--failures")) {
    for (const r of [...report.failed, ...report.unsupported]) console.log(`  ${r.status} ${r.name}: ${r.message}`);
  }
  if (Deno.args.includes("--missing")) {
    const rows = [...report.missing].sort((a, b) => b[1] - a[1]);
    for (const [ops, count] of rows) console.log(`  missing ${ops}: ${count}`);
  }
  if (Deno.args.includes("--passing")) console.log(report.passing.join("\n"));
}

/**
 * Prints the pass rate of Spindle's ONNX importer over every backend node test whose op types
 * it implements (the harness is tests/onnx_conformance.ts).
 *
 *   deno run -A tools/onnx_conformance_report.ts [--json] [--failures]
 *
 * @module
 */
import { fetchNodeTests } from "./fetch_onnx_tests.ts";
import { caseOps, type CaseResult, runCase } from "../tests/onnx_conformance.ts";

/** Pass/fail/unsupported counts over the implemented cases. */
export interface ConformanceReport {
  total: number;
  implemented: number;
  passed: number;
  failed: CaseResult[];
  unsupported: CaseResult[];
}

/** Runs every node test whose ops Spindle implements. */
export async function conformanceReport(): Promise<ConformanceReport> {
  const root = await fetchNodeTests();
  const names = [...Deno.readDirSync(root)].filter((e) => e.isDirectory && e.name.startsWith("test_")).map((e) =>
    e.name
  )
    .sort();
  const report: ConformanceReport = { total: names.length, implemented: 0, passed: 0, failed: [], unsupported: [] };
  for (const name of names) {
    const ops = caseOps(`${root}/${name}`);
    if (ops === undefined || ops.missing.length > 0) continue;
    report.implemented++;
    const result = runCase(`${root}/${name}`);
    if (result.status === "pass") report.passed++;
    else if (result.status === "fail") report.failed.push(result);
    else report.unsupported.push(result);
  }
  return report;
}

if (import.meta.main) {
  const report = await conformanceReport();
  const rate = (100 * report.passed / Math.max(report.implemented, 1)).toFixed(1);
  console.log(
    `ONNX node tests: ${report.passed}/${report.implemented} passed (${rate}%) of the cases whose ops Spindle implements; ` +
      `${report.failed.length} failed, ${report.unsupported.length} use unsupported features; ${report.total} cases in all`,
  );
  if (Deno.args.includes("--failures")) {
    for (const r of [...report.failed, ...report.unsupported]) console.log(`  ${r.status} ${r.name}: ${r.message}`);
  }
}

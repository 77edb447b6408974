/**
 * `deno task cross [--debug] [name...]`: cross-compiles libspindle for every platform in
 * tools/targets.ts (ReleaseFast, stripped; x86-64 builds portable) into
 * zig/zig-out/cross/<os>-<arch>/ (with `--debug`: Debug builds into zig-out/cross-debug/, the
 * quick check tools/test.ts runs), and checks each artefact without external tools: its
 * file format and machine (ELF / Mach-O / PE headers, tools/binary_format.ts) and that its
 * exported functions are exactly ffi/symbols.ts's. The artefact for this machine, if any, is
 * also loaded and called. Prints a table with each stripped size, then
 * `cross: N passed, N failed` (tools/test.ts counts it).
 *
 * @module
 */
import { symbols } from "../ffi/symbols.ts";
import { BinaryFormatError, inspectLibrary } from "./binary_format.ts";
import { run, ZIG_DIR } from "./configs.ts";
import { crossBuildArgs, type CrossOptimize, crossPrefix, type NativeTarget, TARGETS } from "./targets.ts";

/** The C symbol names ffi/symbols.ts binds (aliases share one), sorted. */
export function expectedExports(): string[] {
  const names = Object.entries(symbols).map(([key, value]) => ("name" in value ? value.name : key));
  return [...new Set(names)].sort();
}

/** One artefact's check. */
export interface ArtefactReport {
  target: NativeTarget;
  path: string;
  size: number;
  description: string;
  problems: string[];
}

const MACHINE_NAMES: Record<NativeTarget["arch"], string> = { x86_64: "x86_64", aarch64: "aarch64" };

/** Checks the library at `path` against what `target` must be. */
export function checkArtefact(target: NativeTarget, path: string, bytes: Uint8Array): ArtefactReport {
  const report: ArtefactReport = { target, path, size: bytes.length, description: "unreadable", problems: [] };
  try {
    const info = inspectLibrary(bytes);
    report.description = info.description;
    if (info.format !== target.format) report.problems.push(`format ${info.format}, expected ${target.format}`);
    if (info.machine !== MACHINE_NAMES[target.arch]) {
      report.problems.push(`machine ${info.machine}, expected ${target.arch}`);
    }
    const exported = info.exports.filter((name) => name.startsWith("spindle_"));
    const expected = expectedExports();
    const missing = expected.filter((name) => !exported.includes(name));
    const extra = exported.filter((name) => !expected.includes(name));
    if (missing.length > 0) report.problems.push(`missing exports: ${missing.join(", ")}`);
    if (extra.length > 0) report.problems.push(`exports not in ffi/symbols.ts: ${extra.join(", ")}`);
  } catch (error) {
    if (!(error instanceof BinaryFormatError)) throw error;
    report.problems.push(error.message);
  }
  return report;
}

/** Loads the library (this platform's artefact) and asks it its ABI version and facts. */
function smokeRun(path: string): string[] {
  const library = Deno.dlopen(path, {
    spindle_abi_version: symbols.spindle_abi_version,
    spindle_info_json: symbols.spindle_info_json,
  });
  try {
    const version = library.symbols.spindle_abi_version();
    const buffer = new Uint8Array(4096);
    const length = Number(library.symbols.spindle_info_json(buffer, BigInt(buffer.length)));
    const info = JSON.parse(new TextDecoder().decode(buffer.subarray(0, Math.min(length, buffer.length))));
    if (info.abi_version !== version) return [`abi_version ${info.abi_version} in the facts, ${version} returned`];
    console.error(`  ran: abi ${version}, kernels ${info.kernels} (${info.kernels_selection})`);
    return [];
  } finally {
    library.close();
  }
}

function formatSize(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(2)} MiB`;
}

if (import.meta.main) {
  const wanted = Deno.args.filter((arg) => !arg.startsWith("-"));
  const unknown = wanted.filter((name) => !TARGETS.some((t) => t.name === name));
  if (unknown.length > 0) {
    console.error(`cross: unknown target ${unknown.join(", ")}; known: ${TARGETS.map((t) => t.name).join(", ")}`);
    Deno.exit(2);
  }
  const targets = wanted.length === 0 ? TARGETS : TARGETS.filter((t) => wanted.includes(t.name));
  const optimize: CrossOptimize = Deno.args.includes("--debug") ? "Debug" : "ReleaseFast";
  const reports: ArtefactReport[] = [];
  for (const target of targets) {
    const started = performance.now();
    console.error(
      `cross: building ${target.name} (${target.triple}, ${optimize}${target.portable ? ", portable" : ""})`,
    );
    const code = await run("zig", crossBuildArgs(target, optimize), { cwd: ZIG_DIR });
    const path = `${ZIG_DIR}/${crossPrefix(target, optimize)}/${target.installPath}`;
    if (code !== 0) {
      reports.push({ target, path, size: 0, description: "not built", problems: [`zig build exited with ${code}`] });
      continue;
    }
    const report = checkArtefact(target, path, await Deno.readFile(path));
    if (target.os === Deno.build.os && target.arch === Deno.build.arch && report.problems.length === 0) {
      report.problems.push(...smokeRun(path));
    }
    console.error(`  ${((performance.now() - started) / 1000).toFixed(1)} s`);
    reports.push(report);
  }
  console.log("| target | triple | file | format | stripped size | check |");
  console.log("|---|---|---|---|---|---|");
  for (const r of reports) {
    const check = r.problems.length === 0 ? "ok" : r.problems.join("; ");
    const file = `${crossPrefix(r.target, optimize)}/${r.target.installPath}`;
    console.log(
      `| ${r.target.name} | ${r.target.triple} | ${file} | ${r.description} | ${formatSize(r.size)} | ${check} |`,
    );
  }
  const failed = reports.filter((r) => r.problems.length > 0).length;
  console.log(`cross: ${reports.length - failed} passed, ${failed} failed`);
  Deno.exit(failed === 0 ? 0 : 1);
}

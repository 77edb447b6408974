/**
 * The portable x86-64 library against the native-CPU build, in the same run, alternating
 * (native, portable, native, portable, …) so that drift in the machine's load hits both:
 *
 * - `zig build bench-gemm`: the native build (-Dcpu=native) against the same benchmark
 *   compiled for x86_64_v4, exactly how the portable library compiles its AVX-512 copy of
 *   the kernels (the benchmark calls the kernels directly, not through the library);
 * - `bench/onnx_bench.ts` (`deno task bench:onnx`) with SPINDLE_LIB pointing at the native
 *   build, then at the portable library (`deno task cross`'s linux-x86_64 artefact, whose
 *   exports dispatch to the AVX-512 copy on this machine).
 *
 * For every row the best of the rounds is kept per build (the least disturbed run); the
 * ratio is portable / native (GFLOPS: higher is better; ms: lower is better). Raw outputs
 * and the table go to stdout.
 *
 *   deno run -A bench/portable_vs_native.ts [--rounds 2] [--onnx-runs 20] [--gemm-args "--threads 1"]
 *
 * Note: each bench/onnx_bench.ts run rewrites bench/results/onnx_bench_<backend>_<blas>.txt
 * (here with the last run, the portable library's); `git checkout` it unless that is wanted.
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { crossBuildArgs, crossPrefix, TARGETS } from "../tools/targets.ts";

const { values: flags } = benchArgs(import.meta.url, {
  rounds: { type: "string", default: "2" },
  "onnx-runs": { type: "string", default: "20" },
  "gemm-args": { type: "string", default: "" },
  skip: { type: "string", default: "" },
});
const rounds = Number(flags.rounds);
const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const ZIG_DIR = `${ROOT}/zig`;
const LINUX_X86_64 = TARGETS.find((t) => t.name === "linux-x86_64")!;
const PORTABLE_LIB = `${ZIG_DIR}/${crossPrefix(LINUX_X86_64)}/${LINUX_X86_64.installPath}`;
const NATIVE_LIB = `${ZIG_DIR}/zig-out/lib/libspindle.so`;

async function capture(
  command: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<string> {
  const output = await new Deno.Command(command, { args, cwd, env, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (output.code !== 0) throw new Error(`${command} ${args.join(" ")} failed (${output.code}):\n${text}`);
  return text;
}

type Rows = Map<string, number[]>;

/** bench-gemm rows: `NN 64 64 64 1 | spindle openblas ratio | packed ratio` → [spindle, openblas, packed]. */
function parseGemm(text: string): Rows {
  const rows: Rows = new Map();
  const pattern = /^(N[NT])\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+) \|\s+([\d.]+)\s+([\d.]+)\s+[\d.]+ \|\s+([\d.]+)/gm;
  for (const m of text.matchAll(pattern)) {
    rows.set(`${m[1]} ${m[2]}x${m[3]}x${m[4]} t${m[5]}`, [Number(m[6]), Number(m[7]), Number(m[8])]);
  }
  return rows;
}

/** onnx_bench rows: latency rows → [spindle ms, onnxrt ms]; throughput rows → [spindle/s, onnxrt/s]. */
function parseOnnx(text: string): Rows {
  const rows: Rows = new Map();
  for (const m of text.matchAll(/^(\S+)\s+(\d+)\s+(\d+) \|\s+([\d.]+)\s+([\d.]+)/gm)) {
    rows.set(`${m[1]} b${m[2]} t${m[3]} ms`, [Number(m[4]), Number(m[5])]);
  }
  for (const m of text.matchAll(/^(\S+)\s+parallel branches, b1 t1 \|\s+([\d.]+)\s+([\d.]+)/gm)) {
    rows.set(`${m[1]} branches b1 t1 ms`, [Number(m[2]), Number(m[3])]);
  }
  for (const m of text.matchAll(/^(\S+)\s+4 concurrent.*spindle ([\d.]+)\/s\s+onnxrt ([\d.]+)\/s/gm)) {
    rows.set(`${m[1]} 4 concurrent /s`, [Number(m[2]), Number(m[3])]);
  }
  return rows;
}

/** Keeps, per row and column, the best value (max when `higher`, else min). */
function best(into: Rows, rows: Rows, higher: (key: string) => boolean): void {
  for (const [key, values] of rows) {
    const kept = into.get(key);
    if (kept === undefined) into.set(key, [...values]);
    else values.forEach((v, i) => kept[i] = higher(key) ? Math.max(kept[i], v) : Math.min(kept[i], v));
  }
}

function geomean(values: number[]): number {
  return Math.exp(values.reduce((sum, v) => sum + Math.log(v), 0) / values.length);
}

const skip = flags.skip.split(",");
console.log(`# portable vs native, ${new Date().toISOString()}, ${rounds} alternating round(s)`);
console.log(`# native: ${NATIVE_LIB} (zig build); portable: ${PORTABLE_LIB} (deno task cross linux-x86_64)`);
await capture("zig", ["build", "--summary", "none"], ZIG_DIR);
await capture("zig", crossBuildArgs(LINUX_X86_64), ZIG_DIR);

const table: string[] = [];
if (!skip.includes("gemm")) {
  const gemmArgs = flags["gemm-args"].split(" ").filter((a) => a.length > 0);
  const results = { native: new Map() as Rows, portable: new Map() as Rows };
  for (let round = 0; round < rounds; round++) {
    for (const build of ["native", "portable"] as const) {
      const cpu = build === "native" ? [] : ["-Dcpu=x86_64_v4"];
      const text = await capture("zig", ["build", "bench-gemm", ...cpu, "--", ...gemmArgs], ZIG_DIR);
      console.log(`\n## bench-gemm ${build} (round ${round + 1})\n${text.trim()}`);
      best(results[build], parseGemm(text), () => true);
    }
  }
  table.push("", "bench-gemm GFLOPS (best of rounds)      native  portable  ratio | packed: native portable ratio");
  const ratios: number[] = [];
  for (const [key, native] of results.native) {
    const portable = results.portable.get(key);
    if (portable === undefined) continue;
    const plain = portable[0] / native[0], packed = portable[2] / native[2];
    ratios.push(plain, packed);
    table.push(
      `${key.padEnd(36)} ${native[0].toFixed(1).padStart(8)} ${portable[0].toFixed(1).padStart(9)} ${
        plain.toFixed(3).padStart(6)
      } | ${native[2].toFixed(1).padStart(14)} ${portable[2].toFixed(1).padStart(8)} ${packed.toFixed(3).padStart(5)}`,
    );
  }
  table.push(
    `bench-gemm geometric mean of portable/native GFLOPS: ${geomean(ratios).toFixed(3)} (${ratios.length} values)`,
  );
}
if (!skip.includes("onnx")) {
  const results = { native: new Map() as Rows, portable: new Map() as Rows };
  for (let round = 0; round < rounds; round++) {
    for (const build of ["native", "portable"] as const) {
      const env = { SPINDLE_LIB: build === "native" ? NATIVE_LIB : PORTABLE_LIB, NO_COLOR: "1" };
      const args = ["run", "-A", "--lock=deno.dev.lock", "bench/onnx_bench.ts", "--runs", flags["onnx-runs"]];
      const text = await capture(Deno.execPath(), args, ROOT, env);
      console.log(`\n## bench:onnx ${build} (round ${round + 1})\n${text.trim()}`);
      best(results[build], parseOnnx(text), (key) => key.endsWith("/s"));
    }
  }
  table.push(
    "",
    "bench:onnx Spindle (best of rounds)      native  portable  ratio (portable/native; ms lower, /s higher is better)",
  );
  const speedups: number[] = [];
  for (const [key, native] of results.native) {
    const portable = results.portable.get(key);
    if (portable === undefined) continue;
    const ratio = portable[0] / native[0];
    speedups.push(key.endsWith("/s") ? ratio : 1 / ratio);
    table.push(
      `${key.padEnd(36)} ${native[0].toFixed(2).padStart(8)} ${portable[0].toFixed(2).padStart(9)} ${
        ratio.toFixed(3).padStart(6)
      }`,
    );
  }
  table.push(
    `bench:onnx geometric mean of portable speed / native speed: ${
      geomean(speedups).toFixed(3)
    } (${speedups.length} rows)`,
  );
}
console.log(`\n# summary\n${table.join("\n")}`);

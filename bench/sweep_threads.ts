/**
 * "Tuning the number of threads" (threading spec §8): the time of 100 × mm of two 1024×1024
 * float matrices for 1, 2, … up to twice the logical CPUs (to show oversubscription), for
 * each build configuration (omp/tbb × openblas/native), each point in a fresh process.
 *
 *   deno task bench:threads [--reps 100] [--size 1024]
 *
 * Writes bench/results/threads_sweep.csv and threads_sweep.svg (runtime against threads,
 * one line per configuration).
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { allConfigs, configLibrary, configName, configPrefix, ZIG_DIR } from "../tools/configs.ts";
import { renderSvg, type Series, toCsv } from "./plot.ts";

const { values } = benchArgs(import.meta.url, {
  reps: { type: "string", default: "100" },
  size: { type: "string", default: "1024" },
  out: { type: "string", default: new URL("./results/", import.meta.url).pathname },
});
const reps = Number(values.reps);
const size = Number(values.size);
const maxThreads = 2 * navigator.hardwareConcurrency;
const mod = new URL("../mod.ts", import.meta.url).href;
const encoder = new TextEncoder();

// One measurement: a fresh process with the configuration's library and a thread count.
const probe = `
import { mm, rand, setNumThreads } from "${mod}";
const [threads, reps, size] = Deno.args.map(Number);
setNumThreads(threads);
const a = rand([size, size], { seed: 1 });
const b = rand([size, size], { seed: 2 });
mm(a, b).dispose(); // warm-up: pools started, packing buffers allocated
const start = performance.now();
for (let i = 0; i < reps; i++) mm(a, b).dispose();
console.log(performance.now() - start);
`;

const rows: Record<string, string | number>[] = [];
const series: Series[] = [];
const configs = allConfigs();
let step = 0;
for (const config of configs) {
  const build = await new Deno.Command("zig", {
    args: ["build", "-p", configPrefix(config), `-Dthreading=${config.threading}`, `-Dblas=${config.blas}`],
    cwd: ZIG_DIR,
  }).output();
  if (!build.success) throw new Error(`building ${configName(config)} failed`);
  const points: [number, number][] = [];
  for (let threads = 1; threads <= maxThreads; threads++) {
    step++;
    Deno.stderr.writeSync(
      encoder.encode(`\r[${step}/${configs.length * maxThreads}] ${configName(config)} threads=${threads}   `),
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", probe, String(threads), String(reps), String(size)],
      env: { SPINDLE_LIB: configLibrary(config) },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
    const milliseconds = Number(new TextDecoder().decode(output.stdout).trim());
    const gflops = (2 * size ** 3 * reps) / (milliseconds * 1e6);
    rows.push({
      config: configName(config),
      threads,
      seconds: (milliseconds / 1000).toFixed(3),
      gflops: gflops.toFixed(1),
    });
    points.push([threads, milliseconds / 1000]);
  }
  series.push({ label: configName(config), points });
}
Deno.stderr.writeSync(encoder.encode("\n"));
await Deno.mkdir(values.out!, { recursive: true });
await Deno.writeTextFile(`${values.out}/threads_sweep.csv`, toCsv(rows));
await Deno.writeTextFile(
  `${values.out}/threads_sweep.svg`,
  renderSvg({
    title: `${reps} x mm ${size}x${size}: runtime vs intra-op threads (${navigator.hardwareConcurrency} logical CPUs)`,
    xLabel: "intra-op threads",
    yLabel: "runtime (s)",
    series,
  }),
);
console.log(toCsv(rows));

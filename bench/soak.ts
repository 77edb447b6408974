/**
 * Memory soak: the same inference loop run by code that disposes its tensors and by code
 * that never does (relying on the GC), each in its own process, in alternating rounds. The
 * parent samples each child's resident memory (VmRSS) twice a second while its loops run and
 * while it then sits idle, and reports per mode: the plateau (mean RSS over the second half
 * of the loop phase), the peak, the RSS at the end of the idle phase (memory given back to
 * the OS), and throughput; then the GC-only / disposing ratios (issue 17's target: the
 * plateau within 1.5×). Writes bench/results/soak.csv and soak.svg.
 *
 *   deno run -A bench/soak.ts [--seconds 180] [--idle 15] [--loops 8] [--rounds 1] [--model ocr-cls]
 *
 * The models are PaddleOCR's (tools/fetch_models.ts, downloaded on first use).
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { load, tensor } from "../mod.ts";
import { fetchModels } from "../tools/fetch_models.ts";
import { renderSvg, type Series, toCsv } from "./plot.ts";

const { values: flags } = benchArgs(import.meta.url, {
  seconds: { type: "string", default: "180" },
  idle: { type: "string", default: "15" },
  loops: { type: "string", default: "8" },
  rounds: { type: "string", default: "1" },
  model: { type: "string", default: "ocr-cls" },
  child: { type: "string" },
});

type Mode = "dispose" | "gc-only";
const MODES: readonly Mode[] = ["dispose", "gc-only"];

/** The child: `loops` concurrent async loops of forward for `seconds`, then idle. */
async function child(mode: Mode): Promise<void> {
  const model = (await fetchModels()).find((m) => m.name === flags.model);
  if (model === undefined) throw new Error(`unknown --model ${flags.model}`);
  const shape = model.shape.map((d) => (d === -1 ? 1 : d));
  using module = await load(model.file, { inputShapes: { [model.input]: shape } });
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i));
  const until = performance.now() + Number(flags.seconds) * 1000;
  let iterations = 0;
  async function loop(): Promise<void> {
    while (performance.now() < until) {
      const x = tensor(data, shape);
      const y = await module.forward(x);
      if (!Number.isFinite(y.toArray()[0])) throw new Error("non-finite output");
      if (mode === "dispose") {
        x.dispose();
        y.dispose();
      }
      iterations++;
    }
  }
  await Promise.all(Array.from({ length: Number(flags.loops) }, loop));
  console.log(JSON.stringify({ phase: "idle", iterations }));
  await new Promise((resolve) => setTimeout(resolve, Number(flags.idle) * 1000));
}

function rssMiB(pid: number): number | null {
  try {
    const match = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
    return match ? Number(match[1]) / 1024 : null;
  } catch {
    return null; // the child has exited
  }
}

interface Run {
  mode: Mode;
  round: number;
  samples: { seconds: number; rssMiB: number; phase: "loop" | "idle" }[];
  iterations: number;
}

async function runChild(mode: Mode, round: number): Promise<Run> {
  const args = ["run", "-A", new URL(import.meta.url).pathname, "--child", mode];
  for (const name of ["seconds", "idle", "loops", "model"] as const) args.push(`--${name}`, String(flags[name]));
  const process = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "inherit" }).spawn();
  const run: Run = { mode, round, samples: [], iterations: 0 };
  let phase: "loop" | "idle" = "loop";
  const reader = (async () => {
    const text = new TextDecoderStream();
    let buffered = "";
    for await (const chunk of process.stdout.pipeThrough(text)) {
      buffered += chunk;
      for (const line of buffered.split("\n").slice(0, -1)) {
        const message = JSON.parse(line);
        phase = message.phase;
        run.iterations = message.iterations;
      }
      buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
    }
  })();
  const start = performance.now();
  let lastReport = start;
  let exited = false;
  const status = process.status.then((s) => {
    exited = true;
    return s;
  });
  while (!exited) {
    const rss = rssMiB(process.pid);
    const seconds = (performance.now() - start) / 1000;
    if (rss !== null) run.samples.push({ seconds, rssMiB: rss, phase });
    if (performance.now() - lastReport > 10_000) {
      lastReport = performance.now();
      console.error(`  ${mode} round ${round}: ${seconds.toFixed(0)} s, ${phase}, RSS ${rss?.toFixed(0)} MiB`);
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const { code } = await status;
  await reader;
  if (code !== 0) throw new Error(`the ${mode} child exited with code ${code}`);
  return run;
}

function summary(run: Run): Record<string, number | string> {
  const loop = run.samples.filter((s) => s.phase === "loop");
  const idle = run.samples.filter((s) => s.phase === "idle");
  const secondHalf = loop.slice(Math.floor(loop.length / 2));
  const mean = secondHalf.reduce((a, s) => a + s.rssMiB, 0) / Math.max(1, secondHalf.length);
  return {
    mode: run.mode,
    round: run.round,
    plateau_mib: Math.round(mean),
    peak_mib: Math.round(Math.max(...loop.map((s) => s.rssMiB))),
    idle_end_mib: Math.round(idle.at(-1)?.rssMiB ?? NaN),
    runs_per_s: Math.round(run.iterations / Number(flags.seconds)),
  };
}

if (flags.child !== undefined) {
  await child(flags.child as Mode);
} else {
  const runs: Run[] = [];
  for (let round = 1; round <= Number(flags.rounds); round++) {
    const order = round % 2 === 1 ? MODES : [...MODES].reverse();
    for (const mode of order) {
      console.error(`round ${round}: ${mode}, ${flags.loops} loops for ${flags.seconds} s, then ${flags.idle} s idle`);
      runs.push(await runChild(mode, round));
    }
  }
  const rows = runs.map(summary);
  console.table(rows);
  for (let round = 1; round <= Number(flags.rounds); round++) {
    const [disposing, gcOnly] = MODES.map((mode) => rows.find((r) => r.round === round && r.mode === mode)!);
    const ratio = (key: string) => (Number(gcOnly[key]) / Number(disposing[key])).toFixed(2);
    console.log(
      `round ${round}: gc-only / dispose: plateau ${ratio("plateau_mib")}×, peak ${ratio("peak_mib")}×, ` +
        `idle end ${ratio("idle_end_mib")}×, throughput ${ratio("runs_per_s")}×`,
    );
  }
  const folder = new URL("./results/", import.meta.url).pathname;
  const csvRows = runs.flatMap((run) =>
    run.samples.map((s) => ({
      mode: run.mode,
      round: run.round,
      seconds: s.seconds.toFixed(1),
      phase: s.phase,
      rss_mib: s.rssMiB.toFixed(1),
    }))
  );
  Deno.writeTextFileSync(`${folder}soak.csv`, toCsv(csvRows));
  const series: Series[] = runs.map((run) => ({
    label: `${run.mode} (round ${run.round})`,
    points: run.samples.map((s) => [s.seconds, s.rssMiB]),
  }));
  Deno.writeTextFileSync(
    `${folder}soak.svg`,
    renderSvg({
      title: `RSS, ${flags.model}, ${flags.loops} concurrent loops`,
      xLabel: "seconds",
      yLabel: "RSS (MiB)",
      series,
    }),
  );
  console.log(`wrote ${folder}soak.csv and soak.svg`);
}

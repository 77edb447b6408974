/**
 * The latency/throughput sweep of the built-in models (threading spec §1, §8): intra-op
 * threads × inter-op threads × concurrent inference threads, each point measured by
 * `main.ts infer --json` in a fresh process (inter-op threads can be set once per process).
 *
 *   deno task bench:models [--models example,mlp] [--requests 60]
 *
 * Writes bench/results/models_sweep.csv and one SVG per model (p50 latency against
 * throughput; one line per intra×inter setting, points = concurrency 1, 2, 4, 8).
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { renderSvg, type Series, toCsv } from "./plot.ts";

const { values } = benchArgs(import.meta.url, {
  models: { type: "string", default: "example,mlp,resnet,dlrm,transformer" },
  requests: { type: "string", default: "60" },
  out: { type: "string", default: new URL("./results/", import.meta.url).pathname },
});
const models = values.models!.split(",");
const requests = Number(values.requests);
const intraOptions = [1, 2];
const interOptions = [1, 2];
const concurrencyOptions = [1, 2, 4, 8];
const main = new URL("../main.ts", import.meta.url).pathname;

const rows: Record<string, string | number>[] = [];
const total = models.length * intraOptions.length * interOptions.length * concurrencyOptions.length;
let done = 0;
for (const model of models) {
  const series: Series[] = [];
  for (const intra of intraOptions) {
    for (const inter of interOptions) {
      const points: [number, number][] = [];
      for (const concurrency of concurrencyOptions) {
        done++;
        Deno.stderr.writeSync(
          new TextEncoder().encode(
            `\r[${done}/${total}] ${model} intra=${intra} inter=${inter} concurrency=${concurrency}   `,
          ),
        );
        const output = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            main,
            "infer",
            "--model",
            `builtin:${model}`,
            "--json",
            "--threads",
            `${intra}`,
            "--interop-threads",
            `${inter}`,
            "--concurrency",
            `${concurrency}`,
            "--requests",
            `${requests}`,
          ],
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
        const report = JSON.parse(new TextDecoder().decode(output.stdout));
        rows.push({
          model,
          intra_op_threads: intra,
          inter_op_threads: inter,
          concurrency,
          p50_ms: report.latency_ms.p50.toFixed(3),
          p90_ms: report.latency_ms.p90.toFixed(3),
          p99_ms: report.latency_ms.p99.toFixed(3),
          throughput_per_s: report.throughput_per_s.toFixed(1),
        });
        points.push([report.throughput_per_s, report.latency_ms.p50]);
      }
      series.push({ label: `intra ${intra}, inter ${inter}`, points });
    }
  }
  await Deno.writeTextFile(
    `${values.out}/models_sweep_${model}.svg`,
    renderSvg({
      title: `builtin:${model}: p50 latency vs throughput (points: 1, 2, 4, 8 concurrent)`,
      xLabel: "throughput (requests/s)",
      yLabel: "p50 latency (ms)",
      series,
    }),
  );
}
Deno.stderr.writeSync(new TextEncoder().encode("\n"));
await Deno.writeTextFile(`${values.out}/models_sweep.csv`, toCsv(rows));
console.log(toCsv(rows));

/**
 * `deno task bench:shapes`: what the first run at a new input shape costs against a warm run
 * at that shape (issue 12's target: at most 2×), for PaddleOCR's recogniser (a new width per
 * text line) and detector (a new image size per picture), each loaded once with no options.
 * Per-shape memory plans and packed scratch are built on a shape's first run
 * (zig/src/interpreter/shape_plans.zig); this measures that cost.
 *
 *   deno task bench:shapes [--threads 1] [--warm 7]
 *
 * Writes the table to stdout and bench/results/new_shapes.txt. Never run in CI.
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { load, randn, setNumThreads } from "../mod.ts";
import { fetchModels } from "../tools/fetch_models.ts";

const { values: flags } = benchArgs(import.meta.url, {
  threads: { type: "string", default: "1" },
  warm: { type: "string", default: "7" },
});
setNumThreads(Number(flags.threads));
const warmRuns = Number(flags.warm);

const SHAPES: Record<string, number[][]> = {
  "ocr-rec": [100, 180, 260, 320, 410, 560, 800].map((w) => [1, 3, 48, w]),
  "ocr-det": [[320, 320], [480, 640], [640, 480], [736, 736], [960, 960]].map(([h, w]) => [1, 3, h, w]),
};

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const lines: string[] = [
  `new_shapes: first run at a new shape / median of ${warmRuns} warm runs there, ${flags.threads} thread(s)`,
  `load average ${Deno.loadavg().map((l) => l.toFixed(2)).join(" ")}`,
  "model     shape              first ms   warm ms   ratio",
];
console.log(lines.join("\n"));
const models = await fetchModels();
for (const [name, shapes] of Object.entries(SHAPES)) {
  const model = models.find((m) => m.name === name)!;
  using module = await load(model.file);
  const ratios: number[] = [];
  for (const shape of shapes) {
    using x = randn(shape, { seed: 1 });
    let started = performance.now();
    module.forwardSync(x).dispose();
    const first = performance.now() - started;
    const warm: number[] = [];
    for (let i = 0; i < warmRuns; i++) {
      started = performance.now();
      module.forwardSync(x).dispose();
      warm.push(performance.now() - started);
    }
    const ratio = first / median(warm);
    ratios.push(ratio);
    const line = `${name.padEnd(9)} ${shape.join("x").padEnd(18)} ${first.toFixed(2).padStart(8)} ${
      median(warm).toFixed(2).padStart(9)
    } ${ratio.toFixed(2).padStart(7)}`;
    console.log(line);
    lines.push(line);
  }
  const summary = `${name}: median ratio ${median(ratios).toFixed(2)}, max ${Math.max(...ratios).toFixed(2)}`;
  console.log(summary);
  lines.push(summary);
}
await Deno.writeTextFile(new URL("./results/new_shapes.txt", import.meta.url), lines.join("\n") + "\n");

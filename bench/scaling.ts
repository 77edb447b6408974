/**
 * `deno task bench:scaling`: what a second intra-op thread buys each op node of a model, robust
 * to a noisy machine. One process profiles the model (`Module.profile`) at 1 thread and at N
 * threads in alternating rounds and keeps, per node and per thread count, the fastest round:
 * the machine's slow phases (here runs alternate between ~9.3 and ~13.5 ms on rec for tenths
 * of a second at a time) fall on both sides alike, and a minimum is what the code can do.
 *
 *   deno task bench:scaling [--model cls|rec|det|FILE] [--shape 1x3x48x192] [--threads 2]
 *                           [--rounds 8] [--runs 5] [--top 25]
 *
 * For each node: its time at 1 and N threads, the speed-up, and the loss, t_N − t_1 / N (what
 * the node costs at N threads beyond a perfect split); nodes sorted by loss. The totals line
 * gives both sums and the whole run's speed-up. Written to stdout and
 * bench/results/scaling_<model>.txt. Never run in CI.
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { load, randn, setNumThreads } from "../mod.ts";
import { fetchModels } from "../tools/fetch_models.ts";

const { values: flags } = benchArgs(import.meta.url, {
  model: { type: "string", default: "cls" },
  shape: { type: "string" },
  threads: { type: "string", default: "2" },
  rounds: { type: "string", default: "8" },
  runs: { type: "string", default: "5" },
  top: { type: "string", default: "25" },
});
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const many = Number(flags.threads);
const rounds = Number(flags.rounds);
const runs = Number(flags.runs);
const top = Number(flags.top);
for (const [name, value] of [["--threads", many], ["--rounds", rounds], ["--runs", runs], ["--top", top]] as const) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${value}`);
}
if (many < 2) throw new Error("--threads must be 2 or more (it is compared with 1)");

const known = (await fetchModels()).find((m) => m.name === `ocr-${flags.model}`);
const file = known?.file ?? flags.model;
const input = known?.input ?? "x";
const shape = (flags.shape ?? known?.shape.map((d) => (d === -1 ? 1 : d)).join("x"))?.split("x").map(Number);
if (shape === undefined || shape.some((d) => !Number.isInteger(d) || d < 1)) {
  throw new Error(`--shape must be dims like 1x3x48x192 (needed for '${flags.model}')`);
}
using module = await load(file, { inputShapes: { [input]: shape } });
using x = randn(shape, { seed: 7 });

const best = [new Map<number, number>(), new Map<number, number>()];
const described = new Map<number, string>();
const totals = [Infinity, Infinity];
for (let round = 0; round < rounds; round++) {
  for (const [side, threads] of [[0, 1], [1, many]] as const) {
    setNumThreads(threads);
    const report = module.profile([x], { runs, warmup: 1 });
    totals[side] = Math.min(totals[side], report.opMs);
    for (const op of report.ops) {
      if (op.graph !== 0) continue; // forked graphs run inline when profiled; node ids repeat
      best[side].set(op.node, Math.min(best[side].get(op.node) ?? Infinity, op.ms));
      described.set(op.node, `${op.op} ${JSON.stringify(op.outputShape)} <- ${JSON.stringify(op.inputShapes)}`);
    }
  }
}

const rows = [...described.keys()].map((node) => ({ node, one: best[0].get(node)!, n: best[1].get(node)! }));
const loss = (r: { one: number; n: number }) => r.n - r.one / many;
rows.sort((a, b) => loss(b) - loss(a));
const sum = (f: (r: (typeof rows)[number]) => number) => rows.reduce((s, r) => s + f(r), 0);
const lines = [
  `scaling: ${flags.model} [${shape.join("x")}], 1 vs ${many} threads, ${rounds} alternating rounds of ${runs} ` +
  `profiled runs; per node the fastest round, ms`,
  `run (fastest round's op time): 1 thread ${totals[0].toFixed(3)}, ${many} threads ${totals[1].toFixed(3)}, ` +
  `speed-up ${(totals[0] / totals[1]).toFixed(2)}; node sums ${sum((r) => r.one).toFixed(3)} and ` +
  `${sum((r) => r.n).toFixed(3)}, loss ${sum(loss).toFixed(3)}`,
  `slower at ${many} threads than at 1: ${rows.filter((r) => r.n > r.one).length} of ${rows.length} nodes`,
  "",
  "   loss    1 thr  N thr  speed-up  node  op [output] <- [inputs]",
  ...rows.slice(0, top).map((r) =>
    `${loss(r).toFixed(3).padStart(7)}  ${r.one.toFixed(3).padStart(7)} ${r.n.toFixed(3).padStart(6)}  ` +
    `${(r.one / r.n).toFixed(2).padStart(8)}  ${String(r.node).padStart(4)}  ${described.get(r.node)}`
  ),
];
console.log(lines.join("\n"));
const name = (known ? flags.model : file.split("/").pop()!.replace(/\.[^.]+$/, "")).replace(/[^\w.-]/g, "_");
await Deno.mkdir(`${ROOT}/bench/results`, { recursive: true });
await Deno.writeTextFile(`${ROOT}/bench/results/scaling_${name}.txt`, lines.join("\n") + "\n");

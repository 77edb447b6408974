/**
 * `deno task bench:layers`: where the time goes, layer by layer, in Spindle and in OpenVINO
 * (f32, or with `--precision bf16` Spindle's bf16 beside OpenVINO's default, which is bf16 on
 * CPUs that have it) on the same model: Spindle's profile (`Module.profile`) beside OpenVINO's PERF_COUNT
 * per-layer times (bench/peers/ov_profile.py, run in its own process), grouped by kind of
 * layer so that the two graphs (each fused its own way) compare. Writes the table to stdout
 * and bench/results/layers_<model>.txt.
 *
 *   deno task bench:layers [--model det] [--shape 1x3x640x640] [--threads 1] [--runs 20]
 *                          [--precision f32|bf16]
 *
 * Needs the Python peers of bench:peers (.cache/py-peers). Never run in CI.
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { load, type ProfiledOp, randn, setNumThreads } from "../mod.ts";
import { fetchModels } from "../tools/fetch_models.ts";

const { values: flags } = benchArgs(import.meta.url, {
  model: { type: "string", default: "det" },
  shape: { type: "string", default: "1x3x640x640" },
  threads: { type: "string", default: "1" },
  runs: { type: "string", default: "20" },
  precision: { type: "string", default: "f32" },
});
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const shape = flags.shape.split("x").map(Number);
const threads = Number(flags.threads);
const runs = Number(flags.runs);
if (flags.precision !== "f32" && flags.precision !== "bf16") {
  throw new Error(`--precision is f32 or bf16, not '${flags.precision}'`);
}
const precision = flags.precision;
const model = (await fetchModels()).find((m) => m.name === `ocr-${flags.model}`);
if (model === undefined) throw new Error(`unknown model '${flags.model}' (cls, rec, det)`);

/** The kind of a Spindle op node, named as the OpenVINO kinds below. */
function spindleKind(op: ProfiledOp): string {
  if (op.op === "conv2d") {
    const weight = op.inputShapes[1] ?? [];
    if (weight[1] === 1 && (op.inputShapes[0]?.[1] ?? 0) > 1) return "conv depthwise";
    if (weight[2] === 1 && weight[3] === 1) return "conv 1x1";
    return "conv kxk";
  }
  if (op.op === "conv_transpose2d") return "conv transpose";
  if (["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "sum"].includes(op.op)) return "pool / reduce";
  if (op.op === "resize") return "resize";
  if (op.op === "concat") return "concat";
  return "elementwise / other";
}

/** The kind of an OpenVINO layer (its type and the kernel it ran). */
function openvinoKind(type: string, exec: string): string {
  if (type === "Convolution" || type === "GroupConvolution") {
    if (exec.includes("dw")) return "conv depthwise";
    if (exec.includes("1x1")) return "conv 1x1";
    return "conv kxk";
  }
  if (type === "ConvolutionBackpropData") return "conv transpose";
  if (["MaxPool", "AvgPool", "ReduceMean", "ReduceSum", "ReduceMax"].includes(type)) return "pool / reduce";
  if (type === "Interpolate") return "resize";
  if (type === "Concatenation") return "concat";
  return "elementwise / other";
}

setNumThreads(threads);
using module = await load(model.file, { inputShapes: { [model.input]: shape }, precision });
using x = randn(shape, { seed: 7 });
const profile = module.profile([x], { runs, warmup: 3 });
const spindle = new Map<string, number>();
for (const op of profile.ops) spindle.set(spindleKind(op), (spindle.get(spindleKind(op)) ?? 0) + op.ms);

const output = await new Deno.Command(`${ROOT}/.cache/py-peers/bin/python`, {
  args: [
    `${ROOT}/bench/peers/ov_profile.py`,
    model.file,
    model.input,
    flags.shape,
    String(threads),
    String(runs),
    precision === "bf16" ? "default" : "f32",
  ],
  stdout: "piped",
  stderr: "inherit",
}).output();
if (!output.success) throw new Error("ov_profile.py failed (run deno task bench:peers once to install the peers)");
const layers = new TextDecoder().decode(output.stdout).trim().split("\n").map((line) => JSON.parse(line));
const openvino = new Map<string, number>();
for (const layer of layers) {
  const kind = openvinoKind(layer.type, layer.exec);
  openvino.set(kind, (openvino.get(kind) ?? 0) + layer.ms);
}

const lines: string[] = [];
const say = (line: string) => {
  console.log(line);
  lines.push(line);
};
const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
say(
  `layers: ${model.name} [${shape.join("x")}], ${threads} thread(s), ${runs} runs, ` +
    `${precision === "bf16" ? "Spindle bf16 against OpenVINO's default" : "f32"}; ms per run inside layers`,
);
say(`${"kind".padEnd(22)} ${"spindle".padStart(9)} ${"openvino".padStart(9)} ${"ratio".padStart(6)}`);
const kinds = [...new Set([...spindle.keys(), ...openvino.keys()])].sort((a, b) =>
  (spindle.get(b) ?? 0) - (spindle.get(a) ?? 0)
);
for (const kind of kinds) {
  const s = spindle.get(kind) ?? 0;
  const o = openvino.get(kind) ?? 0;
  say(
    `${kind.padEnd(22)} ${s.toFixed(3).padStart(9)} ${o.toFixed(3).padStart(9)} ${
      (o > 0 ? s / o : NaN).toFixed(2).padStart(6)
    }`,
  );
}
say(
  `${"total".padEnd(22)} ${total(spindle).toFixed(3).padStart(9)} ${total(openvino).toFixed(3).padStart(9)} ${
    (total(spindle) / total(openvino)).toFixed(2).padStart(6)
  }`,
);
say("");
say("slowest Spindle nodes:");
for (const op of profile.ops.slice(0, 10)) {
  say(
    `  ${op.ms.toFixed(3).padStart(7)} ms  ${op.op.padEnd(17)} [${op.outputShape.join("x")}] <- ${
      op.inputShapes.map((s) => `[${s.join("x")}]`).join(" ")
    }${op.gflops === null ? "" : `  ${op.gflops.toFixed(1)} GFLOPS`}`,
  );
}
say("slowest OpenVINO layers:");
for (const layer of layers.slice(0, 10)) {
  say(`  ${layer.ms.toFixed(3).padStart(7)} ms  ${layer.type.padEnd(24)} ${layer.exec.padEnd(24)} ${layer.name}`);
}
await Deno.mkdir(`${ROOT}/bench/results`, { recursive: true });
await Deno.writeTextFile(
  `${ROOT}/bench/results/layers_${flags.model}${precision === "bf16" ? "_bf16" : ""}.txt`,
  lines.join("\n") + "\n",
);

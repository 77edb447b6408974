/**
 * `deno task bench:peers`: Spindle against onnxruntime (Python) and OpenVINO (Python) on the
 * real PaddleOCR models, every runtime in its own process at its own defaults (only the
 * thread count set), on the same input bytes, in alternating rounds: each round asks every
 * runtime in turn (rotating who goes first) to run for a while, so that drift in the
 * machine's load hits all alike. One process runs at a time; the others wait on stdin.
 * Reports medians and Spindle's latency as a ratio of each peer's (≤ 1 is ahead) from this
 * one run, as a table (stdout and bench/results/peers.txt), CSV and SVG.
 *
 * OpenVINO runs twice: at f32 (`INFERENCE_PRECISION_HINT: f32`, the fair comparison) and at
 * its default, which on CPUs with bf16 runs convolutions and matmuls in bf16. Spindle runs
 * twice too: f32, and "spindle-bf16" (`load(..., { precision: "bf16" })`), whose ratio to
 * OpenVINO's default is the last column (`/ov-def` of sp-bf16).
 *
 * Two columns say how far one run's ratio can be trusted: the range of Spindle / OpenVINO f32
 * over the rounds (each round's own medians), and the share of the machine's CPU time the
 * hypervisor reports stolen from this guest during the case (/proc/stat). On the shared 2-vCPU
 * VM the 2-thread cases moved by 10-40% between runs while the steal counter stayed near 0%:
 * the round ranges show such phases, the steal column only what the hypervisor admits.
 *
 *   deno task bench:peers [--rounds 5] [--round-ms 300] [--models cls,rec,det]
 *                         [--batches 1,8] [--threads 1,2] [--suites onnx,builtins,int8]
 *                         [--formats qdq,qop,dyn]
 *
 * The int8 suite (not in the default suites) runs the quantized PaddleOCR models of
 * tools/make_int8_models.py (.cache/int8: QDQ, QOperator and dynamic quantization of each)
 * in Spindle and onnxruntime, the same file in both, beside Spindle on the float model.
 *
 * The Python peers are installed on first use into .cache/py-peers (git-ignored). Never run
 * in CI.
 *
 * @module
 */
import { benchArgs } from "./args.ts";
import { fetchModels, type RealModel } from "../tools/fetch_models.ts";
import { toCsv } from "./plot.ts";

const { values: flags } = benchArgs(import.meta.url, {
  rounds: { type: "string", default: "5" },
  "round-ms": { type: "string", default: "300" },
  models: { type: "string", default: "cls,rec,det" },
  batches: { type: "string", default: "1,8" },
  threads: { type: "string", default: "1,2" },
  suites: { type: "string", default: "onnx,builtins" },
  builtins: { type: "string", default: "example,resnet,dlrm,transformer,mlp" },
  formats: { type: "string", default: "qdq,qop,dyn" },
});
const SUITES = new Set(flags.suites.split(","));
const threadCounts = flags.threads.split(",").map(Number);
const ROUNDS = Number(flags.rounds);
const ROUND_MS = Number(flags["round-ms"]);
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const VENV = `${ROOT}/.cache/py-peers`;
const PYTHON = `${VENV}/bin/python`;
const RESULTS = `${ROOT}/bench/results`;

async function run(command: string, args: string[]): Promise<void> {
  const status = await new Deno.Command(command, { args, stdout: "inherit", stderr: "inherit" }).spawn().status;
  if (!status.success) throw new Error(`${command} ${args.join(" ")} failed (exit ${status.code})`);
}

/**
 * Installs onnxruntime and OpenVINO (and, for the built-ins, PyTorch 2.15 with the CUDA
 * runtime packages it needs to import even on CPU: about 5 GB) into the git-ignored venv,
 * once each.
 */
async function ensurePeers(torch: boolean): Promise<void> {
  const installed = async (marker: string) => {
    try {
      await Deno.stat(`${VENV}/${marker}`);
      return true;
    } catch {
      return false;
    }
  };
  if (!await installed(".peers-ready")) {
    console.error(`peers: installing onnxruntime, openvino and numpy into ${VENV} (first use; a minute or two)...`);
    await run("python3", ["-m", "venv", VENV]);
    await run(`${VENV}/bin/pip`, ["install", "--quiet", "onnxruntime", "openvino", "numpy"]);
    await Deno.writeTextFile(`${VENV}/.peers-ready`, new Date().toISOString());
  }
  if (torch && !await installed(".torch-ready")) {
    console.error(`peers: installing torch==2.15.0 into ${VENV} (first use; about 5 GB, several minutes)...`);
    await run(`${VENV}/bin/pip`, ["install", "--quiet", "torch==2.15.0"]);
    await Deno.writeTextFile(`${VENV}/.torch-ready`, new Date().toISOString());
  }
}

/** A runtime in its own process, driven by JSON lines. */
class Peer {
  readonly name: string;
  #process: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;

  constructor(name: string, command: string, args: string[]) {
    this.name = name;
    this.#process = new Deno.Command(command, { args, stdin: "piped", stdout: "piped", stderr: "inherit" }).spawn();
    this.#writer = this.#process.stdin.getWriter();
    this.#lines = this.#process.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())[
      Symbol.asyncIterator
    ]();
  }

  async request(message: Record<string, unknown>): Promise<Record<string, unknown>> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(message) + "\n"));
    const { value, done } = await this.#lines.next();
    if (done) throw new Error(`${this.name}: the process exited`);
    const reply = JSON.parse(value);
    if (!reply.ok) throw new Error(`${this.name}: ${reply.error}`);
    return reply;
  }

  async close(): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(`{"op":"quit"}\n`)).catch(() => {});
    await this.#writer.close().catch(() => {});
    await this.#process.status;
  }
}

function splitLines(): TransformStream<string, string> {
  let buffered = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        controller.enqueue(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
      }
    },
  });
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/**
 * The machine's CPU time so far from /proc/stat (in clock ticks, all CPUs): the total and the
 * part stolen by the hypervisor for other guests (null where there is no /proc/stat). On a
 * virtual machine, steal time slows every runtime measured meanwhile, the multi-threaded ones
 * most.
 */
async function cpuTimes(): Promise<{ total: number; steal: number } | null> {
  try {
    const line = (await Deno.readTextFile("/proc/stat")).split("\n").find((l) => l.startsWith("cpu "));
    if (line === undefined) return null;
    const fields = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user and nice.
    const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
    return { total, steal: fields[7] ?? 0 };
  } catch {
    return null;
  }
}

/** Deterministic input bytes (a fixed-seed LCG), the same file for every runtime. */
async function writeInput(path: string, count: number, seed: number): Promise<void> {
  const data = new Float32Array(count);
  let state = seed >>> 0;
  for (let i = 0; i < count; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    data[i] = state / 2 ** 32 - 0.5;
  }
  await Deno.writeFile(path, new Uint8Array(data.buffer));
}

interface Row {
  model: string;
  batch: number;
  threads: number;
  [runtime: string]: string | number;
}

await ensurePeers(SUITES.has("builtins"));
if (SUITES.has("int8")) {
  try {
    await Deno.stat(`${ROOT}/.cache/int8/det_qdq.onnx`);
  } catch {
    throw new Error(
      `bench:peers int8: ${ROOT}/.cache/int8 is missing; make it with ${PYTHON} tools/make_int8_models.py`,
    );
  }
}
const rows: Row[] = [];
const builtinRows: Record<string, string | number>[] = [];
const int8Rows: Record<string, string | number>[] = [];
const versions: Record<string, string> = {};
const lines: string[] = [];
const say = (line: string) => {
  console.log(line);
  lines.push(line);
};
if (SUITES.has("onnx")) await onnxSuite();
if (SUITES.has("builtins")) await builtinSuite();
if (SUITES.has("int8")) await int8Suite();
say(`versions: ${JSON.stringify(versions)}`);
await Deno.mkdir(RESULTS, { recursive: true });
// The int8 suite writes its own peers_int8.{txt,csv}; an int8-only run keeps the float
// results of earlier runs.
const int8Only = SUITES.size === 1 && SUITES.has("int8");
if (!int8Only) {
  await Deno.writeTextFile(`${RESULTS}/peers.txt`, lines.join("\n") + "\n");
  await Deno.writeTextFile(
    `${RESULTS}/peers.csv`,
    toCsv(rows.map((row) => ({
      ...row,
      ratio_onnxruntime: row.spindle as number / (row.onnxruntime as number),
      ratio_openvino_f32: row.spindle as number / (row["openvino-f32"] as number),
      ratio_openvino_default: row.spindle as number / (row["openvino-default"] as number),
      ratio_bf16_openvino_default: row["spindle-bf16"] as number / (row["openvino-default"] as number),
    }))),
  );
}
if (rows.length > 0) await Deno.writeTextFile(`${RESULTS}/peers.svg`, ratioBars(rows));
if (builtinRows.length > 0) await Deno.writeTextFile(`${RESULTS}/peers_builtins.csv`, toCsv(builtinRows));
if (!int8Only) console.log(`wrote ${RESULTS}/peers.{txt,csv,svg}`);
if (SUITES.has("int8")) console.log(`wrote ${RESULTS}/peers_int8.{txt,csv}`);

/** The PaddleOCR models against onnxruntime and OpenVINO. */
async function onnxSuite(): Promise<void> {
  const wanted = new Set(flags.models.split(","));
  const models = (await fetchModels()).filter((m) => wanted.has(m.name.replace(/^ocr-/, "")));
  const batches = flags.batches.split(",").map(Number);
  const peers = [
    new Peer("spindle", Deno.execPath(), ["run", "-A", `${ROOT}/bench/peers/spindle_worker.ts`]),
    new Peer("spindle-bf16", Deno.execPath(), ["run", "-A", `${ROOT}/bench/peers/spindle_worker.ts`]),
    new Peer("onnxruntime", PYTHON, [`${ROOT}/bench/peers/ort_worker.py`]),
    new Peer("openvino-f32", PYTHON, [`${ROOT}/bench/peers/ov_worker.py`]),
    new Peer("openvino-default", PYTHON, [`${ROOT}/bench/peers/ov_worker.py`]),
  ];
  const temp = await Deno.makeTempDir({ prefix: "spindle-peers-" });
  say(
    `peers: ${ROUNDS} alternating rounds of ≥ ${ROUND_MS} ms per runtime per case; medians in ms; ` +
      `ratio = Spindle / peer (≤ 1.00: Spindle ahead)`,
  );
  say(
    "model    batch threads | spindle sp-bf16  onnxrt  ov-f32  ov-def | /onnxrt /ov-f32 /ov-def | " +
      "bf16/ov-def | checksum spread | /ov-f32 by round | steal",
  );
  try {
    for (const model of models as RealModel[]) {
      for (const batch of batches) {
        const shape = model.shape.map((d) => (d === -1 ? batch : d));
        const data = `${temp}/${model.name}-${batch}.bin`;
        await writeInput(data, shape.reduce((a, b) => a * b, 1), 7 + batch);
        for (const threads of threadCounts) {
          const samples = new Map<string, number[]>(peers.map((p) => [p.name, []]));
          // Each round's own median per runtime: the spread of the rounds' ratios shows how
          // steady the verdict was while the host's load came and went.
          const roundMedians = new Map<string, number[]>(peers.map((p) => [p.name, []]));
          const checksums = new Map<string, number>();
          for (const peer of peers) {
            const reply = await peer.request({
              op: "load",
              model: model.file,
              input: model.input,
              shape,
              data,
              threads,
              precision: peer.name === "openvino-default" ? "default" : peer.name === "spindle-bf16" ? "bf16" : "f32",
            });
            if (typeof reply.version === "string") versions[peer.name] = reply.version;
            if (typeof reply.precision === "string") versions[`${peer.name} precision`] = reply.precision;
            await peer.request({ op: "run", min_ms: 0, min_runs: 2 }); // warm-up
          }
          const stealBefore = await cpuTimes();
          for (let round = 0; round < ROUNDS; round++) {
            for (let k = 0; k < peers.length; k++) {
              const peer = peers[(round + k) % peers.length];
              const reply = await peer.request({ op: "run", min_ms: ROUND_MS, min_runs: 3 });
              samples.get(peer.name)!.push(...(reply.samples as number[]));
              roundMedians.get(peer.name)!.push(median(reply.samples as number[]));
              checksums.set(peer.name, reply.checksum as number);
            }
          }
          const stealAfter = await cpuTimes();
          const steal = stealAfter === null || stealBefore === null || stealAfter.total === stealBefore.total
            ? NaN
            : (stealAfter.steal - stealBefore.steal) / (stealAfter.total - stealBefore.total);
          const roundRatios = roundMedians.get("spindle")!.map((v, i) => v / roundMedians.get("openvino-f32")![i]);
          const [roundMin, roundMax] = [Math.min(...roundRatios), Math.max(...roundRatios)];
          const ms = Object.fromEntries(peers.map((p) => [p.name, median(samples.get(p.name)!)]));
          const reference = checksums.get("onnxruntime")!;
          const spread = Math.max(
            ...["spindle", "openvino-f32"].map((name) =>
              Math.abs(checksums.get(name)! - reference) / Math.max(1, Math.abs(reference))
            ),
          );
          const row: Row = {
            model: model.name,
            batch,
            threads,
            ...ms,
            ratio_openvino_f32_round_min: roundMin,
            ratio_openvino_f32_round_max: roundMax,
            steal_fraction: steal,
          };
          rows.push(row);
          const f = (v: number) => v.toFixed(2).padStart(7);
          const r = (v: number) => (ms.spindle / v).toFixed(2).padStart(7);
          say(
            `${model.name.padEnd(8)} ${String(batch).padStart(5)} ${String(threads).padStart(7)} |` +
              `${f(ms.spindle)} ${f(ms["spindle-bf16"])} ${f(ms.onnxruntime)} ${f(ms["openvino-f32"])} ` +
              `${f(ms["openvino-default"])} |${r(ms.onnxruntime)} ${r(ms["openvino-f32"])} ${
                r(ms["openvino-default"])
              } | ` +
              `${(ms["spindle-bf16"] / ms["openvino-default"]).toFixed(2).padStart(11)} | ${spread.toExponential(1)}` +
              `          | ${roundMin.toFixed(2)}-${roundMax.toFixed(2)}       | ` +
              `${Number.isNaN(steal) ? "  n/a" : `${(100 * steal).toFixed(1).padStart(4)}%`}`,
          );
        }
      }
    }
  } finally {
    for (const peer of peers) await peer.close();
    await Deno.remove(temp, { recursive: true });
  }
}

/**
 * Quantized PaddleOCR (.cache/int8, made by tools/make_int8_models.py at fixed shapes): Spindle
 * and onnxruntime on the same int8 file, and Spindle on the float model it was quantized from.
 */
async function int8Suite(): Promise<void> {
  const dir = `${ROOT}/.cache/int8`;
  const shapes: Record<string, number[]> = { cls: [1, 3, 48, 192], rec: [1, 3, 48, 320], det: [1, 3, 320, 320] };
  const peers = [
    new Peer("spindle-int8", Deno.execPath(), ["run", "-A", `${ROOT}/bench/peers/spindle_worker.ts`]),
    new Peer("onnxruntime-int8", PYTHON, [`${ROOT}/bench/peers/ort_worker.py`]),
    new Peer("spindle-f32", Deno.execPath(), ["run", "-A", `${ROOT}/bench/peers/spindle_worker.ts`]),
  ];
  const temp = await Deno.makeTempDir({ prefix: "spindle-peers-int8-" });
  // The suite's table also goes to peers_int8.txt, beside its CSV, whichever suites ran.
  const table: string[] = [];
  const sayInt8 = (line: string) => {
    say(line);
    table.push(line);
  };
  say("");
  sayInt8(
    `int8: ${ROUNDS} alternating rounds of ≥ ${ROUND_MS} ms; medians in ms (load average ${Deno.loadavg().join(" ")})`,
  );
  sayInt8("model  format threads | sp-int8 ort-int8  sp-f32 | sp-int8/ort-int8 sp-f32/sp-int8");
  try {
    for (const model of flags.models.split(",")) {
      const shape = shapes[model];
      const data = `${temp}/${model}.bin`;
      await writeInput(data, shape.reduce((a, b) => a * b, 1), 11);
      const input = (await new Deno.Command(PYTHON, {
        args: ["-c", `import onnx; print(onnx.load("${dir}/${model}_f32.onnx").graph.input[0].name)`],
        stdout: "piped",
      }).output()).stdout;
      const name = new TextDecoder().decode(input).trim();
      for (const format of flags.formats.split(",")) {
        for (const threads of threadCounts) {
          const samples = new Map<string, number[]>(peers.map((p) => [p.name, []]));
          for (const peer of peers) {
            const file = peer.name === "spindle-f32" ? `${dir}/${model}_f32.onnx` : `${dir}/${model}_${format}.onnx`;
            const reply = await peer.request({ op: "load", model: file, input: name, shape, data, threads });
            if (typeof reply.version === "string") versions[peer.name] = reply.version;
            await peer.request({ op: "run", min_ms: 0, min_runs: 2 }); // warm-up
          }
          for (let round = 0; round < ROUNDS; round++) {
            for (let k = 0; k < peers.length; k++) {
              const peer = peers[(round + k) % peers.length];
              const reply = await peer.request({ op: "run", min_ms: ROUND_MS, min_runs: 3 });
              samples.get(peer.name)!.push(...(reply.samples as number[]));
            }
          }
          const ms = Object.fromEntries(peers.map((p) => [p.name, median(samples.get(p.name)!)]));
          const f = (v: number) => v.toFixed(2).padStart(7);
          sayInt8(
            `${model.padEnd(6)} ${format.padEnd(6)} ${String(threads).padStart(7)} |${f(ms["spindle-int8"])} ` +
              `${f(ms["onnxruntime-int8"])} ${f(ms["spindle-f32"])} | ` +
              `${(ms["spindle-int8"] / ms["onnxruntime-int8"]).toFixed(2).padStart(16)} ` +
              `${(ms["spindle-f32"] / ms["spindle-int8"]).toFixed(2).padStart(14)}`,
          );
          int8Rows.push({ model, format, threads, ...ms });
        }
      }
    }
  } finally {
    for (const peer of peers) await peer.close();
    await Deno.remove(temp, { recursive: true });
  }
  await Deno.mkdir(RESULTS, { recursive: true });
  await Deno.writeTextFile(`${RESULTS}/peers_int8.csv`, toCsv(int8Rows));
  table.push(`versions: ${JSON.stringify(versions)}`);
  await Deno.writeTextFile(`${RESULTS}/peers_int8.txt`, table.join("\n") + "\n");
}

/**
 * The built-in models against PyTorch re-creating them in TorchScript (plain, and frozen
 * with optimize_for_inference): latency at each thread count, and throughput of 4 concurrent
 * requests at 1 intra-op thread each (PyTorch: 4 Python threads; Spindle: 4 concurrent
 * `forward` calls on its default inference threads).
 */
async function builtinSuite(): Promise<void> {
  const names = flags.builtins.split(",");
  const runtimes = [
    new Peer("spindle", Deno.execPath(), ["run", "-A", `${ROOT}/bench/peers/spindle_worker.ts`]),
    new Peer("torch", PYTHON, [`${ROOT}/bench/peers/torch_worker.py`]),
    new Peer("torch-frozen", PYTHON, [`${ROOT}/bench/peers/torch_worker.py`]),
  ];
  say("");
  say(
    "built-in    threads | spindle   torch  frozen | /torch /frozen   (latency, ms)   " +
      "| throughput 4 x 1 thread, req/s: spindle torch frozen | x torch x frozen",
  );
  try {
    for (const name of names) {
      const load = async (threads: number) => {
        for (const peer of runtimes) {
          const reply = await peer.request({ op: "load", name, threads, frozen: peer.name === "torch-frozen" });
          if (typeof reply.version === "string") versions[peer.name] = reply.version;
          await peer.request({ op: "run", min_ms: 0, min_runs: 3 }); // warm-up
        }
      };
      const latency: Record<number, Record<string, number>> = {};
      for (const threads of threadCounts) {
        await load(threads);
        const samples = new Map<string, number[]>(runtimes.map((p) => [p.name, []]));
        for (let round = 0; round < ROUNDS; round++) {
          for (let k = 0; k < runtimes.length; k++) {
            const peer = runtimes[(round + k) % runtimes.length];
            const reply = await peer.request({ op: "run", min_ms: ROUND_MS, min_runs: 3 });
            samples.get(peer.name)!.push(...(reply.samples as number[]));
          }
        }
        latency[threads] = Object.fromEntries(runtimes.map((p) => [p.name, median(samples.get(p.name)!)]));
      }
      await load(1);
      const perSecond = new Map<string, number[]>(runtimes.map((p) => [p.name, []]));
      for (let round = 0; round < ROUNDS; round++) {
        for (let k = 0; k < runtimes.length; k++) {
          const peer = runtimes[(round + k) % runtimes.length];
          const reply = await peer.request({ op: "throughput", concurrency: 4, duration_ms: 2 * ROUND_MS });
          perSecond.get(peer.name)!.push(reply.per_s as number);
        }
      }
      const rate = Object.fromEntries(runtimes.map((p) => [p.name, median(perSecond.get(p.name)!)]));
      for (const threads of threadCounts) {
        const ms = latency[threads];
        const f = (v: number, w = 7) => v.toFixed(2).padStart(w);
        say(
          `${name.padEnd(11)} ${String(threads).padStart(7)} |${f(ms.spindle, 8)} ${f(ms.torch)} ${
            f(ms["torch-frozen"])
          } |` +
            `${f(ms.spindle / ms.torch, 6)} ${f(ms.spindle / ms["torch-frozen"])}                  ` +
            `| ${rate.spindle.toFixed(0).padStart(33)} ${rate.torch.toFixed(0).padStart(5)} ` +
            `${rate["torch-frozen"].toFixed(0).padStart(6)} | ${f(rate.spindle / rate.torch, 7)} ` +
            `${f(rate.spindle / rate["torch-frozen"], 8)}`,
        );
        builtinRows.push({
          model: name,
          threads,
          spindle_ms: ms.spindle,
          torch_ms: ms.torch,
          torch_frozen_ms: ms["torch-frozen"],
          spindle_per_s_4x1: rate.spindle,
          torch_per_s_4x1: rate.torch,
          torch_frozen_per_s_4x1: rate["torch-frozen"],
        });
      }
    }
  } finally {
    for (const peer of runtimes) await peer.close();
  }
}

/** A grouped bar chart: per case, Spindle's latency ratio to each peer, with the 1.0 line. */
function ratioBars(data: Row[]): string {
  const peersShown = [["onnxruntime", "#1f77b4"], ["openvino-f32", "#ff7f0e"], ["openvino-default", "#2ca02c"]];
  const width = 80 + data.length * 70;
  const height = 360;
  const top = 40;
  const bottom = 300;
  const ratios = data.flatMap((row) => peersShown.map(([name]) => row.spindle as number / (row[name] as number)));
  const max = Math.max(2, ...ratios.map((v) => Math.ceil(v * 2) / 2));
  const y = (v: number) => bottom - ((bottom - top) * v) / max;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="${
      width / 2
    }" y="20" text-anchor="middle" font-size="14">Spindle latency / peer latency (lower is better; 1.0 = parity)</text>`,
    `<line x1="60" x2="${width - 10}" y1="${y(1)}" y2="${y(1)}" stroke="#000" stroke-dasharray="4 3"/>`,
  ];
  for (let tick = 0; tick <= max; tick += 0.5) {
    parts.push(`<text x="55" y="${y(tick) + 4}" text-anchor="end">${tick.toFixed(1)}</text>`);
    parts.push(`<line x1="58" x2="62" y1="${y(tick)}" y2="${y(tick)}" stroke="#000"/>`);
  }
  data.forEach((row, i) => {
    const x0 = 70 + i * 70;
    peersShown.forEach(([name, color], k) => {
      const v = row.spindle as number / (row[name] as number);
      parts.push(
        `<rect x="${x0 + k * 18}" y="${y(v)}" width="16" height="${bottom - y(v)}" fill="${color}">` +
          `<title>${row.model} b${row.batch} t${row.threads} vs ${name}: ${v.toFixed(2)}</title></rect>`,
      );
    });
    parts.push(
      `<text x="${x0 + 27}" y="${bottom + 14}" text-anchor="middle">${row.model.replace("ocr-", "")}</text>`,
      `<text x="${x0 + 27}" y="${bottom + 28}" text-anchor="middle">b${row.batch} t${row.threads}</text>`,
    );
  });
  peersShown.forEach(([name, color], k) => {
    parts.push(
      `<rect x="${70 + k * 150}" y="${height - 22}" width="12" height="12" fill="${color}"/>`,
      `<text x="${86 + k * 150}" y="${height - 12}">vs ${name}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n");
}

/**
 * Where `spindle serve`'s added latency goes, at concurrency 1 with binary tensors, for
 * builtin:example and the PaddleOCR classifier (cls):
 *
 *   deno run -A bench/serve_probe.ts [--requests 1000] [--models cls,example] [--threads 2]
 *     [--served-only]
 *
 * Steps, in rounds of 50 requests each (so that the load others put on the machine falls on
 * every step alike), each reported as the median over rounds of the round's p50, with the CPU
 * time (all threads) and context switches of the process that did the work, per request:
 *
 * 1. in-process `forwardAllSync` back to back (the JavaScript thread runs the forward);
 * 2. in-process `forwardAll` back to back (the inference pool runs it);
 * 3. in-process `forwardAllSync` timed alone, with one floor exchange between forwards: what
 *    the same forward costs after an HTTP exchange instead of after another forward;
 * 4. the floor: the request's bytes to a bare server on serve's HTTP layer
 *    (bench/serve_floor.ts) and as many bytes back;
 * 5. served by `main.ts serve --concurrency 1 --inline-max-us 1000000` (a forward alone runs on
 *    the JavaScript thread) and
 * 6. by `main.ts serve --concurrency 1 --inline-max-us 0` (every forward on the pool), with the paired
 *    difference of the two per round.
 *
 * `--threads` sets the intra-op threads here and in both servers; `--served-only` runs steps 5
 * and 6 only. `--pin` (an experiment, Linux, needs `taskset`): once each process has run a
 * forward (so its intra-op teams exist), the team helpers (threads named spindle-omp) of this
 * process and both servers are pinned to the last CPU and their other threads to CPU 0, so that
 * a helper never shares a core with the thread that runs the forward; forwardAll's pool team
 * here is made later and is not pinned. Nothing is written; the figures are printed.
 *
 * @module
 */
import { quantile } from "../lib/cli/infer.ts";
import { setNumThreads } from "../lib/threads.ts";
import { fetchModels } from "../tools/fetch_models.ts";
import { benchArgs } from "./args.ts";
import { binaryBody, LeanClient, modelCases, startServe } from "./serve_client.ts";

const { values: flags } = benchArgs(import.meta.url, {
  requests: { type: "string" },
  models: { type: "string" },
  threads: { type: "string" },
  "served-only": { type: "boolean" },
  pin: { type: "boolean" },
});
const ROUND = 50;
const requests = Number(flags.requests ?? 1000);
const threads = Number(flags.threads ?? 2);
if (!Number.isInteger(requests) || requests < ROUND) throw new RangeError(`--requests must be ${ROUND} or more`);
if (!Number.isInteger(threads) || threads < 1) throw new RangeError("--threads must be a positive integer");
const which = (flags.models ?? "cls,example").split(",");
setNumThreads(threads);

/** CPU time in ms (user + system, all threads), voluntary and involuntary context switches. */
function processStats(pid: number): [number, number, number] {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  let voluntary = 0;
  let involuntary = 0;
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/status`);
      voluntary += Number(status.match(/^voluntary_ctxt_switches:\s+(\d+)/m)?.[1] ?? 0);
      involuntary += Number(status.match(/^nonvoluntary_ctxt_switches:\s+(\d+)/m)?.[1] ?? 0);
    } catch {
      // The thread exited between the listing and the read.
    }
  }
  // utime and stime, fields 14 and 15 of stat(5), in clock ticks (USER_HZ, 100 on Linux).
  return [(Number(fields[11]) + Number(fields[12])) * 10, voluntary, involuntary];
}

/** Pins the threads named spindle-omp of each process to the last CPU, the others to CPU 0. */
function pinTeams(pids: number[]): void {
  const last = navigator.hardwareConcurrency - 1;
  for (const pid of pids) {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const name = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/comm`).trim();
      const cpu = name.startsWith("spindle-omp") ? last : 0;
      const { success } = new Deno.Command("taskset", { args: ["-pc", String(cpu), task.name], stdout: "null" })
        .outputSync();
      if (!success) throw new Error(`--pin: taskset -pc ${cpu} ${task.name} failed`);
    }
  }
}

const p50 = (samples: number[]) => quantile([...samples].sort((a, b) => a - b), 0.5);
const us = (ms: number) => (ms * 1000).toFixed(0).padStart(5);

const cls = (await fetchModels()).find((m) => m.name === "ocr-cls")!;
const serveArgs = [
  ...["--model", "example=builtin:example", "--model", `cls=${cls.file}`],
  ...["--input-shape", `${cls.input}=${cls.shape.join("x")}`, "--concurrency", "1", "--threads", String(threads)],
];
const inlineServer = await startServe([...serveArgs, "--inline-max-us", "1000000"]);
const poolServer = await startServe([...serveArgs, "--inline-max-us", "0"]);
const floor = await startServe([], ["bench/serve_floor.ts", "--stack", "http1"]);
const models = await modelCases(cls, which);
const cases = models.cases;

for (const c of cases) {
  const request = binaryBody([{ name: c.input, shape: [...c.tensor.shape], data: c.tensor.toArray() as Float32Array }]);
  const headers = { "inference-header-content-length": request.header };
  const open = (url: string) => LeanClient.open(url, request.body, headers);
  const inline = await open(`${inlineServer.url}/v2/models/${c.name}/infer`);
  const pool = await open(`${poolServer.url}/v2/models/${c.name}/infer`);
  const answerBytes = (await inline.post()).bytes;
  await pool.post();
  const bare = await open(`${floor.url}/${answerBytes}`);
  if (flags.pin) {
    c.module.forwardAllSync(c.tensor).forEach((t) => t.dispose());
    pinTeams([Deno.pid, inlineServer.child.pid, poolServer.child.pid]);
  }
  const forwardSync = () => c.module.forwardAllSync(c.tensor).forEach((t) => t.dispose());
  const served = (client: LeanClient) => async () => {
    if ((await client.post()).status !== 200) throw new Error(`${c.name}: a served request failed`);
  };
  /** Label, the process doing the work, and the step (a step returning a time is timed alone). */
  const steps: [string, number, () => unknown][] = [
    ["in-process forwardAllSync, back to back", Deno.pid, forwardSync],
    ["in-process forwardAll, back to back", Deno.pid, async () => {
      (await c.module.forwardAll(c.tensor)).forEach((t) => t.dispose());
    }],
    ["in-process forwardAllSync after a floor exchange", Deno.pid, async () => {
      const begin = performance.now();
      forwardSync();
      const took = performance.now() - begin;
      await bare.post();
      return took;
    }],
    ["floor (same bytes, serve's HTTP layer)", floor.child.pid, async () => void (await bare.post())],
    ["served, forward inline", inlineServer.child.pid, served(inline)],
    ["served, forward on the pool", poolServer.child.pid, served(pool)],
  ];
  const run = flags["served-only"] ? steps.slice(-2) : steps;
  const roundP50s = run.map(() => [] as number[]);
  const stats = run.map(() => [0, 0, 0]);
  const rounds = Math.floor(requests / ROUND);
  for (let round = 0; round < rounds; round++) {
    for (const [k, [, pid, step]] of run.entries()) {
      const times: number[] = [];
      const before = processStats(pid);
      // 5 warm-up requests per round, not timed (the step before was another one).
      for (let i = 0; i < ROUND + 5; i++) {
        const begin = performance.now();
        const own = await step();
        if (i >= 5) times.push(typeof own === "number" ? own : performance.now() - begin);
      }
      roundP50s[k].push(p50(times));
      const after = processStats(pid);
      for (let j = 0; j < 3; j++) stats[k][j] += (after[j] - before[j]) / (ROUND + 5) / rounds;
    }
  }
  console.log(
    `# ${c.name}: ${threads} intra-op thread(s)${flags.pin ? ", team helpers pinned apart" : ""}, ` +
      `${rounds} rounds of ${ROUND}, ` +
      `load average ${Deno.loadavg().map((l) => l.toFixed(1)).join(" ")}`,
  );
  for (const [k, [label]] of run.entries()) {
    const [cpu, voluntary, involuntary] = stats[k];
    console.log(
      `${us(p50(roundP50s[k]))} µs  ${label} (per request: CPU ${us(cpu)} µs, context switches ` +
        `${voluntary.toFixed(1)} voluntary, ${involuntary.toFixed(1)} involuntary)`,
    );
  }
  const [on, off] = roundP50s.slice(-2);
  const diff = on.map((t, i) => t - off[i]);
  console.log(
    `inline - pool, paired per round: p50 ${us(p50(diff))} µs; inline faster in ` +
      `${diff.filter((d) => d < 0).length} of ${diff.length} rounds`,
  );
  for (const client of [inline, pool, bare]) client.close();
}
for (const server of [inlineServer, poolServer, floor]) await server.stop();
models.dispose();

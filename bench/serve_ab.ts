/**
 * A/B of two `spindle serve` builds at concurrency 1 with binary tensors: this checkout's
 * server and a baseline checkout's (another commit's TypeScript, e.g. from `git archive`),
 * both serving builtin:example and the PaddleOCR classifier, driven by the lean keep-alive
 * client in alternating blocks (the order swapped each round), so that the load others put
 * on the machine falls on both alike:
 *
 *   deno run -A bench/serve_ab.ts --baseline DIR [--rounds 20] [--requests 100] [--models cls,example]
 *     [--floor]
 *
 * The baseline runs with this checkout's native library (SPINDLE_LIB), so only the
 * TypeScript differs. Prints, per model, the median over rounds of each block's p50 and mean
 * (collections that come every few hundred requests move the mean, not the p50), the
 * median of each round's paired difference (new - baseline), and the CPU time of each
 * server's event-loop thread per request (from /proc, which the load others put on the
 * machine does not inflate as it does wall time). Nothing is written.
 *
 * `--floor` compares the HTTP layers alone: the baseline's and this checkout's
 * bench/serve_floor.ts (no model, no forward), each sent the same request bytes and answering
 * as many bytes as the server's binary response (the output's bytes and its JSON header's). With
 * no forward's time and its spread in the figures, a change of a few µs in the HTTP layer shows.
 *
 * @module
 */
import { quantile } from "../lib/cli/infer.ts";
import { libraryPath } from "../ffi/load.ts";
import { randn } from "../lib/tensor.ts";
import { fetchModels } from "../tools/fetch_models.ts";
import { benchArgs } from "./args.ts";
import { binaryBody, LeanClient, startServe } from "./serve_client.ts";

const { values: flags } = benchArgs(import.meta.url, {
  baseline: { type: "string" },
  rounds: { type: "string" },
  requests: { type: "string" },
  models: { type: "string" },
  floor: { type: "boolean" },
});
if (flags.baseline === undefined) throw new TypeError("--baseline DIR (a checkout with main.ts) is required");
const rounds = Number(flags.rounds ?? 20);
const requests = Number(flags.requests ?? 100);
if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError("--rounds must be a positive integer");
if (!Number.isInteger(requests) || requests < 10) throw new RangeError("--requests must be 10 or more");
const which = (flags.models ?? "cls,example").split(",");

const median = (values: number[]) => quantile([...values].sort((a, b) => a - b), 0.5);

/** CPU time (user + system) of a process's main thread, its event loop, in milliseconds. */
function mainThreadCpuMs(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/stat`).split(") ")[1].split(" ");
  // utime and stime, fields 14 and 15 of stat(5), in clock ticks (USER_HZ, 100 on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const cls = (await fetchModels()).find((m) => m.name === "ocr-cls")!;
const clsShape = cls.shape.map((d) => (d === -1 ? 1 : d));
const args = [
  "--model",
  "example=builtin:example",
  "--model",
  `cls=${cls.file}`,
  "--input-shape",
  `${cls.input}=${cls.shape.join("x")}`,
  "--concurrency",
  "1",
];
Deno.env.set("SPINDLE_LIB", libraryPath());
const baselineMain = `${flags.baseline.replace(/\/$/, "")}/main.ts`;
const baselineFloor = `${flags.baseline.replace(/\/$/, "")}/bench/serve_floor.ts`;
const servers = flags.floor
  ? [
    { name: "baseline", server: await startServe([], [baselineFloor]) },
    { name: "new", server: await startServe([], ["bench/serve_floor.ts"]) },
  ]
  : [
    { name: "baseline", server: await startServe(args, [baselineMain, "serve", "--port", "0"]) },
    { name: "new", server: await startServe(args) },
  ];
/** `answer`: the bytes of the server's binary response, the floor's answer. */
const cases = [
  { name: "example", input: "input0", shape: [64, 1024], answer: 262_296 },
  { name: "cls", input: cls.input, shape: clsShape, answer: 155 },
].filter((c) => which.includes(c.name));
const us = (ms: number) => (ms * 1000).toFixed(0);
console.log(`load average at start: ${Deno.loadavg().map((l) => l.toFixed(2)).join(", ")}`);
for (const c of cases) {
  const input = randn(c.shape, { seed: 1 });
  const request = binaryBody([{ name: c.input, shape: c.shape, data: input.toArray() as Float32Array }]);
  input.dispose();
  const clients = await Promise.all(
    servers.map(({ server }) =>
      LeanClient.open(
        flags.floor ? `${server.url}/${c.answer}` : `${server.url}/v2/models/${c.name}/infer`,
        request.body,
        {
          "inference-header-content-length": request.header,
        },
      )
    ),
  );
  const p50s: number[][] = [[], []];
  /** Each block's mean: collections triggered every few hundred requests move it, not the p50. */
  const means: number[][] = [[], []];
  const cpu = [0, 0];
  for (let round = -1; round < rounds; round++) {
    for (let k = 0; k < 2; k++) {
      const side = (round + k + 2) % 2;
      const pid = servers[side].server.child.pid;
      const before = mainThreadCpuMs(pid);
      const times: number[] = [];
      for (let i = 0; i < requests; i++) {
        const begin = performance.now();
        const answer = await clients[side].post();
        times.push(performance.now() - begin);
        if (answer.status !== 200 || (flags.floor && answer.bytes !== c.answer)) {
          throw new Error(`${servers[side].name} ${c.name}: status ${answer.status}, ${answer.bytes} bytes`);
        }
      }
      if (round < 0) continue; // a warm-up round
      cpu[side] += mainThreadCpuMs(pid) - before;
      p50s[side].push(median(times));
      means[side].push(times.reduce((sum, t) => sum + t, 0) / times.length);
    }
  }
  for (const client of clients) client.close();
  const paired = p50s[1].map((t, i) => t - p50s[0][i]);
  const faster = paired.filter((d) => d < 0).length;
  const pairedMeans = means[1].map((t, i) => t - means[0][i]);
  console.log(
    `${c.name}${flags.floor ? " floor" : ""}: p50 baseline ${us(median(p50s[0]))} µs, new ${
      us(median(p50s[1]))
    } µs; paired (new - baseline) ` +
      `${us(median(paired))} µs, new faster in ${faster} of ${rounds} rounds; mean baseline ` +
      `${us(median(means[0]))} µs, new ${us(median(means[1]))} µs, paired ${us(median(pairedMeans))} µs, new ` +
      `lower in ${pairedMeans.filter((d) => d < 0).length} of ${rounds}; event-loop CPU per request ` +
      `baseline ${us(cpu[0] / (rounds * requests))} µs, new ${us(cpu[1] / (rounds * requests))} µs; ` +
      `load average ${Deno.loadavg().map((l) => l.toFixed(2)).join(", ")}`,
  );
}
for (const { server } of servers) await server.stop();

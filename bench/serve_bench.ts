/**
 * `deno task bench:serve`: `spindle serve` under load, on loopback, with servers in
 * subprocesses (as deployed) and a bounded load generator here (fetch, C workers, binary
 * tensors).
 *
 * 1. Overhead: p50 of in-process `forwardAll` vs p50 of the same request through the server
 *    at concurrency 1 with binary tensors, for builtin:example and the PaddleOCR classifier,
 *    measured in the same run, interleaved; the request is sent both by a lean keep-alive
 *    HTTP/1.1 client (standing in for perf_analyzer) and by `fetch`. The floor under it is
 *    measured alongside: the same bytes to a bare `Deno.serve` (bench/serve_floor.ts) that
 *    answers as many bytes; and the CPU time of each server's event-loop thread per request.
 *    Then back to back, in rounds of blocks: in-process forwards; the same forwards each timed
 *    alone after one floor exchange; the floor alone; lean-client requests; a perf_analyzer
 *    window. The served p50 splits into the forward as it runs after an exchange, the floor,
 *    and the rest (what the server's own work adds). bench/serve_probe.ts goes further
 *    (forward on the JavaScript thread vs the pool, CPU time and context switches).
 * 2. Load: the classifier and the tiny test model at concurrency 1…64, `--requests` each
 *    (default 750: 21,000 in all), with dynamic batching off and on (--max-batch 16); latency
 *    percentiles, throughput and the mean batch size (from /metrics) to
 *    bench/results/serve_load.csv, and bench/results/serve_load_{cls,tiny}.svg (throughput vs
 *    p99, one point per concurrency).
 * 3. The same load from Triton's perf_analyzer (fetched into .cache/perf-analyzer by
 *    tools/fetch_perf_analyzer.ts; skipped with the reason printed when it cannot be): 3+
 *    windows of `--requests`/3 requests per concurrency level and mode, stable within 25%, to
 *    bench/results/serve_perf_analyzer.csv and serve_perf_analyzer_{cls,tiny}.svg.
 * 4. Bad input: 30,000 random mutations (`--mutations`) of valid JSON and binary requests to
 *    the test model; every answer must be 200 or a JSON {error}; the server's RSS, V8 heap and
 *    live tensors are sampled as it goes (V8 grows its heap reservation over the first ~20,000
 *    requests of any kind, valid ones too, then RSS holds).
 *
 * Prints a summary, also written to bench/results/serve_bench.txt.
 *
 * @module
 */
import { parse } from "../lib/cli/usage.ts";
import { quantile } from "../lib/cli/infer.ts";
import { builtinModel } from "../lib/models/builtin.ts";
import { load } from "../lib/module.ts";
import { randn } from "../lib/tensor.ts";
import { fetchModels } from "../tools/fetch_models.ts";
import { type PerfAnalyzer, perfAnalyzer } from "../tools/fetch_perf_analyzer.ts";
import { mutate, random, writeTestModel } from "../tests/serve/fixture.ts";
import { renderSvg } from "./plot.ts";
import { binaryBody, LeanClient, type Server, startServe } from "./serve_client.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const RESULTS = `${ROOT}/bench/results`;

interface Run {
  latencies: number[];
  errors: number;
  elapsedMs: number;
}

/** `requests` requests from `concurrency` workers; each response is read whole and checked. */
async function drive(
  url: string,
  request: { body: Uint8Array<ArrayBuffer>; header: string } | null,
  requests: number,
  concurrency: number,
  expectBytes: number,
): Promise<Run> {
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < requests) {
      next++;
      const begin = performance.now();
      try {
        const response = request === null ? await fetch(url) : await fetch(url, {
          method: "POST",
          body: request.body,
          headers: { "inference-header-content-length": request.header },
        });
        const bytes = await response.arrayBuffer();
        if (response.status !== 200 || bytes.byteLength < expectBytes) errors++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - begin);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { latencies, errors, elapsedMs: performance.now() - started };
}

function p50(samples: number[]): number {
  return quantile([...samples].sort((a, b) => a - b), 0.5);
}

async function metric(url: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(text.match(pattern)?.[1] ?? 0);
}

/** RSS, V8 heap reserved and used (MiB) and live tensors of a server, for the bad-input run. */
async function memory(server: Server): Promise<string> {
  const mib = async (name: string) =>
    (await metric(server.url, new RegExp(`^${name} (\\d+)$`, "m")) / 2 ** 20).toFixed(1);
  const total = await mib("spindle_js_heap_total_bytes");
  const used = await mib("spindle_js_heap_used_bytes");
  const tensors = await metric(server.url, /^spindle_live_tensors (\d+)$/m);
  return `${(rssKiB(server.child.pid) / 1024).toFixed(1)} (${total}/${used}, ${tensors})`;
}

/** The mean of a model's histogram in /metrics (its sum over its count). */
async function histogramMean(url: string, name: string, model: string): Promise<number> {
  const sum = await metric(url, new RegExp(`^${name}_sum\\{model="${model}"\\} (\\S+)$`, "m"));
  return sum / await metric(url, new RegExp(`^${name}_count\\{model="${model}"\\} (\\d+)$`, "m"));
}

/** CPU time (user + system) of a process's main thread, its event loop, in milliseconds. */
function mainThreadCpuMs(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/task/${pid}/stat`).split(") ")[1].split(" ");
  // utime and stime, fields 14 and 15 of stat(5), in clock ticks (USER_HZ, 100 on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(status.match(/^VmRSS:\s+(\d+) kB$/m)?.[1]);
}

const { values } = parse(Deno.args, {
  requests: { type: "string" },
  mutations: { type: "string" },
  "overhead-runs": { type: "string" },
  phases: { type: "string" },
});
/** Which phases to run (default all): overhead, load, perf, bad. */
const phases = new Set((values.phases ?? "overhead,load,perf,bad").split(","));
const perLevel = Number(values.requests ?? 750);
const mutations = Number(values.mutations ?? 30_000);
const overheadRuns = Number(values["overhead-runs"] ?? 300);
const LEVELS = [1, 2, 4, 8, 16, 32, 64];
const summary: string[] = [];
const say = (line: string) => {
  console.log(line);
  summary.push(line);
};

const cls = (await fetchModels()).find((m) => m.name === "ocr-cls")!;
const clsShape = cls.shape.map((d) => (d === -1 ? 1 : d));
const clsArgs = ["--model", `cls=${cls.file}`, "--input-shape", `${cls.input}=${cls.shape.join("x")}`];

// 1. Overhead at concurrency 1, binary tensors. In-process forwards and served requests are
// interleaved one for one, so that the load other processes put on the machine hits both alike.
if (phases.has("overhead")) {
  say(
    `# serve overhead: p50 over ${overheadRuns} requests at concurrency 1, binary tensors, interleaved ` +
      `(in-process forward, lean HTTP client, fetch)`,
  );
  const example = builtinModel("example");
  const clsModule = await load(cls.file, { inputShapes: { [cls.input]: cls.shape } });
  const exampleInput = randn([64, 1024], { seed: 1 });
  const clsInput = randn(clsShape, { seed: 2 });
  const server = await startServe(["--model", "example=builtin:example", ...clsArgs, "--concurrency", "1"]);
  const floor = await startServe([], ["bench/serve_floor.ts", "--stack", "http1"]);
  const denoFloor = await startServe([], ["bench/serve_floor.ts", "--stack", "deno"]);
  const health = await drive(`${server.url}/v2/health/live`, null, overheadRuns, 1, 0);
  say(`HTTP floor: GET /v2/health/live p50 ${(p50(health.latencies) * 1000).toFixed(0)} µs (fetch)`);
  const cases = [
    { name: "example", input: "input0", module: example.module, tensor: exampleInput, out: 64 * 1024 * 4 },
    { name: "cls", input: cls.input, module: clsModule, tensor: clsInput, out: 2 * 4 },
  ];
  const us = (ms: number) => (ms * 1000).toFixed(0);
  for (const c of cases) {
    const request = binaryBody([{
      name: c.input,
      shape: [...c.tensor.shape],
      data: c.tensor.toArray() as Float32Array,
    }]);
    const url = `${server.url}/v2/models/${c.name}/infer`;
    const lean = await LeanClient.open(url, request.body, { "inference-header-content-length": request.header });
    // The floor: the same request bytes to a bare server on the server's HTTP layer, and to a
    // bare Deno.serve, each answering as many bytes as the server does.
    const answerBytes = (await lean.post()).bytes;
    const bare = await LeanClient.open(`${floor.url}/${answerBytes}`, request.body, {
      "inference-header-content-length": request.header,
    });
    const bareDeno = await LeanClient.open(`${denoFloor.url}/${answerBytes}`, request.body, {
      "inference-header-content-length": request.header,
    });
    const local: number[] = [];
    const leanServed: number[] = [];
    const floorServed: number[] = [];
    const denoFloorServed: number[] = [];
    const fetchServed: number[] = [];
    let errors = 0;
    // The five steps rotate, so that none always runs right after another (a forward leaves
    // caches cold and the pool's threads briefly spinning for whatever runs next).
    const steps: [number[], () => Promise<void>][] = [
      [local, async () => (await c.module.forwardAll(c.tensor)).forEach((t) => t.dispose())],
      [leanServed, async () => {
        const answer = await lean.post();
        if (answer.status !== 200 || answer.bytes < c.out) errors++;
      }],
      [floorServed, async () => {
        const answer = await bare.post();
        if (answer.status !== 200 || answer.bytes !== answerBytes) errors++;
      }],
      [denoFloorServed, async () => {
        const answer = await bareDeno.post();
        if (answer.status !== 200 || answer.bytes !== answerBytes) errors++;
      }],
      [fetchServed, async () => void (errors += (await drive(url, request, 1, 1, c.out)).errors)],
    ];
    let cpuBefore = [0, 0];
    for (let i = 0; i < overheadRuns + 20; i++) {
      if (i === 20) cpuBefore = [mainThreadCpuMs(server.child.pid), mainThreadCpuMs(floor.child.pid)];
      for (let k = 0; k < steps.length; k++) {
        const [samples, step] = steps[(i + k) % steps.length];
        const begin = performance.now();
        await step();
        if (i >= 20) samples.push(performance.now() - begin);
      }
    }
    // The server answered two requests per round (lean client and fetch), the floor one.
    const serverCpu = (mainThreadCpuMs(server.child.pid) - cpuBefore[0]) / (2 * overheadRuns);
    const floorCpu = (mainThreadCpuMs(floor.child.pid) - cpuBefore[1]) / overheadRuns;
    lean.close();
    bare.close();
    bareDeno.close();
    const compute = await histogramMean(server.url, "spindle_compute_seconds", c.name);
    const whole = await histogramMean(server.url, "spindle_request_seconds", c.name);
    const [base, viaLean, viaFloor, viaFetch] = [p50(local), p50(leanServed), p50(floorServed), p50(fetchServed)];
    // Paired: the p50 of each round's own difference, steadier than a difference of p50s
    // while the load others put on the machine drifts.
    const added = p50(leanServed.map((t, i) => t - local[i]));
    const aboveFloor = p50(leanServed.map((t, i) => t - local[i] - floorServed[i]));
    say(
      `${c.name}: in-process forward p50 ${us(base)} µs; served p50 ${us(viaLean)} µs with a lean client ` +
        `(added ${us(viaLean - base)} µs, paired p50 ${us(added)} µs); the floor, a bare server on the same ` +
        `HTTP layer reading ${request.body.byteLength} B and answering ${answerBytes} B, p50 ${us(viaFloor)} µs ` +
        `(a bare Deno.serve: ${us(p50(denoFloorServed))} µs), so the server adds ${us(aboveFloor)} µs above it ` +
        `(paired p50); ${us(viaFetch)} µs with fetch (added ` +
        `${us(viaFetch - base)} µs); CPU of the event-loop thread per request: server ${us(serverCpu)} µs, ` +
        `floor ${us(floorCpu)} µs; in the server, forward with tensors in and out took ${us(compute * 1000)} µs ` +
        `on average and the whole request (body read, parse, forward, encode) ${us(whole * 1000)} µs; ` +
        `${errors} errors`,
    );
  }
  // Back to back: rounds of blocks (in-process forwards, then as many requests from the lean
  // client, then a window of the same requests from perf_analyzer, the C++ client the issue's
  // users run), so that each side runs with its own data warm in cache, as a steady stream
  // of requests or of in-process calls does; the rotation above instead leaves every step
  // after another one's memory traffic.
  let tool: PerfAnalyzer | undefined;
  try {
    tool = await perfAnalyzer();
  } catch (error) {
    say(`# perf_analyzer overhead: skipped, ${(error as Error).message}`);
  }
  for (const c of cases) {
    const request = binaryBody([{
      name: c.input,
      shape: [...c.tensor.shape],
      data: c.tensor.toArray() as Float32Array,
    }]);
    const lean = await LeanClient.open(`${server.url}/v2/models/${c.name}/infer`, request.body, {
      "inference-header-content-length": request.header,
    });
    const answerBytes = (await lean.post()).bytes;
    const bare = await LeanClient.open(`${floor.url}/${answerBytes}`, request.body, {
      "inference-header-content-length": request.header,
    });
    const local: number[] = [];
    const afterExchange: number[] = [];
    const floorServed: number[] = [];
    const leanServed: number[] = [];
    const toolServed: number[] = [];
    /** Runs `step` overheadRuns times; a step that returns a time (ms) is timed by itself. */
    const block = async (samples: number[], step: () => Promise<number | void>) => {
      const times: number[] = [];
      for (let i = 0; i < overheadRuns; i++) {
        const begin = performance.now();
        const own = await step();
        times.push(typeof own === "number" ? own : performance.now() - begin);
      }
      samples.push(p50(times));
    };
    const forward = async () => (await c.module.forwardAll(c.tensor)).forEach((t) => t.dispose());
    for (let round = 0; round < 3; round++) {
      await block(local, forward);
      // The same forward, timed alone, with one floor exchange (the request's bytes through
      // loopback to the bare server and its answer back) between forwards: what a forward
      // costs when an HTTP exchange, not another forward, ran before it.
      await block(afterExchange, async () => {
        const begin = performance.now();
        await forward();
        const took = performance.now() - begin;
        await bare.post();
        return took;
      });
      await block(floorServed, async () => void (await bare.post()));
      await block(leanServed, async () => {
        if ((await lean.post()).status !== 200) throw new Error(`${c.name}: a served request failed`);
      });
      if (tool !== undefined) {
        const shape = `${c.input}:${c.tensor.shape.join(",")}`;
        const p50Ms = await perfAnalyzerP50(tool, c.name, server.url, shape, overheadRuns);
        if (p50Ms !== null) toolServed.push(p50Ms);
      }
    }
    lean.close();
    bare.close();
    const rounds = (values: number[]) => values.map(us).join(", ");
    const base = p50(local);
    const [after, bareP50, served] = [p50(afterExchange), p50(floorServed), p50(leanServed)];
    say(
      `${c.name}, back to back: 3 rounds of ${overheadRuns} in-process forwards (p50 ${us(base)} µs; rounds ` +
        `${rounds(local)}), as many forwards each after a floor exchange, timed alone (p50 ${us(after)} µs; ` +
        `rounds ${rounds(afterExchange)}), the floor alone (p50 ${us(bareP50)} µs), then as many lean-client ` +
        `requests (p50 ${us(served)} µs, added ${us(served - base)} µs: the forward after an exchange ` +
        `${us(after - base)}, the floor ${us(bareP50)}, the rest ${us(served - after - bareP50)}; rounds ` +
        `${rounds(leanServed)})` +
        (toolServed.length === 0 ? "" : `, then a perf_analyzer window (p50 ${us(p50(toolServed))} µs, added ` +
          `${us(p50(toolServed) - base)} µs; rounds ${rounds(toolServed)})`),
    );
  }
  say(`floor server exit code ${await floor.stop()}, Deno.serve floor ${await denoFloor.stop()}`);
  say(`server exit code ${await server.stop()}`);
  exampleInput.dispose();
  clsInput.dispose();
  example.dispose();
  clsModule.dispose();
}

/**
 * perf_analyzer's p50 latency (ms) over one window of `requests` requests at concurrency 1
 * to `model` (zero inputs of `shape`, "name:d0,d1,…"); null when it found no stable window.
 */
async function perfAnalyzerP50(
  tool: PerfAnalyzer,
  model: string,
  url: string,
  shape: string,
  requests: number,
): Promise<number | null> {
  const csv = await Deno.makeTempFile({ suffix: ".csv" });
  try {
    const output = await new Deno.Command(tool.binary, {
      args: [
        ...["-m", model, "-u", url.replace("http://", ""), "-i", "http", "--concurrency-range", "1:1"],
        ...["--measurement-mode", "count_windows", "--measurement-request-count", String(requests)],
        ...["--stability-percentage", "100", "--max-trials", "3", "--input-data", "zero", "--shape", shape],
        ...["-f", csv],
      ],
      env: tool.env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    if (/error/i.test(text) && !/Failed to obtain stable measurement/.test(text)) {
      throw new Error(`perf_analyzer reported an error: ${text.trim().split("\n").slice(-4).join(" ")}`);
    }
    const table = (await Deno.readTextFile(csv).catch(() => "")).trim().split("\n");
    if (table.length < 2) return null;
    const header = table[0].split(",");
    return Number(table[1].split(",")[header.indexOf("p50 latency")]) / 1000;
  } finally {
    await Deno.remove(csv).catch(() => {});
  }
}

// 2. Load at concurrency 1…64, batching off and on: the classifier (forward ≈ 1–3 ms), and the
// tiny test model (forward ≈ 0.1 ms), where per-request costs dominate and batching has most to win.
const rows: string[] = [
  "model,batching,concurrency,requests,errors,p50_ms,p90_ms,p99_ms,throughput_per_s,mean_batch",
];
let total = 0;
let totalErrors = 0;
if (phases.has("load")) {
  const clsData = randn(clsShape, { seed: 3 });
  const tinyPath = await writeTestModel();
  const workloads = [
    {
      model: "cls",
      title: "PaddleOCR classifier",
      args: clsArgs,
      request: binaryBody([{ name: cls.input, shape: clsShape, data: clsData.toArray() as Float32Array }]),
      outBytes: 8,
    },
    {
      model: "tiny",
      title: "tiny test model",
      args: ["--model", `tiny=${tinyPath}`],
      request: binaryBody([
        { name: "x", shape: [1, 4], data: new Float32Array([0.5, -1, 2, 3]) },
        { name: "ids", shape: [1, 2], data: new BigInt64Array([1n, 2n]) },
      ]),
      outBytes: 3 * 4,
    },
  ];
  clsData.dispose();
  const MODES = ["off", "on"] as const;
  const ROUNDS = 3;
  for (const workload of workloads) {
    // Both servers run side by side and each concurrency level alternates between them in
    // rounds, so the load others put on the machine meanwhile falls on both modes alike.
    const servers = [];
    for (const batching of MODES) {
      const extra = batching === "on" ? ["--max-batch", "16", "--batch-delay-us", "0"] : [];
      const server = await startServe([...workload.args, "--queue", "256", ...extra]);
      await drive(`${server.url}/v2/models/${workload.model}/infer`, workload.request, 50, 4, workload.outBytes);
      servers.push(server);
    }
    say(`# load, ${workload.model}: batching off, and on with --max-batch 16 --batch-delay-us 0; ${ROUNDS} rounds`);
    const count = new RegExp(`^spindle_batch_size_count\\{model="${workload.model}"\\} (\\d+)$`, "m");
    const sum = new RegExp(`^spindle_batch_size_sum\\{model="${workload.model}"\\} (\\d+)$`, "m");
    const points: [number, number][][] = [[], []];
    for (const concurrency of LEVELS) {
      const latencies: number[][] = [[], []];
      const elapsed = [0, 0];
      const errors = [0, 0];
      const forwards = [0, 0];
      const stacked = [0, 0];
      const share = Math.ceil(perLevel / ROUNDS);
      for (let round = 0; round < ROUNDS; round++) {
        for (const [m, server] of servers.entries()) {
          const [forwardsBefore, stackedBefore] = [await metric(server.url, count), await metric(server.url, sum)];
          const run = await drive(
            `${server.url}/v2/models/${workload.model}/infer`,
            workload.request,
            share,
            concurrency,
            workload.outBytes,
          );
          forwards[m] += await metric(server.url, count) - forwardsBefore;
          stacked[m] += await metric(server.url, sum) - stackedBefore;
          latencies[m].push(...run.latencies);
          elapsed[m] += run.elapsedMs;
          errors[m] += run.errors;
        }
      }
      const line: string[] = [];
      for (const [m, batching] of MODES.entries()) {
        const sorted = latencies[m].sort((a, b) => a - b);
        const [p50, p90, p99] = [0.5, 0.9, 0.99].map((q) => quantile(sorted, q));
        const requests = sorted.length;
        const throughput = (requests / elapsed[m]) * 1000;
        const meanBatch = forwards[m] > 0 ? stacked[m] / forwards[m] : 0;
        total += requests;
        totalErrors += errors[m];
        rows.push(
          [workload.model, batching, concurrency, requests, errors[m], p50, p90, p99, throughput, meanBatch]
            .map((v) => (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : String(v))).join(","),
        );
        points[m].push([p99, throughput]);
        line.push(
          `${batching}: p50 ${p50.toFixed(2)}, p90 ${p90.toFixed(2)}, p99 ${p99.toFixed(2)} ms, ` +
            `${throughput.toFixed(0)} req/s, batch ${meanBatch.toFixed(2)}, ${errors[m]} errors`,
        );
      }
      say(`c=${String(concurrency).padStart(2)}: ${line.join(" | ")}`);
    }
    for (const server of servers) say(`server exit code ${await server.stop()}`);
    await Deno.writeTextFile(
      `${RESULTS}/serve_load_${workload.model}.svg`,
      renderSvg({
        title: `spindle serve, ${workload.title}: throughput vs p99, one point per concurrency 1…64`,
        xLabel: "p99 latency (ms)",
        yLabel: "throughput (requests/s)",
        series: MODES.map((batching, m) => ({ label: `batching ${batching}`, points: points[m] })),
      }),
    );
  }
  await Deno.remove(tinyPath);
  say(`load total: ${total} requests, ${totalErrors} errors`);
  await Deno.writeTextFile(`${RESULTS}/serve_load.csv`, rows.join("\n") + "\n");
}

// 3. Bad input: random mutations of valid requests; well-formed answers, flat RSS.
// 3. The same load from Triton's own load tester, perf_analyzer (C++, libcurl, binary tensors,
// synchronous requests from `concurrency` threads), fetched by tools/fetch_perf_analyzer.ts.
if (phases.has("perf")) {
  let tool: PerfAnalyzer | undefined;
  try {
    tool = await perfAnalyzer();
  } catch (error) {
    say(`# perf_analyzer: skipped, ${(error as Error).message}`);
  }
  if (tool !== undefined) {
    const perfRows = ["model,batching,concurrency,requests,throughput_per_s,p50_ms,p90_ms,p99_ms,stable"];
    const tinyPath = await writeTestModel();
    const workloads = [
      { model: "cls", title: "PaddleOCR classifier", args: clsArgs, shapes: { [cls.input]: clsShape } },
      {
        model: "tiny",
        title: "tiny test model",
        args: ["--model", `tiny=${tinyPath}`],
        shapes: { x: [1, 4], ids: [1, 2] },
      },
    ];
    const MODES = ["off", "on"] as const;
    const windowRequests = Math.max(100, Math.ceil(perLevel / 3));
    for (const workload of workloads) {
      const servers = [];
      for (const batching of MODES) {
        const extra = batching === "on" ? ["--max-batch", "16", "--batch-delay-us", "0"] : [];
        servers.push(await startServe([...workload.args, "--queue", "256", ...extra]));
      }
      say(
        `# perf_analyzer, ${workload.model}: batching off, and on with --max-batch 16; 3+ windows of ` +
          `${windowRequests} requests per concurrency, zero inputs`,
      );
      const points: [number, number][][] = [[], []];
      for (const concurrency of LEVELS) {
        const line: string[] = [];
        for (const [m, batching] of MODES.entries()) {
          // With batching on the model's config has max_batch_size 16: shapes leave out dim 0.
          const shapes = Object.entries(workload.shapes).map(([name, shape]) =>
            `${name}:${(batching === "on" ? shape.slice(1) : shape).join(",")}`
          );
          const csv = await Deno.makeTempFile({ suffix: ".csv" });
          const output = await new Deno.Command(tool.binary, {
            args: [
              "-m",
              workload.model,
              "-u",
              servers[m].url.replace("http://", ""),
              "-i",
              "http",
              "--concurrency-range",
              `${concurrency}:${concurrency}`,
              "--measurement-mode",
              "count_windows",
              "--measurement-request-count",
              String(windowRequests),
              "--stability-percentage",
              "25",
              "--max-trials",
              "6",
              "--input-data",
              "zero",
              ...shapes.flatMap((shape) => ["--shape", shape]),
              "-f",
              csv,
            ],
            env: tool.env,
            stdout: "piped",
            stderr: "piped",
          }).output();
          const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
          const table = (await Deno.readTextFile(csv).catch(() => "")).trim().split("\n");
          await Deno.remove(csv).catch(() => {});
          const requests = Number(text.match(/Request count: (\d+)/)?.[1] ?? 0);
          if (/error/i.test(text) && !/Failed to obtain stable measurement/.test(text)) {
            throw new Error(`perf_analyzer reported an error: ${text.trim().split("\n").slice(-4).join(" ")}`);
          }
          total += requests;
          if (table.length < 2) {
            // Windows kept disagreeing by more than 25% (a busy machine): no figure for this level.
            perfRows.push([workload.model, batching, concurrency, requests, "", "", "", "", "no"].join(","));
            line.push(`${batching}: not stable`);
            continue;
          }
          const header = table[0].split(",");
          const values = table[1].split(",").map(Number);
          const column = (name: string) => values[header.indexOf(name)];
          const throughput = column("Inferences/Second");
          const [p50, p90, p99] = ["p50 latency", "p90 latency", "p99 latency"].map((c) => column(c) / 1000);
          perfRows.push(
            [workload.model, batching, concurrency, requests, throughput.toFixed(1), p50, p90, p99, "yes"].join(","),
          );
          points[m].push([p99, throughput]);
          line.push(
            `${batching}: p50 ${p50.toFixed(2)}, p90 ${p90.toFixed(2)}, p99 ${p99.toFixed(2)} ms, ` +
              `${throughput.toFixed(0)} req/s (${requests} requests)`,
          );
        }
        say(`c=${String(concurrency).padStart(2)}: ${line.join(" | ")}`);
      }
      for (const server of servers) say(`server exit code ${await server.stop()}`);
      await Deno.writeTextFile(
        `${RESULTS}/serve_perf_analyzer_${workload.model}.svg`,
        renderSvg({
          title: `spindle serve under perf_analyzer, ${workload.title}: throughput vs p99, concurrency 1…64`,
          xLabel: "p99 latency (ms)",
          yLabel: "throughput (requests/s)",
          series: MODES.map((batching, m) => ({ label: `batching ${batching}`, points: points[m] })),
        }),
      );
    }
    await Deno.writeTextFile(`${RESULTS}/serve_perf_analyzer.csv`, perfRows.join("\n") + "\n");
  }
}

if (phases.has("bad")) {
  const path = await writeTestModel();
  const server = await startServe(["--model", `m=${path}`, "--max-body", "64K", "--timeout-ms", "2000"]);
  const url = `${server.url}/v2/models/m/infer`;
  const x = new Float32Array([0.5, -1.25, 3, 2e-7, -0.1, 7, 1 / 3, -4]);
  const ids = new BigInt64Array([1n, 9n, 0n, 4n]);
  const json = new TextEncoder().encode(JSON.stringify({
    inputs: [
      { name: "x", datatype: "FP32", shape: [2, 4], data: Array.from(x) },
      { name: "ids", datatype: "INT64", shape: [2, 2], data: Array.from(ids, Number) },
    ],
  }));
  const header = new TextEncoder().encode(JSON.stringify({
    inputs: [
      { name: "x", datatype: "FP32", shape: [2, 4], parameters: { binary_data_size: 32 } },
      { name: "ids", datatype: "INT64", shape: [2, 2], parameters: { binary_data_size: 32 } },
    ],
    parameters: { binary_data_output: true },
  }));
  const binary = new Uint8Array([...header, ...new Uint8Array(x.buffer), ...new Uint8Array(ids.buffer)]);
  const valid = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const response = await fetch(url, { method: "POST", body: json });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`a valid request got ${response.status}`);
    }
  };
  await valid(300);
  const rssBefore = rssKiB(server.child.pid);
  const next = random(1000);
  const statuses = new Map<number, number>();
  let malformed = 0;
  const started = performance.now();
  const rssSeries: string[] = [];
  for (let i = 0; i < mutations; i++) {
    if (i % Math.max(1, Math.floor(mutations / 6)) === 0) rssSeries.push(await memory(server));
    const useBinary = next() < 0.5;
    const { body, header: length } = mutate(next, useBinary ? binary : json, useBinary ? header.byteLength : null);
    const response = await fetch(url, {
      method: "POST",
      body: body as Uint8Array<ArrayBuffer>,
      headers: length === undefined ? {} : { "inference-header-content-length": length },
    });
    statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (response.status !== 200) {
      try {
        if (typeof JSON.parse(new TextDecoder().decode(bytes)).error !== "string") malformed++;
      } catch {
        malformed++;
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;
  await valid(300);
  const rssAfter = rssKiB(server.child.pid);
  rssSeries.push(await memory(server));
  say(
    `# bad input: ${mutations} mutations in ${seconds.toFixed(1)} s, statuses ${
      JSON.stringify(Object.fromEntries(statuses))
    }, ${malformed} malformed answers; server RSS ${(rssBefore / 1024).toFixed(1)} → ${
      (rssAfter / 1024).toFixed(1)
    } MiB (every ${Math.max(1, Math.floor(mutations / 6))} mutations: RSS (V8 heap reserved/used, live tensors) ${
      rssSeries.join(", ")
    } MiB); valid requests still served`,
  );
  say(`server exit code ${await server.stop()}`);
  await Deno.remove(path);
}

if (phases.size === 4) await Deno.writeTextFile(`${RESULTS}/serve_bench.txt`, summary.join("\n") + "\n");

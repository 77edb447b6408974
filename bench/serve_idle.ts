/**
 * What an HTTP exchange costs after the server has been idle, for the request bytes of
 * builtin:example (262 KB each way) and the PaddleOCR classifier:
 *
 *   deno run -A bench/serve_idle.ts [--requests 400] [--pause-ms 2] [--models cls,example]
 *
 * The floor (bench/serve_floor.ts: the request's bytes to a bare server on serve's HTTP layer
 * and as many bytes back as the server's binary response) and the served request
 * (`main.ts serve --concurrency 1`), each timed right after another exchange with the same
 * server, after an in-process forward here, after a forward and a pause, and after a pause
 * alone, the four in rotation. bench:serve's interleaved phase finds its floor about twice its
 * back-to-back floor; this says whether the forward run in between (its memory traffic, its
 * pool's spinning threads) or only the time the server waited (its thread asleep; on a virtual
 * machine an idle vCPU halts, and waking it costs an exit to the host) makes the difference.
 * Prints the p50 of each; nothing is written.
 *
 * @module
 */
import { quantile } from "../lib/cli/infer.ts";
import { fetchModels } from "../tools/fetch_models.ts";
import { benchArgs } from "./args.ts";
import { binaryBody, LeanClient, modelCases, startServe } from "./serve_client.ts";

const { values: flags } = benchArgs(import.meta.url, {
  requests: { type: "string" },
  "pause-ms": { type: "string" },
  models: { type: "string" },
});
const requests = Number(flags.requests ?? 400);
const pauseMs = Number(flags["pause-ms"] ?? 2);
if (!Number.isInteger(requests) || requests < 10) throw new RangeError("--requests must be 10 or more");
if (!(pauseMs >= 0)) throw new RangeError("--pause-ms must be a number of milliseconds, 0 or more");
const which = (flags.models ?? "cls,example").split(",");

const cls = (await fetchModels()).find((m) => m.name === "ocr-cls")!;
const server = await startServe([
  ...["--model", "example=builtin:example", "--model", `cls=${cls.file}`],
  ...["--input-shape", `${cls.input}=${cls.shape.join("x")}`, "--concurrency", "1"],
]);
const floor = await startServe([], ["bench/serve_floor.ts"]);
const models = await modelCases(cls, which);
const pause = () => new Promise((resolve) => setTimeout(resolve, pauseMs));
const us = (samples: number[]) => (quantile([...samples].sort((a, b) => a - b), 0.5) * 1000).toFixed(0);

console.log(`load average at start: ${Deno.loadavg().map((l) => l.toFixed(2)).join(", ")}`);
for (const c of models.cases) {
  const request = binaryBody([{ name: c.input, shape: [...c.tensor.shape], data: c.tensor.toArray() as Float32Array }]);
  const headers = { "inference-header-content-length": request.header };
  const served = await LeanClient.open(`${server.url}/v2/models/${c.name}/infer`, request.body, headers);
  const answerBytes = (await served.post()).bytes;
  const bare = await LeanClient.open(`${floor.url}/${answerBytes}`, request.body, headers);
  const forward = async () => (await c.module.forwardAll(c.tensor)).forEach((t) => t.dispose());
  const befores: [string, (client: LeanClient) => Promise<unknown>][] = [
    ["after an exchange", (client) => client.post()],
    ["after a forward", forward],
    [`after a forward and ${pauseMs} ms`, async () => (await forward(), await pause())],
    [`after ${pauseMs} ms`, pause],
  ];
  for (const [what, client] of [["floor", bare], ["served", served]] as const) {
    const samples: number[][] = befores.map(() => []);
    for (let i = 0; i < requests + 10; i++) {
      for (let k = 0; k < befores.length; k++) {
        const index = (i + k) % befores.length;
        await befores[index][1](client);
        const begin = performance.now();
        const answer = await client.post();
        if (answer.status !== 200) throw new Error(`${c.name} ${what}: status ${answer.status}`);
        if (i >= 10) samples[index].push(performance.now() - begin);
      }
    }
    console.log(
      `${c.name} ${what}: p50 ${befores.map(([name], k) => `${name} ${us(samples[k])} µs`).join(", ")}; ` +
        `load average ${Deno.loadavg().map((l) => l.toFixed(2)).join(", ")}`,
    );
  }
  served.close();
  bare.close();
}
await server.stop();
await floor.stop();
models.dispose();

/**
 * Spindle's side of bench/peers.ts: one process, JSON lines on stdin/stdout (the requests of
 * ort_worker.py). Spindle runs at its defaults except the intra-op thread count; each run is
 * `await model.forward(x)`, as an application calls it.
 *
 * @module
 */
import { builtinModel, load, type Module, setNumThreads, type Tensor, tensor } from "../../mod.ts";

const encoder = new TextEncoder();
let model: Module | null = null;
let inputs: Tensor[] = [];
let release: () => void = () => {};

async function handle(request: Record<string, unknown>): Promise<Record<string, unknown>> {
  switch (request.op) {
    case "load": {
      setNumThreads(request.threads as number);
      release();
      inputs.forEach((t) => t.dispose());
      const started = performance.now();
      if (typeof request.name === "string") {
        // A built-in (its default batch unless one is given), with its fixed-seed request.
        const built = builtinModel(request.name, { batch: request.batch as number | undefined });
        model = built.module;
        inputs = built.inputs();
        release = () => built.dispose();
        return { ok: true, load_ms: performance.now() - started };
      }
      const shape = request.shape as number[];
      // "bf16": Spindle's opt-in bf16 precision (bench/peers.ts's spindle-bf16 peer).
      const precision = request.precision === "bf16" ? "bf16" : "f32";
      const loaded = await load(request.model as string, {
        inputShapes: { [request.input as string]: shape },
        precision,
      });
      model = loaded;
      release = () => loaded.dispose();
      const loadMs = performance.now() - started;
      const bytes = await Deno.readFile(request.data as string);
      inputs = [tensor(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), shape)];
      return { ok: true, load_ms: loadMs };
    }
    case "throughput": {
      // `concurrency` callers, each awaiting one forward after another, as a server's
      // requests do; Spindle runs them on its inference threads (default split).
      const deadline = performance.now() + (request.duration_ms as number);
      let requests = 0;
      const caller = async () => {
        while (performance.now() < deadline) {
          (await model!.forward(...inputs)).dispose();
          requests++;
        }
      };
      const started = performance.now();
      await Promise.all(Array.from({ length: request.concurrency as number }, caller));
      return { ok: true, per_s: requests / ((performance.now() - started) / 1000), requests };
    }
    case "run": {
      const samples: number[] = [];
      const deadline = performance.now() + (request.min_ms as number);
      let checksum = 0;
      while (samples.length < (request.min_runs as number) || performance.now() < deadline) {
        const started = performance.now();
        const output = await model!.forward(...inputs);
        samples.push(performance.now() - started);
        if (performance.now() >= deadline && samples.length >= (request.min_runs as number)) {
          checksum = (output.toArray() as Float32Array).reduce((sum, v) => sum + v, 0);
        }
        output.dispose();
      }
      return { ok: true, samples, checksum };
    }
    default:
      return { ok: false, error: `unknown op ${request.op}` };
  }
}

let buffered = "";
const decoder = new TextDecoder();
for await (const chunk of Deno.stdin.readable) {
  buffered += decoder.decode(chunk, { stream: true });
  let newline: number;
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, newline);
    buffered = buffered.slice(newline + 1);
    if (line.trim() === "") continue;
    const request = JSON.parse(line);
    if (request.op === "quit") Deno.exit(0);
    const reply = await handle(request).catch((error) => ({ ok: false, error: String(error) }));
    await Deno.stdout.write(encoder.encode(JSON.stringify(reply) + "\n"));
  }
}

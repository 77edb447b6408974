/**
 * What bench/serve_bench.ts and bench/serve_probe.ts share: servers in subprocesses, binary
 * infer requests, and a lean keep-alive HTTP/1.1 client.
 *
 * @module
 */
import { builtinModel } from "../lib/models/builtin.ts";
import { load, type Module } from "../lib/module.ts";
import { randn, type Tensor } from "../lib/tensor.ts";
import type { RealModel } from "../tools/fetch_models.ts";

const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");

/** A server running in a subprocess. */
export interface Server {
  url: string;
  child: Deno.ChildProcess;
  stop(): Promise<number>;
}

/**
 * Starts `main.ts serve` with `args` on a free port (or another script that prints the same
 * line, such as bench/serve_floor.ts) and waits for its "listening" line.
 */
export async function startServe(args: string[], script = ["main.ts", "serve", "--port", "0"]): Promise<Server> {
  const [file, ...rest] = script;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", file.startsWith("/") ? file : `${ROOT}/${file}`, ...rest, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  let match: RegExpMatchArray | null = null;
  while ((match = log.match(/listening on (http:\/\/[\d.]+:\d+)/)) === null) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`serve did not start: ${log}`);
    log += value;
  }
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe flowing */ }
  })();
  return {
    url: match[1],
    child,
    async stop() {
      child.kill("SIGTERM");
      const status = await child.status;
      await drain;
      return status.code;
    },
  };
}

/** A binary infer request: every input as binary data, every output asked for as binary data. */
export function binaryBody(
  inputs: { name: string; shape: number[]; data: Float32Array | BigInt64Array }[],
): { body: Uint8Array<ArrayBuffer>; header: string } {
  const json = new TextEncoder().encode(JSON.stringify({
    inputs: inputs.map(({ name, shape, data }) => ({
      name,
      datatype: data instanceof Float32Array ? "FP32" : "INT64",
      shape,
      parameters: { binary_data_size: data.byteLength },
    })),
    parameters: { binary_data_output: true },
  }));
  const body = new Uint8Array(inputs.reduce((n, input) => n + input.data.byteLength, json.byteLength));
  body.set(json);
  let offset = json.byteLength;
  for (const { data } of inputs) {
    body.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
    offset += data.byteLength;
  }
  return { body, header: String(json.byteLength) };
}

/**
 * A lean HTTP/1.1 client: one keep-alive TCP connection, one write per request, the response
 * read until its Content-Length. It stands in for perf_analyzer's C++ client, whose binary
 * is not available here: `fetch` itself costs 100–200 µs per request on this machine (a
 * 110 KB POST to a Deno.serve echo takes ~240 µs with fetch, 40–66 µs with this client), which
 * would be counted as the server's.
 */
export class LeanClient {
  #conn: Deno.TcpConn;
  #buffer = new Uint8Array(1 << 16);
  /** The whole request, head and body, made once: a load generator sends prepared bytes. */
  #request: Uint8Array;
  #decoder = new TextDecoder();

  private constructor(conn: Deno.TcpConn, path: string, body: Uint8Array, headers: Record<string, string>) {
    this.#conn = conn;
    const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
    const head = new TextEncoder().encode(
      `POST ${path} HTTP/1.1\r\nhost: bench\r\ncontent-length: ${body.byteLength}\r\n${lines}\r\n`,
    );
    this.#request = new Uint8Array(head.byteLength + body.byteLength);
    this.#request.set(head);
    this.#request.set(body, head.byteLength);
  }

  /** Connects to `url` for POSTs of `body` with `headers`. */
  static async open(url: string, body: Uint8Array, headers: Record<string, string> = {}): Promise<LeanClient> {
    const { hostname, port, pathname } = new URL(url);
    const conn = await Deno.connect({ hostname, port: Number(port) });
    conn.setNoDelay(true);
    return new LeanClient(conn, pathname, body, headers);
  }

  /** Sends the request and reads the whole response; returns its status and body length. */
  async post(): Promise<{ status: number; bytes: number }> {
    const request = this.#request;
    for (let written = 0; written < request.byteLength;) written += await this.#conn.write(request.subarray(written));
    let filled = 0;
    let headEnd = -1;
    let length = 0;
    let status = 0;
    while (headEnd < 0 || filled < headEnd + length) {
      if (filled === this.#buffer.byteLength) {
        const grown = new Uint8Array(this.#buffer.byteLength * 2);
        grown.set(this.#buffer);
        this.#buffer = grown;
      }
      const n = await this.#conn.read(this.#buffer.subarray(filled));
      if (n === null) throw new Error("the server closed the connection");
      filled += n;
      if (headEnd < 0) {
        const text = this.#decoder.decode(this.#buffer.subarray(0, Math.min(filled, 8192)));
        const end = text.indexOf("\r\n\r\n");
        if (end < 0) continue;
        headEnd = end + 4;
        status = Number(text.slice(9, 12));
        const match = text.slice(0, end).match(/\r\ncontent-length: *(\d+)/i);
        if (match === null) throw new Error("the response has no Content-Length");
        length = Number(match[1]);
      }
    }
    return { status, bytes: length };
  }

  close(): void {
    this.#conn.close();
  }
}

/** A model run in-process beside a server: its name there, its input's name and an input. */
export interface ModelCase {
  name: string;
  input: string;
  module: Module;
  tensor: Tensor;
}

/**
 * builtin:example and the PaddleOCR classifier (`cls`, with its input shape fixed at batch 1)
 * loaded in-process with an input each, the ones named in `which`; `dispose` frees all.
 */
export async function modelCases(
  cls: RealModel,
  which: readonly string[],
): Promise<{ cases: ModelCase[]; dispose(): void }> {
  const example = builtinModel("example");
  const clsModule = await load(cls.file, { inputShapes: { [cls.input]: cls.shape } });
  const clsShape = cls.shape.map((d) => (d === -1 ? 1 : d));
  const cases = [
    { name: "example", input: "input0", module: example.module, tensor: randn([64, 1024], { seed: 1 }) },
    { name: "cls", input: cls.input, module: clsModule, tensor: randn(clsShape, { seed: 2 }) },
  ];
  return {
    cases: cases.filter((c) => which.includes(c.name)),
    dispose() {
      for (const c of cases) c.tensor.dispose();
      example.dispose();
      clsModule.dispose();
    },
  };
}

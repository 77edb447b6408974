/**
 * The floor under `spindle serve`'s overhead: a bare HTTP server on loopback that reads a
 * binary POST body whole and answers a binary body of the size the path names (`POST /N`
 * answers N bytes), with the same response headers as a binary infer response.
 * bench/serve_bench.ts runs it in subprocesses beside the server and drives all with the same
 * lean client, so what the HTTP stack itself costs per request here is measured in the same
 * run as the server's overhead. `--stack http1` (default) is the HTTP/1.1 layer the server
 * runs on (lib/serve/http1.ts); `--stack deno` is a bare `Deno.serve`, which the server used
 * before, for comparison.
 *
 * Prints "listening on http://HOST:PORT" once it listens; stops on SIGTERM.
 *
 * @module
 */
import { serveHttp1 } from "../lib/serve/http1.ts";

/** Response bodies by size, made once: the floor should not count allocating them. */
const bodies = new Map<number, Uint8Array<ArrayBuffer>>();
const answer = (size: number) => {
  let body = bodies.get(size);
  if (body === undefined) bodies.set(size, body = new Uint8Array(size));
  return body;
};
const headers = (size: number, received: number) => ({
  "content-type": "application/octet-stream",
  "inference-header-content-length": String(Math.min(size, received)),
});

const stack = Deno.args.includes("--stack") ? Deno.args[Deno.args.indexOf("--stack") + 1] : "http1";
let port: number;
let stop: () => Promise<void>;
if (stack === "deno") {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
    const body = await request.bytes();
    const size = Number(new URL(request.url).pathname.slice(1));
    return new Response(answer(size), { status: 200, headers: headers(size, body.byteLength) });
  });
  port = server.addr.port;
  stop = () => server.shutdown();
} else {
  const server = serveHttp1(
    { hostname: "127.0.0.1", port: 0, maxBody: 1 << 30, timeoutMs: 60_000 },
    async (request) => {
      const body = await request.body();
      const size = Number(request.path.slice(1));
      return { status: 200, headers: headers(size, body.byteLength), body: answer(size) };
    },
  );
  port = server.port;
  stop = () => server.shutdown();
}
console.log(`listening on http://127.0.0.1:${port}`);
const stopped = new Promise<void>((resolve) => Deno.addSignalListener("SIGTERM", () => stop().then(resolve)));
await stopped;
Deno.exit(0);

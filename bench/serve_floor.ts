/**
 * The floor under `spindle serve`'s overhead: a bare `Deno.serve` on loopback that reads a
 * binary POST body whole (as the server does, with `request.bytes()`) and answers a binary body
 * of the size the path names (`POST /N` answers N bytes), with the same response headers as a
 * binary infer response. bench/serve_bench.ts runs it in a subprocess beside the server and
 * drives both with the same lean client, so what Deno's HTTP stack itself costs per request
 * here is measured in the same run as the server's overhead.
 *
 * Prints "listening on http://HOST:PORT" once it listens; stops on SIGTERM.
 *
 * @module
 */

/** Response bodies by size, made once: the floor should not count allocating them. */
const bodies = new Map<number, Uint8Array<ArrayBuffer>>();

const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (request) => {
  const body = await request.bytes();
  const size = Number(new URL(request.url).pathname.slice(1));
  let answer = bodies.get(size);
  if (answer === undefined) bodies.set(size, answer = new Uint8Array(size));
  return new Response(answer, {
    status: 200,
    headers: {
      "content-type": "application/octet-stream",
      "inference-header-content-length": String(Math.min(size, body.byteLength)),
    },
  });
});
console.log(`listening on http://127.0.0.1:${server.addr.port}`);
Deno.addSignalListener("SIGTERM", () => server.shutdown());
await server.finished;
Deno.exit(0);

/**
 * The HTTP/1.1 layer under `spindle serve` (lib/serve/http1.ts), driven over raw TCP: framing,
 * keep-alive and pipelining, chunked bodies, 100-continue, HEAD, HTTP/1.0, limits, deadlines
 * and shutdown. Every malformed head or framing gets a status and a closed connection.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  BODY_ALIGNMENT,
  BufferPool,
  type HttpRequest,
  type HttpResponse,
  POOL_KEEP_BYTES,
  serveHttp1,
} from "../lib/serve/http1.ts";
import { HttpError } from "../lib/serve/protocol.ts";

const encoder = new TextEncoder();

/** Echoes method, path, a header and the body's length and sum; `/skip` never reads the body. */
async function echo(request: HttpRequest): Promise<HttpResponse> {
  if (request.path === "/skip") return { status: 404, body: "{}" };
  if (request.path === "/fail") throw new HttpError(418, "teapot");
  if (request.path === "/crash") throw new Error("boom");
  const body = await request.body();
  let sum = 0;
  if (request.path === "/check") {
    // Weighted by position, so that bytes moved within the body change it.
    for (let i = 0; i < body.byteLength; i++) sum = (sum + (i + 1) * body[i]) % 1_000_000_007;
  } else {
    for (const byte of body) sum += byte;
  }
  const text = `${request.method} ${request.path} ${request.header("x-tag")} ${body.byteLength} ${sum}`;
  if (request.path === "/buffer") {
    const out = request.responseBuffer(text.length);
    const { written } = encoder.encodeInto(text, out);
    return { status: 200, body: out.subarray(0, written) };
  }
  return { status: 200, headers: { "content-type": "text/plain" }, body: text };
}

async function withHttp(
  fn: (port: number) => Promise<void>,
  limits: { maxBody?: number; timeoutMs?: number; maxHead?: number; idleTimeoutMs?: number } = {},
  handler: (request: HttpRequest) => Promise<HttpResponse> = echo,
): Promise<void> {
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    maxBody: limits.maxBody ?? 1 << 20,
    timeoutMs: limits.timeoutMs ?? 2000,
    maxHead: limits.maxHead,
    idleTimeoutMs: limits.idleTimeoutMs,
  }, handler);
  try {
    await fn(server.port);
  } finally {
    await server.shutdown();
  }
}

/**
 * Sends `chunks` (numbers are pauses in ms) and returns everything received until the server
 * closes or `waitMs` passes, and whether the server closed.
 */
async function exchange(
  port: number,
  chunks: (string | Uint8Array | number)[],
  waitMs = 1500,
): Promise<{ text: string; closed: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const received: number[] = [];
  let closed = false;
  let waited = false; // the client closing after waitMs is not the server closing
  const reading = (async () => {
    const buffer = new Uint8Array(1 << 16);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        received.push(...buffer.subarray(0, n));
      }
      closed = !waited;
    } catch {
      closed = !waited;
    }
  })();
  for (const chunk of chunks) {
    if (typeof chunk === "number") await new Promise((resolve) => setTimeout(resolve, chunk));
    else await conn.write(typeof chunk === "string" ? encoder.encode(chunk) : chunk).catch(() => {});
  }
  await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, waitMs))]);
  waited = true;
  try {
    conn.close();
  } catch { /* closed */ }
  await reading;
  return { text: new TextDecoder().decode(new Uint8Array(received)), closed };
}

const statuses = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

Deno.test("http1: keep-alive, pipelined requests answered in order, bodies read in place", async () => {
  await withHttp(async (port) => {
    const body = "x".repeat(70_000); // bigger than the starting buffer: it grows
    const { text, closed } = await exchange(port, [
      `POST /a HTTP/1.1\r\nhost: h\r\nx-tag: one\r\ncontent-length: 3\r\n\r\nabc` +
      `GET /b?q=1 HTTP/1.1\r\nhost: h\r\nx-tag: two\r\n\r\n` +
      `POST /buffer HTTP/1.1\r\nhost: h\r\ncontent-length: ${body.length}\r\n\r\n${body}` +
      `POST /c HTTP/1.1\r\nhost: h\r\nconnection: close\r\ncontent-length: 1\r\n\r\nz`,
    ]);
    assert.deepEqual(statuses(text), [200, 200, 200, 200]);
    const bodies = text.split(/HTTP\/1\.1 200 OK\r\n/).slice(1).map((r) => r.slice(r.indexOf("\r\n\r\n") + 4));
    assert.deepEqual(bodies, [
      "POST /a one 3 294",
      "GET /b two 0 0",
      `POST /buffer null 70000 ${120 * 70_000}`,
      "POST /c null 1 122",
    ]);
    assert.match(text, /content-length: 17\r\n/);
    assert.ok(closed, "connection: close closes after the answer");
  });
});

/** A body of `length` bytes of a pattern that varies along it, and its /check sum. */
function patterned(length: number, seed: number): { bytes: Uint8Array; sum: number } {
  const bytes = new Uint8Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) {
    bytes[i] = (i * 7 + seed + (i >> 9)) % 251;
    sum = (sum + (i + 1) * bytes[i]) % 1_000_000_007;
  }
  return { bytes, sum };
}

const concat = (...parts: (string | Uint8Array)[]) => {
  const bytes = parts.map((p) => typeof p === "string" ? encoder.encode(p) : p);
  const out = new Uint8Array(bytes.reduce((n, b) => n + b.byteLength, 0));
  let offset = 0;
  for (const b of bytes) {
    out.set(b, offset);
    offset += b.byteLength;
  }
  return out;
};

Deno.test("http1: a connection's large read buffer kept between requests reads bodies intact", async () => {
  await withHttp(async (port) => {
    // One after another (the pauses let each answer go out first, so the next request is read
    // into the kept buffer), then larger than it, then small, then pipelined pairs that leave
    // the next body partly in the kept buffer (moved to its front).
    const sizes = [70_000, 70_000, 300_000, 5, 70_000, 400_000, 300_000, 200_000, 20_000];
    const bodies = sizes.map((size, i) => patterned(size, i));
    const post = (i: number, close = false) =>
      concat(
        `POST /check HTTP/1.1\r\nhost: h\r\ncontent-length: ${sizes[i]}\r\n${close ? "connection: close\r\n" : ""}\r\n`,
        bodies[i].bytes,
      );
    const { text, closed } = await exchange(port, [
      post(0),
      100,
      post(1),
      100,
      post(2),
      100,
      post(3),
      100,
      post(4),
      100,
      concat(post(5), post(6)),
      100,
      concat(post(7), post(8, true)),
    ], 3000);
    assert.ok(closed);
    const answers = text.split(/HTTP\/1\.1 200 OK\r\n/).slice(1).map((r) => r.slice(r.indexOf("\r\n\r\n") + 4));
    assert.deepEqual(answers, sizes.map((size, i) => `POST /check null ${size} ${bodies[i].sum}`));
  });
});

/** `bytes[0]`'s address modulo BODY_ALIGNMENT. */
const misalignment = (bytes: Uint8Array) =>
  Number(BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes))) % BigInt(BODY_ALIGNMENT));

Deno.test("http1: body(alignAt) places that byte of large bodies aligned, the first request's and the next ones'", async () => {
  const found: { misaligned: number; sum: number }[] = [];
  const handler = async (request: HttpRequest): Promise<HttpResponse> => {
    const alignAt = Number(request.header("x-align"));
    const body = await request.body(alignAt);
    let sum = 0;
    for (let i = 0; i < body.byteLength; i++) sum = (sum + (i + 1) * body[i]) % 1_000_000_007;
    found.push({ misaligned: misalignment(body.subarray(alignAt)), sum });
    return { status: 200, body: "ok" };
  };
  await withHttp(
    async (port) => {
      // The same head each time (clients repeat theirs), except the last two: a longer head
      // (aligned again from the request after it), and a pipelined pair.
      const bodies = [70_000, 70_000, 70_000, 70_000, 70_000, 70_000, 70_000].map((size, i) => patterned(size, i));
      const post = (i: number, alignAt: number, extra = "") =>
        concat(
          `POST /a HTTP/1.1\r\nhost: h\r\nx-align: ${alignAt}\r\n${extra}content-length: 70000\r\n\r\n`,
          bodies[i].bytes,
        );
      const { text } = await exchange(port, [
        post(0, 181),
        100,
        post(1, 181),
        100,
        post(2, 181),
        100,
        post(3, 181, "x-long: yes\r\n"),
        100,
        post(4, 181, "x-long: yes\r\n"),
        100,
        post(5, 7, "x-long: yes\r\n"),
        100,
        post(6, 7, "x-long: yes\r\n"),
        100,
      ], 2000);
      assert.deepEqual(statuses(text), [200, 200, 200, 200, 200, 200, 200]);
    },
    {},
    handler,
  );
  assert.deepEqual(found.map((f) => f.sum), [0, 1, 2, 3, 4, 5, 6].map((i) => patterned(70_000, i).sum));
  // The first is aligned when copied into a pooled buffer, the next ones when read at the
  // kept buffer's lead; a changed head or offset misses once, then is aligned again.
  const misaligned = found.map((f) => f.misaligned);
  assert.deepEqual(misaligned.filter((_, i) => i !== 3 && i !== 5), [0, 0, 0, 0, 0]);
});

Deno.test("http1: a held body is neither reused nor overwritten until its hold ends, past the answer", async () => {
  const held: { body: Uint8Array; copy: Uint8Array; release: (reusable: boolean) => void }[] = [];
  const seen: Uint8Array[] = [];
  const handler = async (request: HttpRequest): Promise<HttpResponse> => {
    const body = await request.body();
    if (request.path === "/hold") {
      let release = (_: boolean) => {};
      request.holdBody(new Promise<boolean>((resolve) => release = resolve));
      held.push({ body, copy: body.slice(), release });
    }
    seen.push(body);
    return { status: 200, body: "ok" };
  };
  await withHttp(
    async (port) => {
      // A large body (a kept pooled buffer) and, on a new connection, a small one (the
      // connection's own buffer), each held and followed by others on the same connection.
      const post = (path: string, size: number, seed: number) =>
        concat(`POST ${path} HTTP/1.1\r\nhost: h\r\ncontent-length: ${size}\r\n\r\n`, patterned(size, seed).bytes);
      const large = await exchange(port, [post("/hold", 70_000, 1), 100, post("/other", 70_000, 2), 100], 1000);
      assert.deepEqual(statuses(large.text), [200, 200]);
      const small = await exchange(port, [
        post("/hold", 2000, 3),
        100,
        concat(post("/other", 2000, 4), post("/other", 70_000, 5)),
        100,
      ], 1000);
      assert.deepEqual(statuses(small.text), [200, 200, 200]);
      // On another connection, a body just too large for its own buffer (behind a long head)
      // takes a pooled one of about its size: never the held small buffer.
      const padded = concat(
        `POST /other HTTP/1.1\r\nhost: h\r\nx-pad: ${"p".repeat(300)}\r\ncontent-length: 16200\r\n\r\n`,
        patterned(16_200, 6).bytes,
      );
      assert.deepEqual(statuses((await exchange(port, [padded, 100], 1000)).text), [200]);
    },
    {},
    handler,
  );
  assert.equal(held.length, 2);
  for (const { body, copy } of held) assert.deepEqual(body, copy);
  assert.notEqual(seen[1].buffer, seen[0].buffer);
  assert.notEqual(seen[3].buffer, seen[2].buffer);
  for (const { release } of held) release(true);
  await new Promise((resolve) => setTimeout(resolve, 0));
});

Deno.test("http1: buffers parked by waiting connections count against the pool's bound", () => {
  const pool = new BufferPool();
  const size = 8 * 2 ** 20;
  const buffers = Array.from({ length: POOL_KEEP_BYTES / size + 1 }, () => pool.take(size));
  assert.equal(buffers[0].byteLength, size);
  // Parked up to the bound, no further.
  for (let i = 0; i < buffers.length - 1; i++) assert.ok(pool.park(buffers[i]));
  assert.ok(!pool.park(buffers.at(-1)!));
  assert.equal(pool.keptBytes, POOL_KEEP_BYTES);
  // A buffer given back while the parked ones fill the bound is dropped, not kept.
  pool.give(buffers.at(-1)!);
  assert.equal(pool.keptBytes, POOL_KEEP_BYTES);
  // Unparked (a request arrived) and given back: kept as free, and taken again.
  pool.unpark(buffers[0]);
  assert.equal(pool.keptBytes, POOL_KEEP_BYTES - size);
  pool.give(buffers[0]);
  assert.equal(pool.keptBytes, POOL_KEEP_BYTES);
  assert.equal(pool.take(size), buffers[0]);
  assert.equal(pool.keptBytes, POOL_KEEP_BYTES - size);
});

Deno.test("http1: chunked bodies, 100-continue, HEAD, HTTP/1.0", async () => {
  await withHttp(async (port) => {
    const chunked = await exchange(port, [
      "POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
      "3;ext=1\r\nabc\r\n",
      20,
      "2\r\nde\r\n0\r\ntrailer: t\r\n\r\n",
    ]);
    assert.match(chunked.text, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nPOST \/c null 5 495$/);
    // 100 Continue comes only once the handler reads the body, then the answer.
    const expect = await exchange(port, [
      "POST /e HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 2\r\nconnection: close\r\n\r\n",
      100,
      "hi",
    ]);
    assert.deepEqual(statuses(expect.text), [100, 200]);
    const head = await exchange(port, ["HEAD /h HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n"]);
    assert.match(head.text, /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 16\r\n[^]*\r\n\r\n$/);
    const old = await exchange(port, ["GET /o HTTP/1.0\r\n\r\n"]);
    assert.ok(old.closed, "HTTP/1.0 without keep-alive closes");
    assert.match(old.text, /GET \/o null 0 0$/);
    const oldKept = await exchange(port, ["GET /o HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"], 300);
    assert.ok(!oldKept.closed, "HTTP/1.0 with keep-alive stays open");
  });
});

Deno.test("http1: malformed heads and framing get their status and a closed connection", async () => {
  await withHttp(async (port) => {
    const cases: [string, number, RegExp][] = [
      ["BAD\r\n\r\n", 400, /not an HTTP request line/],
      ["GET / HTTP/2.0\r\n\r\n", 505, /not HTTP\/1\.0 or HTTP\/1\.1/],
      ["GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, /not a header field/],
      ["POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n", 400, /both Transfer-Encoding/],
      ["POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n", 501, /'gzip' is not supported/],
      ["POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n", 400, /'-1' is not a byte count/],
      ["POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab", 400, /'1, 2' is not a byte count/],
      ["POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400, /not a chunk size/],
      ["POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n", 400, /longer than its declared/],
      ["GET / HTTP/1.1\r\nx: " + "a".repeat(5000) + "\r\n\r\n", 431, /over 4096 bytes/],
      ["POST / HTTP/1.1\r\ncontent-length: 2000\r\n\r\n", 413, /over the 1000-byte limit/],
      [
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n800\r\n" + "a".repeat(2048) + "\r\n0\r\n\r\n",
        413,
        /over/,
      ],
    ];
    for (const [request, status, message] of cases) {
      const { text, closed } = await exchange(port, [request]);
      assert.equal(statuses(text)[0], status, `${JSON.stringify(request.slice(0, 60))}: ${text}`);
      assert.match(text, message);
      assert.match(text, /\r\n\r\n\{"error":/);
      assert.ok(closed, `${JSON.stringify(request.slice(0, 60))} closes`);
    }
    // A repeated Content-Length with one value is allowed.
    const same = await exchange(port, [
      "POST /s HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\nconnection: close\r\n\r\nab",
    ]);
    assert.match(same.text, /POST \/s null 2 195$/);
  }, { maxBody: 1000, maxHead: 4096 });
});

Deno.test("http1: handler errors, unread bodies, slow heads and bodies", async () => {
  await withHttp(async (port) => {
    const fail = await exchange(port, ["GET /fail HTTP/1.1\r\n\r\nGET /crash HTTP/1.1\r\nconnection: close\r\n\r\n"]);
    assert.deepEqual(statuses(fail.text), [418, 500]);
    assert.match(fail.text, /\{"error":"teapot"\}/);
    assert.match(fail.text, /\{"error":"internal error: boom"\}/);
    // A small unread body is skipped and the connection kept; a big one closes it.
    const small = await exchange(
      port,
      ["POST /skip HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /k HTTP/1.1\r\n\r\n"],
      300,
    );
    assert.deepEqual(statuses(small.text), [404, 200]);
    assert.ok(!small.closed);
    const big = await exchange(port, [`POST /skip HTTP/1.1\r\ncontent-length: 100000\r\n\r\n`]);
    assert.deepEqual(statuses(big.text), [404]);
    assert.ok(big.closed);
    const slowHead = await exchange(port, ["GET / HTTP/1.1\r\nx: 1\r\n"], 2000);
    assert.deepEqual(statuses(slowHead.text), [408]);
    assert.match(slowHead.text, /head did not arrive within the 300 ms deadline/);
    const slowBody = await exchange(port, ["POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc"], 2000);
    assert.deepEqual(statuses(slowBody.text), [408]);
    assert.ok(slowBody.closed);
    // Between requests a keep-alive connection has the idle timeout, not the request deadline;
    // past it the server closes the connection.
    const idle = await exchange(port, ["GET /1 HTTP/1.1\r\n\r\n", 500, "GET /2 HTTP/1.1\r\nconnection: close\r\n\r\n"]);
    assert.deepEqual(statuses(idle.text), [200, 200]);
    const idleTooLong = await exchange(port, ["GET /1 HTTP/1.1\r\n\r\n"], 2000);
    assert.deepEqual(statuses(idleTooLong.text), [200]);
    assert.ok(idleTooLong.closed, "closed after the idle timeout");
  }, { timeoutMs: 300, idleTimeoutMs: 900 });
});

Deno.test("http1: shutdown closes idle connections, answers the one in flight, then finishes", async () => {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => release = resolve);
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0, maxBody: 1024, timeoutMs: 2000 }, async (request) => {
    if (request.path === "/slow") await gate;
    return { status: 200, body: request.path };
  });
  const idle = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await idle.write(encoder.encode("GET /i HTTP/1.1\r\n\r\n"));
  const first = new Uint8Array(1024);
  assert.ok((await idle.read(first))! > 0);
  const busy = exchange(server.port, ["GET /slow HTTP/1.1\r\n\r\n"], 3000);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const stopped = server.shutdown();
  assert.equal(await idle.read(first), null, "the idle connection is closed");
  idle.close();
  release();
  const { text, closed } = await busy;
  assert.match(text, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n\r\n\/slow$/);
  assert.ok(closed);
  await stopped;
  await server.finished;
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.port }));
});

/** Sends `bytes` and reads until one whole response is in, the server closes, or `waitMs` pass. */
async function oneAnswer(port: number, bytes: Uint8Array, waitMs: number): Promise<{ text: string; closed: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(bytes).catch(() => {});
  const received: number[] = [];
  const buffer = new Uint8Array(1 << 16);
  const complete = () => {
    const text = new TextDecoder().decode(new Uint8Array(received));
    const end = text.indexOf("\r\n\r\n");
    const length = text.match(/\r\ncontent-length: (\d+)\r\n/);
    return end >= 0 && length !== null && received.length >= end + 4 + Number(length[1]);
  };
  let closed = false;
  const timer = setTimeout(() => conn.close(), waitMs);
  try {
    while (!complete()) {
      const n = await conn.read(buffer);
      if (n === null) {
        closed = true;
        break;
      }
      received.push(...buffer.subarray(0, n));
    }
  } catch { /* closed by the timer: nothing more came */ }
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* closed */ }
  return { text: new TextDecoder().decode(new Uint8Array(received)), closed };
}

Deno.test("http1: 150 random byte-level mutations of requests get a well-formed answer or a close, never a hang", async () => {
  let seed = 12345;
  const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const base = encoder.encode(
    "POST /m?x=1 HTTP/1.1\r\nhost: h\r\nx-tag: t\r\ncontent-type: application/octet-stream\r\n" +
      "content-length: 16\r\n\r\n0123456789abcdef",
  );
  const pieces = [
    "\r\n",
    "\r\n\r\n",
    ":",
    " ",
    "chunked",
    "transfer-encoding: chunked\r\n",
    "content-length: 9\r\n",
    "\0",
  ];
  const outcomes = { answered: 0, closed: 0 };
  await withHttp(async (port) => {
    for (let i = 0; i < 150; i++) {
      const bytes = [...base];
      for (let m = 1 + Math.floor(next() * 4); m > 0; m--) {
        const at = Math.floor(next() * bytes.length);
        const kind = Math.floor(next() * 4);
        if (kind === 0) bytes[at] = Math.floor(next() * 256);
        else if (kind === 1) bytes.splice(at, 1 + Math.floor(next() * 8));
        else if (kind === 2) bytes.splice(at, 0, ...encoder.encode(pieces[Math.floor(next() * pieces.length)]));
        else bytes.length = at; // truncated: the head or body deadline (150 ms) answers 408
      }
      if (bytes.length === 0) continue; // nothing sent: an idle connection, which only the idle timeout closes
      // Longer than the 150 ms deadline: every request is answered or closed within it.
      const { text, closed } = await oneAnswer(port, new Uint8Array(bytes), 1500);
      if (text === "") {
        assert.ok(
          closed,
          `mutation ${i}: neither an answer nor a close within 1.5 s: ${
            JSON.stringify(new TextDecoder().decode(new Uint8Array(bytes)))
          }`,
        );
        outcomes.closed++;
        continue;
      }
      assert.match(text, /^HTTP\/1\.1 [1-5]\d\d [^\r\n]*\r\n[^]*\r\ncontent-length: \d+\r\n/, `mutation ${i}`);
      outcomes.answered++;
    }
    // Still serving.
    const { text } = await oneAnswer(port, encoder.encode("GET /ok HTTP/1.1\r\nconnection: close\r\n\r\n"), 2000);
    assert.match(text, /GET \/ok null 0 0$/);
  }, { timeoutMs: 150, maxBody: 1 << 16 });
  assert.ok(outcomes.answered > 75, JSON.stringify(outcomes));
});

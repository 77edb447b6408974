/**
 * A small HTTP/1.1 server on `Deno.listen`, for `spindle serve`. Why not `Deno.serve`: on this
 * 2-core machine a bare `Deno.serve` that reads the classifier's 110 KB binary request and
 * answers 155 bytes costs 98–109 µs p50 on loopback against 55–58 µs for the same exchange on a
 * raw TCP connection read into a reused buffer (142 against 366 µs for `builtin:example`'s
 * 256 KB each way), and a `Request` and `Response` pair costs 24 µs more before any body is
 * copied. The issue's target for the server's whole overhead is 100 µs.
 *
 * What it does: keep-alive and pipelined requests on one connection, answered in order;
 * `Content-Length` and `chunked` request bodies, read only when the handler asks for them (so a
 * request refused before its body, a 503 or 413, costs no buffer; the connection then closes,
 * since its unread body is still on the wire); `Expect: 100-continue` answered when the body
 * is read; a deadline on the head and body of each request (408, then close) and an idle timeout
 * between requests; `HEAD`; HTTP/1.0
 * with and without keep-alive; limits on head size (431) and body size (413). Framing errors
 * (a bad Content-Length, both Content-Length and Transfer-Encoding, a broken chunk) are 400
 * and close the connection, as RFC 9112 asks of a server that cannot find the next request.
 * Responses always carry Content-Length; nothing is compressed.
 *
 * Memory: an idle connection holds a 16 KiB read buffer (grown for a long head, up to the head
 * limit, and shrunk back after it). A body or response larger than that takes a buffer from
 * the server's pool for the length of its request and gives it back after the response is
 * written, so large buffers are held by requests being read or answered (and the server admits
 * a bounded number of those before reading their bodies), and none is allocated per request
 * once the pool has one of the size. A connection may keep its pooled read buffer for its next
 * request, while the buffers kept that way and the pool's free ones stay under 64 MiB in all:
 * a client that sends large bodies then has each request read in one read, with no first read
 * into the small buffer and no copy out of it. The body handed to the handler is a view into
 * the read buffer, valid until its response is written. The server's forward reads binary
 * tensors in place: `body(alignAt)` puts the first one on a 64-byte boundary (where the body
 * is copied into a pooled buffer, and, through a per-connection lead, where the next request
 * is read whole into a kept one), and `holdBody` keeps the buffer from reuse and from the pool
 * while a forward still reads it after its answer (a 504): the connection moves on to another
 * buffer, and the held one goes back to the pool when the forward ends.
 * The response goes out in one write from the write buffer, its head placed just before its
 * body; a handler that encodes the body into `responseBuffer` saves the copy.
 *
 * @module
 */
import { type Deadline, Deadlines } from "./deadlines.ts";
import { HttpError } from "./protocol.ts";

/** One request as the handler sees it. */
export interface HttpRequest {
  /** The method, as sent (`GET`, `POST`, ...). */
  readonly method: string;
  /** The path of the request target, without the query (`/v2/models/m/infer`). */
  readonly path: string;
  /** A request header by lower-case name; repeated headers are joined with ", ". */
  header(name: string): string | null;
  /**
   * Reads the whole body: at most the server's body limit (else HttpError 413), within the
   * body deadline (else 408). The bytes stay valid until the response is written (or longer,
   * see holdBody).
   *
   * @param alignAt A body offset whose byte is best placed at a {@link BODY_ALIGNMENT}-byte
   *   aligned address (a binary tensor that native code then reads in place): done when the
   *   body is copied into a pooled buffer, and for the next request of the connection when
   *   it is read whole into a kept one. Only the first call's value counts.
   */
  body(alignAt?: number): Promise<Uint8Array>;
  /**
   * The body's bytes are read (by native code) until `until` settles, which may be after the
   * response (a forward past its request's deadline): the connection does not reuse them or
   * give their buffer to the pool before. Resolved false, or rejected, they are never reused.
   * Once per request.
   */
  holdBody(until: Promise<boolean>): void;
  /**
   * A buffer of at least `bytes` bytes for the response body, owned by this connection and
   * free again once the response is written: a body that is a view of it from its start goes
   * out with no copy.
   */
  responseBuffer(bytes: number): Uint8Array<ArrayBuffer>;
}

/** A response: a status, headers (lower-case names) and a body. */
export interface HttpResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
}

/** Settings of {@link serveHttp1}. */
export interface Http1Options {
  hostname: string;
  port: number;
  /** Largest request body, in bytes. */
  maxBody: number;
  /** A request's head and body must each arrive within this many milliseconds of its start. */
  timeoutMs: number;
  /** Largest request head (request line and headers), in bytes (default 64 KiB). */
  maxHead?: number;
  /** A keep-alive connection idle this long between requests is closed (default 75 s, as nginx). */
  idleTimeoutMs?: number;
  /** Timers for the deadlines (the server shares its own). */
  deadlines?: Deadlines;
}

/** A listening server. */
export interface Http1Server {
  readonly port: number;
  /** Resolves when the listener is closed and every connection has ended. */
  readonly finished: Promise<void>;
  /**
   * Stops accepting, closes idle connections, lets requests in flight answer (their
   * connections then close), and resolves when all are done. Idempotent.
   */
  shutdown(): Promise<void>;
}

/** A connection's own read and write buffers. */
const SMALL_BYTES = 16 * 1024;
/** The most bytes the pool keeps while no request uses them (free, or parked by a connection). */
export const POOL_KEEP_BYTES = 64 * 2 ** 20;
const DEFAULT_MAX_HEAD = 64 * 1024;
/** Alignment {@link HttpRequest.body}'s `alignAt` asks for (AVX-512 loads; zig/src/tensor.zig). */
export const BODY_ALIGNMENT = 64;
/** Room kept in front of a response body for its head, so that both go out in one write. */
const HEAD_ROOM = 1024;
const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** A framing error: answered with `status`, then the connection closes. */
class FramingError extends HttpError {}

/** The connection went away (or was closed by shutdown) while a request was read. */
class Gone extends Error {}

/** Address modulo BODY_ALIGNMENT of each buffer's first byte (buffers never move). */
const addresses = new WeakMap<ArrayBuffer, number>();

/**
 * `buffer[index]`'s address modulo {@link BODY_ALIGNMENT}, or null when it cannot be known
 * (no FFI permission): alignment is then not attempted.
 */
function misalignment(buffer: Uint8Array<ArrayBuffer>, index: number): number | null {
  let base = addresses.get(buffer.buffer);
  if (base === undefined) {
    try {
      const pointer = Deno.UnsafePointer.of(buffer.buffer);
      if (pointer === null) return null;
      base = Number(BigInt(Deno.UnsafePointer.value(pointer)) % BigInt(BODY_ALIGNMENT));
    } catch {
      return null;
    }
    addresses.set(buffer.buffer, base);
  }
  return (base + buffer.byteOffset + index) % BODY_ALIGNMENT;
}

/** A body's buffer held past its request (HttpRequest.holdBody). */
interface Hold {
  busy: boolean;
  reusable: boolean;
  until: Promise<void>;
}

/** Rejects with a 408 once `ms` pass, unless cleared. */
function deadlineOf(deadlines: Deadlines, ms: number, what: string): { expired: Promise<never>; clear(): void } {
  let deadline: Deadline | undefined;
  const expired = new Promise<never>((_, reject) => {
    deadline = deadlines.add(
      ms,
      () => reject(new FramingError(408, `the request ${what} did not arrive within the ${ms} ms deadline`)),
    );
  });
  expired.catch(() => {});
  return { expired, clear: () => deadlines.cancel(deadline!) };
}

/**
 * Serves HTTP/1.1 on `options.hostname:options.port` with `handler`. A handler that throws an
 * HttpError answers its status with `{"error": message}`; anything else thrown is a 500.
 *
 * @param options Address, limits and deadlines.
 * @param handler Answers one request.
 * @returns The running server.
 */
export function serveHttp1(
  options: Http1Options,
  handler: (request: HttpRequest) => Promise<HttpResponse>,
): Http1Server {
  const listener = Deno.listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
  const deadlines = options.deadlines ?? new Deadlines();
  const connections = new Set<Connection>();
  let closing = false;
  let stopping: Promise<void> | null = null;
  const settings = {
    maxBody: options.maxBody,
    maxHead: options.maxHead ?? DEFAULT_MAX_HEAD,
    idleTimeoutMs: options.idleTimeoutMs ?? 75_000,
    timeoutMs: options.timeoutMs,
    deadlines,
    pool: new BufferPool(),
    isClosing: () => closing,
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const connection = new Connection(conn, settings, handler);
        connections.add(connection);
        connection.done.finally(() => connections.delete(connection));
      }
    } catch (error) {
      if (!closing) throw error;
    }
  })();
  const finished = (async () => {
    await accepting;
    while (connections.size > 0) await Promise.all([...connections].map((c) => c.done));
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    finished,
    shutdown() {
      stopping ??= (async () => {
        closing = true;
        listener.close();
        for (const connection of connections) connection.closeIfIdle();
        await finished;
      })();
      return stopping;
    },
  };
}

interface Settings {
  maxBody: number;
  maxHead: number;
  idleTimeoutMs: number;
  timeoutMs: number;
  deadlines: Deadlines;
  pool: BufferPool;
  isClosing(): boolean;
}

/**
 * Large buffers shared by a server's connections: taken for one request's body or response,
 * given back after it. Sizes are powers of two, so that requests of similar sizes share them.
 *
 * @ignore Internal: exported for its tests.
 */
export class BufferPool {
  readonly #free: Uint8Array<ArrayBuffer>[] = [];
  #freeBytes = 0;
  /** Bytes of buffers kept by connections between their requests (see park). */
  #parkedBytes = 0;

  take(bytes: number): Uint8Array<ArrayBuffer> {
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const size = this.#free[i].byteLength;
      if (size >= bytes && (best < 0 || size < this.#free[best].byteLength)) best = i;
    }
    if (best < 0) return new Uint8Array(2 ** Math.ceil(Math.log2(Math.max(bytes, 2 * SMALL_BYTES))));
    const buffer = this.#free[best];
    this.#free[best] = this.#free[this.#free.length - 1];
    this.#free.pop();
    this.#freeBytes -= buffer.byteLength;
    return buffer;
  }

  give(buffer: Uint8Array<ArrayBuffer>): void {
    if (this.#freeBytes + this.#parkedBytes + buffer.byteLength > POOL_KEEP_BYTES) return; // the GC has it
    this.#free.push(buffer);
    this.#freeBytes += buffer.byteLength;
  }

  /**
   * Lets a connection keep a taken buffer while it waits for its next request, counted with
   * the free ones against POOL_KEEP_BYTES, so that what no request uses stays bounded however
   * many connections wait; false when that bound leaves no room (then give it back).
   */
  park(buffer: Uint8Array<ArrayBuffer>): boolean {
    if (this.#freeBytes + this.#parkedBytes + buffer.byteLength > POOL_KEEP_BYTES) return false;
    this.#parkedBytes += buffer.byteLength;
    return true;
  }

  /** A parked buffer is in use again (a request arrived) or dropped (its connection closed). */
  unpark(buffer: Uint8Array<ArrayBuffer>): void {
    this.#parkedBytes -= buffer.byteLength;
  }

  /** Bytes kept for reuse: free and parked (for tests). */
  get keptBytes(): number {
    return this.#freeBytes + this.#parkedBytes;
  }
}

/** How the current request's body is framed. */
type Framing = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" };

class Connection {
  readonly done: Promise<void>;
  readonly #conn: Deno.TcpConn;
  readonly #settings: Settings;
  readonly #handler: (request: HttpRequest) => Promise<HttpResponse>;
  /** Bytes read and not yet consumed are `#buffer[#start, #end)`. */
  #buffer: Uint8Array<ArrayBuffer>;
  /** This connection's own read buffer, which #buffer is between big requests. */
  #small = new Uint8Array(SMALL_BYTES);
  /** Whether #buffer came from the pool. */
  #pooled = false;
  /** Whether #buffer is a pooled one kept between requests (BufferPool.park). */
  #parked = false;
  #start = 0;
  #end = 0;
  /** Bytes of the current request's head. */
  #headLength = 0;
  /**
   * Where a kept buffer takes the next request's head, so that its body's `alignAt` byte
   * lands aligned when head and body are as long as this request's (clients repeat them).
   */
  #lead = 0;
  /** The write buffer: #smallOut, or one from the pool for a big response. */
  #out: Uint8Array<ArrayBuffer>;
  #smallOut: Uint8Array<ArrayBuffer> | null = null;
  /** Between requests, waiting for the first byte of the next one. */
  #idle = true;
  #closed = false;

  constructor(conn: Deno.TcpConn, settings: Settings, handler: (request: HttpRequest) => Promise<HttpResponse>) {
    this.#conn = conn;
    this.#settings = settings;
    this.#handler = handler;
    this.#buffer = this.#small;
    this.#out = this.#small; // replaced before any use (see #room)
    try {
      conn.setNoDelay(true);
    } catch { /* already closed by the peer */ }
    this.done = this.#serve().catch(() => {}).finally(() => this.#close());
  }

  /** Closes the connection now if it waits for a next request (shutdown). */
  closeIfIdle(): void {
    if (this.#idle && this.#start === this.#end) this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unpark();
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  /** Reads more bytes into the buffer (growing it up to `limit` bytes of unconsumed data). */
  async #fill(limit: number): Promise<void> {
    if (this.#end === this.#buffer.byteLength) {
      const used = this.#end - this.#start;
      if (used >= limit) throw new Error("fill past the limit"); // callers check first
      if (this.#start > 0 && used <= this.#buffer.byteLength / 2) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
      } else {
        // A long head: grown here, and back to #small after its request (#settle).
        this.#unpark();
        const grown = new Uint8Array(Math.min(2 * this.#buffer.byteLength, limit + 1));
        grown.set(this.#buffer.subarray(this.#start, this.#end));
        if (this.#pooled) this.#settings.pool.give(this.#buffer);
        this.#pooled = false;
        this.#buffer = grown;
      }
      this.#start = 0;
      this.#end = used;
    }
    let n: number | null;
    try {
      n = await this.#conn.read(this.#buffer.subarray(this.#end));
    } catch {
      n = null;
    }
    if (n === null || this.#closed) throw new Gone();
    this.#end += n;
  }

  /**
   * Makes room for `bytes` unconsumed bytes in one piece (a body of a declared length). When
   * they are moved, `alignAt` of them lands on an aligned address where the buffer allows.
   */
  #reserve(bytes: number, alignAt: number): void {
    if (this.#buffer.byteLength - this.#start >= bytes) return;
    if (this.#pooled && this.#buffer.byteLength >= bytes) {
      // A kept buffer with pipelined bytes ahead of this body: moved to its front.
      const to = this.#alignedStart(this.#buffer, bytes, alignAt);
      this.#buffer.copyWithin(to, this.#start, this.#end);
      this.#end += to - this.#start;
      this.#start = to;
      return;
    }
    const taken = this.#settings.pool.take(bytes + BODY_ALIGNMENT);
    const to = this.#alignedStart(taken, bytes, alignAt);
    taken.set(this.#buffer.subarray(this.#start, this.#end), to);
    if (this.#pooled) this.#settings.pool.give(this.#buffer);
    this.#pooled = true;
    this.#end += to - this.#start;
    this.#start = to;
    this.#buffer = taken;
  }

  /** Where in `buffer` a body of `bytes` starts so that its `alignAt` byte is aligned (0 if it can't). */
  #alignedStart(buffer: Uint8Array<ArrayBuffer>, bytes: number, alignAt: number): number {
    const off = misalignment(buffer, alignAt);
    if (off === null) return 0;
    const to = (BODY_ALIGNMENT - off) % BODY_ALIGNMENT;
    return to + bytes <= buffer.byteLength ? to : 0;
  }

  /**
   * The body's buffer is still read past its request (holdBody): this connection stops using
   * it (the bytes after the body move to a new buffer of its own), and the pool has it back
   * once the reader is done, unless the reader said it never may be.
   */
  #lend(hold: Hold): void {
    const lent = this.#buffer;
    const pooled = this.#pooled;
    const left = this.#end - this.#start;
    if (lent === this.#small) {
      this.#small = new Uint8Array(SMALL_BYTES);
      // #out points at #small when no write buffer is in use (#releaseOut): so it must follow,
      // or #room and #releaseOut would take the held buffer for a write buffer (or the pool's).
      if (this.#out === lent) this.#out = this.#small;
    }
    const next = left <= SMALL_BYTES ? this.#small : new Uint8Array(left);
    next.set(lent.subarray(this.#start, this.#end));
    this.#buffer = next;
    this.#pooled = false;
    this.#start = 0;
    this.#end = left;
    // The closure keeps `lent` reachable (not collected) while it is read.
    hold.until.then(() => {
      if (pooled && hold.reusable) this.#settings.pool.give(lent);
    });
  }

  /** Ends the parking of #buffer (a request arrived, or the connection closed). */
  #unpark(): void {
    if (!this.#parked) return;
    this.#parked = false;
    this.#settings.pool.unpark(this.#buffer);
  }

  /**
   * After a request: a pooled read buffer is kept for the next request while the pool's bound
   * allows (BufferPool.park), so that a client sending large bodies has each one read whole
   * into it, with no first read into the small buffer and no copy out of it (one read and one
   * copy less per request); else back to the connection's own read buffer (with any pipelined
   * bytes), the pooled one given back, unless more than 16 KiB of the next requests are
   * already in.
   */
  #settle(): void {
    const left = this.#end - this.#start;
    if (left === 0) this.#start = this.#end = 0;
    if (this.#pooled && this.#settings.pool.park(this.#buffer)) {
      this.#parked = true;
      // The next request is read at #lead (see there), unless bytes of it are in already.
      if (left === 0) this.#start = this.#end = this.#lead;
      return;
    }
    if (this.#buffer !== this.#small && left <= SMALL_BYTES) {
      this.#small.set(this.#buffer.subarray(this.#start, this.#end));
      if (this.#pooled) this.#settings.pool.give(this.#buffer);
      this.#pooled = false;
      this.#buffer = this.#small;
      this.#start = 0;
      this.#end = left;
    } else if (left === 0) {
      this.#start = this.#end = 0;
    }
  }

  /** Index just past the first CRLF CRLF in the unconsumed bytes at or after `from`, or -1. */
  #headEnd(from: number): number {
    const b = this.#buffer;
    for (let i = Math.max(this.#start + 3, from); i < this.#end; i++) {
      if (b[i] === 0x0a && b[i - 1] === 0x0d && b[i - 2] === 0x0a && b[i - 3] === 0x0d) return i + 1;
    }
    return -1;
  }

  async #serve(): Promise<void> {
    while (!this.#closed) {
      // Wait for the next request's first byte up to the idle timeout (an idle keep-alive
      // connection costs its buffer and a descriptor), then give its head the request deadline.
      this.#idle = true;
      if (this.#settings.isClosing() && this.#start === this.#end) return;
      if (this.#start === this.#end) {
        const idle = this.#settings.deadlines.add(this.#settings.idleTimeoutMs, () => this.#close());
        try {
          while (this.#start === this.#end) await this.#fill(this.#settings.maxHead);
        } finally {
          this.#settings.deadlines.cancel(idle);
        }
      }
      this.#idle = false;
      this.#unpark();
      let head: Head;
      try {
        head = await this.#readHead();
      } catch (error) {
        if (error instanceof FramingError) await this.#answer(errorOf(error), false, true);
        return;
      }
      const { keepAlive, hold } = await this.#exchange(head);
      if (hold?.busy) this.#lend(hold);
      this.#settle();
      if (!keepAlive || this.#settings.isClosing()) return;
    }
  }

  async #readHead(): Promise<Head> {
    const { maxHead, timeoutMs, deadlines } = this.#settings;
    let end = this.#headEnd(this.#start);
    if (end < 0) {
      const deadline = deadlineOf(deadlines, timeoutMs, "head");
      try {
        while (end < 0) {
          if (this.#end - this.#start >= maxHead) {
            throw new FramingError(431, `the request head is over ${maxHead} bytes`);
          }
          const scanned = this.#end;
          await Promise.race([this.#fill(maxHead), deadline.expired]);
          end = this.#headEnd(scanned - 3);
        }
      } finally {
        deadline.clear();
      }
    }
    if (end - this.#start > maxHead) throw new FramingError(431, `the request head is over ${maxHead} bytes`);
    const text = latin1.decode(this.#buffer.subarray(this.#start, end - 4));
    this.#headLength = end - this.#start;
    this.#start = end;
    return parseHead(text);
  }

  /**
   * Runs one request to its answer; returns whether the connection stays open, and the
   * body's hold (holdBody), if any.
   */
  async #exchange(head: Head): Promise<{ keepAlive: boolean; hold: Hold | null }> {
    let framing: Framing;
    try {
      framing = framingOf(head);
    } catch (error) {
      await this.#answer(errorOf(error as HttpError), head.method === "HEAD", true);
      return { keepAlive: false, hold: null };
    }
    let bodyRead = framing.kind === "none";
    let bodyFailed = false;
    let body: Promise<Uint8Array> | null = null;
    let hold: Hold | null = null;
    const request: HttpRequest = {
      method: head.method,
      path: head.path,
      header: (name) => head.headers.get(name) ?? null,
      // One read per request; asking again gets the same bytes (or the same error).
      body: (alignAt = 0) =>
        body ??= this.#readBody(framing, head, alignAt).then((bytes) => {
          bodyRead = true;
          return bytes;
        }, (error) => {
          bodyFailed = true;
          if (error instanceof Gone) throw new HttpError(400, "the connection closed before the whole body arrived");
          throw error;
        }),
      responseBuffer: (bytes) => {
        this.#room(bytes);
        return this.#out.subarray(HEAD_ROOM);
      },
      holdBody: (until) => {
        if (hold !== null) throw new Error("holdBody: once per request");
        const state: Hold = { busy: true, reusable: false, until: Promise.resolve() };
        state.until = until.then((reusable) => {
          state.reusable = reusable;
        }, () => {}).finally(() => {
          state.busy = false;
        });
        hold = state;
      },
    };
    let response: HttpResponse;
    try {
      response = await this.#handler(request);
    } catch (error) {
      response = error instanceof HttpError ? errorOf(error) : {
        status: 500,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ error: `internal error: ${error instanceof Error ? error.message : error}` }),
      };
    }
    if (!bodyRead && !bodyFailed && framing.kind === "length" && framing.length <= SMALL_BYTES) {
      // A small body the handler did not need (a 404, a 503): skip it and keep the connection.
      await request.body().catch(() => {});
    }
    const keepAlive = head.keepAlive && bodyRead && !bodyFailed && !this.#settings.isClosing();
    await this.#answer(response, head.method === "HEAD", !keepAlive);
    return { keepAlive, hold };
  }

  async #readBody(framing: Framing, head: Head, alignAt: number): Promise<Uint8Array> {
    const { maxBody, timeoutMs, deadlines } = this.#settings;
    if (framing.kind === "none") return new Uint8Array(0);
    if (framing.kind === "length" && framing.length > maxBody) {
      throw new HttpError(413, `the body is ${framing.length} bytes, over the ${maxBody}-byte limit (--max-body)`);
    }
    if (head.expectContinue) await this.#write(encoder.encode("HTTP/1.1 100 Continue\r\n\r\n"));
    if (framing.kind === "length") this.#reserve(framing.length, alignAt);
    // A body already read whole (with its head, into a kept buffer) needs no deadline.
    if (framing.kind !== "length" || this.#end - this.#start < framing.length) {
      const deadline = deadlineOf(deadlines, timeoutMs, "body");
      try {
        if (framing.kind === "chunked") return await Promise.race([this.#readChunked(maxBody), deadline.expired]);
        while (this.#end - this.#start < framing.length) {
          await Promise.race([this.#fill(framing.length), deadline.expired]);
        }
      } finally {
        deadline.clear();
      }
    }
    const body = this.#buffer.subarray(this.#start, this.#start + framing.length);
    if (framing.kind === "length" && this.#pooled && alignAt < framing.length) {
      // The next request of this client, read whole into this buffer at #lead, has its
      // alignAt byte aligned when its head and body are as long as this one's.
      const off = misalignment(this.#buffer, this.#start + alignAt);
      if (off !== null) {
        const lead = (this.#start - this.#headLength - off) % BODY_ALIGNMENT;
        this.#lead = lead < 0 ? lead + BODY_ALIGNMENT : lead;
      }
    }
    this.#start += framing.length;
    return body;
  }

  /** A CRLF-terminated line of at most 4 KiB (chunk sizes, trailers); consumed. */
  async #line(): Promise<string> {
    for (;;) {
      const b = this.#buffer;
      for (let i = this.#start + 1; i < this.#end; i++) {
        if (b[i] === 0x0a && b[i - 1] === 0x0d) {
          const line = latin1.decode(b.subarray(this.#start, i - 1));
          this.#start = i + 1;
          return line;
        }
      }
      if (this.#end - this.#start > 4096) throw new FramingError(400, "a chunk-size or trailer line is over 4 KiB");
      await this.#fill(8192);
    }
  }

  async #readChunked(maxBody: number): Promise<Uint8Array> {
    let body = new Uint8Array(0);
    let total = 0;
    for (;;) {
      const line = await this.#line();
      const size = line.split(";", 1)[0].trim();
      if (!/^[0-9a-fA-F]{1,15}$/.test(size)) throw new FramingError(400, `'${line.slice(0, 40)}' is not a chunk size`);
      const length = parseInt(size, 16);
      if (length === 0) break;
      if (total + length > maxBody) {
        throw new FramingError(413, `the body is over the ${maxBody}-byte limit (--max-body)`);
      }
      if (total + length > body.byteLength) {
        const grown = new Uint8Array(Math.min(maxBody, Math.max(2 * body.byteLength, total + length, SMALL_BYTES)));
        grown.set(body.subarray(0, total));
        body = grown;
      }
      let left = length;
      while (left > 0) {
        if (this.#start === this.#end) await this.#fill(SMALL_BYTES);
        const take = Math.min(left, this.#end - this.#start);
        body.set(this.#buffer.subarray(this.#start, this.#start + take), total);
        this.#start += take;
        total += take;
        left -= take;
      }
      if ((await this.#line()) !== "") throw new FramingError(400, "a chunk is longer than its declared size");
    }
    while ((await this.#line()) !== "") { /* trailers: ignored */ }
    return body.subarray(0, total);
  }

  /**
   * Makes the write buffer hold a head and `bytes` of body: the connection's own (made on first
   * use) or, for a bigger response, one from the pool, given back after the write (#answer).
   */
  #room(bytes: number): void {
    const need = HEAD_ROOM + bytes;
    if (this.#out !== this.#small && this.#out.byteLength >= need) return;
    if (need <= SMALL_BYTES + HEAD_ROOM) {
      this.#releaseOut();
      this.#out = this.#smallOut ??= new Uint8Array(SMALL_BYTES + HEAD_ROOM);
      return;
    }
    const taken = this.#settings.pool.take(need);
    this.#releaseOut();
    this.#out = taken;
  }

  /** Gives a pooled write buffer back (the connection's own stays). */
  #releaseOut(): void {
    if (this.#out !== this.#small && this.#out !== this.#smallOut) this.#settings.pool.give(this.#out);
    this.#out = this.#small;
  }

  async #answer(response: HttpResponse, isHead: boolean, close: boolean): Promise<void> {
    // The body goes to #out[HEAD_ROOM, ...) (unless it is there already, from responseBuffer),
    // and the head right before it, so that one write sends both. The body may be a buffer
    // the server reuses for the next response, on another connection: it is copied before
    // anything is awaited.
    const body = response.body ?? "";
    let bodyLength: number;
    if (typeof body === "string") {
      this.#room(3 * body.length); // UTF-8 takes at most 3 bytes per UTF-16 code unit
      bodyLength = encoder.encodeInto(body, this.#out.subarray(HEAD_ROOM)).written;
    } else if (body.buffer === this.#out.buffer && body.byteOffset === this.#out.byteOffset + HEAD_ROOM) {
      bodyLength = body.byteLength;
    } else {
      this.#room(body.byteLength);
      this.#out.set(body, HEAD_ROOM);
      bodyLength = body.byteLength;
    }
    let head = `HTTP/1.1 ${response.status} ${REASONS[response.status] ?? "Status"}\r\n`;
    for (const [name, value] of Object.entries(response.headers ?? {})) head += `${name}: ${value}\r\n`;
    head += `content-length: ${bodyLength}\r\n${close ? "connection: close\r\n" : ""}\r\n`;
    const bodyEnd = HEAD_ROOM + (isHead ? 0 : bodyLength);
    try {
      const headStart = HEAD_ROOM - head.length;
      const placed = headStart >= 0 ? encoder.encodeInto(head, this.#out.subarray(headStart, HEAD_ROOM)) : null;
      if (placed !== null && placed.read === head.length && placed.written === head.length) {
        await this.#write(this.#out.subarray(headStart, bodyEnd));
      } else {
        // A head over HEAD_ROOM bytes, or not ASCII: its own write.
        const bytes = this.#out.slice(HEAD_ROOM, bodyEnd);
        await this.#write(encoder.encode(head));
        await this.#write(bytes);
      }
    } catch {
      close = true;
    }
    this.#releaseOut();
    if (close) this.#close();
  }

  async #write(bytes: Uint8Array): Promise<void> {
    for (let offset = 0; offset < bytes.byteLength;) offset += await this.#conn.write(bytes.subarray(offset));
  }
}

/** A parsed request head. */
interface Head {
  method: string;
  path: string;
  headers: Map<string, string>;
  keepAlive: boolean;
  expectContinue: boolean;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Parses the request line and headers (RFC 9112); a malformed head is a 400. */
function parseHead(text: string): Head {
  const lines = text.split("\r\n");
  // A server SHOULD ignore empty lines before the request line (RFC 9112 §2.2).
  while (lines.length > 1 && lines[0] === "") lines.shift();
  const parts = lines[0].split(" ");
  if (parts.length !== 3 || !TOKEN.test(parts[0])) {
    throw new FramingError(400, `'${lines[0].slice(0, 80)}' is not an HTTP request line`);
  }
  const [method, target, version] = parts;
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    throw new FramingError(
      version.startsWith("HTTP/") ? 505 : 400,
      `${version.slice(0, 20)} is not HTTP/1.0 or HTTP/1.1`,
    );
  }
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon).toLowerCase() : "";
    if (!TOKEN.test(name)) throw new FramingError(400, `'${line.slice(0, 80)}' is not a header field`);
    const value = line.slice(colon + 1).trim();
    const before = headers.get(name);
    headers.set(name, before === undefined ? value : `${before}, ${value}`);
  }
  let path: string;
  if (target.startsWith("/")) {
    const cut = target.search(/[?#]/);
    path = cut < 0 ? target : target.slice(0, cut);
  } else {
    try {
      path = new URL(target).pathname; // absolute-form, as proxies send
    } catch {
      throw new FramingError(400, `'${target.slice(0, 80)}' is not a request target`);
    }
  }
  const connection = (headers.get("connection") ?? "").toLowerCase();
  const keepAlive = version === "HTTP/1.1" ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
  const expectContinue = version === "HTTP/1.1" && (headers.get("expect") ?? "").toLowerCase() === "100-continue";
  return { method, path, headers, keepAlive, expectContinue };
}

/** How the body is framed; conflicting or unknown framing is a 400/501 (RFC 9112 §6). */
function framingOf(head: Head): Framing {
  const encoding = head.headers.get("transfer-encoding");
  const declared = head.headers.get("content-length");
  if (encoding !== undefined) {
    if (declared !== undefined) {
      throw new FramingError(400, "the request has both Transfer-Encoding and Content-Length; send one");
    }
    if (encoding.toLowerCase() !== "chunked") {
      throw new FramingError(501, `Transfer-Encoding '${encoding}' is not supported; send chunked or a Content-Length`);
    }
    return { kind: "chunked" };
  }
  if (declared === undefined) return { kind: "none" };
  // Repeated Content-Length headers with one value are allowed; differing ones are not.
  const values = new Set(declared.split(",").map((v) => v.trim()));
  const [value] = values;
  if (values.size !== 1 || !/^\d{1,15}$/.test(value)) {
    throw new FramingError(400, `Content-Length '${declared.slice(0, 40)}' is not a byte count`);
  }
  const length = Number(value);
  return length === 0 ? { kind: "none" } : { kind: "length", length };
}

function errorOf(error: HttpError): HttpResponse {
  return {
    status: error.status,
    headers: { "content-type": "application/json", ...error.headers },
    body: JSON.stringify({ error: error.message }),
  };
}

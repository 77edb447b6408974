import assert from "node:assert/strict";
import { type Digests, ensureBinary, platformKey, sha256Hex } from "../ffi/remote.ts";

// The prebuilt-library path of the loader (ffi/remote.ts) against a loopback server; the
// whole published package is exercised by tools/consumer_test.ts.

const PAYLOAD = new TextEncoder().encode("not really a library, but bytes with a known digest\n");

async function withServer(body: Uint8Array<ArrayBuffer>, test: (root: URL, requests: () => number) => Promise<void>) {
  let requests = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    requests++;
    return new Response(body);
  });
  const cache = await Deno.makeTempDir({ prefix: "spindle-remote-test-" });
  const previous = Deno.env.get("XDG_CACHE_HOME");
  Deno.env.set("XDG_CACHE_HOME", cache);
  try {
    await test(new URL(`http://127.0.0.1:${server.addr.port}/pkg/`), () => requests);
  } finally {
    if (previous === undefined) Deno.env.delete("XDG_CACHE_HOME");
    else Deno.env.set("XDG_CACHE_HOME", previous);
    await server.shutdown();
    await Deno.remove(cache, { recursive: true });
  }
}

async function digestsFor(bytes: Uint8Array<ArrayBuffer>): Promise<Digests> {
  const binary = { file: "native/test/libspindle.so", size: bytes.length, sha256: await sha256Hex(bytes) };
  return { VERSION: "0.0.0-test", BINARIES: { [platformKey()]: binary } };
}

Deno.test("a platform without a prebuilt library gets an error naming it and how to build from source", async () => {
  const digests: Digests = { VERSION: "0.0.0-test", BINARIES: {} };
  await assert.rejects(
    ensureBinary(new URL("http://127.0.0.1:9/"), digests),
    (error: Error) =>
      error.message.includes(`no prebuilt native library for ${platformKey()}`) &&
      error.message.includes("tools/deno task build") && error.message.includes("SPINDLE_LIB"),
  );
});

Deno.test("concurrent fetches into an empty cache agree on one verified file, later ones use the cache", async () => {
  await withServer(PAYLOAD, async (root, requests) => {
    const digests = await digestsFor(PAYLOAD);
    const paths = await Promise.all([1, 2, 3, 4].map(() => ensureBinary(root, digests)));
    assert.equal(new Set(paths).size, 1);
    assert.match(paths[0], new RegExp(`/spindle/0\\.0\\.0-test/${digests.BINARIES[platformKey()].sha256}/`));
    assert.deepEqual(await Deno.readFile(paths[0]), PAYLOAD);
    const dir = paths[0].slice(0, paths[0].lastIndexOf("/"));
    assert.deepEqual([...Deno.readDirSync(dir)].map((entry) => entry.name), ["libspindle.so"]);
    const before = requests();
    assert.equal(await ensureBinary(root, digests), paths[0]);
    assert.equal(requests(), before);
  });
});

Deno.test("a tampered download is refused with the file and the expected digest, and nothing is cached", async () => {
  const tampered = PAYLOAD.slice();
  tampered[0] ^= 1;
  await withServer(tampered, async (root) => {
    const digests = await digestsFor(PAYLOAD);
    const expected = digests.BINARIES[platformKey()].sha256;
    await assert.rejects(
      ensureBinary(root, digests),
      (error: Error) => error.message.includes(expected) && error.message.includes("native/test/libspindle.so"),
    );
    const cache = Deno.env.get("XDG_CACHE_HOME")!;
    assert.deepEqual([...Deno.readDirSync(cache)], []);
  });
});

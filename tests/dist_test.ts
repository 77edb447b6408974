import assert from "node:assert/strict";
import { bareSpecifiers, registryFiles } from "../tools/consumer_test.ts";
import { DIST_TARGETS } from "../tools/dist.ts";
import { parseConsumerSummary } from "../tools/test.ts";
import { sha256Hex } from "../ffi/remote.ts";

// The pieces of `deno task dist` and `deno task test:consumer` that run without building: the
// end-to-end run itself is tools/consumer_test.ts (a step of `deno task test`).

Deno.test("the loopback registry lays the package out as JSR does, with sha256-<hex> checksums", async () => {
  const bytes = new TextEncoder().encode("export const x = 1;\n");
  const served = await registryFiles("1.2.3", [{ path: "/mod.ts", bytes }], { ".": "./mod.ts" });
  const json = (path: string) => JSON.parse(new TextDecoder().decode(served.get(path)));
  assert.deepEqual(json("/@spindle/spindle/meta.json").versions, { "1.2.3": {} });
  assert.equal(json("/@spindle/spindle/meta.json").latest, "1.2.3");
  assert.deepEqual(json("/@spindle/spindle/1.2.3_meta.json"), {
    manifest: { "/mod.ts": { size: bytes.length, checksum: `sha256-${await sha256Hex(bytes)}` } },
    exports: { ".": "./mod.ts" },
  });
  assert.deepEqual(served.get("/@spindle/spindle/1.2.3/mod.ts"), bytes);
  assert.ok(served.has("/@spindle/meta.json"));
});

Deno.test("bare specifiers (the ones deno publish would rewrite) are found, the others are not", () => {
  const source = `import { a } from "./a.ts";
import type { B } from "../b.ts";
import * as c from "npm:c@1";
export { d } from "jsr:@d/d";
import e from "node:fs";
import { f } from "@scope/f";
const g = await import("g");
const h = await import("./h.ts");`;
  assert.deepEqual(bareSpecifiers(source), ["@scope/f", "g"]);
});

Deno.test("every dist target has a unique platform key and a library file name", () => {
  const keys = DIST_TARGETS.map((target) => target.key);
  assert.equal(new Set(keys).size, keys.length);
  for (const target of DIST_TARGETS) {
    assert.match(target.key, /^(linux|darwin|windows)-(x86_64|aarch64)$/);
    assert.match(target.file, /^(lib)?spindle\.(so|dylib|dll)$/);
  }
  assert.ok(keys.includes("linux-x86_64"));
});

Deno.test("tools/test.ts reads the consumer test's summary line", () => {
  assert.deepEqual(parseConsumerSummary("consumer: ok   x\nconsumer: 14 passed, 0 failed\n"), {
    passed: 14,
    failed: 0,
  });
  assert.deepEqual(parseConsumerSummary("consumer: 12 passed, 2 failed"), { passed: 12, failed: 2 });
  assert.equal(parseConsumerSummary("error: Uncaught Error: dist failed"), null);
});

import assert from "node:assert/strict";
import { symbols } from "../ffi/symbols.ts";
import { ROOT } from "./helpers.ts";

Deno.test("ffi/symbols.ts lists every Zig export, in the same order", () => {
  const source = Deno.readTextFileSync(`${ROOT}/zig/src/exports.zig`);
  const exported = [...source.matchAll(/^pub fn (spindle_\w+)\(/gm)].map((m) => m[1]);
  const declared = Object.entries(symbols).map(([key, value]) => ("name" in value ? value.name : key));
  // Aliases (the nonblocking variants) follow their synchronous symbol; compare first uses.
  const firstUses = declared.filter((name, i) => declared.indexOf(name) === i);
  assert.deepEqual(firstUses, exported);
});

Deno.test("op codes in TypeScript mirror the Zig OpCode enum", async () => {
  const { OP } = await import("../lib/ops/dispatch.ts");
  const source = Deno.readTextFileSync(`${ROOT}/zig/src/ops.zig`);
  const body = source.slice(source.indexOf("pub const OpCode = enum(u32) {"), source.indexOf("pub fn fromInt"));
  const zig = Object.fromEntries([...body.matchAll(/^\s+(\w+) = (\d+),/gm)].map((m) => [m[1], Number(m[2])]));
  assert.deepEqual({ ...OP }, zig);
});

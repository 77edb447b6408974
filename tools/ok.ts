/**
 * `deno task ok`: everything a reviewer runs — formatting, lint, type check, doc lint, zig
 * fmt, then every test.
 *
 * @module
 */
import { DEV_LOCK, ROOT, run, ZIG_DIR } from "./configs.ts";

const steps: [string, string, string[], string][] = [
  ["deno fmt --check", "deno", ["fmt", "--check"], ROOT],
  ["deno lint", "deno", ["lint"], ROOT],
  ["deno check", "deno", ["check", DEV_LOCK, "main.ts", "mod.ts", "tests/", "bench/", "tools/"], ROOT],
  ["deno doc --lint", "deno", ["doc", "--lint", "mod.ts"], ROOT],
  ["zig fmt --check", "zig", ["fmt", "--check", "."], ZIG_DIR],
  ["tests", "deno", ["run", "-A", "tools/test.ts", ...Deno.args], ROOT],
];

for (const [name, command, args, cwd] of steps) {
  console.error(`\n=== ${name}`);
  const code = await run(command, args, { cwd });
  if (code !== 0) {
    console.error(`ok: '${name}' failed (exit code ${code})`);
    Deno.exit(code);
  }
}
console.error("\nok: everything passed");

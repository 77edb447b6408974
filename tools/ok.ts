/**
 * `deno task ok`: everything a reviewer runs — formatting, lint, type check, doc lint, zig
 * fmt, then every test.
 *
 * @module
 */
import { ROOT, run, STATIC_CHECKS } from "./configs.ts";

const steps: [string, string, string[], string][] = [
  ...STATIC_CHECKS,
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

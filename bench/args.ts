/**
 * The command line of the bench scripts: `--help` prints the script's own module doc (its
 * usage and what it measures), and an unknown or malformed flag is one line naming it, exit
 * code 2, not a stack trace.
 *
 * @module
 */
import type { ParseArgsConfig } from "node:util";
import { parse, UsageError } from "../lib/cli/usage.ts";

/** The leading JSDoc block of the script at `url`, without its comment markers and tags. */
export function moduleDoc(url: string): string {
  const source = Deno.readTextFileSync(new URL(url));
  const block = source.match(/^\/\*\*([\s\S]*?)\*\//)?.[1] ?? "";
  return block
    .split("\n")
    .map((line) => line.replace(/^\s*\* ?/, ""))
    .filter((line) => !line.startsWith("@module"))
    .join("\n")
    .trim();
}

/**
 * Parses `Deno.args` strictly against `options` for the bench script at `url` (its
 * `import.meta.url`). `--help` or `-h` prints the script's module doc and exits 0; a bad flag
 * prints what is wrong and exits 2.
 */
export function benchArgs<T extends NonNullable<ParseArgsConfig["options"]>>(url: string, options: T) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(moduleDoc(url));
    Deno.exit(0);
  }
  try {
    return parse(Deno.args, options);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}\n\nRun with --help for the options.`);
    Deno.exit(2);
  }
}

/**
 * The `spindle` command line: dispatches subcommands.
 *
 * @module
 */
import { inferCommand } from "./infer.ts";
import { parallelInfoCommand } from "./parallel_info.ts";
import { serveCommand } from "./serve.ts";
import { UsageError } from "./usage.ts";
import { SpindleError } from "../../ffi/status.ts";

/** Top-level usage text. */
export const USAGE = `Usage: deno run -A main.ts <command> [options]

Commands:
  infer           run a model (default: the embedded builtin:example) and report latency
  parallel_info   print thread settings and backends (--json for tools)
  serve           serve models over the Open Inference Protocol (KServe v2 REST)
  help            show this help

Run 'deno run -A main.ts <command> --help' for a command's options.`;

const COMMANDS: Record<string, (args: string[]) => number | Promise<number>> = {
  infer: inferCommand,
  parallel_info: parallelInfoCommand,
  serve: serveCommand,
};

/** Runs the CLI with `args`; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    (command === undefined ? console.error : console.log)(USAGE);
    return command === undefined ? 2 : 0;
  }
  const handler = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  try {
    if (handler === undefined) throw new UsageError(`unknown command '${command}'`);
    return await handler(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`error: ${error.message}\n\n${handler === undefined ? USAGE : "Run with --help for usage."}`);
      return 2;
    }
    if (error instanceof SpindleError || error instanceof RangeError || error instanceof TypeError) {
      console.error(`error: ${error.message}${error instanceof SpindleError ? ` (${error.code})` : ""}`);
      if (error instanceof SpindleError && error.code === "too_large" && command === "infer") {
        console.error("hint: infer's --memory-budget raises the budget, e.g. --memory-budget 8G");
      }
      return 1;
    }
    if (
      error instanceof Deno.errors.NotFound || error instanceof Deno.errors.PermissionDenied ||
      error instanceof Deno.errors.NotCapable
    ) {
      console.error(`error: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

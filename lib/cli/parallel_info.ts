/**
 * `parallel_info`: prints the thread settings and backends.
 *
 * @module
 */
import { parallelInfo, parallelInfoJson } from "../parallel_info.ts";
import { parse } from "./usage.ts";

/** Usage text of `parallel_info`. */
export const PARALLEL_INFO_USAGE = `Usage: deno run -A main.ts parallel_info [--json]

Prints Spindle's thread settings and backends, shaped like PyTorch's
torch.__config__.parallel_info().

Options:
  --json    print the same facts as one JSON object
  -h, --help  show this help`;

/** Runs `parallel_info` with its arguments; returns the exit code. */
export function parallelInfoCommand(args: string[]): number {
  const { values } = parse(args, { json: { type: "boolean" }, help: { type: "boolean", short: "h" } });
  if (values.help) {
    console.log(PARALLEL_INFO_USAGE);
    return 0;
  }
  console.log(values.json ? JSON.stringify(parallelInfoJson(), null, 2) : parallelInfo());
  return 0;
}

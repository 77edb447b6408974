/**
 * Spindle's command line: `deno run -A main.ts <command>`.
 *
 * @module
 */
import { main } from "./lib/cli/main.ts";

if (import.meta.main) Deno.exit(await main(Deno.args));

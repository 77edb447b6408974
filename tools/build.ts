/**
 * `deno task build`: builds libspindle (ReleaseFast). With `--all`, also builds every
 * configuration (omp/tbb × openblas/native) into zig/zig-out/<threading>-<blas>/.
 *
 * @module
 */
import { allConfigs, configName, libraryArgs, run, ZIG_DIR } from "./configs.ts";

const all = Deno.args.includes("--all");
let code = await run("zig", libraryArgs(null), { cwd: ZIG_DIR });
if (code === 0 && all) {
  for (const config of allConfigs()) {
    console.error(`build: ${configName(config)}`);
    code = await run("zig", libraryArgs(config), { cwd: ZIG_DIR });
    if (code !== 0) break;
  }
}
Deno.exit(code);

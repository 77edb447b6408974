/**
 * Finds, builds if needed, and opens libspindle. Lookup order:
 *
 * 1. `SPINDLE_LIB` — an explicit path to a built library;
 * 2. the local build `zig/zig-out/lib/libspindle.so`, resolved from this file's URL (never
 *    from the current directory);
 * 3. when that build is missing or older than the Zig sources and a Zig toolchain is
 *    present (`.toolchain/` or `PATH`) that this process may run, it is built first, with a
 *    progress line on stderr; without run permission a stale build is used with a warning
 *    and a missing one is an error saying to run `deno task build`;
 * 4. otherwise an error that says exactly what to run.
 *
 * @module
 */
import { type Symbols, symbols } from "./symbols.ts";
import { lastErrorMessage, SpindleError } from "./status.ts";

/** The ABI version this TypeScript expects (zig/src/exports.zig `abi_version`). */
export const ABI_VERSION = 3;

const LIBRARY_FILE = Deno.build.os === "darwin"
  ? "libspindle.dylib"
  : Deno.build.os === "windows"
  ? "spindle.dll"
  : "libspindle.so";

/** Paths the loader derives from this module's location. */
export function localPaths(): { root: string; zigDir: string; library: string; zig: string } | null {
  const url = new URL("..", import.meta.url);
  if (url.protocol !== "file:") return null;
  const root = decodeURIComponent(url.pathname).replace(/\/$/, "");
  return {
    root,
    zigDir: `${root}/zig`,
    library: `${root}/zig/zig-out/lib/${LIBRARY_FILE}`,
    zig: `${root}/.toolchain/zig/ziglang/zig`,
  };
}

/**
 * A file's modification time, or null when it does not exist. Missing read permission is
 * an error that says so: reporting the library as missing would name the wrong cause.
 */
function mtime(path: string): number | null {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? null;
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
      throw new Deno.errors.NotCapable(
        `Spindle needs read access to ${path} to find its native library; run with --allow-read ` +
          `(or -A), or set SPINDLE_LIB to the library's path and allow reading that file`,
      );
    }
    return null;
  }
}

/** Whether this process may run `command` without a prompt. */
function mayRun(command: string): boolean {
  return Deno.permissions.querySync({ name: "run", command }).state === "granted";
}

function newestSource(zigDir: string): number {
  let newest = 0;
  const visit = (dir: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) visit(path);
      else if (entry.name.endsWith(".zig") || entry.name.endsWith(".zon")) {
        newest = Math.max(newest, mtime(path) ?? 0);
      }
    }
  };
  visit(`${zigDir}/src`);
  for (const file of ["build.zig", "build.zig.zon"]) newest = Math.max(newest, mtime(`${zigDir}/${file}`) ?? 0);
  return newest;
}

function findZig(bundled: string): string | null {
  const exists = (path: string) => {
    try {
      return mtime(path) !== null;
    } catch {
      return false; // a PATH entry this process may not read holds no usable zig
    }
  };
  if (exists(bundled)) return bundled;
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && exists(`${dir}/zig`)) return `${dir}/zig`;
  }
  return null;
}

/** Builds the library with zig; throws with zig's output when the build fails. */
function build(zig: string, zigDir: string): void {
  const output = new Deno.Command(zig, {
    args: ["build", "--summary", "none"],
    cwd: zigDir,
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!output.success) {
    const log = new TextDecoder().decode(output.stderr);
    throw new Error(`building libspindle with '${zig} build' in ${zigDir} failed:\n${log}`);
  }
}

/** Resolves the library path per the lookup order, building it when needed. */
export function resolveLibrary(): string {
  const explicit = Deno.env.get("SPINDLE_LIB");
  if (explicit) {
    if (mtime(explicit) === null) {
      throw new Error(`SPINDLE_LIB points to '${explicit}', which does not exist`);
    }
    return explicit;
  }
  const paths = localPaths();
  if (paths === null) {
    throw new Error(
      `libspindle is not bundled with this copy of Spindle (${import.meta.url}); ` +
        "set SPINDLE_LIB to the path of a built libspindle",
    );
  }
  const built = mtime(paths.library);
  const hasSources = mtime(`${paths.zigDir}/build.zig`) !== null;
  const stale = built === null || (hasSources && built < newestSource(paths.zigDir));
  if (!stale) return paths.library;
  const zig = hasSources ? findZig(paths.zig) : null;
  if (zig !== null && !mayRun(zig)) {
    // Never rebuild inside a process that was not allowed to run the toolchain.
    const rebuild = `run 'deno task build' in ${paths.root}, or allow running ${zig}`;
    if (built === null) throw new Error(`libspindle is not built (${paths.library} is missing); ${rebuild}`);
    console.error(`spindle: ${paths.library} is older than the Zig sources; using it as it is (${rebuild})`);
    return paths.library;
  }
  if (zig === null) {
    if (built !== null) return paths.library; // stale but usable; nothing to rebuild with
    throw new Error(
      `libspindle is not built (${paths.library} is missing) and no Zig toolchain was found. ` +
        `Run 'bash ${paths.root}/tools/bootstrap.sh' to install the pinned toolchain, then ` +
        `'cd ${paths.zigDir} && ../.toolchain/zig/ziglang/zig build', or set SPINDLE_LIB.`,
    );
  }
  console.error(`spindle: building the native library (zig build in ${paths.zigDir}; about a minute)...`);
  const started = performance.now();
  build(zig, paths.zigDir);
  console.error(`spindle: built ${paths.library} in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return paths.library;
}

let loaded: { library: Deno.DynamicLibrary<typeof symbols>; path: string } | null = null;

/** Opens libspindle once per process and returns its symbols. */
export function native(): Symbols {
  return open().library.symbols;
}

/** The path of the library this process loaded. */
export function libraryPath(): string {
  return open().path;
}

function open(): { library: Deno.DynamicLibrary<typeof symbols>; path: string } {
  if (loaded !== null) return loaded;
  const path = resolveLibrary();
  const library = Deno.dlopen(path, symbols);
  const abi = library.symbols.spindle_abi_version();
  if (abi !== ABI_VERSION) {
    library.close();
    throw new Error(
      `libspindle at ${path} has ABI version ${abi}, this TypeScript expects ${ABI_VERSION}; rebuild it`,
    );
  }
  loaded = { library, path };
  return loaded;
}

/** Throws a {@link SpindleError} with the native message when `status` is not 0. */
export function check(status: number): void {
  if (status !== 0) throw new SpindleError(status, lastErrorMessage(native().spindle_last_error));
}

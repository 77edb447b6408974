/**
 * The build configurations Spindle is tested in, and where each one's library lands.
 *
 * @module
 */

/** One `zig build` configuration. */
export interface BuildConfig {
  threading: "omp" | "tbb";
  blas: "openblas" | "native";
}

/** Repository root, resolved from this file. */
export const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
/**
 * The lockfile of the tests and benchmarks (`--lock=deno.dev.lock`): deno.lock holds only what
 * the library needs, because Deno downloads every npm package of the lockfile on a first run,
 * and onnxruntime-node (288 MB, a benchmark peer) must not reach a newcomer's first `infer`.
 */
export const DEV_LOCK = "--lock=deno.dev.lock";
/** The zig project directory. */
export const ZIG_DIR = `${ROOT}/zig`;

/** Whether the system OpenBLAS is installed (what build.zig checks too). */
export function openblasAvailable(): boolean {
  const dirs = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"];
  return dirs.some((dir) => {
    try {
      Deno.statSync(`${dir}/libopenblas.so`);
      return true;
    } catch {
      return false;
    }
  });
}

/** Every configuration this machine can build: both threading backends × both BLAS modes. */
export function allConfigs(): BuildConfig[] {
  const blasModes: BuildConfig["blas"][] = openblasAvailable() ? ["openblas", "native"] : ["native"];
  return blasModes.flatMap((blas) => (["omp", "tbb"] as const).map((threading) => ({ threading, blas })));
}

/** A configuration's name, e.g. `omp-openblas`. */
export function configName(config: BuildConfig): string {
  return `${config.threading}-${config.blas}`;
}

/** The install prefix of a configuration's library (relative to zig/). */
export function configPrefix(config: BuildConfig): string {
  return `zig-out/${configName(config)}`;
}

/** zig build's arguments for a configuration's library (the default build for null). */
export function libraryArgs(config: BuildConfig | null): string[] {
  if (config === null) return ["build", "--summary", "none"];
  const flags = [`-Dthreading=${config.threading}`, `-Dblas=${config.blas}`];
  return ["build", "--summary", "none", "-p", configPrefix(config), ...flags];
}

/** The library path of a configuration. */
export function configLibrary(config: BuildConfig): string {
  return `${ZIG_DIR}/${configPrefix(config)}/lib/libspindle.so`;
}

/** Runs a command, inheriting stdio; returns its exit code. */
export async function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<number> {
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd ?? ROOT,
    env: options.env,
    stdout: "inherit",
    stderr: "inherit",
  });
  return (await child.output()).code;
}

/**
 * Runs a command, teeing its combined output to the terminal (unless `echo` is false: the
 * caller prints it whole, as steps running side by side do); returns code and text.
 */
export async function runCaptured(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; echo?: boolean } = {},
): Promise<{ code: number; output: string }> {
  const echo = options.echo ?? true;
  const child = new Deno.Command(command, {
    args,
    cwd: options.cwd ?? ROOT,
    env: options.env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const decoder = new TextDecoder();
  let output = "";
  const pump = async (stream: ReadableStream<Uint8Array>, sink: { writeSync(p: Uint8Array): number }) => {
    for await (const chunk of stream) {
      if (echo) sink.writeSync(chunk);
      output += decoder.decode(chunk, { stream: true });
    }
  };
  await Promise.all([pump(child.stdout, Deno.stdout), pump(child.stderr, Deno.stderr)]);
  const { code } = await child.status;
  return { code, output };
}

/** The static checks of `deno task ok` and CI: name, command, arguments, working directory. */
export const STATIC_CHECKS: [string, string, string[], string][] = [
  ["deno fmt --check", "deno", ["fmt", "--check"], ROOT],
  ["deno lint", "deno", ["lint"], ROOT],
  ["deno check", "deno", ["check", DEV_LOCK, "main.ts", "mod.ts", "tests/", "bench/", "tools/"], ROOT],
  ["deno doc --lint", "deno", ["doc", "--lint", "mod.ts"], ROOT],
  ["zig fmt --check", "zig", ["fmt", "--check", "."], ZIG_DIR],
];

/**
 * Test helpers: run the CLI or a snippet in a fresh process with a controlled environment.
 *
 * @module
 */

/** The repository root. */
export const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
/** file:// URL of mod.ts, for snippets run in subprocesses. */
export const MOD_URL = new URL("../mod.ts", import.meta.url).href;

/** What a subprocess printed and returned. */
export interface ProcessResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A clean environment: PATH, HOME, SPINDLE_LIB (so every config is tested) plus `extra`. */
function environment(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "SPINDLE_LIB", "DENO_DIR", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}

/** Runs `deno ...args` in `cwd` with `env` on top of a clean environment. */
export async function execute(args: string[], env: Record<string, string>, cwd = ROOT): Promise<ProcessResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: environment(env),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** Runs `deno run -A main.ts ...args` with `env` on top of a clean environment. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<ProcessResult> {
  return execute(["run", "-A", `${ROOT}/main.ts`, ...args], env);
}

/** Runs a TypeScript snippet (which can import from `MOD_URL`) in a fresh process. */
export function runSnippet(
  code: string,
  env: Record<string, string> = {},
  cwd = ROOT,
  flags: string[] = [],
): Promise<ProcessResult> {
  return execute(["eval", ...flags, "--ext=ts", code], env, cwd);
}

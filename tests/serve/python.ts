/**
 * The Python side of the tritonclient tests: a virtual environment in the git-ignored
 * `.cache/py-serve` with `tritonclient[http]` and numpy from PyPI, created on first use and
 * reused after (a check of the imports takes about a second; the install about 20 s).
 *
 * @module
 */
import { ROOT } from "../helpers.ts";

/** Where the environment lives (ignored by git as part of /.cache/). */
export const VENV = `${ROOT}/.cache/py-serve`;
/** What is installed: tritonclient pinned to the version the tests were written against. */
const PACKAGES = ["tritonclient[http]==2.73.0", "numpy<3"];
/** pip output that means PyPI could not be reached (then the tests are skipped, not failed). */
const UNREACHABLE = /connection|network|resolve|timed out|temporary failure|no matching distribution|proxy/i;

async function run(command: string, args: string[], timeoutMs: number) {
  try {
    const output = await new Deno.Command(command, {
      args,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
    const decoder = new TextDecoder();
    return { ok: output.success, text: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
  } catch (error) {
    return { ok: false, text: error instanceof Error ? error.message : String(error), missing: true };
  }
}

/**
 * The venv's python with tritonclient importable, or why the tests must be skipped.
 *
 * @throws {Error} when PyPI was reached but the install failed anyway.
 */
export async function tritonPython(): Promise<{ python: string } | { skip: string }> {
  const python = `${VENV}/bin/python`;
  const probe = ["-c", "import tritonclient.http, numpy"];
  if ((await run(python, probe, 60_000)).ok) return { python };
  const system = await run("python3", ["--version"], 10_000);
  if (!system.ok) return { skip: `python3 is not available (${system.text.trim()})` };
  const venv = await run("python3", ["-m", "venv", "--clear", VENV], 120_000);
  if (!venv.ok) return { skip: `python3 -m venv failed: ${venv.text.trim().split("\n").pop()}` };
  const pip = await run(
    `${VENV}/bin/pip`,
    ["install", "--disable-pip-version-check", "--no-input", "-q", "--timeout", "30", ...PACKAGES],
    600_000,
  );
  if (!pip.ok) {
    const reason = pip.text.trim().split("\n").slice(-3).join(" ");
    if (UNREACHABLE.test(pip.text)) return { skip: `PyPI is unreachable: ${reason}` };
    throw new Error(`pip install ${PACKAGES.join(" ")} failed: ${reason}`);
  }
  if (!(await run(python, probe, 60_000)).ok) throw new Error(`tritonclient does not import after installing it`);
  return { python };
}

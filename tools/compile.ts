/**
 * `deno task compile`: one executable of the CLI under dist/ (issue 13). `deno compile` needs
 * denort, Deno's runtime-only binary, which it downloads from dl.deno.land, or takes from
 * `DENORT_BIN`. The npm `deno`/`@deno/linux-x64-glibc` packages ship the full CLI only (no
 * package named denort is in the npm or PyPI name lists of this workplace), and passing the full `deno` binary as DENORT_BIN yields a plain Deno that ignores the
 * embedded program (it starts a REPL). So on a machine that cannot reach dl.deno.land this
 * task stops early and says so, instead of failing deep inside `deno compile`.
 *
 * Where denort is available, it runs `deno task dist` and compiles main.ts with the prebuilt
 * library and ffi/digests.ts included. Not yet proven: whether the loader can dlopen the
 * library from the executable's embedded file system or must extract it first (untested here).
 *
 * @module
 */
import { ROOT } from "./configs.ts";

const DENORT_URL = `https://dl.deno.land/release/v${Deno.version.deno}/denort-x86_64-unknown-linux-gnu.zip`;

/** Why denort is unavailable, or null when `deno compile` can get it. */
async function denortProblem(): Promise<string | null> {
  const explicit = Deno.env.get("DENORT_BIN");
  if (explicit) {
    try {
      Deno.statSync(explicit);
      return null;
    } catch {
      return `DENORT_BIN points to '${explicit}', which does not exist`;
    }
  }
  try {
    const response = await fetch(DENORT_URL, { method: "HEAD", signal: AbortSignal.timeout(10_000) });
    await response.body?.cancel();
    return response.ok ? null : `${DENORT_URL} answered HTTP ${response.status}`;
  } catch (error) {
    const cause = (error as Error).cause;
    return `${DENORT_URL} is unreachable (${cause instanceof Error ? cause.message : (error as Error).message})`;
  }
}

if (import.meta.main) {
  const problem = await denortProblem();
  if (problem !== null) {
    console.error(
      `compile: blocked: 'deno compile' needs denort ${Deno.version.deno}, and ${problem}.\n` +
        "compile: npm 'deno' and '@deno/linux-x64-glibc' carry the full CLI, not denort, and the full CLI ignores\n" +
        "compile: an embedded program. Set DENORT_BIN to a denort of this version, or run where\n" +
        "compile: dl.deno.land is reachable.",
    );
    Deno.exit(1);
  }
  const dist = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", "tools/dist.ts"], cwd: ROOT }).output();
  if (!dist.success) Deno.exit(dist.code);
  const args = [
    "compile",
    "-A",
    "--include",
    "native/",
    "--include",
    "ffi/digests.ts",
    "-o",
    "dist/spindle",
    "main.ts",
  ];
  console.error(`compile: deno ${args.join(" ")}`);
  const compiled = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT }).output();
  Deno.exit(compiled.code);
}

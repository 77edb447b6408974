/**
 * Triton's load tester, `perf_analyzer`, for `deno task bench:serve`, in the git-ignored
 * `.cache/perf-analyzer`. PyPI's `perf-analyzer` package has no binary for this platform, but
 * the tritonclient wheels up to 2.35 ship one (`bin/perf_analyzer`, C++, libcurl). It links
 * two libraries the system lacks: libb64 (Debian's libb64-0d) and the CUDA runtime
 * (libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12; loaded, never used on a CPU). Both
 * are fetched beside it. Bench-only: nothing here runs in CI.
 *
 *   deno run -A tools/fetch_perf_analyzer.ts   # prints the command line to run it
 *
 * @module
 */
import { exists } from "./fetch_models.ts";
const ROOT = decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
const HOME = `${ROOT}/.cache/perf-analyzer`;
const WHEEL = "tritonclient==2.35.0";
const CUDART = "nvidia-cuda-runtime-cu12==12.9.79";

/** How to run perf_analyzer: the binary and the environment it needs. */
export interface PerfAnalyzer {
  binary: string;
  env: Record<string, string>;
}

async function run(command: string, args: string[], cwd = HOME): Promise<string> {
  const output = await new Deno.Command(command, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) {
    throw new Error(`${command} ${args.join(" ")} failed: ${text.trim().split("\n").slice(-3).join(" ")}`);
  }
  return text;
}

/** Extracts the members of a wheel (a zip) whose paths match `pattern` into `dir`, flat. */
async function unzip(wheel: string, pattern: string, dir: string): Promise<void> {
  const script = [
    "import re, sys, zipfile, os",
    "z = zipfile.ZipFile(sys.argv[1])",
    "for name in z.namelist():",
    "    if re.search(sys.argv[2], name):",
    "        path = os.path.join(sys.argv[3], os.path.basename(name))",
    "        open(path, 'wb').write(z.read(name))",
    "        os.chmod(path, 0o755)",
  ].join("\n");
  await run("python3", ["-c", script, wheel, pattern, dir]);
}

/**
 * perf_analyzer, fetched on first use.
 *
 * @throws {Error} naming the step that failed (PyPI or Debian unreachable, no python3/apt-get).
 */
export async function perfAnalyzer(): Promise<PerfAnalyzer> {
  const binary = `${HOME}/bin/perf_analyzer`;
  const lib = `${HOME}/lib`;
  const tool = { binary, env: { LD_LIBRARY_PATH: lib } };
  if (await exists(`${HOME}/.ready`)) return tool;
  await Deno.mkdir(`${HOME}/bin`, { recursive: true });
  await Deno.mkdir(lib, { recursive: true });
  await Deno.mkdir(`${HOME}/download`, { recursive: true });
  console.error(`perf_analyzer: fetching ${WHEEL}, ${CUDART} (PyPI) and libb64-0d (Debian) into ${HOME}`);
  const pip = ["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", "download"];
  await run("python3", [...pip, "--only-binary=:all:", "--platform", "manylinux1_x86_64", WHEEL]);
  await run("python3", [...pip, "--only-binary=:all:", "--platform", "manylinux2014_x86_64", CUDART]);
  for (const entry of Deno.readDirSync(`${HOME}/download`)) {
    const wheel = `${HOME}/download/${entry.name}`;
    if (entry.name.startsWith("tritonclient")) await unzip(wheel, "data/bin/perf_analyzer$", `${HOME}/bin`);
    if (entry.name.startsWith("nvidia_cuda_runtime")) await unzip(wheel, "lib/libcudart\\.so\\.12$", lib);
  }
  await run("apt-get", ["download", "libb64-0d"], `${HOME}/download`);
  const deb = [...Deno.readDirSync(`${HOME}/download`)].find((e) => e.name.startsWith("libb64-0d"));
  if (deb === undefined) throw new Error("apt-get download libb64-0d left no package");
  await run("dpkg-deb", ["-x", `download/${deb.name}`, "deb"]);
  for (const entry of Deno.readDirSync(`${HOME}/deb/usr/lib/x86_64-linux-gnu`)) {
    if (entry.name.startsWith("libb64.so")) {
      await Deno.copyFile(`${HOME}/deb/usr/lib/x86_64-linux-gnu/${entry.name}`, `${lib}/${entry.name}`);
    }
  }
  // It prints its usage (and fails) without arguments: that it starts at all is the check.
  const probe = await new Deno.Command(binary, { env: tool.env, stdout: "piped", stderr: "piped" }).output();
  const usage = new TextDecoder().decode(probe.stderr) + new TextDecoder().decode(probe.stdout);
  if (!/--concurrency-range/.test(usage)) throw new Error(`perf_analyzer does not start: ${usage.slice(0, 300)}`);
  await Deno.writeTextFile(`${HOME}/.ready`, `${WHEEL}\n${CUDART}\nlibb64-0d\n`);
  return tool;
}

if (import.meta.main) {
  const tool = await perfAnalyzer();
  console.log(`LD_LIBRARY_PATH=${tool.env.LD_LIBRARY_PATH} ${tool.binary}`);
}

/**
 * Downloads the ONNX backend node tests (they ship inside the `onnx` wheel on PyPI) and
 * extracts them to .cache/onnx-node-tests/<version>/ (git-ignored). Uses `pip download` when
 * pip exists, PyPI's JSON API otherwise; `unzip` extracts.
 *
 *   deno run -A tools/fetch_onnx_tests.ts        # prints the folder
 *
 * @module
 */
import { exists } from "./fetch_models.ts";

/** The pinned onnx release whose node tests the conformance harness runs. */
// 1.21.0 is the newest release whose wheel still carries onnx/backend/test/data/node (the
// 1.23.x wheels and sdists ship without it).
export const ONNX_VERSION = "1.21.0";

const root = new URL("../.cache/onnx-node-tests/", import.meta.url);

/** The folder holding test_* directories once fetched. */
export function nodeTestsDir(version = ONNX_VERSION): string {
  return new URL(`${version}/node/`, root).pathname;
}

async function run(command: string, args: string[]): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
    return success;
  } catch {
    return false;
  }
}

async function downloadWheel(folder: string, version: string): Promise<string> {
  if (await run("pip", ["download", "--no-deps", "--quiet", `onnx==${version}`, "-d", folder])) {
    for await (const entry of Deno.readDir(folder)) if (entry.name.endsWith(".whl")) return `${folder}/${entry.name}`;
  }
  const response = await fetch(`https://pypi.org/pypi/onnx/${version}/json`);
  if (!response.ok) throw new Error(`PyPI answered ${response.status} for onnx ${version}`);
  const info = await response.json() as { urls: { filename: string; url: string }[] };
  const wheel = info.urls.find((u) => u.filename.endsWith(".whl"));
  if (!wheel) throw new Error(`onnx ${version} has no wheel on PyPI`);
  const path = `${folder}/${wheel.filename}`;
  await Deno.writeFile(path, new Uint8Array(await (await fetch(wheel.url)).arrayBuffer()));
  return path;
}

/**
 * Makes sure the node tests are on disk.
 *
 * @returns The folder of test_* directories.
 */
export async function fetchNodeTests(version = ONNX_VERSION): Promise<string> {
  const target = nodeTestsDir(version);
  if (await exists(`${target}/test_abs/model.onnx`)) return target;
  const work = await Deno.makeTempDir({ prefix: "onnx-wheel-" });
  try {
    const wheel = await downloadWheel(work, version);
    const extracted = `${work}/x`;
    if (!await run("unzip", ["-q", wheel, "onnx/backend/test/data/node/*", "-d", extracted])) {
      throw new Error("unzip failed (is unzip installed?)");
    }
    const versionDir = new URL(`${version}/`, root).pathname;
    await Deno.mkdir(versionDir, { recursive: true });
    await Deno.remove(target, { recursive: true }).catch(() => {});
    await Deno.rename(`${extracted}/onnx/backend/test/data/node`, target);
    return target;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) console.log(await fetchNodeTests());

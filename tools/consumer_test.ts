/**
 * `deno task test:consumer`: Spindle as a newcomer gets it from JSR, proven on this machine
 * (which cannot reach jsr.io).
 *
 * 1. `deno task dist` builds the prebuilt library and ffi/digests.ts;
 * 2. the package's files are the ones `deno publish --dry-run` lists, copied as they are (the
 *    run checks that no module has a bare import-map specifier, the one thing `deno publish`
 *    would rewrite);
 * 3. a loopback JSR-compatible registry serves them (`@scope/meta.json`,
 *    `@scope/name/meta.json`, `@scope/name/<version>_meta.json` with each file's size and
 *    `sha256-<hex>` checksum, and the files under `@scope/name/<version>/`);
 * 4. a consumer script in an empty temporary folder, with a fresh DENO_DIR, HOME and cache, a
 *    PATH without Zig and `JSR_URL` pointing at the registry, imports `jsr:@spindle/spindle`,
 *    loads a saved model and runs it: its output must match the repository build's. Then: a
 *    warm run, two processes filling an empty cache at once, the CLI through `jsr:`, a
 *    tampered and a truncated binary (refused with the digest error), a tampered
 *    ffi/digests.ts (refused by Deno's own integrity check), and an offline run.
 *
 * Ends with `consumer: N passed, N failed` and the timings; exit code 1 on any failure.
 *
 * @module
 */
import { ROOT } from "./configs.ts";
import { sha256Hex } from "../ffi/remote.ts";
import { packageVersion } from "./dist.ts";

const SCOPE = "@spindle";
const NAME = "spindle";
const PACKAGE = `${SCOPE}/${NAME}`;
const BINARY = "native/linux-x86_64/libspindle.so";
const DIGESTS = "ffi/digests.ts";
/** Largest difference allowed between the baseline-CPU binary and the native-CPU repo build. */
const TOLERANCE = 1e-4;

/** One file of the package: its path from the package root (with a leading slash) and bytes. */
interface PackageFile {
  path: string;
  bytes: Uint8Array<ArrayBuffer>;
}

/** What a consumer run printed and how long it took. */
interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  wallMs: number;
}

/** The consumer's report (printed as one JSON line). */
interface Report {
  importMs: number;
  forwardMs: number;
  totalMs: number;
  shape: number[];
  values: number[];
}

const results: { name: string; ok: boolean; detail: string }[] = [];

function record(name: string, ok: boolean, detail = ""): void {
  results.push({ name, ok, detail });
  console.error(`consumer: ${ok ? "ok  " : "FAIL"} ${name}${detail ? ` — ${detail}` : ""}`);
}

const ANSI_ESCAPE = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*m", "g");

async function runDeno(args: string[], options: Deno.CommandOptions = {}): Promise<RunResult> {
  const started = performance.now();
  const output = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped", ...options })
    .output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes).replace(ANSI_ESCAPE, "");
  return {
    code: output.code,
    stdout: decode(output.stdout),
    stderr: decode(output.stderr),
    wallMs: performance.now() - started,
  };
}

/** The files `deno publish` would upload, from its dry run (which needs no network). */
export async function publishedFiles(): Promise<PackageFile[]> {
  const dry = await runDeno(["publish", "--dry-run", "--allow-dirty"], { cwd: ROOT, env: { NO_COLOR: "1" } });
  if (dry.code !== 0) throw new Error(`deno publish --dry-run failed:\n${dry.stderr}`);
  const prefix = new URL(`file://${ROOT}/`).href;
  const files: PackageFile[] = [];
  for (const match of dry.stderr.matchAll(/^\s+(file:\/\/\S+) \([^)]*\)$/gm)) {
    if (!match[1].startsWith(prefix)) throw new Error(`deno publish lists a file outside the package: ${match[1]}`);
    const relative = decodeURIComponent(match[1].slice(prefix.length));
    files.push({ path: `/${relative}`, bytes: await Deno.readFile(`${ROOT}/${relative}`) });
  }
  if (files.length === 0) throw new Error(`deno publish --dry-run listed no files:\n${dry.stderr}`);
  return files;
}

/** Import specifiers that `deno publish` would rewrite (bare names resolved by the import map). */
export function bareSpecifiers(source: string): string[] {
  const found: string[] = [];
  for (const match of source.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"`;]*?\bfrom\s*["']([^"']+)["']/g)) {
    if (!/^(\.{1,2}\/|npm:|jsr:|node:|https?:)/.test(match[1])) found.push(match[1]);
  }
  for (const match of source.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) {
    if (!/^(\.{1,2}\/|npm:|jsr:|node:|https?:)/.test(match[1])) found.push(match[1]);
  }
  return found;
}

/** The registry's static files: URL path → bytes, laid out as JSR serves a package. */
export async function registryFiles(
  version: string,
  files: PackageFile[],
  exports: Record<string, string>,
): Promise<Map<string, Uint8Array<ArrayBuffer>>> {
  const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value, null, 2));
  const manifest: Record<string, { size: number; checksum: string }> = {};
  const served = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const file of files) {
    manifest[file.path] = { size: file.bytes.length, checksum: `sha256-${await sha256Hex(file.bytes)}` };
    served.set(`/${PACKAGE}/${version}${file.path}`, file.bytes);
  }
  served.set(`/${SCOPE}/meta.json`, encode({ scope: SCOPE.slice(1), packages: [NAME] }));
  served.set(
    `/${PACKAGE}/meta.json`,
    encode({ scope: SCOPE.slice(1), name: NAME, latest: version, versions: { [version]: {} } }),
  );
  served.set(`/${PACKAGE}/${version}_meta.json`, encode({ manifest, exports }));
  return served;
}

/** A loopback registry; `override` replaces a file's bytes (not its manifest entry). */
function serve(files: Map<string, Uint8Array<ArrayBuffer>>) {
  const override = new Map<string, Uint8Array<ArrayBuffer>>();
  const log: { path: string; bytes: number }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = decodeURIComponent(new URL(request.url).pathname);
    const body = override.get(path) ?? files.get(path);
    log.push({ path, bytes: body?.length ?? 0 });
    if (body === undefined) return new Response("not found", { status: 404 });
    const type = path.endsWith(".json") ? "application/json" : path.endsWith(".ts") ? "text/typescript" : null;
    return new Response(body, { headers: type === null ? {} : { "content-type": type } });
  });
  return { server, override, log, url: `http://127.0.0.1:${server.addr.port}/` };
}

/** The consumer script: imports Spindle from `specifier`, loads the model, prints one JSON line. */
function consumerScript(specifier: string): string {
  return `const started = performance.now();
const spindle = await import(${JSON.stringify(specifier)});
const imported = performance.now();
const { builtinModel, load } = spindle;
const request = builtinModel("mlp", { batch: 4, seed: 7 });
const inputs = request.inputs();
const model = await load("./model.spdl");
const before = performance.now();
const output = await model.forward(...inputs);
const done = performance.now();
console.log(JSON.stringify({
  importMs: imported - started,
  forwardMs: done - before,
  totalMs: done - started,
  shape: output.shape,
  values: Array.from(output.toArray()),
}));
`;
}

/** PATH entries that hold no `zig`: the consumer must not be able to build anything. */
function pathWithoutZig(): string {
  return (Deno.env.get("PATH") ?? "").split(":").filter((dir) => {
    if (dir === "" || dir.includes(".toolchain")) return false;
    try {
      Deno.statSync(`${dir}/zig`);
      return false;
    } catch {
      return true;
    }
  }).join(":");
}

/** The environment of a fresh machine: only network settings pass through. */
function freshEnv(home: string, extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(Deno.env.toObject())) {
    if (/proxy|ssl|cert|ca_bundle|npm_config/i.test(key)) env[key] = value;
  }
  env.NO_PROXY = env.no_proxy = ["127.0.0.1", env.NO_PROXY ?? ""].filter(Boolean).join(",");
  return { ...env, HOME: home, PATH: pathWithoutZig(), NO_COLOR: "1", ...extra };
}

function parseReport(run: RunResult): Report | null {
  const line = run.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line) as Report;
  } catch {
    return null;
  }
}

function maxDifference(a: number[], b: number[]): number {
  if (a.length !== b.length) return Infinity;
  return a.reduce((max, value, i) => Math.max(max, Math.abs(value - b[i])), 0);
}

function tail(text: string, lines = 6): string {
  return text.trim().split("\n").slice(-lines).join(" | ");
}

async function main(): Promise<void> {
  const started = performance.now();
  // This machine's platform only: the consumer runs here, and all five take minutes.
  const platform = `--targets=${Deno.build.os}-${Deno.build.arch}`;
  console.error(`consumer: deno task dist ${platform}`);
  const dist = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/tools/dist.ts`, platform],
    cwd: ROOT,
  }).output();
  if (!dist.success) throw new Error("consumer: deno task dist failed");

  const version = packageVersion();
  const files = await publishedFiles();
  const paths = files.map((file) => file.path);
  const total = files.reduce((sum, file) => sum + file.bytes.length, 0);
  const binary = files.find((file) => file.path === `/${BINARY}`);
  record(
    "the published file list holds the binary and ffi/digests.ts, and no tests, tools, zig sources or lockfile",
    binary !== undefined && paths.includes(`/${DIGESTS}`) &&
      !paths.some((path) => /^\/(tests|tools|bench|zig|\.ci)\/|^\/deno(\.dev)?\.lock$/.test(path)),
    `${files.length} files, ${(total / 1e6).toFixed(2)} MB (binary ${
      ((binary?.bytes.length ?? 0) / 1e6).toFixed(2)
    } MB)`,
  );
  const bare = files.filter((file) => file.path.endsWith(".ts"))
    .flatMap((file) => bareSpecifiers(new TextDecoder().decode(file.bytes)).map((spec) => `${file.path}: ${spec}`));
  record(
    "no published module uses a bare specifier (deno publish uploads them unchanged)",
    bare.length === 0,
    bare.join(", "),
  );
  if (binary === undefined) throw new Error(`consumer: ${BINARY} is not in the published files`);

  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
  const registry = serve(await registryFiles(version, files, config.exports));
  const temp = await Deno.makeTempDir({ prefix: "spindle-consumer-" });
  try {
    const work = `${temp}/work`;
    const home = `${temp}/home`;
    await Deno.mkdir(work);
    await Deno.mkdir(home);

    // The reference: the same script against this checkout and its own build.
    const reference = `${temp}/reference`;
    await Deno.mkdir(reference);
    const save = `import { builtinModel, save } from "${new URL(`file://${ROOT}/mod.ts`).href}";
const request = builtinModel("mlp", { batch: 4, seed: 7 });
await save(request.module, ${JSON.stringify(`${work}/model.spdl`)});`;
    await Deno.writeTextFile(`${reference}/save.ts`, save);
    const saved = await runDeno(["run", "-A", `${reference}/save.ts`], { cwd: reference });
    if (saved.code !== 0) throw new Error(`consumer: saving the model failed: ${saved.stderr}`);
    await Deno.copyFile(`${work}/model.spdl`, `${reference}/model.spdl`);
    await Deno.writeTextFile(`${reference}/consumer.ts`, consumerScript(`file://${ROOT}/mod.ts`));
    const repoRun = await runDeno(["run", "-A", "consumer.ts"], { cwd: reference });
    const expected = parseReport(repoRun);
    if (expected === null) throw new Error(`consumer: the repository build's run failed: ${repoRun.stderr}`);

    await Deno.writeTextFile(`${work}/consumer.ts`, consumerScript(`jsr:${PACKAGE}`));
    let fresh = 0;
    const freshDir = async (name: string) => {
      const dir = `${temp}/${name}-${fresh++}`;
      await Deno.mkdir(dir);
      return dir;
    };
    const denoDir = await freshDir("deno-dir");
    let cache = await freshDir("cache");
    const consumer = (extra: Record<string, string> = {}, args = ["run", "-A", "consumer.ts"]) =>
      runDeno(args, {
        cwd: work,
        clearEnv: true,
        env: freshEnv(home, { DENO_DIR: denoDir, XDG_CACHE_HOME: cache, JSR_URL: registry.url, ...extra }),
      });
    const matches = (run: RunResult) => {
      const report = parseReport(run);
      if (report === null) return { ok: false, detail: `exit ${run.code}: ${tail(run.stderr)}`, report };
      const difference = maxDifference(report.values, expected.values);
      const sameShape = JSON.stringify(report.shape) === JSON.stringify(expected.shape);
      return {
        ok: run.code === 0 && sameShape && difference <= TOLERANCE,
        detail: `shape [${report.shape}], max |difference| ${difference.toExponential(2)} vs the repo build`,
        report,
      };
    };

    const sha256 = await sha256Hex(binary.bytes);
    const cachedFile = (root: string) => `${root}/spindle/${version}/${sha256}/libspindle.so`;
    const exists = (path: string) => {
      try {
        return Deno.statSync(path).size === binary.bytes.length;
      } catch {
        return false;
      }
    };
    const cold = await consumer();
    const coldCheck = matches(cold);
    const missing = registry.log.filter((entry) => entry.bytes === 0).map((entry) => entry.path);
    if (missing.length > 0) console.error(`consumer: the registry had no ${missing.join(", ")}`);
    const downloads = cold.stderr.split("\n").filter((line) => /download/i.test(line));
    record(
      "cold: jsr:@spindle/spindle loads a model and matches the repo build",
      coldCheck.ok && exists(cachedFile(cache)),
      `${coldCheck.detail}; cached as ${cachedFile(cache).slice(temp.length + 1)}`,
    );
    record(
      "cold: the first run downloads no peer (onnxruntime) and prints no 'ignored build scripts' warning",
      !/onnxruntime|ignored build scripts/i.test(cold.stderr),
      `downloads: ${downloads.filter((line) => line.includes(registry.url)).length} from the registry, ` +
        downloads.filter((line) => !line.includes(registry.url)).join(", "),
    );
    const warm = await consumer();
    const warmCheck = matches(warm);
    record(
      "warm: the cached library is reused without a download",
      warmCheck.ok && !/downloading the native library/.test(warm.stderr),
      warmCheck.detail,
    );

    // Two processes fill an empty cache at once: both must load a verified, complete library.
    cache = await freshDir("cache");
    const pair = await Promise.all([consumer(), consumer()]);
    const pairChecks = pair.map(matches);
    const pairCache = cache;
    const leftovers = [...Deno.readDirSync(`${cache}/spindle/${version}/${sha256}`)]
      .map((entry) => entry.name);
    record(
      "two processes importing at once into an empty cache both succeed, leaving one file",
      pairChecks.every((check) => check.ok) && leftovers.length === 1,
      `${pairChecks.map((check) => check.detail).join("; ")}; cache holds ${leftovers.join(", ")}`,
    );

    // The cached copy is verified before use: a corrupted one is fetched again.
    await Deno.writeFile(cachedFile(pairCache), new Uint8Array(1024));
    const repaired = await consumer();
    record(
      "a corrupted cached library is detected and fetched again",
      matches(repaired).ok && /does not match its digest/.test(repaired.stderr),
      tail(repaired.stderr, 2),
    );

    // SPINDLE_LIB stays first for a published copy too: nothing is fetched or cached.
    cache = await freshDir("cache");
    const explicit = await consumer({ SPINDLE_LIB: `${ROOT}/${BINARY}` });
    const explicitCheck = matches(explicit);
    record(
      "SPINDLE_LIB wins over the prebuilt download",
      explicitCheck.ok && !/downloading/.test(explicit.stderr) && [...Deno.readDirSync(cache)].length === 0,
      explicitCheck.detail,
    );

    // The permissions the README names for a first run: no -A, writes only into the cache.
    cache = await freshDir("cache");
    const narrow = await consumer({}, [
      "run",
      "--allow-ffi",
      "--allow-env",
      "--allow-read",
      `--allow-write=${cache}/spindle`,
      "--allow-net=127.0.0.1",
      "consumer.ts",
    ]);
    const narrowCheck = matches(narrow);
    record(
      "a cold cache with --allow-ffi --allow-env --allow-read --allow-write=<cache>/spindle --allow-net=<registry host>",
      narrowCheck.ok,
      narrowCheck.detail,
    );

    const cli = await consumer({}, [
      "run",
      "-A",
      `jsr:${PACKAGE}/cli`,
      "infer",
      "--model",
      "builtin:mlp",
      "--json",
    ]);
    record(
      "deno run -A jsr:@spindle/spindle/cli infer",
      cli.code === 0,
      tail(cli.stdout || cli.stderr, 1).slice(0, 160),
    );
    const info = await consumer({}, ["run", "-A", `jsr:${PACKAGE}/cli`, "parallel_info"]);
    record(
      "deno run -A jsr:@spindle/spindle/cli parallel_info",
      info.code === 0 && /Spindle parallel backend/.test(info.stdout),
      tail(info.stdout, 1),
    );

    const digests = files.find((file) => file.path === `/${DIGESTS}`)!;
    const expectedDigest = new TextDecoder().decode(digests.bytes).match(/sha256: "([0-9a-f]{64})"/)?.[1] ?? "?";
    const binaryUrl = `/${PACKAGE}/${version}/${BINARY}`;
    for (
      const [name, bytes] of [
        ["tampered", Uint8Array.from(binary.bytes, (byte, i) => i === 4096 ? byte ^ 0xff : byte)],
        ["truncated", binary.bytes.slice(0, binary.bytes.length >> 1)],
      ] as const
    ) {
      registry.override.set(binaryUrl, bytes);
      cache = await freshDir("cache");
      const refused = await consumer();
      record(
        `a ${name} binary is refused with an error naming the file and the expected digest`,
        refused.code !== 0 && refused.stderr.includes(expectedDigest) && refused.stderr.includes(BINARY) &&
          !/\{"importMs"/.test(refused.stdout),
        refused.stderr.split("\n").find((line) => line.includes("refusing")) ?? tail(refused.stderr, 3),
      );
    }
    registry.override.delete(binaryUrl);

    // ffi/digests.ts itself is covered by Deno's integrity check against the version manifest.
    const digestsUrl = `/${PACKAGE}/${version}/${DIGESTS}`;
    registry.override.set(
      digestsUrl,
      new TextEncoder().encode(new TextDecoder().decode(digests.bytes).replace(expectedDigest, "0".repeat(64))),
    );
    cache = await freshDir("cache");
    const forged = await runDeno(["run", "-A", "consumer.ts"], {
      cwd: work,
      clearEnv: true,
      env: freshEnv(home, { DENO_DIR: await freshDir("deno-dir"), XDG_CACHE_HOME: cache, JSR_URL: registry.url }),
    });
    record(
      "a forged ffi/digests.ts is refused by Deno's integrity check",
      forged.code !== 0 && /integrity|checksum/i.test(forged.stderr),
      forged.stderr.split("\n").find((line) => /integrity|checksum/i.test(line)) ?? tail(forged.stderr, 3),
    );
    registry.override.delete(digestsUrl);

    // Offline: the registry is gone; the warm DENO_DIR and the cache are all there is.
    await registry.server.shutdown();
    cache = pairCache;
    const offline = await consumer();
    const offlineCheck = matches(offline);
    record("offline: a warm DENO_DIR and cache run without the registry", offlineCheck.ok, offlineCheck.detail);

    const ms = (value: number | undefined) => `${(value ?? NaN).toFixed(0)} ms`;
    console.error(
      `consumer: timings (2-core machine shared with other builds; noisy):\n` +
        `  cold (empty DENO_DIR and cache): process ${ms(cold.wallMs)}, import ${ms(coldCheck.report?.importMs)}, ` +
        `first forward ${ms(coldCheck.report?.forwardMs)}, import to first output ${ms(coldCheck.report?.totalMs)}\n` +
        `  warm: process ${ms(warm.wallMs)}, import ${ms(warmCheck.report?.importMs)}, ` +
        `first forward ${ms(warmCheck.report?.forwardMs)}, import to first output ${ms(warmCheck.report?.totalMs)}\n` +
        `  repo build (file://): process ${ms(repoRun.wallMs)}, import ${ms(expected.importMs)}, ` +
        `first forward ${ms(expected.forwardMs)}, import to first output ${ms(expected.totalMs)}\n` +
        `  package: ${files.length} files, ${(total / 1e6).toFixed(2)} MB; ${BINARY} ${
          (binary.bytes.length / 1e6).toFixed(2)
        } MB`,
    );
  } finally {
    await registry.server.shutdown().catch(() => {});
    await Deno.remove(temp, { recursive: true });
  }
  const failed = results.filter((result) => !result.ok).length;
  console.error(`consumer: finished in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  console.log(`consumer: ${results.length - failed} passed, ${failed} failed`);
  if (failed > 0) Deno.exit(1);
}

if (import.meta.main) await main();

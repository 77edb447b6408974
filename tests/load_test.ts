import assert from "node:assert/strict";
import { execute, ROOT, runSnippet } from "./helpers.ts";
import { ABI_VERSION, libraryPath } from "../ffi/load.ts";

Deno.test("the library is found from the module's URL, not the current directory", async () => {
  const result = await runSnippet(
    `import { libraryPath } from "file://${ROOT}/ffi/load.ts";
     import { getNumThreads } from "file://${ROOT}/mod.ts";
     console.log(getNumThreads() > 0, libraryPath());`,
    {},
    Deno.makeTempDirSync(),
  );
  assert.equal(result.code, 0, result.stderr);
  const [ok, path] = result.stdout.trim().split(" ");
  assert.equal(ok, "true");
  assert.equal(path, Deno.env.get("SPINDLE_LIB") ?? `${ROOT}/zig/zig-out/lib/libspindle.so`);
  assert.equal(libraryPath(), path);
});

Deno.test("SPINDLE_LIB pointing nowhere is a clear error", async () => {
  const result = await runSnippet(
    `import { getNumThreads } from "file://${ROOT}/mod.ts"; getNumThreads();`,
    { SPINDLE_LIB: "/nonexistent/libspindle.so" },
  );
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /SPINDLE_LIB points to '\/nonexistent\/libspindle.so', which does not exist/);
});

Deno.test("a missing library without a Zig toolchain names the fix", async () => {
  // A copy of ffi/ with no build and no toolchain beside it, and no zig on PATH.
  const dir = Deno.makeTempDirSync();
  Deno.mkdirSync(`${dir}/ffi`);
  for (const file of ["load.ts", "remote.ts", "symbols.ts", "status.ts", "abi.ts"]) {
    Deno.copyFileSync(`${ROOT}/ffi/${file}`, `${dir}/ffi/${file}`);
  }
  const result = await runSnippet(
    `import { native } from "file://${dir}/ffi/load.ts"; native();`,
    { PATH: "/usr/bin:/bin", SPINDLE_LIB: "" },
  );
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /libspindle is not built .* no Zig toolchain was found/);
  assert.match(result.stderr, /tools\/bootstrap\.sh/);
  Deno.removeSync(dir, { recursive: true });
});

/** A copy of ffi/ with a build of the library beside it and a fake `zig` that leaves a mark if run. */
function staleCopy(): { dir: string; script: string; marker: string } {
  const dir = Deno.makeTempDirSync();
  Deno.mkdirSync(`${dir}/ffi`);
  for (const file of ["load.ts", "remote.ts", "symbols.ts", "status.ts", "abi.ts"]) {
    Deno.copyFileSync(`${ROOT}/ffi/${file}`, `${dir}/ffi/${file}`);
  }
  Deno.mkdirSync(`${dir}/zig/zig-out/lib`, { recursive: true });
  Deno.copyFileSync(libraryPath(), `${dir}/zig/zig-out/lib/libspindle.so`);
  Deno.mkdirSync(`${dir}/.toolchain/zig/ziglang`, { recursive: true });
  const marker = `${dir}/zig-ran`;
  Deno.writeTextFileSync(`${dir}/.toolchain/zig/ziglang/zig`, `#!/bin/sh\ntouch ${marker}\nexit 1\n`, { mode: 0o755 });
  // Sources newer than the build: the library is stale.
  Deno.mkdirSync(`${dir}/zig/src`);
  const later = new Date(Date.now() + 60_000);
  for (const file of ["zig/build.zig", "zig/src/root.zig"]) {
    Deno.writeTextFileSync(`${dir}/${file}`, "// newer than the build\n");
    Deno.utimeSync(`${dir}/${file}`, later, later);
  }
  const script = `${dir}/use.ts`;
  Deno.writeTextFileSync(
    script,
    `import { native } from "./ffi/load.ts";\nconsole.log(native().spindle_abi_version());\n`,
  );
  return { dir, script, marker };
}

Deno.test("with narrow permissions a stale library is used with a warning, never rebuilt", async () => {
  const { dir, script, marker } = staleCopy();
  try {
    const result = await execute(
      ["run", "--allow-read", "--allow-ffi", "--allow-env", script],
      { SPINDLE_LIB: "" },
      dir,
    );
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), String(ABI_VERSION));
    assert.match(result.stderr, /is older than the Zig sources; using it as it is \(run 'deno task build'/);
    assert.throws(() => Deno.statSync(marker), Deno.errors.NotFound, "zig was not run");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("without read permission the loader says so instead of calling the library missing", async () => {
  const { dir, script } = staleCopy();
  try {
    const result = await execute(
      ["run", "--allow-ffi", "--allow-env", "--no-prompt", script],
      { SPINDLE_LIB: "" },
      dir,
    );
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /Spindle needs read access to .*libspindle\.so.* run with --allow-read/);
    assert.doesNotMatch(result.stderr, /missing/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("without ffi or env permission the CLI names the flags to grant, with no stack trace", async () => {
  const noFfi = await execute(["run", "--allow-read", "--allow-env", "--no-prompt", `${ROOT}/main.ts`, "infer"], {});
  assert.equal(noFfi.code, 1, noFfi.stderr);
  assert.match(
    noFfi.stderr,
    /Spindle needs permission to load its native library .* --allow-ffi --allow-read --allow-env/,
  );
  assert.doesNotMatch(noFfi.stderr, /Uncaught|at /);
  // With read access alone SPINDLE_LIB cannot be read, so the loader falls back to the local
  // build (which CI may not have built): either way one line that says what to do.
  const readOnly = await execute(["run", "--allow-read", "--no-prompt", `${ROOT}/main.ts`, "infer"], {});
  assert.equal(readOnly.code, 1, readOnly.stderr);
  assert.match(readOnly.stderr, /^error: .*(--allow-ffi|deno task build)/);
  assert.doesNotMatch(readOnly.stderr, /Uncaught|NotCapable: Requires/);
});

import assert from "node:assert/strict";
import { ROOT, runSnippet } from "./helpers.ts";
import { libraryPath } from "../ffi/load.ts";

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
  for (const file of ["load.ts", "symbols.ts", "status.ts", "abi.ts"]) {
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

/**
 * `spindle serve` against the real Triton client: tests/serve/triton_client.py runs
 * tritonclient[http] (installed into the git-ignored .cache/py-serve on first use) against
 * servers in this process: metadata, JSON and binary infer bit-identical to in-process
 * forward, output selection, and the 400, 404, 413, 503 and 500 errors. Skipped, with the
 * reason printed, only when python3 or PyPI is unavailable.
 *
 * @module
 */
import assert from "node:assert/strict";
import { load, tensor } from "../mod.ts";
import { servedModule } from "../lib/serve/model.ts";
import { startServer } from "../lib/serve/server.ts";
import { fakeModel, testOptions, writeTestModel } from "./serve/fixture.ts";
import { tritonPython } from "./serve/python.ts";
import { ROOT } from "./helpers.ts";

const setup = await tritonPython();
if ("skip" in setup) console.log(`serve_triton_test: skipped: ${setup.skip}`);

Deno.test({
  name: "serve: tritonclient[http] passes the protocol checks (metadata, infer, selection, errors)",
  ignore: "skip" in setup,
  async fn() {
    const python = "python" in setup ? setup.python : "";
    const modelPath = await writeTestModel();
    const caseDir = await Deno.makeTempDir({ prefix: "spindle-triton-" });
    const module = await load(modelPath);
    const x = new Float32Array([0.5, -1.25, 3, 2e-7, -0.1, 7, 1 / 3, -4]);
    const ids = new BigInt64Array([1n, 9n, 0n, 4n]);
    {
      using xt = tensor(x, [2, 4]);
      using it = tensor(ids, [2, 2], { dtype: "int64" });
      const outputs = await module.forwardAll(xt, it);
      await Deno.writeFile(`${caseDir}/x.bin`, new Uint8Array(x.buffer));
      await Deno.writeFile(`${caseDir}/ids.bin`, new Uint8Array(ids.buffer));
      for (const [i, t] of outputs.entries()) {
        await Deno.writeFile(`${caseDir}/${module.outputNames[i]}.bin`, new Uint8Array(t.toArray().buffer));
        t.dispose();
      }
    }
    const served = servedModule("m", modelPath, module);
    const slow = fakeModel(500);
    const failing = fakeModel(1, true);
    const servers = [
      await startServer(testOptions(served)),
      await startServer(testOptions(slow, { concurrency: 1, queue: 0 })),
      await startServer(testOptions(failing)),
    ];
    try {
      const urls = servers.map((s) => `http://127.0.0.1:${s.port}`);
      const result = await new Deno.Command(python, {
        args: [`${ROOT}/tests/serve/triton_client.py`, caseDir, ...urls],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const decoder = new TextDecoder();
      const stdout = decoder.decode(result.stdout);
      const log = stdout + decoder.decode(result.stderr);
      assert.equal(result.code, 0, log);
      assert.match(stdout, /^all tritonclient checks passed$/m);
      assert.ok((stdout.match(/^ok: /gm) ?? []).length >= 30, log);
    } finally {
      for (const server of servers) await server.shutdown();
      served.dispose();
      await Deno.remove(caseDir, { recursive: true });
      await Deno.remove(modelPath);
    }
  },
});

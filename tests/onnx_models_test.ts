import assert from "node:assert/strict";
// A test/benchmark peer kept out of deno.lock (a first `infer` must not download it): run with
// --lock=deno.dev.lock, as tools/test.ts and the bench tasks do.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { load, randn } from "../mod.ts";
import { fetchModels } from "../tools/fetch_models.ts";

// Real models from npm, run by Spindle and by onnxruntime-node on the same inputs.
const models = await fetchModels();

for (const model of models) {
  Deno.test(`${model.name}: Spindle matches onnxruntime-node (names, dims; outputs within 1e-4, sequential and parallel)`, async () => {
    using sequential = await load(model.file, { inputShapes: { [model.input]: model.shape } });
    using parallel = await load(model.file, { inputShapes: { [model.input]: model.shape }, executionMode: "parallel" });
    const session = await ort.InferenceSession.create(model.file, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    // The same names, and the same symbolic dimensions where Spindle keeps a dimension dynamic.
    assert.deepEqual(sequential.inputNames, session.inputNames);
    assert.deepEqual(sequential.outputNames, session.outputNames);
    const metadata = [...sequential.inputMetadata, ...sequential.outputMetadata];
    [...session.inputMetadata, ...session.outputMetadata].forEach((reference, i) => {
      assert.ok(reference.isTensor);
      assert.equal(metadata[i].dtype, reference.type);
      metadata[i].shape.forEach((d, axis) => {
        if (typeof d === "string" || typeof reference.shape[axis] === "number") assert.equal(d, reference.shape[axis]);
      });
    });
    for (const [batch, module] of [[1, sequential], [2, sequential], [1, parallel], [2, parallel]] as const) {
      const shape = model.shape.map((d) => (d === -1 ? batch : d));
      using x = randn(shape, { seed: batch });
      const data = x.toArray() as Float32Array;
      const expected = await session.run({ [model.input]: new ort.Tensor("float32", data, shape) });
      const reference = expected[session.outputNames[0]];
      const outputs = await module.run({ [model.input]: x });
      assert.deepEqual(Object.keys(outputs), session.outputNames);
      using got = outputs[session.outputNames[0]];
      assert.deepEqual(got.shape, [...reference.dims], model.name);
      const values = got.toArray() as Float32Array;
      const want = reference.data as Float32Array;
      let maxAbs = 0;
      for (const v of want) maxAbs = Math.max(maxAbs, Math.abs(v));
      for (let i = 0; i < want.length; i++) {
        // Relative error, floored at a magnitude of 1e-2 (or 1% of the largest output), i.e. an
        // absolute 1e-6 for smaller elements: down there the engines differ by their sigmoid
        // approximations near saturation (onnxruntime 2e-7 where Spindle gives 9e-8), not by
        // the model.
        const error = Math.abs(values[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-2 * maxAbs, 1e-2);
        assert.ok(error <= 1e-4, `${model.name} batch ${batch} [${i}]: ${values[i]} vs ${want[i]}`);
      }
    }
    await session.release();
  });
}

Deno.test("infer runs an .onnx model with --input-shape for its dynamic dims", async () => {
  const cls = models.find((m) => m.name === "ocr-cls")!;
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../main.ts", import.meta.url).pathname,
      "infer",
      "--model",
      cls.file,
      "--input-shape",
      `${cls.input}=${cls.shape.join("x")}`,
      "--requests",
      "3",
      "--parallel-branches",
      "--json",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const report = JSON.parse(new TextDecoder().decode(output.stdout));
  assert.ok(Math.abs(report.checksum - 1) < 1e-4, `a softmax over 2 classes sums to 1, got ${report.checksum}`);
});

/**
 * Foundation benchmarks: the cost of crossing the FFI boundary and of the example model.
 * Run with `deno task bench`.
 */
import { builtinModel, getNumThreads, mm, rand, tensor } from "../mod.ts";

Deno.bench("ffi: getNumThreads (one sync FFI call)", { group: "ffi", baseline: true }, () => {
  getNumThreads();
});

const small = new Float32Array(16);
Deno.bench("tensor: create + dispose 16 floats", { group: "ffi" }, () => {
  tensor(small, [16]).dispose();
});

const a = rand([256, 256], { seed: 1 });
Deno.bench("mm 256x256x256", { group: "mm" }, () => {
  mm(a, a).dispose();
});

const model = builtinModel("example");
const inputs = model.inputs();
Deno.bench("builtin:example forwardSync (64x1024, two 1024x1024 GEMMs, one forked)", { group: "model" }, () => {
  model.module.forwardSync(...inputs).dispose();
});

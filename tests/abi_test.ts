import assert from "node:assert/strict";
import { describeNative, formatted, renderSchema, SCHEMA_PATH } from "../tools/gen_abi.ts";
import { LIMITS, OP_SCHEMAS } from "../ffi/abi.ts";
import { encodeParams, runOp } from "../lib/ops/dispatch.ts";
import { conv2d, randn, SpindleError, tensor } from "../mod.ts";

Deno.test("ffi/abi.ts is what `deno task gen` writes from the library (no hand-copied layout)", async () => {
  const fresh = await formatted(renderSchema(describeNative()));
  assert.equal(await Deno.readTextFile(SCHEMA_PATH), fresh, "ffi/abi.ts is stale: run `deno task gen`");
});

Deno.test("encodeParams writes the flat encoding in schema order, with defaults", () => {
  const out = new Float64Array(LIMITS.maxFlatValues);
  // conv2d: stride, padding, dilation (pairs), groups, has_bias, activation, post_scale, post_shift.
  const count = encodeParams("conv2d", { padding: [1, 2], activation: "hard_swish", has_bias: true }, out);
  assert.deepEqual([...out.subarray(0, count)], [1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 0]);
  // Optionals are a presence flag and a value; lists their length and items. argmax: dim
  // (optional), keepdim, last.
  assert.deepEqual([...out.subarray(0, encodeParams("argmax", {}, out))], [0, 0, 0, 0]);
  assert.deepEqual([...out.subarray(0, encodeParams("argmax", { dim: -1, last: true }, out))], [1, -1, 0, 1]);
  assert.deepEqual([...out.subarray(0, encodeParams("sum", { dims: [0, 2], keepdim: true }, out))], [2, 0, 2, 1]);
});

Deno.test("encodeParams names the op and parameter it refuses", () => {
  const out = new Float64Array(LIMITS.maxFlatValues);
  assert.throws(() => encodeParams("conv2d", { strides: [1, 1] }, out), /conv2d: unknown parameter 'strides'/);
  assert.throws(() => encodeParams("softmax", {}, out), /softmax: missing parameter 'dim'/);
  assert.throws(() => encodeParams("conv2d", { stride: [1] }, out), /'stride' must have 2 values/);
  assert.throws(() => encodeParams("conv2d", { activation: "gelu" }, out), /'activation' must be one of none, relu/);
  assert.throws(() => encodeParams("sum", { keepdim: 1 }, out), /'keepdim' must be a boolean/);
  assert.throws(() => encodeParams("reshape", { shape: Array(9).fill(1) }, out), RangeError);
  assert.throws(() => encodeParams("toString", {}, out), /unknown native op 'toString'/);
  assert.throws(() => encodeParams("relu", { constructor: 1 }, out), /unknown parameter 'constructor'/);
});

Deno.test("the native side checks ranges the schema declares", () => {
  using x = randn([1, 2, 5, 5], { seed: 1 });
  using w = randn([3, 2, 3, 3], { seed: 2 });
  for (const params of [{ stride: [0, 1] as const }, { groups: 0 }, { post_scale: Infinity }]) {
    assert.throws(
      () => runOp("conv2d", [x, w], params).dispose(),
      (error: unknown) =>
        error instanceof SpindleError && error.code === "invalid_argument" && /conv2d/.test(error.message),
    );
  }
  // Named parameters give the same result as the eager op.
  using eager = conv2d(x, w, null, { stride: 2, padding: 1 });
  using named = runOp("conv2d", [x, w], { stride: [2, 2], padding: [1, 1] });
  assert.deepEqual(named.toArray(), eager.toArray());
});

Deno.test("every op schema declares its inputs and typed parameters", () => {
  for (const [name, op] of Object.entries(OP_SCHEMAS)) {
    assert.ok(op.inputs.length >= 1, `${name} has inputs`);
    for (const param of op.params as readonly { kind: string; values?: readonly string[] }[]) {
      assert.ok(["bool", "int", "float", "enum"].includes(param.kind), `${name}: ${param.kind}`);
      if (param.kind === "enum") assert.ok((param.values ?? []).length > 0);
    }
  }
  using t = tensor([1, 2, 3]);
  using y = runOp("clamp", [t], { min: 1.5 });
  assert.deepEqual([...(y.toArray() as Float32Array)], [1.5, 2, 3]);
});

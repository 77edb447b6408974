/**
 * Errors users hit with wrong input: each is typed, says what was wrong, and prints nothing
 * from uninitialised memory (issue 17's cases).
 */
import assert from "node:assert/strict";
import { encodeImage } from "../lib/program/format.ts";
import { Program } from "../lib/program/program.ts";
import {
  conv2d,
  importOnnx,
  load,
  Module,
  ones,
  relu,
  script,
  SpindleError,
  type Tensor,
  tensor,
  zeros,
} from "../mod.ts";

Deno.test("load() refuses a non-path, a missing file and a directory with typed errors that name them", async () => {
  await assert.rejects(load(null as unknown as string), /load: the path must be a string or a URL, got null/);
  await assert.rejects(load("/nonexistent/model.onnx"), (e) => {
    return e instanceof Deno.errors.NotFound && /no model file at '\/nonexistent\/model.onnx'/.test(e.message);
  });
  const dir = await Deno.makeTempDir();
  await assert.rejects(load(dir), (e) => e instanceof TypeError && /is not a regular file/.test(e.message));
  await Deno.remove(dir);
});

Deno.test("a wrong input dtype is dtype_mismatch, a wrong shape shape_mismatch, both naming the input", async () => {
  using x = zeros([2, 3]);
  using model = Module.fromScript(script((input: Tensor) => relu(input)), [x], { inputNames: ["features"] });
  using ints = zeros([2, 3], { dtype: "int32" });
  await assert.rejects(model.forward(ints), (e) => {
    return e instanceof SpindleError && e.code === "dtype_mismatch" &&
      /input 0 'features' is int32, the model expects float32 \[2, 3\]/.test(e.message);
  });
  using wide = zeros([2, 4]);
  assert.throws(() => model.forwardSync(wide), (e) => {
    return e instanceof SpindleError && e.code === "shape_mismatch" &&
      /input 0 'features' has shape \[2, 4\], the model expects \[2, 3\]/.test(e.message);
  });
});

/** A one-node ONNX model: y = op(x), x and y float with dims (a string is a symbolic dim). */
async function onnxModel(op: string, dims: (number | string)[]): Promise<Uint8Array> {
  const { BinaryWriter } = await import("@bufbuild/protobuf/wire");
  const w = new BinaryWriter();
  w.uint32((1 << 3) | 0).int64(8);
  w.uint32((8 << 3) | 2).fork().uint32((2 << 3) | 0).int64(17).join();
  w.uint32((7 << 3) | 2).fork();
  w.uint32((1 << 3) | 2).fork().uint32((1 << 3) | 2).string("x").uint32((2 << 3) | 2).string("y")
    .uint32((4 << 3) | 2).string(op).join();
  const valueInfo = (field: number, name: string) => {
    w.uint32((field << 3) | 2).fork().uint32((1 << 3) | 2).string(name);
    w.uint32((2 << 3) | 2).fork().uint32((1 << 3) | 2).fork().uint32((1 << 3) | 0).int32(1);
    w.uint32((2 << 3) | 2).fork();
    for (const dim of dims) {
      if (typeof dim === "string") w.uint32((1 << 3) | 2).fork().uint32((2 << 3) | 2).string(dim).join();
      else w.uint32((1 << 3) | 2).fork().uint32((1 << 3) | 0).int64(dim).join();
    }
    w.join().join().join().join();
  };
  valueInfo(11, "x");
  valueInfo(12, "y");
  w.join();
  return w.finish();
}

Deno.test("an ONNX input's symbolic dims appear in the shape error", async () => {
  // x [batch, 4] → Relu; a 3-D input does not fit.
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeFile(path, await onnxModel("Relu", ["batch", 4]));
  try {
    importOnnx(await Deno.readFile(path)); // loads as exported
    using model = await load(path);
    using bad = zeros([2, 4, 1]);
    assert.throws(() => model.forwardSync(bad), (e) => {
      return e instanceof SpindleError && e.code === "shape_mismatch" &&
        /input 0 'x' has shape \[2, 4, 1\], the model expects \[batch, 4\]/.test(e.message);
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("conv2d's too-small-input message prints the whole padded size, never stack memory", () => {
  using x = ones([1, 1, 2, 2]);
  using w = ones([1, 1, 3, 3]);
  for (let run = 0; run < 20; run++) {
    assert.throws(() => conv2d(x, w), (e) => {
      return e instanceof SpindleError && e.code === "shape_mismatch" &&
        /padded to \[2, 2\] is smaller/.test(e.message);
    });
  }
});

Deno.test("dtype names are checked without prototype lookups", () => {
  for (const dtype of ["toString", "constructor", "__proto__"]) {
    assert.throws(
      () => zeros([2], { dtype: dtype as "float32" }),
      (e) => e instanceof TypeError && /unknown dtype/.test(e.message),
    );
    assert.throws(() => tensor([1], [1], { dtype: dtype as "float32" }), TypeError);
  }
});

Deno.test("memoryBudget bounds the load-time check: a declaration past it is too_large", () => {
  // tests/hostile_test.ts loads issue 17's absurd declarations (10 GB, 2^40) under the default
  // budget; here a small one is refused or loaded as the budget says.
  const small = encodeImage({
    graphs: [{
      inputs: [{ dtype: "float32", shape: [500, 500] }],
      values: 2,
      nodes: [{ op: "relu", inputs: [0], outputs: [1] }],
      outputs: [1],
    }],
    tensors: [],
  });
  Program.load(small, 2_000_000).dispose();
  assert.throws(() => Program.load(small, 1_000_000), (e) => {
    return e instanceof SpindleError && e.code === "too_large" &&
      /shape \[500, 500\] \(1000000 bytes\)/.test(e.message);
  });
});

/** A Spindle model file: y = neg(relu(x)) for x of shape [batch, 256] (1 KiB per row). */
async function dynamicBatchModelFile(): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  await Deno.writeFile(
    path,
    encodeImage({
      graphs: [{
        inputs: [{ name: "x", dtype: "float32", shape: [-1, 256] }],
        values: 3,
        nodes: [{ op: "relu", inputs: [0], outputs: [1] }, { op: "neg", inputs: [1], outputs: [2] }],
        outputs: [2],
      }],
      tensors: [],
    }),
  );
  return path;
}

/** A too_large error naming the tensor, its bytes and the option that raises the budget. */
function refusedRun(bytes: number, shape: string) {
  return (e: unknown) => {
    return e instanceof SpindleError && e.code === "too_large" &&
      e.message.includes(`a tensor of shape ${shape} (${bytes} bytes)`) &&
      e.message.includes(`the ${2 ** 20}-byte memory budget`) && e.message.includes("memoryBudget");
  };
}

Deno.test("memoryBudget bounds each run: a request past it is too_large, and the module still runs", async () => {
  const path = await dynamicBatchModelFile();
  try {
    using model = await load(path, { memoryBudget: 2 ** 20 });
    // 64 rows hold 128 KiB; 1024 rows 1 MiB for relu, then 1 MiB more for neg: refused.
    const values = Array.from({ length: 64 * 256 }, (_, i) => i % 3 - 1);
    using small = tensor(values, [64, 256]);
    using large = ones([1024, 256]);
    const expected = new Float32Array(values.map((v) => -Math.max(v, 0)));
    const check = (y: Tensor) => assert.deepEqual(y.toArray(), expected);
    for (let round = 0; round < 2; round++) {
      // The calling thread (spindle_program_run), then pinned calls on inference threads.
      using sync = model.forwardSync(small);
      check(sync);
      assert.throws(() => model.forwardSync(large), refusedRun(2 ** 20, "[1024, 256]"));
      using awaited = await model.forward(small);
      check(awaited);
      await assert.rejects(model.forward(large), refusedRun(2 ** 20, "[1024, 256]"));
      const { output0 } = await model.run({ x: small });
      using named = output0;
      check(named);
      await assert.rejects(model.run({ x: large }), refusedRun(2 ** 20, "[1024, 256]"));
    }
    // Concurrent requests each have a budget of their own: all fit.
    const results = await Promise.all(Array.from({ length: 4 }, () => model.forward(small)));
    results.forEach((y) => {
      check(y);
      y.dispose();
    });
    // The default budget (4 GiB) runs the large request.
    using roomy = await load(path);
    using y = await roomy.forward(large);
    assert.equal(y.toArray()[0], -1);
    await assert.rejects(load(path, { memoryBudget: 0 }), RangeError);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("memoryBudget bounds the runs of ONNX modules and the load of scripted ones", async () => {
  const path = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeFile(path, await onnxModel("Relu", ["batch", 256]));
  try {
    using model = await load(path, { memoryBudget: 2 ** 20 });
    using fits = ones([1024, 256]);
    using y = await model.forward(fits);
    assert.equal(y.toArray()[0], 1);
    using large = ones([2048, 256]);
    await assert.rejects(model.forward(large), refusedRun(2 ** 21, "[2048, 256]"));
  } finally {
    await Deno.remove(path);
  }
  // A scripted module's inputs have fixed shapes: its load-time check, which holds the input
  // as well, needs more than any run, so the option is refused there when too small.
  using x = ones([1024, 256]);
  const double = script((input: Tensor) => relu(relu(input)));
  assert.throws(() => Module.fromScript(double, [x], { memoryBudget: 2 ** 20 }), refusedRun(2 ** 20, "[1024, 256]"));
  using scripted = Module.fromScript(double, [x], { memoryBudget: 2 ** 22 });
  scripted.forwardSync(x).dispose();
});

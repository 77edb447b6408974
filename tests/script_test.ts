import assert from "node:assert/strict";
import {
  adaptiveAvgPool2d,
  add,
  batchNorm,
  builtinModel,
  concat,
  conv2d,
  flatten,
  fork,
  gelu,
  layerNorm,
  linear,
  liveTensorCount,
  load,
  mm,
  Module,
  mul,
  randn,
  relu,
  save,
  script,
  softmax,
  SpindleError,
  sum,
  type Tensor,
  TracingError,
  transpose,
  wait,
} from "../mod.ts";
import { Program } from "../lib/program/program.ts";
import { programFor } from "../lib/script/script.ts";
import { native } from "../ffi/load.ts";
import { decodeDescription, encodeImage } from "../lib/program/format.ts";
import { assertClose, atThreadCounts, generator, values } from "./reference.ts";
import { MOD_URL, runSnippet } from "./helpers.ts";

Deno.test("the spec's fork/wait example, scripted, equals eager execution at 1 and 2 threads", () => {
  using wY = randn([33, 17], { seed: 1 });
  using wZ = randn([33, 17], { seed: 2 });
  const computeZ = script((x: Tensor) => mm(x, wZ), "compute_z");
  const forward = script((x: Tensor) => {
    const future = fork(computeZ, x);
    const y = mm(x, wY);
    return add(y, wait(future));
  });
  using x = randn([5, 33], { seed: 3 });
  atThreadCounts(() => {
    using scripted = forward(x);
    using y = mm(x, wY);
    using z = mm(x, wZ);
    using eager = add(y, z);
    assertClose(values(scripted), values(eager), { relative: 1e-5, absolute: 1e-5 });
  });
});

Deno.test("scripts trace nested forks, native-op forks, views and multiple outputs", () => {
  using w = randn([8, 8], { seed: 4 });
  const inner = script((x: Tensor) => relu(mm(x, w)), "inner");
  const middle = script((x: Tensor) => {
    const f = fork(inner, x);
    const g = fork(mm, x, w); // a forked native op becomes a one-node graph
    return add(wait(f), wait(g));
  }, "middle");
  const outer = script((x: Tensor) => {
    const f = fork(middle, x);
    const t = transpose(x, 0, 1);
    return [softmax(wait(f), -1), sum(t, 0)];
  }, "outer");
  using x = randn([4, 8], { seed: 5 });
  const [p, s] = outer(x);
  using expectedInner = relu(mm(x, w));
  using expectedOp = mm(x, w);
  using expectedMiddle = add(expectedInner, expectedOp);
  using expectedP = softmax(expectedMiddle, -1);
  using t = transpose(x, 0, 1);
  using expectedS = sum(t, 0);
  assertClose(values(p), values(expectedP), { relative: 1e-5, absolute: 1e-6 });
  assertClose(values(s), values(expectedS), { relative: 1e-5, absolute: 1e-6 });
  p.dispose();
  s.dispose();
});

Deno.test("data-dependent control flow is refused while tracing", () => {
  const branchy = script((x: Tensor) => {
    const total = (sum(x).toArray() as Float32Array)[0];
    return total > 0 ? relu(x) : gelu(x);
  });
  using x = randn([3], { seed: 6 });
  assert.throws(() => branchy(x), (e) => e instanceof TracingError && /depend on data/.test(e.message));
  assert.throws(() => script(42 as unknown as () => Tensor), TypeError);
});

Deno.test("tracing does not leak: intermediate tensors are freed", () => {
  using w = randn([16, 16], { seed: 7 });
  using x = randn([2, 16], { seed: 8 });
  const f = script((input: Tensor) => layerNorm(relu(mm(input, w)), [16]));
  f(x).dispose(); // first call traces
  const before = liveTensorCount();
  for (let i = 0; i < 10; i++) f(x).dispose();
  assert.equal(liveTensorCount(), before);
});

Deno.test("save and load round-trip a module and its outputs", async () => {
  using w = randn([12, 6], { seed: 9 });
  using x = randn([3, 12], { seed: 10 });
  using module = Module.fromScript(script((input: Tensor) => gelu(mm(input, w))), [x], "gelu_layer");
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  await save(module, path);
  using loaded = await load(path);
  assert.deepEqual(loaded.inputs, module.inputs);
  using a = await module.forward(x);
  using b = loaded.forwardSync(x);
  assert.deepEqual(values(a), values(b));
  using wrongShape = randn([3, 11], { seed: 1 });
  await assert.rejects(
    () => loaded.forward(wrongShape),
    (e) => e instanceof SpindleError && e.code === "shape_mismatch",
  );
  await Deno.remove(path);
});

Deno.test("concurrent forward calls give the same outputs as single calls", async () => {
  for (const name of ["example", "mlp", "resnet", "dlrm", "transformer"]) {
    const model = builtinModel(name, { batch: 2 });
    const inputs = model.inputs();
    const single = model.module.forwardSync(...inputs);
    const expected = values(single);
    single.dispose();
    const results = await Promise.all(Array.from({ length: 6 }, () => model.module.forward(...inputs)));
    for (const result of results) {
      assert.deepEqual(values(result), expected, name);
      result.dispose();
    }
    inputs.forEach((t) => t.dispose());
    model.dispose();
  }
});

Deno.test("built-ins scripted through the interpreter equal their eager execution", () => {
  // The eager run of a traced function is what the trace recorded: run fn eagerly by calling
  // the scripted graph's ops directly and compare with the interpreter's output.
  using w1 = randn([32, 64], { seed: 11 });
  using w2 = randn([64, 16], { seed: 12 });
  const tower = script((x: Tensor) => relu(mm(x, w1)), "tower");
  const fn = (x: Tensor) => {
    const futures = [fork(tower, x), fork(tower, x)];
    return mm(concat(futures.map((f) => wait(f)), 0), w2);
  };
  using x = randn([4, 32], { seed: 13 });
  using scripted = script(fn)(x);
  const eager = fn(x); // outside a trace, fork of a scripted function runs it
  assertClose(values(scripted), values(eager), { relative: 1e-5, absolute: 1e-5 });
  eager.dispose();
});

Deno.test("malformed model files are refused with malformed_model, never a crash", async () => {
  const path = await Deno.makeTempFile();
  for (const bytes of [new Uint8Array(0), new Uint8Array(10), new TextEncoder().encode("SPINDLE\0garbage garbage")]) {
    await Deno.writeFile(path, bytes);
    await assert.rejects(() => load(path), (e) => e instanceof SpindleError && e.code === "malformed_model");
  }
  await Deno.remove(path);
  const base = {
    graphs: [{
      inputs: [{ dtype: "float32" as const, shape: [2] }],
      values: 2,
      nodes: [{ op: "relu", inputs: [0], outputs: [1] }],
      outputs: [1],
    }],
    tensors: [],
  };
  assert.ok(Program.load(encodeImage(base)));
  const cycle = {
    graphs: [
      {
        inputs: [{ dtype: "float32" as const, shape: [2] }],
        values: 2,
        nodes: [{ op: "fork", graph: 1, inputs: [0], outputs: [1] }],
        outputs: [0],
      },
      {
        inputs: [{ dtype: "float32" as const, shape: [2] }],
        values: 2,
        nodes: [{ op: "fork", graph: 0, inputs: [0], outputs: [1] }],
        outputs: [0],
      },
    ],
    tensors: [],
  };
  assert.throws(
    () => Program.load(encodeImage(cycle)),
    (e) => e instanceof SpindleError && /graph 0 runs itself/.test(e.message),
  );
  // Version 1 files (parameters by position) are refused with the way out.
  const old = encodeImage(base);
  new DataView(old.buffer).setUint32(8, 1, true);
  assert.throws(
    () => Program.load(old),
    (e) => e instanceof SpindleError && e.code === "malformed_model" && /version 1 .*re-save it/.test(e.message),
  );
  // Parameters are named and checked against the op's schema at load.
  for (
    const [params, pattern] of [
      [{ negative: 1 }, /relu: unknown parameter 'negative' \(its parameters: none\)/],
      [[0], /params must be an object of named parameters/],
    ] as const
  ) {
    const bad = structuredClone(base) as unknown as { graphs: { nodes: { params?: unknown }[] }[] };
    bad.graphs[0].nodes[0].params = params;
    assert.throws(
      () => Program.load(encodeImage(bad as unknown as typeof base)),
      (e) => e instanceof SpindleError && e.code === "malformed_model" && pattern.test(e.message),
    );
  }
  const unknownOp = structuredClone(base);
  unknownOp.graphs[0].nodes[0].op = "teleport";
  assert.throws(
    () => Program.load(encodeImage(unknownOp)),
    (e) => e instanceof SpindleError && /unknown op 'teleport'/.test(e.message),
  );
});

Deno.test("fuzz: 2000 mutated model images load or fail with a SpindleError", () => {
  using w = randn([6, 4], { seed: 14 });
  using x = randn([2, 6], { seed: 15 });
  const child = script((input: Tensor) => mm(input, w), "child");
  using module = Module.fromScript(script((input: Tensor) => relu(wait(fork(child, input)))), [x]);
  const image = module.image;
  const random = generator(2024);
  let loaded = 0;
  for (let i = 0; i < 2000; i++) {
    const mutated = image.slice(0, random() < 0.2 ? Math.floor(random() * image.length) : image.length);
    const edits = 1 + Math.floor(random() * 4);
    for (let e = 0; e < edits && mutated.length > 0; e++) {
      mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
    }
    try {
      const program = Program.load(mutated);
      loaded++;
      try {
        program.runSync([x]).forEach((t) => t.dispose());
      } catch (error) {
        assert.ok(error instanceof SpindleError, String(error));
      }
      program.dispose();
    } catch (error) {
      assert.ok(error instanceof SpindleError || error instanceof SyntaxError, String(error));
    }
  }
  assert.ok(loaded > 0);
});

Deno.test("every built-in scripted through the interpreter equals its eager execution", () => {
  for (const name of ["example", "mlp", "resnet", "dlrm", "transformer"]) {
    const model = builtinModel(name, { batch: 2 });
    const inputs = model.inputs();
    using scripted = model.module.forwardSync(...inputs);
    using eager = model.eager(...inputs);
    assert.deepEqual(scripted.shape, eager.shape, name);
    assertClose(values(scripted), values(eager), { relative: 1e-4, absolute: 1e-4, label: name });
    inputs.forEach((t) => t.dispose());
    model.dispose();
  }
});

Deno.test("traced programs get a memory plan: op outputs share one arena per run", () => {
  using w = randn([64, 64], { seed: 20 });
  using x = randn([8, 64], { seed: 21 });
  const chain = script((input: Tensor) => relu(mm(relu(mm(relu(mm(input, w)), w)), w)), "chain");
  chain(x).dispose();
  const program = programFor(chain, [x]);
  // Five intermediate [8, 64] outputs, at most two alive at once: two 2 KiB regions.
  assert.equal(program.arenaBytes(), 2 * 8 * 64 * 4);
  using a = chain(x);
  using b = chain(x);
  assert.deepEqual(values(a), values(b));
});

Deno.test("a planned program does not allocate per op in steady state", () => {
  using w = randn([32, 32], { seed: 30 });
  using x = randn([4, 32], { seed: 31 });
  const chain = script((input: Tensor) => {
    let h = input;
    for (let i = 0; i < 50; i++) h = relu(mm(h, w)); // 100 ops
    return h;
  }, "long_chain");
  for (let i = 0; i < 5; i++) chain(x).dispose(); // trace, plan, warm the caches
  const before = native().spindle_system_allocations();
  const runs = 20;
  for (let i = 0; i < runs; i++) chain(x).dispose();
  const perRun = Number(native().spindle_system_allocations() - before) / runs;
  // A run takes its arena and its output from the system allocator: a few per run, not 100.
  assert.ok(perRun <= 6, `${perRun} system allocations per run of 100 ops`);
});

Deno.test("a function forked from several places is one graph per input signature", () => {
  using w = randn([6, 6], { seed: 40 });
  const inner = script((x: Tensor) => relu(mm(x, w)), "inner");
  const outer = script((x: Tensor) => {
    const first = fork(inner, x);
    const second = fork(inner, add(x, 1));
    const wide = fork(inner, concat([x, x], 0)); // another shape: a graph of its own
    const sum2 = add(wait(first), wait(second));
    return [sum2, wait(wide)];
  }, "outer");
  using x = randn([3, 6], { seed: 41 });
  using module = Module.fromScript(outer, [x]);
  const graphs = decodeDescription(module.image).graphs;
  assert.deepEqual(graphs.map((g) => g.name), ["outer", "inner", "inner"]);
  const [sum2, wide] = module.forwardAllSync(x);
  using _sum2 = sum2;
  using _wide = wide;
  using shifted = add(x, 1);
  using a = relu(mm(x, w));
  using b = relu(mm(shifted, w));
  using expected = add(a, b);
  assertClose(values(sum2), values(expected), { relative: 1e-5, absolute: 1e-6 });
  assert.deepEqual(wide.shape, [6, 6]);
  assertClose(values(wide).slice(0, 18), values(a), { relative: 1e-5, absolute: 1e-6 });
});

Deno.test("a scripted function that forks itself is refused while tracing", () => {
  const holder: { self?: (x: Tensor) => Tensor } = {};
  const recursive = script((x: Tensor) => relu(wait(fork(holder.self!, x))), "recursive");
  holder.self = recursive;
  using x = randn([2], { seed: 42 });
  assert.throws(() => recursive(x), (e) => e instanceof TracingError && /recursive: forks itself/.test(e.message));
});

Deno.test("nested fork/wait 16 deep with fan-out 2 is 17 graphs that save, load and run on one inter-op thread", async () => {
  // In a subprocess: the inter-op thread count is set once per process, before any fork.
  const result = await runSnippet(
    `import { add, fork, load, Module, mul, randn, save, script, setNumInteropThreads, tanh, wait } from "${MOD_URL}";
     import { decodeDescription } from "${new URL("lib/program/format.ts", MOD_URL).href}";
     setNumInteropThreads(1);
     const depth = 16;
     let level = script((x) => tanh(x), "leaf");
     for (let d = 1; d <= depth; d++) {
       const inner = level;
       // inner(x) + inner(x / 2): 2^16 leaves, C(16, k) of them on x / 2^k.
       level = script((x) => add(wait(fork(inner, x)), wait(fork(inner, mul(x, 0.5)))), "level" + d);
     }
     const x = randn([2, 3], { seed: 43 });
     const module = Module.fromScript(level, [x]);
     const path = await Deno.makeTempFile({ suffix: ".spindle" });
     await save(module, path);
     const loaded = await load(path);
     await Deno.remove(path);
     const y = loaded.forwardSync(x);
     const xs = Array.from(x.toArray());
     const binomial = (n, k) => { let r = 1; for (let i = 0; i < k; i++) r = (r * (n - i)) / (i + 1); return r; };
     const expected = xs.map((v) => { let s = 0; for (let k = 0; k <= depth; k++) s += binomial(depth, k) * Math.tanh(v / 2 ** k); return s; });
     console.log(JSON.stringify({ graphs: decodeDescription(loaded.image).graphs.length, got: Array.from(y.toArray()), expected }));`,
  );
  assert.equal(result.code, 0, result.stderr);
  const { graphs, got, expected } = JSON.parse(result.stdout);
  assert.equal(graphs, 17);
  assertClose(got, expected, { relative: 1e-5, absolute: 1e-5 });
});

Deno.test("scripted models get the graph optimiser of ONNX import: folds, fusions, constant folding", () => {
  using w = randn([16, 8, 3, 3], { seed: 1 });
  using mean = randn([16], { seed: 2 });
  using varianceRaw = randn([16], { seed: 3 });
  using variance = add(mul(varianceRaw, varianceRaw), 0.5);
  using gamma = randn([16], { seed: 4 });
  using beta = randn([16], { seed: 5 });
  using fcWeight = randn([10, 16], { seed: 6 });
  using fcBias = randn([10], { seed: 7 });
  const body = (x: Tensor) => {
    using c = conv2d(x, w, null, { padding: 1 });
    using n = batchNorm(c, mean, variance, gamma, beta, 1e-5);
    using r = relu(n);
    using pooled = adaptiveAvgPool2d(r, [1, 1]);
    using flat = flatten(pooled, 1);
    return relu(linear(flat, fcWeight, fcBias));
  };
  using x = randn([2, 8, 12, 12], { seed: 8 });
  using model = Module.fromScript(script(body), [x]);
  const ops = decodeDescription(model.image).graphs[0].nodes.map((node) => node.op);
  // batch norm and relu fold into the convolution, the linear layer's transpose of a weight
  // is folded at trace time, and its matmul + bias + relu becomes one gemm.
  assert.deepEqual(ops.filter((op) => op !== "constant"), ["conv2d", "adaptive_avg_pool2d", "flatten", "gemm"]);
  atThreadCounts((threads) => {
    using expected = body(x);
    using got = model.forwardSync(x);
    assertClose(got.toArray() as Float32Array, expected.toArray() as Float32Array, {
      relative: 1e-4,
      absolute: 1e-5,
      label: `${threads} threads`,
    });
  });
});

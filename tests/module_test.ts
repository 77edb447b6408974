import assert from "node:assert/strict";
import { add, load, max, min, Module, mul, randn, relu, save, script, sub, type Tensor, tensor } from "../mod.ts";
import { encodeImage } from "../lib/program/format.ts";
import { values } from "./reference.ts";

/** A two-input, two-output module: (a + b, a - b). */
function sumAndDifference(options: Parameters<typeof Module.fromScript>[2] = {}): {
  module: Module;
  a: Tensor;
  b: Tensor;
  [Symbol.dispose](): void;
} {
  const a = tensor([5, 7, 9], [3]);
  const b = tensor([1, 2, 3], [3]);
  const module = Module.fromScript(script((x: Tensor, y: Tensor) => [add(x, y), sub(x, y)]), [a, b], options);
  return {
    module,
    a,
    b,
    [Symbol.dispose]() {
      module.dispose();
      a.dispose();
      b.dispose();
    },
  };
}

Deno.test("forward returns the single output; a model with several outputs points to forwardAll and run", async () => {
  using x = tensor([-1, 2, -3]);
  using single = Module.fromScript(script((input: Tensor) => relu(input)), [x]);
  using y = await single.forward(x);
  using z = single.forwardSync(x);
  assert.deepEqual(values(y), [0, 2, 0]);
  assert.deepEqual(values(z), [0, 2, 0]);
  const [only] = single.forwardAllSync(x);
  using _only = only;
  assert.deepEqual(values(only), [0, 2, 0]);

  using pair = sumAndDifference({ outputNames: ["sum", "difference"] });
  await assert.rejects(
    () => pair.module.forward(pair.a, pair.b),
    (e) => e instanceof TypeError && /2 outputs \(sum, difference\).*forwardAll\(\) or run\(\)/.test(e.message),
  );
  assert.throws(
    () => pair.module.forwardSync(pair.a, pair.b),
    (e) => e instanceof TypeError && /forwardAllSync\(\) or runSync\(\)/.test(e.message),
  );
  const [sum, difference] = await pair.module.forwardAll(pair.a, pair.b);
  assert.deepEqual([values(sum), values(difference)], [[6, 9, 12], [4, 5, 6]]);
  sum.dispose();
  difference.dispose();
});

Deno.test("run and runSync take inputs and give outputs by name", async () => {
  using pair = sumAndDifference({ inputNames: ["a", "b"], outputNames: ["sum", "difference"] });
  assert.deepEqual(pair.module.inputNames, ["a", "b"]);
  assert.deepEqual(pair.module.outputNames, ["sum", "difference"]);
  // Feeds in any key order.
  const outputs = await pair.module.run({ b: pair.b, a: pair.a });
  assert.deepEqual(Object.keys(outputs), ["sum", "difference"]);
  assert.deepEqual(values(outputs.sum), [6, 9, 12]);
  assert.deepEqual(values(outputs.difference), [4, 5, 6]);
  Object.values(outputs).forEach((t) => t.dispose());
  const again = pair.module.runSync({ a: pair.b, b: pair.a });
  assert.deepEqual(values(again.difference), [-4, -5, -6]);
  Object.values(again).forEach((t) => t.dispose());
});

Deno.test("run refuses missing, unknown and non-Tensor inputs with a TypeError naming the input", async () => {
  using pair = sumAndDifference({ inputNames: ["a", "b"] });
  const expected = /takes 2 input\(s\): 'a', 'b'/;
  const cases: [unknown, RegExp][] = [
    [{ a: pair.a }, /missing input 'b'/],
    [{ a: pair.a, b: pair.b, c: pair.b }, /unknown input 'c'/],
    [{ a: pair.a, b: [1, 2, 3] }, /input 'b' must be a Tensor, got an array/],
    [{ a: pair.a, b: 3 }, /input 'b' must be a Tensor, got number/],
    [[pair.a, pair.b], /expected an object of tensors by input name, got an array/],
    [pair.a, /expected an object of tensors by input name, got a Tensor/],
    [null, /got null/],
  ];
  for (const [feeds, message] of cases) {
    const matches = (e: unknown) => e instanceof TypeError && message.test(e.message) && expected.test(e.message);
    assert.throws(() => pair.module.runSync(feeds as Record<string, Tensor>), matches, String(message));
    await assert.rejects(() => pair.module.run(feeds as Record<string, Tensor>), matches, String(message));
  }
  // An input named like an Object.prototype member is still missing when not given.
  using x = tensor([1]);
  using odd = Module.fromScript(script((input: Tensor) => relu(input)), [x], { inputNames: ["constructor"] });
  assert.throws(() => odd.runSync({}), (e) => e instanceof TypeError && /missing input 'constructor'/.test(e.message));
});

Deno.test("forward refuses the wrong number of inputs and non-Tensor inputs with a TypeError", async () => {
  using pair = sumAndDifference({ inputNames: ["a", "b"] });
  await assert.rejects(
    () => pair.module.forwardAll(pair.a),
    (e) => e instanceof TypeError && /got 1 input\(s\); .* takes 2 input\(s\): 'a', 'b'/.test(e.message),
  );
  assert.throws(
    () => pair.module.forwardAllSync(pair.a, 2 as unknown as Tensor),
    (e) => e instanceof TypeError && /input 1 \('b'\) must be a Tensor, got number/.test(e.message),
  );
});

Deno.test("scripted modules get default names, and their names and metadata survive save and load", async () => {
  using x = randn([2, 3], { seed: 1 });
  using plain = Module.fromScript(script((input: Tensor) => [min(input, 1), max(input, 1, true)]), [x]);
  assert.deepEqual(plain.inputNames, ["input0"]);
  assert.deepEqual(plain.outputNames, ["output0", "output1"]);
  assert.deepEqual(plain.inputMetadata, [{ name: "input0", dtype: "float32", shape: [2, 3] }]);
  assert.deepEqual(plain.outputMetadata, [
    { name: "output0", dtype: "float32", shape: [2] },
    { name: "output1", dtype: "float32", shape: [2, 1] },
  ]);
  using named = Module.fromScript(script((input: Tensor) => mul(input, 2)), [x], {
    name: "doubler",
    inputNames: ["features"],
    outputNames: ["doubled"],
  });
  assert.equal(named.name, "doubler");
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  await save(named, path);
  using loaded = await load(path);
  await Deno.remove(path);
  assert.deepEqual(loaded.inputMetadata, [{ name: "features", dtype: "float32", shape: [2, 3] }]);
  assert.deepEqual(loaded.outputMetadata, [{ name: "doubled", dtype: "float32", shape: [2, 3] }]);
  const { doubled } = loaded.runSync({ features: x });
  using expected = mul(x, 2);
  assert.deepEqual(values(doubled), values(expected));
  doubled.dispose();
});

Deno.test("Module.fromScript checks the names it is given", () => {
  using x = tensor([1, 2]);
  const fn = script((input: Tensor) => relu(input));
  assert.throws(
    () => Module.fromScript(fn, [x], { inputNames: ["a", "b"] }),
    (e) => e instanceof RangeError && /one per example input \(1\)/.test(e.message),
  );
  assert.throws(() => Module.fromScript(fn, [x], { outputNames: [] }), RangeError);
  assert.throws(() => Module.fromScript(fn, [x], { inputNames: [""] }), TypeError);
  assert.throws(
    () => Module.fromScript(fn, [x], 3 as unknown as string),
    (e) => e instanceof TypeError && /options/.test(e.message),
  );
  assert.throws(
    () => Module.fromScript(script((input: Tensor) => [relu(input), relu(input)]), [x], { outputNames: ["y", "y"] }),
    (e) => e instanceof TypeError && /names 'y' twice/.test(e.message),
  );
});

Deno.test("a model file that does not describe its outputs gets their metadata from a run", async () => {
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  for (const [shape, expected] of [[[2, 5], [2, 5]], [[-1, 5], [-1, -1]]]) {
    const image = encodeImage({
      graphs: [{
        inputs: [{ dtype: "float32", shape }],
        values: 3,
        nodes: [{ op: "neg", inputs: [0], outputs: [1] }, { op: "abs", inputs: [1], outputs: [2] }],
        outputs: [2, 1],
      }],
      tensors: [],
    });
    await Deno.writeFile(path, image);
    using module = await load(path);
    assert.deepEqual(module.outputMetadata, [
      { name: "output0", dtype: "float32", shape: expected },
      { name: "output1", dtype: "float32", shape: expected },
    ]);
  }
  await Deno.remove(path);
});

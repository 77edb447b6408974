import assert from "node:assert/strict";
import { load, mm, Module, randn, relu, save, script, SpindleError, sub, type Tensor } from "../mod.ts";
import { liveTensorCount } from "../lib/tensor.ts";
import { native } from "../ffi/load.ts";
import { values } from "./reference.ts";

// Issue 17, "Calls hold what they use": the asynchronous runs pin their inputs and the
// program on the calling thread, so disposing either right after the call (what `using`
// does at the end of a scope) cannot fail the run or change its result.

const CALLS = 200;
const IN_FLIGHT = 8;

/** A one-output and a two-output model over one weight, with their reference results. */
function fixture(): {
  single: Module;
  pair: Module;
  inputs: Tensor[];
  expected: number[][];
  expectedPair: [number[], number[]][];
  [Symbol.dispose](): void;
} {
  using w = randn([16, 16], { seed: 7 });
  using example = randn([4, 16], { seed: 0 });
  const single = Module.fromScript(script((x: Tensor) => relu(mm(x, w)), "single"), [example]);
  const pair = Module.fromScript(script((x: Tensor) => [relu(mm(x, w)), sub(x, x)], "pair"), [example], {
    inputNames: ["x"],
    outputNames: ["activation", "zero"],
  });
  const inputs = Array.from({ length: IN_FLIGHT }, (_, i) => randn([4, 16], { seed: 100 + i }));
  const expected = inputs.map((x) => {
    using y = single.forwardSync(x);
    return values(y);
  });
  const expectedPair = inputs.map((x) => {
    const [a, b] = pair.forwardAllSync(x);
    using _a = a;
    using _b = b;
    return [values(a), values(b)] as [number[], number[]];
  });
  return {
    single,
    pair,
    inputs,
    expected,
    expectedPair,
    [Symbol.dispose]() {
      single.dispose();
      pair.dispose();
      inputs.forEach((t) => t.dispose());
    },
  };
}

/** A fresh copy of input `i` (the caller disposes it right after starting a run). */
function copyOf(i: number): Tensor {
  return randn([4, 16], { seed: 100 + i });
}

/** Calls pinned natively and not yet run or released (0 once every run has settled). */
function pinnedCalls(): number {
  return Number(native().spindle_call_live_count());
}

/** Runs `start(i)` for CALLS calls, IN_FLIGHT at a time, and checks each result. */
async function rounds<T>(start: (slot: number) => Promise<T>, check: (slot: number, result: T) => void): Promise<void> {
  for (let round = 0; round < CALLS / IN_FLIGHT; round++) {
    const pending = Array.from({ length: IN_FLIGHT }, (_, slot) => start(slot));
    const results = await Promise.all(pending);
    results.forEach((result, slot) => check(slot, result));
  }
  assert.equal(pinnedCalls(), 0);
}

Deno.test("forward pins its inputs: disposing them right after the call is safe", async () => {
  using f = fixture();
  const baseline = liveTensorCount();
  await rounds(
    (slot) => {
      const x = copyOf(slot);
      const promise = f.single.forward(x);
      x.dispose();
      return promise;
    },
    (slot, y) => {
      using _y = y;
      assert.deepEqual(values(y), f.expected[slot]);
    },
  );
  assert.equal(liveTensorCount(), baseline);
});

Deno.test("forwardAll pins its inputs: disposing them right after the call is safe", async () => {
  using f = fixture();
  await rounds(
    (slot) => {
      const x = copyOf(slot);
      const promise = f.pair.forwardAll(x);
      x.dispose();
      return promise;
    },
    (slot, [a, b]) => {
      using _a = a;
      using _b = b;
      assert.deepEqual([values(a), values(b)], f.expectedPair[slot]);
    },
  );
});

Deno.test("run pins its feeds: disposing them right after the call is safe", async () => {
  using f = fixture();
  await rounds(
    (slot) => {
      // `using` disposes the feed when this block ends, before the run is awaited.
      using x = copyOf(slot);
      return f.pair.run({ x });
    },
    (slot, { activation, zero }) => {
      using _a = activation;
      using _z = zero;
      assert.deepEqual([values(activation), values(zero)], f.expectedPair[slot]);
    },
  );
});

Deno.test("forward pins the program: disposing the module right after the call is safe", async () => {
  using f = fixture();
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  try {
    await save(f.single, path);
    await rounds(
      async (slot) => {
        const module = await load(path);
        const promise = module.forward(f.inputs[slot]);
        module.dispose();
        return await promise;
      },
      (slot, y) => {
        using _y = y;
        assert.deepEqual(values(y), f.expected[slot]);
      },
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("forward pins both: disposing the inputs and the module at once is safe", async () => {
  using f = fixture();
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  try {
    await save(f.single, path);
    const modules = await Promise.all(Array.from({ length: CALLS }, () => load(path)));
    await rounds(
      (slot) => {
        const module = modules.pop()!;
        using x = copyOf(slot);
        using _module = module;
        return module.forward(x);
      },
      (slot, y) => {
        using _y = y;
        assert.deepEqual(values(y), f.expected[slot]);
      },
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("a failing run rejects with the native message and releases what it pinned", async () => {
  using f = fixture();
  const baseline = liveTensorCount();
  const pending = Array.from({ length: IN_FLIGHT }, () => {
    using wrong = randn([4, 15], { seed: 1 });
    return f.single.forward(wrong);
  });
  for (const result of await Promise.allSettled(pending)) {
    assert.equal(result.status, "rejected");
    const error = (result as PromiseRejectedResult).reason;
    assert.ok(error instanceof SpindleError && error.code === "shape_mismatch", String(error));
    assert.match(error.message, /input 0/);
  }
  assert.equal(pinnedCalls(), 0);
  assert.equal(liveTensorCount(), baseline);
});

Deno.test("a call on a disposed input or module is refused when it is made", async () => {
  using f = fixture();
  const x = randn([4, 16], { seed: 2 });
  x.dispose();
  await assert.rejects(f.single.forward(x), (e) => e instanceof SpindleError && e.code === "invalid_handle");
  const path = await Deno.makeTempFile({ suffix: ".spindle" });
  try {
    await save(f.single, path);
    const module = await load(path);
    module.dispose();
    await assert.rejects(module.forward(f.inputs[0]), (e) => e instanceof SpindleError && e.code === "invalid_handle");
  } finally {
    await Deno.remove(path);
  }
  assert.equal(pinnedCalls(), 0);
});

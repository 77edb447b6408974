/**
 * The fork/wait stress run (used by stress_test.ts in a subprocess, because the inter-op
 * thread count is set once per process): random trees of scripted functions that fork and
 * wait on each other, some with an injected failing op, each run many times, sequentially
 * and concurrently. Prints one JSON summary.
 *
 * deno run -A tests/stress_fixture.ts <interop-threads> <seed>
 */
import {
  add,
  fork,
  liveTensorCount,
  mm,
  Module,
  randn,
  relu,
  script,
  setNumInteropThreads,
  SpindleError,
  type Tensor,
  wait,
} from "../mod.ts";
import { liveFutureCount } from "../lib/future.ts";
import { generator } from "./reference.ts";

const [interop, seedText] = Deno.args;
setNumInteropThreads(Number(interop));
const random = generator(Number(seedText));

const width = 8;
using weight = randn([width, width], { seed: 1 });
using bad = randn([width + 1, width], { seed: 2 }); // mm(x, bad) fails: shapes do not match

interface Tree {
  fn: (x: Tensor) => Tensor;
  fails: boolean;
  reference: (x: number[][]) => number[][];
}

function matmul(a: number[][], b: number[][]): number[][] {
  return a.map((row) => b[0].map((_, j) => row.reduce((s, v, k) => s + v * b[k][j], 0)));
}

const weightValues = (() => {
  const flat = Array.from(weight.toArray() as Float32Array);
  return Array.from({ length: width }, (_, i) => flat.slice(i * width, (i + 1) * width));
})();

function build(depth: number): Tree {
  const children = depth === 0 ? 0 : Math.floor(random() * 4);
  if (children === 0) {
    const fails = random() < 0.15;
    const leaf = script((x: Tensor) => (fails ? mm(x, bad) : relu(mm(x, weight))), "leaf");
    return {
      fn: leaf,
      fails,
      reference: (x) => matmul(x, weightValues).map((row) => row.map((v) => Math.max(v, 0))),
    };
  }
  const subtrees = Array.from({ length: children }, () => build(depth - 1));
  const scripted = subtrees.map((t) => script(t.fn, "node"));
  const node = script((x: Tensor) => {
    const futures = scripted.map((s) => fork(s, x)); // all children run on the inter-op pool
    return futures.map((f) => wait(f)).reduce((a, b) => add(a, b));
  }, "inner");
  return {
    fn: node,
    fails: subtrees.some((t) => t.fails),
    reference: (x) => {
      const parts = subtrees.map((t) => t.reference(x));
      return parts.reduce((a, b) => a.map((row, i) => row.map((v, j) => v + b[i][j])));
    },
  };
}

let runs = 0;
let errors = 0;
let mismatches = 0;
using x = randn([2, width], { seed: 3 });
const xValues = (() => {
  const flat = Array.from(x.toArray() as Float32Array);
  return [flat.slice(0, width), flat.slice(width)];
})();
const baselineTensors = liveTensorCount();
const baselineFutures = liveFutureCount();

for (let program = 0; program < 30; program++) {
  const tree = build(1 + Math.floor(random() * 3));
  let module: Module;
  try {
    module = Module.fromScript(script(tree.fn, "root"), [x]);
  } catch (error) {
    // Tracing runs the ops eagerly: an injected failure already shows here.
    if (!(error instanceof SpindleError) || !tree.fails) throw error;
    errors++;
    continue;
  }
  const expected = tree.reference(xValues).flat();
  const calls = Array.from({ length: 6 }, () => module.forward(x));
  calls.push(Promise.resolve().then(() => module.forwardSync(x)));
  const settled = await Promise.allSettled(calls);
  for (const outcome of settled) {
    runs++;
    if (outcome.status === "rejected") {
      if (!tree.fails || !(outcome.reason instanceof SpindleError)) throw outcome.reason;
      errors++;
      continue;
    }
    const value = outcome.value;
    const got = Array.from(value.toArray() as Float32Array);
    if (tree.fails || got.some((v, i) => Math.abs(v - expected[i]) > 1e-3 * (1 + Math.abs(expected[i])))) mismatches++;
    value.dispose();
  }
  module.dispose();
}
// Workers drop their last reference to a future just after completing it: give them a moment
// (bounded) before counting what is still alive.
for (let i = 0; i < 200 && liveFutureCount() > baselineFutures; i++) await new Promise((r) => setTimeout(r, 10));
console.log(JSON.stringify({
  runs,
  errors,
  mismatches,
  tensorsLeaked: liveTensorCount() - baselineTensors,
  futuresLeaked: liveFutureCount() - baselineFutures,
}));

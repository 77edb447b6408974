/**
 * Interpreter overhead per op on tiny tensors: one scripted program of 1000 chained ops on a
 * 1-element tensor, run with one FFI call, against the same 1000 ops called eagerly from
 * TypeScript (one FFI call and one output handle each). Divide the times by 1000 for the
 * per-op cost.
 *
 *   deno bench -A bench/interpreter_bench.ts
 */
import { add, Module, relu, script, type Tensor, tensor } from "../mod.ts";

const CHAIN = 1000;
const x = tensor([0.5]);
const chain = (input: Tensor) => {
  let h = input;
  for (let i = 0; i < CHAIN / 2; i++) h = relu(add(h, 1e-3));
  return h;
};
const module = Module.fromScript(script(chain, "chain"), [x]);

Deno.bench(`interpreter: ${CHAIN} tiny ops in one forwardSync (per op: divide by ${CHAIN})`, {
  group: "chain",
  baseline: true,
}, () => {
  module.forwardSync(x).dispose();
});

Deno.bench(`eager: ${CHAIN} tiny ops from TypeScript (per op: divide by ${CHAIN})`, { group: "chain" }, () => {
  let h = x;
  for (let i = 0; i < CHAIN / 2; i++) {
    const a = add(h, 1e-3);
    if (h !== x) h.dispose();
    h = relu(a);
    a.dispose();
  }
  h.dispose();
});

// The fixed cost of one call, separate from the ops: a one-op program on a 1-element tensor,
// run on the calling thread and on an inference thread (one nonblocking FFI call, awaited).
const single = Module.fromScript(script((input: Tensor) => relu(input), "single"), [x]);

Deno.bench("per call: forwardSync of a one-op program", { group: "call", baseline: true }, () => {
  single.forwardSync(x).dispose();
});

Deno.bench("per call: await forward of a one-op program", { group: "call" }, async () => {
  (await single.forward(x)).dispose();
});

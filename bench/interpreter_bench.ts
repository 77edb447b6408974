/**
 * Interpreter overhead per op on tiny tensors: one scripted program of 1000 chained ops on a
 * 1-element tensor, run with one FFI call, against the same 1000 ops called eagerly from
 * TypeScript (one FFI call and one output handle each). Divide the times by 1000 for the
 * per-op cost. Then the fixed cost of one call: sync, awaited, and what pinning an awaited
 * call's program and inputs costs on the JavaScript thread.
 *
 *   deno bench -A bench/interpreter_bench.ts
 */
import { add, Module, relu, script, type Tensor, tensor } from "../mod.ts";
import { check, native } from "../ffi/load.ts";
import { MAX_DIMS } from "../lib/tensor.ts";

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

// What an awaited call adds on the JavaScript thread: pinning the program and the input into
// a call record (one sync FFI call; the run takes it back out natively), against one sync
// FFI call that looks one handle up.
const loaded = new BigUint64Array(1);
check(native().spindle_program_load(single.image, BigInt(single.image.byteLength), 0n, 0, loaded));
const inputHandles = BigUint64Array.of(x.handle);
const callToken = new BigUint64Array(1);
const info = new BigInt64Array(4 + MAX_DIMS);

Deno.bench("ffi: tensor info (one sync FFI call, one handle looked up)", { group: "pin", baseline: true }, () => {
  native().spindle_tensor_info(x.handle, info);
});

Deno.bench("ffi: pin a call (the program and one input), then dispose it", { group: "pin" }, () => {
  native().spindle_call_pin(loaded[0], 0, inputHandles, 1n, callToken);
  native().spindle_call_dispose(callToken[0]);
});

/**
 * Inter-op benchmarks (`deno bench -A bench/interop_bench.ts`):
 *
 * - awaiting futures: 1000 forks in flight, awaited through the native completion queue,
 *   against the raw cost of one `nonblocking` FFI call (the floor of a per-future wait);
 * - the threading spec's two branches: `mm` 512×512 forked beside `mm` 512×512 on the
 *   calling thread, with 1 intra-op and 2 inter-op threads, against the two run one after
 *   the other.
 */
import { fork, mm, rand, setNumInteropThreads, setNumThreads, tensor, wait } from "../mod.ts";
import { add } from "../mod.ts";
import { native } from "../ffi/load.ts";

setNumThreads(1);
setNumInteropThreads(2);

const one = tensor([1]);
const FLIGHT = 1000;

Deno.bench("nonblocking FFI call, awaited one at a time (per call)", { group: "await", baseline: true }, async () => {
  await native().spindle_abi_version_async();
});

Deno.bench(
  `await ${FLIGHT} forked tiny ops in flight (per future: divide by ${FLIGHT})`,
  { group: "await" },
  async (b) => {
    const futures = new Array(FLIGHT);
    b.start();
    for (let i = 0; i < FLIGHT; i++) futures[i] = fork(add, one, one);
    const values = await Promise.all(futures);
    b.end();
    for (const value of values) value.dispose();
  },
);

Deno.bench(`fork + wait of a tiny op, blocking (per future)`, { group: "wait" }, () => {
  wait(fork(add, one, one)).dispose();
});

const x = rand([512, 512], { seed: 1 });
const wY = rand([512, 512], { seed: 2 });
const wZ = rand([512, 512], { seed: 3 });

Deno.bench("two mm 512² one after the other (1 intra-op thread)", { group: "branches", baseline: true }, () => {
  mm(x, wY).dispose();
  mm(x, wZ).dispose();
});

Deno.bench("mm 512² forked beside mm 512² (1 intra-op, 2 inter-op threads)", { group: "branches" }, () => {
  const future = fork(mm, x, wZ);
  mm(x, wY).dispose();
  wait(future).dispose();
});

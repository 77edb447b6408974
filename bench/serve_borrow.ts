/**
 * What reading a binary input in place saves the server (lib/serve/model.ts): an input
 * tensor copied into native memory (`tensorFromBytes` + dispose) against one borrowing an
 * aligned JS buffer, as a request body is (`tensorBorrowingBytes` + `endBorrow`), for
 * builtin:example's 64×1024 float32 input, in three ways, each alternating copy and borrow per
 * iteration so that the load others put on the machine falls on both alike:
 *
 *   deno run -A bench/serve_borrow.ts [--iterations 3000]
 *
 * - warm: the input tensor alone, made and ended back to back;
 * - forward: the input tensor and builtin:example's forward on the calling thread
 *   (`forwardAllSyncUnreported`, the server's inline path);
 * - cold: the input tensor alone after 4 MiB are written (as a forward and the socket
 *   traffic between requests would), with the body rewritten just before (as after a
 *   socket read).
 *
 * Prints p50 and p90 of each (µs), and the load average. Nothing is written.
 *
 * @module
 */
import { quantile } from "../lib/cli/infer.ts";
import { builtinModel } from "../lib/models/builtin.ts";
import { forwardAllSyncUnreported } from "../lib/module.ts";
import { BORROW_ALIGNMENT, endBorrow, tensorBorrowingBytes, tensorFromBytes } from "../lib/tensor.ts";
import { benchArgs } from "./args.ts";

const { values: flags } = benchArgs(import.meta.url, { iterations: { type: "string" } });
const iterations = Number(flags.iterations ?? 3000);
if (!Number.isInteger(iterations) || iterations < 100) throw new RangeError("--iterations must be 100 or more");

const SHAPE = [64, 1024];
const BYTES = 64 * 1024 * 4;
const buffer = new Uint8Array(1 << 19);
const base = Number(BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer))) % BigInt(BORROW_ALIGNMENT));
const at = (BORROW_ALIGNMENT - base) % BORROW_ALIGNMENT;
const body = buffer.subarray(at, at + BYTES);
new Float32Array(buffer.buffer, at, BYTES / 4).forEach((_, i, values) => values[i] = Math.sin(i));
const example = builtinModel("example");
const evict = new Uint8Array(4 << 20);

/** Times copy and borrow alternating (with the forward when asked); the first tenth warms up. */
function alternate(what: string, before: (i: number) => void, forward: boolean): void {
  const times = { copy: [] as number[], borrow: [] as number[] };
  for (let i = 0; i < iterations; i++) {
    before(i);
    const copy = i % 2 === 0;
    const started = performance.now();
    const input = copy ? tensorFromBytes(body, SHAPE, "float32", false) : tensorBorrowingBytes(body, SHAPE, "float32")!;
    if (forward) { for (const output of forwardAllSyncUnreported(example.module, [input])) output.dispose(); }
    if (copy) input.dispose();
    else endBorrow(input, body);
    const micros = (performance.now() - started) * 1000;
    if (i >= iterations / 10) (copy ? times.copy : times.borrow).push(micros);
  }
  const at = (values: number[], q: number) => quantile([...values].sort((a, b) => a - b), q).toFixed(2);
  const pairs = Math.min(times.copy.length, times.borrow.length);
  const paired = Array.from({ length: pairs }, (_, i) => times.borrow[i] - times.copy[i]);
  console.log(
    `${what}: copy p50 ${at(times.copy, 0.5)} µs, p90 ${at(times.copy, 0.9)}; borrow p50 ${
      at(times.borrow, 0.5)
    } µs, ` +
      `p90 ${at(times.borrow, 0.9)}; paired (borrow - copy) p50 ${at(paired, 0.5)} µs; ${pairs} pairs; ` +
      `load average ${Deno.loadavg().map((l) => l.toFixed(2)).join(", ")}`,
  );
}

alternate("warm", () => {}, false);
alternate("forward", () => {}, true);
// Last: it overwrites the body's values.
alternate("cold", (i) => {
  evict.fill(i & 0xff);
  body.fill(i & 0x7f);
}, false);
example.dispose();

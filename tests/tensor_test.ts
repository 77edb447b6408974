import assert from "node:assert/strict";
import { arange, full, liveTensorCount, ones, rand, randn, SpindleError, Tensor, tensor, zeros } from "../mod.ts";

Deno.test("float32 tensors round-trip with their shape", () => {
  using t = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  assert.deepEqual(t.shape, [2, 3]);
  assert.equal(t.dtype, "float32");
  assert.equal(t.numel, 6);
  assert.deepEqual(Array.from(t.toArray() as Float32Array), [1, 2, 3, 4, 5, 6]);
});

Deno.test("int64 and int32 tensors round-trip", () => {
  using a = tensor([3, -1, 2 ** 40], [3], { dtype: "int64" });
  assert.deepEqual(Array.from(a.toArray() as BigInt64Array), [3n, -1n, 2n ** 40n]);
  using b = tensor(new Int32Array([7, -8]));
  assert.equal(b.dtype, "int32");
  assert.deepEqual(Array.from(b.toArray() as Int32Array), [7, -8]);
  using c = tensor(new BigInt64Array([5n]));
  assert.equal(c.dtype, "int64");
});

Deno.test("scalars and empty tensors", () => {
  using scalar = tensor([42], []);
  assert.deepEqual(scalar.shape, []);
  assert.equal(scalar.numel, 1);
  assert.deepEqual(Array.from(scalar.toArray() as Float32Array), [42]);
  using empty = zeros([0, 5]);
  assert.equal(empty.numel, 0);
  assert.equal(empty.toArray().length, 0);
});

Deno.test("factories fill as asked", () => {
  using z = zeros([2, 2]);
  using o = ones([3], { dtype: "int32" });
  using f = full([2], 2.5);
  using r = arange(5);
  using s = arange(1, 2, 0.25);
  assert.deepEqual(Array.from(z.toArray() as Float32Array), [0, 0, 0, 0]);
  assert.deepEqual(Array.from(o.toArray() as Int32Array), [1, 1, 1]);
  assert.deepEqual(Array.from(f.toArray() as Float32Array), [2.5, 2.5]);
  assert.deepEqual(Array.from(r.toArray() as Float32Array), [0, 1, 2, 3, 4]);
  assert.deepEqual(Array.from(s.toArray() as Float32Array), [1, 1.25, 1.5, 1.75]);
});

Deno.test("rand and randn are deterministic for a seed and look right", () => {
  using a = rand([1000], { seed: 7 });
  using b = rand([1000], { seed: 7 });
  using c = rand([1000], { seed: 8 });
  const va = a.toArray() as Float32Array;
  assert.deepEqual(va, b.toArray());
  assert.notDeepEqual(va, c.toArray());
  assert.ok(va.every((x) => x >= 0 && x < 1));
  using n = randn([20000], { seed: 1 });
  const vn = n.toArray() as Float32Array;
  const mean = vn.reduce((s, x) => s + x, 0) / vn.length;
  const variance = vn.reduce((s, x) => s + (x - mean) ** 2, 0) / vn.length;
  assert.ok(Math.abs(mean) < 0.05, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 0.05, `variance ${variance}`);
});

Deno.test("dispose frees native memory, is idempotent, and use after dispose is refused", () => {
  const before = liveTensorCount();
  const t = tensor([1, 2, 3]);
  assert.equal(liveTensorCount(), before + 1);
  t.dispose();
  t.dispose();
  assert.equal(liveTensorCount(), before);
  assert.ok(t.disposed);
  assert.throws(() => t.toArray(), (e) => e instanceof SpindleError && e.code === "invalid_handle");
  {
    using _scoped = zeros([10]);
    assert.equal(liveTensorCount(), before + 1);
  }
  assert.equal(liveTensorCount(), before);
});

Deno.test("bad shapes and data are refused with typed errors", () => {
  assert.throws(() => tensor([1, 2, 3], [2, 2]), RangeError);
  assert.throws(() => tensor([1, 2], [-1, -2]), RangeError);
  assert.throws(() => tensor([1], [1.5]), RangeError);
  assert.throws(() => zeros([1, 1, 1, 1, 1, 1, 1, 1, 1]), RangeError);
  assert.throws(() => tensor([1.5], [1], { dtype: "int64" }), RangeError);
  assert.throws(() => tensor([2 ** 31], [1], { dtype: "int32" }), RangeError);
  assert.throws(() => tensor(null as unknown as number[]), TypeError);
  assert.throws(() => tensor([1], [1], { dtype: "float16" as "float32" }), TypeError);
  assert.throws(
    () => full([2], NaN, { dtype: "int64" }),
    (e) => e instanceof SpindleError && e.code === "invalid_argument",
  );
  assert.throws(() => arange(0, 1, 0), RangeError);
  assert.throws(() => rand([2], { seed: 1.5 }), TypeError);
});

Deno.test("huge sizes are refused natively without allocating", () => {
  assert.throws(
    () => zeros([2 ** 30, 2 ** 30, 2 ** 10]),
    (e) => e instanceof SpindleError && e.code === "too_large",
  );
  assert.throws(() => zeros([2 ** 20, 2 ** 20, 2 ** 4]), (e) => e instanceof SpindleError && e.code === "too_large");
});

Deno.test("a forged handle is refused", () => {
  assert.throws(() => new Tensor(0xdead00000001n), (e) => e instanceof SpindleError && e.code === "invalid_handle");
});

Deno.test("tensorFromBytes reads unaligned little-endian bytes in place and checks their count", async () => {
  const { tensorFromBytes } = await import("../lib/tensor.ts");
  const values = new Float32Array([1.5, -2, 3.25, 1e-8, NaN, -0]);
  const buffer = new Uint8Array(1 + values.byteLength);
  buffer.set(new Uint8Array(values.buffer), 1); // offset 1: no Float32Array can view it
  using t = tensorFromBytes(buffer.subarray(1), [2, 3], "float32");
  assert.deepEqual(new Uint8Array((t.toArray() as Float32Array).buffer), new Uint8Array(values.buffer));
  const ids = new BigInt64Array([-1n, 2n ** 40n]);
  using i = tensorFromBytes(new Uint8Array(ids.buffer), [2], "int64");
  assert.deepEqual(i.toArray(), ids);
  assert.throws(
    () => tensorFromBytes(buffer.subarray(1, 20), [2, 3], "float32"),
    /19 bytes do not fill shape \[2, 3\] of float32 \(24\)/,
  );
});

Deno.test("tensorFromBytes reports a large tensor's native bytes to V8 unless told not to; same values", async () => {
  const { tensorFromBytes } = await import("../lib/tensor.ts");
  const values = new Float32Array(1 << 18).map((_, i) => i - 7.5);
  const bytes = new Uint8Array(values.buffer);
  const grown: Record<string, number> = {};
  for (const report of [true, false]) {
    const before = Deno.memoryUsage().external;
    using t = tensorFromBytes(bytes, [values.length], "float32", report);
    grown[String(report)] = Deno.memoryUsage().external - before;
    assert.deepEqual(t.toArray(), values);
  }
  assert.ok(grown.true >= values.byteLength, JSON.stringify(grown));
  assert.ok(grown.false < values.byteLength / 2, JSON.stringify(grown));
});

Deno.test("tensorBorrowingBytes reads aligned bytes in place; endBorrow copies them for a view still holding them", async () => {
  const { BORROW_ALIGNMENT, endBorrow, tensorBorrowingBytes } = await import("../lib/tensor.ts");
  const { transpose } = await import("../mod.ts");
  const buffer = new Uint8Array(256);
  const base = Number(BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer))) % BigInt(BORROW_ALIGNMENT));
  const at = (BORROW_ALIGNMENT - base) % BORROW_ALIGNMENT;
  const floats = new Float32Array(buffer.buffer, at, 6);
  floats.set([1, 2, 3, 4, 5, 6]);
  const bytes = buffer.subarray(at, at + 24);
  // Misaligned or empty bytes are not borrowed (the caller copies them); a wrong count throws.
  assert.equal(tensorBorrowingBytes(buffer.subarray(at + 4, at + 28), [6], "float32"), null);
  assert.equal(tensorBorrowingBytes(bytes.subarray(0, 0), [0], "float32"), null);
  assert.throws(() => tensorBorrowingBytes(bytes, [7], "float32"), /24 bytes do not fill shape \[7\]/);
  const live = liveTensorCount();
  const t = tensorBorrowingBytes(bytes, [2, 3], "float32")!;
  assert.deepEqual(t.toArray(), new Float32Array([1, 2, 3, 4, 5, 6]));
  floats[0] = 9; // in place: no copy was made
  assert.equal(t.toArray()[0], 9);
  // A transpose is a view of the same storage: it keeps its values once the borrow ends and
  // the bytes are reused.
  const view = transpose(t, 0, 1);
  endBorrow(t, bytes);
  assert.ok(t.disposed);
  floats.fill(-1);
  assert.deepEqual(view.toArray(), new Float32Array([9, 4, 2, 5, 3, 6]));
  view.dispose();
  // With no other holder, the borrow ends without a copy; int64 too.
  const ids = tensorBorrowingBytes(bytes.subarray(0, 16), [2], "int64")!;
  new BigInt64Array(buffer.buffer, at, 2).set([5n, -7n]);
  assert.deepEqual(ids.toArray(), new BigInt64Array([5n, -7n]));
  endBorrow(ids, bytes);
  assert.equal(liveTensorCount(), live);
});

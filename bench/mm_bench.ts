/**
 * `mm` on 1024² called from TypeScript against the raw OpenBLAS call on the same matrices in
 * the same process (cblas_sgemm through Deno FFI, OpenBLAS's own threads set to the same
 * count). Run with the openblas build (the default when OpenBLAS is installed):
 *
 *   deno bench -A bench/mm_bench.ts
 *
 * Spindle holds OpenBLAS at one thread and splits tiles over its intra-op pool; the raw call
 * lets OpenBLAS thread itself. Its thread count is restored to 1 after every raw call, so
 * the two never oversubscribe each other.
 */
import { getNumThreads, mm, rand } from "../mod.ts";

const SIZE = 1024;
const candidates = [
  "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
  "/usr/lib/x86_64-linux-gnu/libopenblas.so",
  "libopenblas.so.0",
];
const blasSymbols = {
  cblas_sgemm: {
    parameters: [
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "i32",
      "f32",
      "buffer",
      "i32",
      "buffer",
      "i32",
      "f32",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  openblas_set_num_threads: { parameters: ["i32"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;
let openblas: Deno.DynamicLibrary<typeof blasSymbols> | null = null;
for (const path of candidates) {
  try {
    openblas = Deno.dlopen(path, blasSymbols);
    break;
  } catch {
    // try the next name
  }
}

const a = rand([SIZE, SIZE], { seed: 1 });
const b = rand([SIZE, SIZE], { seed: 2 });
const aData = a.toArray() as Float32Array;
const bData = b.toArray() as Float32Array;
const cData = new Float32Array(SIZE * SIZE);
const threads = getNumThreads();

Deno.bench(`spindle mm ${SIZE}² from TypeScript (${threads} intra-op threads)`, { group: "mm", baseline: true }, () => {
  mm(a, b).dispose();
});

if (openblas !== null) {
  const blas = openblas.symbols;
  Deno.bench(`raw cblas_sgemm ${SIZE}² via FFI (OpenBLAS, ${threads} threads)`, { group: "mm" }, () => {
    blas.openblas_set_num_threads(threads);
    blas.cblas_sgemm(101, 111, 111, SIZE, SIZE, SIZE, 1, aData, SIZE, bData, SIZE, 0, cData, SIZE);
    blas.openblas_set_num_threads(1);
  });
}

#!/usr/bin/env bash
# Runs the memory-bound kernel benchmark (zig build bench-kernels) and the C/OpenMP scaling
# baseline (omp_scaling.c) one after the other, so each Spindle figure has its baseline from
# the same run on the same machine. Needs gcc with -fopenmp.
#
#   bench/native/run_kernel_bench.sh            (ZIG=/path/to/zig to pick the compiler)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
zig="${ZIG:-}"
if [[ -z "$zig" ]]; then
  if [[ -x "$root/.toolchain/zig/ziglang/zig" ]]; then zig="$root/.toolchain/zig/ziglang/zig"; else zig=zig; fi
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
echo "building ..." >&2
gcc -O3 -march=native -fopenmp "$root/bench/native/omp_scaling.c" -o "$out/omp_scaling" -lm
echo "== C + OpenMP baseline (median us per pass; scaling = 1-thread time / 2-thread time)"
"$out/omp_scaling" 2>/dev/null | awk '
  { t[$1, $2] = $3; names[$1] = 1 }
  END {
    printf "%-8s %12s %12s %8s\n", "loop", "1 thread us", "2 threads us", "scaling"
    for (n in names) printf "%-8s %12.1f %12.1f %8.2f\n", n, t[n, 1], t[n, 2], t[n, 1] / t[n, 2]
  }'
echo
(cd "$root/zig" && "$zig" build bench-kernels)

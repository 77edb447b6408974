#!/usr/bin/env bash
# Builds and runs the intra-op pool benchmarks: Spindle's omp and tbb backends against
# libgomp (`#pragma omp parallel for`) and oneTBB (`tbb::parallel_for`), then prints a
# table with ratios. Needs gcc with -fopenmp, g++ and oneTBB (Debian: libtbb-dev).
#
#   bench/native/run_pool_bench.sh            (ZIG=/path/to/zig to pick the compiler)
#
# Every figure comes from one run on whatever else the machine is doing: on a shared or
# small machine, run it twice and compare before trusting a ratio.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/bench/native"
zig="${ZIG:-}"
if [[ -z "$zig" ]]; then
  if [[ -x "$root/.toolchain/zig/ziglang/zig" ]]; then zig="$root/.toolchain/zig/ziglang/zig"; else zig=zig; fi
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "building (zig: $zig) ..." >&2
for backend in omp tbb; do
  (cd "$root/zig" && "$zig" build bench-pool -Dthreading="$backend" --prefix "$out/$backend")
done
gcc -O2 -fopenmp "$here/omp_overhead.c" -o "$out/omp_overhead"
g++ -O2 "$here/tbb_overhead.cpp" -o "$out/tbb_overhead" -ltbb

# value KEY COMMAND...: runs COMMAND and prints the value of its `KEY value` line.
value() {
  local key="$1"
  shift
  "$@" | awk -v key="$key" '$1 == key { print $2 }'
}

echo "running ..." >&2
spindle_omp_ns="$(value median_ns_per_region "$out/omp/bin/spindle-pool-bench" overhead)"
libgomp_ns="$(value median_ns_per_region "$out/omp_overhead")"
spindle_tbb_ns="$(value median_ns_per_region "$out/tbb/bin/spindle-pool-bench" overhead)"
onetbb_ns="$(value median_ns_per_region "$out/tbb_overhead")"
omp_threads="$(value threads_with_8_callers "$out/omp/bin/spindle-pool-bench" callers)"
tbb_threads="$(value threads_with_8_callers "$out/tbb/bin/spindle-pool-bench" callers)"
omp_idle_ms="$(value idle_cpu_ms_in_300ms "$out/omp/bin/spindle-pool-bench" idle)"
tbb_idle_ms="$(value idle_cpu_ms_in_300ms "$out/tbb/bin/spindle-pool-bench" idle)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

echo
echo "parallel_for dispatch overhead: 2 threads, 2 chunks, tiny body (median ns/region, lower is better)"
printf "  %-12s %9s   %-8s %9s   %s\n" "spindle" "ns" "baseline" "ns" "ratio (target <= 1.00x)"
printf "  %-12s %9s   %-8s %9s   %s\n" "omp" "$spindle_omp_ns" "libgomp" "$libgomp_ns" "$(ratio "$spindle_omp_ns" "$libgomp_ns")"
printf "  %-12s %9s   %-8s %9s   %s\n" "tbb" "$spindle_tbb_ns" "oneTBB" "$onetbb_ns" "$(ratio "$spindle_tbb_ns" "$onetbb_ns")"
echo
echo "8 concurrent callers, setNumThreads(4): process threads (main + 8 callers + pool workers)"
printf "  %-12s %9s\n" "omp" "$omp_threads" "tbb" "$tbb_threads"
echo
echo "CPU time used in the 300 ms after parallel work ends (ms; ~0 means the pool sleeps)"
printf "  %-12s %9s\n" "omp" "$omp_idle_ms" "tbb" "$tbb_idle_ms"
echo
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

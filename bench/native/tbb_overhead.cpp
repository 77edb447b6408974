// Baseline for Spindle's tbb backend: dispatch overhead of oneTBB's tbb::parallel_for with
// 2 threads (global_control) and a tiny body, measured as pool_bench.zig measures Spindle:
// median over 201 samples of the mean ns per region over 500 regions, after 20000 warm-up
// regions. The range has 2 indices and grain 1 (simple_partitioner: 2 chunks, as Spindle
// splits it); each index bumps its own cache line.
//
//   g++ -O2 tbb_overhead.cpp -o tbb_overhead -ltbb && ./tbb_overhead
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>

namespace {

constexpr int samples = 201;
constexpr int regions_per_sample = 500;
constexpr int warmup_regions = 20000;
constexpr int stride = 8;

volatile std::uint64_t sink[64 * stride];

void region() {
    tbb::parallel_for(
        tbb::blocked_range<int>(0, 2, 1),
        [](const tbb::blocked_range<int>& range) {
            for (int index = range.begin(); index != range.end(); ++index) sink[index * stride] += 1;
        },
        tbb::simple_partitioner());
}

}  // namespace

int main() {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, 2);
    double per_region_ns[samples];
    for (int i = 0; i < warmup_regions; i++) region();
    for (double& sample : per_region_ns) {
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < regions_per_sample; i++) region();
        std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
        sample = elapsed.count() / regions_per_sample;
    }
    std::sort(per_region_ns, per_region_ns + samples);
    std::printf("backend oneTBB\nmedian_ns_per_region %.1f\n", per_region_ns[samples / 2]);
    return 0;
}

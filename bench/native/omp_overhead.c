/* Baseline for Spindle's omp backend: dispatch overhead of `#pragma omp parallel for`
 * (libgomp) with 2 threads and a tiny body, measured as pool_bench.zig measures Spindle:
 * median over 201 samples of the mean ns per region over 500 regions, after 20000 warm-up
 * regions. Each of the 2 iterations bumps its own cache line.
 *
 *   gcc -O2 -fopenmp omp_overhead.c -o omp_overhead && ./omp_overhead
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { samples = 201, regions_per_sample = 500, warmup_regions = 20000, stride = 8 };

static volatile uint64_t sink[64 * stride];

static void region(void) {
#pragma omp parallel for num_threads(2) schedule(static)
    for (int index = 0; index < 2; index++) sink[index * stride] += 1;
}

static uint64_t now_ns(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return (uint64_t)time.tv_sec * 1000000000u + (uint64_t)time.tv_nsec;
}

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    double per_region_ns[samples];
    for (int i = 0; i < warmup_regions; i++) region();
    for (int sample = 0; sample < samples; sample++) {
        uint64_t start = now_ns();
        for (int i = 0; i < regions_per_sample; i++) region();
        per_region_ns[sample] = (double)(now_ns() - start) / regions_per_sample;
    }
    qsort(per_region_ns, samples, sizeof per_region_ns[0], ascending);
    printf("backend libgomp\nmedian_ns_per_region %.1f\n", per_region_ns[samples / 2]);
    return 0;
}

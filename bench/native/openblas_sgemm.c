// Standalone OpenBLAS SGEMM throughput, the baseline bench/native/gemm_bench.zig compares
// Spindle's native GEMM against. Same shapes, same timing rule (best of several repeats).
//
//   cc -O2 bench/native/openblas_sgemm.c -lopenblas -o /tmp/openblas_sgemm
//   /tmp/openblas_sgemm [threads]      (default 1)
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

// Not declared by every cblas.h, but exported by every OpenBLAS.
extern void openblas_set_num_threads(int count);
extern char *openblas_get_config(void);

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void fill(float *values, size_t count) {
    for (size_t i = 0; i < count; i++) values[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
}

// Runs C = A·op(B) until ~0.1 s has passed, five times, and returns the best GFLOPS: the
// machine is shared, so the best repeat is the least disturbed one.
static double measure(int m, int n, int k, int trans_b) {
    float *a = malloc(sizeof(float) * (size_t)m * k);
    float *b = malloc(sizeof(float) * (size_t)k * n);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    fill(a, (size_t)m * k);
    fill(b, (size_t)k * n);
    fill(c, (size_t)m * n);
    const int ldb = trans_b ? k : n;
    const double flops = 2.0 * m * n * k;
    double best = 0;
    for (int repeat = 0; repeat < 5; repeat++) {
        long iterations = 0;
        const double start = now_seconds();
        double elapsed = 0;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
                        1.0f, a, k, b, ldb, 0.0f, c, n);
            iterations++;
            elapsed = now_seconds() - start;
        } while (elapsed < 0.1);
        const double gflops = flops * iterations / elapsed * 1e-9;
        if (gflops > best) best = gflops;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 1;
    openblas_set_num_threads(threads);
    printf("# %s, %d thread(s)\n", openblas_get_config(), threads);
    printf("%-6s %6s %6s %6s %10s\n", "layout", "M", "N", "K", "GFLOPS");
    const int squares[] = {64, 128, 256, 512, 1024, 2048};
    for (int i = 0; i < 6; i++) {
        const int s = squares[i];
        printf("%-6s %6d %6d %6d %10.1f\n", "NN", s, s, s, measure(s, s, s, 0));
    }
    const int rows[] = {1, 8, 32, 64};
    const int depth_width[][2] = {{512, 512}, {1024, 1024}, {1024, 4096}, {4096, 1024}};
    for (int trans_b = 0; trans_b < 2; trans_b++) {
        for (int j = 0; j < 4; j++) {
            for (int i = 0; i < 4; i++) {
                const int k = depth_width[j][0], n = depth_width[j][1];
                printf("%-6s %6d %6d %6d %10.1f\n", trans_b ? "NT" : "NN", rows[i], n, k,
                       measure(rows[i], n, k, trans_b));
            }
        }
    }
    return 0;
}

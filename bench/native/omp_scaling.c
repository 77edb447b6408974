// The scaling baseline for the kernel benchmark: the same loops in C with OpenMP (gcc -O3
// -march=native -fopenmp), timed at 1 and 2 threads, so Spindle's scaling can be read
// beside what plain OpenMP gets on the same machine in the same run:
//   add     16M floats, memory-bound (bytes moved / s and 1 -> 2 thread scaling)
//   memcpy  16M floats
//   sigmoid 1M floats, cache-resident and compute-bound (expf per element)
// Prints `name threads median_us` lines.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BIG (16 * 1024 * 1024)
#define SMALL (1024 * 1024)
#define REPS 15

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *samples, int n) {
  qsort(samples, n, sizeof(double), compare);
  return samples[n / 2];
}

int main(void) {
  float *a = aligned_alloc(64, BIG * sizeof(float));
  float *b = aligned_alloc(64, BIG * sizeof(float));
  float *c = aligned_alloc(64, BIG * sizeof(float));
  for (long i = 0; i < BIG; i++) {
    a[i] = (float)(i % 1000) / 1000.0f;
    b[i] = (float)(i % 777) / 777.0f;
    c[i] = 0;
  }
  double samples[REPS];
  for (int threads = 1; threads <= 2; threads++) {
    omp_set_num_threads(threads);
    for (int r = -1; r < REPS; r++) {
      double t0 = now_us();
#pragma omp parallel for schedule(static)
      for (long i = 0; i < BIG; i++) c[i] = a[i] + b[i];
      if (r >= 0) samples[r] = now_us() - t0;
    }
    printf("add %d %.1f\n", threads, median(samples, REPS));
    for (int r = -1; r < REPS; r++) {
      double t0 = now_us();
#pragma omp parallel
      {
        int id = omp_get_thread_num(), n = omp_get_num_threads();
        long chunk = (BIG + n - 1) / n, begin = id * chunk, end = begin + chunk > BIG ? BIG : begin + chunk;
        memcpy(c + begin, a + begin, (end - begin) * sizeof(float));
      }
      if (r >= 0) samples[r] = now_us() - t0;
    }
    printf("memcpy %d %.1f\n", threads, median(samples, REPS));
    for (int r = -1; r < REPS * 3; r++) {
      double t0 = now_us();
#pragma omp parallel for schedule(static)
      for (long i = 0; i < SMALL; i++) c[i] = 1.0f / (1.0f + expf(-a[i]));
      if (r >= 0 && r < REPS) samples[r] = now_us() - t0;
    }
    printf("sigmoid %d %.1f\n", threads, median(samples, REPS));
  }
  fprintf(stderr, "checksum %f\n", c[12345]);
  return 0;
}

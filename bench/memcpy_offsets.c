/* How fast this machine's memcpy copies one TLS record's plaintext (16 KiB) as the destination's
 * offset from the source, modulo 4 KiB, changes (BENCHMARKS.md, issue 20's sixth run; why
 * server::coalesce cuts HTTP/1 answers over TLS into pieces of 16,375 bytes).
 *
 *   gcc -O2 -o /tmp/memcpy_offsets bench/memcpy_offsets.c && /tmp/memcpy_offsets
 *
 * rustls copies a record's plaintext to 5 bytes past the start of a buffer of its own; on the
 * AMD EPYC host of the sixth run, offsets 1-15 ran at about 3.5 GB/s and the rest at 60-107. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  const size_t n = 16384;
  const int rounds = 20000;
  char *src = aligned_alloc(4096, 1 << 20), *dst = aligned_alloc(4096, 1 << 20);
  memset(src, 1, 1 << 20);
  memset(dst, 2, 1 << 20);
  const int offsets[] = {0, 1, 5, 9, 15, 16, 32, 63, 64, 1000, 2048, 4091};
  for (int s = 0; s < 2; s++) {
    int from = 4096 * 3 + (s ? 17 : 0);
    for (size_t i = 0; i < sizeof offsets / sizeof *offsets; i++) {
      int to = (from + offsets[i]) % 4096 + 8192 * 8;
      double t0 = now();
      for (int k = 0; k < rounds; k++) {
        memcpy(dst + to, src + from, n);
        __asm__ volatile("" ::: "memory");
      }
      double t = now() - t0;
      printf("source %% 4096 = %4d, destination - source = %4d (mod 4096): %6.1f GB/s\n",
             from % 4096, offsets[i], rounds * (double)n / t / 1e9);
    }
  }
  return 0;
}

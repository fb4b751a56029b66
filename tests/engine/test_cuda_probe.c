/* test_cuda_probe.c — the CUDA toolchain path links; on a GPU machine a
 * trivial kernel runs. Skipped (77) where the build has no CUDA or no GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>

#ifdef HELEXA_HAVE_CUDA
#include "engine/backend/cuda/probe.h"
#endif

static void test_probe(void **state) {
  (void)state;
#ifdef HELEXA_HAVE_CUDA
  assert_int_equal(hx_cuda_probe(), 1);
#endif
}

int main(void) {
#ifdef HELEXA_HAVE_CUDA
  if (hx_cuda_device_count() == 0) {
    printf("no CUDA device: skipped\n");
    return 77;
  }
#else
  printf("built without CUDA: skipped\n");
  return 77;
#endif
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_probe)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}

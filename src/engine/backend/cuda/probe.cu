// probe.cu — the smallest CUDA translation unit: proves the toolchain path
// (nvcc, cudart) compiles and links, and reports how many devices exist.
#include <cuda_runtime.h>

__global__ static void probe_kernel(int *out) { *out = 42; }

extern "C" int hx_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess)
    return 0;
  return n;
}

// Runs one trivial kernel on device 0; returns 1 when it wrote 42, 0 else.
extern "C" int hx_cuda_probe(void) {
  int *d = nullptr, h = 0;
  if (cudaMalloc(&d, sizeof(int)) != cudaSuccess)
    return 0;
  probe_kernel<<<1, 1>>>(d);
  cudaError_t e = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d);
  return e == cudaSuccess && h == 42;
}

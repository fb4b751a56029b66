/* probe.h — CUDA toolchain probe (see probe.cu). */
#ifndef HX_CUDA_PROBE_H
#define HX_CUDA_PROBE_H

int hx_cuda_device_count(void); /* 0 when no driver or no device */
int hx_cuda_probe(void);        /* 1 when a kernel ran and wrote its result */

#endif

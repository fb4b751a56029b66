/* backend_cuda.h — the CUDA implementation of the backend table (backend.h).
 *
 * One instance owns one device: a stream, a cuBLAS handle, scratch sized by
 * reserve(), and a cached CUDA graph of the last decode step. Ops queued
 * between step_begin and step_end are recorded on the host; step_end runs
 * them — for a one-token step, by replaying the captured graph when the
 * recorded ops equal the last captured ones (positions and lengths are read
 * from device memory, so a decode step replays unchanged at every position).
 *
 * Failure handling: any CUDA error inside a step poisons the instance: the
 * step and every later one fail fast with HX_EDEVICE and a message naming the
 * statement, file and line (hx_backend_cuda_poisoned says so). Out of memory
 * in buf_alloc is a plain failure (HX_ENOMEM), not a poisoning.
 *
 * Threading: the instance may be driven from any one thread at a time; each
 * entry point selects its device first. Available only in builds with
 * HELEXA_HAVE_CUDA. */
#ifndef HX_BACKEND_CUDA_H
#define HX_BACKEND_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/status.h"
#include "engine/backend.h"

/* Creates a backend on CUDA device `device`. HX_EDEVICE when there is no such
 * device or the driver is missing. */
hx_code hx_backend_cuda_init(hx_backend *out, int device, hx_err *err);
void hx_backend_cuda_free(hx_backend *b); /* b may be NULL or zeroed */

/* Number of CUDA devices (0 without a driver). */
int hx_backend_cuda_device_count(void);
/* VRAM of a device in bytes; HX_EDEVICE on failure. */
hx_code hx_backend_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes, hx_err *err);
/* True when a device error has poisoned this backend (the message in *msg). */
bool hx_backend_cuda_poisoned(const hx_backend *b, const char **msg);
/* Statistics of graph use: steps replayed from the cached graph, captured. */
void hx_backend_cuda_graph_stats(const hx_backend *b, long *replayed, long *captured);

/* Profiling: when on, steps run op by op (no graph) with events between
 * ops, accumulating time per op family; print writes a table. Also enabled
 * at init by HX_CUDA_PROFILE=1. */
void hx_backend_cuda_profile_set(const hx_backend *b, bool on);
void hx_backend_cuda_profile_print(const hx_backend *b, FILE *f);

/* For benchmarks and tests: fills a buffer region with random weights of a
 * ggml type (n_elems elements, stored size n_bytes) on the device. */
hx_code hx_backend_cuda_fill_random(const hx_backend *b, hx_bbuf *buf, size_t offset, int type,
                                    size_t n_elems, size_t n_bytes, uint64_t seed, float scale,
                                    hx_err *err);
/* Device-to-device copy bandwidth in GB/s (bytes read + written per second),
 * median of several copies of n_bytes. */
double hx_backend_cuda_copy_bandwidth(const hx_backend *b, size_t n_bytes);
/* Dense f16 GEMM rate in TFLOP/s (cuBLAS, f32 accumulation, 8192 x 8192 x
 * 4096 — a prefill-sized product), median of several; 0 when the operands do
 * not fit. */
double hx_backend_cuda_gemm_tflops(const hx_backend *b);

#endif

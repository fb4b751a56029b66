/* hardware.h — what this host has: CPU, RAM and CUDA devices.
 *
 * CPU model and core counts come from /proc/cpuinfo and sched affinity, RAM
 * from /proc/meminfo. CUDA devices (builds with HELEXA_HAVE_CUDA) come from
 * the CUDA runtime: name, VRAM total/free, compute capability, PCI bus id,
 * driver and runtime versions. NVML is loaded at run time with dlopen when
 * present (libnvidia-ml.so.1) for utilization, temperature and power; without
 * it those fields are absent. A CPU-only host reports no devices. */
#ifndef NEURON_HARDWARE_H
#define NEURON_HARDWARE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

enum { NEURON_GPUS_MAX = 64 };

typedef struct neuron_gpu {
  int index;
  char name[256];
  uint64_t vram_total_bytes;
  uint64_t vram_free_bytes;
  int cc_major, cc_minor;
  char pci_bus_id[32];
  bool poisoned; /* set by the device's worker after a sticky error */
  bool nvml;     /* the three below are valid */
  unsigned util_pct;
  unsigned temp_c;
  unsigned power_mw;
} neuron_gpu;

typedef struct neuron_hardware {
  char hostname[256];
  char cpu_model[256];
  int cpu_logical;  /* usable logical CPUs (affinity) */
  int cpu_physical; /* distinct (physical id, core id) pairs; 0 if unknown */
  uint64_t ram_total_bytes;
  uint64_t ram_available_bytes;
  char driver_version[80];  /* NVIDIA driver ("580.159.04") from NVML; "" without */
  int cuda_driver_version;  /* e.g. 12040; 0 without CUDA */
  int cuda_runtime_version; /* 0 without CUDA */
  int n_gpus;
  neuron_gpu gpus[NEURON_GPUS_MAX];
} neuron_hardware;

/* Fills hw. Never fails for lack of a GPU; HX_EIO only when /proc is
 * unreadable. */
hx_code neuron_hardware_discover(neuron_hardware *hw, hx_err *err);
/* Re-reads RAM availability and the NVML figures (any thread). */
void neuron_hardware_refresh(neuron_hardware *hw);
/* Free VRAM of a CUDA device, UINT64_MAX when unknown. Touches the device's
 * context: call it on the device's worker thread only. */
uint64_t neuron_hardware_gpu_free_bytes(int cuda_index);
/* The /hardware document. New reference. */
json_t *neuron_hardware_json(const neuron_hardware *hw);

/* Parsers exposed for tests: /proc/meminfo and /proc/cpuinfo text. */
void neuron_hardware_parse_meminfo(const char *text, uint64_t *total, uint64_t *available);
void neuron_hardware_parse_cpuinfo(const char *text, char *model, size_t model_cap, int *physical);

#endif

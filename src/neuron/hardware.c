/* hardware.c — host discovery (see hardware.h). */
#include "neuron/hardware.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/pool.h"

#ifdef HELEXA_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

static char *file_read(const char *path, size_t max) {
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  char *s = malloc(max + 1);
  size_t n = s ? fread(s, 1, max, f) : 0;
  fclose(f);
  if (s)
    s[n] = '\0';
  return s;
}

void neuron_hardware_parse_meminfo(const char *text, uint64_t *total, uint64_t *available) {
  *total = *available = 0;
  for (const char *p = text; p && *p;) {
    unsigned long long kb;
    if (sscanf(p, "MemTotal: %llu kB", &kb) == 1)
      *total = (uint64_t)kb * 1024;
    else if (sscanf(p, "MemAvailable: %llu kB", &kb) == 1)
      *available = (uint64_t)kb * 1024;
    p = strchr(p, '\n');
    if (p)
      p++;
  }
}

enum { PAIRS_MAX = 4096 };

static int pair_add(int (*pairs)[2], int n, int phys, int core) {
  for (int i = 0; i < n; i++)
    if (pairs[i][0] == phys && pairs[i][1] == core)
      return n;
  if (n == PAIRS_MAX)
    return n;
  pairs[n][0] = phys;
  pairs[n][1] = core;
  return n + 1;
}

void neuron_hardware_parse_cpuinfo(const char *text, char *model, size_t model_cap, int *physical) {
  model[0] = '\0';
  *physical = 0;
  static __thread int pairs[PAIRS_MAX][2];
  int n_pairs = 0, phys = 0, core = -1;
  for (const char *p = text; p && *p;) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)(len < 511 ? len : 511), p);
    char *colon = strchr(line, ':');
    if (colon) {
      const char *v = colon + 1;
      while (*v == ' ' || *v == '\t')
        v++;
      if (!model[0] && strncmp(line, "model name", 10) == 0)
        snprintf(model, model_cap, "%s", v);
      else if (strncmp(line, "physical id", 11) == 0)
        phys = atoi(v);
      else if (strncmp(line, "core id", 7) == 0)
        core = atoi(v);
    }
    if (len == 0 && core >= 0) { /* end of one processor block */
      n_pairs = pair_add(pairs, n_pairs, phys, core);
      core = -1;
    }
    p = eol ? eol + 1 : NULL;
  }
  if (core >= 0) /* the last block had no blank line after it */
    n_pairs = pair_add(pairs, n_pairs, phys, core);
  *physical = n_pairs;
}

#ifdef HELEXA_HAVE_CUDA
/* ---- NVML, loaded at run time ---- */

typedef int (*nvml_fn_void)(void);
typedef int (*nvml_get_handle_fn)(const char *pci, void **dev);
typedef int (*nvml_util_fn)(void *dev, unsigned *util2);
typedef int (*nvml_temp_fn)(void *dev, int sensor, unsigned *t);
typedef int (*nvml_power_fn)(void *dev, unsigned *mw);
typedef int (*nvml_driver_fn)(char *version, unsigned len);

static struct {
  bool tried, ok;
  nvml_get_handle_fn by_pci;
  nvml_util_fn util;
  nvml_temp_fn temp;
  nvml_power_fn power;
  nvml_driver_fn driver;
} nvml;

static void nvml_load(void) {
  if (nvml.tried)
    return;
  nvml.tried = true;
  void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return;
  nvml_fn_void init = (nvml_fn_void)dlsym(h, "nvmlInit_v2");
  nvml.by_pci = (nvml_get_handle_fn)dlsym(h, "nvmlDeviceGetHandleByPciBusId_v2");
  nvml.util = (nvml_util_fn)dlsym(h, "nvmlDeviceGetUtilizationRates");
  nvml.temp = (nvml_temp_fn)dlsym(h, "nvmlDeviceGetTemperature");
  nvml.power = (nvml_power_fn)dlsym(h, "nvmlDeviceGetPowerUsage");
  nvml.driver = (nvml_driver_fn)dlsym(h, "nvmlSystemGetDriverVersion");
  nvml.ok = init && nvml.by_pci && nvml.util && nvml.temp && nvml.power && init() == 0;
  if (!nvml.ok)
    HX_DEBUG("hardware: NVML present but unusable");
}

static void nvml_query(neuron_gpu *g) {
  nvml_load();
  g->nvml = false;
  if (!nvml.ok)
    return;
  void *dev = NULL;
  unsigned util[2] = {0, 0}, t = 0, mw = 0;
  if (nvml.by_pci(g->pci_bus_id, &dev) != 0 || nvml.util(dev, util) != 0 ||
      nvml.temp(dev, 0 /* NVML_TEMPERATURE_GPU */, &t) != 0 || nvml.power(dev, &mw) != 0)
    return;
  g->nvml = true;
  g->util_pct = util[0];
  g->temp_c = t;
  g->power_mw = mw;
}

#endif

static void cuda_discover(neuron_hardware *hw) {
#ifdef HELEXA_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    HX_INFO("hardware: no usable CUDA device");
    return;
  }
  cudaDriverGetVersion(&hw->cuda_driver_version);
  nvml_load();
  if (nvml.ok && nvml.driver && nvml.driver(hw->driver_version, sizeof hw->driver_version) != 0)
    hw->driver_version[0] = '\0';
  cudaRuntimeGetVersion(&hw->cuda_runtime_version);
  if (n > NEURON_GPUS_MAX)
    n = NEURON_GPUS_MAX;
  for (int i = 0; i < n; i++) {
    neuron_gpu *g = &hw->gpus[hw->n_gpus];
    memset(g, 0, sizeof *g);
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    g->index = i;
    snprintf(g->name, sizeof g->name, "%s", prop.name);
    g->cc_major = prop.major;
    g->cc_minor = prop.minor;
    g->vram_total_bytes = prop.totalGlobalMem;
    cudaDeviceGetPCIBusId(g->pci_bus_id, (int)sizeof g->pci_bus_id, i);
    size_t fr = 0, tot = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
      g->vram_free_bytes = fr;
    else
      cudaGetLastError();
    nvml_query(g);
    hw->n_gpus++;
  }
#else
  (void)hw;
#endif
}

hx_code neuron_hardware_discover(neuron_hardware *hw, hx_err *err) {
  memset(hw, 0, sizeof *hw);
  if (gethostname(hw->hostname, sizeof hw->hostname - 1) != 0)
    snprintf(hw->hostname, sizeof hw->hostname, "unknown");
  char *ci = file_read("/proc/cpuinfo", 4u << 20);
  if (ci) {
    neuron_hardware_parse_cpuinfo(ci, hw->cpu_model, sizeof hw->cpu_model, &hw->cpu_physical);
    free(ci);
  }
  hw->cpu_logical = hx_cpu_count();
  char *mi = file_read("/proc/meminfo", 1u << 16);
  if (!mi)
    return hx_err_set(err, HX_EIO, "/proc/meminfo: cannot read");
  neuron_hardware_parse_meminfo(mi, &hw->ram_total_bytes, &hw->ram_available_bytes);
  free(mi);
  cuda_discover(hw);
  return HX_OK;
}

void neuron_hardware_refresh(neuron_hardware *hw) {
  char *mi = file_read("/proc/meminfo", 1u << 16);
  if (mi) {
    uint64_t total;
    neuron_hardware_parse_meminfo(mi, &total, &hw->ram_available_bytes);
    free(mi);
  }
#ifdef HELEXA_HAVE_CUDA
  for (int i = 0; i < hw->n_gpus; i++)
    nvml_query(&hw->gpus[i]);
#endif
}

uint64_t neuron_hardware_gpu_free_bytes(int cuda_index) {
#ifdef HELEXA_HAVE_CUDA
  size_t fr = 0, tot = 0;
  if (cudaSetDevice(cuda_index) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
    return fr;
  cudaGetLastError();
#else
  (void)cuda_index;
#endif
  return UINT64_MAX;
}

json_t *neuron_hardware_json(const neuron_hardware *hw) {
  json_t *gpus = json_array();
  for (int i = 0; i < hw->n_gpus; i++) {
    const neuron_gpu *g = &hw->gpus[i];
    char cc[16];
    snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
    json_t *d = json_pack("{s:i,s:s,s:I,s:I,s:s,s:s,s:b}", "index", g->index, "name", g->name,
                          "vram_total_bytes", (json_int_t)g->vram_total_bytes, "vram_free_bytes",
                          (json_int_t)g->vram_free_bytes, "compute_capability", cc, "pci_bus_id",
                          g->pci_bus_id, "poisoned", g->poisoned);
    if (d && g->nvml) {
      json_object_set_new(d, "utilization_pct", json_integer(g->util_pct));
      json_object_set_new(d, "temperature_c", json_integer(g->temp_c));
      json_object_set_new(d, "power_w", json_real(g->power_mw / 1000.0));
    }
    json_array_append_new(gpus, d);
  }
  json_t *root =
      json_pack("{s:s,s:{s:s,s:i,s:i},s:{s:I,s:I},s:o}", "host", hw->hostname, "cpu", "model",
                hw->cpu_model, "logical_cores", hw->cpu_logical, "physical_cores", hw->cpu_physical,
                "ram", "total_bytes", (json_int_t)hw->ram_total_bytes, "available_bytes",
                (json_int_t)hw->ram_available_bytes, "devices", gpus);
  if (root && hw->driver_version[0])
    json_object_set_new(root, "driver_version", json_string(hw->driver_version));
  if (root && hw->cuda_driver_version) {
    char v[32];
    snprintf(v, sizeof v, "%d.%d", hw->cuda_driver_version / 1000,
             (hw->cuda_driver_version % 1000) / 10);
    json_object_set_new(root, "cuda_driver_version", json_string(v));
    snprintf(v, sizeof v, "%d.%d", hw->cuda_runtime_version / 1000,
             (hw->cuda_runtime_version % 1000) / 10);
    json_object_set_new(root, "cuda_runtime_version", json_string(v));
  }
  return root;
}

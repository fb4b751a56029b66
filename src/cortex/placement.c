/* placement.c — model placement and eviction choice (placement.h). */
#include "cortex/placement.h"

#include <string.h>

/* true when a should be evicted before b */
static bool place_before(const place_model *a, const place_model *b, cortex_evict_strategy s) {
  if (s == CORTEX_EVICT_PRIORITY && a->priority != b->priority)
    return a->priority < b->priority;
  return a->last_used_ns < b->last_used_ns;
}

size_t placement_victims(const place_model *loaded, size_t n, cortex_evict_strategy strategy,
                         size_t *order) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (loaded[i].pinned || loaded[i].busy)
      continue;
    /* insertion sort: n ≤ PLACE_MAX_LOADED */
    size_t j = k++;
    while (j > 0 && place_before(&loaded[i], &loaded[order[j - 1]], strategy)) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
  return k;
}

bool placement_choose(const place_neuron *neurons, size_t n, uint64_t need_bytes,
                      cortex_evict_strategy strategy, place_decision *out) {
  memset(out, 0, sizeof *out);
  out->neuron = -1;
  uint64_t best_evicted = 0;
  long best_inflight = 0;
  for (size_t i = 0; i < n; i++) {
    const place_neuron *ne = &neurons[i];
    if (!ne->eligible)
      continue;
    HX_ASSERT(ne->n_loaded <= PLACE_MAX_LOADED);
    size_t order[PLACE_MAX_LOADED];
    size_t nv = placement_victims(ne->loaded, ne->n_loaded, strategy, order);
    uint64_t free_b = ne->free_bytes, evicted = 0;
    size_t k = 0;
    while (free_b < need_bytes && k < nv) {
      free_b += ne->loaded[order[k]].bytes;
      evicted += ne->loaded[order[k]].bytes;
      k++;
    }
    if (free_b < need_bytes)
      continue;
    uint64_t after = free_b - need_bytes;
    bool better = out->neuron < 0 || k < out->n_evict ||
                  (k == out->n_evict && evicted < best_evicted) ||
                  (k == out->n_evict && evicted == best_evicted && after > out->free_after_bytes) ||
                  (k == out->n_evict && evicted == best_evicted && after == out->free_after_bytes &&
                   ne->in_flight < best_inflight);
    if (!better)
      continue;
    out->neuron = (int)i;
    out->n_evict = k;
    memcpy(out->evict, order, k * sizeof order[0]);
    out->free_after_bytes = after;
    best_evicted = evicted;
    best_inflight = ne->in_flight;
  }
  return out->neuron >= 0;
}

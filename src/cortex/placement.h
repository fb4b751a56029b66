/* placement.h — where to load a model, and what to evict for it.
 *
 * Pure decision code over a snapshot (no I/O, no locks) so that it can be
 * tested exhaustively. Granularity is the neuron's memory pool: free VRAM
 * summed over its devices (or its memory budget on a CPU-only host); the
 * neuron itself places layers on devices. A model is evictable when it is
 * not pinned, has no request in flight or queued, and is not loading. */
#ifndef CORTEX_PLACEMENT_H
#define CORTEX_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cortex/config.h"

enum { PLACE_MAX_LOADED = 64 };

typedef struct place_model {
  const char *id;
  uint64_t bytes;        /* memory it holds */
  int32_t priority;      /* profile priority (higher survives longer) */
  bool pinned;           /* never evicted */
  bool busy;             /* in flight, queued or loading: not evictable now */
  uint64_t last_used_ns; /* monotonic */
} place_model;

typedef struct place_neuron {
  const char *name;
  bool eligible;       /* up, not ejected, allowed by the profile, meets device minimums */
  uint64_t free_bytes; /* memory free now */
  place_model loaded[PLACE_MAX_LOADED];
  size_t n_loaded;
  long in_flight; /* requests in flight (tie-break) */
} place_neuron;

typedef struct place_decision {
  int neuron;                     /* index into the snapshot, -1 = nowhere fits */
  size_t evict[PLACE_MAX_LOADED]; /* indices into that neuron's loaded[] */
  size_t n_evict;
  uint64_t free_after_bytes; /* free memory after evicting and loading */
} place_decision;

/* Chooses the eligible neuron that fits need_bytes with the fewest evictions
 * (then the least evicted bytes, then the most free memory left, then the
 * fewest requests in flight). Victims are taken in policy order: LRU = least
 * recently used first; PRIORITY = lowest priority first, LRU among equals.
 * Returns false (neuron = -1) when nothing fits even after evicting
 * everything policy allows. */
bool placement_choose(const place_neuron *neurons, size_t n, uint64_t need_bytes,
                      cortex_evict_strategy strategy, place_decision *out);

/* Orders loaded[] indices into eviction order for a policy (test helper and
 * used by placement_choose). order must hold n entries. Busy and pinned
 * models are left out; returns how many are evictable. */
size_t placement_victims(const place_model *loaded, size_t n, cortex_evict_strategy strategy,
                         size_t *order);

#endif

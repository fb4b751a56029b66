/* test_placement.c — placement and eviction choice: fit without eviction,
 * LRU vs priority victims, pinned and busy models never chosen, fewest
 * evictions preferred across neurons, nothing fits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "cortex/placement.h"

#define MB (1ull << 20)

static place_neuron neuron(const char *name, uint64_t free_mb) {
  place_neuron n;
  memset(&n, 0, sizeof n);
  n.name = name;
  n.eligible = true;
  n.free_bytes = free_mb * MB;
  return n;
}

static void add(place_neuron *n, const char *id, uint64_t mb, int prio, uint64_t used, bool pinned,
                bool busy) {
  place_model *m = &n->loaded[n->n_loaded++];
  m->id = id;
  m->bytes = mb * MB;
  m->priority = prio;
  m->last_used_ns = used;
  m->pinned = pinned;
  m->busy = busy;
}

static void test_fits_without_eviction(void **state) {
  (void)state;
  place_neuron ns[2] = {neuron("a", 100), neuron("b", 300)};
  add(&ns[0], "x", 100, 0, 1, false, false);
  place_decision d;
  assert_true(placement_choose(ns, 2, 200 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.neuron, 1);
  assert_int_equal(d.n_evict, 0);
  assert_int_equal(d.free_after_bytes, 100 * MB);
  /* both fit: the one with more room left wins */
  ns[0].free_bytes = 250 * MB;
  assert_true(placement_choose(ns, 2, 200 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.neuron, 1);
  /* ineligible neurons are skipped */
  ns[1].eligible = false;
  assert_true(placement_choose(ns, 2, 200 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.neuron, 0);
}

static void test_lru_and_priority_victims(void **state) {
  (void)state;
  place_neuron n = neuron("a", 0);
  add(&n, "old-high", 100, 9, 10, false, false);
  add(&n, "new-low", 100, 1, 50, false, false);
  add(&n, "pinned", 100, 0, 1, true, false);
  add(&n, "busy", 100, 0, 2, false, true);
  add(&n, "mid", 100, 5, 30, false, false);
  size_t order[8];
  assert_int_equal(placement_victims(n.loaded, n.n_loaded, CORTEX_EVICT_LRU, order), 3);
  assert_string_equal(n.loaded[order[0]].id, "old-high");
  assert_string_equal(n.loaded[order[1]].id, "mid");
  assert_string_equal(n.loaded[order[2]].id, "new-low");
  assert_int_equal(placement_victims(n.loaded, n.n_loaded, CORTEX_EVICT_PRIORITY, order), 3);
  assert_string_equal(n.loaded[order[0]].id, "new-low");
  assert_string_equal(n.loaded[order[1]].id, "mid");
  assert_string_equal(n.loaded[order[2]].id, "old-high");

  place_decision d;
  assert_true(placement_choose(&n, 1, 150 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.n_evict, 2);
  assert_string_equal(n.loaded[d.evict[0]].id, "old-high");
  assert_string_equal(n.loaded[d.evict[1]].id, "mid");
  assert_true(placement_choose(&n, 1, 100 * MB, CORTEX_EVICT_PRIORITY, &d));
  assert_int_equal(d.n_evict, 1);
  assert_string_equal(n.loaded[d.evict[0]].id, "new-low");
  /* pinned + busy hold 200 of 500: 301 never fits */
  assert_false(placement_choose(&n, 1, 301 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.neuron, -1);
  assert_true(placement_choose(&n, 1, 300 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.n_evict, 3);
}

static void test_fewest_evictions_across_neurons(void **state) {
  (void)state;
  place_neuron ns[3] = {neuron("a", 0), neuron("b", 50), neuron("c", 0)};
  add(&ns[0], "a1", 60, 0, 1, false, false);
  add(&ns[0], "a2", 60, 0, 2, false, false);
  add(&ns[1], "b1", 80, 0, 3, false, false);
  add(&ns[2], "c1", 400, 0, 4, false, false);
  place_decision d;
  /* a needs 2 evictions, b and c one each; b evicts fewer bytes */
  assert_true(placement_choose(ns, 3, 100 * MB, CORTEX_EVICT_LRU, &d));
  assert_int_equal(d.neuron, 1);
  assert_int_equal(d.n_evict, 1);
  assert_string_equal(ns[1].loaded[d.evict[0]].id, "b1");
  assert_int_equal(d.free_after_bytes, 30 * MB);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fits_without_eviction),
      cmocka_unit_test(test_lru_and_priority_victims),
      cmocka_unit_test(test_fewest_evictions_across_neurons),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

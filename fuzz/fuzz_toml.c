/* fuzz_toml.c — libFuzzer target for the TOML parser: parse any bytes
 * (bounded), and for accepted documents walk the tree through the tagged
 * JSON writer and the schema helpers, so every node kind is touched. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  toml_limits lim = {.max_bytes = 1 << 20, .max_depth = 64};
  toml_value *root = NULL;
  hx_err err;
  if (toml_parse((const char *)data, size, &lim, &root, &err) != HX_OK) {
    HX_ASSERT(root == NULL);
    return 0;
  }
  HX_ASSERT(root && root->type == TOML_TABLE);
  hx_buf out;
  hx_buf_init(&out, (size_t)64 << 20);
  hx_code rc = toml_to_tagged_json(root, &out);
  HX_ASSERT(rc == HX_OK || rc == HX_ETOOLARGE);
  hx_buf_free(&out);
  /* schema helpers on the first key of the root, whatever its type */
  toml_diag d;
  toml_diag_init(&d, "fuzz.toml");
  static const char *const none[] = {NULL};
  toml_check_keys(root, "", none, &d);
  if (toml_table_len(root) > 0 && root->u.tab.items[0].key_len < 64) {
    const char *k = root->u.tab.items[0].key;
    int64_t i;
    double f;
    bool b;
    char *s = NULL;
    char **list = NULL;
    size_t n_list = 0;
    toml_get_int(root, k, "", true, -5, 5, &i, &d);
    toml_get_float(root, k, "", true, 0, 1, &f, &d);
    toml_get_bool(root, k, "", true, &b, &d);
    if (toml_get_string(root, k, "", true, 1000, &s, &d)) {
      char *host;
      uint16_t port;
      if (toml_hostport_parse(s, &host, &port))
        free(host);
    }
    free(s);
    toml_get_string_array(root, k, "", true, 16, 64, &list, &n_list, &d);
    toml_strings_free(list, n_list);
  }
  hx_err e2;
  toml_diag_to_err(&d, &e2);
  toml_diag_free(&d);
  toml_free(root);
  return 0;
}

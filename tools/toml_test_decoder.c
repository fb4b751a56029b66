/* toml_test_decoder.c — the toml-test decoder interface over our parser:
 * TOML on stdin; tagged JSON on stdout and exit 0; invalid TOML → a message
 * on stderr and exit 1. */
#include <stdio.h>
#include <stdlib.h>

#include "base/buf.h"
#include "base/toml.h"

int main(void) {
  hx_buf in, out;
  hx_buf_init(&in, TOML_MAX_BYTES_DEFAULT);
  hx_buf_init(&out, (size_t)1 << 30);
  char chunk[16384];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
    if (hx_buf_append(&in, chunk, n) != HX_OK) {
      fprintf(stderr, "toml-test-decoder: input larger than %d bytes\n", TOML_MAX_BYTES_DEFAULT);
      hx_buf_free(&in);
      return 1;
    }
  }
  toml_value *root;
  hx_err err;
  hx_err_clear(&err);
  hx_code rc = toml_parse(in.data, in.len, NULL, &root, &err);
  hx_buf_free(&in);
  if (rc != HX_OK) {
    fprintf(stderr, "toml-test-decoder: %s\n", err.msg);
    return 1;
  }
  rc = toml_to_tagged_json(root, &out);
  toml_free(root);
  if (rc != HX_OK) {
    fprintf(stderr, "toml-test-decoder: cannot write JSON (%s)\n", hx_strerror(rc));
    hx_buf_free(&out);
    return 1;
  }
  fwrite(out.data, 1, out.len, stdout);
  fputc('\n', stdout);
  hx_buf_free(&out);
  return 0;
}

/* test_safetensors.c — safetensors reader: valid single files, sharded
 * directories with an index, and one malformed header per error case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/safetensors.h"

/* Builds a file image: u64 header length, header, data. */
static uint8_t *image(const char *header, const void *data, size_t data_len, size_t *len) {
  size_t h = strlen(header);
  *len = 8 + h + data_len;
  uint8_t *p = malloc(*len);
  uint64_t hl = h;
  memcpy(p, &hl, 8);
  memcpy(p + 8, header, h);
  if (data_len)
    memcpy(p + 8 + h, data, data_len);
  return p;
}

static void expect(const char *header, size_t data_len, const char *needle) {
  uint8_t data[256] = {0};
  size_t len;
  uint8_t *p = image(header, data, data_len, &len);
  safetensors *st = NULL;
  hx_err e;
  hx_code rc = safetensors_open_mem(p, len, "bad.safetensors", &st, &e);
  if (rc == HX_OK || !strstr(e.msg, needle)) {
    fprintf(stderr, "expected \"%s\", got rc=%d \"%s\"\n", needle, rc, rc ? e.msg : "");
    fail();
  }
  assert_null(st);
  free(p);
}

static void test_valid_file(void **state) {
  (void)state;
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t b[2] = {0x3f80, 0x4000};
  uint8_t data[32];
  memcpy(data, a, 24);
  memcpy(data + 24, b, 4);
  const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                  "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[24,28]}}";
  size_t len;
  uint8_t *p = image(h, data, 28, &len);
  safetensors *st;
  hx_err e;
  assert_int_equal(safetensors_open_mem(p, len, "ok.safetensors", &st, &e), HX_OK);
  assert_int_equal(safetensors_count(st), 2);
  const st_tensor *t = safetensors_find(st, "a");
  assert_non_null(t);
  assert_int_equal(t->dtype, ST_F32);
  assert_int_equal(t->n_dims, 2);
  assert_int_equal(t->shape[0], 2);
  assert_int_equal(t->shape[1], 3);
  assert_memory_equal(t->data, a, 24);
  t = safetensors_find(st, "b");
  assert_int_equal(t->dtype, ST_BF16);
  assert_int_equal(t->nbytes, 4);
  assert_null(safetensors_find(st, "c"));
  assert_string_equal(safetensors_metadata(st, "format"), "pt");
  safetensors_close(st);
  free(p);
}

static void test_malformed(void **state) {
  (void)state;
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, "line");
  expect("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype");
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         "shape needs 12 bytes");
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "out of range");
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         16, "overlaps");
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         16, "uplicate");
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
         "overflow");
  expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "out of range");
  expect("[1,2]", 0, "not a JSON object");
  /* header length past EOF and over the limit */
  uint8_t raw[16] = {0};
  uint64_t big = 1000;
  memcpy(raw, &big, 8);
  safetensors *st;
  hx_err e;
  assert_int_not_equal(safetensors_open_mem(raw, 16, "x", &st, &e), HX_OK);
  assert_non_null(strstr(e.msg, "runs past the end"));
  big = (uint64_t)SAFETENSORS_MAX_HEADER_BYTES + 1;
  memcpy(raw, &big, 8);
  assert_int_equal(safetensors_open_mem(raw, 16, "x", &st, &e), HX_ETOOLARGE);
  assert_int_not_equal(safetensors_open_mem(raw, 4, "x", &st, &e), HX_OK);
}

static void write_file(const char *path, const void *p, size_t n) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(p, 1, n, fp), n);
  fclose(fp);
}

static void test_sharded_dir(void **state) {
  (void)state;
  char dir[] = "/tmp/hx_st_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char p1[128], p2[128], pi[128];
  snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
  snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
  snprintf(pi, sizeof pi, "%s/model.safetensors.index.json", dir);
  float x[2] = {1, 2}, y[2] = {3, 4};
  size_t n;
  uint8_t *img =
      image("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", x, 8, &n);
  write_file(p1, img, n);
  free(img);
  img = image("{\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", y, 8, &n);
  write_file(p2, img, n);
  free(img);
  const char *idx = "{\"metadata\":{},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
                    "\"y\":\"model-00002-of-00002.safetensors\"}}";
  write_file(pi, idx, strlen(idx));
  safetensors *st;
  hx_err e;
  assert_int_equal(safetensors_open(dir, &st, &e), HX_OK);
  assert_int_equal(safetensors_count(st), 2);
  assert_memory_equal(safetensors_find(st, "y")->data, y, 8);
  assert_int_equal(safetensors_find(st, "y")->shard, 1);
  safetensors_close(st);
  /* index naming the wrong shard */
  const char *bad = "{\"weight_map\":{\"x\":\"model-00002-of-00002.safetensors\","
                    "\"y\":\"model-00002-of-00002.safetensors\"}}";
  write_file(pi, bad, strlen(bad));
  assert_int_not_equal(safetensors_open(dir, &st, &e), HX_OK);
  assert_non_null(strstr(e.msg, "listed in the index"));
  /* path traversal in the index */
  const char *trav = "{\"weight_map\":{\"x\":\"../etc/passwd\"}}";
  write_file(pi, trav, strlen(trav));
  assert_int_not_equal(safetensors_open(dir, &st, &e), HX_OK);
  assert_non_null(strstr(e.msg, "plain file name"));
  unlink(p1);
  unlink(p2);
  unlink(pi);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_file),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_sharded_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

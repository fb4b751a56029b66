/* test_gguf.c — GGUF reader/writer: round trip, a file written by the Python
 * `gguf` package (tests/data/gguf/tiny_py.gguf, made by
 * tools/make_quant_fixtures.py), and a corpus of malformed files built here,
 * one per error case, each asserting its distinct message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"

/* --- raw builder for malformed files -------------------------------------- */

static void u32(hx_buf *b, uint32_t v) { assert_int_equal(hx_buf_append(b, &v, 4), HX_OK); }
static void u64(hx_buf *b, uint64_t v) { assert_int_equal(hx_buf_append(b, &v, 8), HX_OK); }
static void str(hx_buf *b, const char *s) {
  u64(b, strlen(s));
  assert_int_equal(hx_buf_append(b, s, strlen(s)), HX_OK);
}
static void header(hx_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  hx_buf_init(b, 1 << 20);
  assert_int_equal(hx_buf_append(b, "GGUF", 4), HX_OK);
  u32(b, version);
  u64(b, n_tensors);
  u64(b, n_kv);
}
static void kv_u32(hx_buf *b, const char *key, uint32_t v) {
  str(b, key);
  u32(b, GGUF_TYPE_UINT32);
  u32(b, v);
}
static void tinfo(hx_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                  uint64_t off) {
  str(b, name);
  u32(b, n_dims);
  for (uint32_t i = 0; i < n_dims; i++)
    u64(b, ne[i]);
  u32(b, type);
  u64(b, off);
}
static void pad_data(hx_buf *b, size_t data_bytes) {
  while (b->len % 32)
    assert_int_equal(hx_buf_append_char(b, 0), HX_OK);
  for (size_t i = 0; i < data_bytes; i++)
    assert_int_equal(hx_buf_append_char(b, 0), HX_OK);
}

/* Opens b and asserts failure whose message contains `needle` and names the file. */
static void expect_error(hx_buf *b, const char *needle) {
  gguf_file *f = NULL;
  hx_err e;
  hx_code rc = gguf_open_mem(b->data, b->len, "bad.gguf", &f, &e);
  if (rc == HX_OK || !strstr(e.msg, needle) || !strstr(e.msg, "bad.gguf")) {
    fprintf(stderr, "expected error containing \"%s\", got rc=%d \"%s\"\n", needle, rc,
            rc ? e.msg : "");
    fail();
  }
  assert_null(f);
  hx_buf_free(b);
}

static void test_malformed_corpus(void **state) {
  (void)state;
  hx_buf b;
  uint64_t ne2[2] = {32, 2};

  hx_buf_init(&b, 64);
  assert_int_equal(hx_buf_append(&b, "GGUX\3\0\0\0", 8), HX_OK);
  expect_error(&b, "bad magic");

  header(&b, 1, 0, 0);
  expect_error(&b, "unsupported version 1");

  header(&b, 3, 1ull << 40, 0);
  expect_error(&b, "absurd tensor count");

  header(&b, 3, 0, 1ull << 40);
  expect_error(&b, "absurd metadata count");

  header(&b, 3, 0, 1);
  u64(&b, 1000); /* key length */
  assert_int_equal(hx_buf_append(&b, "abcdefghijklmnop", 16), HX_OK);
  expect_error(&b, "runs past the end of the file");

  header(&b, 3, 0, 1);
  str(&b, "x.key");
  u32(&b, 13);
  u32(&b, 0);
  expect_error(&b, "unknown value type 13");

  header(&b, 3, 0, 1);
  str(&b, "general.alignment");
  u32(&b, GGUF_TYPE_STRING);
  str(&b, "thirty-two");
  expect_error(&b, "mismatched type");

  header(&b, 3, 0, 1);
  kv_u32(&b, "general.alignment", 48);
  expect_error(&b, "bad alignment 48");

  header(&b, 3, 0, 2);
  kv_u32(&b, "a.b", 1);
  kv_u32(&b, "a.b", 2);
  expect_error(&b, "duplicate key \"a.b\"");

  header(&b, 3, 2, 0);
  tinfo(&b, "w", 2, ne2, 0, 0);
  tinfo(&b, "w", 2, ne2, 0, 256);
  pad_data(&b, 512);
  expect_error(&b, "duplicate tensor name \"w\"");

  uint64_t ne5[5] = {1, 1, 1, 1, 1};
  header(&b, 3, 1, 0);
  tinfo(&b, "five", 5, ne5, 0, 0);
  pad_data(&b, 64);
  expect_error(&b, "n_dims 5");

  uint64_t nez[2] = {32, 0};
  header(&b, 3, 1, 0);
  tinfo(&b, "zero", 2, nez, 0, 0);
  pad_data(&b, 64);
  expect_error(&b, "ne[1] is zero");

  uint64_t neo[3] = {1ull << 32, 1ull << 32, 1ull << 10};
  header(&b, 3, 1, 0);
  tinfo(&b, "huge", 3, neo, 0, 0);
  pad_data(&b, 64);
  expect_error(&b, "dimensions overflow");

  uint64_t ne_q[2] = {100, 4};
  header(&b, 3, 1, 0);
  tinfo(&b, "blk.0.attn_q.weight", 2, ne_q, QUANT_Q4_K, 0);
  pad_data(&b, 64);
  expect_error(&b, "not a multiple of the block size 256 of q4_K");

  header(&b, 3, 1, 0);
  tinfo(&b, "t", 2, ne2, 4 /* removed Q4_2 */, 0);
  pad_data(&b, 256);
  expect_error(&b, "unknown tensor type 4");

  header(&b, 3, 1, 0);
  tinfo(&b, "u", 2, ne2, 0, 8);
  pad_data(&b, 512);
  expect_error(&b, "unaligned");

  header(&b, 3, 1, 0);
  tinfo(&b, "eof", 2, ne2, 0, 0);
  pad_data(&b, 100); /* needs 256 */
  expect_error(&b, "lies past the end of the file");

  header(&b, 3, 2, 0);
  tinfo(&b, "a", 2, ne2, 0, 0);
  tinfo(&b, "b", 2, ne2, 0, 128);
  pad_data(&b, 512);
  expect_error(&b, "overlaps");

  header(&b, 3, 0, 1); /* arrays nested 5 deep */
  str(&b, "deep");
  u32(&b, GGUF_TYPE_ARRAY);
  for (int i = 0; i < 5; i++) {
    u32(&b, GGUF_TYPE_ARRAY);
    u64(&b, 1);
  }
  u32(&b, GGUF_TYPE_UINT8);
  u64(&b, 0);
  expect_error(&b, "nested deeper");

  header(&b, 3, 0, 1);
  str(&b, "big.arr");
  u32(&b, GGUF_TYPE_ARRAY);
  u32(&b, GGUF_TYPE_UINT32);
  u64(&b, 1ull << 50);
  expect_error(&b, "absurd count");
}

static void test_write_read_round_trip(void **state) {
  (void)state;
  char path[] = "/tmp/hx_test_gguf_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  gguf_writer *w = gguf_writer_create(64);
  assert_non_null(w);
  assert_int_equal(gguf_writer_set_str(w, "general.architecture", "qwen3", 5), HX_OK);
  assert_int_equal(gguf_writer_set_u32(w, "qwen3.block_count", 2), HX_OK);
  assert_int_equal(gguf_writer_set_f32(w, "qwen3.rope.freq_base", 1e6f), HX_OK);
  assert_int_equal(gguf_writer_set_bool(w, "b", true), HX_OK);
  const char *toks[] = {"a", "\xc4\xa0hello", ""};
  assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3), HX_OK);
  int32_t ids[] = {1, -2, 3};
  assert_int_equal(gguf_writer_set_arr(w, "ids", GGUF_TYPE_INT32, ids, 3), HX_OK);
  hx_err e;
  int64_t ne_a[2] = {32, 3}, ne_b[1] = {7};
  assert_int_equal(gguf_writer_add_tensor(w, "a", QUANT_F32, 2, ne_a, &e), HX_OK);
  assert_int_equal(gguf_writer_add_tensor(w, "b", QUANT_F16, 1, ne_b, &e), HX_OK);
  assert_int_not_equal(gguf_writer_add_tensor(w, "b", QUANT_F16, 1, ne_b, &e), HX_OK);
  assert_int_equal(gguf_writer_open(w, path, &e), HX_OK);
  float a[96];
  for (int i = 0; i < 96; i++)
    a[i] = (float)i * 0.5f;
  uint16_t bv[7] = {0x3c00, 0, 0, 0, 0, 0, 0x4000};
  assert_int_equal(gguf_writer_write_tensor(w, a, sizeof a, &e), HX_OK);
  assert_int_equal(gguf_writer_write_tensor(w, bv, sizeof bv, &e), HX_OK);
  assert_int_equal(gguf_writer_finish(w, &e), HX_OK);
  gguf_writer_free(w);

  gguf_file *f;
  assert_int_equal(gguf_open(path, &f, &e), HX_OK);
  assert_int_equal(gguf_version(f), 3);
  assert_int_equal(gguf_alignment(f), 64);
  hx_slice s;
  assert_int_equal(gguf_get_str(f, "general.architecture", true, &s, &e), HX_OK);
  assert_true(hx_slice_eq_cstr(s, "qwen3"));
  int64_t n;
  assert_int_equal(gguf_get_int(f, "qwen3.block_count", true, 1, 10, &n, &e), HX_OK);
  assert_int_equal(n, 2);
  assert_int_not_equal(gguf_get_int(f, "qwen3.block_count", true, 3, 10, &n, &e), HX_OK);
  assert_int_equal(gguf_get_int(f, "missing", true, 0, 1, &n, &e), HX_ENOTFOUND);
  double d;
  assert_int_equal(gguf_get_float(f, "qwen3.rope.freq_base", true, &d, &e), HX_OK);
  assert_true(d == 1e6);
  const gguf_value *arr;
  assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", true, GGUF_TYPE_STRING, &arr, &e),
                   HX_OK);
  assert_int_equal(arr->v.arr.n, 3);
  assert_true(hx_slice_eq_cstr(gguf_arr_str(arr, 1), "\xc4\xa0hello"));
  assert_int_equal(gguf_arr_str(arr, 2).len, 0);
  assert_int_equal(gguf_get_arr(f, "ids", true, GGUF_TYPE_INT32, &arr, &e), HX_OK);
  assert_int_equal(gguf_arr_int(arr, 1), -2);
  const gguf_tensor *t = gguf_tensor_find(f, "a");
  assert_non_null(t);
  assert_int_equal(t->ne[0], 32);
  assert_int_equal(t->ne[1], 3);
  assert_int_equal(t->nbytes, sizeof a);
  assert_memory_equal(t->data, a, sizeof a);
  t = gguf_tensor_find(f, "b");
  assert_non_null(t);
  assert_int_equal(t->offset % 64, 0);
  assert_memory_equal(t->data, bv, sizeof bv);
  assert_null(gguf_tensor_find(f, "c"));
  gguf_close(f);
  unlink(path);
}

/* A file written by the Python gguf package (see tools/make_quant_fixtures.py). */
static void test_reads_python_gguf(void **state) {
  (void)state;
  gguf_file *f;
  hx_err e;
  hx_code rc = gguf_open("tests/data/gguf/tiny_py.gguf", &f, &e);
  if (rc == HX_ENOTFOUND)
    skip();
  assert_int_equal(rc, HX_OK);
  hx_slice s;
  assert_int_equal(gguf_get_str(f, "general.architecture", true, &s, &e), HX_OK);
  assert_true(hx_slice_eq_cstr(s, "qwen3"));
  const gguf_value *arr;
  assert_int_equal(gguf_get_arr(f, "nested", true, GGUF_TYPE_ARRAY, &arr, &e), HX_OK);
  assert_int_equal(arr->v.arr.n, 2);
  const gguf_tensor *t = gguf_tensor_find(f, "token_embd.weight");
  assert_non_null(t);
  assert_int_equal(t->type, QUANT_F32);
  assert_int_equal(t->ne[0], 64);
  assert_int_equal(t->ne[1], 8);
  const float *x = t->data;
  assert_true(x[0] == 0.0f && x[1] == 1.0f && x[64] == 64.0f);
  assert_non_null(gguf_tensor_find(f, "blk.0.attn_q.weight"));
  gguf_close(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_malformed_corpus),
      cmocka_unit_test(test_write_read_round_trip),
      cmocka_unit_test(test_reads_python_gguf),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_tokenizer.c — tokenizer unit tests on a small hand-made vocabulary
 * (ids 0..255 are the 256 bytes, then a few merges and added tokens), plus
 * a few facts about the real Qwen vocabularies when they are present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/json.h"
#include "engine/gguf_writer.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"

enum { ID_AB = 256, ID_ABC, ID_SPACE_A, ID_IM_END, ID_THINK, ID_MASK };

static void bl(hx_buf *b, const char *bytes) { /* appends the byte-level form */
  for (const unsigned char *p = (const unsigned char *)bytes; *p; p++) {
    char u[4];
    size_t n = utf8_encode(bytelevel_char_of_byte(*p), u);
    if (*p == '"' || *p == '\\')
      hx_buf_append_char(b, '\\');
    hx_buf_append(b, u, n);
  }
}

/* tokenizer.json text for the small vocabulary with the given pre_tokenizer. */
static char *small_json(const char *pre_tokenizer) {
  hx_buf b;
  hx_buf_init(&b, 1 << 20);
  hx_buf_append_str(&b, "{\"version\":\"1.0\",\"added_tokens\":["
                        "{\"id\":259,\"content\":\"<|im_end|>\",\"special\":true,"
                        "\"normalized\":false},"
                        "{\"id\":260,\"content\":\"<think>\",\"special\":false,"
                        "\"normalized\":false},"
                        "{\"id\":261,\"content\":\"<mask>\",\"special\":true,\"lstrip\":true,"
                        "\"rstrip\":true,\"normalized\":false}],"
                        "\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":");
  hx_buf_append_str(&b, pre_tokenizer);
  hx_buf_append_str(&b, ",\"decoder\":{\"type\":\"ByteLevel\"},"
                        "\"model\":{\"type\":\"BPE\",\"vocab\":{");
  for (int i = 0; i < 256; i++) {
    char s[2] = {(char)i, 0};
    hx_buf_append_str(&b, i ? ",\"" : "\"");
    if (i == 0)
      hx_buf_append(&b, "\xc4\x80", 2); /* byte 0 -> U+0100 */
    else
      bl(&b, s);
    hx_buf_printf(&b, "\":%d", i);
  }
  hx_buf_append_str(&b, ",\"ab\":256,\"abc\":257,\"");
  bl(&b, " a");
  hx_buf_append_str(&b, "\":258},\"merges\":[\"a b\",[\"ab\",\"c\"],\"");
  bl(&b, " ");
  hx_buf_append_str(&b, " a\"]}}");
  return hx_buf_detach(&b);
}

static const char *QWEN2_PRE =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}";

static tokenizer *small(void) {
  char *j = small_json(QWEN2_PRE);
  tokenizer *t = NULL;
  hx_err err = {0};
  hx_code rc = tokenizer_load_json(j, strlen(j), NULL, 0, "small", &t, &err);
  if (rc)
    fail_msg("small vocabulary: %s", err.msg);
  free(j);
  return t;
}

static void expect_ids(tokenizer *t, const char *s, size_t n, bool special, const int32_t *want,
                       size_t want_n) {
  int32_t *ids = NULL;
  size_t got = 0;
  hx_err err = {0};
  assert_int_equal(tokenizer_encode(t, s, n, special, &ids, &got, &err), HX_OK);
  if (got != want_n || (got && memcmp(ids, want, got * sizeof *ids) != 0)) {
    fprintf(stderr, "encode \"%.*s\": got", (int)n, s);
    for (size_t i = 0; i < got; i++)
      fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
    fail();
  }
  free(ids);
}
#define EXPECT(t, s, special, ...)                                                                 \
  do {                                                                                             \
    const int32_t w_[] = {__VA_ARGS__};                                                            \
    expect_ids(t, s, sizeof(s) - 1, special, w_, sizeof w_ / sizeof w_[0]);                        \
  } while (0)

static void test_small_bpe(void **state) {
  (void)state;
  tokenizer *t = small();
  assert_int_equal(tokenizer_vocab_size(t), 262);
  assert_int_equal(tokenizer_pretok_kind(t), TOKENIZER_PRETOK_QWEN2);
  EXPECT(t, "abc", true, ID_ABC);
  /* " abc": "a b" (rank 0) beats "Ġ a" (rank 2), then "ab c". */
  EXPECT(t, " abc", true, ' ', ID_ABC);
  EXPECT(t, " ax", true, ID_SPACE_A, 'x');
  EXPECT(t, "ab\r\n", true, ID_AB, '\r', '\n');
  size_t len;
  assert_int_equal(tokenizer_token_to_id(t, "abc", 3), ID_ABC);
  assert_int_equal(tokenizer_token_to_id(t, "zzz", 3), TOKENIZER_ID_NONE);
  assert_memory_equal(tokenizer_id_to_bytes(t, ID_SPACE_A, &len), " a", 2);
  assert_int_equal(len, 2);
  assert_null(tokenizer_id_to_token(t, 9999, &len));
  tokenizer_free(t);
}

static void test_empty_and_invalid_utf8(void **state) {
  (void)state;
  tokenizer *t = small();
  int32_t *ids = (int32_t *)1;
  size_t n = 7;
  hx_err err = {0};
  assert_int_equal(tokenizer_encode(t, "", 0, true, &ids, &n, &err), HX_OK);
  assert_int_equal(n, 0);
  assert_null(ids);
  /* Each maximal ill-formed subpart becomes U+FFFD (EF BF BD). */
  EXPECT(t, "\xff", true, 0xEF, 0xBF, 0xBD);
  EXPECT(t, "\xe4\xb8", true, 0xEF, 0xBF, 0xBD);
  EXPECT(t, "\xed\xa0\x80", true, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD);
  EXPECT(t,
         "a\x00"
         "b",
         true, 'a', 0, 'b');
  tokenizer_free(t);
}

static void test_special_switch(void **state) {
  (void)state;
  tokenizer *t = small();
  EXPECT(t, "<|im_end|>", true, ID_IM_END);
  EXPECT(t, "<|im_end|>", false, '<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|', '>');
  /* Non-special added tokens are always matched (as in HF). */
  EXPECT(t, "<think>", false, ID_THINK);
  EXPECT(t, "x<think>ab", true, 'x', ID_THINK, ID_AB);
  /* lstrip/rstrip swallow the whitespace around <mask>. */
  EXPECT(t, "ab <mask> ab", true, ID_AB, ID_MASK, ID_AB);
  assert_true(tokenizer_is_special(t, ID_IM_END));
  assert_false(tokenizer_is_special(t, ID_THINK));
  assert_true(tokenizer_is_added(t, ID_THINK));
  assert_int_equal(tokenizer_eot_id(t), ID_IM_END);
  tokenizer_free(t);
}

static bool valid_utf8(const char *s, size_t n) {
  return utf8_valid_prefix((const uint8_t *)s, n) == n;
}

static void test_incremental_decode(void **state) {
  (void)state;
  tokenizer *t = small();
  size_t cap = tokenizer_decoder_out_max(t);
  char *out = malloc(cap);
  tokenizer_decoder d;
  hx_err err = {0};
  size_t w;
  tokenizer_decoder_init(&d, t, false);
  /* "é" = C3 A9 across two tokens: nothing, then the whole character. */
  assert_int_equal(tokenizer_decoder_push(&d, 0xC3, out, cap, &w, &err), HX_OK);
  assert_int_equal(w, 0);
  assert_int_equal(tokenizer_decoder_push(&d, 0xA9, out, cap, &w, &err), HX_OK);
  assert_int_equal(w, 2);
  assert_memory_equal(out, "\xc3\xa9", 2);
  /* A 4-byte emoji over four tokens. */
  const uint8_t emoji[] = {0xF0, 0x9F, 0x98, 0x80};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(tokenizer_decoder_push(&d, emoji[i], out, cap, &w, &err), HX_OK);
    assert_int_equal(w, i < 3 ? 0 : 4);
  }
  /* A broken sequence: U+FFFD then the byte that broke it. */
  assert_int_equal(tokenizer_decoder_push(&d, 0xE4, out, cap, &w, &err), HX_OK);
  assert_int_equal(tokenizer_decoder_push(&d, 'a', out, cap, &w, &err), HX_OK);
  assert_int_equal(w, 4);
  assert_memory_equal(out,
                      "\xef\xbf\xbd"
                      "a",
                      4);
  /* A pending byte at the end becomes U+FFFD on flush. */
  assert_int_equal(tokenizer_decoder_push(&d, 0xF0, out, cap, &w, &err), HX_OK);
  assert_int_equal(tokenizer_decoder_flush(&d, out, cap), 3);
  assert_int_equal(tokenizer_decoder_flush(&d, out, cap), 0);
  /* Invalid id: error, state kept. */
  assert_int_equal(tokenizer_decoder_push(&d, 5000, out, cap, &w, &err), HX_EINVAL);
  assert_true(strlen(err.msg) > 0);

  /* Random id streams: every chunk is valid UTF-8, the concatenation equals
   * tokenizer_decode, with and without skipping specials. */
  unsigned seed = 12345;
  for (int round = 0; round < 2000; round++) {
    int32_t ids[24];
    size_t n = (size_t)(round % 24) + 1;
    for (size_t i = 0; i < n; i++) {
      seed = seed * 1103515245u + 12345u;
      unsigned r = (seed >> 8) % 300;
      /* mostly UTF-8-ish bytes, sometimes merged or added tokens */
      ids[i] = r < 262 ? (int32_t)r : (int32_t)(0x80 + (r % 0x40));
    }
    bool skip = round % 2;
    char *whole = NULL;
    size_t whole_n = 0;
    assert_int_equal(tokenizer_decode(t, ids, n, skip, &whole, &whole_n, &err), HX_OK);
    assert_true(valid_utf8(whole, whole_n));
    tokenizer_decoder_init(&d, t, skip);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
      assert_int_equal(tokenizer_decoder_push(&d, ids[i], out, cap, &w, &err), HX_OK);
      assert_true(valid_utf8(out, w));
      assert_true(at + w <= whole_n);
      assert_memory_equal(whole + at, out, w);
      at += w;
    }
    w = tokenizer_decoder_flush(&d, out, cap);
    assert_int_equal(at + w, whole_n);
    assert_memory_equal(whole + at, out, w);
    free(whole);
  }
  free(out);
  tokenizer_free(t);
}

static void test_decode(void **state) {
  (void)state;
  tokenizer *t = small();
  hx_err err = {0};
  char *s = NULL;
  size_t n = 0;
  int32_t ids[] = {ID_ABC, ID_IM_END, ID_SPACE_A, ID_THINK};
  assert_int_equal(tokenizer_decode(t, ids, 4, false, &s, &n, &err), HX_OK);
  assert_string_equal(s, "abc<|im_end|> a<think>");
  free(s);
  assert_int_equal(tokenizer_decode(t, ids, 4, true, &s, &n, &err), HX_OK);
  assert_string_equal(s, "abc a<think>");
  free(s);
  int32_t bad[] = {1, -1};
  assert_int_equal(tokenizer_decode(t, bad, 2, false, &s, &n, &err), HX_EINVAL);
  assert_non_null(strstr(err.msg, "position 1"));
  assert_null(s);
  tokenizer_free(t);
}

/* Replaces the first occurrence of `from` in the small vocabulary's JSON. */
static void expect_load_error(const char *from, const char *to, hx_code code, const char *needle) {
  char *j = small_json(QWEN2_PRE);
  char *at = strstr(j, from);
  assert_non_null(at);
  hx_buf b;
  hx_buf_init(&b, 1 << 20);
  hx_buf_append(&b, j, (size_t)(at - j));
  hx_buf_append_str(&b, to);
  hx_buf_append_str(&b, at + strlen(from));
  tokenizer *t = (tokenizer *)1;
  hx_err err = {0};
  hx_code rc = tokenizer_load_json(b.data, b.len, NULL, 0, "bad.json", &t, &err);
  if (rc != code || !strstr(err.msg, needle))
    fail_msg("replacing %s: got code %d \"%s\", want %d with \"%s\"", from, rc, err.msg, code,
             needle);
  assert_null(t);
  hx_buf_free(&b);
  free(j);
}

/* ignore_merges: a word that is itself a vocabulary token is taken whole,
 * even when no merge path leads to it (HF's BPE::tokenize). */
static tokenizer *load_replaced(const char *from, const char *to) {
  char *j = small_json(QWEN2_PRE);
  char *at = strstr(j, from);
  assert_non_null(at);
  hx_buf b;
  hx_buf_init(&b, 1 << 20);
  hx_buf_append(&b, j, (size_t)(at - j));
  hx_buf_append_str(&b, to);
  hx_buf_append_str(&b, at + strlen(from));
  tokenizer *t = NULL;
  hx_err err = {0};
  if (tokenizer_load_json(b.data, b.len, NULL, 0, "variant", &t, &err))
    fail_msg("%s", err.msg);
  hx_buf_free(&b);
  free(j);
  return t;
}

static void test_ignore_merges(void **state) {
  (void)state;
  tokenizer *t = load_replaced(",[\"ab\",\"c\"]", "");
  EXPECT(t, "abc", true, ID_AB, 'c');
  tokenizer_free(t);
  t = load_replaced("\"merges\":[\"a b\",[\"ab\",\"c\"],",
                    "\"ignore_merges\":true,\"merges\":[\"a b\",");
  EXPECT(t, "abc", true, ID_ABC);
  EXPECT(t, "abcabc", true, ID_AB, 'c', ID_AB, 'c');
  tokenizer_free(t);
}

/* A pre-tokenizer regex that backtracks exponentially fails with an error
 * instead of hanging. */
static void test_regex_limit(void **state) {
  (void)state;
  const char *pre = "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"((a|aa)+b)|x\"},\"behavior\":"
                    "\"Isolated\",\"invert\":false}";
  char *j = small_json(pre);
  tokenizer *t = NULL;
  hx_err err = {0};
  assert_int_equal(tokenizer_load_json(j, strlen(j), NULL, 0, "evil", &t, &err), HX_OK);
  assert_int_equal(tokenizer_pretok_kind(t), TOKENIZER_PRETOK_CUSTOM);
  char text[200];
  memset(text, 'a', sizeof text);
  int32_t *ids = NULL;
  size_t n = 0;
  assert_int_equal(tokenizer_encode(t, text, sizeof text, true, &ids, &n, &err), HX_ETOOLARGE);
  assert_non_null(strstr(err.msg, "regex"));
  assert_null(ids);
  tokenizer_free(t);
  free(j);
}

static void test_malformed_json(void **state) {
  (void)state;
  tokenizer *t = NULL;
  hx_err err = {0};
  assert_int_equal(tokenizer_load_json("{", 1, NULL, 0, "x.json", &t, &err), HX_EFORMAT);
  assert_non_null(strstr(err.msg, "x.json"));
  assert_int_equal(tokenizer_load_json("[]", 2, NULL, 0, "x.json", &t, &err), HX_EFORMAT);
  expect_load_error("\"type\":\"BPE\"", "\"type\":\"WordPiece\"", HX_EUNSUPPORTED, "BPE");
  expect_load_error("\"a b\"", "\"a q\"", HX_EFORMAT, "merge 0");
  expect_load_error("\"a b\"", "\"a b c\"", HX_EFORMAT, "merges[0]");
  expect_load_error("\"a b\"", "17", HX_EFORMAT, "merges[0]");
  expect_load_error("\"ab\":256", "\"ab\":-3", HX_EFORMAT, "vocab entry");
  expect_load_error("\"ab\":256", "\"ab\":99999999", HX_EFORMAT, "vocab entry");
  expect_load_error("\"ab\":256", "\"ab\":255", HX_EFORMAT, "two tokens");
  expect_load_error("{\"type\":\"ByteLevel\"}", "{\"type\":\"WordPiece\"}", HX_EUNSUPPORTED,
                    "decoder");
  expect_load_error("{\"type\":\"NFC\"}", "{\"type\":\"NFKD\"}", HX_EUNSUPPORTED, "NFKD");
  expect_load_error("\"Regex\":\"", "\"Regex\":\"(", HX_EUNSUPPORTED, "regex");
  expect_load_error("\"id\":259", "\"id\":\"x\"", HX_EFORMAT, "added_tokens[0]");
  expect_load_error("\"special\":true", "\"special\":1", HX_EFORMAT, "special");
  expect_load_error("\"content\":\"<think>\"", "\"content\":\"\"", HX_EFORMAT, "content");
  expect_load_error("\"merges\":[", "\"merges\":7,\"m\":[", HX_EFORMAT, "model.merges");
}

static void test_config(void **state) {
  (void)state;
  char *j = small_json(QWEN2_PRE);
  const char cfg[] = "{\"eos_token\":{\"content\":\"<|im_end|>\"},\"pad_token\":\"a\","
                     "\"chat_template\":\"{{ x }}\"}";
  tokenizer *t = NULL;
  hx_err err = {0};
  assert_int_equal(tokenizer_load_json(j, strlen(j), cfg, strlen(cfg), "s", &t, &err), HX_OK);
  assert_int_equal(tokenizer_eos_id(t), ID_IM_END);
  assert_int_equal(tokenizer_pad_id(t), 'a');
  assert_int_equal(tokenizer_bos_id(t), TOKENIZER_ID_NONE);
  assert_false(tokenizer_add_bos(t));
  assert_string_equal(tokenizer_chat_template(t), "{{ x }}");
  tokenizer_free(t);
  const char bad[] = "{\"eos_token\":\"<nope>\"}";
  assert_int_equal(tokenizer_load_json(j, strlen(j), bad, strlen(bad), "s", &t, &err), HX_EFORMAT);
  assert_non_null(strstr(err.msg, "<nope>"));
  free(j);
}

/* Concurrent encodes on one tokenizer give the single-threaded ids. */
typedef struct enc_job {
  tokenizer *t;
  int failures;
} enc_job;

static const char *const THREAD_TEXTS[] = {"abc abc ab", " ax<|im_end|>abc\r\n", "\xe4\xbd\xa0 ab",
                                           "<mask> abc <think>"};

static void *enc_thread(void *p) {
  enc_job *j = p;
  for (int round = 0; round < 300; round++)
    for (size_t k = 0; k < 4; k++) {
      int32_t *a = NULL;
      size_t n = 0;
      hx_err err = {0};
      if (tokenizer_encode(j->t, THREAD_TEXTS[k], strlen(THREAD_TEXTS[k]), true, &a, &n, &err))
        j->failures++;
      int32_t *b = NULL;
      size_t m = 0;
      tokenizer_encode(j->t, THREAD_TEXTS[(k + 1) % 4], strlen(THREAD_TEXTS[(k + 1) % 4]), true, &b,
                       &m, &err);
      /* Re-encode k and compare with the first result. */
      int32_t *c = NULL;
      size_t l = 0;
      tokenizer_encode(j->t, THREAD_TEXTS[k], strlen(THREAD_TEXTS[k]), true, &c, &l, &err);
      if (l != n || memcmp(a, c, n * sizeof *a) != 0)
        j->failures++;
      free(a);
      free(b);
      free(c);
    }
  return NULL;
}

static void test_threads(void **state) {
  (void)state;
  tokenizer *t = small();
  enc_job jobs[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (enc_job){t, 0};
    assert_int_equal(pthread_create(&th[i], NULL, enc_thread, &jobs[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(jobs[i].failures, 0);
  }
  EXPECT(t, "abc abc ab", true, ID_ABC, ' ', ID_ABC, ' ', ID_AB);
  tokenizer_free(t);
}

static bool have(const char *dir) {
  char p[256];
  struct stat st;
  snprintf(p, sizeof p, "%s/tokenizer.json", dir);
  return stat(p, &st) == 0;
}

static void test_real_vocabularies(void **state) {
  (void)state;
  if (!have(".cache/tokenizers/qwen3") || !have(".cache/tokenizers/qwen35")) {
    printf("SKIP part: .cache/tokenizers missing (run scripts/fetch-vocab)\n");
    skip();
  }
  tokenizer *t = NULL;
  hx_err err = {0};
  assert_int_equal(tokenizer_load_path(".cache/tokenizers/qwen3", &t, &err), HX_OK);
  assert_int_equal(tokenizer_vocab_size(t), 151669);
  assert_int_equal(tokenizer_eos_id(t), 151645); /* <|im_end|> */
  assert_int_equal(tokenizer_eot_id(t), 151645);
  assert_int_equal(tokenizer_pad_id(t), 151643);
  assert_int_equal(tokenizer_token_to_id(t, "<think>", 7), 151667);
  assert_int_equal(tokenizer_pretok_kind(t), TOKENIZER_PRETOK_QWEN2);
  assert_non_null(strstr(tokenizer_chat_template(t), "enable_thinking"));
  tokenizer_free(t);
  assert_int_equal(tokenizer_load_path(".cache/tokenizers/qwen35/tokenizer.json", &t, &err), HX_OK);
  assert_int_equal(tokenizer_vocab_size(t), 248077);
  assert_int_equal(tokenizer_token_to_id(t, "<|im_start|>", 12), 248045);
  assert_int_equal(tokenizer_token_to_id(t, "</think>", 8), 248069);
  assert_int_equal(tokenizer_pretok_kind(t), TOKENIZER_PRETOK_QWEN35);
  tokenizer_free(t);
  assert_int_equal(tokenizer_load_path(".cache/tokenizers/nope", &t, &err), HX_ENOTFOUND);
}

/* A GGUF written the way llama.cpp's converter writes Qwen tokenizers
 * (tokens in id order, control = special added, user-defined = other added,
 * merges as "a b") loads to a tokenizer that encodes like tokenizer.json. */
static void test_gguf(void **state) {
  (void)state;
  if (!have(".cache/tokenizers/qwen3")) {
    printf("SKIP part: .cache/tokenizers/qwen3 missing (run scripts/fetch-vocab)\n");
    skip();
  }
  tokenizer *tj = NULL;
  hx_err err = {0};
  assert_int_equal(tokenizer_load_path(".cache/tokenizers/qwen3", &tj, &err), HX_OK);
  size_t n = tokenizer_vocab_size(tj);
  const char **toks = calloc(n, sizeof *toks);
  size_t *lens = calloc(n, sizeof *lens);
  int32_t *types = calloc(n, sizeof *types);
  for (size_t i = 0; i < n; i++) {
    toks[i] = tokenizer_id_to_token(tj, (int32_t)i, &lens[i]);
    assert_non_null(toks[i]);
    types[i] = tokenizer_is_special(tj, (int32_t)i) ? 3
               : tokenizer_is_added(tj, (int32_t)i) ? 4
                                                    : 1;
  }
  FILE *f = fopen(".cache/tokenizers/qwen3/tokenizer.json", "rb");
  assert_non_null(f);
  hx_buf b;
  hx_buf_init(&b, 1 << 26);
  char chunk[65536];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
    hx_buf_append(&b, chunk, got);
  fclose(f);
  json_t *root = hx_json_parse(b.data, b.len, (hx_json_limits){1 << 26, 64}, &err);
  assert_non_null(root);
  const json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
  size_t nm = json_array_size(merges);
  const char **ms = calloc(nm, sizeof *ms);
  char **owned = calloc(nm, sizeof *owned);
  for (size_t i = 0; i < nm; i++) {
    const json_t *m = json_array_get(merges, i);
    if (json_is_string(m))
      ms[i] = json_string_value(m);
    else {
      size_t la = strlen(json_string_value(json_array_get(m, 0)));
      size_t lb = strlen(json_string_value(json_array_get(m, 1)));
      owned[i] = malloc(la + lb + 2);
      snprintf(owned[i], la + lb + 2, "%s %s", json_string_value(json_array_get(m, 0)),
               json_string_value(json_array_get(m, 1)));
      ms[i] = owned[i];
    }
  }
  char path[] = "/tmp/helexa-tok-XXXXXX.gguf";
  int fd = mkstemps(path, 5);
  assert_true(fd >= 0);
  close(fd);
  gguf_writer *w = gguf_writer_create(32);
  assert_int_equal(gguf_writer_set_str(w, "general.architecture", "qwen3", 5), HX_OK);
  assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4), HX_OK);
  assert_int_equal(gguf_writer_set_str(w, "tokenizer.ggml.pre", "qwen2", 5), HX_OK);
  assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, lens, n), HX_OK);
  assert_int_equal(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, n),
                   HX_OK);
  assert_int_equal(gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", ms, NULL, nm), HX_OK);
  assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 151645), HX_OK);
  assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", 151643), HX_OK);
  assert_int_equal(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 151643), HX_OK);
  assert_int_equal(gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false), HX_OK);
  const char *tmpl = tokenizer_chat_template(tj);
  assert_int_equal(gguf_writer_set_str(w, "tokenizer.chat_template", tmpl, strlen(tmpl)), HX_OK);
  assert_int_equal(gguf_writer_open(w, path, &err), HX_OK);
  assert_int_equal(gguf_writer_finish(w, &err), HX_OK);
  gguf_writer_free(w);

  tokenizer *tg = NULL;
  if (tokenizer_load_path(path, &tg, &err))
    fail_msg("%s", err.msg);
  assert_int_equal(tokenizer_vocab_size(tg), n);
  assert_int_equal(tokenizer_eos_id(tg), 151645);
  assert_int_equal(tokenizer_eot_id(tg), 151645);
  assert_int_equal(tokenizer_pad_id(tg), 151643);
  assert_false(tokenizer_add_bos(tg));
  assert_string_equal(tokenizer_chat_template(tg), tmpl);
  assert_int_equal(tokenizer_pretok_kind(tg), TOKENIZER_PRETOK_QWEN2);
  static const char *texts[] = {"Hello world! <|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>",
                                "e\xcc\x81t\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd  \r\n  12345 don't",
                                "def f(x):\n\treturn x**2  # \xf0\x9f\x98\x80\xff"};
  for (size_t k = 0; k < 3; k++)
    for (int sp = 0; sp < 2; sp++) {
      int32_t *a = NULL, *c = NULL;
      size_t na = 0, nc = 0;
      assert_int_equal(tokenizer_encode(tj, texts[k], strlen(texts[k]), sp, &a, &na, &err), HX_OK);
      assert_int_equal(tokenizer_encode(tg, texts[k], strlen(texts[k]), sp, &c, &nc, &err), HX_OK);
      assert_int_equal(na, nc);
      assert_memory_equal(a, c, na * sizeof *a);
      free(a);
      free(c);
    }
  tokenizer_free(tg);
  unlink(path);
  for (size_t i = 0; i < nm; i++)
    free(owned[i]);
  free(owned);
  free(ms);
  json_decref(root);
  hx_buf_free(&b);
  free(toks);
  free(lens);
  free(types);
  tokenizer_free(tj);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_bpe),      cmocka_unit_test(test_empty_and_invalid_utf8),
      cmocka_unit_test(test_special_switch), cmocka_unit_test(test_incremental_decode),
      cmocka_unit_test(test_decode),         cmocka_unit_test(test_ignore_merges),
      cmocka_unit_test(test_regex_limit),    cmocka_unit_test(test_malformed_json),
      cmocka_unit_test(test_config),         cmocka_unit_test(test_real_vocabularies),
      cmocka_unit_test(test_gguf),           cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_tokenizer_conformance.c — our ids against HF `tokenizers` on the real
 * Qwen3 (151k) and Qwen3.5 (248k) vocabularies.
 *
 * tests/data/tokenizer/corpus.jsonl holds >= 10,000 strings
 * (tools/tokenizer/gen_corpus.py); expected_VOCAB.jsonl holds the ids HF
 * produced for each with special-token text parsed and, where different, as
 * plain text, plus whether HF's decode round-trips to NFC(text)
 * (tools/tokenizer/gen_expected.py). The vocabularies are fetched by
 * scripts/fetch-vocab into .cache/tokenizers/; without them the test skips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/json.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"

#define DATA "tests/data/tokenizer/"

typedef struct lines {
  char *buf;
  char **line;
  size_t n;
} lines;

static void lines_load(const char *path, lines *l) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  l->buf = malloc((size_t)sz + 1);
  assert_non_null(l->buf);
  assert_int_equal(fread(l->buf, 1, (size_t)sz, f), (size_t)sz);
  fclose(f);
  l->buf[sz] = '\0';
  size_t cap = 1024;
  l->line = malloc(cap * sizeof *l->line);
  l->n = 0;
  for (char *p = l->buf; *p;) {
    char *nl = strchr(p, '\n');
    if (nl)
      *nl = '\0';
    if (l->n == cap)
      l->line = realloc(l->line, (cap *= 2) * sizeof *l->line);
    l->line[l->n++] = p;
    if (!nl)
      break;
    p = nl + 1;
  }
}

static void lines_free(lines *l) {
  free(l->buf);
  free(l->line);
}

static json_t *parse_line(const char *s) {
  hx_err err = {0};
  json_t *v = hx_json_parse(s, strlen(s), (hx_json_limits){1 << 26, 8}, &err);
  if (!v)
    fail_msg("bad fixture line: %s", err.msg);
  return v;
}

/* The raw bytes of a corpus case (text or hex). Caller frees. */
static char *case_bytes(const json_t *c, size_t *n) {
  const json_t *t = json_object_get(c, "text");
  if (t) {
    *n = json_string_length(t);
    char *b = malloc(*n + 1);
    memcpy(b, json_string_value(t), *n + 1);
    return b;
  }
  const char *hex = json_string_value(json_object_get(c, "hex"));
  assert_non_null(hex);
  size_t h = strlen(hex);
  char *b = malloc(h / 2 + 1);
  for (size_t i = 0; i < h / 2; i++) {
    unsigned v;
    sscanf(hex + 2 * i, "%2x", &v);
    b[i] = (char)v;
  }
  *n = h / 2;
  return b;
}

static bool ids_equal(const json_t *want, const int32_t *got, size_t n) {
  if (json_array_size(want) != n)
    return false;
  for (size_t i = 0; i < n; i++)
    if (json_integer_value(json_array_get(want, i)) != got[i])
      return false;
  return true;
}

static void print_case(const char *what, size_t i, const char *s, size_t n, const json_t *want,
                       const int32_t *got, size_t got_n) {
  fprintf(stderr, "MISMATCH %s case %zu: %.*s\n  want:", what, i, (int)(n > 200 ? 200 : n), s);
  for (size_t k = 0; k < json_array_size(want) && k < 40; k++)
    fprintf(stderr, " %lld", (long long)json_integer_value(json_array_get(want, k)));
  fprintf(stderr, "\n  got: ");
  for (size_t k = 0; k < got_n && k < 40; k++)
    fprintf(stderr, " %d", got[k]);
  fprintf(stderr, "\n");
}

/* The text HF sees: invalid UTF-8 repaired, then NFC. */
static char *nfc_of(const char *s, size_t n, size_t *out_n) {
  char *fixed = malloc(3 * n + 8);
  utf8_state st = {0};
  size_t w = utf8_lossy_feed(&st, (const uint8_t *)s, n, fixed);
  w += utf8_lossy_flush(&st, fixed + w);
  char *nfc = NULL;
  hx_err err = {0};
  assert_int_equal(unicode_nfc(fixed, w, &nfc, out_n, &err), HX_OK);
  free(fixed);
  return nfc;
}

static void run_vocab(const char *vocab) {
  char dir[256], exp_path[256];
  snprintf(dir, sizeof dir, ".cache/tokenizers/%s", vocab);
  snprintf(exp_path, sizeof exp_path, DATA "expected_%s.jsonl", vocab);
  hx_err err = {0};
  tokenizer *tok = NULL;
  if (tokenizer_load_path(dir, &tok, &err))
    fail_msg("load %s: %s", dir, err.msg);
  lines corpus, exp;
  lines_load(DATA "corpus.jsonl", &corpus);
  lines_load(exp_path, &exp);
  assert_int_equal(corpus.n, exp.n);
  assert_true(corpus.n >= 10000);
  size_t ok = 0, bad = 0, plain_checked = 0, rt_checked = 0, rt_bad = 0, stream_bad = 0;
  size_t bytes = 0;
  char *sbuf = malloc(tokenizer_decoder_out_max(tok));
  for (size_t i = 0; i < corpus.n; i++) {
    json_t *c = parse_line(corpus.line[i]), *e = parse_line(exp.line[i]);
    size_t n;
    char *s = case_bytes(c, &n);
    bytes += n;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    assert_int_equal(tokenizer_encode(tok, s, n, true, &ids, &n_ids, &err), HX_OK);
    bool good = ids_equal(json_object_get(e, "ids"), ids, n_ids);
    if (!good && bad < 5)
      print_case(vocab, i, s, n, json_object_get(e, "ids"), ids, n_ids);
    const json_t *plain = json_object_get(e, "plain");
    int32_t *pids = NULL;
    size_t n_pids = 0;
    assert_int_equal(tokenizer_encode(tok, s, n, false, &pids, &n_pids, &err), HX_OK);
    const json_t *pw = plain ? plain : json_object_get(e, "ids");
    if (plain)
      plain_checked++;
    if (!ids_equal(pw, pids, n_pids)) {
      if (good && bad < 5)
        print_case("plain", i, s, n, pw, pids, n_pids);
      good = false;
    }
    good ? ok++ : bad++;

    char *dec = NULL;
    size_t dec_n = 0;
    assert_int_equal(tokenizer_decode(tok, ids, n_ids, false, &dec, &dec_n, &err), HX_OK);
    if (json_integer_value(json_object_get(e, "rt"))) {
      rt_checked++;
      size_t nfc_n;
      char *nfc = nfc_of(s, n, &nfc_n);
      if (nfc_n != dec_n || memcmp(nfc, dec, dec_n) != 0) {
        if (rt_bad < 5)
          fprintf(stderr, "ROUNDTRIP %s case %zu differs\n", vocab, i);
        rt_bad++;
      }
      free(nfc);
    }
    /* Streaming decode gives the same text, token by token. */
    tokenizer_decoder d;
    tokenizer_decoder_init(&d, tok, false);
    size_t at = 0;
    bool same = true;
    for (size_t k = 0; k < n_ids && same; k++) {
      size_t w = 0;
      assert_int_equal(
          tokenizer_decoder_push(&d, ids[k], sbuf, tokenizer_decoder_out_max(tok), &w, &err),
          HX_OK);
      same = at + w <= dec_n && memcmp(dec + at, sbuf, w) == 0;
      at += w;
    }
    size_t w = tokenizer_decoder_flush(&d, sbuf, tokenizer_decoder_out_max(tok));
    same = same && at + w == dec_n && memcmp(dec + at, sbuf, w) == 0;
    stream_bad += !same;
    free(dec);
    free(ids);
    free(pids);
    free(s);
    json_decref(c);
    json_decref(e);
  }
  printf("tokenizer conformance %s: %zu cases (%zu bytes), %zu identical, %zu different; "
         "%zu checked with special text as plain text; decode == NFC(text) checked on %zu, "
         "%zu differ; streaming decode differs on %zu\n",
         vocab, corpus.n, bytes, ok, bad, plain_checked, rt_checked, rt_bad, stream_bad);
  free(sbuf);
  lines_free(&corpus);
  lines_free(&exp);
  tokenizer_free(tok);
  assert_int_equal(bad, 0);
  assert_int_equal(rt_bad, 0);
  assert_int_equal(stream_bad, 0);
}

static bool have(const char *vocab) {
  char p[256];
  struct stat st;
  snprintf(p, sizeof p, ".cache/tokenizers/%s/tokenizer.json", vocab);
  return stat(p, &st) == 0;
}

static void test_qwen3(void **state) {
  (void)state;
  run_vocab("qwen3");
}

static void test_qwen35(void **state) {
  (void)state;
  run_vocab("qwen35");
}

int main(void) {
  bool q3 = have("qwen3"), q35 = have("qwen35");
  if (!q3 && !q35) {
    printf("SKIP: .cache/tokenizers/{qwen3,qwen35}/tokenizer.json missing; run scripts/fetch-vocab "
           "(scripts/install-deps does)\n");
    return 77;
  }
  if (!q3 || !q35)
    printf("SKIP partly: .cache/tokenizers/%s missing; run scripts/fetch-vocab\n",
           q3 ? "qwen35" : "qwen3");
  struct CMUnitTest all[2];
  size_t n = 0;
  if (q3)
    all[n++] = (struct CMUnitTest)cmocka_unit_test(test_qwen3);
  if (q35)
    all[n++] = (struct CMUnitTest)cmocka_unit_test(test_qwen35);
  return _cmocka_run_group_tests("tokenizer_conformance", all, n, NULL, NULL);
}

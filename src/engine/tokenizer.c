/* tokenizer.c — byte-level BPE (see tokenizer.h for the contract).
 *
 * Layout: every id has its vocabulary string (tok_*) and the bytes it
 * decodes to (byt_*) in two blobs. Lookups are open-addressing hash tables:
 * string -> id, and (left id, right id) -> (merge rank, merged id). Added
 * tokens are matched leftmost-longest through a first-byte index.
 *
 * Encoding needs per-call scratch (PCRE2 match data and JIT stack, BPE
 * symbol and heap arrays, a word -> ids cache). Scratch objects are kept on a
 * free list under the tokenizer's mutex, so concurrent callers each own one
 * and the hot path takes the lock only twice per call. */
#include "engine/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "base/buf.h"
#include "base/json.h"
#include "engine/gguf.h"
#include "engine/unicode.h"

enum {
  TK_VALID = 1,
  TK_ADDED = 2,
  TK_SPECIAL = 4,
  TK_CACHE_SLOTS = 1 << 14,       /* word cache entries per scratch */
  TK_CACHE_WORD_MAX = 64,         /* longest word (bytes) that is cached */
  TK_CACHE_ARENA = 1 << 20,       /* bytes for cached words + ids per scratch */
  TK_CONFIG_BYTES_MAX = 16 << 20, /* tokenizer_config.json */
};

static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN35[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| "
    "?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* GPT-2's pattern, used by ByteLevel(use_regex=true). */
static const char PAT_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct tk_added {
  int32_t id;
  char *text; /* what is matched: content, NFC'd for normalized tokens */
  size_t len;
  bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

typedef struct tk_sym { /* one BPE symbol of the word being merged */
  int32_t id;
  int32_t prev, next; /* indices, -1 at the ends */
  uint32_t len;       /* bytes; 0 once merged into its left neighbour */
} tk_sym;

/* Heap entry: (rank << 32 | position), smallest first, so that ties in
 * rank go to the leftmost pair as in HF. The merged id is looked up again
 * when the entry is popped (a rank names exactly one merge). */
typedef uint64_t tk_merge_cand;

typedef struct tk_cache_slot {
  uint64_t hash;
  uint32_t off;   /* word bytes at arena+off, then n_ids int32 ids (aligned) */
  uint16_t len;   /* word bytes; 0 = empty slot */
  uint16_t n_ids; /* ids */
} tk_cache_slot;

typedef struct tk_scratch {
  pcre2_match_data *md;
  pcre2_match_context *mctx;
  pcre2_jit_stack *jit;
  tk_sym *syms;
  size_t syms_cap;
  tk_merge_cand *heap;
  size_t heap_cap;
  tk_cache_slot *cache;
  size_t cache_used;
  uint8_t *arena;
  size_t arena_used;
  struct tk_scratch *next;
} tk_scratch;

typedef struct tk_ids { /* growing output */
  int32_t *v;
  size_t n, cap;
} tk_ids;

struct tokenizer {
  size_t n_ids;
  uint8_t *flags;
  uint32_t *tok_off, *tok_len, *byt_off, *byt_len;
  hx_buf tok_blob, byt_blob;
  size_t token_bytes_max;

  int32_t *map; /* string -> id, open addressing over tok strings */
  size_t map_mask;

  uint64_t *mkey; /* (left << 32 | right) + 1; 0 = empty */
  uint32_t *mrank;
  int32_t *mnew;
  size_t merge_mask;

  int32_t byte_id[256];
  tk_added *added;
  size_t n_added;
  uint32_t *added_order;  /* added indices grouped by first byte, longest first */
  uint32_t added_at[257]; /* group of byte b: added_order[added_at[b] .. added_at[b+1]) */
  bool has_normalized_added, has_raw_added;

  bool nfc, ignore_merges;
  pcre2_code *re;
  tokenizer_pretok pretok;

  int32_t bos, eos, eot, pad;
  bool add_bos;
  char *chat_template;

  pthread_mutex_t mu;
  tk_scratch *free_scratch;
};

/* ---------------------------------------------------------------- tables */

static uint64_t tk_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

static const char *tok_str(const tokenizer *t, int32_t id, size_t *len) {
  *len = t->tok_len[id];
  return t->tok_blob.data + t->tok_off[id];
}

static int32_t map_find(const tokenizer *t, const char *s, size_t n) {
  if (!t->map)
    return TOKENIZER_ID_NONE;
  for (size_t i = tk_hash(s, n) & t->map_mask;; i = (i + 1) & t->map_mask) {
    int32_t id = t->map[i];
    if (id < 0)
      return TOKENIZER_ID_NONE;
    size_t l;
    const char *ts = tok_str(t, id, &l);
    if (l == n && memcmp(ts, s, n) == 0)
      return id;
  }
}

/* Inserts id under its token string; an existing equal string keeps the
 * earlier id. */
static void map_insert(tokenizer *t, int32_t id) {
  size_t n;
  const char *s = tok_str(t, id, &n);
  for (size_t i = tk_hash(s, n) & t->map_mask;; i = (i + 1) & t->map_mask) {
    int32_t o = t->map[i];
    if (o < 0) {
      t->map[i] = id;
      return;
    }
    size_t l;
    const char *os = tok_str(t, o, &l);
    if (l == n && memcmp(os, s, n) == 0)
      return;
  }
}

static inline size_t merge_slot(uint64_t key, size_t mask) {
  return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & mask;
}

static bool merge_find(const tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *new_id) {
  if (!t->mkey)
    return false;
  uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  for (size_t i = merge_slot(key, t->merge_mask);; i = (i + 1) & t->merge_mask) {
    if (t->mkey[i] == 0)
      return false;
    if (t->mkey[i] == key) {
      *rank = t->mrank[i];
      *new_id = t->mnew[i];
      return true;
    }
  }
}

/* Later duplicates overwrite earlier ones, as HF's HashMap collect does. */
static void merge_insert(tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
  uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  for (size_t i = merge_slot(key, t->merge_mask);; i = (i + 1) & t->merge_mask) {
    if (t->mkey[i] == 0 || t->mkey[i] == key) {
      t->mkey[i] = key;
      t->mrank[i] = rank;
      t->mnew[i] = new_id;
      return;
    }
  }
}

static size_t pow2_at_least(size_t n) {
  size_t p = 16;
  while (p < n)
    p <<= 1;
  return p;
}

/* ------------------------------------------------------- building a vocab */

/* A loader fills a tk_build, then tk_finish turns it into a tokenizer. */
typedef struct tk_src_added {
  char *content;
  size_t len;
  int32_t id;
  bool special, lstrip, rstrip, single_word, normalized;
} tk_src_added;

static hx_code tk_alloc_ids(tokenizer *t, size_t n, const char *name, hx_err *err) {
  if (n == 0 || n > TOKENIZER_VOCAB_MAX)
    return hx_err_set(err, HX_EFORMAT, "%s: vocabulary of %zu ids (must be 1..%d)", name, n,
                      TOKENIZER_VOCAB_MAX);
  t->n_ids = n;
  t->flags = calloc(n, 1);
  t->tok_off = calloc(n, sizeof *t->tok_off);
  t->tok_len = calloc(n, sizeof *t->tok_len);
  t->byt_off = calloc(n, sizeof *t->byt_off);
  t->byt_len = calloc(n, sizeof *t->byt_len);
  if (!t->flags || !t->tok_off || !t->tok_len || !t->byt_off || !t->byt_len)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory for %zu ids", name, n);
  return HX_OK;
}

/* Sets the string of id (must be unset). */
static hx_code tk_set_token(tokenizer *t, int32_t id, const char *s, size_t n, const char *name,
                            hx_err *err) {
  HX_ASSERT(id >= 0 && (size_t)id < t->n_ids);
  if (t->flags[id] & TK_VALID)
    return hx_err_set(err, HX_EFORMAT, "%s: id %d is given to two tokens", name, id);
  if (n == 0 || n > TOKENIZER_TOKEN_BYTES_MAX)
    return hx_err_set(err, HX_EFORMAT, "%s: token %d has %zu bytes (must be 1..%d)", name, id, n,
                      TOKENIZER_TOKEN_BYTES_MAX);
  if (utf8_valid_prefix((const uint8_t *)s, n) != n)
    return hx_err_set(err, HX_EFORMAT, "%s: token %d is not valid UTF-8", name, id);
  if (t->tok_blob.len > UINT32_MAX - n)
    return hx_err_set(err, HX_ETOOLARGE, "%s: vocabulary strings exceed 4 GiB", name);
  t->tok_off[id] = (uint32_t)t->tok_blob.len;
  t->tok_len[id] = (uint32_t)n;
  if (hx_buf_append(&t->tok_blob, s, n))
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory for token strings", name);
  t->flags[id] |= TK_VALID;
  return HX_OK;
}

/* The bytes a token decodes to, as HF's ByteLevel decoder computes them: if
 * every character is in the byte-level alphabet, the bytes they stand for;
 * otherwise the token's own UTF-8. */
static hx_code tk_compute_bytes(tokenizer *t, const char *name, hx_err *err) {
  char tmp[TOKENIZER_TOKEN_BYTES_MAX];
  for (size_t id = 0; id < t->n_ids; id++) {
    if (!(t->flags[id] & TK_VALID))
      continue;
    size_t n;
    const uint8_t *s = (const uint8_t *)tok_str(t, (int32_t)id, &n);
    size_t w = 0;
    bool all = true;
    for (size_t i = 0; i < n;) {
      size_t l;
      uint32_t cp = utf8_decode_valid(s + i, n - i, &l);
      int b = bytelevel_byte_of_char(cp);
      if (b < 0) {
        all = false;
        break;
      }
      tmp[w++] = (char)b;
      i += l;
    }
    const char *src = all ? tmp : (const char *)s;
    size_t len = all ? w : n;
    if (t->byt_blob.len > UINT32_MAX - len)
      return hx_err_set(err, HX_ETOOLARGE, "%s: vocabulary bytes exceed 4 GiB", name);
    t->byt_off[id] = (uint32_t)t->byt_blob.len;
    t->byt_len[id] = (uint32_t)len;
    if (hx_buf_append(&t->byt_blob, src, len))
      return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
    if (len > t->token_bytes_max)
      t->token_bytes_max = len;
  }
  return HX_OK;
}

static hx_code tk_build_map(tokenizer *t, const char *name, hx_err *err) {
  size_t cap = pow2_at_least(t->n_ids * 2);
  t->map = malloc(cap * sizeof *t->map);
  if (!t->map)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  memset(t->map, 0xFF, cap * sizeof *t->map);
  t->map_mask = cap - 1;
  /* Added tokens first so that their content wins over an equal model string. */
  for (size_t i = 0; i < t->n_added; i++)
    map_insert(t, t->added[i].id);
  for (size_t id = 0; id < t->n_ids; id++)
    if ((t->flags[id] & TK_VALID) && !(t->flags[id] & TK_ADDED))
      map_insert(t, (int32_t)id);
  for (int b = 0; b < 256; b++) {
    char s[4];
    size_t l = utf8_encode(bytelevel_char_of_byte((uint8_t)b), s);
    int32_t id = map_find(t, s, l);
    /* A byte without a token is dropped from words, as HF's BPE does when
     * the vocabulary has no unk token. */
    t->byte_id[b] = (id >= 0 && !(t->flags[id] & TK_ADDED)) ? id : TOKENIZER_ID_NONE;
  }
  return HX_OK;
}

static hx_code tk_alloc_merges(tokenizer *t, size_t n, const char *name, hx_err *err) {
  /* Every merge yields a distinct vocabulary token in real files; allow
   * duplicates up to twice the ids, refuse more (bounds the table). */
  if (n > 2 * t->n_ids)
    return hx_err_set(err, HX_ETOOLARGE, "%s: %zu merges for %zu ids (limit %zu)", name, n,
                      t->n_ids, 2 * t->n_ids);
  size_t cap = pow2_at_least(n * 2 + 1);
  t->mkey = calloc(cap, sizeof *t->mkey);
  t->mrank = malloc(cap * sizeof *t->mrank);
  t->mnew = malloc(cap * sizeof *t->mnew);
  if (!t->mkey || !t->mrank || !t->mnew)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory for %zu merges", name, n);
  t->merge_mask = cap - 1;
  return HX_OK;
}

/* Adds the merge "a b" of rank `rank`. */
static hx_code tk_add_merge(tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                            uint32_t rank, const char *name, hx_err *err) {
  int32_t ia = map_find(t, a, an), ib = map_find(t, b, bn);
  if (ia < 0 || ib < 0)
    return hx_err_set(err, HX_EFORMAT, "%s: merge %u: \"%.*s\" is not in the vocabulary", name,
                      rank, (int)(ia < 0 ? an : bn), ia < 0 ? a : b);
  if (an + bn > TOKENIZER_TOKEN_BYTES_MAX)
    return hx_err_set(err, HX_EFORMAT, "%s: merge %u: result is too long", name, rank);
  char cat[TOKENIZER_TOKEN_BYTES_MAX];
  memcpy(cat, a, an);
  memcpy(cat + an, b, bn);
  int32_t in = map_find(t, cat, an + bn);
  if (in < 0)
    return hx_err_set(err, HX_EFORMAT, "%s: merge %u: \"%.*s\" is not in the vocabulary", name,
                      rank, (int)(an + bn), cat);
  merge_insert(t, ia, ib, rank, in);
  return HX_OK;
}

static int added_cmp(const void *pa, const void *pb, void *ctx) {
  const tk_added *ad = ctx;
  const tk_added *a = &ad[*(const uint32_t *)pa], *b = &ad[*(const uint32_t *)pb];
  uint8_t fa = (uint8_t)a->text[0], fb = (uint8_t)b->text[0];
  if (fa != fb)
    return fa < fb ? -1 : 1;
  if (a->len != b->len)
    return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

/* Installs added tokens: ids, flags, matching index. src[i].content is
 * taken over (freed by the tokenizer). */
static hx_code tk_set_added(tokenizer *t, tk_src_added *src, size_t n, const char *name,
                            hx_err *err) {
  t->added = calloc(n ? n : 1, sizeof *t->added);
  t->added_order = calloc(n ? n : 1, sizeof *t->added_order);
  if (!t->added || !t->added_order)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  for (size_t i = 0; i < n; i++) {
    tk_src_added *s = &src[i];
    tk_added *a = &t->added[t->n_added];
    if (s->id < 0 || (size_t)s->id >= t->n_ids)
      return hx_err_set(err, HX_EFORMAT, "%s: added token %zu: id %d out of range", name, i, s->id);
    if (s->len == 0)
      return hx_err_set(err, HX_EFORMAT, "%s: added token %d has empty content", name, s->id);
    if (t->flags[s->id] & TK_VALID) {
      size_t l;
      const char *cur = tok_str(t, s->id, &l);
      if (l != s->len || memcmp(cur, s->content, l) != 0)
        return hx_err_set(err, HX_EFORMAT, "%s: added token \"%.*s\" reuses id %d of \"%.*s\"",
                          name, (int)s->len, s->content, s->id, (int)l, cur);
    } else {
      hx_code rc = tk_set_token(t, s->id, s->content, s->len, name, err);
      if (rc)
        return rc;
    }
    t->flags[s->id] |= TK_ADDED | (s->special ? TK_SPECIAL : 0);
    a->id = s->id;
    a->special = s->special;
    a->lstrip = s->lstrip;
    a->rstrip = s->rstrip;
    a->single_word = s->single_word;
    a->normalized = s->normalized && t->nfc;
    if (a->normalized && unicode_nfc_may_change((const uint8_t *)s->content, s->len)) {
      hx_code rc = unicode_nfc(s->content, s->len, &a->text, &a->len, err);
      if (rc)
        return hx_err_wrap(err, "%s: added token %d", name, s->id);
      free(s->content);
    } else {
      a->text = s->content;
      a->len = s->len;
    }
    s->content = NULL;
    if (a->len == 0)
      return hx_err_set(err, HX_EFORMAT, "%s: added token %d normalizes to nothing", name, a->id);
    if (a->normalized)
      t->has_normalized_added = true;
    else
      t->has_raw_added = true;
    t->added_order[t->n_added] = (uint32_t)t->n_added;
    t->n_added++;
  }
  qsort_r(t->added_order, t->n_added, sizeof *t->added_order, added_cmp, t->added);
  size_t k = 0;
  for (int b = 0; b < 256; b++) {
    t->added_at[b] = (uint32_t)k;
    while (k < t->n_added && (uint8_t)t->added[t->added_order[k]].text[0] == b)
      k++;
  }
  t->added_at[256] = (uint32_t)k;
  return HX_OK;
}

/* HF compiles the pattern with Oniguruma, whose Unicode \\s is exactly the
 * White_Space property; PCRE2's UCP \\s also takes U+180E (through \\h). So
 * \\s and \\S are spelled out as White_Space classes before compiling. */
#define ONIG_WS                                                                                    \
  "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"            \
  "\\x{205F}\\x{3000}"

static hx_code onig_whitespace(const char *p, size_t n, hx_buf *out) {
  bool in_class = false;
  hx_code rc = HX_OK;
  for (size_t i = 0; i < n && !rc; i++) {
    char c = p[i];
    if (c == '\\' && i + 1 < n) {
      char e = p[i + 1];
      i++;
      if (e == 's')
        rc = hx_buf_append_str(out, in_class ? ONIG_WS : "[" ONIG_WS "]");
      else if (e == 'S' && !in_class)
        rc = hx_buf_append_str(out, "[^" ONIG_WS "]");
      else {
        rc = hx_buf_append_char(out, '\\');
        if (!rc)
          rc = hx_buf_append_char(out, e);
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      rc = hx_buf_append_char(out, c);
      /* a leading ^ or ] belongs to the class syntax */
      if (!rc && i + 1 < n && p[i + 1] == '^')
        rc = hx_buf_append_char(out, p[++i]);
      if (!rc && i + 1 < n && p[i + 1] == ']')
        rc = hx_buf_append_char(out, p[++i]);
      continue;
    }
    if (c == ']' && in_class)
      in_class = false;
    rc = hx_buf_append_char(out, c);
  }
  return rc;
}

static hx_code tk_compile_regex(tokenizer *t, const char *pat, size_t len, const char *name,
                                hx_err *err) {
  if (len == sizeof PAT_QWEN2 - 1 && memcmp(pat, PAT_QWEN2, len) == 0)
    t->pretok = TOKENIZER_PRETOK_QWEN2;
  else if (len == sizeof PAT_QWEN35 - 1 && memcmp(pat, PAT_QWEN35, len) == 0)
    t->pretok = TOKENIZER_PRETOK_QWEN35;
  else
    t->pretok = TOKENIZER_PRETOK_CUSTOM;
  hx_buf fixed;
  hx_buf_init(&fixed, len * 64 + 64);
  if (onig_whitespace(pat, len, &fixed)) {
    hx_buf_free(&fixed);
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  }
  int ec;
  PCRE2_SIZE eo;
  t->re = pcre2_compile((PCRE2_SPTR)fixed.data, fixed.len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
  hx_buf_free(&fixed);
  if (!t->re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ec, msg, sizeof msg);
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: pre-tokenizer regex, offset %zu: %s", name,
                      (size_t)eo, (const char *)msg);
  }
  pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if unavailable */
  return HX_OK;
}

static tokenizer *tk_new(void) {
  tokenizer *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  hx_buf_init(&t->tok_blob, (size_t)UINT32_MAX);
  hx_buf_init(&t->byt_blob, (size_t)UINT32_MAX);
  t->bos = t->eos = t->eot = t->pad = TOKENIZER_ID_NONE;
  pthread_mutex_init(&t->mu, NULL);
  return t;
}

static void scratch_free(tk_scratch *s) {
  if (!s)
    return;
  pcre2_match_data_free(s->md);
  pcre2_match_context_free(s->mctx);
  pcre2_jit_stack_free(s->jit);
  free(s->syms);
  free(s->heap);
  free(s->cache);
  free(s->arena);
  free(s);
}

void tokenizer_free(tokenizer *t) {
  if (!t)
    return;
  for (tk_scratch *s = t->free_scratch, *n; s; s = n) {
    n = s->next;
    scratch_free(s);
  }
  pthread_mutex_destroy(&t->mu);
  for (size_t i = 0; i < t->n_added; i++)
    free(t->added[i].text);
  free(t->added);
  free(t->added_order);
  free(t->flags);
  free(t->tok_off);
  free(t->tok_len);
  free(t->byt_off);
  free(t->byt_len);
  hx_buf_free(&t->tok_blob);
  hx_buf_free(&t->byt_blob);
  free(t->map);
  free(t->mkey);
  free(t->mrank);
  free(t->mnew);
  pcre2_code_free(t->re);
  free(t->chat_template);
  free(t);
}

/* Common end of loading: bytes, special ids. */
static hx_code tk_finish(tokenizer *t, const char *eos, size_t eos_len, const char *name,
                         hx_err *err) {
  hx_code rc = tk_compute_bytes(t, name, err);
  if (rc)
    return rc;
  if (eos && t->eos < 0) {
    t->eos = map_find(t, eos, eos_len);
    if (t->eos < 0)
      return hx_err_set(err, HX_EFORMAT, "%s: eos_token \"%.*s\" is not in the vocabulary", name,
                        (int)eos_len, eos);
  }
  int32_t im_end = map_find(t, "<|im_end|>", 10);
  t->eot = im_end >= 0 ? im_end : t->eos;
  if (t->eos < 0)
    t->eos = map_find(t, "<|endoftext|>", 13);
  return HX_OK;
}

/* ------------------------------------------------------- tokenizer.json */

static hx_code read_file_all(const char *path, size_t max, char **out, size_t *len, hx_err *err) {
  *out = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return hx_err_set(err, HX_EIO, "%s: not a regular file", path);
  }
  if ((uint64_t)st.st_size > max) {
    fclose(f);
    return hx_err_set(err, HX_ETOOLARGE, "%s: %lld bytes exceeds the limit of %zu", path,
                      (long long)st.st_size, max);
  }
  size_t n = (size_t)st.st_size;
  char *buf = malloc(n + 1);
  if (!buf) {
    fclose(f);
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", path);
  }
  size_t got = fread(buf, 1, n, f);
  fclose(f);
  if (got != n) {
    free(buf);
    return hx_err_set(err, HX_EIO, "%s: short read", path);
  }
  buf[n] = '\0';
  *out = buf;
  *len = n;
  return HX_OK;
}

/* A string field of an object that may be a string or {"content": string}
 * (tokenizer_config.json writes special tokens both ways). */
static bool json_token_text(const json_t *v, const char **s, size_t *n) {
  if (json_is_object(v))
    v = json_object_get(v, "content");
  if (!json_is_string(v))
    return false;
  *s = json_string_value(v);
  *n = json_string_length(v);
  return true;
}

static hx_code json_bool_field(const json_t *o, const char *key, bool *out, const char *what,
                               hx_err *err) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v))
    return HX_OK;
  if (!json_is_boolean(v))
    return hx_err_set(err, HX_EFORMAT, "%s: \"%s\" must be a boolean", what, key);
  *out = json_is_true(v);
  return HX_OK;
}

static hx_code load_normalizer(tokenizer *t, const json_t *n, const char *name, hx_err *err) {
  if (!n || json_is_null(n))
    return HX_OK;
  const char *type = json_string_value(json_object_get(n, "type"));
  if (!type)
    return hx_err_set(err, HX_EFORMAT, "%s: normalizer has no \"type\"", name);
  if (strcmp(type, "NFC") == 0) {
    t->nfc = true;
    return HX_OK;
  }
  if (strcmp(type, "Sequence") == 0) {
    const json_t *arr = json_object_get(n, "normalizers");
    if (!json_is_array(arr))
      return hx_err_set(err, HX_EFORMAT, "%s: normalizer Sequence needs \"normalizers\"", name);
    size_t i;
    const json_t *e;
    json_array_foreach(arr, i, e) {
      hx_code rc = load_normalizer(t, e, name, err);
      if (rc)
        return rc;
    }
    return HX_OK;
  }
  return hx_err_set(err, HX_EUNSUPPORTED, "%s: normalizer \"%s\" is not supported (only NFC)", name,
                    type);
}

static hx_code load_pretok(tokenizer *t, const json_t *p, const char *name, hx_err *err) {
  const char *type = p ? json_string_value(json_object_get(p, "type")) : NULL;
  if (!type)
    return hx_err_set(err, HX_EFORMAT, "%s: pre_tokenizer missing or without \"type\"", name);
  if (strcmp(type, "Sequence") == 0) {
    const json_t *arr = json_object_get(p, "pretokenizers");
    if (!json_is_array(arr))
      return hx_err_set(err, HX_EFORMAT, "%s: pre_tokenizer Sequence needs \"pretokenizers\"",
                        name);
    size_t i;
    const json_t *e;
    json_array_foreach(arr, i, e) {
      hx_code rc = load_pretok(t, e, name, err);
      if (rc)
        return rc;
    }
    return HX_OK;
  }
  if (strcmp(type, "Split") == 0) {
    const json_t *pat = json_object_get(json_object_get(p, "pattern"), "Regex");
    const char *beh = json_string_value(json_object_get(p, "behavior"));
    if (!json_is_string(pat))
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: Split pre-tokenizer needs a \"Regex\" pattern",
                        name);
    if (!beh || strcmp(beh, "Isolated") != 0 || json_is_true(json_object_get(p, "invert")))
      return hx_err_set(err, HX_EUNSUPPORTED,
                        "%s: only Split with behavior Isolated, invert false is supported", name);
    if (t->re)
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: more than one splitting pre-tokenizer", name);
    return tk_compile_regex(t, json_string_value(pat), json_string_length(pat), name, err);
  }
  if (strcmp(type, "ByteLevel") == 0) {
    if (json_is_true(json_object_get(p, "add_prefix_space")))
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: ByteLevel add_prefix_space is not supported",
                        name);
    const json_t *ur = json_object_get(p, "use_regex");
    if (!ur || json_is_true(ur)) {
      if (t->re)
        return hx_err_set(err, HX_EUNSUPPORTED, "%s: more than one splitting pre-tokenizer", name);
      return tk_compile_regex(t, PAT_GPT2, sizeof PAT_GPT2 - 1, name, err);
    }
    return HX_OK;
  }
  return hx_err_set(err, HX_EUNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported", name, type);
}

static hx_code load_model(tokenizer *t, const json_t *m, const json_t *added, const char *name,
                          hx_err *err) {
  const char *type = json_string_value(json_object_get(m, "type"));
  if (!json_is_object(m) || !type || strcmp(type, "BPE") != 0)
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: model must be of type \"BPE\"", name);
  const json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
  if (!json_is_object(vocab))
    return hx_err_set(err, HX_EFORMAT, "%s: model.vocab must be an object", name);
  if (!json_is_array(merges))
    return hx_err_set(err, HX_EFORMAT, "%s: model.merges must be an array", name);
  if (json_is_true(json_object_get(m, "byte_fallback")))
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: BPE byte_fallback is not supported", name);
  const json_t *dropout = json_object_get(m, "dropout");
  if (dropout && !json_is_null(dropout))
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: BPE dropout is not supported", name);
  const char *fields[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (int i = 0; i < 2; i++) {
    const json_t *v = json_object_get(m, fields[i]);
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
      return hx_err_set(err, HX_EUNSUPPORTED, "%s: BPE %s is not supported", name, fields[i]);
  }
  hx_code rc = json_bool_field(m, "ignore_merges", &t->ignore_merges, name, err);
  if (rc)
    return rc;
  const json_t *unk = json_object_get(m, "unk_token");
  if (unk && !json_is_null(unk))
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: BPE unk_token is not supported", name);

  /* Ids: max over vocab and added tokens. */
  int64_t max_id = -1;
  const char *key;
  const json_t *v;
  json_object_foreach((json_t *)vocab, key, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) >= TOKENIZER_VOCAB_MAX)
      return hx_err_set(err, HX_EFORMAT, "%s: vocab entry \"%.64s\" needs an id in [0, %d)", name,
                        key, TOKENIZER_VOCAB_MAX);
    if (json_integer_value(v) > max_id)
      max_id = json_integer_value(v);
  }
  size_t i;
  const json_t *e;
  if (added && !json_is_array(added))
    return hx_err_set(err, HX_EFORMAT, "%s: added_tokens must be an array", name);
  json_array_foreach(added, i, e) {
    const json_t *id = json_object_get(e, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 ||
        json_integer_value(id) >= TOKENIZER_VOCAB_MAX)
      return hx_err_set(err, HX_EFORMAT, "%s: added_tokens[%zu] needs an id in [0, %d)", name, i,
                        TOKENIZER_VOCAB_MAX);
    if (json_integer_value(id) > max_id)
      max_id = json_integer_value(id);
  }
  rc = tk_alloc_ids(t, (size_t)(max_id + 1), name, err);
  if (rc)
    return rc;
  json_object_foreach((json_t *)vocab, key, v) {
    rc = tk_set_token(t, (int32_t)json_integer_value(v), key, strlen(key), name, err);
    if (rc)
      return rc;
  }

  /* Added tokens (tokenizer.json's list is authoritative). */
  size_t n_added = added ? json_array_size(added) : 0;
  tk_src_added *src = calloc(n_added ? n_added : 1, sizeof *src);
  if (!src)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  json_array_foreach(added, i, e) {
    const json_t *c = json_object_get(e, "content");
    tk_src_added *s = &src[i];
    if (!json_is_string(c)) {
      rc = hx_err_set(err, HX_EFORMAT, "%s: added_tokens[%zu].content must be a string", name, i);
      goto out;
    }
    s->len = json_string_length(c);
    s->content = malloc(s->len + 1);
    if (!s->content) {
      rc = hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
      goto out;
    }
    memcpy(s->content, json_string_value(c), s->len + 1);
    s->id = (int32_t)json_integer_value(json_object_get(e, "id"));
    s->normalized = true; /* HF's default for added tokens */
    char what[96];
    snprintf(what, sizeof what, "%s: added_tokens[%zu]", name, i);
    if ((rc = json_bool_field(e, "special", &s->special, what, err)) ||
        (rc = json_bool_field(e, "lstrip", &s->lstrip, what, err)) ||
        (rc = json_bool_field(e, "rstrip", &s->rstrip, what, err)) ||
        (rc = json_bool_field(e, "single_word", &s->single_word, what, err)) ||
        (rc = json_bool_field(e, "normalized", &s->normalized, what, err)))
      goto out;
    if (s->len == 0 || s->len > TOKENIZER_TOKEN_BYTES_MAX) {
      rc = hx_err_set(err, HX_EFORMAT, "%s: content must have 1..%d bytes", what,
                      TOKENIZER_TOKEN_BYTES_MAX);
      goto out;
    }
  }
  rc = tk_set_added(t, src, n_added, name, err);
  if (rc)
    goto out;
  rc = tk_build_map(t, name, err);
  if (rc)
    goto out;

  rc = tk_alloc_merges(t, json_array_size(merges), name, err);
  if (rc)
    goto out;
  json_array_foreach(merges, i, e) {
    const char *a, *b;
    size_t an, bn;
    if (json_is_string(e)) {
      const char *s = json_string_value(e);
      size_t n = json_string_length(e);
      const char *sp = memchr(s, ' ', n);
      if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) {
        rc = hx_err_set(err, HX_EFORMAT, "%s: merges[%zu] \"%.64s\" is not \"left right\"", name, i,
                        s);
        goto out;
      }
      a = s, an = (size_t)(sp - s), b = sp + 1, bn = n - an - 1;
    } else if (json_is_array(e) && json_array_size(e) == 2 &&
               json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
      a = json_string_value(json_array_get(e, 0));
      an = json_string_length(json_array_get(e, 0));
      b = json_string_value(json_array_get(e, 1));
      bn = json_string_length(json_array_get(e, 1));
    } else {
      rc =
          hx_err_set(err, HX_EFORMAT, "%s: merges[%zu] must be \"a b\" or [\"a\", \"b\"]", name, i);
      goto out;
    }
    rc = tk_add_merge(t, a, an, b, bn, (uint32_t)i, name, err);
    if (rc)
      goto out;
  }
out:
  for (size_t k = 0; k < n_added; k++)
    free(src[k].content);
  free(src);
  return rc;
}

static hx_code load_config(tokenizer *t, const char *cfg, size_t len, const char **eos,
                           size_t *eos_len, json_t **keep, const char *name, hx_err *err) {
  *keep = NULL;
  if (!cfg)
    return HX_OK;
  hx_err e2 = {0};
  json_t *c = hx_json_parse(cfg, len, (hx_json_limits){TOKENIZER_JSON_BYTES_MAX, 64}, &e2);
  if (!c)
    return hx_err_set(err, HX_EFORMAT, "%s: tokenizer_config.json: %s", name, e2.msg);
  *keep = c;
  if (!json_is_object(c))
    return hx_err_set(err, HX_EFORMAT, "%s: tokenizer_config.json must be an object", name);
  const json_t *ct = json_object_get(c, "chat_template");
  const char *tmpl = NULL;
  if (json_is_string(ct))
    tmpl = json_string_value(ct);
  else if (json_is_array(ct)) { /* [{"name": "default", "template": ...}, ...] */
    size_t i;
    const json_t *e;
    json_array_foreach(ct, i, e) {
      const char *n = json_string_value(json_object_get(e, "name"));
      if (n && strcmp(n, "default") == 0)
        tmpl = json_string_value(json_object_get(e, "template"));
    }
  }
  if (tmpl && !(t->chat_template = strdup(tmpl)))
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  const char *s;
  size_t n;
  if (json_token_text(json_object_get(c, "eos_token"), &s, &n)) {
    *eos = s;
    *eos_len = n;
  }
  if (json_token_text(json_object_get(c, "bos_token"), &s, &n))
    t->bos = map_find(t, s, n);
  if (json_token_text(json_object_get(c, "pad_token"), &s, &n))
    t->pad = map_find(t, s, n);
  const json_t *ab = json_object_get(c, "add_bos_token");
  t->add_bos = json_is_true(ab) && t->bos >= 0;
  return HX_OK;
}

hx_code tokenizer_load_json(const char *tj, size_t tj_len, const char *cfg, size_t cfg_len,
                            const char *name, tokenizer **out, hx_err *err) {
  *out = NULL;
  if (!name)
    name = "tokenizer.json";
  hx_err e2 = {0};
  json_t *root = hx_json_parse(tj, tj_len, (hx_json_limits){TOKENIZER_JSON_BYTES_MAX, 64}, &e2);
  if (!root)
    return hx_err_set(err, e2.code == HX_ETOOLARGE ? HX_ETOOLARGE : HX_EFORMAT, "%s: %s", name,
                      e2.msg);
  tokenizer *t = tk_new();
  json_t *cj = NULL;
  hx_code rc = HX_OK;
  if (!t) {
    rc = hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
    goto done;
  }
  if (!json_is_object(root)) {
    rc = hx_err_set(err, HX_EFORMAT, "%s: top level must be an object", name);
    goto done;
  }
  const char *dec = json_string_value(json_object_get(json_object_get(root, "decoder"), "type"));
  if (!dec || strcmp(dec, "ByteLevel") != 0) {
    rc = hx_err_set(err, HX_EUNSUPPORTED, "%s: decoder must be ByteLevel", name);
    goto done;
  }
  if ((rc = load_normalizer(t, json_object_get(root, "normalizer"), name, err)) ||
      (rc = load_pretok(t, json_object_get(root, "pre_tokenizer"), name, err)))
    goto done;
  if (!t->re) {
    rc = hx_err_set(err, HX_EUNSUPPORTED, "%s: no splitting pre-tokenizer", name);
    goto done;
  }
  if ((rc = load_model(t, json_object_get(root, "model"), json_object_get(root, "added_tokens"),
                       name, err)))
    goto done;
  const char *eos = NULL;
  size_t eos_len = 0;
  if ((rc = load_config(t, cfg, cfg_len, &eos, &eos_len, &cj, name, err)))
    goto done;
  rc = tk_finish(t, eos, eos_len, name, err);
done:
  json_decref(cj);
  json_decref(root);
  if (rc) {
    tokenizer_free(t);
    return rc;
  }
  *out = t;
  return HX_OK;
}

/* ------------------------------------------------------------------ GGUF */

hx_code tokenizer_load_gguf(const struct gguf_file *g, tokenizer **out, hx_err *err) {
  *out = NULL;
  const char *name = gguf_name(g);
  hx_slice model = {0}, pre = {0};
  hx_code rc = gguf_get_str(g, "tokenizer.ggml.model", true, &model, err);
  if (rc)
    return rc;
  if (!hx_slice_eq_cstr(model, "gpt2"))
    return hx_err_set(err, HX_EUNSUPPORTED, "%s: tokenizer.ggml.model \"%.*s\" (only gpt2 BPE)",
                      name, (int)model.len, model.ptr);
  if ((rc = gguf_get_str(g, "tokenizer.ggml.pre", false, &pre, err)))
    return rc;
  const gguf_value *toks = NULL, *types = NULL, *merges = NULL;
  if ((rc = gguf_get_arr(g, "tokenizer.ggml.tokens", true, GGUF_TYPE_STRING, &toks, err)) ||
      (rc = gguf_get_arr(g, "tokenizer.ggml.token_type", false, GGUF_TYPE_COUNT, &types, err)) ||
      (rc = gguf_get_arr(g, "tokenizer.ggml.merges", true, GGUF_TYPE_STRING, &merges, err)))
    return rc;
  uint64_t n = toks->v.arr.n;
  if (types && (types->v.arr.n != n || gguf_type_size(types->v.arr.elem_type) == 0))
    return hx_err_set(err, HX_EFORMAT, "%s: tokenizer.ggml.token_type must be %llu integers", name,
                      (unsigned long long)n);
  tokenizer *t = tk_new();
  if (!t)
    return hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
  tk_src_added *src = NULL;
  size_t n_src = 0;
  t->nfc = true; /* llama.cpp's qwen2/qwen35 pre-tokenizers: HF files declare NFC */
  const char *pat = PAT_QWEN2;
  if (hx_slice_eq_cstr(pre, "qwen35"))
    pat = PAT_QWEN35;
  else if (pre.len && !hx_slice_eq_cstr(pre, "qwen2")) {
    rc = hx_err_set(err, HX_EUNSUPPORTED, "%s: tokenizer.ggml.pre \"%.*s\" (qwen2, qwen35)", name,
                    (int)pre.len, pre.ptr);
    goto done;
  }
  if ((rc = tk_compile_regex(t, pat, strlen(pat), name, err)) ||
      (rc = tk_alloc_ids(t, (size_t)n, name, err)))
    goto done;
  src = calloc((size_t)n, sizeof *src);
  if (!src) {
    rc = hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
    goto done;
  }
  for (uint64_t i = 0; i < n; i++) {
    hx_slice s = gguf_arr_str(toks, i);
    int64_t ty = types ? gguf_arr_int(types, i) : 1;
    if (ty == 3 || ty == 4) { /* control, user-defined: added tokens */
      tk_src_added *a = &src[n_src++];
      a->content = malloc(s.len + 1);
      if (!a->content) {
        rc = hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
        goto done;
      }
      memcpy(a->content, s.ptr, s.len);
      a->content[s.len] = '\0';
      a->len = s.len;
      a->id = (int32_t)i;
      a->special = ty == 3;
      continue;
    }
    if (ty == 5 && s.len == 0) /* unused slot */
      continue;
    if ((rc = tk_set_token(t, (int32_t)i, s.ptr, s.len, name, err)))
      goto done;
  }
  if ((rc = tk_set_added(t, src, n_src, name, err)) || (rc = tk_build_map(t, name, err)) ||
      (rc = tk_alloc_merges(t, (size_t)merges->v.arr.n, name, err)))
    goto done;
  for (uint64_t i = 0; i < merges->v.arr.n; i++) {
    hx_slice s = gguf_arr_str(merges, i);
    const char *sp = s.len ? memchr(s.ptr, ' ', s.len) : NULL;
    if (!sp || memchr(sp + 1, ' ', s.len - (size_t)(sp + 1 - s.ptr))) {
      rc = hx_err_set(err, HX_EFORMAT, "%s: tokenizer.ggml.merges[%llu] is not \"left right\"",
                      name, (unsigned long long)i);
      goto done;
    }
    size_t an = (size_t)(sp - s.ptr);
    if ((rc = tk_add_merge(t, s.ptr, an, sp + 1, s.len - an - 1, (uint32_t)i, name, err)))
      goto done;
  }
  int64_t id = -1;
  const char *keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                        "tokenizer.ggml.padding_token_id"};
  int32_t *dst[] = {&t->bos, &t->eos, &t->pad};
  for (int k = 0; k < 3; k++) {
    id = -1;
    if ((rc = gguf_get_int(g, keys[k], false, 0, (int64_t)n - 1, &id, err)))
      goto done;
    *dst[k] = (int32_t)id;
  }
  bool add_bos = false;
  if ((rc = gguf_get_bool(g, "tokenizer.ggml.add_bos_token", false, &add_bos, err)))
    goto done;
  t->add_bos = add_bos && t->bos >= 0;
  hx_slice tmpl = {0};
  if ((rc = gguf_get_str(g, "tokenizer.chat_template", false, &tmpl, err)))
    goto done;
  if (tmpl.len) {
    if (!(t->chat_template = malloc(tmpl.len + 1))) {
      rc = hx_err_set(err, HX_ENOMEM, "%s: out of memory", name);
      goto done;
    }
    memcpy(t->chat_template, tmpl.ptr, tmpl.len);
    t->chat_template[tmpl.len] = '\0';
  }
  rc = tk_finish(t, NULL, 0, name, err);
done:
  for (size_t k = 0; k < n_src; k++)
    free(src[k].content);
  free(src);
  if (rc) {
    tokenizer_free(t);
    return rc;
  }
  *out = t;
  return HX_OK;
}

/* ------------------------------------------------------------- by path */

hx_code tokenizer_load_path(const char *path, tokenizer **out, hx_err *err) {
  *out = NULL;
  struct stat st;
  if (stat(path, &st) != 0)
    return hx_err_set(err, errno == ENOENT ? HX_ENOTFOUND : HX_EIO, "%s: %s", path,
                      strerror(errno));
  size_t plen = strlen(path);
  if (S_ISREG(st.st_mode) && plen >= 5 && strcmp(path + plen - 5, ".gguf") == 0) {
    gguf_file *g = NULL;
    hx_code rc = gguf_open(path, &g, err);
    if (rc)
      return rc;
    rc = tokenizer_load_gguf(g, out, err);
    gguf_close(g);
    return rc;
  }
  char dir[4096], tj_path[4200], cfg_path[4200];
  if (S_ISDIR(st.st_mode)) {
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(tj_path, sizeof tj_path, "%s/tokenizer.json", dir);
  } else {
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
      *slash = '\0';
    else
      snprintf(dir, sizeof dir, ".");
    snprintf(tj_path, sizeof tj_path, "%s", path);
  }
  snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
  char *tj = NULL, *cfg = NULL;
  size_t tj_len = 0, cfg_len = 0;
  hx_code rc = read_file_all(tj_path, TOKENIZER_JSON_BYTES_MAX, &tj, &tj_len, err);
  if (rc)
    return rc;
  hx_err e2 = {0};
  rc = read_file_all(cfg_path, TK_CONFIG_BYTES_MAX, &cfg, &cfg_len, &e2);
  if (rc && rc != HX_ENOTFOUND) {
    free(tj);
    if (err)
      *err = e2;
    return rc;
  }
  rc = tokenizer_load_json(tj, tj_len, cfg, cfg_len, tj_path, out, err);
  free(tj);
  free(cfg);
  return rc;
}

/* ---------------------------------------------------------- vocabulary */

size_t tokenizer_vocab_size(const tokenizer *t) { return t->n_ids; }

int32_t tokenizer_token_to_id(const tokenizer *t, const char *s, size_t n) {
  return map_find(t, s, n);
}

static bool id_ok(const tokenizer *t, int32_t id) {
  return id >= 0 && (size_t)id < t->n_ids && (t->flags[id] & TK_VALID);
}

const char *tokenizer_id_to_token(const tokenizer *t, int32_t id, size_t *len) {
  if (!id_ok(t, id))
    return NULL;
  return tok_str(t, id, len);
}

const char *tokenizer_id_to_bytes(const tokenizer *t, int32_t id, size_t *len) {
  if (!id_ok(t, id))
    return NULL;
  *len = t->byt_len[id];
  return t->byt_blob.data + t->byt_off[id];
}

bool tokenizer_is_special(const tokenizer *t, int32_t id) {
  return id_ok(t, id) && (t->flags[id] & TK_SPECIAL);
}
bool tokenizer_is_added(const tokenizer *t, int32_t id) {
  return id_ok(t, id) && (t->flags[id] & TK_ADDED);
}
int32_t tokenizer_bos_id(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos_id(const tokenizer *t) { return t->eos; }
int32_t tokenizer_eot_id(const tokenizer *t) { return t->eot; }
int32_t tokenizer_pad_id(const tokenizer *t) { return t->pad; }
bool tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
const char *tokenizer_chat_template(const tokenizer *t) { return t->chat_template; }
tokenizer_pretok tokenizer_pretok_kind(const tokenizer *t) { return t->pretok; }
size_t tokenizer_token_bytes_max(const tokenizer *t) { return t->token_bytes_max; }

/* -------------------------------------------------------------- scratch */

static tk_scratch *scratch_get(tokenizer *t) {
  pthread_mutex_lock(&t->mu);
  tk_scratch *s = t->free_scratch;
  if (s)
    t->free_scratch = s->next;
  pthread_mutex_unlock(&t->mu);
  if (s)
    return s;
  s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->md = pcre2_match_data_create_from_pattern(t->re, NULL);
  s->mctx = pcre2_match_context_create(NULL);
  s->jit = pcre2_jit_stack_create(32 << 10, 8 << 20, NULL);
  s->cache = calloc(TK_CACHE_SLOTS, sizeof *s->cache);
  s->arena = malloc(TK_CACHE_ARENA);
  if (!s->md || !s->mctx || !s->jit || !s->cache || !s->arena) {
    scratch_free(s);
    return NULL;
  }
  pcre2_jit_stack_assign(s->mctx, NULL, s->jit);
  return s;
}

static void scratch_put(tokenizer *t, tk_scratch *s) {
  pthread_mutex_lock(&t->mu);
  s->next = t->free_scratch;
  t->free_scratch = s;
  pthread_mutex_unlock(&t->mu);
}

static hx_code ids_push(tk_ids *o, int32_t id) {
  if (o->n == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 256;
    int32_t *v = realloc(o->v, cap * sizeof *v);
    if (!v)
      return HX_ENOMEM;
    o->v = v;
    o->cap = cap;
  }
  o->v[o->n++] = id;
  return HX_OK;
}

/* ------------------------------------------------------------------ BPE */

static void heap_push(tk_merge_cand *h, size_t *n, tk_merge_cand c) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (c >= h[p])
      break;
    h[i] = h[p];
    i = p;
  }
  h[i] = c;
}

static tk_merge_cand heap_pop(tk_merge_cand *h, size_t *n) {
  tk_merge_cand top = h[0], last = h[--*n];
  size_t i = 0, m = *n;
  for (;;) {
    size_t l = 2 * i + 1;
    if (l >= m)
      break;
    size_t c = (l + 1 < m && h[l + 1] < h[l]) ? l + 1 : l;
    if (last <= h[c])
      break;
    h[i] = h[c];
    i = c;
  }
  if (m > 0)
    h[i] = last;
  return top;
}

static void push_pair(const tokenizer *t, tk_scratch *s, size_t *nh, int32_t pos) {
  int32_t nx = s->syms[pos].next;
  if (nx < 0)
    return;
  uint32_t rank;
  int32_t nid;
  if (merge_find(t, s->syms[pos].id, s->syms[nx].id, &rank, &nid))
    heap_push(s->heap, nh, ((uint64_t)rank << 32) | (uint32_t)pos);
}

/* HF's Word::merge_all: repeatedly apply the lowest-rank merge (leftmost on
 * ties), with stale heap entries skipped. Appends the word's ids to o. */
static hx_code bpe_word(const tokenizer *t, tk_scratch *s, const uint8_t *w, size_t n, tk_ids *o) {
  if (n > s->syms_cap) {
    size_t cap = n < 64 ? 64 : n;
    tk_sym *sy = realloc(s->syms, cap * sizeof *sy);
    if (!sy)
      return HX_ENOMEM;
    s->syms = sy;
    tk_merge_cand *h = realloc(s->heap, 2 * cap * sizeof *h);
    if (!h)
      return HX_ENOMEM;
    s->heap = h;
    s->syms_cap = cap;
  }
  int32_t m = 0;
  for (size_t i = 0; i < n; i++) {
    int32_t id = t->byte_id[w[i]];
    if (id < 0)
      continue;
    s->syms[m] = (tk_sym){id, m - 1, m + 1, 1};
    m++;
  }
  if (m == 0)
    return HX_OK;
  s->syms[m - 1].next = -1;
  size_t nh = 0;
  for (int32_t i = 0; i + 1 < m; i++)
    push_pair(t, s, &nh, i);
  while (nh > 0) {
    tk_merge_cand c = heap_pop(s->heap, &nh);
    int32_t pos = (int32_t)(uint32_t)c;
    tk_sym *a = &s->syms[pos];
    if (a->len == 0 || a->next < 0)
      continue;
    tk_sym *b = &s->syms[a->next];
    uint32_t rank;
    int32_t nid;
    if (!merge_find(t, a->id, b->id, &rank, &nid) || rank != (uint32_t)(c >> 32))
      continue;
    a->id = nid;
    a->len += b->len;
    a->next = b->next;
    b->len = 0;
    if (a->next >= 0)
      s->syms[a->next].prev = pos;
    if (a->prev >= 0)
      push_pair(t, s, &nh, a->prev);
    push_pair(t, s, &nh, pos);
    /* Each merge adds at most two entries and removes one symbol, so the
     * heap never exceeds 2n entries. */
    HX_ASSERT(nh <= 2 * s->syms_cap);
  }
  for (int32_t i = 0; i >= 0; i = s->syms[i].next)
    if (ids_push(o, s->syms[i].id))
      return HX_ENOMEM;
  return HX_OK;
}

/* One pre-tokenized word: cache, ignore_merges, then BPE. */
static hx_code encode_word(const tokenizer *t, tk_scratch *s, const uint8_t *w, size_t n,
                           tk_ids *o) {
  uint64_t h = 0;
  tk_cache_slot *slot = NULL;
  if (n <= TK_CACHE_WORD_MAX) {
    h = tk_hash(w, n);
    for (size_t i = h & (TK_CACHE_SLOTS - 1);; i = (i + 1) & (TK_CACHE_SLOTS - 1)) {
      tk_cache_slot *c = &s->cache[i];
      if (c->len == 0) {
        slot = c;
        break;
      }
      if (c->hash == h && c->len == n && memcmp(s->arena + c->off, w, n) == 0) {
        const int32_t *ids = (const int32_t *)(s->arena + c->off + ((n + 3) & ~(size_t)3));
        for (size_t k = 0; k < c->n_ids; k++)
          if (ids_push(o, ids[k]))
            return HX_ENOMEM;
        return HX_OK;
      }
    }
  }
  size_t before = o->n;
  if (t->ignore_merges && n <= TOKENIZER_TOKEN_BYTES_MAX) {
    char bl[TOKENIZER_TOKEN_BYTES_MAX * 2]; /* byte-level chars are 1-2 bytes */
    size_t l = 0;
    for (size_t i = 0; i < n; i++)
      l += utf8_encode(bytelevel_char_of_byte(w[i]), bl + l);
    int32_t id = map_find(t, bl, l);
    if (id >= 0 && !(t->flags[id] & TK_ADDED)) {
      if (ids_push(o, id))
        return HX_ENOMEM;
      goto cache;
    }
  }
  if (bpe_word(t, s, w, n, o))
    return HX_ENOMEM;
cache:
  if (slot) {
    size_t n_ids = o->n - before;
    size_t need = ((n + 3) & ~(size_t)3) + n_ids * sizeof(int32_t);
    if (s->cache_used * 4 >= TK_CACHE_SLOTS * 3 || s->arena_used + need > TK_CACHE_ARENA) {
      memset(s->cache, 0, TK_CACHE_SLOTS * sizeof *s->cache); /* full: start over */
      s->cache_used = 0;
      s->arena_used = 0;
      return HX_OK;
    }
    memcpy(s->arena + s->arena_used, w, n);
    memcpy(s->arena + s->arena_used + ((n + 3) & ~(size_t)3), o->v + before,
           n_ids * sizeof(int32_t));
    *slot = (tk_cache_slot){h, (uint32_t)s->arena_used, (uint16_t)n, (uint16_t)n_ids};
    s->arena_used += need;
    s->cache_used++;
  }
  return HX_OK;
}

/* Regex split (Isolated: matches and the gaps between them are words). */
static hx_code encode_pretok(const tokenizer *t, tk_scratch *s, const uint8_t *p, size_t n,
                             tk_ids *o, hx_err *err) {
  size_t pos = 0, prev = 0;
  while (pos < n) {
    /* A regex from a hostile file could backtrack exponentially: bound the
     * work linearly in the text left (the Qwen patterns need ~2 steps/byte). */
    pcre2_set_match_limit(
        s->mctx, (uint32_t)(1000000 + (n - pos < 60000000 ? 64 * (n - pos) : 3840000000u)));
    int r = pcre2_match(t->re, p, n, pos, PCRE2_NO_UTF_CHECK, s->md, s->mctx);
    if (r == PCRE2_ERROR_NOMATCH)
      break;
    if (r < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(r, msg, sizeof msg);
      return hx_err_set(err, HX_ETOOLARGE, "pre-tokenizer regex failed: %s", (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
    size_t ms = ov[0], me = ov[1];
    if (me == ms) { /* empty match: no word; step one character */
      size_t l;
      utf8_decode_valid(p + ms, n - ms, &l);
      pos = ms + (ms < n ? l : 1);
      continue;
    }
    if (ms > prev && encode_word(t, s, p + prev, ms - prev, o))
      return hx_err_set(err, HX_ENOMEM, "encode: out of memory");
    if (encode_word(t, s, p + ms, me - ms, o))
      return hx_err_set(err, HX_ENOMEM, "encode: out of memory");
    pos = prev = me;
  }
  if (prev < n && encode_word(t, s, p + prev, n - prev, o))
    return hx_err_set(err, HX_ENOMEM, "encode: out of memory");
  return HX_OK;
}

/* ----------------------------------------------------- added-token split */

static uint32_t cp_before(const uint8_t *s, size_t at) {
  size_t i = at;
  while (i > 0 && (s[i - 1] & 0xC0) == 0x80)
    i--;
  if (i == 0 && at == 0)
    return 0;
  if (i > 0)
    i--;
  while (i > 0 && (s[i] & 0xC0) == 0x80)
    i--;
  size_t l;
  return utf8_decode_valid(s + i, at - i, &l);
}

/* Finds the leftmost-longest added token (of the given normalized-ness) in
 * s[from, n). Returns its index in t->added or -1. */
static int added_find(const tokenizer *t, bool normalized, const uint8_t *s, size_t n, size_t from,
                      size_t *at) {
  for (size_t i = from; i < n; i++) {
    uint8_t b = s[i];
    for (uint32_t k = t->added_at[b]; k < t->added_at[b + 1]; k++) {
      const tk_added *a = &t->added[t->added_order[k]];
      if (a->normalized != normalized || a->len > n - i || memcmp(s + i, a->text, a->len) != 0)
        continue;
      *at = i;
      return (int)t->added_order[k];
    }
  }
  return -1;
}

typedef hx_code (*tk_segment_fn)(const tokenizer *t, tk_scratch *s, const uint8_t *p, size_t n,
                                 bool parse_special, tk_ids *o, hx_err *err);

/* HF's AddedVocabulary::split_with_indices: added tokens become ids, the
 * text between them goes to `inner`. */
static hx_code split_added(const tokenizer *t, tk_scratch *s, bool normalized, const uint8_t *p,
                           size_t n, bool parse_special, tk_segment_fn inner, tk_ids *o,
                           hx_err *err) {
  size_t done = 0, from = 0, at = 0;
  hx_code rc;
  bool any = normalized ? t->has_normalized_added : t->has_raw_added;
  while (any && from < n) {
    int k = added_find(t, normalized, p, n, from, &at);
    if (k < 0)
      break;
    const tk_added *a = &t->added[k];
    size_t start = at, stop = at + a->len;
    from = stop;
    if (a->special && !parse_special)
      continue;
    if (a->single_word) {
      size_t l;
      bool sw = start == 0 || !unicode_is_word(cp_before(p, start));
      bool ew = stop == n || !unicode_is_word(utf8_decode_valid(p + stop, n - stop, &l));
      if (!sw || !ew)
        continue;
    }
    if (a->lstrip) {
      while (start > done) {
        size_t i = start - 1;
        while (i > done && (p[i] & 0xC0) == 0x80)
          i--;
        size_t l;
        if (!unicode_is_whitespace(utf8_decode_valid(p + i, start - i, &l)))
          break;
        start = i;
      }
    }
    if (a->rstrip) {
      while (stop < n) {
        size_t l;
        if (!unicode_is_whitespace(utf8_decode_valid(p + stop, n - stop, &l)))
          break;
        stop += l;
      }
      from = stop;
    }
    if (start > done && (rc = inner(t, s, p + done, start - done, parse_special, o, err)))
      return rc;
    if (ids_push(o, a->id))
      return hx_err_set(err, HX_ENOMEM, "encode: out of memory");
    done = stop;
  }
  if (done < n)
    return inner(t, s, p + done, n - done, parse_special, o, err);
  return HX_OK;
}

static hx_code seg_pretok(const tokenizer *t, tk_scratch *s, const uint8_t *p, size_t n,
                          bool parse_special, tk_ids *o, hx_err *err) {
  (void)parse_special;
  return encode_pretok(t, s, p, n, o, err);
}

/* A segment between raw added tokens: normalize, split normalized added
 * tokens, pre-tokenize. */
static hx_code seg_normalize(const tokenizer *t, tk_scratch *s, const uint8_t *p, size_t n,
                             bool parse_special, tk_ids *o, hx_err *err) {
  char *nfc = NULL;
  size_t nfc_len = 0;
  if (t->nfc && unicode_nfc_may_change(p, n)) {
    hx_code rc = unicode_nfc((const char *)p, n, &nfc, &nfc_len, err);
    if (rc)
      return rc;
    p = (const uint8_t *)nfc;
    n = nfc_len;
  }
  hx_code rc = split_added(t, s, true, p, n, parse_special, seg_pretok, o, err);
  free(nfc);
  return rc;
}

hx_code tokenizer_encode(const tokenizer *tc, const char *text, size_t len, bool parse_special,
                         int32_t **ids_out, size_t *n_out, hx_err *err) {
  tokenizer *t = (tokenizer *)tc; /* only the mutex-guarded scratch list changes */
  *ids_out = NULL;
  *n_out = 0;
  if (len > TOKENIZER_TEXT_BYTES_MAX)
    return hx_err_set(err, HX_ETOOLARGE, "encode: text of %zu bytes exceeds the limit of %u", len,
                      TOKENIZER_TEXT_BYTES_MAX);
  if (len == 0)
    return HX_OK;
  const uint8_t *p = (const uint8_t *)text;
  char *fixed = NULL;
  size_t valid = utf8_valid_prefix(p, len);
  if (valid != len) { /* repair as Python's decode("utf-8", "replace") */
    size_t cap;
    if (hx_size_mul(len, 3, &cap) || !(fixed = malloc(cap + 16)))
      return hx_err_set(err, HX_ENOMEM, "encode: out of memory");
    utf8_state st = {0};
    memcpy(fixed, p, valid);
    size_t w = valid + utf8_lossy_feed(&st, p + valid, len - valid, fixed + valid);
    w += utf8_lossy_flush(&st, fixed + w);
    p = (const uint8_t *)fixed;
    len = w;
  }
  tk_scratch *s = scratch_get(t);
  if (!s) {
    free(fixed);
    return hx_err_set(err, HX_ENOMEM, "encode: out of memory");
  }
  tk_ids o = {0};
  hx_code rc = split_added(t, s, false, p, len, parse_special, seg_normalize, &o, err);
  scratch_put(t, s);
  free(fixed);
  if (rc) {
    free(o.v);
    return rc;
  }
  *ids_out = o.v;
  *n_out = o.n;
  return HX_OK;
}

/* -------------------------------------------------------------- decode */

hx_code tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                         char **text_out, size_t *len_out, hx_err *err) {
  *text_out = NULL;
  *len_out = 0;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (!id_ok(t, ids[i]))
      return hx_err_set(err, HX_EINVAL, "decode: id %d at position %zu is not in the vocabulary",
                        ids[i], i);
    if (hx_size_add(total, t->byt_len[ids[i]], &total))
      return hx_err_set(err, HX_ETOOLARGE, "decode: output too large");
  }
  size_t cap;
  if (hx_size_add(total, 4, &cap) || hx_size_mul(cap, 3, &cap))
    return hx_err_set(err, HX_ETOOLARGE, "decode: output too large");
  char *out = malloc(cap + 1);
  if (!out)
    return hx_err_set(err, HX_ENOMEM, "decode: out of memory");
  utf8_state st = {0};
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (skip_special && (t->flags[ids[i]] & TK_SPECIAL))
      continue;
    w += utf8_lossy_feed(&st, (const uint8_t *)t->byt_blob.data + t->byt_off[ids[i]],
                         t->byt_len[ids[i]], out + w);
  }
  w += utf8_lossy_flush(&st, out + w);
  out[w] = '\0';
  *text_out = out;
  *len_out = w;
  return HX_OK;
}

void tokenizer_decoder_init(tokenizer_decoder *dec, const tokenizer *t, bool skip_special) {
  memset(dec, 0, sizeof *dec);
  dec->tok = t;
  dec->skip_special = skip_special;
}

size_t tokenizer_decoder_out_max(const tokenizer *t) { return 3 * (t->token_bytes_max + 4); }

hx_code tokenizer_decoder_push(tokenizer_decoder *dec, int32_t id, char *out, size_t out_cap,
                               size_t *n_written, hx_err *err) {
  const tokenizer *t = dec->tok;
  *n_written = 0;
  if (!id_ok(t, id))
    return hx_err_set(err, HX_EINVAL, "decode: id %d is not in the vocabulary", id);
  HX_ASSERT(out_cap >= tokenizer_decoder_out_max(t));
  if (dec->skip_special && (t->flags[id] & TK_SPECIAL))
    return HX_OK;
  utf8_state st = {0};
  memcpy(st.buf, dec->pending, dec->n_pending);
  st.n = dec->n_pending;
  if (st.n) {
    uint8_t b = st.buf[0];
    st.need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  }
  *n_written =
      utf8_lossy_feed(&st, (const uint8_t *)t->byt_blob.data + t->byt_off[id], t->byt_len[id], out);
  memcpy(dec->pending, st.buf, st.n);
  dec->n_pending = st.n;
  return HX_OK;
}

size_t tokenizer_decoder_flush(tokenizer_decoder *dec, char *out, size_t out_cap) {
  HX_ASSERT(out_cap >= 3);
  size_t n = dec->n_pending ? 3 : 0;
  if (n)
    memcpy(out, "\xEF\xBF\xBD", 3);
  dec->n_pending = 0;
  return n;
}

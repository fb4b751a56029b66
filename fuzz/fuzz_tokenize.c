/* fuzz_tokenize.c — encode and decode arbitrary bytes with a small fixed
 * byte-level vocabulary (256 bytes, a few merges, special and non-special
 * added tokens; "é€" is normalized=true, matched on NFC text). Checks: every id is valid; decode
 * gives valid UTF-8 equal to NFC of the repaired input (byte-level BPE is lossless); the streaming
 * decoder, fed the same ids, produces the same text. First input byte:
 * bit 0 = parse special tokens. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"

static void bl(hx_buf *b, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char u[4];
    size_t n = utf8_encode(bytelevel_char_of_byte(*p), u);
    if (*p == '"' || *p == '\\')
      hx_buf_append_char(b, '\\');
    hx_buf_append(b, u, n);
  }
}

static tokenizer *small_vocab(void) {
  static const char *merges[][2] = {{"a", "b"},       {"ab", "c"},          {" ", "a"},
                                    {"t", "h"},       {"th", "e"},          {" ", "the"},
                                    {"\xe4", "\xbd"}, {"\xe4\xbd", "\xa0"}, {"\n", "\n"}};
  hx_buf b;
  hx_buf_init(&b, 1 << 20);
  hx_buf_append_str(
      &b,
      "{\"added_tokens\":[{\"id\":300,\"content\":\"<|im_end|>\",\"special\":"
      "true,\"normalized\":false},{\"id\":301,\"content\":\"<think>\","
      "\"special\":false,\"normalized\":false},{\"id\":302,\"content\":\"\xc3\xa9\xe2\x82\xac\","
      "\"special\":false,\"normalized\":true}],"
      "\"normalizer\":{\"type\":\"NFC\"},"
      "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
      "\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r"
      "\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{L}\\\\p{M}]+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{M}"
      "\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
      "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
      "\"use_regex\":false}]},\"decoder\":{\"type\":\"ByteLevel\"},"
      "\"model\":{\"type\":\"BPE\",\"vocab\":{");
  int id = 0;
  for (int i = 0; i < 256; i++, id++) {
    char s[2] = {(char)i, 0};
    hx_buf_append_str(&b, i ? ",\"" : "\"");
    if (i == 0)
      hx_buf_append(&b, "\xc4\x80", 2);
    else
      bl(&b, s);
    hx_buf_printf(&b, "\":%d", id);
  }
  for (size_t m = 0; m < sizeof merges / sizeof merges[0]; m++, id++) {
    char cat[16];
    snprintf(cat, sizeof cat, "%s%s", merges[m][0], merges[m][1]);
    hx_buf_append_str(&b, ",\"");
    bl(&b, cat);
    hx_buf_printf(&b, "\":%d", id);
  }
  hx_buf_append_str(&b, "},\"merges\":[");
  for (size_t m = 0; m < sizeof merges / sizeof merges[0]; m++) {
    hx_buf_append_str(&b, m ? ",[\"" : "[\"");
    bl(&b, merges[m][0]);
    hx_buf_append_str(&b, "\",\"");
    bl(&b, merges[m][1]);
    hx_buf_append_str(&b, "\"]");
  }
  hx_buf_append_str(&b, "]}}");
  tokenizer *t = NULL;
  hx_err err = {0};
  if (tokenizer_load_json(b.data, b.len, NULL, 0, "fuzz-vocab", &t, &err)) {
    fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
    abort();
  }
  hx_buf_free(&b);
  return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static tokenizer *tok; /* built once; the fuzzer never exits cleanly anyway */
  if (!tok)
    tok = small_vocab();
  if (size == 0)
    return 0;
  bool special = data[0] & 1;
  const char *s = (const char *)data + 1;
  size_t n = size - 1;
  int32_t *ids = NULL;
  size_t n_ids = 0;
  hx_err err = {0};
  HX_ASSERT(tokenizer_encode(tok, s, n, special, &ids, &n_ids, &err) == HX_OK);
  for (size_t i = 0; i < n_ids; i++)
    HX_ASSERT(ids[i] >= 0 && (size_t)ids[i] < tokenizer_vocab_size(tok));
  char *dec = NULL;
  size_t dec_n = 0;
  HX_ASSERT(tokenizer_decode(tok, ids, n_ids, false, &dec, &dec_n, &err) == HX_OK);
  HX_ASSERT(utf8_valid_prefix((const uint8_t *)dec, dec_n) == dec_n);
  /* Lossless: decode(encode(s)) == NFC(repair(s)). */
  char *fixed = malloc(3 * n + 8);
  utf8_state st = {0};
  size_t w = utf8_lossy_feed(&st, (const uint8_t *)s, n, fixed);
  w += utf8_lossy_flush(&st, fixed + w);
  char *nfc = NULL;
  size_t nfc_n = 0;
  HX_ASSERT(unicode_nfc(fixed, w, &nfc, &nfc_n, &err) == HX_OK);
  HX_ASSERT(nfc_n == dec_n && memcmp(nfc, dec, dec_n) == 0);
  /* Streaming decode equals the whole decode. */
  size_t cap = tokenizer_decoder_out_max(tok), at = 0, k = 0;
  char *out = malloc(cap);
  tokenizer_decoder d;
  tokenizer_decoder_init(&d, tok, false);
  for (size_t i = 0; i < n_ids; i++) {
    HX_ASSERT(tokenizer_decoder_push(&d, ids[i], out, cap, &k, &err) == HX_OK);
    HX_ASSERT(at + k <= dec_n && memcmp(dec + at, out, k) == 0);
    at += k;
  }
  k = tokenizer_decoder_flush(&d, out, cap);
  HX_ASSERT(at + k == dec_n && memcmp(dec + at, out, k) == 0);
  free(out);
  free(nfc);
  free(fixed);
  free(dec);
  free(ids);
  return 0;
}

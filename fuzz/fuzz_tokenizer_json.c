/* fuzz_tokenizer_json.c — tokenizer.json loading on arbitrary bytes. The
 * input is split at the first NUL byte: before it tokenizer.json, after it
 * tokenizer_config.json (absent when there is no NUL). A load either fails
 * with a message or gives a tokenizer that encodes and decodes a fixed text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *tj = (const char *)data;
  const char *nul = memchr(data, 0, size);
  size_t tj_n = nul ? (size_t)(nul - tj) : size;
  const char *cfg = nul ? nul + 1 : NULL;
  size_t cfg_n = nul ? size - tj_n - 1 : 0;
  tokenizer *t = NULL;
  hx_err err = {0};
  hx_code rc = tokenizer_load_json(tj, tj_n, cfg, cfg_n, "fuzz", &t, &err);
  if (rc) {
    HX_ASSERT(t == NULL && err.msg[0] != '\0');
    return 0;
  }
  static const char text[] = "Hello wörld <|im_end|> 123 \xff\xfe <think>\r\n  x";
  for (int special = 0; special < 2; special++) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(t, text, sizeof text - 1, special, &ids, &n, &err) == HX_OK) {
      char *s = NULL;
      size_t len = 0;
      for (size_t i = 0; i < n; i++)
        HX_ASSERT(ids[i] >= 0 && (size_t)ids[i] < tokenizer_vocab_size(t));
      HX_ASSERT(tokenizer_decode(t, ids, n, special, &s, &len, &err) == HX_OK);
      free(s);
      free(ids);
    }
  }
  (void)tokenizer_chat_template(t);
  tokenizer_free(t);
  return 0;
}

/* tokenizer.h — byte-level BPE tokenizer of the Qwen family, identical in
 * its output to HuggingFace `tokenizers` given the same vocabulary.
 *
 * A tokenizer is loaded once (from tokenizer.json [+ tokenizer_config.json]
 * or from GGUF metadata) and is then read-only: every function taking a
 * `const tokenizer *` may be called from several threads at once (the merge
 * cache inside is internally locked).
 *
 * Encoding, in HF's order: added tokens are split out of the raw text first
 * (leftmost-longest; special ones only when parse_special is set), each
 * remaining segment is NFC-normalized (when the vocabulary asks for it),
 * cut into words by the pre-tokenizer regex (PCRE2, UTF+UCP, JIT), each
 * word's bytes are merged by rank (with a cache) into ids. Input that is not
 * valid UTF-8 is first repaired the way Python's
 * `bytes.decode("utf-8", "replace")` does it (each maximal invalid subpart
 * becomes U+FFFD), which is what reaches HF's tokenizer from any client.
 *
 * Decoding maps ids back to bytes; the result is made valid UTF-8 the way
 * HF's ByteLevel decoder does (from_utf8_lossy). For streaming use the
 * tokenizer_decoder below: it emits only complete UTF-8 characters and its
 * concatenated output equals tokenizer_decode of the whole sequence. */
#ifndef HX_ENGINE_TOKENIZER_H
#define HX_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct tokenizer tokenizer;
struct gguf_file; /* engine/gguf.h */

enum {
  TOKENIZER_ID_NONE = -1,                /* "no such token" */
  TOKENIZER_VOCAB_MAX = 1 << 22,         /* refuse vocabularies larger than this */
  TOKENIZER_TOKEN_BYTES_MAX = 1024,      /* refuse tokens longer than this (bytes) */
  TOKENIZER_TEXT_BYTES_MAX = 256u << 20, /* refuse encoding text longer than this */
  TOKENIZER_JSON_BYTES_MAX = 128u << 20, /* refuse tokenizer.json larger than this */
  TOKENIZER_DECODER_PENDING_MAX = 4      /* bytes of an unfinished UTF-8 char held back */
};

/* Pre-tokenizer regex families (see docs/tokenizer.md for the patterns). */
typedef enum tokenizer_pretok {
  TOKENIZER_PRETOK_QWEN2 = 0, /* Qwen2, 2.5, 3, 3-Next (llama.cpp pre "qwen2") */
  TOKENIZER_PRETOK_QWEN35,    /* Qwen3.5 / 3.6: adds \p{M} (llama.cpp pre "qwen35") */
  TOKENIZER_PRETOK_CUSTOM     /* a Split regex from tokenizer.json we compiled as given */
} tokenizer_pretok;

/* ---- loading ----------------------------------------------------------- */

/* Loads from PATH, which is a directory holding tokenizer.json (and
 * optionally tokenizer_config.json), a tokenizer.json file (its sibling
 * tokenizer_config.json is read if present), or a .gguf file. On failure
 * returns a code and err names the file and the problem; *out is NULL. */
hx_code tokenizer_load_path(const char *path, tokenizer **out, hx_err *err);

/* Loads from the text of tokenizer.json and (optionally, may be NULL/0) the
 * text of tokenizer_config.json. `name` is used in error messages only. */
hx_code tokenizer_load_json(const char *tokenizer_json, size_t tokenizer_json_len,
                            const char *config_json, size_t config_json_len, const char *name,
                            tokenizer **out, hx_err *err);

/* Loads from the tokenizer.ggml.* / tokenizer.chat_template metadata of an
 * open GGUF file. The tokenizer copies what it needs; gguf may be closed
 * afterwards. */
hx_code tokenizer_load_gguf(const struct gguf_file *gguf, tokenizer **out, hx_err *err);

/* Frees everything; tok may be NULL. */
void tokenizer_free(tokenizer *tok);

/* ---- vocabulary -------------------------------------------------------- */

/* Number of ids (model vocab + added tokens): every id in [0, n) is valid. */
size_t tokenizer_vocab_size(const tokenizer *tok);

/* Id of the token whose text (added-token content, or the byte-level
 * vocabulary string such as "Ġthe") is exactly (text, len), or
 * TOKENIZER_ID_NONE. */
int32_t tokenizer_token_to_id(const tokenizer *tok, const char *text, size_t len);

/* Text of a token as stored in the vocabulary (byte-level form for model
 * tokens, content for added ones), not NUL-terminated; *len set. NULL for an
 * invalid id. Valid while tok lives. */
const char *tokenizer_id_to_token(const tokenizer *tok, int32_t id, size_t *len);

/* Raw bytes an id decodes to (e.g. " the" for "Ġthe"); may be a partial
 * UTF-8 character. NULL for an invalid id. Valid while tok lives. */
const char *tokenizer_id_to_bytes(const tokenizer *tok, int32_t id, size_t *len);

/* True for ids of added tokens marked special (e.g. <|im_end|>, <|endoftext|>). */
bool tokenizer_is_special(const tokenizer *tok, int32_t id);
/* True for ids of any added token (special or not, e.g. <think>). */
bool tokenizer_is_added(const tokenizer *tok, int32_t id);

/* Well-known ids, or TOKENIZER_ID_NONE when the vocabulary has none.
 * bos/pad: from tokenizer_config.json / GGUF. eos: the config's eos_token
 * (for Qwen3 instruct <|im_end|>, for base models <|endoftext|>). eot: the
 * end-of-turn token <|im_end|> if the vocabulary has it, else eos. */
int32_t tokenizer_bos_id(const tokenizer *tok);
int32_t tokenizer_eos_id(const tokenizer *tok);
int32_t tokenizer_eot_id(const tokenizer *tok);
int32_t tokenizer_pad_id(const tokenizer *tok);
/* Whether encoding for a model prompt should start with bos (false for Qwen). */
bool tokenizer_add_bos(const tokenizer *tok);

/* The chat template (Jinja source) from tokenizer_config.json / GGUF
 * `tokenizer.chat_template`, or NULL. NUL-terminated, valid while tok lives. */
const char *tokenizer_chat_template(const tokenizer *tok);

/* Which pre-tokenizer this vocabulary uses. */
tokenizer_pretok tokenizer_pretok_kind(const tokenizer *tok);

/* Longest byte string any single id decodes to. */
size_t tokenizer_token_bytes_max(const tokenizer *tok);

/* ---- encoding ---------------------------------------------------------- */

/* Encodes (text, len) (need not be NUL-terminated; may contain NULs and
 * invalid UTF-8). parse_special: true = special-token text in the input
 * becomes the special token (HF default; use for trusted prompt text such as
 * rendered chat templates); false = special tokens are encoded as plain text
 * (HF `encode_special_tokens=True`; the safe choice for user input).
 * Non-special added tokens (e.g. <think>) are always matched, as in HF.
 * No bos/eos is added. On success *ids_out is a malloc'd array of *n_out ids
 * (the caller frees it; NULL when *n_out is 0). */
hx_code tokenizer_encode(const tokenizer *tok, const char *text, size_t len, bool parse_special,
                         int32_t **ids_out, size_t *n_out, hx_err *err);

/* ---- decoding ---------------------------------------------------------- */

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string (*len_out bytes,
 * excluding the NUL). skip_special: drop ids of special added tokens.
 * Invalid ids are an error (HX_EINVAL naming the position). */
hx_code tokenizer_decode(const tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                         char **text_out, size_t *len_out, hx_err *err);

/* Incremental decoder for streaming: holds back the bytes of an unfinished
 * UTF-8 character until it completes (or is proven invalid, then it is
 * emitted as U+FFFD exactly as tokenizer_decode would). Plain struct so it
 * can live on the stack or inside a request; no allocation. */
typedef struct tokenizer_decoder {
  const tokenizer *tok;
  bool skip_special;
  uint8_t pending[TOKENIZER_DECODER_PENDING_MAX]; /* prefix of a UTF-8 char */
  uint8_t n_pending;                              /* 0..3 */
} tokenizer_decoder;

void tokenizer_decoder_init(tokenizer_decoder *dec, const tokenizer *tok, bool skip_special);

/* Capacity `out` must have for one tokenizer_decoder_push / _flush call:
 * 3 bytes per input byte covers U+FFFD replacement of every byte. */
size_t tokenizer_decoder_out_max(const tokenizer *tok);

/* Feeds one id; writes the newly completed text (valid UTF-8, possibly
 * empty) to out (not NUL-terminated) and sets *n_written. out_cap must be at
 * least tokenizer_decoder_out_max(tok). Invalid id: HX_EINVAL, state kept. */
hx_code tokenizer_decoder_push(tokenizer_decoder *dec, int32_t id, char *out, size_t out_cap,
                               size_t *n_written, hx_err *err);

/* End of stream: emits held-back bytes as U+FFFD (what tokenizer_decode
 * would give for a truncated character) and resets the state. out_cap ≥ 4. */
size_t tokenizer_decoder_flush(tokenizer_decoder *dec, char *out, size_t out_cap);

#endif

/* unicode.h — the UTF-8 and Unicode pieces the tokenizer needs.
 *
 * One UTF-8 validator used everywhere (input repair, decoding, streaming),
 * so all three replace invalid bytes identically: each maximal subpart of an
 * ill-formed sequence becomes one U+FFFD (Unicode §3.9 "best practice", which
 * is what Python's `decode("utf-8", "replace")` and Rust's
 * `String::from_utf8_lossy` do). Plus NFC through utf8proc, Unicode
 * White_Space, and GPT-2's byte <-> printable-character map. */
#ifndef HX_ENGINE_UNICODE_H
#define HX_ENGINE_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"

/* Streaming UTF-8 validator state: the bytes of a started but unfinished
 * character. */
typedef struct utf8_state {
  uint8_t buf[4];
  uint8_t n;    /* bytes held (0..3) */
  uint8_t need; /* total length of the character being assembled */
} utf8_state;

/* Feeds bytes (s, n) and appends valid UTF-8 to out (the caller guarantees
 * room for 3 * (n + 3) bytes), replacing ill-formed subparts by U+FFFD.
 * Returns the bytes written. An unfinished character stays in st. */
size_t utf8_lossy_feed(utf8_state *st, const uint8_t *s, size_t n, char *out);
/* Ends the stream: an unfinished character becomes one U+FFFD. Returns bytes
 * written (0 or 3); st is reset. */
size_t utf8_lossy_flush(utf8_state *st, char *out);

/* Length of the longest prefix of (s, n) that is valid UTF-8. */
size_t utf8_valid_prefix(const uint8_t *s, size_t n);

/* Decodes one code point from valid UTF-8 at s (n > 0); sets *len. */
uint32_t utf8_decode_valid(const uint8_t *s, size_t n, size_t *len);
/* Encodes cp (< 0x110000) into out (4 bytes room); returns its length. */
size_t utf8_encode(uint32_t cp, char *out);

/* Unicode White_Space (Rust's char::is_whitespace). */
bool unicode_is_whitespace(uint32_t cp);
/* Regex \w in Unicode mode: letters, marks, decimal digits, connector punct. */
bool unicode_is_word(uint32_t cp);

/* True when (s, n) (valid UTF-8) may change under NFC; false means NFC is
 * the identity on it (every code point is below U+0300). */
bool unicode_nfc_may_change(const uint8_t *s, size_t n);
/* NFC of valid UTF-8 (s, n): a malloc'd string in *out with *out_len bytes. */
hx_code unicode_nfc(const char *s, size_t n, char **out, size_t *out_len, hx_err *err);

/* GPT-2 byte-level alphabet: the printable code point standing for byte b,
 * and the byte a code point stands for (-1 if none). */
uint32_t bytelevel_char_of_byte(uint8_t b);
int bytelevel_byte_of_char(uint32_t cp);

#endif

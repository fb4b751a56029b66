/* unicode.c — see unicode.h. */
#include "engine/unicode.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "engine/unicode_nfc_quirks.h"

/* Total length of the character a lead byte starts, 0 if b cannot start one. */
static inline uint8_t utf8_lead_len(uint8_t b) {
  if (b < 0x80)
    return 1;
  if (b >= 0xC2 && b <= 0xDF)
    return 2;
  if (b >= 0xE0 && b <= 0xEF)
    return 3;
  if (b >= 0xF0 && b <= 0xF4)
    return 4;
  return 0;
}

/* Whether b may follow the bytes held so far (lead = first byte, pos = index
 * of b in the character, >= 1). Excludes overlongs, surrogates, > U+10FFFF. */
static inline bool utf8_cont_ok(uint8_t lead, size_t pos, uint8_t b) {
  uint8_t lo = 0x80, hi = 0xBF;
  if (pos == 1) {
    if (lead == 0xE0)
      lo = 0xA0;
    else if (lead == 0xED)
      hi = 0x9F;
    else if (lead == 0xF0)
      lo = 0x90;
    else if (lead == 0xF4)
      hi = 0x8F;
  }
  return b >= lo && b <= hi;
}

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

size_t utf8_lossy_feed(utf8_state *st, const uint8_t *s, size_t n, char *out) {
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    uint8_t b = s[i];
    if (st->n > 0) {
      if (utf8_cont_ok(st->buf[0], st->n, b)) {
        st->buf[st->n++] = b;
        if (st->n == st->need) {
          memcpy(out + w, st->buf, st->n);
          w += st->n;
          st->n = 0;
        }
        continue;
      }
      /* The held bytes are a maximal ill-formed subpart; b starts afresh. */
      memcpy(out + w, REPLACEMENT, 3);
      w += 3;
      st->n = 0;
    }
    if (b < 0x80) {
      out[w++] = (char)b;
      continue;
    }
    uint8_t len = utf8_lead_len(b);
    if (len == 0) {
      memcpy(out + w, REPLACEMENT, 3);
      w += 3;
      continue;
    }
    st->buf[0] = b;
    st->n = 1;
    st->need = len;
  }
  return w;
}

size_t utf8_lossy_flush(utf8_state *st, char *out) {
  if (st->n == 0)
    return 0;
  st->n = 0;
  memcpy(out, REPLACEMENT, 3);
  return 3;
}

size_t utf8_valid_prefix(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t b = s[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    uint8_t len = utf8_lead_len(b);
    if (len == 0 || len > n - i)
      return i;
    for (size_t k = 1; k < len; k++)
      if (!utf8_cont_ok(b, k, s[i + k]))
        return i;
    i += len;
  }
  return n;
}

uint32_t utf8_decode_valid(const uint8_t *s, size_t n, size_t *len) {
  uint8_t b = s[0];
  uint8_t l = utf8_lead_len(b);
  if (l == 0 || l > n) { /* not valid: treat the byte alone (callers pass valid text) */
    *len = 1;
    return 0xFFFD;
  }
  *len = l;
  switch (l) {
  case 1:
    return b;
  case 2:
    return ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F);
  case 3:
    return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  default:
    return ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  }
}

size_t utf8_encode(uint32_t cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

bool unicode_is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool unicode_is_word(uint32_t cp) {
  switch (utf8proc_category((utf8proc_int32_t)cp)) {
  case UTF8PROC_CATEGORY_LU:
  case UTF8PROC_CATEGORY_LL:
  case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_LO:
  case UTF8PROC_CATEGORY_MN:
  case UTF8PROC_CATEGORY_MC:
  case UTF8PROC_CATEGORY_ME:
  case UTF8PROC_CATEGORY_ND:
  case UTF8PROC_CATEGORY_PC:
    return true;
  default:
    return cp == 0x200C || cp == 0x200D; /* Join_Control */
  }
}

bool unicode_nfc_may_change(const uint8_t *s, size_t n) {
  /* U+0300 is CC 80: every lead byte below 0xCC encodes a code point below
   * U+0300, all of which are NFC-stable and never compose with a follower
   * that is itself below U+0300. */
  for (size_t i = 0; i < n; i++)
    if (s[i] >= 0xCC)
      return true;
  return false;
}

static bool nfc_is_quirk(uint32_t cp) {
  size_t lo = 0, hi = sizeof NFC_QUIRK_RANGES / sizeof NFC_QUIRK_RANGES[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < NFC_QUIRK_RANGES[mid][0])
      hi = mid;
    else if (cp > NFC_QUIRK_RANGES[mid][1])
      lo = mid + 1;
    else
      return true;
  }
  return false;
}

/* NFC of one run without quirk code points, appended to out. */
static hx_code nfc_run(const char *s, size_t n, hx_buf *out, hx_err *err) {
  if (n == 0)
    return HX_OK;
  if ((utf8proc_ssize_t)n < 0)
    return hx_err_set(err, HX_ETOOLARGE, "NFC: text of %zu bytes is too long", n);
  utf8proc_uint8_t *dst = NULL;
  utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (r < 0) {
    free(dst);
    return hx_err_set(err, r == UTF8PROC_ERROR_NOMEM ? HX_ENOMEM : HX_EINVAL, "NFC: %s",
                      utf8proc_errmsg(r));
  }
  hx_code rc = hx_buf_append(out, dst, (size_t)r);
  free(dst);
  return rc ? hx_err_set(err, rc, "NFC: out of memory") : HX_OK;
}

/* HF's NFC treats the quirk code points as unknown starters: nothing
 * reorders or composes across them, so NFC applies to the runs between. */
hx_code unicode_nfc(const char *s, size_t n, char **out, size_t *out_len, hx_err *err) {
  *out = NULL;
  *out_len = 0;
  hx_buf b;
  hx_buf_init(&b, (size_t)1 << 40);
  size_t run = 0;
  hx_code rc = HX_OK;
  for (size_t i = 0; i < n && !rc;) {
    size_t l;
    uint32_t cp = utf8_decode_valid((const uint8_t *)s + i, n - i, &l);
    if (cp >= 0x7FD && nfc_is_quirk(cp)) {
      rc = nfc_run(s + run, i - run, &b, err);
      if (!rc && hx_buf_append(&b, s + i, l))
        rc = hx_err_set(err, HX_ENOMEM, "NFC: out of memory");
      run = i + l;
    }
    i += l;
  }
  if (!rc)
    rc = nfc_run(s + run, n - run, &b, err);
  if (!rc && !b.data && hx_buf_reserve(&b, 1))
    rc = hx_err_set(err, HX_ENOMEM, "NFC: out of memory");
  if (rc) {
    hx_buf_free(&b);
    return rc;
  }
  *out_len = b.len;
  *out = hx_buf_detach(&b);
  return HX_OK;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves,
 * the other 68 bytes map, in order, to U+0100.. */
static bool bytelevel_is_self(uint8_t b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t bytelevel_char_of_byte(uint8_t b) {
  if (bytelevel_is_self(b))
    return b;
  uint32_t k = 0;
  for (uint32_t x = 0; x < b; x++)
    if (!bytelevel_is_self((uint8_t)x))
      k++;
  return 256 + k;
}

int bytelevel_byte_of_char(uint32_t cp) {
  if (cp < 256)
    return bytelevel_is_self((uint8_t)cp) ? (int)cp : -1;
  if (cp >= 256 + 68)
    return -1;
  uint32_t k = cp - 256;
  for (uint32_t x = 0; x < 256; x++)
    if (!bytelevel_is_self((uint8_t)x) && k-- == 0)
      return (int)x;
  return -1;
}

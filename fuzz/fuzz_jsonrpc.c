/* fuzz_jsonrpc.c — helexa-acp's parsers of outside input: JSON-RPC lines
 * from the editor (acp_jsonrpc_parse, then the reply encoder) and the
 * OpenAI chat.completion.chunk payloads from the upstream
 * (acp_stream_accept). Input is split at newlines; each line goes to both. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "acp/jsonrpc.h"
#include "acp/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  acp_stream s;
  acp_stream_init(&s, NULL, NULL, NULL);
  const char *p = (const char *)data, *end = p + size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
    acp_msg m;
    json_t *id = NULL;
    hx_err e;
    int code = acp_jsonrpc_parse(p, len, 1 << 20, &m, &id, &e);
    json_t *reply =
        code ? acp_jsonrpc_error(id, code, e.msg)
             : acp_jsonrpc_result(m.id, json_pack("{s:s}", "echo", m.method ? m.method : ""));
    hx_buf out;
    hx_buf_init(&out, 1 << 22);
    if (reply && acp_jsonrpc_encode(reply, &out) == HX_OK) {
      HX_ASSERT(out.len > 0 && out.data[out.len - 1] == '\n');
      HX_ASSERT(memchr(out.data, '\n', out.len - 1) == NULL);
    }
    hx_buf_free(&out);
    json_decref(reply);
    json_decref(id);
    acp_msg_free(&m);
    (void)acp_stream_accept(&s, p, len, &e);
    p += len + (nl ? 1 : 0);
  }
  json_decref(acp_stream_message(&s));
  acp_stream_free(&s);
  return 0;
}

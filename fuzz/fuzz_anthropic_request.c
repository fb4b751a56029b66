/* fuzz_anthropic_request.c — an Anthropic /v1/messages body through the
 * strict JSON parser and the translator; when it translates, the upstream
 * chunk path runs too (the same bytes as a chat.completion.chunk). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "api/anthropic.h"
#include "base/json.h"

static int emit(void *ud, const char *ev, const json_t *data) {
  (void)ud;
  HX_ASSERT(ev != NULL && data != NULL);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *req = hx_json_parse((const char *)data, size, (hx_json_limits){1 << 20, 64}, NULL);
  if (!req)
    return 0;
  json_t *out = NULL;
  api_anth_info info;
  if (api_anth_request_translate(req, &out, &info, NULL) == HX_OK) {
    HX_ASSERT(json_is_array(json_object_get(out, "messages")));
    json_decref(out);
  } else {
    HX_ASSERT(out == NULL);
    memset(&info, 0, sizeof info);
    info.n_stop = 1;
    info.stop[0][0] = 'a';
  }
  api_anth_stream *s = api_anth_stream_new(&info, "msg_fuzz", emit, NULL);
  bool done = false;
  api_anth_stream_feed(s, req, &done, NULL);
  api_anth_stream_feed(s, req, &done, NULL);
  api_anth_stream_finish(s, NULL);
  json_decref(api_anth_stream_message(s));
  api_anth_stream_free(s);
  json_decref(req);
  return 0;
}

/* openai.c — OpenAI request checks and response helpers (openai.h). */
#include "api/openai.h"

#include <string.h>

#include "base/json.h"

hx_code api_openai_request_check(const json_t *req, api_openai_kind kind, const char **model,
                                 bool *stream, hx_err *err) {
  if (!json_is_object(req))
    return hx_err_set(err, HX_EINVAL, "request body must be a JSON object, not %s",
                      hx_json_type_name(req));
  const json_t *m = json_object_get(req, "model");
  if (!json_is_string(m) || json_string_length(m) == 0)
    return hx_err_set(err, HX_EINVAL, "\"model\" must be a non-empty string");
  if (kind == API_OPENAI_CHAT) {
    const json_t *msgs = json_object_get(req, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
      return hx_err_set(err, HX_EINVAL, "\"messages\" must be a non-empty array");
    size_t i;
    json_t *x;
    json_array_foreach(msgs, i, x) {
      if (!json_is_object(x) || !json_is_string(json_object_get(x, "role")))
        return hx_err_set(err, HX_EINVAL, "messages[%zu] must be an object with a string \"role\"",
                          i);
    }
  } else if (!json_object_get(req, "prompt")) {
    return hx_err_set(err, HX_EINVAL, "\"prompt\" is required");
  }
  const json_t *s = json_object_get(req, "stream");
  if (s && !json_is_null(s) && !json_is_boolean(s))
    return hx_err_set(err, HX_EINVAL, "\"stream\" must be a boolean");
  *model = json_string_value(m);
  *stream = json_is_true(s);
  return HX_OK;
}

void api_openai_request_want_usage(json_t *req) {
  json_t *so = json_object_get(req, "stream_options");
  if (!json_is_object(so)) {
    so = json_object();
    json_object_set_new(req, "stream_options", so);
  }
  json_object_set_new(so, "include_usage", json_true());
}

const char *api_openai_error_type(int status) {
  switch (status) {
  case 401:
    return "authentication_error";
  case 403:
    return "permission_error";
  case 404:
    return "not_found_error";
  case 408:
  case 504:
    return "timeout_error";
  case 429:
    return "rate_limit_error";
  default:
    return status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
  }
}

bool api_openai_usage(const json_t *obj, long *prompt, long *completion, long *cached) {
  const json_t *u = json_object_get(obj, "usage");
  if (!json_is_object(u))
    return false;
  const json_t *p = json_object_get(u, "prompt_tokens");
  const json_t *c = json_object_get(u, "completion_tokens");
  const json_t *k = json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
  if (json_is_integer(p))
    *prompt = (long)json_integer_value(p);
  if (json_is_integer(c))
    *completion = (long)json_integer_value(c);
  if (json_is_integer(k))
    *cached = (long)json_integer_value(k);
  return true;
}

bool api_openai_chunk_has_content(const json_t *chunk) {
  const json_t *ch = json_array_get(json_object_get(chunk, "choices"), 0);
  const json_t *d = json_object_get(ch, "delta");
  if (!d)
    return json_string_length(json_object_get(ch, "text")) > 0; /* completions */
  return json_string_length(json_object_get(d, "content")) > 0 ||
         json_string_length(json_object_get(d, "reasoning_content")) > 0 ||
         json_array_size(json_object_get(d, "tool_calls")) > 0;
}

json_t *api_openai_model_json(const char *id, long created_s, const char *owned_by) {
  return json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", "model", "created",
                   (json_int_t)created_s, "owned_by", owned_by ? owned_by : "helexa");
}

/* oai_request.c — OpenAI request validation (see oai_request.h). */
#include "neuron/oai_request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"

enum { TEXT_PARTS_BYTES_MAX = 64u << 20 };

typedef struct pctx {
  char *param;
  size_t cap;
  hx_err *err;
} pctx;

static hx_code fail(pctx *c, hx_code code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static hx_code fail(pctx *c, hx_code code, const char *param, const char *fmt, ...) {
  if (c->param && c->cap)
    snprintf(c->param, c->cap, "%s", param ? param : "");
  va_list ap;
  va_start(ap, fmt);
  hx_err_vset(c->err, code, fmt, ap);
  va_end(ap);
  return code;
}

static json_t *get(const json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_null(v) ? NULL : v;
}

static hx_code get_number(pctx *c, const json_t *root, const char *k, double lo, double hi,
                          float *out) {
  json_t *v = get(root, k);
  if (!v)
    return HX_OK;
  if (!json_is_number(v))
    return fail(c, HX_EINVAL, k, "\"%s\" must be a number, not %s", k, hx_json_type_name(v));
  double d = json_number_value(v);
  if (!isfinite(d) || d < lo || d > hi)
    return fail(c, HX_EINVAL, k, "\"%s\" must be between %g and %g (got %g)", k, lo, hi, d);
  *out = (float)d;
  return HX_OK;
}

static hx_code get_int(pctx *c, const json_t *root, const char *k, long long lo, long long hi,
                       long long *out, bool *present) {
  json_t *v = get(root, k);
  if (present)
    *present = v != NULL;
  if (!v)
    return HX_OK;
  if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
      fabs(json_real_value(v)) < 9e15)
    v = NULL; /* 5.0 is an integer to most clients */
  long long x;
  if (v == NULL)
    x = (long long)json_real_value(get(root, k));
  else if (json_is_integer(v))
    x = json_integer_value(v);
  else
    return fail(c, HX_EINVAL, k, "\"%s\" must be an integer, not %s", k,
                hx_json_type_name(get(root, k)));
  if (x < lo || x > hi)
    return fail(c, HX_EINVAL, k, "\"%s\" must be between %lld and %lld (got %lld)", k, lo, hi, x);
  *out = x;
  return HX_OK;
}

static hx_code get_bool(pctx *c, const json_t *root, const char *k, bool *out) {
  json_t *v = get(root, k);
  if (!v)
    return HX_OK;
  if (!json_is_boolean(v))
    return fail(c, HX_EINVAL, k, "\"%s\" must be a boolean, not %s", k, hx_json_type_name(v));
  *out = json_is_true(v);
  return HX_OK;
}

/* content: string | null | [{"type":"text","text":...}] → string or null
 * (new reference in *out). */
static hx_code content_normalize(pctx *c, const json_t *content, const char *path, json_t **out) {
  char p[96];
  if (!content || json_is_null(content)) {
    *out = json_null();
    return HX_OK;
  }
  if (json_is_string(content)) {
    *out = json_incref((json_t *)content);
    return HX_OK;
  }
  if (!json_is_array(content))
    return fail(c, HX_EINVAL, path, "\"%s\" must be a string, an array of parts or null, not %s",
                path, hx_json_type_name(content));
  hx_buf b;
  hx_buf_init(&b, TEXT_PARTS_BYTES_MAX);
  size_t i;
  json_t *part;
  json_array_foreach(content, i, part) {
    snprintf(p, sizeof p, "%s[%zu]", path, i);
    const char *type = json_string_value(json_object_get(part, "type"));
    if (!json_is_object(part) || !type) {
      hx_buf_free(&b);
      return fail(c, HX_EINVAL, p, "\"%s\" must be an object with a string \"type\"", p);
    }
    if (strcmp(type, "text") != 0) {
      hx_buf_free(&b);
      return fail(c, HX_EUNSUPPORTED, p,
                  "\"%s\": content parts of type \"%.40s\" are not supported (text only)", p, type);
    }
    const json_t *t = json_object_get(part, "text");
    if (!json_is_string(t)) {
      hx_buf_free(&b);
      return fail(c, HX_EINVAL, p, "\"%s.text\" must be a string", p);
    }
    if (hx_buf_append(&b, json_string_value(t), json_string_length(t)) != HX_OK) {
      hx_buf_free(&b);
      return fail(c, HX_ETOOLARGE, p, "\"%s\": text too large", p);
    }
  }
  *out = json_stringn(b.data ? b.data : "", b.len);
  hx_buf_free(&b);
  return *out ? HX_OK : fail(c, HX_ENOMEM, path, "out of memory");
}

static hx_code tool_calls_check(pctx *c, const json_t *calls, const char *path) {
  char p[128];
  if (!json_is_array(calls))
    return fail(c, HX_EINVAL, path, "\"%s\" must be an array", path);
  size_t i;
  json_t *tc;
  json_array_foreach(calls, i, tc) {
    snprintf(p, sizeof p, "%s[%zu]", path, i);
    json_t *fn = json_object_get(tc, "function");
    if (!json_is_object(tc) || !json_is_object(fn))
      return fail(c, HX_EINVAL, p, "\"%s\" must be an object with a \"function\" object", p);
    if (!json_is_string(json_object_get(fn, "name")))
      return fail(c, HX_EINVAL, p, "\"%s.function.name\" must be a string", p);
    json_t *args = json_object_get(fn, "arguments");
    if (args && !json_is_string(args) && !json_is_object(args))
      return fail(c, HX_EINVAL, p, "\"%s.function.arguments\" must be a JSON string or object", p);
  }
  return HX_OK;
}

static hx_code messages_parse(pctx *c, const json_t *msgs, json_t **out) {
  if (!msgs)
    return fail(c, HX_EINVAL, "messages", "\"messages\" is required");
  if (!json_is_array(msgs) || json_array_size(msgs) == 0)
    return fail(c, HX_EINVAL, "messages", "\"messages\" must be a non-empty array");
  if (json_array_size(msgs) > NEURON_REQUEST_MESSAGES_MAX)
    return fail(c, HX_EINVAL, "messages", "\"messages\" has more than %d entries",
                NEURON_REQUEST_MESSAGES_MAX);
  json_t *arr = json_array();
  size_t i;
  json_t *m;
  char p[96];
  json_array_foreach(msgs, i, m) {
    snprintf(p, sizeof p, "messages[%zu]", i);
    if (!json_is_object(m)) {
      json_decref(arr);
      return fail(c, HX_EINVAL, p, "\"%s\" must be an object, not %s", p, hx_json_type_name(m));
    }
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!role) {
      json_decref(arr);
      return fail(c, HX_EINVAL, p, "\"%s.role\" must be a string", p);
    }
    if (strcmp(role, "developer") == 0)
      role = "system";
    if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
        strcmp(role, "tool")) {
      json_decref(arr);
      return fail(c, HX_EINVAL, p,
                  "\"%s.role\" must be system, developer, user, assistant or tool (got \"%.40s\")",
                  p, role);
    }
    char cp[112];
    snprintf(cp, sizeof cp, "%s.content", p);
    json_t *content = NULL;
    hx_code rc = content_normalize(c, json_object_get(m, "content"), cp, &content);
    if (rc != HX_OK) {
      json_decref(arr);
      return rc;
    }
    json_t *nm = json_pack("{s:s,s:o}", "role", role, "content", content);
    json_t *tc = get(m, "tool_calls");
    json_t *rc_text = get(m, "reasoning_content");
    json_t *tcid = get(m, "tool_call_id");
    json_t *name = get(m, "name");
    char tp[112];
    snprintf(tp, sizeof tp, "%s.tool_calls", p);
    if (tc && strcmp(role, "assistant") == 0) {
      if ((rc = tool_calls_check(c, tc, tp)) != HX_OK) {
        json_decref(nm);
        json_decref(arr);
        return rc;
      }
      json_object_set(nm, "tool_calls", tc);
    }
    if (rc_text) {
      if (!json_is_string(rc_text)) {
        json_decref(nm);
        json_decref(arr);
        return fail(c, HX_EINVAL, p, "\"%s.reasoning_content\" must be a string", p);
      }
      json_object_set(nm, "reasoning_content", rc_text);
    }
    if (tcid && json_is_string(tcid))
      json_object_set(nm, "tool_call_id", tcid);
    if (name && json_is_string(name))
      json_object_set(nm, "name", name);
    if (json_is_null(content) && strcmp(role, "assistant") != 0) {
      json_decref(nm);
      json_decref(arr);
      return fail(c, HX_EINVAL, cp, "\"%s\" is required for role %s", cp, role);
    }
    json_array_append_new(arr, nm);
  }
  *out = arr;
  return HX_OK;
}

static hx_code tools_parse(pctx *c, neuron_oai_request *r) {
  json_t *tools = get(r->root, "tools");
  if (tools) {
    if (!json_is_array(tools))
      return fail(c, HX_EINVAL, "tools", "\"tools\" must be an array");
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
      char p[48];
      snprintf(p, sizeof p, "tools[%zu]", i);
      const char *type = json_string_value(json_object_get(t, "type"));
      json_t *fn = json_object_get(t, "function");
      if (!json_is_object(t) || !type || strcmp(type, "function") != 0 || !json_is_object(fn))
        return fail(c, HX_EINVAL, p, "\"%s\" must be {\"type\":\"function\",\"function\":{...}}",
                    p);
      if (!json_is_string(json_object_get(fn, "name")))
        return fail(c, HX_EINVAL, p, "\"%s.function.name\" must be a string", p);
      json_t *params = json_object_get(fn, "parameters");
      if (params && !json_is_object(params))
        return fail(c, HX_EINVAL, p, "\"%s.function.parameters\" must be an object", p);
    }
    if (json_array_size(tools) > 0)
      r->tools = tools;
  }
  json_t *tc = get(r->root, "tool_choice");
  if (!tc)
    return HX_OK;
  if (json_is_string(tc)) {
    const char *s = json_string_value(tc);
    if (strcmp(s, "auto") == 0)
      r->tool_choice = NEURON_TOOL_CHOICE_AUTO;
    else if (strcmp(s, "none") == 0)
      r->tool_choice = NEURON_TOOL_CHOICE_NONE;
    else if (strcmp(s, "required") == 0)
      r->tool_choice = NEURON_TOOL_CHOICE_REQUIRED;
    else
      return fail(c, HX_EINVAL, "tool_choice",
                  "\"tool_choice\" must be auto, none, required or a function object");
  } else if (json_is_object(tc)) {
    const char *name = json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
    if (!name)
      return fail(c, HX_EINVAL, "tool_choice",
                  "\"tool_choice\" object must be {\"type\":\"function\",\"function\":{\"name\"}}");
    r->tool_choice = NEURON_TOOL_CHOICE_NAMED;
    r->tool_choice_name = name;
  } else {
    return fail(c, HX_EINVAL, "tool_choice", "\"tool_choice\" must be a string or an object");
  }
  if (r->tool_choice != NEURON_TOOL_CHOICE_AUTO && r->tool_choice != NEURON_TOOL_CHOICE_NONE &&
      !r->tools)
    return fail(c, HX_EINVAL, "tool_choice", "\"tool_choice\" needs a non-empty \"tools\"");
  if (r->tool_choice == NEURON_TOOL_CHOICE_NAMED) {
    bool found = false;
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t) {
      const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
      found |= n && strcmp(n, r->tool_choice_name) == 0;
    }
    if (!found)
      return fail(c, HX_EINVAL, "tool_choice", "\"tool_choice\" names \"%.80s\", not in \"tools\"",
                  r->tool_choice_name);
  }
  if (r->tool_choice == NEURON_TOOL_CHOICE_NONE)
    r->tools = NULL;
  return HX_OK;
}

static hx_code unsupported(pctx *c, const json_t *root, bool chat) {
  json_t *v;
  if ((v = get(root, "n")) && !(json_is_integer(v) && json_integer_value(v) == 1)) {
    if (!json_is_integer(v))
      return fail(c, HX_EINVAL, "n", "\"n\" must be an integer");
    return fail(c, HX_EUNSUPPORTED, "n",
                "\"n\" must be 1: several choices per request are not "
                "supported");
  }
  if ((v = get(root, "best_of")) && !(json_is_integer(v) && json_integer_value(v) == 1))
    return fail(c, HX_EUNSUPPORTED, "best_of", "\"best_of\" other than 1 is not supported");
  if ((v = get(root, "echo")) && !json_is_false(v))
    return fail(c, HX_EUNSUPPORTED, "echo", "\"echo\" is not supported");
  if ((v = get(root, "suffix")))
    return fail(c, HX_EUNSUPPORTED, "suffix", "\"suffix\" (insertion) is not supported");
  if (get(root, "functions") || get(root, "function_call"))
    return fail(c, HX_EUNSUPPORTED, get(root, "functions") ? "functions" : "function_call",
                "the legacy \"functions\"/\"function_call\" fields are not supported; use "
                "\"tools\" and \"tool_choice\"");
  if ((v = get(root, "audio")))
    return fail(c, HX_EUNSUPPORTED, "audio", "\"audio\" output is not supported");
  if ((v = get(root, "prediction")))
    return fail(c, HX_EUNSUPPORTED, "prediction", "\"prediction\" is not supported");
  if ((v = get(root, "modalities"))) {
    size_t i;
    json_t *m;
    if (!json_is_array(v))
      return fail(c, HX_EINVAL, "modalities", "\"modalities\" must be an array");
    json_array_foreach(
        v, i, m) if (!json_is_string(m) ||
                     strcmp(json_string_value(m),
                            "text")) return fail(c, HX_EUNSUPPORTED, "modalities",
                                                 "only the \"text\" modality is supported");
  }
  if ((v = get(root, "response_format"))) {
    const char *t = json_string_value(json_object_get(v, "type"));
    if (!json_is_object(v) || !t)
      return fail(c, HX_EINVAL, "response_format",
                  "\"response_format\" must be an object with a \"type\"");
    if (strcmp(t, "text") != 0)
      return fail(c, HX_EUNSUPPORTED, "response_format",
                  "\"response_format\" of type \"%.40s\" is not supported (text only)", t);
  }
  (void)chat;
  return HX_OK;
}

static hx_code stop_parse(pctx *c, neuron_oai_request *r) {
  json_t *v = get(r->root, "stop");
  if (!v)
    return HX_OK;
  if (json_is_string(v)) {
    if (json_string_length(v) == 0)
      return HX_OK;
    v = json_pack("[O]", v);
    json_object_set_new(r->root, "stop", v);
  }
  if (!json_is_array(v))
    return fail(c, HX_EINVAL, "stop", "\"stop\" must be a string or an array of strings");
  if (json_array_size(v) > HX_STOP_STRINGS_MAX)
    return fail(c, HX_EINVAL, "stop", "\"stop\" has more than %d strings", HX_STOP_STRINGS_MAX);
  size_t i;
  json_t *s;
  json_array_foreach(v, i, s) {
    if (!json_is_string(s))
      return fail(c, HX_EINVAL, "stop", "\"stop[%zu]\" must be a string", i);
    size_t n = json_string_length(s);
    if (n > HX_STOP_STRING_BYTES_MAX || strlen(json_string_value(s)) != n)
      return fail(c, HX_EINVAL, "stop", "\"stop[%zu]\" must be 1..%d bytes without NUL", i,
                  HX_STOP_STRING_BYTES_MAX);
    if (n == 0)
      continue;
    r->stop[r->n_stop++] = json_string_value(s);
  }
  return HX_OK;
}

static hx_code sampling_parse(pctx *c, neuron_oai_request *r) {
  hx_sampling_params *sp = &r->sampling;
  /* The documented defaults of sampler.h (kept here so that validating a
     request needs no engine code). */
  memset(sp, 0, sizeof *sp);
  sp->temperature = 1.0f;
  sp->top_p = 1.0f;
  sp->repetition_penalty = 1.0f;
  const json_t *o = r->root;
  hx_code rc;
  if ((rc = get_number(c, o, "temperature", 0, 2, &sp->temperature)) ||
      (rc = get_number(c, o, "top_p", 0, 1, &sp->top_p)) ||
      (rc = get_number(c, o, "min_p", 0, 1, &sp->min_p)) ||
      (rc = get_number(c, o, "repetition_penalty", 0.01, 10, &sp->repetition_penalty)) ||
      (rc = get_number(c, o, "presence_penalty", -2, 2, &sp->presence_penalty)) ||
      (rc = get_number(c, o, "frequency_penalty", -2, 2, &sp->frequency_penalty)))
    return rc;
  if (get(o, "temperature") && sp->temperature <= 0)
    sp->greedy = true;
  long long x;
  bool present;
  if ((rc = get_int(c, o, "top_k", -1, 1 << 20, &x, &present)))
    return rc;
  if (present)
    sp->top_k = x < 0 ? 0 : (int)x;
  if ((rc = get_int(c, o, "seed", INT64_MIN, INT64_MAX, &x, &r->has_seed)))
    return rc;
  if (r->has_seed)
    sp->seed = (uint64_t)x;
  if ((rc = get_int(c, o, "max_tokens", 1, 1 << 24, &x, &present)))
    return rc;
  if (present)
    r->max_tokens = (int)x;
  if ((rc = get_int(c, o, "max_completion_tokens", 1, 1 << 24, &x, &present)))
    return rc;
  if (present)
    r->max_tokens = (int)x;
  sp->max_tokens = r->max_tokens;
  if ((rc = get_bool(c, o, "ignore_eos", &sp->ignore_eos)))
    return rc;
  /* logprobs: a bool in chat, an int 0..5 (the number of alternatives) in completions */
  json_t *lp = get(o, "logprobs");
  if (lp && r->chat) {
    if ((rc = get_bool(c, o, "logprobs", &r->logprobs)))
      return rc;
    if ((rc = get_int(c, o, "top_logprobs", 0, HX_SAMPLER_TOPK_MAX, &x, &present)))
      return rc;
    if (present)
      r->top_logprobs = (int)x;
  } else if (lp) {
    if ((rc = get_int(c, o, "logprobs", 0, HX_SAMPLER_TOPK_MAX, &x, &present)))
      return rc;
    r->logprobs = true;
    r->top_logprobs = (int)x;
  }
  if (!r->chat && get(o, "top_logprobs"))
    return fail(c, HX_EINVAL, "top_logprobs",
                "\"top_logprobs\" belongs to chat; use an integer "
                "\"logprobs\" in completions");
  if (r->chat && !r->logprobs && get(o, "top_logprobs") && r->top_logprobs > 0)
    return fail(c, HX_EINVAL, "top_logprobs", "\"top_logprobs\" needs \"logprobs\": true");
  sp->n_logprobs = r->logprobs ? r->top_logprobs : 0;
  json_t *lb = get(o, "logit_bias");
  if (lb) {
    if (!json_is_object(lb))
      return fail(c, HX_EINVAL, "logit_bias", "\"logit_bias\" must be an object");
    if (json_object_size(lb) > HX_SAMPLER_BIAS_MAX)
      return fail(c, HX_EINVAL, "logit_bias", "\"logit_bias\" has more than %d entries",
                  HX_SAMPLER_BIAS_MAX);
    const char *k;
    json_t *v;
    json_object_foreach(lb, k, v) {
      char *end = NULL;
      long id = strtol(k, &end, 10);
      if (!*k || *end || id < 0 || id > (1L << 24))
        return fail(c, HX_EINVAL, "logit_bias", "\"logit_bias\" key \"%.32s\" is not a token id",
                    k);
      if (!json_is_number(v) || json_number_value(v) < -100 || json_number_value(v) > 100)
        return fail(c, HX_EINVAL, "logit_bias", "\"logit_bias\" values must be -100..100");
      double b = json_number_value(v);
      sp->bias[sp->n_bias].id = (int32_t)id;
      sp->bias[sp->n_bias].bias = b <= -100 ? -INFINITY : (float)b;
      sp->n_bias++;
    }
  }
  return HX_OK;
}

hx_code neuron_oai_request_parse(const char *body, size_t len, bool chat, neuron_oai_request *r,
                                 char *param, size_t param_cap, hx_err *err) {
  memset(r, 0, sizeof *r);
  r->chat = chat;
  pctx c = {param, param_cap, err};
  if (param && param_cap)
    param[0] = '\0';
  hx_json_limits lim = {len + 1, NEURON_REQUEST_BODY_DEPTH_MAX};
  r->root = hx_json_parse(body, len, lim, err);
  if (!r->root) {
    hx_err_wrap(err, "request body is not valid JSON");
    return HX_EINVAL;
  }
  if (!json_is_object(r->root))
    return fail(&c, HX_EINVAL, NULL, "request body must be a JSON object, not %s",
                hx_json_type_name(r->root));
  json_t *model = get(r->root, "model");
  if (!model)
    return fail(&c, HX_EINVAL, "model", "\"model\" is required");
  if (!json_is_string(model) || json_string_length(model) == 0 || json_string_length(model) > 512)
    return fail(&c, HX_EINVAL, "model", "\"model\" must be a non-empty string");
  r->model = json_string_value(model);
  hx_code rc;
  if ((rc = unsupported(&c, r->root, chat)))
    return rc;
  if (chat) {
    if ((rc = messages_parse(&c, get(r->root, "messages"), &r->messages)))
      return rc;
    if ((rc = tools_parse(&c, r)))
      return rc;
    json_t *kw = get(r->root, "chat_template_kwargs");
    if (kw && !json_is_object(kw))
      return fail(&c, HX_EINVAL, "chat_template_kwargs",
                  "\"chat_template_kwargs\" must be an object");
    r->template_kwargs = kw;
    if ((rc = get_bool(&c, r->root, "parallel_tool_calls", &(bool){true})))
      return rc;
  } else {
    json_t *p = get(r->root, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1)
      p = json_array_get(p, 0);
    if (!p)
      return fail(&c, HX_EINVAL, "prompt", "\"prompt\" is required");
    if (json_is_array(p))
      return fail(&c, HX_EUNSUPPORTED, "prompt",
                  "\"prompt\" must be one string (batches of prompts are not supported)");
    if (!json_is_string(p))
      return fail(&c, HX_EINVAL, "prompt", "\"prompt\" must be a string, not %s",
                  hx_json_type_name(p));
    r->prompt = json_string_value(p);
    if (strlen(r->prompt) != json_string_length(p))
      return fail(&c, HX_EINVAL, "prompt", "\"prompt\" must not contain NUL characters");
  }
  if ((rc = get_bool(&c, r->root, "stream", &r->stream)))
    return rc;
  json_t *so = get(r->root, "stream_options");
  if (so) {
    if (!json_is_object(so))
      return fail(&c, HX_EINVAL, "stream_options", "\"stream_options\" must be an object");
    if ((rc = get_bool(&c, so, "include_usage", &r->include_usage)))
      return fail(&c, HX_EINVAL, "stream_options.include_usage",
                  "\"stream_options.include_usage\" must be a boolean");
  }
  if ((rc = stop_parse(&c, r)))
    return rc;
  return sampling_parse(&c, r);
}

void neuron_oai_request_free(neuron_oai_request *r) {
  if (!r)
    return;
  json_decref(r->messages);
  json_decref(r->root);
  memset(r, 0, sizeof *r);
}

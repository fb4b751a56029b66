/* generate.c — what a device worker does for one request: chat template,
 * tokenization, slot choice (prefix reuse), generation with incremental
 * detokenization, stop strings, reasoning / tool-call parsing, and the
 * OpenAI response (one JSON document, or SSE chunks as tokens come).
 *
 * Prefix reuse: a model keeps n_slots engine slots; each holds the KV of the
 * last request that ran on it. A request takes the slot whose tokens share
 * the longest prefix with its prompt (least recently used on ties), so the
 * next turn of a conversation prefills only what is new. Memory is bounded by
 * n_slots (sized from engine.prefix_cache_mb at load). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "engine/output_parser.h"
#include "neuron/daemon_impl.h"

enum { SSE_WRITE_TIMEOUT_MS = 30000 };

/* ------------------------------------------------------------- prompt */

hx_code neuron_render_chat(nmodel *m, const json_t *messages, const json_t *tools,
                           const json_t *kwargs, bool add_generation_prompt, char **out,
                           size_t *out_len, hx_err *err) {
  if (!m->tmpl)
    return hx_err_set(err, HX_EUNSUPPORTED, "model \"%s\" has no usable chat template", m->id);
  size_t n;
  const char *bos = NULL, *eos = NULL;
  char bos_s[256], eos_s[256];
  int32_t id = tokenizer_bos_id(m->tok);
  const char *t;
  if (id >= 0 && (t = tokenizer_id_to_token(m->tok, id, &n)) && n < sizeof bos_s) {
    memcpy(bos_s, t, n);
    bos_s[n] = '\0';
    bos = bos_s;
  }
  id = tokenizer_eos_id(m->tok);
  if (id >= 0 && (t = tokenizer_id_to_token(m->tok, id, &n)) && n < sizeof eos_s) {
    memcpy(eos_s, t, n);
    eos_s[n] = '\0';
    eos = eos_s;
  }
  /* OpenAI clients send assistant turns that only call tools with
   * "content": null; templates (Qwen3's among them) test or slice content as
   * a string, so such turns are rendered with "" as the serving engines do. */
  json_t *msgs = json_deep_copy(messages);
  if (!msgs)
    return hx_err_set(err, HX_ENOMEM, "out of memory copying messages");
  size_t i;
  json_t *msg;
  json_array_foreach(msgs, i, msg) {
    json_t *c = json_object_get(msg, "content");
    if (json_is_object(msg) && (!c || json_is_null(c)))
      json_object_set_new(msg, "content", json_string(""));
  }
  hx_chat_render_args a = {
      .messages = msgs,
      .tools = tools,
      .add_generation_prompt = add_generation_prompt,
      .kwargs = kwargs,
      .bos_token = bos,
      .eos_token = eos,
      .tool_arguments_parse = true,
      .now_unix_s = -1,
  };
  hx_code rc = hx_chat_template_render(m->tmpl, &a, out, out_len, err);
  json_decref(msgs);
  return rc;
}

/* ------------------------------------------------------------- slots */

static int slot_pick(nmodel *m, const int32_t *prompt, int n_prompt, bool reuse) {
  int best = 0, best_len = -1;
  for (int i = 0; i < m->n_slots; i++) {
    int n = 0;
    const int32_t *t = hx_engine_slot_tokens(m->slots[i], &n);
    int k = 0;
    while (k < n && k < n_prompt && t[k] == prompt[k])
      k++;
    if (!reuse)
      k = 0;
    if (k > best_len || (k == best_len && m->slot_used_ns[i] < m->slot_used_ns[best])) {
      best = i;
      best_len = k;
    }
  }
  if (!reuse)
    hx_engine_slot_reset(m->slots[best]);
  m->slot_used_ns[best] = hx_time_mono_ns();
  return best;
}

/* ------------------------------------------------------------- generation state */

typedef struct gen {
  gen_job *j;
  nmodel *m;
  bool chat, stream;
  char id[48];
  int64_t created;
  tokenizer_decoder dec;
  hx_stop_matcher stop;
  bool stop_hit;
  hx_output_parser *parser;
  char *tmp; /* decoder output */
  size_t tmp_cap;
  char *safe; /* stop-matcher output */
  size_t safe_cap;
  hx_buf content, reasoning;
  json_t *tool_calls; /* non-stream: [{id,type,function:{name,arguments}}] */
  int n_tool_calls;
  json_t *lp_content; /* chat logprobs entries (non-stream: all; stream: pending) */
  json_t *lp_tokens, *lp_token_lps, *lp_tops; /* completions logprobs */
  bool sent_role;
  bool write_failed;
  uint64_t t_start_ns, t_first_ns, t_last_ns;
  uint64_t emit_ns; /* time spent in on_token: detokenize, parse, JSON, queue */
  int n_gen;
} gen;

static hx_code sse_send(gen *g, json_t *chunk) {
  if (g->write_failed) {
    json_decref(chunk);
    return HX_ECANCELLED;
  }
  hx_code rc = hx_http_stream_write_sse_json(g->j->req, chunk, SSE_WRITE_TIMEOUT_MS);
  json_decref(chunk);
  if (rc != HX_OK) {
    g->write_failed = true;
    atomic_store(&g->j->cancel, true);
  }
  return rc;
}

static json_t *chunk_new(gen *g, json_t *delta_or_text, const char *finish) {
  json_t *choice;
  if (g->chat)
    choice = json_pack("{s:i,s:o,s:o}", "index", 0, "delta", delta_or_text, "finish_reason",
                       finish ? json_string(finish) : json_null());
  else
    choice = json_pack("{s:i,s:o,s:o}", "index", 0, "text", delta_or_text, "finish_reason",
                       finish ? json_string(finish) : json_null());
  if (g->chat && g->lp_content && json_array_size(g->lp_content) > 0) {
    json_object_set_new(choice, "logprobs", json_pack("{s:O}", "content", g->lp_content));
    json_array_clear(g->lp_content);
  } else if (!g->chat && g->lp_tokens && json_array_size(g->lp_tokens) > 0) {
    json_object_set_new(choice, "logprobs",
                        json_pack("{s:O,s:O,s:O}", "tokens", g->lp_tokens, "token_logprobs",
                                  g->lp_token_lps, "top_logprobs", g->lp_tops));
    json_array_clear(g->lp_tokens);
    json_array_clear(g->lp_token_lps);
    json_array_clear(g->lp_tops);
  } else {
    json_object_set_new(choice, "logprobs", json_null());
  }
  return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", g->id, "object",
                   g->chat ? "chat.completion.chunk" : "text_completion", "created",
                   (json_int_t)g->created, "model", g->m->id, "choices", choice);
}

static void delta_send(gen *g, json_t *delta) {
  if (g->chat && !g->sent_role) {
    json_object_set_new(delta, "role", json_string("assistant"));
    g->sent_role = true;
  }
  sse_send(g, chunk_new(g, delta, NULL));
}

static int on_event(void *user, const hx_output_event *ev) {
  gen *g = user;
  switch (ev->kind) {
  case HX_OUTPUT_CONTENT:
  case HX_OUTPUT_REASONING: {
    bool r = ev->kind == HX_OUTPUT_REASONING;
    if (g->stream) {
      json_t *s = neuron_json_string_lossy(ev->text, ev->len);
      delta_send(g, json_pack("{s:o}", r ? "reasoning_content" : "content", s));
    } else {
      hx_buf_append(r ? &g->reasoning : &g->content, ev->text, ev->len);
    }
    break;
  }
  case HX_OUTPUT_TOOL_START:
    g->n_tool_calls++;
    if (g->stream)
      delta_send(g, json_pack("{s:[{s:i,s:s,s:s,s:{s:s,s:s}}]}", "tool_calls", "index", ev->index,
                              "id", ev->id, "type", "function", "function", "name", ev->name,
                              "arguments", ""));
    else
      json_array_append_new(g->tool_calls,
                            json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", ev->id, "type", "function",
                                      "function", "name", ev->name, "arguments", ""));
    break;
  case HX_OUTPUT_TOOL_ARGS: {
    json_t *s = neuron_json_string_lossy(ev->text, ev->len);
    if (g->stream) {
      delta_send(g, json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls", "index", ev->index, "function",
                              "arguments", s));
    } else {
      json_t *fn = json_object_get(json_array_get(g->tool_calls, (size_t)ev->index), "function");
      if (fn) {
        hx_buf b;
        hx_buf_init(&b, SIZE_MAX / 2);
        hx_buf_append_str(&b, json_string_value(json_object_get(fn, "arguments")));
        hx_buf_append_str(&b, json_string_value(s));
        json_object_set_new(fn, "arguments", json_stringn(b.data ? b.data : "", b.len));
        hx_buf_free(&b);
      }
      json_decref(s);
    }
    break;
  }
  case HX_OUTPUT_TOOL_END:
    break;
  }
  return g->write_failed ? 1 : 0;
}

/* Text that passed the stop matcher goes to the parser (chat) or out. */
static void text_emit(gen *g, const char *text, size_t len) {
  if (len == 0)
    return;
  if (g->chat) {
    hx_err err = {0};
    hx_output_parser_feed(g->parser, text, len, on_event, g, &err);
  } else if (g->stream) {
    sse_send(g, chunk_new(g, neuron_json_string_lossy(text, len), NULL));
  } else {
    hx_buf_append(&g->content, text, len);
  }
}

static json_t *token_json(const tokenizer *tok, int32_t id, float lp, bool with_bytes) {
  size_t n = 0;
  const char *b = tokenizer_id_to_bytes(tok, id, &n);
  if (!b) {
    b = "";
    n = 0;
  }
  json_t *j = json_pack("{s:o,s:f}", "token", neuron_json_string_lossy(b, n), "logprob",
                        isfinite(lp) ? (double)lp : -9999.0);
  if (with_bytes) {
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
      json_array_append_new(arr, json_integer((unsigned char)b[i]));
    json_object_set_new(j, "bytes", arr);
  }
  return j;
}

static void logprobs_record(gen *g, const hx_gen_token *t) {
  const tokenizer *tok = g->m->tok;
  if (g->chat) {
    json_t *e = token_json(tok, t->id, t->logprob, true);
    json_t *tops = json_array();
    for (int i = 0; i < t->n_top; i++)
      json_array_append_new(tops, token_json(tok, t->top_ids[i], t->top_logprobs[i], true));
    json_object_set_new(e, "top_logprobs", tops);
    json_array_append_new(g->lp_content, e);
  } else {
    json_t *e = token_json(tok, t->id, t->logprob, false);
    json_array_append(g->lp_tokens, json_object_get(e, "token"));
    json_array_append(g->lp_token_lps, json_object_get(e, "logprob"));
    json_decref(e);
    json_t *tops = json_object();
    for (int i = 0; i < t->n_top; i++) {
      json_t *te = token_json(tok, t->top_ids[i], t->top_logprobs[i], false);
      json_object_set(tops, json_string_value(json_object_get(te, "token")),
                      json_object_get(te, "logprob"));
      json_decref(te);
    }
    json_array_append_new(g->lp_tops, tops);
  }
}

static bool on_token_emit(gen *g, const hx_gen_token *t);

static bool on_token(void *user, const hx_gen_token *t) {
  gen *g = user;
  uint64_t t0 = hx_time_mono_ns();
  bool go_on = on_token_emit(g, t);
  g->emit_ns += hx_time_mono_ns() - t0;
  return go_on;
}

static bool on_token_emit(gen *g, const hx_gen_token *t) {
  uint64_t now = hx_time_mono_ns();
  if (g->n_gen == 0)
    g->t_first_ns = now;
  g->t_last_ns = now;
  g->n_gen++;
  if (g->j->r.logprobs)
    logprobs_record(g, t);
  size_t n = 0;
  hx_err err = {0};
  if (tokenizer_decoder_push(&g->dec, t->id, g->tmp, g->tmp_cap, &n, &err) != HX_OK)
    n = 0;
  size_t safe_n = 0;
  bool hit = hx_stop_matcher_feed(&g->stop, g->tmp, n, g->safe, g->safe_cap, &safe_n);
  text_emit(g, g->safe, safe_n);
  if (hit) {
    g->stop_hit = true;
    return false;
  }
  return !g->write_failed && !atomic_load(&g->j->cancel);
}

static void gen_free(gen *g) {
  hx_output_parser_free(g->parser);
  free(g->tmp);
  free(g->safe);
  hx_buf_free(&g->content);
  hx_buf_free(&g->reasoning);
  json_decref(g->tool_calls);
  json_decref(g->lp_content);
  json_decref(g->lp_tokens);
  json_decref(g->lp_token_lps);
  json_decref(g->lp_tops);
}

/* ------------------------------------------------------------- the request */

static void respond_code(gen_job *j, hx_code rc, const char *param, const char *msg) {
  const char *type, *code;
  int status = neuron_status_of(rc, &type, &code);
  if (rc == HX_ETOOLARGE)
    code = "context_length_exceeded";
  hx_http_respond_error(j->req, status, type, code, param, 0, "%s", msg);
}

static void metrics_outcome(gen_job *j, const char *endpoint, const char *outcome) {
  const char *lab[] = {j->m->id, endpoint, outcome};
  hx_metric_inc(j->d->m.requests, lab);
}

/* Prefixes that force a tool call when tool_choice is required / named. */
static void forced_prefix(const neuron_oai_request *r, hx_chat_family fam, char *out, size_t cap) {
  out[0] = '\0';
  if (r->tool_choice == NEURON_TOOL_CHOICE_REQUIRED)
    snprintf(out, cap, "<tool_call>\n");
  else if (r->tool_choice == NEURON_TOOL_CHOICE_NAMED && fam == HX_CHAT_FAMILY_QWEN_XML)
    snprintf(out, cap, "<tool_call>\n<function=%s>\n", r->tool_choice_name);
  else if (r->tool_choice == NEURON_TOOL_CHOICE_NAMED)
    snprintf(out, cap, "<tool_call>\n{\"name\": \"%s\", \"arguments\": ", r->tool_choice_name);
}

static void run_generation(gen_job *j) {
  nmodel *m = j->m;
  neuron_daemon *d = j->d;
  neuron_oai_request *r = &j->r;
  bool chat = j->kind == JOB_CHAT;
  const char *endpoint = chat ? "chat" : "completions";
  uint64_t t_start = hx_time_mono_ns();
  const char *mlab[] = {m->id};
  hx_metric_observe(d->m.queue, mlab, (double)(t_start - j->enqueued_ns) / 1e9);
  hx_err err = {0};
  char *prompt = NULL;
  size_t prompt_len = 0;
  char forced[512] = "";
  bool think_open = false;
  hx_chat_family fam = m->tmpl ? hx_chat_template_family(m->tmpl) : HX_CHAT_FAMILY_GENERIC;
  if (chat) {
    hx_code rc = neuron_render_chat(m, r->messages, r->tools, r->template_kwargs, true, &prompt,
                                    &prompt_len, &err);
    if (rc != HX_OK) {
      metrics_outcome(j, endpoint, "invalid");
      respond_code(j, rc == HX_EUNSUPPORTED ? HX_EUNSUPPORTED : HX_EINVAL, "messages", err.msg);
      return;
    }
    think_open = hx_chat_prompt_think_open(prompt, prompt_len);
    if (r->tools && !think_open)
      forced_prefix(r, fam, forced, sizeof forced);
    if (forced[0]) {
      size_t fl = strlen(forced);
      char *p2 = realloc(prompt, prompt_len + fl + 1);
      if (p2) {
        memcpy(p2 + prompt_len, forced, fl + 1);
        prompt = p2;
        prompt_len += fl;
      }
    }
  } else {
    prompt = strdup(r->prompt);
    prompt_len = strlen(r->prompt);
  }
  int32_t *ids = NULL;
  size_t n_ids = 0;
  hx_code rc = prompt ? tokenizer_encode(m->tok, prompt, prompt_len, true, &ids, &n_ids, &err)
                      : hx_err_set(&err, HX_ENOMEM, "out of memory");
  free(prompt);
  if (rc == HX_OK && n_ids == 0)
    rc = hx_err_set(&err, HX_EINVAL, "the prompt is empty");
  else if (rc == HX_OK && n_ids >= (size_t)m->info.n_ctx)
    rc = hx_err_set(&err, HX_ETOOLARGE, "the prompt has %zu tokens; the model's context is %d",
                    n_ids, m->info.n_ctx);
  if (rc != HX_OK) {
    free(ids);
    metrics_outcome(j, endpoint, "invalid");
    respond_code(j, rc, chat ? "messages" : "prompt", err.msg);
    return;
  }
  int room = m->info.n_ctx - (int)n_ids;
  if (r->max_tokens > room && r->max_tokens > 0) {
    /* OpenAI: a request that cannot fit is refused, not truncated */
    free(ids);
    char msg[256];
    snprintf(msg, sizeof msg,
             "max_tokens %d + %zu prompt tokens exceed the model's context of %d tokens",
             r->max_tokens, n_ids, m->info.n_ctx);
    metrics_outcome(j, endpoint, "invalid");
    respond_code(j, HX_ETOOLARGE, "max_tokens", msg);
    return;
  }

  gen g = {.j = j, .m = m, .chat = chat, .stream = r->stream, .t_start_ns = t_start};
  uint64_t seq = atomic_fetch_add(&d->seq, 1);
  snprintf(g.id, sizeof g.id, "%s-%" PRIx64 "%06" PRIx64, chat ? "chatcmpl" : "cmpl",
           hx_time_wall_ms(), seq & 0xffffff);
  g.created = (int64_t)hx_time_wall_s();
  tokenizer_decoder_init(&g.dec, m->tok, true);
  g.tmp_cap = tokenizer_decoder_out_max(m->tok);
  g.tmp = malloc(g.tmp_cap);
  g.safe_cap = g.tmp_cap + HX_STOP_STRING_BYTES_MAX + 16;
  g.safe = malloc(g.safe_cap);
  hx_buf_init(&g.content, 64u << 20);
  hx_buf_init(&g.reasoning, 64u << 20);
  g.tool_calls = json_array();
  if (r->logprobs) {
    g.lp_content = json_array();
    g.lp_tokens = json_array();
    g.lp_token_lps = json_array();
    g.lp_tops = json_array();
  }
  rc = hx_stop_matcher_init(&g.stop, r->stop, r->n_stop, &err);
  if (rc == HX_OK && chat) {
    hx_output_parser_config pc = {
        .family = fam,
        .think_open = think_open,
        .parse_think = true,
        .parse_tools = r->tools != NULL,
        .tools = r->tools,
    };
    rc = hx_output_parser_init(&g.parser, &pc, &err);
  }
  if (rc != HX_OK || !g.tmp || !g.safe) {
    free(ids);
    gen_free(&g);
    metrics_outcome(j, endpoint, "invalid");
    respond_code(j, rc ? rc : HX_ENOMEM, "stop", err.msg[0] ? err.msg : "out of memory");
    return;
  }
  if (r->stream) {
    rc = hx_http_stream_begin(j->req, 200, "text/event-stream", NULL, 0);
    if (rc != HX_OK)
      g.write_failed = true;
  }
  if (forced[0]) { /* the forced prefix is part of the model's output */
    hx_err perr = {0};
    hx_output_parser_feed(g.parser, forced, strlen(forced), on_event, &g, &perr);
  }

  hx_sampling_params sp = r->sampling;
  if (!r->has_seed) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s)
      s = hx_time_mono_ns();
    sp.seed = s;
  }
  sp.max_tokens = r->max_tokens > 0 ? r->max_tokens : room;
  bool reuse = d->cfg->engine.prefix_cache_mb > 0;
  int slot = slot_pick(m, ids, (int)n_ids, reuse);
  hx_gen_result res = {0};
  hx_err gerr = {0};
  hx_code grc = hx_engine_generate(m->eng, m->slots[slot], ids, (int)n_ids, &sp, on_token, &g,
                                   &j->cancel, &res, &gerr);
  free(ids);
  if (grc != HX_OK)
    hx_engine_slot_reset(m->slots[slot]); /* never reuse a state that failed */

  /* Flush what is held back. */
  if (grc == HX_OK && !g.stop_hit && res.finish != HX_FINISH_CANCELLED) {
    size_t n = tokenizer_decoder_flush(&g.dec, g.tmp, g.tmp_cap);
    size_t safe_n = 0;
    bool hit = hx_stop_matcher_feed(&g.stop, g.tmp, n, g.safe, g.safe_cap, &safe_n);
    text_emit(&g, g.safe, safe_n);
    if (!hit) {
      safe_n = hx_stop_matcher_flush(&g.stop, g.safe, g.safe_cap);
      text_emit(&g, g.safe, safe_n);
    }
  }
  if (chat && grc == HX_OK) {
    hx_err perr = {0};
    hx_output_parser_finish(g.parser, on_event, &g, &perr);
  }

  bool cancelled = grc == HX_OK && (res.finish == HX_FINISH_CANCELLED ||
                                    (res.finish == HX_FINISH_CALLBACK && !g.stop_hit));
  const char *finish = res.finish == HX_FINISH_LENGTH ? "length" : "stop";
  if (chat && g.n_tool_calls > 0 && res.finish != HX_FINISH_LENGTH)
    finish = "tool_calls";
  int n_prompt = res.n_prompt ? res.n_prompt : (int)n_ids;
  json_t *usage = json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", n_prompt, "completion_tokens",
                            res.n_generated, "total_tokens", n_prompt + res.n_generated,
                            "prompt_tokens_details", "cached_tokens", res.n_reused);
  hx_metric_add(d->m.prompt_tokens, mlab, n_prompt);
  hx_metric_add(d->m.gen_tokens, mlab, res.n_generated);
  if (res.n_reused > 0) {
    hx_metric_inc(d->m.cache_hits, mlab);
    hx_metric_add(d->m.cache_reused, mlab, res.n_reused);
  }
  uint64_t t_end = hx_time_mono_ns();
  if (g.n_gen > 0) {
    hx_metric_observe(d->m.ttft, mlab, (double)(g.t_first_ns - t_start) / 1e9);
    if (g.n_gen > 1)
      hx_metric_observe(d->m.itl, mlab, (double)(g.t_last_ns - g.t_first_ns) / 1e9 / (g.n_gen - 1));
  }
  hx_metric_observe(d->m.e2e, mlab, (double)(t_end - j->enqueued_ns) / 1e9);
  hx_http_req_set_log_note(j->req,
                           "model=%s prompt=%d cached=%d gen=%d finish=%s queue_ms=%.1f "
                           "prefill_ms=%.1f decode_ms=%.1f emit_ms=%.3f",
                           m->id, n_prompt, res.n_reused, res.n_generated,
                           grc != HX_OK ? "error"
                           : cancelled  ? "cancelled"
                                        : finish,
                           (double)(t_start - j->enqueued_ns) / 1e6, res.prefill_ms, res.decode_ms,
                           (double)g.emit_ns / 1e6);

  if (grc != HX_OK) {
    metrics_outcome(j, endpoint, grc == HX_ENUMERIC ? "numeric_error" : "error");
    HX_ERROR("model %s: generation failed: %s", m->id, gerr.msg);
    if (r->stream) {
      json_t *e = hx_http_error_json(grc == HX_ENUMERIC ? "server_error" : "server_error",
                                     grc == HX_ENUMERIC ? "numeric_error" : "internal_error", NULL,
                                     gerr.msg);
      sse_send(&g, e);
      hx_http_stream_write(j->req, "data: [DONE]\n\n", 14, SSE_WRITE_TIMEOUT_MS);
      hx_http_stream_end(j->req);
    } else {
      respond_code(j, grc == HX_ENUMERIC ? HX_ENUMERIC : HX_EINTERNAL, NULL, gerr.msg);
    }
    json_decref(usage);
    gen_free(&g);
    return;
  }
  if (cancelled) {
    bool unloaded = !hx_http_req_cancelled(j->req);
    metrics_outcome(j, endpoint, unloaded ? "cancelled_unload" : "client_closed");
    const char *msg = unloaded ? "request cancelled: the model is being unloaded or the neuron "
                                 "is shutting down"
                               : "request cancelled: the client went away";
    if (r->stream) {
      json_t *e = hx_http_error_json("server_error", "cancelled", NULL, msg);
      sse_send(&g, e);
      hx_http_stream_end(j->req);
    } else {
      hx_http_respond_error(j->req, 503, "server_error", "cancelled", NULL, 0, "%s", msg);
    }
    json_decref(usage);
    gen_free(&g);
    return;
  }
  metrics_outcome(j, endpoint, "ok");
  if (r->stream) {
    json_t *last = chunk_new(&g, chat ? json_object() : json_string(""), finish);
    sse_send(&g, last);
    if (r->include_usage) {
      json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:O}", "id", g.id, "object",
                            chat ? "chat.completion.chunk" : "text_completion", "created",
                            (json_int_t)g.created, "model", m->id, "choices", "usage", usage);
      sse_send(&g, u);
    }
    hx_http_stream_write(j->req, "data: [DONE]\n\n", 14, SSE_WRITE_TIMEOUT_MS);
    hx_http_stream_end(j->req);
  } else {
    json_t *choice;
    if (chat) {
      json_t *msg = json_pack(
          "{s:s,s:o}", "role", "assistant", "content",
          g.content.len || !g.n_tool_calls
              ? neuron_json_string_lossy(g.content.data ? g.content.data : "", g.content.len)
              : json_null());
      if (g.reasoning.len)
        json_object_set_new(msg, "reasoning_content",
                            neuron_json_string_lossy(g.reasoning.data, g.reasoning.len));
      if (g.n_tool_calls)
        json_object_set(msg, "tool_calls", g.tool_calls);
      choice = json_pack("{s:i,s:o,s:s}", "index", 0, "message", msg, "finish_reason", finish);
      json_object_set_new(choice, "logprobs",
                          r->logprobs ? json_pack("{s:O}", "content", g.lp_content) : json_null());
    } else {
      choice =
          json_pack("{s:i,s:o,s:s}", "index", 0, "text",
                    neuron_json_string_lossy(g.content.data ? g.content.data : "", g.content.len),
                    "finish_reason", finish);
      json_object_set_new(choice, "logprobs",
                          r->logprobs
                              ? json_pack("{s:O,s:O,s:O}", "tokens", g.lp_tokens, "token_logprobs",
                                          g.lp_token_lps, "top_logprobs", g.lp_tops)
                              : json_null());
    }
    json_t *resp =
        json_pack("{s:s,s:s,s:I,s:s,s:[o],s:O}", "id", g.id, "object",
                  chat ? "chat.completion" : "text_completion", "created", (json_int_t)g.created,
                  "model", m->id, "choices", choice, "usage", usage);
    hx_http_respond_json(j->req, 200, resp);
  }
  json_decref(usage);
  gen_free(&g);
}

/* ------------------------------------------------------------- tokenize & co */

static void run_tokenize(gen_job *j) {
  nmodel *m = j->m;
  json_t *b = j->body;
  const char *text = NULL;
  size_t len = 0;
  json_t *content = json_object_get(b, "content");
  if (!content)
    content = json_object_get(b, "prompt");
  if (json_is_string(content)) {
    text = json_string_value(content);
    len = json_string_length(content);
  }
  json_t *msgs = json_object_get(b, "messages");
  char *rendered = NULL;
  hx_err err = {0};
  if (!text && json_is_array(msgs)) {
    if (neuron_render_chat(m, msgs, json_object_get(b, "tools"),
                           json_object_get(b, "chat_template_kwargs"),
                           json_is_true(json_object_get(b, "add_generation_prompt")), &rendered,
                           &len, &err) != HX_OK) {
      respond_code(j, HX_EINVAL, "messages", err.msg);
      return;
    }
    text = rendered;
  }
  if (!text) {
    hx_http_respond_error(j->req, 400, "invalid_request_error", "invalid_request", "content", 0,
                          "\"content\" (a string) or \"messages\" (an array) is required");
    return;
  }
  json_t *ps = json_object_get(b, "parse_special");
  bool parse_special = rendered != NULL || (ps ? json_is_true(ps) : true);
  int32_t *ids = NULL;
  size_t n = 0;
  hx_code rc = tokenizer_encode(m->tok, text, len, parse_special, &ids, &n, &err);
  free(rendered);
  if (rc != HX_OK) {
    respond_code(j, rc, "content", err.msg);
    return;
  }
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(arr, json_integer(ids[i]));
  free(ids);
  hx_http_respond_json(
      j->req, 200,
      json_pack("{s:s,s:o,s:I}", "model", m->id, "tokens", arr, "count", (json_int_t)n));
}

static void run_detokenize(gen_job *j) {
  nmodel *m = j->m;
  json_t *toks = json_object_get(j->body, "tokens");
  if (!json_is_array(toks) || json_array_size(toks) > (1u << 24)) {
    hx_http_respond_error(j->req, 400, "invalid_request_error", "invalid_request", "tokens", 0,
                          "\"tokens\" must be an array of token ids");
    return;
  }
  size_t n = json_array_size(toks);
  int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
  if (!ids) {
    respond_code(j, HX_ENOMEM, NULL, "out of memory");
    return;
  }
  size_t vocab = tokenizer_vocab_size(m->tok);
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(toks, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (size_t)json_integer_value(v) >= vocab) {
      free(ids);
      hx_http_respond_error(j->req, 400, "invalid_request_error", "invalid_request", "tokens", 0,
                            "\"tokens[%zu]\" must be a token id in 0..%zu", i, vocab - 1);
      return;
    }
    ids[i] = (int32_t)json_integer_value(v);
  }
  char *text = NULL;
  size_t len = 0;
  hx_err err = {0};
  hx_code rc = tokenizer_decode(
      m->tok, ids, n, json_is_true(json_object_get(j->body, "skip_special")), &text, &len, &err);
  free(ids);
  if (rc != HX_OK) {
    respond_code(j, rc, "tokens", err.msg);
    return;
  }
  hx_http_respond_json(
      j->req, 200,
      json_pack("{s:s,s:o}", "model", m->id, "content", neuron_json_string_lossy(text, len)));
  free(text);
}

static void run_apply_template(gen_job *j) {
  nmodel *m = j->m;
  json_t *b = j->body;
  json_t *msgs = json_object_get(b, "messages");
  json_t *tools = json_object_get(b, "tools");
  json_t *kw = json_object_get(b, "chat_template_kwargs");
  if (!json_is_array(msgs) || (tools && !json_is_null(tools) && !json_is_array(tools)) ||
      (kw && !json_is_null(kw) && !json_is_object(kw))) {
    hx_http_respond_error(j->req, 400, "invalid_request_error", "invalid_request", "messages", 0,
                          "\"messages\" must be an array; \"tools\" an array; "
                          "\"chat_template_kwargs\" an object");
    return;
  }
  json_t *agp = json_object_get(b, "add_generation_prompt");
  char *text = NULL;
  size_t len = 0;
  hx_err err = {0};
  hx_code rc = neuron_render_chat(m, msgs, json_is_array(tools) ? tools : NULL,
                                  json_is_object(kw) ? kw : NULL, agp ? json_is_true(agp) : true,
                                  &text, &len, &err);
  if (rc != HX_OK) {
    respond_code(j, rc == HX_EUNSUPPORTED ? rc : HX_EINVAL, "messages", err.msg);
    return;
  }
  int32_t *ids = NULL;
  size_t n = 0;
  rc = tokenizer_encode(m->tok, text, len, true, &ids, &n, &err);
  free(ids);
  if (rc != HX_OK) {
    free(text);
    respond_code(j, rc, "messages", err.msg);
    return;
  }
  hx_http_respond_json(j->req, 200,
                       json_pack("{s:s,s:o,s:I}", "model", m->id, "prompt",
                                 neuron_json_string_lossy(text, len), "tokens", (json_int_t)n));
  free(text);
}

void neuron_job_execute(gen_job *j) {
  if (atomic_load(&j->cancel)) {
    hx_http_respond_error(j->req, 503, "server_error", "cancelled", NULL, 0,
                          "request cancelled before it ran");
    return;
  }
  switch (j->kind) {
  case JOB_CHAT:
  case JOB_COMPLETION:
    run_generation(j);
    break;
  case JOB_TOKENIZE:
    run_tokenize(j);
    break;
  case JOB_DETOKENIZE:
    run_detokenize(j);
    break;
  case JOB_APPLY_TEMPLATE:
    run_apply_template(j);
    break;
  }
}

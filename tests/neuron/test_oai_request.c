/* test_oai_request.c — OpenAI request validation, hardware parsers, model
 * directory scan (no engine needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "neuron/catalog.h"
#include "neuron/hardware.h"
#include "neuron/oai_request.h"

static hx_code parse(const char *body, bool chat, neuron_oai_request *r, char *param, hx_err *err) {
  return neuron_oai_request_parse(body, strlen(body), chat, r, param, 128, err);
}

static void test_chat_full(void **state) {
  (void)state;
  neuron_oai_request r;
  char param[128];
  hx_err err = {0};
  const char *b =
      "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\","
      "\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"user\",\"content\":\"x\"},"
      "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"r\",\"tool_calls\":[{"
      "\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
      "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"1\"}],\"tools\":[{\"type\":"
      "\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
      "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},\"stream\":true,"
      "\"stream_options\":{\"include_usage\":true},\"stop\":[\"x\",\"yy\"],\"seed\":3,"
      "\"logprobs\":true,\"top_logprobs\":2,\"logit_bias\":{\"5\":-100,\"7\":2.5},"
      "\"temperature\":0.5,\"top_p\":0.9,\"top_k\":4,\"min_p\":0.1,\"max_completion_tokens\":9,"
      "\"chat_template_kwargs\":{\"enable_thinking\":false},\"user\":\"ignored\","
      "\"metadata\":{\"a\":1},\"unknown_field\":[1,2]}";
  assert_int_equal(parse(b, true, &r, param, &err), HX_OK);
  assert_string_equal(r.model, "m");
  assert_int_equal(json_array_size(r.messages), 4);
  json_t *m0 = json_array_get(r.messages, 0);
  assert_string_equal(json_string_value(json_object_get(m0, "role")), "system");
  assert_string_equal(json_string_value(json_object_get(m0, "content")), "ab");
  json_t *m2 = json_array_get(r.messages, 2);
  assert_true(json_is_null(json_object_get(m2, "content")));
  assert_non_null(json_object_get(m2, "tool_calls"));
  assert_string_equal(json_string_value(json_object_get(m2, "reasoning_content")), "r");
  assert_int_equal(r.tool_choice, NEURON_TOOL_CHOICE_NAMED);
  assert_string_equal(r.tool_choice_name, "f");
  assert_true(r.stream && r.include_usage && r.logprobs && r.has_seed);
  assert_int_equal(r.top_logprobs, 2);
  assert_int_equal(r.sampling.n_logprobs, 2);
  assert_int_equal(r.n_stop, 2);
  assert_string_equal(r.stop[1], "yy");
  assert_int_equal(r.sampling.seed, 3);
  assert_int_equal(r.max_tokens, 9);
  assert_int_equal(r.sampling.top_k, 4);
  assert_true(fabsf(r.sampling.temperature - 0.5f) < 1e-6f);
  assert_int_equal(r.sampling.n_bias, 2);
  assert_true(isinf(r.sampling.bias[0].bias) || isinf(r.sampling.bias[1].bias));
  assert_non_null(r.template_kwargs);
  neuron_oai_request_free(&r);
}

static void test_completion(void **state) {
  (void)state;
  neuron_oai_request r;
  char param[128];
  hx_err err = {0};
  assert_int_equal(parse("{\"model\":\"m\",\"prompt\":[\"hi\"],\"logprobs\":3,\"stop\":\"\\n\","
                         "\"temperature\":0}",
                         false, &r, param, &err),
                   HX_OK);
  assert_string_equal(r.prompt, "hi");
  assert_true(r.logprobs);
  assert_int_equal(r.top_logprobs, 3);
  assert_int_equal(r.n_stop, 1);
  assert_true(r.sampling.greedy);
  neuron_oai_request_free(&r);
}

static void test_errors(void **state) {
  (void)state;
  struct {
    const char *body;
    bool chat;
    hx_code code;
    const char *param;
    const char *words;
  } cases[] = {
      {"", true, HX_EINVAL, "", "JSON"},
      {"[1]", true, HX_EINVAL, "", "object"},
      {"{\"messages\":[]}", true, HX_EINVAL, "model", "required"},
      {"{\"model\":5,\"messages\":[]}", true, HX_EINVAL, "model", "string"},
      {"{\"model\":\"m\"}", true, HX_EINVAL, "messages", "required"},
      {"{\"model\":\"m\",\"messages\":[]}", true, HX_EINVAL, "messages", "non-empty"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}", true, HX_EINVAL,
       "messages[0]", "role"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]"
       "}",
       true, HX_EUNSUPPORTED, "messages[0].content[0]", "image_url"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}", true,
       HX_EUNSUPPORTED, "n", "choices"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":"
       "\"hot\"}",
       true, HX_EINVAL, "temperature", "number"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":7}",
       true, HX_EINVAL, "temperature", "between"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}",
       true, HX_EINVAL, "max_tokens", "between"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":"
       "1e300}",
       true, HX_EINVAL, "max_tokens", "integer"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":50,"
       "\"logprobs\":true}",
       true, HX_EINVAL, "top_logprobs", "between"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":"
       "\"required\"}",
       true, HX_EINVAL, "tool_choice", "tools"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
       "{\"type\":\"json_schema\"}}",
       true, HX_EUNSUPPORTED, "response_format", "json_schema"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":[1]}", true,
       HX_EINVAL, "stop", "string"},
      {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":[]}",
       true, HX_EUNSUPPORTED, "functions", "tools"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"echo\":true}", false, HX_EUNSUPPORTED, "echo", "echo"},
      {"{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", false, HX_EUNSUPPORTED, "prompt", "batches"},
      {"{\"model\":\"m\",\"prompt\":[1,2]}", false, HX_EUNSUPPORTED, "prompt", "batches"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"stream\":1}", false, HX_EINVAL, "stream", "boolean"},
      {"{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"a\":1}}", false, HX_EINVAL,
       "logit_bias", "token id"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    neuron_oai_request r;
    char param[128];
    hx_err err = {0};
    hx_code rc = parse(cases[i].body, cases[i].chat, &r, param, &err);
    if (rc != cases[i].code || strcmp(param, cases[i].param) != 0 ||
        !strstr(err.msg, cases[i].words))
      fprintf(stderr, "case %zu: rc=%d param=%s msg=%s\n", i, rc, param, err.msg);
    assert_int_equal(rc, cases[i].code);
    assert_string_equal(param, cases[i].param);
    assert_non_null(strstr(err.msg, cases[i].words));
    neuron_oai_request_free(&r);
  }
}

static void test_hardware_parsers(void **state) {
  (void)state;
  uint64_t total, avail;
  neuron_hardware_parse_meminfo("MemTotal:       16316412 kB\nMemFree: 1 kB\n"
                                "MemAvailable:    8000000 kB\n",
                                &total, &avail);
  assert_int_equal(total, 16316412ull * 1024);
  assert_int_equal(avail, 8000000ull * 1024);
  char model[256];
  int phys;
  const char *ci =
      "processor\t: 0\nmodel name\t: Test CPU @ 3GHz\nphysical id\t: 0\ncore id\t: 0\n\n"
      "processor\t: 1\nmodel name\t: Test CPU @ 3GHz\nphysical id\t: 0\ncore id\t: 0\n\n"
      "processor\t: 2\nmodel name\t: Test CPU @ 3GHz\nphysical id\t: 0\ncore id\t: 1\n";
  neuron_hardware_parse_cpuinfo(ci, model, sizeof model, &phys);
  assert_string_equal(model, "Test CPU @ 3GHz");
  assert_int_equal(phys, 2);
  neuron_hardware hw;
  assert_int_equal(neuron_hardware_discover(&hw, NULL), HX_OK);
  assert_true(hw.cpu_logical >= 1 && hw.ram_total_bytes > 0);
  json_t *j = neuron_hardware_json(&hw);
  assert_non_null(json_object_get(j, "devices"));
  json_decref(j);
}

static void touch(const char *p, size_t n) {
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  for (size_t i = 0; i < n; i++)
    fputc(0, f);
  fclose(f);
}

static void test_catalog(void **state) {
  (void)state;
  char dir[] = "/tmp/hx-catalog-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char p[512];
  snprintf(p, sizeof p, "%s/a.gguf", dir);
  touch(p, 10);
  snprintf(p, sizeof p, "%s/big-00001-of-00002.gguf", dir);
  touch(p, 5);
  snprintf(p, sizeof p, "%s/big-00002-of-00002.gguf", dir);
  touch(p, 5);
  snprintf(p, sizeof p, "%s/notes.txt", dir);
  touch(p, 1);
  snprintf(p, sizeof p, "%s/hf", dir);
  mkdir(p, 0700);
  snprintf(p, sizeof p, "%s/hf/config.json", dir);
  touch(p, 2);
  snprintf(p, sizeof p, "%s/hf/model.safetensors", dir);
  touch(p, 7);
  snprintf(p, sizeof p, "%s/empty", dir);
  mkdir(p, 0700);
  char *dirs[] = {dir, "/nonexistent-hx"};
  neuron_catalog_entry *v;
  size_t n;
  assert_int_equal(neuron_catalog_scan(dirs, 2, &v, &n, NULL), HX_OK);
  assert_int_equal(n, 3);
  int seen = 0;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(v[i].id, "a") == 0 && strcmp(v[i].format, "gguf") == 0 && v[i].file_bytes == 10)
      seen |= 1;
    if (strcmp(v[i].id, "big") == 0)
      seen |= 2;
    if (strcmp(v[i].id, "hf") == 0 && strcmp(v[i].format, "hf") == 0 && v[i].file_bytes == 7)
      seen |= 4;
  }
  assert_int_equal(seen, 7);
  free(v);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chat_full), cmocka_unit_test(test_completion),
      cmocka_unit_test(test_errors),    cmocka_unit_test(test_hardware_parsers),
      cmocka_unit_test(test_catalog),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

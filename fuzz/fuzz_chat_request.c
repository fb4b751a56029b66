/* fuzz_chat_request.c — OpenAI request bodies (chat and completions) into
 * validated requests: never a crash, a leak or an unterminated message; on
 * success the invariants the daemon relies on hold. The first byte picks the
 * endpoint. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "neuron/oai_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  bool chat = (data[0] & 1) == 0;
  neuron_oai_request r;
  char param[128];
  hx_err err = {0};
  hx_code rc = neuron_oai_request_parse((const char *)data + 1, size - 1, chat, &r, param,
                                        sizeof param, &err);
  if (rc == HX_OK) {
    HX_ASSERT(r.model && r.model[0]);
    HX_ASSERT(chat ? json_is_array(r.messages) && json_array_size(r.messages) > 0
                   : r.prompt != NULL);
    HX_ASSERT(r.n_stop >= 0 && r.n_stop <= HX_STOP_STRINGS_MAX);
    HX_ASSERT(r.top_logprobs >= 0 && r.top_logprobs <= HX_SAMPLER_TOPK_MAX);
    HX_ASSERT(r.sampling.n_bias <= HX_SAMPLER_BIAS_MAX);
    HX_ASSERT(r.tool_choice != NEURON_TOOL_CHOICE_NAMED || r.tool_choice_name);
  } else {
    HX_ASSERT(memchr(err.msg, 0, sizeof err.msg) && err.msg[0]);
    HX_ASSERT(memchr(param, 0, sizeof param));
  }
  neuron_oai_request_free(&r);
  return 0;
}

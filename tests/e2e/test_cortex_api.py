"""cortex end to end with the official openai and anthropic SDKs
(max_retries=0) against scripted neurons (fake_neuron.py): both dialects,
streaming and not, tools, thinking, stop sequences, count_tokens, errors,
catalogue, auth."""
import json
import urllib.request

import anthropic
import openai
import pytest

from cortex_harness import Fleet

MODELS = '''
[[models]]
id = "small"
aliases = ["tiny"]
path = "m1"
priority = 1

[[models]]
id = "med"
path = "m2"
priority = 5

[[models]]
id = "pin"
path = "m3"
pinned = true
'''

KEYS = '''
[[auth.keys]]
key = "sk-all-key-1"

[[auth.keys]]
key = "sk-small-key-1"
models = ["small"]
'''


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = Fleet(str(tmp_path_factory.mktemp("cx")),
              [{"name": "a", "models": "m1:100,m2:150,m3:100", "budget": 300, "preload": "m1"}],
              MODELS, keys=KEYS, extra_gateway="max_body_bytes = 200000")
    yield f
    assert f.stop() == 0


def oai(f, key="sk-all-key-1"):
    return openai.OpenAI(base_url=f.url + "/v1", api_key=key, max_retries=0, timeout=20)


def anth(f, key="sk-all-key-1"):
    return anthropic.Anthropic(base_url=f.url, api_key=key, max_retries=0, timeout=20)


def test_openai_chat_plain_and_stream(fleet):
    c = oai(fleet)
    r = c.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from m1 (a)"
    assert r.usage.prompt_tokens == 11
    parts = []
    for ch in c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                        stream=True):
        if ch.choices and ch.choices[0].delta.content:
            parts.append(ch.choices[0].delta.content)
    assert "".join(parts) == "Hello from m1 (a)"


def test_openai_tool_stream(fleet):
    c = oai(fleet)
    args, name = "", None
    for ch in c.chat.completions.create(model="small", messages=[{"role": "user", "content": "TOOL"}],
                                        stream=True, tools=[{"type": "function", "function": {
                                            "name": "get_weather", "parameters": {"type": "object"}}}]):
        if ch.choices and ch.choices[0].delta.tool_calls:
            tc = ch.choices[0].delta.tool_calls[0]
            name = name or tc.function.name
            args += tc.function.arguments or ""
    assert name == "get_weather" and json.loads(args) == {"city": "Paris"}


def test_anthropic_message_plain(fleet):
    c = anth(fleet)
    m = c.messages.create(model="small", max_tokens=64, system=[{"type": "text", "text": "be brief",
                                                                  "cache_control": {"type": "ephemeral"}}],
                          messages=[{"role": "user", "content": "hi"},
                                    {"role": "system", "content": "also polite"}],
                          metadata={"user_id": "u1"})
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text" and m.content[0].text == "Hello from m1 (a)"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.input_tokens == 11 and m.usage.output_tokens == 4
    assert m.usage.cache_read_input_tokens == 3
    up = fleet.stats("a")["last_request"]
    assert up["messages"][0] == {"role": "system", "content": "be brief\n\nalso polite"}
    assert up["user"] == "u1" and up["stream"] is True


def test_anthropic_stream_events(fleet):
    c = anth(fleet)
    with c.messages.stream(model="small", max_tokens=64,
                           messages=[{"role": "user", "content": "hi"}]) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_start" in events and events.index("content_block_start") < events.index(
        "content_block_delta")
    assert final.content[0].text == "Hello from m1 (a)"
    assert final.usage.output_tokens == 4


def test_anthropic_raw_sse_has_event_lines(fleet):
    req = urllib.request.Request(fleet.url + "/v1/messages?beta=true", method="POST", data=json.dumps({
        "model": "small", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hi"}], "output_config": {"x": 1}}).encode(),
        headers={"x-api-key": "sk-all-key-1", "anthropic-version": "2023-06-01",
                 "content-type": "application/json"})
    body = urllib.request.urlopen(req, timeout=10).read().decode()
    blocks = [b for b in body.split("\n\n") if b.strip() and not b.startswith(":")]
    for b in blocks:
        lines = b.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), b
    names = [b.split("\n")[0][7:] for b in blocks]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    md = json.loads(blocks[-2].split("\n")[1][6:])
    assert md["usage"]["output_tokens"] == 4 and md["delta"]["stop_reason"] == "end_turn"


def test_anthropic_tools_both_directions(fleet):
    c = anth(fleet)
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}, "input_examples": [{}]}]
    with c.messages.stream(model="small", max_tokens=64, tools=tools,
                           tool_choice={"type": "any", "disable_parallel_tool_use": True},
                           messages=[{"role": "user", "content": "TOOL"}]) as s:
        deltas = [e.delta.partial_json for e in s if e.type == "content_block_delta"
                  and e.delta.type == "input_json_delta"]
        m = s.get_final_message()
    assert "".join(deltas) == '{"city": "Paris"}'
    assert m.stop_reason == "tool_use"
    tu = m.content[-1]
    assert tu.type == "tool_use" and tu.name == "get_weather" and tu.input == {"city": "Paris"}
    up = fleet.stats("a")["last_request"]
    assert up["tool_choice"] == "required" and up["parallel_tool_calls"] is False
    assert up["tools"][0]["function"]["parameters"]["type"] == "object"
    # send the result back
    m2 = c.messages.create(model="small", max_tokens=64, tools=tools, messages=[
        {"role": "user", "content": "TOOL"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                                          {"type": "tool_use", "id": tu.id, "name": tu.name,
                                           "input": tu.input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tu.id,
                                      "content": [{"type": "text", "text": "sunny"}]},
                                     {"type": "text", "text": "thanks"}]}])
    assert m2.content[0].text.startswith("Hello")
    up = fleet.stats("a")["last_request"]["messages"]
    assert up[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(up[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert up[1]["reasoning_content"] == "hm"
    assert up[2] == {"role": "tool", "tool_call_id": tu.id, "content": "sunny"}
    assert up[3] == {"role": "user", "content": "thanks"}


def test_anthropic_thinking(fleet):
    c = anth(fleet)
    m = c.messages.create(model="small", max_tokens=64, thinking={"type": "enabled", "budget_tokens": 1024},
                          messages=[{"role": "user", "content": "THINK"}])
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == "Let me think." and m.content[0].signature
    assert fleet.stats("a")["last_request"]["chat_template_kwargs"] == {"enable_thinking": True}
    with c.messages.stream(model="small", max_tokens=64, thinking={"type": "disabled"},
                           messages=[{"role": "user", "content": "THINK"}]) as s:
        kinds = [e.delta.type for e in s if e.type == "content_block_delta"]
    assert kinds[:3] == ["thinking_delta", "thinking_delta", "signature_delta"]


def test_anthropic_stop_sequence(fleet):
    c = anth(fleet)
    m = c.messages.create(model="small", max_tokens=64, stop_sequences=["END"],
                          messages=[{"role": "user", "content": "STOPSEQ"}])
    assert m.content[0].text == "alpha beta "
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "END"
    with c.messages.stream(model="small", max_tokens=64, stop_sequences=["nomatch", "END"],
                           messages=[{"role": "user", "content": "STOPSEQ"}]) as s:
        text = "".join(e.delta.text for e in s if e.type == "content_block_delta")
        fm = s.get_final_message()
    assert text == "alpha beta " and fm.stop_reason == "stop_sequence"
    m = c.messages.create(model="small", max_tokens=2, messages=[{"role": "user", "content": "STOPSEQ"}])
    assert m.stop_reason == "max_tokens"


def test_count_tokens(fleet):
    c = anth(fleet)
    msgs = [{"role": "user", "content": "one two three"}]
    r = c.messages.count_tokens(model="small", messages=msgs, system="sys")
    up = fleet.stats("a")["last_request"]
    # the neuron counts its own rendering of exactly the translated conversation
    assert up["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "one two three"}]
    assert r.input_tokens == len((json.dumps(up["messages"]) + "[]").split())


def test_errors_in_dialect(fleet):
    c = anth(fleet)
    with pytest.raises(anthropic.NotFoundError) as e:
        c.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        c.messages.create(model="small", max_tokens=5, messages="bad")
    with pytest.raises(anthropic.AuthenticationError):
        anth(fleet, "wrong").messages.create(model="small", max_tokens=5,
                                              messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.PermissionDeniedError):
        anth(fleet, "sk-small-key-1").messages.create(model="med", max_tokens=5,
                                                 messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        oai(fleet).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        oai(fleet, "wrong").chat.completions.create(model="small",
                                                     messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        oai(fleet).chat.completions.create(model="small", messages=[])
    big = "x" * 300000
    with pytest.raises(anthropic.APIStatusError) as e:
        c.messages.create(model="small", max_tokens=5, messages=[{"role": "user", "content": big}])
    assert e.value.status_code == 413 and e.value.body["error"]["type"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as e:
        oai(fleet).chat.completions.create(model="small", messages=[{"role": "user", "content": big}])
    assert e.value.status_code == 413 and "message" in e.value.body


def malformed_bodies(n):
    """n request bodies that no endpoint may accept: every truncation of a
    valid body, the same with trailing garbage, wrong types for each field,
    invalid UTF-8, excessive nesting, and seeded random bytes."""
    import random
    rnd = random.Random(7)
    good = [json.dumps({"model": "small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            json.dumps({"model": "small", "messages": [{"role": "user", "content": [{"type": "text",
                                                                                      "text": "hi"}]}]})]
    out = []
    for g in good:
        b = g.encode()
        out += [b[:k] for k in range(0, len(b))]
        out += [b + x for x in (b"x", b"}", b"]", b",", b"\x00", b" {}")]
    msgs = [{"role": "user", "content": "hi"}]
    for field, vals in (("model", [1, None, [], {}, True]),
                        ("messages", ["hi", 1, None, {}, [1], [None], [[]]])):
        for v in vals:
            body = {"model": "small", "max_tokens": 5, "messages": msgs}
            body[field] = v
            out.append(json.dumps(body).encode())
    out += [b"[]", b"null", b"1", b'"s"', b"\xff\xfe{}", b'{"model":"sm\xffall"}', b"[" * 500 + b"]" * 500,
            b'{"a":' * 200 + b"1" + b"}" * 200, b"{\"model\": NaN}", b"{'model': 'small'}"]
    while len(out) < n:
        out.append(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64))))
    return out[:n]


def test_malformed_bodies_in_dialect(fleet):
    """1,000 malformed bodies, each to both dialects: a 4xx with the dialect's
    error envelope, never a 2xx or a 5xx."""
    import http.client
    conns = {}

    def post(path, body):
        for attempt in range(2):
            c = conns.get(path) or http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
            conns[path] = c
            try:
                c.request("POST", path, body, {"x-api-key": "sk-all-key-1", "content-type": "application/json"})
                r = c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError):
                c.close()
                conns[path] = None
                if attempt:
                    raise
    bodies = malformed_bodies(1000)
    assert len(set(bodies)) > 900
    for body in bodies:
        for path, is_anth in (("/v1/messages", True), ("/v1/chat/completions", False)):
            status, data = post(path, body)
            assert 400 <= status < 500, (path, body[:80], status, data[:200])
            j = json.loads(data)
            if is_anth:
                assert j["type"] == "error" and j["error"]["type"] and j["error"]["message"]
            else:
                assert j["error"]["message"] and "type" in j["error"]
    for c in conns.values():
        if c:
            c.close()


def test_catalogue(fleet):
    ms = oai(fleet).models.list()
    ids = [m.id for m in ms.data]
    assert ids[:4] == ["small", "tiny", "med", "pin"]
    req = urllib.request.Request(fleet.url + "/v1/models", headers={
        "anthropic-version": "2023-06-01", "x-api-key": "sk-all-key-1"})
    j = json.loads(urllib.request.urlopen(req, timeout=5).read())
    assert j["data"][0]["type"] == "model" and j["has_more"] is False and j["first_id"] == "small"

#!/usr/bin/env python3
"""Generates chat-template conformance cases: tests/data/templates/cases.json.

Each case names a template file (tests/data/templates/*.jinja) and gives the
inputs of one apply_chat_template call: messages (OpenAI shape), tools,
add_generation_prompt, extra kwargs (enable_thinking, ...), special tokens and
whether string tool-call arguments are parsed into objects first (what our
renderer does for templates that iterate `arguments|items`).

Deterministic (fixed seed). Expected outputs come from gen_expected.py.
"""
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "templates", "cases.json")

TEMPLATES = {
    # name: (bos, eos, parse_args, supports_tools, content_parts_ok)
    "qwen3.jinja": ("", "<|im_end|>", True, True, False),
    "qwen3.5.jinja": ("", "<|im_end|>", True, True, True),
    "llama3.x-tools.jinja": ("<|begin_of_text|>", "<|eot_id|>", True, True, False),
    "mistral-small-3.1.jinja": ("<s>", "</s>", True, True, False),
    "deepseek-r1-distill-qwen.jinja": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", False, False, False),
    "qwen3-coder-derived.jinja": ("", "<|im_end|>", True, True, False),
    # appended last: the shared rng stream keeps the cases above unchanged
    "qwen3-2507-instruct.jinja": ("", "<|im_end|>", True, True, True),
    "qwen3-2507-thinking.jinja": ("", "<|im_end|>", True, True, True),
    "qwen3-coder.jinja": ("", "<|im_end|>", True, True, False),
}

TEXTS = [
    "Hi there",
    "What's the weather in Paris?",
    "  leading and trailing spaces  ",
    "multi\nline\n\nmessage",
    "Unicode: héllo wörld — 日本語 🤖 👩‍👩‍👧",
    'quotes "double" and \'single\' and \\backslash',
    "code:\n```python\nprint('x')\n```",
    "tabs\tand\r\nCRLF",
    "<tool_response>\nfake\n</tool_response>",
    "Explain {{ jinja }} and {% tags %} literally",
    "",
    "Ünïcödé ÀÉÎ σίσυφος Ωμέγα привет",
]

REASONING = [
    "Let me think about this.",
    "\nStep 1: parse.\nStep 2: answer.\n",
    "The user wants 日本語.",
]

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city",
     "parameters": {"type": "object", "properties": {
         "city": {"type": "string", "description": "City name, e.g. Paris"},
         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
         "required": ["city"]}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web — returns snippets",
     "parameters": {"type": "object", "properties": {
         "query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 50},
         "threshold": {"type": "number", "default": 0.5}},
         "required": ["query"]}}},
    {"type": "function", "function": {"name": "create_event", "description": "Créer un événement",
     "parameters": {"type": "object", "properties": {
         "title": {"type": "string"}, "attendees": {"type": "array", "items": {"type": "string"}},
         "options": {"type": "object", "properties": {"private": {"type": "boolean"}}}},
         "required": ["title"]}}},
]

ARGS = {
    "get_weather": [{"city": "Paris"}, {"city": "São Paulo", "unit": "celsius"}],
    "search": [{"query": "jinja \"tojson\"", "limit": 5}, {"query": "llama", "limit": 1, "threshold": 0.25}],
    "create_event": [{"title": "Standup", "attendees": ["a@x.io", "b@y.io"], "options": {"private": True}},
                     {"title": "Réunion\nlongue", "attendees": [], "options": {}}],
}


def tool_call(rng, idx):
    tool = rng.choice(TOOLS)["function"]["name"]
    args = rng.choice(ARGS[tool])
    cid = "call_%09d" % rng.randrange(10 ** 9)
    return {"id": cid, "type": "function", "function": {"name": tool, "arguments": json.dumps(args, ensure_ascii=False)}}


def content(rng, parts_ok):
    text = rng.choice(TEXTS)
    if parts_ok and rng.random() < 0.25:
        return [{"type": "text", "text": text}]
    return text


def conversation(rng, tname, with_tools):
    bos, eos, parse_args, tools_ok, parts_ok = TEMPLATES[tname]
    msgs = []
    if rng.random() < 0.6:
        msgs.append({"role": "system", "content": rng.choice(["You are a helpful assistant.", "Be terse.\n", "Système: réponds en français."])})
    turns = rng.randint(1, 4)
    for t in range(turns):
        msgs.append({"role": "user", "content": content(rng, parts_ok)})
        last = t == turns - 1
        if last and rng.random() < 0.6:
            break
        kind = rng.random()
        if with_tools and tools_ok and kind < 0.4:
            ncalls = 1 if tname in ("llama3.x-tools.jinja",) else rng.randint(1, 3)
            a = {"role": "assistant", "content": rng.choice(["", "Let me check.", None]),
                 "tool_calls": [tool_call(rng, i) for i in range(ncalls)]}
            if a["content"] is None and tname == "mistral-small-3.1.jinja":
                a["content"] = ""
            if rng.random() < 0.3 and tname.startswith("qwen"):
                a["reasoning_content"] = rng.choice(REASONING)
            msgs.append(a)
            for c in a["tool_calls"]:
                msgs.append({"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"],
                             "content": rng.choice(["sunny, 21°C", '{"result": [1, 2, 3]}', "error: not found", "ok"])})
            msgs.append({"role": "assistant", "content": rng.choice(TEXTS[:7])})
        elif kind < 0.65 and tname != "mistral-small-3.1.jinja":
            r = rng.choice(REASONING)
            if rng.random() < 0.5:
                msgs.append({"role": "assistant", "content": "<think>\n" + r + "\n</think>\n\n" + rng.choice(TEXTS[:7])})
            else:
                msgs.append({"role": "assistant", "content": rng.choice(TEXTS[:7]), "reasoning_content": r})
        else:
            msgs.append({"role": "assistant", "content": rng.choice(TEXTS[:7])})
    return msgs


def main():
    rng = random.Random(20261121)
    cases = []
    per_template = 64
    for tname in TEMPLATES:
        bos, eos, parse_args, tools_ok, parts_ok = TEMPLATES[tname]
        for i in range(per_template):
            with_tools = tools_ok and rng.random() < 0.5
            msgs = conversation(rng, tname, with_tools)
            kwargs = {}
            et = rng.choice([None, True, False])
            if et is not None:
                kwargs["enable_thinking"] = et
            tools = None
            if with_tools:
                tools = rng.sample(TOOLS, rng.randint(1, 3))
            if tname == "llama3.x-tools.jinja" and rng.random() < 0.5:
                kwargs["tools_in_user_message"] = False
            cases.append({
                "id": "%s-%03d" % (tname.replace(".jinja", ""), i),
                "template": tname,
                "messages": msgs,
                "tools": tools,
                "add_generation_prompt": rng.random() < 0.7,
                "kwargs": kwargs,
                "bos_token": bos,
                "eos_token": eos,
                "parse_args": parse_args,
            })
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), OUT))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Renders every case of tests/data/templates/cases.json with the reference
implementation — transformers' own render_jinja_template (jinja2 sandbox,
trim_blocks, lstrip_blocks, loopcontrols, tojson override, raise_exception,
strftime_now) — and writes tests/data/templates/expected.json:
{case_id: {"output": text} | {"error": message}}.

strftime_now is pinned to FIXED_NOW (UTC) so outputs are reproducible; the C
test passes the same instant. Needs .venv with transformers + jinja2.
"""
import datetime as _dt
import json
import os
import sys

import transformers.utils.chat_template_utils as ctu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "templates")
FIXED_NOW = 1721995200  # 2024-07-26 12:00:00 UTC


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.fromtimestamp(FIXED_NOW, _dt.timezone.utc).replace(tzinfo=None)


ctu.datetime = _FixedDatetime


def parse_arguments(messages):
    out = json.loads(json.dumps(messages))
    for m in out:
        for c in m.get("tool_calls") or []:
            fn = c.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                try:
                    v = json.loads(fn["arguments"])
                except ValueError:
                    continue
                if isinstance(v, dict):
                    fn["arguments"] = v
    return out


def render(case, source):
    msgs = case["messages"]
    if case.get("parse_args"):
        msgs = parse_arguments(msgs)
    kwargs = {}
    if case.get("bos_token") is not None:
        kwargs["bos_token"] = case["bos_token"]
    if case.get("eos_token") is not None:
        kwargs["eos_token"] = case["eos_token"]
    kwargs.update(case.get("kwargs") or {})
    out = ctu.render_jinja_template(
        conversations=[msgs],
        tools=case.get("tools"),
        chat_template=source,
        add_generation_prompt=case["add_generation_prompt"],
        **kwargs,
    )
    return out[0][0] if isinstance(out, tuple) else out[0]


def main():
    with open(os.path.join(DATA, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    sources = {}
    expected = {}
    n_err = 0
    for case in cases:
        t = case["template"]
        if t not in sources:
            with open(os.path.join(DATA, t), encoding="utf-8", newline="") as f:
                sources[t] = f.read()
        try:
            expected[case["id"]] = {"output": render(case, sources[t])}
        except Exception as e:  # template errors are expected results too
            expected[case["id"]] = {"error": "%s: %s" % (type(e).__name__, e)}
            n_err += 1
    with open(os.path.join(DATA, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    print("rendered %d cases (%d expected errors)" % (len(cases), n_err), file=sys.stderr)


if __name__ == "__main__":
    main()

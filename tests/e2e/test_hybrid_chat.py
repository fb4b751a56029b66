"""A hybrid (Qwen3.5) model in `neuron serve`: a two-turn chat with the real
Qwen3.5 chat template, whose generation prompt opens a <think> block that the
next turn does not repeat (the assistant's reasoning is dropped from history).
The second turn must reuse the recurrent-state snapshot taken at the end of
the first prompt's last message (after its <|im_end|>), and give the same
log-probs as a cold run of the same request on a freshly loaded model.

Model: tools/make_tiny_hybrid_chat_model.py (real vocabulary and template,
one DeltaNet + one gated attention layer, random weights); skipped when the
Qwen3.5 tokenizer is not cached (scripts/fetch-vocab)."""
import os
import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("HELEXA_BIN", os.path.join(ROOT, "build", "bin"))
MODEL = "tiny-qwen35-chat"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_hybrid_chat_model.py"),
                        str(d / MODEL)], capture_output=True, text=True)
    if r.returncode == 2:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    exe = os.path.join(BIN, "neuron")
    if not os.path.exists(exe):
        pytest.skip(f"{exe} not built")
    p = subprocess.Popen([exe, "serve", "--listen", "127.0.0.1:0", "--models", str(d)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    m = re.search(r"listening on .*:(\d+)", p.stdout.readline())
    if not m:
        p.kill()
        pytest.fail(f"neuron did not start: {p.stderr.read()[-2000:]}")
    log = []
    threading.Thread(target=lambda: log.extend(p.stderr), daemon=True).start()
    yield f"http://127.0.0.1:{m.group(1)}"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 0, "".join(log[-50:])


def load(base):
    r = httpx.post(base + "/models/load", json={"model": MODEL, "context": 1024}, timeout=300)
    assert r.status_code == 200, r.text


def chat(base, messages):
    body = {"model": MODEL, "messages": messages, "max_tokens": 6, "temperature": 0,
            "logprobs": True, "top_logprobs": 3}
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def top_logprobs(resp):
    return [[t["logprob"] for t in c["top_logprobs"]] for c in resp["choices"][0]["logprobs"]["content"]]


def test_second_turn_reuses_snapshot(base):
    load(base)
    turn1 = [{"role": "user", "content": "Tell me about the lighthouse keeper and the sea. " * 4}]
    r1 = chat(base, turn1)
    n1 = r1["usage"]["prompt_tokens"]
    turn2 = turn1 + [{"role": "assistant", "content": "He kept the light."},
                     {"role": "user", "content": "And then?"}]
    warm = chat(base, turn2)
    cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"]
    # everything up to the first prompt's <|im_end|>: not its generation prompt
    # "\n<|im_start|>assistant\n<think>\n", which turn 2 renders differently
    assert n1 - 8 <= cached < n1, (cached, n1)
    # cold: the same request on a freshly loaded model
    u = httpx.post(base + "/models/unload", json={"model": MODEL}, timeout=120)
    assert u.status_code == 200
    load(base)
    cold = chat(base, turn2)
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm["usage"]["prompt_tokens"] == cold["usage"]["prompt_tokens"]
    lw, lc = top_logprobs(warm), top_logprobs(cold)
    assert len(lw) == len(lc) > 0
    for a, b in zip(lw, lc):
        assert all(abs(x - y) < 1e-4 for x, y in zip(a, b)), (lw, lc)

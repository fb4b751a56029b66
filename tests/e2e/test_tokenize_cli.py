"""`neuron tokenize` / `neuron detokenize` against the stored HF reference ids."""
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("HELEXA_BIN", os.path.join(ROOT, "build", "bin"))
VOCAB = os.path.join(ROOT, ".cache", "tokenizers", "qwen3")
DATA = os.path.join(ROOT, "tests", "data", "tokenizer")

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(VOCAB, "tokenizer.json")),
                                reason=".cache/tokenizers/qwen3 missing: run scripts/fetch-vocab")


def neuron(*args, stdin=b""):
    return subprocess.run([os.path.join(BIN, "neuron"), *args], input=stdin, capture_output=True,
                          timeout=120)


def cases(n):
    with open(os.path.join(DATA, "corpus.jsonl"), encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f][:n]
    with open(os.path.join(DATA, "expected_qwen3.jsonl"), encoding="utf-8") as f:
        expected = [json.loads(line) for line in f][:n]
    return list(zip(corpus, expected))


@pytest.mark.parametrize("i", [16, 777])
def test_tokenize_matches_reference(i):
    c, e = cases(i + 1)[i]
    raw = c["text"].encode() if "text" in c else bytes.fromhex(c["hex"])
    r = neuron("tokenize", "--model", VOCAB, "--special", stdin=raw)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == e["ids"]
    r = neuron("tokenize", "--model", os.path.join(VOCAB, "tokenizer.json"), stdin=raw)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == e.get("plain", e["ids"])


def test_detokenize_roundtrip():
    text = "Hello, wörld! <think>\n你好</think> 😀\r\n"
    ids = json.loads(neuron("tokenize", "--model", VOCAB, stdin=text.encode()).stdout)
    r = neuron("detokenize", "--model", VOCAB, stdin=json.dumps(ids).encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == text
    r = neuron("detokenize", "--model", VOCAB, "--skip-special", stdin=b"[9707, 151645, 0]")
    assert r.stdout == b"Hello!"


def test_errors():
    r = neuron("tokenize", "--model", "/nonexistent/model")
    assert r.returncode == 1 and b"/nonexistent/model" in r.stderr
    r = neuron("tokenize")
    assert r.returncode == 2
    r = neuron("detokenize", "--model", VOCAB, stdin=b"[1, 99999999]")
    assert r.returncode == 1 and b"element 1" in r.stderr
    r = neuron("detokenize", "--model", VOCAB, stdin=b"{")
    assert r.returncode == 1

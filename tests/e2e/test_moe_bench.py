"""qwen3moe through the CLI: `neuron synth` writes the tiny MoE preset
(quantized experts stacked as GGUF *_exps tensors), `neuron bench --backend
cpu` loads it and runs prefill and decode through the MoE ops, and reports
figures in its JSON document."""
import json
import os
import subprocess

import pytest

BIN = os.environ.get("HELEXA_BIN", "build/bin")
NEURON = os.path.join(BIN, "neuron")


def run(*args):
    p = subprocess.run([NEURON, *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q8_0"])
def test_synth_bench_qwen3moe(tmp_path, quant):
    out = tmp_path / "tiny-qwen3moe.gguf"
    run("synth", "--shape", "tiny-qwen3moe", "--quant", quant, "--out", str(out))
    d = json.loads(run("bench", "--model", str(out), "--backend", "cpu", "--threads", "2",
                       "--prompt-tokens", "48", "--gen-tokens", "8", "--json").stdout)
    assert d["arch"] == "qwen3moe"
    assert d["prompt_tokens"] == 48 and d["gen_tokens"] == 8
    assert d["prefill_tok_s"] > 0 and d["decode_tok_s"] > 0

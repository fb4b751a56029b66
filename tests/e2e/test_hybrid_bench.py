"""The hybrid arches through the CLI: `neuron synth` writes the tiny
qwen35 / qwen3next / qwen35moe presets (DeltaNet layers beside a gated
full-attention layer; value heads retiled for qwen35*), `neuron bench
--backend cpu` loads each and runs prefill and decode through the DeltaNet
ops, and reports figures in its JSON document; with Q8_0 too, whose
ssm_conv1d / ssm_a / ssm_dt stay f32."""
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


@pytest.mark.parametrize("preset,arch,quant", [("tiny-qwen35", "qwen35", "Q4_K_M"),
                                               ("tiny-qwen35", "qwen35", "Q8_0"),
                                               ("tiny-qwen3next", "qwen3next", "Q4_K_M"),
                                               ("tiny-qwen35moe", "qwen35moe", "Q4_K_M")])
def test_synth_bench_hybrid(tmp_path, preset, arch, quant):
    out = tmp_path / f"{preset}.gguf"
    run("synth", "--shape", preset, "--quant", quant, "--out", str(out))
    d = json.loads(run("bench", "--model", str(out), "--backend", "cpu", "--threads", "2",
                       "--prompt-tokens", "48", "--gen-tokens", "8", "--json").stdout)
    assert d["arch"] == arch
    assert d["prompt_tokens"] == 48 and d["gen_tokens"] == 8
    assert d["prefill_tok_s"] > 0 and d["decode_tok_s"] > 0

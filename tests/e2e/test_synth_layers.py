"""`neuron synth --layers N`: a real-shaped model cut to its first N blocks
(how the CPU side-by-side benchmarks fit MoE / hybrid shapes on a small
machine). The cut file has exactly N blocks with unchanged tensors, hybrid
layer kinds stay those of the full model, the engine runs it, and bad counts
are refused with the reason."""
import json
import os
import subprocess

BIN = os.environ.get("HELEXA_BIN", "build/bin")
NEURON = os.path.join(BIN, "neuron")

# tiny-qwen35 with 8 layers (full attention at 3 and 7)
HYB8 = {"model_type": "qwen3_5", "text_config": {
    "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "vocab_size": 512,
    "full_attention_interval": 4, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_value_head_dim": 32,
    "rope_parameters": {"rope_theta": 10000000, "mrope_section": [11, 11, 10]}}}


def synth(*args):
    return subprocess.run([NEURON, "synth", *args], capture_output=True, text=True, timeout=120)


def inspect(path):
    p = subprocess.run([NEURON, "inspect", str(path), "--json", "--tensors"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def blocks(doc):
    return {int(t["name"].split(".")[1]) for t in doc["tensors"] if t["name"].startswith("blk.")}


def test_layers_cuts_moe_preset(tmp_path):
    full, cut = tmp_path / "full.gguf", tmp_path / "cut.gguf"
    assert synth("--shape", "tiny-qwen3moe", "--out", str(full)).returncode == 0
    p = synth("--shape", "tiny-qwen3moe", "--layers", "1", "--out", str(cut))
    assert p.returncode == 0, p.stderr
    f, c = inspect(full), inspect(cut)
    assert f["hparams"]["n_layer"] == 2 and c["hparams"]["n_layer"] == 1
    assert blocks(f) == {0, 1} and blocks(c) == {0}
    shapes = {t["name"]: t for t in f["tensors"]}
    for t in c["tensors"]:  # every kept tensor has the full model's shape (Q4_K_M picks
        # Q6_K for some attn_v / ffn_down by layer index relative to the depth,
        # as llama.cpp's quantizer does for a model of that depth)
        assert t["shape"] == shapes[t["name"]]["shape"]
    b = subprocess.run([NEURON, "bench", "--model", str(cut), "--backend", "cpu", "--threads", "1",
                        "--prompt-tokens", "8", "--gen-tokens", "4", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["decode_tok_s"] > 0


def test_layers_keeps_hybrid_layer_kinds(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(HYB8))
    full, cut = tmp_path / "full.gguf", tmp_path / "cut.gguf"
    assert synth("--shape", str(cfg), "--out", str(full)).returncode == 0
    p = synth("--shape", str(cfg), "--layers", "4", "--out", str(cut))
    assert p.returncode == 0, p.stderr
    f, c = inspect(full), inspect(cut)
    assert f["hparams"]["n_layer_recurrent"] == 6
    assert c["hparams"]["n_layer"] == 4 and c["hparams"]["n_layer_recurrent"] == 3
    names = {t["name"] for t in c["tensors"]}
    for layer in range(3):  # DeltaNet blocks, then the gated full-attention block
        assert f"blk.{layer}.ssm_a" in names and f"blk.{layer}.attn_q.weight" not in names
    assert "blk.3.attn_q.weight" in names and "blk.3.ssm_a" not in names


def test_layers_refused(tmp_path):
    out = str(tmp_path / "x.gguf")
    for n, msg in (("0", "not a layer count"), ("abc", "not a layer count"),
                   ("3x", "not a layer count"), ("3", "exceeds the shape's 2 layers")):
        p = synth("--shape", "tiny-qwen3", "--layers", n, "--out", out)
        assert p.returncode == 2 and msg in p.stderr, (n, p.stderr)
    # a hybrid cut without a full-attention layer is not a valid model
    p = synth("--shape", "tiny-qwen35", "--layers", "3", "--out", out)
    assert p.returncode == 2 and "full_attention_interval" in p.stderr, p.stderr
    assert not os.path.exists(out)

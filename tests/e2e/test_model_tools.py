"""neuron synth / inspect / convert end to end: every arch's tiny preset is
synthesized, described (--json schema), converted, and re-read; when the
`gguf` package (llama.cpp's gguf-py, a dev dependency) is present the files
are also read back with it."""
import json
import os
import struct
import subprocess

import pytest

BIN = os.environ.get("HELEXA_BIN", "build/bin")
NEURON = os.path.join(BIN, "neuron")
ARCHES = ["qwen2", "qwen3", "qwen3moe", "qwen3next", "qwen35", "qwen35moe"]


def run(*args, ok=True):
    p = subprocess.run([NEURON, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def inspect(path):
    return json.loads(run("inspect", str(path), "--json", "--context", "1024").stdout)


@pytest.mark.parametrize("arch", ARCHES)
def test_synth_inspect_convert(tmp_path, arch):
    out = tmp_path / f"{arch}.gguf"
    run("synth", "--shape", f"tiny-{arch}", "--quant", "Q4_K_M", "--out", str(out))
    d = inspect(out)
    assert d["arch"] == arch and d["format"] == "gguf"
    for key in ("hparams", "tokenizer", "quant_mix", "memory", "tensors", "n_params", "total_bytes"):
        assert key in d
    assert d["memory"]["context"] == 1024
    assert d["memory"]["total_bytes"] >= d["total_bytes"]
    assert sum(v["bytes"] for v in d["quant_mix"].values()) == d["total_bytes"]
    types = {t["name"]: t["type"] for t in d["tensors"]}
    assert types["output_norm.weight"] == "f32"
    assert "q4_K" in d["quant_mix"]
    conv = tmp_path / f"{arch}_q8.gguf"
    run("convert", str(out), "--out", str(conv), "--quant", "Q8_0")
    d2 = inspect(conv)
    assert d2["hparams"] == d["hparams"]
    assert [t["name"] for t in d2["tensors"]] == [t["name"] for t in d["tensors"]]
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(conv))
    assert r.fields["general.architecture"].contents() == arch
    assert len(r.tensors) == len(d["tensors"])


def test_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0))
    p = run("inspect", str(bad), ok=False)
    assert p.returncode == 1 and "absurd tensor count" in p.stderr and "bad.gguf" in p.stderr
    p = run("synth", "--shape", "no-such-preset", "--out", str(tmp_path / "x.gguf"), ok=False)
    assert p.returncode == 2
    assert not (tmp_path / "x.gguf").exists()


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (shape, values) in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_convert_hf_dir(tmp_path):
    np = pytest.importorskip("numpy")
    cfg = {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
           "intermediate_size": 128, "vocab_size": 16, "tie_word_embeddings": True,
           "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    shapes = {
        "model.embed_tokens.weight": [16, 64], "model.norm.weight": [64],
        "model.layers.0.input_layernorm.weight": [64],
        "model.layers.0.post_attention_layernorm.weight": [64],
        "model.layers.0.self_attn.q_proj.weight": [64, 64],
        "model.layers.0.self_attn.k_proj.weight": [32, 64],
        "model.layers.0.self_attn.v_proj.weight": [32, 64],
        "model.layers.0.self_attn.o_proj.weight": [64, 64],
        "model.layers.0.self_attn.q_norm.weight": [32],
        "model.layers.0.self_attn.k_norm.weight": [32],
        "model.layers.0.mlp.gate_proj.weight": [128, 64],
        "model.layers.0.mlp.up_proj.weight": [128, 64],
        "model.layers.0.mlp.down_proj.weight": [64, 128],
    }
    vals = {k: rng.normal(0, 0.02, size=int(np.prod(s))).astype(np.float32) for k, s in shapes.items()}
    write_safetensors(tmp_path / "model.safetensors", {k: (s, vals[k].tolist()) for k, s in shapes.items()})
    out = tmp_path / "out.gguf"
    run("convert", str(tmp_path), "--out", str(out))
    d = inspect(out)
    assert d["arch"] == "qwen3" and d["hparams"]["tied_embeddings"] is True
    gguf = pytest.importorskip("gguf")
    r = gguf.GGUFReader(str(out))
    t = {x.name: x for x in r.tensors}
    q = np.asarray(t["blk.0.attn_q.weight"].data).reshape(-1)
    assert np.array_equal(q, vals["model.layers.0.self_attn.q_proj.weight"])
    assert r.fields["qwen3.attention.key_length"].contents() == 32
    assert r.fields["qwen3.block_count"].contents() == 1

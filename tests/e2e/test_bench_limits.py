"""`neuron bench` beside its limits: the bytes a decode token reads and the
flops a prompt token costs, recomputed here from `neuron inspect`'s tensor
list by the rules docs/engine.md states (one embedding row unless tied as the
output head; routed experts at their top-k share; MTP layers out), several
prompt lengths in one run (one JSON line each), and bad --prompt-tokens lists
refused."""
import json
import os
import subprocess

import pytest

BIN = os.environ.get("HELEXA_BIN", "build/bin")
NEURON = os.path.join(BIN, "neuron")


def run(*args, ok=True):
    p = subprocess.run([NEURON, *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def expected_cost(d):
    hp = d["hparams"]
    k, n_exp = hp["n_expert_used"], hp["n_expert"]
    w = macs = 0
    for t in d["tensors"]:
        name, b, elems = t["name"], t["bytes"], 1
        for x in t["shape"]:
            elems *= x
        layer = int(name.split(".")[1]) if name.startswith("blk.") else None
        if layer is not None and layer >= hp["n_layer"]:
            continue
        if name == "token_embd.weight" and not hp["tied_embeddings"]:
            b //= t["shape"][1]
        elif name.endswith("_exps.weight") and n_exp:
            b, elems = b * k // n_exp, elems * k // n_exp
        w += b
        if layer is not None and len(t["shape"]) >= 2:
            macs += elems
    n_attn = hp["n_layer"] - hp["n_layer_recurrent"]
    kv = n_attn * hp["n_head_kv"] * (hp["head_dim_k"] + hp["head_dim_v"]) * 2  # f16 cache
    attn = n_attn * 2 * hp["n_head"] * (hp["head_dim_k"] + hp["head_dim_v"])
    return w, 2 * macs, kv, attn, 2 * d["memory"]["recurrent_bytes"]


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-qwen3moe", "tiny-qwen35moe"])
def test_bench_limits(tmp_path, preset):
    out = tmp_path / f"{preset}.gguf"
    run("synth", "--shape", preset, "--quant", "Q4_K_M", "--out", str(out))
    d = json.loads(run("inspect", str(out), "--json").stdout)
    w, flops, kv, attn, state = expected_cost(d)
    if d["hparams"]["n_expert"]:
        assert w < d["total_bytes"] - d["tensors"][0]["bytes"]  # experts not all read
    if "qwen35" in preset:
        assert state > 0
    p = run("bench", "--model", str(out), "--backend", "cpu", "--threads", "2",
            "--prompt-tokens", "16,40", "--gen-tokens", "6", "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["prompt_tokens"] for r in rows] == [16, 40]
    for r in rows:
        assert r["weight_bytes_per_token"] == w
        assert r["layer_flops_per_token"] == flops
        assert r["kv_bytes_per_pos"] == kv
        assert r["attn_flops_per_pos"] == attn
        assert r["state_bytes_per_token"] == state
        depth = r["prompt_tokens"] + r["gen_tokens"] / 2
        assert r["decode_bytes_per_token"] == pytest.approx(w + state + kv * depth, abs=1)
        assert r["copy_gbps"] > 0
        assert r["decode_limit_tok_s"] == pytest.approx(
            r["copy_gbps"] * 1e9 / r["decode_bytes_per_token"], rel=1e-2)
        assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0
        # no GEMM roof and no device memory on the CPU backend
        assert r["gemm_tflops"] is None and r["prefill_limit_tok_s"] is None
        assert r["vram_used_mib"] is None
    assert rows[1]["decode_bytes_per_token"] > rows[0]["decode_bytes_per_token"]
    text = run("bench", "--model", str(out), "--backend", "cpu", "--threads", "2",
               "--prompt-tokens", "16,40", "--gen-tokens", "4").stdout
    assert "limit at depth" in text and "measured: copy" in text


@pytest.mark.parametrize("bad", ["16,,32", "0", "16,", ",16", "1,2,3,4,5,6,7,8,9", "x", "99999999"])
def test_bench_prompt_list_refused(tmp_path, bad):
    out = tmp_path / "m.gguf"
    run("synth", "--shape", "tiny-qwen3", "--quant", "Q8_0", "--out", str(out))
    p = run("bench", "--model", str(out), "--prompt-tokens", bad, ok=False)
    assert p.returncode == 2 and "--prompt-tokens" in p.stderr

#!/usr/bin/env python3
"""make_fixtures_moe.py — reference fixtures for the qwen3moe forward pass
(tests/engine/test_model_qwen3moe.c).

Same files and formats as make_fixtures.py (whose helpers it uses): an HF
directory (safetensors, config.json) per model with ref.json / ref.bin — the
transformers f32 logits of a 12-token prompt (every position) and of 8 decode
steps, and a 32-token greedy continuation — plus a GGUF written with the
`gguf` package in llama.cpp's layout (experts stacked into 3-D
ffn_{gate,up,down}_exps, router ffn_gate_inp).

  qwen3moe-tiny-f32   2 layers, 8 experts, top-2, norm_topk_prob on (as the
                      Qwen3-30B-A3B release); every layer sparse.
  qwen3moe-dense-f32  4 layers, 8 experts, top-3, norm_topk_prob off,
                      decoder_sparse_step 2 and mlp_only_layers [3]: layers
                      0 and 2 are dense by the step, 3 by the list, 1 is
                      sparse. Its GGUF carries the dense layers' ffn_gate /
                      ffn_up / ffn_down and expert_weights_norm = false.

Expert selection is discontinuous: a token whose k-th and (k+1)-th router
probabilities are nearly equal could pick a different expert under a
different (equally valid) float summation order. Each model is therefore
checked over every routed position of the prompt, decode and greedy tokens:
the smallest relative gap between those two probabilities must be above
MIN_GAP, else the seed is advanced and the model redrawn.

Run from the repo root:  .venv/bin/python tools/reference/make_fixtures_moe.py
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(__file__))
import make_fixtures as mf  # noqa: E402

OUT = mf.OUT
MIN_GAP = 1e-3


def init_weights(model, seed):
    """make_fixtures.init_weights, with the fan-in of stacked expert tensors
    [X][out][in] taken from their last dimension."""
    mf.init_weights(model, seed)
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 3:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))


def gguf_name(hf):
    parts = hf.split(".")
    if len(parts) > 3 and parts[3] == "mlp":
        rest = ".".join(parts[3:])
        r = {"mlp.gate.weight": "ffn_gate_inp.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight",
             "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}.get(rest)
        if r:
            return f"blk.{parts[2]}.{r}"
    return mf.gguf_name(hf)


def write_gguf(model, cfg, path):
    import gguf

    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_name(os.path.basename(path))
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_expert_count(cfg.num_experts)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    w.add_expert_weights_norm(bool(cfg.norm_topk_prob))
    w.add_file_type(0)  # ALL_F32
    F = cfg.moe_intermediate_size
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        a = v.detach().to(torch.float32).numpy()
        if k.endswith("mlp.experts.gate_up_proj"):  # [X][2F][E]: gate rows first
            blk = k.split(".")[2]
            w.add_tensor(f"blk.{blk}.ffn_gate_exps.weight", np.ascontiguousarray(a[:, :F, :]))
            w.add_tensor(f"blk.{blk}.ffn_up_exps.weight", np.ascontiguousarray(a[:, F:, :]))
        elif k.endswith("mlp.experts.down_proj"):  # [X][E][F]
            w.add_tensor(f"blk.{k.split('.')[2]}.ffn_down_exps.weight", a)
        else:
            w.add_tensor(gguf_name(k), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def min_router_gap(model, ids, k):
    """Smallest (p_k - p_k+1) / p_k over every routed row of one forward of ids."""
    gaps = []

    def hook(mod, inp, out):
        p = torch.softmax(out[0].float(), dim=-1)
        s = torch.sort(p, dim=-1, descending=True).values
        gaps.append(((s[:, k - 1] - s[:, k]) / s[:, k - 1]).min().item())

    hs = [layer.mlp.gate.register_forward_hook(hook) for layer in model.model.layers
          if hasattr(layer.mlp, "gate") and hasattr(layer.mlp, "experts")]
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hs:
        h.remove()
    return min(gaps)


def make(name, cfg_kwargs, seed):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for attempt in range(50):
        s = seed + 100 * attempt
        torch.manual_seed(s)
        cfg = transformers.Qwen3MoeConfig(**cfg_kwargs)
        model = transformers.Qwen3MoeForCausalLM(cfg).to(torch.float32)
        init_weights(model, s)
        model.save_pretrained(d, safe_serialization=True)
        ref_model = transformers.Qwen3MoeForCausalLM.from_pretrained(d, dtype=torch.float32)
        ref_model.eval()
        rng = np.random.default_rng(s)
        prompt = rng.integers(0, cfg.vocab_size, mf.N_PROMPT).tolist()
        decode, greedy, logits = mf.reference(ref_model, prompt, cfg.vocab_size)
        gap = min_router_gap(ref_model, prompt + greedy, cfg.num_experts_per_tok)
        if gap > MIN_GAP:
            break
        print(name, "seed", s, "router gap %.2e too small, redrawing" % gap, file=sys.stderr)
    else:
        raise SystemExit(f"{name}: no seed with a router gap above {MIN_GAP}")
    with open(os.path.join(d, "ref.bin"), "wb") as f:
        f.write(logits.tobytes())
    meta = {
        "arch": "qwen3moe", "dtype": "f32", "vocab": cfg.vocab_size, "prompt": prompt,
        "decode": decode, "greedy": greedy, "n_prompt": mf.N_PROMPT, "n_decode": mf.N_DECODE,
        "logits_std": float(logits.std()), "min_router_gap": gap, "seed": s,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(meta, f, indent=1)
    write_gguf(ref_model, cfg, os.path.join(OUT, name + ".gguf"))
    print(name, "logits std %.3f" % meta["logits_std"], "router gap %.2e" % gap, "greedy",
          greedy[:10], file=sys.stderr)


def main():
    base = dict(vocab_size=384, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                head_dim=32, max_position_embeddings=256, rms_norm_eps=1e-6,
                tie_word_embeddings=False, rope_theta=10000.0, num_experts=8,
                bos_token_id=None, eos_token_id=None)
    make("qwen3moe-tiny-f32",
         dict(base, num_hidden_layers=2, intermediate_size=128, moe_intermediate_size=32,
              num_experts_per_tok=2, norm_topk_prob=True), 11)
    make("qwen3moe-dense-f32",
         dict(base, num_hidden_layers=4, intermediate_size=64, moe_intermediate_size=16,
              num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=2,
              mlp_only_layers=[3]), 12)


if __name__ == "__main__":
    main()

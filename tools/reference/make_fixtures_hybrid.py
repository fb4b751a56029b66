#!/usr/bin/env python3
"""make_fixtures_hybrid.py — reference fixtures for the hybrid generation
(tests/engine/test_model_qwen35.c): Qwen3-Next, Qwen3.5 (dense, text-only) and
Qwen3.5-MoE (text-only), random weights in f32, saved as HF directories with
the same ref.json / ref.bin pair as make_fixtures.py (tests/engine/model_ref.h):

  ref.json  prompt ids, decode ids (fed one at a time after the prompt),
            greedy continuation (32 tokens, HF generate, do_sample=False)
  ref.bin   f32 little endian: logits of every prompt position [n_prompt][V]
            followed by the logits after each decode token [n_decode][V]

The configs are tiny but keep what the engine must get right: fewer key heads
than value heads (2 vs 4, so the V-head order of the GGUF layout matters),
d_k != d_v for the DeltaNet heads, linear and full-attention layers mixed
(three linear, then one full, as the released models), partial rotary (1/4 of the
head), the query+gate q projection, and for the MoE models routed experts
plus the shared expert with its sigmoid gate. The prompt (40 tokens) is
prefilled by transformers with the chunked delta rule and the decode steps
use the recurrent form, so the reference pins both forms.

Weights are drawn with scales that give O(1) activations and separated logits;
RMSNorm weights of these models are zero-centred (the model computes
x * (1 + w)), so they are drawn around 0, except the DeltaNet gated norm, whose
weight is plain (drawn around 1). A_log is drawn so that the per-token decay
exp(g) spans about 0.05 .. 0.95.

Run from the repo root:  .venv/bin/python tools/reference/make_fixtures_hybrid.py
(then tools/reference/convert_llamacpp.py makes the llama.cpp GGUFs of them).
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "models")
N_PROMPT, N_DECODE, N_GREEDY = 40, 8, 32


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("linear_attn.norm.weight"):  # gated norm: plain weight
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name:  # zero-centred: effective weight 1 + w
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.empty(p.shape).uniform_(0.3, 3.0, generator=g)))
            elif name.endswith("dt_bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "conv1d" in name:  # [C, 1, K]
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # linear [out, in] and stacked experts [X, out, in]: fan-in scaling
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))


def reference(model, prompt, vocab):
    model.eval()
    with torch.no_grad():
        ids = torch.tensor([prompt])
        greedy = model.generate(ids, max_new_tokens=N_GREEDY, do_sample=False,
                                min_new_tokens=N_GREEDY, pad_token_id=None,
                                eos_token_id=None)[0, len(prompt):].tolist()
        decode = greedy[:N_DECODE]
        out = model(ids, use_cache=True)
        logits = [out.logits[0].float()]
        past = out.past_key_values
        for t in decode:
            out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits.append(out.logits[0].float())
        all_logits = torch.cat(logits, 0).numpy().astype("<f4")
        # cross-check: one full (chunked) forward of prompt + decode gives the
        # same logits as the recurrent decode steps
        full = model(torch.tensor([prompt + decode])).logits[0].float().numpy()
        err = np.abs(full - all_logits).max()
        assert err < 1e-3 * full.std(), "cache vs full forward differ: %g" % err
    assert all_logits.shape == (len(prompt) + N_DECODE, vocab)
    return decode, greedy, all_logits


BASE = dict(vocab_size=384, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=256, rms_norm_eps=1e-6,
            # an end-of-turn id for the engine's snapshot placement (the reference
            # generation ignores it: eos_token_id=None there)
            tie_word_embeddings=False, bos_token_id=None, eos_token_id=383,
            linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=24,
            linear_num_key_heads=2, linear_num_value_heads=4,
            # linear, linear, linear, full — as the released models (interval 4)
            layer_types=["linear_attention"] * 3 + ["full_attention"],
            full_attention_interval=4)
ROPE = dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
           shared_expert_intermediate_size=48)

CONFIGS = {
    "qwen3next-tiny-f32": (transformers.Qwen3NextConfig, transformers.Qwen3NextForCausalLM,
                           dict(BASE, intermediate_size=128, rope_parameters=ROPE,
                                decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True,
                                **MOE), 11),
    "qwen35-tiny-f32": (transformers.Qwen3_5TextConfig, transformers.Qwen3_5ForCausalLM,
                        dict(BASE, intermediate_size=128,
                             rope_parameters=dict(ROPE, mrope_section=[2, 1, 1],
                                                  mrope_interleaved=True)), 12),
    "qwen35moe-tiny-f32": (transformers.Qwen3_5MoeTextConfig,
                           transformers.Qwen3_5MoeForCausalLM,
                           dict(BASE, rope_parameters=dict(ROPE, mrope_section=[2, 1, 1],
                                                           mrope_interleaved=True), **MOE), 13),
}


def make(name):
    cfg_cls, model_cls, kw, seed = CONFIGS[name]
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    cfg = cfg_cls(**kw)
    model = model_cls(cfg).to(torch.float32)
    init_weights(model, seed)
    model.save_pretrained(d, safe_serialization=True)
    ref_model = model_cls.from_pretrained(d, dtype=torch.float32)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, cfg.vocab_size, N_PROMPT).tolist()
    decode, greedy, logits = reference(ref_model, prompt, cfg.vocab_size)
    with open(os.path.join(d, "ref.bin"), "wb") as f:
        f.write(logits.tobytes())
    meta = {
        "arch": cfg.model_type, "dtype": "f32", "vocab": cfg.vocab_size, "prompt": prompt,
        "decode": decode, "greedy": greedy, "n_prompt": N_PROMPT, "n_decode": N_DECODE,
        "logits_std": float(logits.std()), "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(name, "logits std %.3f" % meta["logits_std"], "greedy", greedy[:10], file=sys.stderr)


def main():
    for name in sys.argv[1:] or CONFIGS:
        make(name)


if __name__ == "__main__":
    main()

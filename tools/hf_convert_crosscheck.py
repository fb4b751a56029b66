#!/usr/bin/env python3
"""End-to-end check of the HF -> GGUF transforms (model_file.c): a tiny
random HF model of each arch is built with transformers, saved as
safetensors, converted by `neuron convert` (f32, no quantization), loaded by
llama.cpp (llama-cpp-python), and llama.cpp's logits are compared with the
HF forward pass on the same tokens. This exercises the norm +1 folding,
ssm_a = -exp(A_log), qkvz regrouping, V-head reordering and expert stacking
against two independent implementations.

Run: .venv/bin/python tools/hf_convert_crosscheck.py build-X/bin/neuron [arch...]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BASE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, intermediate_size=128, rms_norm_eps=1e-6, max_position_embeddings=256,
            tie_word_embeddings=False)
HYB = dict(linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_num_key_heads=2,
           linear_num_value_heads=4, linear_value_head_dim=16, full_attention_interval=4,
           layer_types=["linear_attention"] * 3 + ["full_attention"])
MOE = dict(moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True)


def build(arch, vocab):
    import transformers as tf
    if arch == "qwen3":
        cfg = tf.Qwen3Config(vocab_size=vocab, rope_theta=1e6, **BASE)
        return tf.Qwen3ForCausalLM(cfg)
    if arch == "qwen2":
        b = {k: v for k, v in BASE.items() if k != "head_dim"}
        cfg = tf.Qwen2Config(vocab_size=vocab, rope_theta=1e6, **b)
        return tf.Qwen2ForCausalLM(cfg)
    if arch == "qwen3moe":
        cfg = tf.Qwen3MoeConfig(vocab_size=vocab, rope_theta=1e6, **BASE, **MOE)
        return tf.Qwen3MoeForCausalLM(cfg)
    if arch == "qwen3next":
        cfg = tf.Qwen3NextConfig(vocab_size=vocab, shared_expert_intermediate_size=32,
                                 partial_rotary_factor=0.25, **BASE, **MOE, **HYB)
        return tf.Qwen3NextForCausalLM(cfg)
    if arch == "qwen35":
        cfg = tf.Qwen3_5TextConfig(vocab_size=vocab, **BASE, **HYB)
        return tf.Qwen3_5ForCausalLM(cfg)
    if arch == "qwen35moe":
        cfg = tf.Qwen3_5MoeTextConfig(vocab_size=vocab, shared_expert_intermediate_size=32,
                                      **BASE, **MOE, **HYB)
        return tf.Qwen3_5MoeForCausalLM(cfg)
    raise SystemExit(f"unknown arch {arch}")


def check(neuron, arch, tmp):
    import llama_cpp
    voc = "qwen35" if arch.startswith("qwen35") else "qwen3"
    tokdir = os.path.join(ROOT, ".cache", "tokenizers", voc)
    vocab = 248320 if voc == "qwen35" else 151936
    torch.manual_seed(0)
    model = build(arch, vocab).float().eval()
    with torch.no_grad():  # make the random model less degenerate: norms away from 0/1
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.normal_(0.0 if arch in ("qwen3next", "qwen35", "qwen35moe") else 1.0, 0.1)
            elif n.endswith("A_log"):
                p.uniform_(-1, 1)
            elif n.endswith("dt_bias"):
                p.normal_(0, 0.5)
    d = os.path.join(tmp, arch)
    model.save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tokdir, f), d)
    out = os.path.join(tmp, f"{arch}.gguf")
    subprocess.run([neuron, "convert", d, "--out", out], check=True, capture_output=True)
    ids = [9707, 11, 1879, 0, 576, 374, 264, 1273]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    llm = llama_cpp.Llama(model_path=out, n_ctx=64, verbose=False, logits_all=True)
    llm.eval(ids)
    got = np.asarray(llm.scores[:len(ids)], dtype=np.float32)
    err = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-9))
    same = bool(np.all(got.argmax(-1) == ref.argmax(-1)))
    print(f"{arch}: max |llama.cpp - HF| / max|HF| = {err:.2e}, argmax equal: {same}")
    return err < 1e-2 and same


def main():
    neuron = sys.argv[1] if len(sys.argv) > 1 else "build/bin/neuron"
    arches = sys.argv[2:] or ["qwen2", "qwen3", "qwen3moe", "qwen3next", "qwen35", "qwen35moe"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for a in arches:
            try:
                ok &= check(neuron, a, tmp)
            except Exception as e:  # report and go on with the other arches
                print(f"{a}: FAILED: {e}")
                ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

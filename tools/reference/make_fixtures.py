#!/ usr / bin / env python3
"""make_fixtures.py — reference fixtures for the CPU engine (tests/engine/test_model_*.c).

Builds small random-weight Qwen3 and Qwen2 models with transformers, saves each
as an HF directory (safetensors) and, for the f32 ones, as a GGUF written by the
`gguf` package (llama.cpp's canonical tensor names and layout), then records the
transformers reference in f32:

  ref.json  prompt ids, decode ids (fed one at a time after the prompt),
            greedy continuation (32 tokens, HF generate, do_sample=False)
  ref.bin   f32 little endian: logits of every prompt position [n_prompt][V]
            followed by the logits after each decode token [n_decode][V]

Weights are drawn with scales that give O(1) activations and well-separated
logits (HF's 0.02 init gives near-uniform logits that would test little).
The bf16 model is saved in bf16; its reference is computed in f32 from those
bf16 weights (so an exact bf16-weight engine matches it to f32 rounding).

Run from the repo root:  .venv/bin/python tools/reference/make_fixtures.py
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import transformers

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "models")
N_PROMPT, N_DECODE, N_GREEDY = 12, 8, 32


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # biases
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
#tied tables are also the head : keep logits O(1) there
                std = 1.0 / p.shape[1] ** 0.25 if model.config.tie_word_embeddings else 1.0
                p.copy_(std * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[1] ** 0.5))


def gguf_name(hf):
    m = {
  "model.embed_tokens.weight" : "token_embd.weight",
                                "model.norm.weight" : "output_norm.weight",
                                                      "lm_head.weight" : "output.weight",
    }
    if hf in m:
        return m[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    layer, rest = parts[2], ".".join(parts[3:])
    r = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }[rest]
    return f"blk.{layer}.{r}"


def write_gguf(model, cfg, arch, path):
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_name(os.path.basename(path))
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]
                               if getattr(cfg, "rope_parameters", None) else cfg.rope_theta))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_file_type(0)  # ALL_F32
    if cfg.eos_token_id is not None:
        w.add_eos_token_id(cfg.eos_token_id)
    if cfg.bos_token_id is not None:
        w.add_bos_token_id(cfg.bos_token_id)
    sd = model.state_dict()
    for k, v in sd.items():
        if k == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        w.add_tensor(gguf_name(k), v.detach().to(torch.float32).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference(model, prompt, vocab):
    model.eval()
    with torch.no_grad():
        ids = torch.tensor([prompt])
        greedy = model.generate(ids, max_new_tokens=N_GREEDY, do_sample=False, min_new_tokens=N_GREEDY,
                                pad_token_id=None, eos_token_id=None)[0, len(prompt):].tolist()
        decode = greedy[:N_DECODE]
        out = model(ids, use_cache=True)
        logits = [out.logits[0].float()]
        past = out.past_key_values
        for t in decode:
            out = model(torch.tensor([[t]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits.append(out.logits[0].float())
        all_logits = torch.cat(logits, 0).numpy().astype("<f4")
#cross - check : one full forward of prompt + decode gives the same logits
        full = model(torch.tensor([prompt + decode])).logits[0].float().numpy()
        assert np.abs(full - all_logits).max() < 1e-3 * full.std(), "cache vs full forward differ"
    assert all_logits.shape == (len(prompt) + N_DECODE, vocab)
    return decode, greedy, all_logits


def make(name, arch, cfg_kwargs, dtype, seed, gguf_too):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    if arch == "qwen3":
        cfg = transformers.Qwen3Config(**cfg_kwargs)
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        cfg = transformers.Qwen2Config(**cfg_kwargs)
        model = transformers.Qwen2ForCausalLM(cfg)
    model = model.to(torch.float32)
    init_weights(model, seed)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
        model.config.torch_dtype = torch.bfloat16
    model.save_pretrained(d, safe_serialization=True)
#reference always in f32, from the stored weights, loaded the way a user
#would(model.to() round trips would also round the rotary inv_freq buffer)
    cls = transformers.Qwen3ForCausalLM if arch == "qwen3" else transformers.Qwen2ForCausalLM
    ref_model = cls.from_pretrained(d, dtype=torch.float32)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, cfg.vocab_size, N_PROMPT).tolist()
    decode, greedy, logits = reference(ref_model, prompt, cfg.vocab_size)
    with open(os.path.join(d, "ref.bin"), "wb") as f:
        f.write(logits.tobytes())
    meta = {
        "arch": arch, "dtype": dtype, "vocab": cfg.vocab_size, "prompt": prompt,
        "decode": decode, "greedy": greedy, "n_prompt": N_PROMPT, "n_decode": N_DECODE,
        "logits_std": float(logits.std()), "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(meta, f, indent=1)
    if gguf_too:
        write_gguf(ref_model, cfg, arch, os.path.join(OUT, name + ".gguf"))
    print(name, "logits std %.3f" % meta["logits_std"], "greedy", greedy[:10], file=sys.stderr)


def main():
    small = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                 rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None)
    make("qwen3-tiny-f32", "qwen3", dict(small, head_dim=32, tie_word_embeddings=False,
                                         rope_theta=10000.0), "f32", 1, True)
    # YaRN rope scaling as transformers computes it (factor 4 over an original 64-token window)
    make("qwen3-yarn-f32", "qwen3",
         dict(small, head_dim=32, tie_word_embeddings=True,
              rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                   original_max_position_embeddings=64)), "f32", 4, False)
    make("qwen2-tiny-f32", "qwen2", dict(small, tie_word_embeddings=True, rope_theta=10000.0),
         "f32", 2, True)
    kq = dict(vocab_size=512, hidden_size=256, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64,
              max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
              rope_theta=1000000.0, bos_token_id=None, eos_token_id=None)
    make("qwen3-k-bf16", "qwen3", kq, "bf16", 3, False)


if __name__ == "__main__":
    main()

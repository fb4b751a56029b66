#!/usr/bin/env python3
"""make_tiny_hybrid_chat_model.py — writes a tiny random-weight Qwen3.5 (text)
HF directory with the real Qwen3.5 vocabulary and chat template, for
end-to-end tests of hybrid models in `neuron serve` (tests/e2e/test_hybrid_chat.py):
two layers, one Gated DeltaNet and one gated full-attention layer, hidden
size 16, tied embeddings; <|im_end|> is the eos, as in the instruct models.

Pure standard library (runs at test time, well under a second). The weights
only need to be cheap; the template and vocabulary are the real ones
(tests/data/templates/qwen3.5.jinja, .cache/tokenizers/qwen35/tokenizer.json).

usage: make_tiny_hybrid_chat_model.py OUT_DIR [--tokenizers DIR]
Exit code 2 when the tokenizer is not available (run scripts/fetch-vocab).
"""
import argparse
import array
import json
import os
import random
import shutil
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VOCAB = 248320
IM_END = 248046
E, HEADS, KV_HEADS, HD, FF = 16, 2, 1, 8, 32
NK, NV, DK, DV, KCONV = 1, 2, 8, 8, 4
LAYER_TYPES = ["linear_attention", "full_attention"]


def tensors():
    conv = 2 * NK * DK + NV * DV
    out = {"model.embed_tokens.weight": (VOCAB, E), "model.norm.weight": (E,)}
    for i, kind in enumerate(LAYER_TYPES):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": (E,),
                    p + "post_attention_layernorm.weight": (E,),
                    p + "mlp.gate_proj.weight": (FF, E), p + "mlp.up_proj.weight": (FF, E),
                    p + "mlp.down_proj.weight": (E, FF)})
        if kind == "linear_attention":
            a = p + "linear_attn."
            out.update({a + "in_proj_qkv.weight": (conv, E), a + "in_proj_z.weight": (NV * DV, E),
                        a + "in_proj_b.weight": (NV, E), a + "in_proj_a.weight": (NV, E),
                        a + "conv1d.weight": (conv, 1, KCONV), a + "A_log": (NV,),
                        a + "dt_bias": (NV,), a + "norm.weight": (DV,),
                        a + "out_proj.weight": (E, NV * DV)})
        else:
            a = p + "self_attn."
            out.update({a + "q_proj.weight": (2 * HEADS * HD, E),
                        a + "k_proj.weight": (KV_HEADS * HD, E),
                        a + "v_proj.weight": (KV_HEADS * HD, E), a + "o_proj.weight": (E, HEADS * HD),
                        a + "q_norm.weight": (HD,), a + "k_norm.weight": (HD,)})
    return out


def data_for(name, shape, rng):
    n = 1
    for s in shape:
        n *= s
    if name.endswith("linear_attn.norm.weight"):  # plain gated-norm weight
        return array.array("f", [1.0]) * n
    if name.endswith("norm.weight") or name.endswith("A_log") or name.endswith("dt_bias"):
        return array.array("f", [0.0]) * n  # zero-centred norms: effective weight 1
    block = array.array("f", [rng.gauss(0.0, 0.5) for _ in range(min(n, 7919))])
    a = block * (-(-n // len(block)))
    del a[n:]
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokenizers", default=os.path.join(ROOT, ".cache", "tokenizers", "qwen35"))
    a = ap.parse_args()
    tok_json = os.path.join(a.tokenizers, "tokenizer.json")
    if not os.path.exists(tok_json):
        print(f"make_tiny_hybrid_chat_model: {tok_json} missing (run scripts/fetch-vocab)",
              file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(35)
    header, blobs, off = {}, [], 0
    for name, shape in tensors().items():
        b = data_for(name, shape, rng).tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    config = {
        "architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text",
        "vocab_size": VOCAB, "hidden_size": E, "intermediate_size": FF,
        "num_hidden_layers": len(LAYER_TYPES), "layer_types": LAYER_TYPES,
        "full_attention_interval": 2, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HD, "linear_conv_kernel_dim": KCONV,
        "linear_key_head_dim": DK, "linear_value_head_dim": DV, "linear_num_key_heads": NK,
        "linear_num_value_heads": NV, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0,
                            "partial_rotary_factor": 0.25, "mrope_section": [1, 0, 0]},
        "tie_word_embeddings": True, "hidden_act": "silu", "eos_token_id": IM_END,
        "torch_dtype": "float32",
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copyfile(tok_json, os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(ROOT, "tests", "data", "templates", "qwen3.5.jinja")) as f:
        template = f.read()
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": template, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>"}, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

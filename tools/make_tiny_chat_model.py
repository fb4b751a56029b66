#!/usr/bin/env python3
"""make_tiny_chat_model.py — writes a tiny random-weight Qwen3 HF directory
with the real Qwen3 vocabulary and chat template, for end-to-end tests of
`neuron serve` (chat template, tokenizer, tool and reasoning parsing need the
real vocabulary; the weights only need to be cheap).

Pure standard library (no numpy/torch: it runs at test time). The weights are
f32, hidden size 16, 1 layer, tied embeddings: about 10 MB, written in well
under a second.

usage: make_tiny_chat_model.py OUT_DIR [--think] [--tokenizers DIR] [--bench]
                               [--nan-token ID]
  --think   use a variant of the template whose generation prompt opens a
            <think> block (as Qwen3.5's does), so generated text is reasoning
"""
import argparse
import array
import json
import os
import random
import shutil
import struct
import sys

VOCAB = 151936
HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FF, LAYERS = 16, 2, 1, 8, 32, 1


def tensors():
    out = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out.update({
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            p + "self_attn.q_norm.weight": (HEAD_DIM,),
            p + "self_attn.k_norm.weight": (HEAD_DIM,),
            p + "mlp.gate_proj.weight": (FF, HIDDEN),
            p + "mlp.up_proj.weight": (FF, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, FF),
        })
    return out


def data_for(name, shape, rng):
    n = 1
    for s in shape:
        n *= s
    if name.endswith("norm.weight"):
        return array.array("f", [1.0]) * n
    # a random block repeated: cheap for the 2.4M-element embedding
    block = array.array("f", [rng.gauss(0.0, 0.5) for _ in range(min(n, 7919))])
    reps = -(-n // len(block))
    a = block * reps
    del a[n:]
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--think", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--nan-token", type=int, default=-1,
                    help="make this token's embedding row NaN (tests of the NaN path)")
    ap.add_argument("--tokenizers", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", ".cache", "tokenizers", "qwen3"))
    a = ap.parse_args()
    global HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FF, LAYERS
    if a.bench:
        HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FF, LAYERS = 256, 4, 2, 64, 768, 4
    tok_json = os.path.join(a.tokenizers, "tokenizer.json")
    tok_cfg = os.path.join(a.tokenizers, "tokenizer_config.json")
    if not os.path.exists(tok_json):
        print(f"make_tiny_chat_model: {tok_json} missing (run scripts/fetch-vocab)", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(1234)
    header, blobs, off = {}, [], 0
    shapes = tensors()
    if a.nan_token >= 0:  # untied, so that only inputs holding the token go NaN
        shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    for name, shape in shapes.items():
        arr = data_for(name, shape, rng)
        if name == "model.embed_tokens.weight" and a.nan_token >= 0:
            for k in range(HIDDEN):
                arr[a.nan_token * HIDDEN + k] = float("nan")
        b = arr.tobytes()
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
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": VOCAB,
        "hidden_size": HIDDEN, "intermediate_size": FF, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": a.nan_token < 0, "attention_bias": False, "hidden_act": "silu",
        "bos_token_id": 151643, "eos_token_id": 151645, "torch_dtype": "float32",
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copyfile(tok_json, os.path.join(a.out, "tokenizer.json"))
    with open(tok_cfg) as f:
        cfg = json.load(f)
    if a.think:
        t = cfg["chat_template"]
        needle = "{{- '<|im_start|>assistant\\n' }}"
        if needle not in t:
            print("make_tiny_chat_model: template has no generation prompt to patch", file=sys.stderr)
            return 1
        cfg["chat_template"] = t.replace(needle, "{{- '<|im_start|>assistant\\n<think>\\n' }}")
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Cross-checks helexa's model files against llama.cpp (llama-cpp-python):

1. quantizer + Q4_K_M / Q8_0 / Q6_K policy: a bf16 model made by
   `neuron synth` is quantized by llama.cpp (llama_model_quantize) and by
   `neuron convert`; every tensor must have the same type and the same bytes.
   The bf16 source and llama.cpp's outputs are kept as test fixtures
   (tests/data/quant/llama_*.gguf) for tests/engine/test_model_file.c.
2. llama.cpp loads files we write: for every arch a small synth model with
   the real Qwen3 / Qwen3.5 tokenizer embedded is loaded by llama_cpp.Llama
   and evaluates a prompt; logits must be finite and not constant.

Run: .venv/bin/python tools/llama_cpp_crosscheck.py build-X/bin/neuron
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
QDIR = os.path.join(ROOT, "tests", "data", "quant")
CFG = {"model_type": "qwen3", "hidden_size": 256, "num_hidden_layers": 2,
       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
       "intermediate_size": 256, "vocab_size": 256, "tie_word_embeddings": False,
       "rope_theta": 1000000}
_BASE = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 64, "rope_theta": 1000000}
_HYB = {"full_attention_interval": 4, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 32,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_value_head_dim": 32}
_MOE = {"moe_intermediate_size": 256, "num_experts": 8, "num_experts_per_tok": 2}
# small shapes with the real vocab sizes, so the real tokenizers can be embedded
ARCH_CFGS = {
    "qwen2": dict(model_type="qwen2", vocab_size=151936, intermediate_size=512,
                  **{k: v for k, v in _BASE.items() if k != "head_dim"}),
    "qwen3": dict(model_type="qwen3", vocab_size=151936, intermediate_size=512, **_BASE),
    "qwen3moe": dict(model_type="qwen3_moe", vocab_size=151936, **_BASE, **_MOE),
    "qwen3next": dict(model_type="qwen3_next", vocab_size=151936,
                      shared_expert_intermediate_size=256, **_BASE, **_MOE, **_HYB),
    "qwen35": {"model_type": "qwen3_5",
               "text_config": dict(vocab_size=248320, intermediate_size=512, **_BASE, **_HYB)},
    "qwen35moe": {"model_type": "qwen3_5_moe",
                  "text_config": dict(vocab_size=248320, shared_expert_intermediate_size=256,
                                      **_BASE, **_MOE, **_HYB)},
}
FTYPES = {"Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
          "Q6_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K}


def llama_quantize(src, dst, ftype):
    p = llama_cpp.llama_model_quantize_default_params()
    p.nthread = 1
    p.ftype = ftype
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    assert rc == 0, f"llama_model_quantize failed: {rc}"


def compare(a_path, b_path):
    a = {t.name: t for t in gguf.GGUFReader(a_path).tensors}
    b = {t.name: t for t in gguf.GGUFReader(b_path).tensors}
    assert a.keys() == b.keys(), (a.keys() ^ b.keys())
    bad = 0
    for n in sorted(a):
        same_type = a[n].tensor_type == b[n].tensor_type
        same_bytes = np.asarray(a[n].data).tobytes() == np.asarray(b[n].data).tobytes()
        if not (same_type and same_bytes):
            bad += 1
            print(f"  {n}: llama.cpp {a[n].tensor_type.name} vs helexa {b[n].tensor_type.name}, "
                  f"bytes {'equal' if same_bytes else 'differ'}")
    return len(a), bad


def main():
    neuron = sys.argv[1] if len(sys.argv) > 1 else "build/bin/neuron"
    os.makedirs(QDIR, exist_ok=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "config.json")
        with open(cfg, "w") as f:
            json.dump(CFG, f)
        src = os.path.join(QDIR, "llama_src_bf16.gguf")
        subprocess.run([neuron, "synth", "--shape", cfg, "--quant", "BF16", "--out", src,
                        "--seed", "7"], check=True)
        for name, ftype in FTYPES.items():
            ref = os.path.join(QDIR, f"llama_{name.lower()}.gguf")
            ours = os.path.join(tmp, f"ours_{name}.gguf")
            llama_quantize(src, ref, ftype)
            subprocess.run([neuron, "convert", src, "--out", ours, "--quant", name,
                            "--threads", "1"], check=True, capture_output=True)
            n, bad = compare(ref, ours)
            print(f"{name}: {n} tensors, {bad} differ from llama.cpp")
            failed |= bad > 0
        for arch, cfg_json in ARCH_CFGS.items():
            voc = "qwen35" if arch.startswith("qwen35") else "qwen3"
            tok = os.path.join(ROOT, ".cache", "tokenizers", voc, "tokenizer.json")
            if not os.path.exists(tok):
                print(f"{arch}: no {tok}: load check skipped")
                continue
            c, m = os.path.join(tmp, f"{arch}.json"), os.path.join(tmp, f"{arch}.gguf")
            with open(c, "w") as f:
                json.dump(cfg_json, f)
            subprocess.run([neuron, "synth", "--shape", c, "--quant", "Q4_K_M", "--tokenizer", tok,
                            "--out", m], check=True, capture_output=True)
            llm = llama_cpp.Llama(model_path=m, n_ctx=64, verbose=False, logits_all=True)
            toks = llm.tokenize(b"Hello, world!", add_bos=False)
            llm.eval(toks)
            logits = np.asarray(llm.scores[:len(toks)])
            ok = bool(np.all(np.isfinite(logits))) and float(logits.std()) > 0
            print(f"llama.cpp runs our {arch} Q4_K_M synth: tokens {toks}, logits std "
                  f"{float(logits.std()):.3f}, {'ok' if ok else 'BAD'}")
            failed |= not ok
            del llm
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

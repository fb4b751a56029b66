#!/usr/bin/env python3
"""Reference fixtures for the model-file tests, generated with the `gguf`
Python package (llama.cpp's gguf-py):

  tests/data/quant/<type>.bin   random blocks of that ggml type (valid scales)
  tests/data/quant/<type>.f32   gguf.quants.dequantize of those bytes (float32 LE)
  tests/data/gguf/tiny_py.gguf  a small GGUF written by gguf.GGUFWriter

Run: .venv/bin/python tools/make_quant_fixtures.py
"""
import os
import numpy as np
import gguf
from gguf.quants import dequantize, quantize

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
QDIR = os.path.join(ROOT, "tests", "data", "quant")
GDIR = os.path.join(ROOT, "tests", "data", "gguf")
T = gguf.GGMLQuantizationType
rng = np.random.default_rng(1234)

# (type, byte offsets of f16 scale fields inside one block)
TYPES = {
    T.Q8_0: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}


def random_blocks(t, scale_offsets, n_blocks):
    bs, nbytes = gguf.GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    for off in scale_offsets:
        d = rng.uniform(1e-4, 2e-2, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1), bs * n_blocks


def main():
    os.makedirs(QDIR, exist_ok=True)
    os.makedirs(GDIR, exist_ok=True)
    for t, offs in TYPES.items():
        raw, n = random_blocks(t, offs, 24)
        ref = dequantize(raw, t).astype(np.float32).reshape(-1)
        assert ref.size == n and np.all(np.isfinite(ref))
        raw.tofile(os.path.join(QDIR, f"{t.name.lower()}.bin"))
        ref.tofile(os.path.join(QDIR, f"{t.name.lower()}.f32"))
    # Q8_0 quantizer: bit-identical to gguf-py's (llama.cpp's reference)
    xq = rng.normal(0, 0.05, size=32 * 16).astype(np.float32)
    xq.tofile(os.path.join(QDIR, "q8_0_src.f32"))
    quantize(xq, T.Q8_0).tofile(os.path.join(QDIR, "q8_0_quant.bin"))
    # f16 / bf16: random finite values incl. subnormals
    x = np.concatenate([rng.normal(0, 1, 500), rng.normal(0, 1e-6, 12), [0.0, -0.0, 65504.0]])
    h = x.astype(np.float16)
    h.view(np.uint8).tofile(os.path.join(QDIR, "f16.bin"))
    dequantize(h.view(np.uint8), T.F16).astype(np.float32).tofile(os.path.join(QDIR, "f16.f32"))
    xb = x.astype(np.float32)
    b = quantize(xb, T.BF16)
    b.tofile(os.path.join(QDIR, "bf16.bin"))  # quantize rounds to nearest even
    xb.tofile(os.path.join(QDIR, "bf16_src.f32"))
    dequantize(b, T.BF16).astype(np.float32).tofile(os.path.join(QDIR, "bf16.f32"))

    w = gguf.GGUFWriter(os.path.join(GDIR, "tiny_py.gguf"), "qwen3")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_key_length(32)
    w.add_value_length(32)
    w.add_rope_freq_base(1000000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_array("nested", [[1, 2, 3], ["a", "b"]])
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "\u0120c"] + [f"t{i}" for i in range(5)])
    w.add_tensor("token_embd.weight", np.arange(64 * 8, dtype=np.float32).reshape(8, 64))
    q = rng.normal(0, 0.02, size=(64, 64)).astype(np.float32)
    w.add_tensor("blk.0.attn_q.weight", quantize(q, T.Q8_0), raw_dtype=T.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()

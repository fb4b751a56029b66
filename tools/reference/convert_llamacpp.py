#!/usr/bin/env python3
"""convert_llamacpp.py — GGUF fixtures made by llama.cpp's own converter.

Converts the HF fixture directories (tests/data/models/<name>, written by
tools/reference/make_fixtures.py and its MoE / hybrid siblings) into
tests/data/models/<name>.llamacpp.gguf with llama.cpp's `convert_hf_to_gguf.py`
(outtype f32), so that tests/engine/test_model_llamacpp_gguf.c can check that
the files llama.cpp produces load in our engine and give the transformers
logits. This pins the converter's transforms (zero-centred norms + 1,
ssm_a = -exp(A_log), qkvz regrouping, V-head reordering, expert stacking,
conv1d squeeze) against an implementation we did not write.

The converter is taken from the llama-cpp-python source distribution, which
vendors llama.cpp (vendor/llama.cpp: convert_hf_to_gguf.py, conversion/ and
gguf-py/); its own gguf-py is used, as the installed `gguf` package may
predate the qwen3next / qwen35 arches. Found in this order: --llama-cpp DIR,
$LLAMA_CPP_DIR, .cache/sdist/llama_cpp_python-*/vendor/llama.cpp; otherwise
the sdist of the installed llama-cpp-python version is fetched with
`pip download --no-binary :all: --no-deps` into .cache/sdist and unpacked.

One deviation from a plain `convert_hf_to_gguf.py DIR --outtype f32` run: the
fixtures carry no tokenizer (ids-only tests), so the vocabulary step is
replaced by a no-op; every tensor and hyper-parameter goes through the
converter unchanged. MTP layers are left out (--no-mtp), as our engine
ignores them.

qwen3moe-dense-f32 is not converted: llama.cpp's converter cannot map
Qwen3-MoE dense layers (decoder_sparse_step / mlp_only_layers).

Run from the repo root:
  .venv/bin/python tools/reference/convert_llamacpp.py [name ...]
With no names, every known fixture directory that exists is converted.
"""
import argparse
import glob
import importlib.metadata
import os
import subprocess
import sys
import tarfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "tests", "data", "models")
# fixture directories converted by default (those present are converted)
FIXTURES = ["qwen3-tiny-f32", "qwen2-tiny-f32", "qwen3moe-tiny-f32", "qwen3next-tiny-f32",
            "qwen35-tiny-f32", "qwen35moe-tiny-f32"]
MAX_BYTES = 2 * 1024 * 1024  # fixture size budget per file


def sdist_dir():
    """The vendored llama.cpp of the llama-cpp-python sdist (fetched if absent)."""
    cache = os.path.join(ROOT, ".cache", "sdist")
    found = sorted(glob.glob(os.path.join(cache, "llama_cpp_python-*", "vendor", "llama.cpp")))
    if found:
        return found[-1]
    version = importlib.metadata.version("llama_cpp_python")
    os.makedirs(cache, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                    "-d", cache, f"llama-cpp-python=={version}"], check=True)
    tgz = os.path.join(cache, f"llama_cpp_python-{version}.tar.gz")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(tgz) as t:
        members = [m for m in t.getmembers()
                   if m.name.startswith(prefix + "convert_hf_to_gguf.py")
                   or m.name.startswith(prefix + "conversion/")
                   or m.name.startswith(prefix + "gguf-py/")]
        t.extractall(cache, members=members, filter="data")
    return os.path.join(cache, prefix.rstrip("/"))


def load_converter(llama_dir):
    """Imports llama.cpp's convert_hf_to_gguf with its own gguf-py first on the path."""
    script = os.path.join(llama_dir, "convert_hf_to_gguf.py")
    if not os.path.isfile(script):
        raise SystemExit(f"{script}: not found (pass --llama-cpp DIR of a llama.cpp checkout)")
    sys.path.insert(0, os.path.join(llama_dir, "gguf-py"))
    sys.path.insert(0, llama_dir)
    import importlib.util
    spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import gguf
    if not os.path.abspath(gguf.__file__).startswith(os.path.abspath(llama_dir)):
        raise SystemExit(f"gguf imported from {gguf.__file__}, not from {llama_dir}/gguf-py")
    # The fixtures have no tokenizer files: replace only the vocabulary step.
    real_get_model_class = mod.get_model_class

    def get_model_class(*args, **kwargs):
        cls = real_get_model_class(*args, **kwargs)
        return type(cls.__name__, (cls,), {"set_vocab": lambda self: None,
                                           "model_arch": cls.model_arch})

    mod.get_model_class = get_model_class
    return mod


def convert(mod, name):
    src = os.path.join(MODELS, name)
    out = os.path.join(MODELS, name + ".llamacpp.gguf")
    import json
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg = {**cfg, **cfg.get("text_config", {})}
    argv = ["convert_hf_to_gguf.py", src, "--outtype", "f32", "--outfile", out]
    if "linear_num_value_heads" in cfg:
        argv.append("--no-mtp")  # our engine ignores MTP layers; none in the fixtures
    saved = sys.argv
    sys.argv = argv
    try:
        mod.main()
    finally:
        sys.argv = saved
    size = os.path.getsize(out)
    print(f"{out}: {size} bytes", file=sys.stderr)
    if size > MAX_BYTES:
        print(f"warning: {out} is over the {MAX_BYTES}-byte fixture budget", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", help="llama.cpp source dir (convert_hf_to_gguf.py, gguf-py)")
    ap.add_argument("names", nargs="*", help="fixture directories under tests/data/models")
    args = ap.parse_args()
    llama_dir = args.llama_cpp or os.environ.get("LLAMA_CPP_DIR") or sdist_dir()
    print(f"llama.cpp converter: {llama_dir}", file=sys.stderr)
    mod = load_converter(llama_dir)
    names = args.names or [n for n in FIXTURES if os.path.isdir(os.path.join(MODELS, n))]
    for n in names:
        if not os.path.isfile(os.path.join(MODELS, n, "config.json")):
            raise SystemExit(f"{n}: no such fixture directory under {MODELS}")
        convert(mod, n)


if __name__ == "__main__":
    main()

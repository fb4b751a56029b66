#!/usr/bin/env python3
"""cpu_side_by_side_arch.py — MoE and hybrid models: our CPU engine vs llama.cpp
(llama-cpp-python) on the same GGUF files.

The issue's figures are for one H200; this is the CPU substitute on a small
machine. Models are real *layer* shapes with the depth cut so each file stays
under ~3 GB (`neuron synth --layers N`); random weights cost what real ones do.

1. `make`: writes, with `neuron synth --quant Q4_K_M` and the real tokenizers
   (.cache/tokenizers/qwen3, qwen35; see scripts/fetch-vocab):
     qwen3-30b-a3b   qwen3moe, first 6 of 48 layers (all MoE, 128 experts top-8)
     qwen3.5-35b-a3b qwen35moe, first 4 of 40 layers (3 DeltaNet + 1 gated attention,
                     256 experts top-8 + shared expert)
     qwen3.5-27b     qwen35, first 4 of 64 layers (3 DeltaNet + 1 gated attention, dense FFN)
2. `check`: llama.cpp loads every file and evaluates a prompt; its logits are
   compared with ours (`neuron run --dump-logits`) on the same token ids.
3. `run`: per model and rep, `neuron bench --backend cpu --threads T --json`
   and llama.cpp (one `eval` of the prompt = prefill, then G-1 single-token
   evals with greedy argmax = decode), alternating which goes first; the
   median (and range) of --reps reps. --long-prompt adds a decode at that
   context depth for --long-models. Prints a markdown table with the bytes
   read per decoded token (weights actually touched + KV + recurrent state)
   and the GB/s that implies next to the machine's read bandwidth (measured
   here with numpy, one reader thread per engine thread: a lower bound).
   On a shared machine each engine run first waits (at most --quiet-wait s)
   until other work uses at most --quiet-busy of the CPUs.

Figures, method and limits: docs/benchmarks.md, "MoE and hybrid on the CPU
(side by side)".

Usage: .venv/bin/python tools/bench/cpu_side_by_side_arch.py make --neuron build-X/bin/neuron
       .venv/bin/python tools/bench/cpu_side_by_side_arch.py check --neuron build-X/bin/neuron
       .venv/bin/python tools/bench/cpu_side_by_side_arch.py run --neuron build-X/bin/neuron \
           --reps 3 --long-prompt 2048
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

# name -> (neuron synth preset, layers kept, tokenizer dir)
MODELS = {
    "qwen3-30b-a3b": ("qwen3-30b-a3b", 6, "qwen3"),
    "qwen3.5-35b-a3b": ("qwen3.5-35b-a3b", 4, "qwen35"),
    "qwen3.5-27b": ("qwen3.5-27b", 4, "qwen35"),
}


def model_path(args, name):
    return os.path.join(args.dir, f"arch-{name}-L{MODELS[name][1]}-q4_k_m.gguf")


def make(args):
    os.makedirs(args.dir, exist_ok=True)
    for name in args.models.split(","):
        preset, layers, tok = MODELS[name]
        subprocess.check_call(
            [args.neuron, "synth", "--shape", preset, "--layers", str(layers), "--quant", "Q4_K_M",
             "--tokenizer", os.path.join(".cache/tokenizers", tok, "tokenizer.json"),
             "--out", model_path(args, name)])


# --- what one decoded token reads ----------------------------------------------------------


def bytes_per_token(path, depth):
    """Bytes one decode step reads at context depth `depth`: every weight
    except the routed experts (k of n_expert of them per layer) and the
    embedding table (one row); f16 K and V of the full-attention layers; the
    f32 DeltaNet state, read and written."""
    import gguf
    r = gguf.GGUFReader(path)

    def kv(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        return f.contents()

    arch = kv("general.architecture")
    n_exp = kv(f"{arch}.expert_count", 0)
    k_exp = kv(f"{arch}.expert_used_count", 0)
    n_vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    w_dense = w_experts_active = w_total = w_head = 0
    attn_layers, ssm_layers = set(), set()
    for t in r.tensors:
        nb = int(t.n_bytes)
        w_total += nb
        if t.name == "token_embd.weight":
            w_dense += nb // n_vocab
        elif "_exps." in t.name:
            w_experts_active += nb * k_exp // n_exp
        else:
            w_dense += nb
        if t.name == "output.weight":
            w_head = nb
        if t.name.startswith("blk."):
            layer = int(t.name.split(".")[1])
            if t.name.endswith("attn_k.weight"):
                attn_layers.add(layer)
            if ".ssm_" in t.name:
                ssm_layers.add(layer)
    n_kv = kv(f"{arch}.attention.head_count_kv")
    hd_k = kv(f"{arch}.attention.key_length")
    hd_v = kv(f"{arch}.attention.value_length")
    kv_bytes = len(attn_layers) * depth * n_kv * (hd_k + hd_v) * 2
    state_bytes = 0
    if ssm_layers:
        d_k = kv(f"{arch}.ssm.state_size")
        d_inner = kv(f"{arch}.ssm.inner_size")
        state_bytes = len(ssm_layers) * d_k * d_inner * 4 * 2
    return dict(arch=arch, file_bytes=w_total, weights=w_dense + w_experts_active,
                experts=w_experts_active, head=w_head, kv=kv_bytes, state=state_bytes,
                total=w_dense + w_experts_active + kv_bytes + state_bytes,
                attn_layers=len(attn_layers), ssm_layers=len(ssm_layers), n_vocab=n_vocab)


def read_bandwidth(threads, gib=1.0, reps=5):
    """Best-of-reps read bandwidth (GB/s) of `threads` numpy threads summing
    disjoint parts of one array far larger than the caches."""
    a = np.ones(int(gib * (1 << 30)) // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    best = 0.0
    for _ in range(reps):
        ths = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        best = max(best, a.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


# --- the two engines ----------------------------------------------------------------------


def cpu_busy(secs=2.0):
    """Fraction of all CPUs busy over `secs` (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = snap()
    time.sleep(secs)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(args):
    """On a shared machine: wait (at most --quiet-wait s) until other work
    uses at most --quiet-busy of the CPUs; returns the busy fraction seen."""
    t_end = time.time() + args.quiet_wait
    busy = cpu_busy()
    while busy > args.quiet_busy and time.time() < t_end:
        time.sleep(3)
        busy = cpu_busy()
    return busy


def prompt_ids(n, n_vocab):
    """The ids `neuron bench` uses (its deterministic LCG), so both engines see
    the same prompt."""
    x, ids = 42, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append((x >> 33) % n_vocab)
    return ids


def bench_ours(args, path, n_prompt, n_gen):
    out = subprocess.check_output(
        [args.neuron, "bench", "--model", path, "--backend", "cpu", "--threads", str(args.threads),
         "--prompt-tokens", str(n_prompt), "--gen-tokens", str(n_gen), "--json"])
    j = json.loads(out)
    return j["prefill_tok_s"], j["decode_tok_s"]


def bench_llama(args, path, n_prompt, n_gen):
    import llama_cpp
    n_batch = min(n_prompt, 512)
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_batch=n_batch,
                          n_ubatch=n_batch, n_threads=args.threads, n_threads_batch=args.threads,
                          flash_attn=True, verbose=False)
    n_vocab = llm.n_vocab()
    ids = prompt_ids(n_prompt, n_vocab)

    def argmax():
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    llm.eval(ids[:8])  # warm-up: page in the weights, build the graphs (as ours does)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = argmax()
    t1 = time.perf_counter()
    for _ in range(n_gen - 1):
        llm.eval([tok])
        tok = argmax()
    t2 = time.perf_counter()
    del llm
    return n_prompt / (t1 - t0), (n_gen - 1) / (t2 - t1)


def check(args):
    """llama.cpp loads each file and agrees with us on the last prompt
    position's logits (same ids)."""
    import llama_cpp
    n = 16
    for name in args.models.split(","):
        path = model_path(args, name)
        llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=n, n_ubatch=n, n_threads=args.threads,
                              n_threads_batch=args.threads, verbose=False)
        n_vocab = llm.n_vocab()
        text = "The quick brown fox jumps over the lazy dog because it wants to"
        ids = llm.tokenize(text.encode(), add_bos=False)
        llm.eval(ids)
        ref = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).copy()
        del llm
        with tempfile.TemporaryDirectory() as d:
            dump = os.path.join(d, "logits.f32")
            subprocess.run([args.neuron, "run", "--model", path, "--prompt", text, "--n", "1",
                            "--threads", str(args.threads), "--dump-logits", dump], check=True,
                           stdout=subprocess.DEVNULL)
            ours = np.fromfile(dump, dtype=np.float32).reshape(-1, n_vocab)
        if ours.shape[0] != len(ids) + 1:  # prompt rows + one generated step
            print(f"{name}: token counts differ (ours {ours.shape[0] - 1}, llama.cpp {len(ids)})")
            continue
        o = ours[len(ids) - 1]
        rel = float(np.max(np.abs(o - ref)) / np.std(ref))
        top_ref = set(np.argsort(-ref)[:10].tolist())
        top_o = set(np.argsort(-o)[:10].tolist())
        print(json.dumps({"model": name, "arch": bytes_per_token(path, 0)["arch"],
                          "prompt_tokens": len(ids), "finite": bool(np.isfinite(ref).all()),
                          "max_abs_diff_over_std": round(rel, 4),
                          "top1_same": int(np.argmax(o)) == int(np.argmax(ref)),
                          "top10_overlap": len(top_ref & top_o)}))


def run(args):
    bw = {t: read_bandwidth(t) for t in sorted({1, args.threads})}
    print(json.dumps({"read_bandwidth_gb_s": bw, "load": os.getloadavg()}), file=sys.stderr)
    cases = [(m, args.prompt_tokens, args.gen_tokens) for m in args.models.split(",")]
    if args.long_prompt:
        cases += [(m, args.long_prompt, args.long_gen) for m in args.long_models.split(",")]
    rows = []
    for name, n_p, n_g in cases:
        path = model_path(args, name)
        runs = dict(opp=[], otg=[], lpp=[], ltg=[], load=[], busy=[])
        for rep in range(args.reps):
            runs["load"].append(os.getloadavg()[0])
            order = ("ours", "llama") if rep % 2 == 0 else ("llama", "ours")
            for who in order:
                runs["busy"].append(wait_quiet(args))
                if who == "ours":
                    pp, tg = bench_ours(args, path, n_p, n_g)
                    runs["opp"].append(pp)
                    runs["otg"].append(tg)
                else:
                    pp, tg = bench_llama(args, path, n_p, n_g)
                    runs["lpp"].append(pp)
                    runs["ltg"].append(tg)
            print(json.dumps({"model": name, "prompt": n_p, "gen": n_g, "rep": rep,
                              "ours": [runs["opp"][-1], runs["otg"][-1]],
                              "llama": [runs["lpp"][-1], runs["ltg"][-1]],
                              "load": runs["load"][-1], "busy_before": runs["busy"][-2:],
                              "utc": time.strftime("%H:%M:%S",
                                                                            time.gmtime())}),
                  file=sys.stderr, flush=True)
        bpt = bytes_per_token(path, n_p + n_g // 2)
        rows.append((name, n_p, n_g, runs, bpt))

    def med(v):
        return statistics.median(v)

    def rng(v):
        return f"{min(v):.1f}–{max(v):.1f}"

    print(f"threads {args.threads}, Q4_K_M, median of {args.reps} alternating reps (range), "
          f"read bandwidth {bw[args.threads]:.1f} GB/s with {args.threads} threads "
          f"({bw[1]:.1f} with 1)")
    print("| model (layers kept) | file | prompt | prefill ours | prefill llama.cpp | decode ours "
          "| decode llama.cpp | decode ratio | MB read / token | ours GB/s | load avg | CPU busy before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for name, n_p, n_g, r, b in rows:
        otg, ltg = med(r["otg"]), med(r["ltg"])
        print(f"| {name} ({MODELS[name][1]}) | {b['file_bytes'] / 1e9:.2f} GB | {n_p} "
              f"| {med(r['opp']):.1f} ({rng(r['opp'])}) | {med(r['lpp']):.1f} ({rng(r['lpp'])}) "
              f"| {otg:.2f} ({rng(r['otg'])}) | {ltg:.2f} ({rng(r['ltg'])}) | {otg / ltg:.2f}× "
              f"| {b['total'] / 1e6:.0f} | {otg * b['total'] / 1e9:.1f} "
              f"| {min(r['load']):.1f}–{max(r['load']):.1f} "
              f"| {100 * min(r['busy']):.0f}–{100 * max(r['busy']):.0f}% |")
    print()
    print("| model @ depth | weights / token | of which output head | of which experts "
          "| KV / token | DeltaNet state r+w | attn / DeltaNet layers |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, n_p, n_g, r, b in rows:
        print(f"| {name} @ {n_p + n_g // 2} | {b['weights'] / 1e6:.0f} MB | {b['head'] / 1e6:.0f} MB "
              f"| {b['experts'] / 1e6:.0f} MB "
              f"| {b['kv'] / 1e6:.1f} MB | {b['state'] / 1e6:.1f} MB "
              f"| {b['attn_layers']} / {b['ssm_layers']} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["make", "check", "run"])
    ap.add_argument("--dir", default=".cache/bench")
    ap.add_argument("--neuron", default="build-sbs/bin/neuron")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=16,
                    help="decode rates drift down over a sustained decode on the shared VM: "
                         "compare rows with the same count")
    ap.add_argument("--long-prompt", type=int, default=0,
                    help="also decode after a prompt of this many tokens (0 = no)")
    ap.add_argument("--long-gen", type=int, default=16)
    ap.add_argument("--long-models", default=",".join(MODELS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quiet-busy", type=float, default=0.25,
                    help="before each engine run wait until other work uses at most this "
                         "fraction of the CPUs (sampled over 2 s)")
    ap.add_argument("--quiet-wait", type=float, default=180,
                    help="longest wait for that, seconds")
    args = ap.parse_args()
    {"make": make, "check": check, "run": run}[args.cmd](args)


if __name__ == "__main__":
    main()

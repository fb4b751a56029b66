#!/usr/bin/env python3
"""cpu_side_by_side_quiet.py — cpu_side_by_side.py's comparison (neuron bench vs
llama.cpp through llama-cpp-python, same GGUF, N-token prefill + G-token
greedy decode), for a machine shared with other people's work.

Ours and llama.cpp alternate, --reps times per file. A measurement counts
only if the rest of the machine used less than --others of one CPU while it
ran (all CPU time in /proc/stat minus the measured engine's own, from
os.times(): the neuron child or this process for llama.cpp); otherwise it is
repeated (up to 7 tries). Before each try it waits for the machine to be idle
(other work < 5% of the CPUs over 2 s). Prints one JSON line per accepted
pair and a markdown table of the medians.

Usage: .venv/bin/python tools/bench/cpu_side_by_side_quiet.py --neuron build-X/bin/neuron
       [--threads 2] [--prompt-tokens 64] [--gen-tokens 32] [--reps 5]
       [--quants q4_k_m,q8_0] [--others 0.10]
(the GGUF files come from `cpu_side_by_side.py make`)."""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_side_by_side as sbs  # noqa: E402

TCK = os.sysconf("SC_CLK_TCK")


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all CPUs, everything but idle and iowait


def busy_fraction(secs=2.0):
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = snap()
    time.sleep(secs)
    t1, i1 = snap()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_idle(limit_s=300):
    t_end = time.time() + limit_s
    while time.time() < t_end and busy_fraction() > 0.05:
        time.sleep(random.uniform(1, 5))  # other waiters then start at other times


def measured(fn, others_max):
    """fn() until the others' CPU share during it is below others_max."""
    for tries in range(1, 8):
        wait_idle()
        s0, t0, w0 = busy_ticks(), os.times(), time.time()
        r = fn()
        s1, t1, w1 = busy_ticks(), os.times(), time.time()
        own = sum(b - a for a, b in zip(t0[:4], t1[:4]))  # user, system, children's
        share = max(0.0, (s1 - s0) / TCK - own) / (w1 - w0)
        if share < others_max:
            break
    return r, share, tries


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=".cache/bench")
    ap.add_argument("--neuron", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--quants", default="q4_k_m,q8_0")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--others", type=float, default=0.10)
    a = ap.parse_args()
    rows = {}
    for _ in range(a.reps):
        for q in a.quants.split(","):
            path = os.path.join(a.dir, f"qwen3-0.6b-shape-{q}.gguf")
            cmd = [a.neuron, "bench", "--model", path, "--prompt-tokens", str(a.prompt_tokens),
                   "--gen-tokens", str(a.gen_tokens), "--threads", str(a.threads), "--json"]
            ours, o_sh, o_tr = measured(lambda: json.loads(subprocess.check_output(cmd)), a.others)
            load = os.getloadavg()[0]
            (lpp, ltg), l_sh, l_tr = measured(
                lambda: sbs.bench_llama(path, a.prompt_tokens, a.gen_tokens, a.threads), a.others)
            rec = {"quant": q, "ours": ours, "llama_pp": lpp, "llama_tg": ltg,
                   "load": max(load, os.getloadavg()[0]), "others": [round(o_sh, 3), round(l_sh, 3)],
                   "tries": [o_tr, l_tr], "utc": time.strftime("%H:%M:%S", time.gmtime())}
            print(json.dumps(rec), flush=True)
            r = rows.setdefault(q, {k: [] for k in ("opp", "otg", "lpp", "ltg", "load")})
            for k, v in (("opp", ours["prefill_tok_s"]), ("otg", ours["decode_tok_s"]),
                         ("lpp", lpp), ("ltg", ltg), ("load", rec["load"])):
                r[k].append(v)
    print(f"threads {a.threads}, prompt {a.prompt_tokens}, gen {a.gen_tokens}, median of {a.reps}")
    print("| file | prefill ours | prefill llama.cpp | ratio | decode ours | decode llama.cpp | "
          "ratio | load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for q, r in rows.items():
        m = {k: statistics.median(v) for k, v in r.items() if k != "load"}
        print(f"| {q} | {m['opp']:.1f} | {m['lpp']:.1f} | {m['opp'] / m['lpp']:.2f}x | "
              f"{m['otg']:.2f} | {m['ltg']:.2f} | {m['otg'] / m['ltg']:.2f}x | "
              f"{min(r['load']):.2f}–{max(r['load']):.2f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""nsys_gaps.py — where a decode step's time goes, from an nsys GPU trace.

Reads the CSV of `nsys stats --report cuda_gpu_trace --format csv` (kernels and
copies with start and duration), keeps the kernels of the longest run of steps
whose gaps stay under --max-gap-us (the graph-replayed decode loop), and prints
per kernel name: launches, total and mean duration, and the idle time before
it (the gap from the previous kernel's end). The sum of the gaps is what
launch latency and dependent-kernel ramp cost the step; the durations are the
kernels' own time.

  nsys profile -o rep --cuda-graph-trace=node cuda-bench ...
  nsys stats --report cuda_gpu_trace --format csv --output . rep.nsys-rep
  python3 nsys_gaps.py rep_cuda_gpu_trace.csv --steps 128
"""
import argparse
import collections
import csv
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--steps", type=int, default=0, help="divide totals by this many steps")
    ap.add_argument("--last", type=int, default=0, help="only the last N kernels")
    args = ap.parse_args()
    rows = []
    with open(args.csv, newline="") as f:
        text = f.read().splitlines()
    # nsys may print lines before the CSV header
    start = next(i for i, l in enumerate(text) if "Start" in l and "Duration" in l)
    for r in csv.DictReader(text[start:]):
        name = r.get("Name") or r.get("Kernel Name") or ""
        try:
            t0 = float(r.get("Start (ns)") or r.get("Start"))
            dur = float(r.get("Duration (ns)") or r.get("Duration"))
        except (TypeError, ValueError):
            continue
        if name.startswith("[CUDA") or "memcpy" in name.lower() or "memset" in name.lower():
            continue
        rows.append((t0, dur, name))
    rows.sort()
    if args.last:
        rows = rows[-args.last:]
    if not rows:
        sys.exit("no kernels in the trace")
    stats = collections.defaultdict(lambda: [0, 0.0, 0.0])
    prev_end = rows[0][0]
    busy = gaps = 0.0
    for t0, dur, name in rows:
        short = name.split("(")[0].split("<")[0].replace("void ", "")[:40]
        gap = max(0.0, t0 - prev_end)
        s = stats[short]
        s[0] += 1
        s[1] += dur
        s[2] += gap
        busy += dur
        gaps += gap
        prev_end = max(prev_end, t0 + dur)
    span = rows[-1][0] + rows[-1][1] - rows[0][0]
    n = args.steps or 1
    print(f"kernels {len(rows)}  span {span / 1e3 / n:.1f} us  busy {busy / 1e3 / n:.1f} us  "
          f"gaps {gaps / 1e3 / n:.1f} us  (per step over {n} steps)")
    print(f"{'kernel':42s} {'launches':>8s} {'us total':>9s} {'us mean':>8s} {'gap us':>8s}")
    for k, (c, d, g) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:42s} {c / n:8.1f} {d / 1e3 / n:9.1f} {d / 1e3 / c:8.2f} {g / 1e3 / n:8.1f}")


if __name__ == "__main__":
    main()

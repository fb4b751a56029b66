"""cortex_bench.py — what cortex adds on the request path, measured on
loopback against a scripted upstream (tests/e2e/fake_neuron.py):
  1. TTFT of streamed chat requests, straight to the upstream vs through
     cortex (sequential, p50/p99), both OpenAI dialect;
  2. requests/s for small non-streaming requests (C concurrent clients);
  3. idle streams held open through cortex and cortex RSS per stream.
Usage: HELEXA_BIN=build/bin .venv/bin/python bench/cortex_bench.py [--n 300]
Prints a markdown table. Optional: --litellm PATH_TO_litellm to run the same
requests/s test through LiteLLM's proxy."""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from cortex_harness import Fleet  # noqa: E402

MODELS = '[[models]]\nid = "small"\npath = "m1"\n'


def connect(port):
    """Keep-alive connection with TCP_NODELAY (http.client writes headers and
    body separately; without it, delayed ACKs add ~40 ms to every request)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def ttft(port, n, body):
    out = []
    conn = connect(port)
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        r = conn.getresponse()
        while True:
            line = r.readline()
            if b'"content"' in line:
                out.append((time.perf_counter() - t0) * 1000)
                break
            if not line:
                break
        r.read()
    conn.close()
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def rps(port, body, conc, secs, path="/v1/chat/completions", headers=None):
    count = [0] * conc
    stop = time.time() + secs

    def worker(i):
        conn = connect(port)
        while time.time() < stop:
            conn.request("POST", path, body, {"content-type": "application/json", **(headers or {})})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                count[i] += 1
        conn.close()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(count) / secs


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_streams(f, k):
    body = json.dumps({"model": "small", "stream": True,
                       "messages": [{"role": "user", "content": "HOLD"}]})
    base = rss_kb(f.cortex.pid)
    socks = []
    for _ in range(k):
        s = socket.create_connection(("127.0.0.1", f.port))
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        socks.append(s)
    for s in socks:  # wait for the first token on every stream
        s.settimeout(20)
        buf = b""
        while b"first" not in buf:
            got = s.recv(4096)
            if not got:
                raise RuntimeError("stream closed early: %r" % buf[:300])
            buf += got
    held = sum(1 for s in socks if s.fileno() >= 0)
    time.sleep(0.5)
    peak = rss_kb(f.cortex.pid)
    for s in socks:
        s.close()
    return held, base, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--streams", type=int, default=500)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    f = Fleet(tmp, [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"}], MODELS,
              extra_gateway="max_streams = 2048")
    try:
        up = f.neurons["a"]["port"]
        sbody = json.dumps({"model": "m1", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        cbody = sbody.replace('"m1"', '"small"')
        print("warm-up", file=sys.stderr)
        ttft(up, 20, sbody), ttft(f.port, 20, cbody)  # warm up
        print("ttft", file=sys.stderr)
        d50, d99 = ttft(up, args.n, sbody)
        c50, c99 = ttft(f.port, args.n, cbody)
        nbody = json.dumps({"model": "m1", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        print("rps", file=sys.stderr)
        r_direct = rps(up, nbody, args.conc, args.secs)
        r_cortex = rps(f.port, nbody.replace('"m1"', '"small"'), args.conc, args.secs)
        print("idle streams", file=sys.stderr)
        for _ in range(100):  # the upstream may have been marked down while saturated
            n = f.status()["neurons"][0]
            if n["up"] and not n["ejected"]:
                break
            time.sleep(0.2)
        held, base, peak = idle_streams(f, args.streams)
        print(f"| measure | direct to upstream | through cortex |\n|---|---|---|")
        print(f"| TTFT p50 (ms), n={args.n} | {d50:.2f} | {c50:.2f} (+{c50 - d50:.2f}) |")
        print(f"| TTFT p99 (ms) | {d99:.2f} | {c99:.2f} (+{c99 - d99:.2f}) |")
        print(f"| non-streaming req/s, {args.conc} clients, {args.secs:.0f} s | {r_direct:.0f} | {r_cortex:.0f} |")
        print(f"\nidle streams held through cortex: {held}; cortex RSS {base / 1024:.1f} MiB idle → "
              f"{peak / 1024:.1f} MiB with streams open = {(peak - base) / max(held, 1):.1f} KiB per stream")
    finally:
        f.stop()


if __name__ == "__main__":
    main()

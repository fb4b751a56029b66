"""cortex_bench.py — what cortex adds on the request path, measured on
loopback against a scripted fast upstream (tests/e2e/fake_neuron.py), next
to LiteLLM's proxy in front of the same upstream in the same run:
  1. TTFT of streamed chat requests (sequential, one keep-alive client
     connection, p50/p99): straight to the upstream, through cortex, through
     cortex with upstream keep-alive off (HELEXA_CORTEX_UPSTREAM_POOL=0, the
     behaviour before the connection pool), through LiteLLM;
  2. latency of small non-streaming requests (sequential, p50/p99), same four;
  3. requests/s for small non-streaming requests (C concurrent clients, each
     on its own keep-alive connection), same four;
  4. idle streams held open through cortex and cortex RSS per stream;
  5. with --real: TTFT and small-request latency straight to a real
     `neuron serve` (CPU, synthetic tiny Qwen3, bench/cortex_fault.py's
     RealFleet) vs through cortex.
LiteLLM runs from its own venv (default .cache/litellm-venv, created and
`pip install 'litellm[proxy]'`-ed on first use; never the project venv), one
uvicorn worker (LITELLM_WORKERS=N in the environment for more),
LITELLM_LOCAL_MODEL_COST_MAP=True (no network), a master key.
Usage: HELEXA_BIN=build/bin .venv/bin/python bench/cortex_bench.py [--n 300]
  [--no-litellm] [--write-doc docs/benchmarks.md]
Prints a markdown table; --write-doc replaces the text between the
"cortex-bench" markers in that file."""
import argparse
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from cortex_harness import BIN, Fleet, free_port, wait_http  # noqa: E402

MODELS = '[[models]]\nid = "small"\npath = "m1"\n'
LITELLM_KEY = "sk-bench-0123456789abcdef"
LITELLM_WORKERS = int(os.environ.get("LITELLM_WORKERS", "1"))
CONTENT = re.compile(rb'"content": ?"[^"]')  # a chunk with non-empty content


def connect(port):
    """Keep-alive connection with TCP_NODELAY (http.client writes headers and
    body separately; without it, delayed ACKs add ~40 ms to every request)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def pct(xs):
    xs = sorted(xs)
    return statistics.median(xs), xs[max(int(len(xs) * 0.99) - 1, 0)]


def ttft(port, n, body, headers, out=None):
    out = [] if out is None else out
    conn = connect(port)
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        got = False
        while True:
            line = r.readline()
            if not got and CONTENT.search(line):
                out.append((time.perf_counter() - t0) * 1000)
                got = True
            if not line:
                break
        if not got:
            raise RuntimeError(f"port {port}: no content in the stream (HTTP {r.status})")
    conn.close()
    return out


def latency(port, n, body, headers, out=None):
    out = [] if out is None else out
    conn = connect(port)
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"port {port}: HTTP {r.status}: {data[:200]!r}")
        out.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return out


def rps(port, body, conc, secs, headers):
    count = [0] * conc
    fails = [0] * conc
    stop = time.time() + secs

    def worker(i):
        conn = connect(port)
        while time.time() < stop:
            conn.request("POST", "/v1/chat/completions", body, headers)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                count[i] += 1
            else:
                fails[i] += 1
        conn.close()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(conc)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(count) / secs, sum(fails), sum(count)


def cpu_s(pid):
    """User + system CPU seconds of pid and its live descendants."""
    tck = os.sysconf("SC_CLK_TCK")
    kids, total = {}, 0.0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    st = fh.read().rsplit(")", 1)[1].split()
                kids.setdefault(int(st[1]), []).append((int(d), int(st[11]) + int(st[12])))
            except OSError:
                pass
    todo = [pid]
    try:
        with open(f"/proc/{pid}/stat") as fh:
            st = fh.read().rsplit(")", 1)[1].split()
        total += int(st[11]) + int(st[12])
    except OSError:
        return 0.0
    while todo:
        for child, t in kids.get(todo.pop(), []):
            total += t
            todo.append(child)
    return total / tck


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


def start_plain_cortex(f, tmp):
    """A second cortex on the same upstream with upstream keep-alive off."""
    port, mport = free_port(), free_port()
    with open(f.cfg_path) as fh:
        cfg = fh.read()
    cfg = re.sub(r'listen = "127.0.0.1:\d+"', f'listen = "127.0.0.1:{port}"', cfg, count=1)
    cfg = re.sub(r'metrics_listen = "127.0.0.1:\d+"', f'metrics_listen = "127.0.0.1:{mport}"', cfg)
    path = os.path.join(tmp, "cortex-nopool.toml")
    with open(path, "w") as fh:
        fh.write(cfg)
    log = open(os.path.join(tmp, "cortex-nopool.log"), "w")
    p = subprocess.Popen([os.path.join(BIN, "cortex"), "serve", "--config", path], stdout=log,
                         stderr=subprocess.STDOUT, env={**os.environ, "HELEXA_CORTEX_UPSTREAM_POOL": "0"})
    wait_http(f"http://127.0.0.1:{port}/health", 15, proc=p)
    for _ in range(100):  # the upstream's model shows up in the catalogue
        try:
            with urllib_open(f"http://127.0.0.1:{port}/v1/models") as r:
                if b'"small"' in r.read():
                    break
        except Exception:
            pass
        time.sleep(0.1)
    return p, port


def urllib_open(url):
    import urllib.request
    return urllib.request.urlopen(url, timeout=5)


def start_litellm(venv, upstream_port, tmp):
    """Returns (proc, port, version, None) or (None, None, None, why)."""
    exe = os.path.join(venv, "bin", "litellm")
    if not os.path.exists(exe):
        print(f"installing litellm[proxy] into {venv}", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
        if r.returncode == 0:
            r = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "litellm[proxy]"],
                               capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(exe):
            return None, None, None, "installing litellm[proxy] failed: " + (r.stderr or r.stdout)[-500:]
    ver = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                          "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True).stdout.strip()
    port = free_port()
    cfg = os.path.join(tmp, "litellm.yaml")
    with open(cfg, "w") as fh:
        fh.write("model_list:\n  - model_name: small\n    litellm_params:\n      model: openai/m1\n"
                 f"      api_base: http://127.0.0.1:{upstream_port}/v1\n      api_key: x\n")
    log = open(os.path.join(tmp, "litellm.log"), "w+")
    env = {**os.environ, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR"}
    p = subprocess.Popen([exe, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                          "--num_workers", str(LITELLM_WORKERS)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", 120, proc=p)
    except Exception as e:  # noqa: BLE001
        p.kill()
        p.wait()
        log.seek(0)
        return None, None, ver, f"litellm proxy did not start: {e}: {log.read()[-500:]}"
    return p, port, ver, None


def real_neuron(n):
    """TTFT / latency to a real neuron, direct vs through cortex."""
    sys.path.insert(0, HERE)
    from cortex_fault import RealFleet
    f = RealFleet(tempfile.mkdtemp())
    try:
        for _ in range(100):
            st = json.loads(urllib_open(f.url + "/status").read())
            if any(m["state"] == "ready" for m in st["neurons"][0]["loaded"]):
                break
            time.sleep(0.1)
        H = {"content-type": "application/json"}
        res = {}
        targets = [("real neuron, direct", f.neurons["a"]["port"], "tiny"), ("real neuron, through cortex", f.port, "small")]
        for name, port, model in targets:
            sb = json.dumps({"model": model, "stream": True, "max_tokens": 2, "ignore_eos": True, "temperature": 0,
                             "messages": [{"role": "user", "content": "hi"}]})
            nb = json.dumps({"model": model, "max_tokens": 2, "ignore_eos": True, "temperature": 0,
                             "messages": [{"role": "user", "content": "hi"}]})
            ttft(port, 10, sb, H)
            res[name] = ([], [], sb, nb)
        rounds = 5
        for _ in range(rounds):
            for name, port, model in targets:
                r = res[name]
                ttft(port, n // rounds, r[2], H, r[0])
                latency(port, n // rounds, r[3], H, r[1])
        d = pct(res[targets[0][0]][0]), pct(res[targets[0][0]][1])
        out = ["| path (real neuron) | TTFT p50 ms | TTFT p99 ms | 2-token request p50 ms | p99 ms |",
               "|---|---|---|---|---|"]
        for name, *_ in targets:
            t, lt = pct(res[name][0]), pct(res[name][1])
            add = (lambda a, b: "") if name == targets[0][0] else (lambda a, b: f" ({a - b:+.2f})")
            out.append(f"| {name} | {t[0]:.2f}{add(t[0], d[0][0])} | {t[1]:.2f}{add(t[1], d[0][1])} | "
                       f"{lt[0]:.2f}{add(lt[0], d[1][0])} | {lt[1]:.2f}{add(lt[1], d[1][1])} |")
        return out
    finally:
        f.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--secs", type=float, default=5)
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--litellm-venv", default=os.path.join(ROOT, ".cache", "litellm-venv"))
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--write-doc", default=None)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    f = Fleet(tmp, [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"}], MODELS,
              extra_gateway="max_streams = 2048")
    plain = ll = None
    try:
        up = f.neurons["a"]["port"]
        plain, plain_port = start_plain_cortex(f, tmp)
        ll_why, ll_ver = "skipped (--no-litellm)", None
        if not args.no_litellm:
            ll, ll_port, ll_ver, ll_why = start_litellm(args.litellm_venv, up, tmp)
        H = {"content-type": "application/json"}
        targets = [("direct to upstream", up, "m1", H), ("through cortex", f.port, "small", H),
                   ("cortex, upstream keep-alive off", plain_port, "small", H)]
        pids = {targets[0][0]: f.neurons["a"]["proc"].pid, targets[1][0]: f.cortex.pid,
                targets[2][0]: plain.pid}
        if ll:
            targets.append((f"through LiteLLM {ll_ver}", ll_port, "small",
                            {**H, "authorization": f"Bearer {LITELLM_KEY}"}))
            pids[targets[3][0]] = ll.pid
        # interleaved rounds, so that drifting background load on the shared
        # machine hits every path alike
        res = {name: {"ttft": [], "lat": [], "rps": 0.0, "fails": 0, "cpu": 0.0, "n": 0}
               for name, *_ in targets}
        bodies = {}
        for name, port, model, hdr in targets:
            bodies[name] = (json.dumps({"model": model, "stream": True,
                                        "messages": [{"role": "user", "content": "hi"}]}),
                            json.dumps({"model": model, "max_tokens": 4,
                                        "messages": [{"role": "user", "content": "hi"}]}))
            ttft(port, 20, bodies[name][0], hdr)  # warm up
            latency(port, 20, bodies[name][1], hdr)
        rounds = 5
        for k in range(rounds):
            print(f"round {k + 1}/{rounds}", file=sys.stderr)
            for name, port, model, hdr in targets:
                ttft(port, args.n // rounds, bodies[name][0], hdr, res[name]["ttft"])
                latency(port, args.n // rounds, bodies[name][1], hdr, res[name]["lat"])
            for name, port, model, hdr in targets:
                c0 = cpu_s(pids[name])
                r, fails, count = rps(port, bodies[name][1], args.conc, args.secs / rounds, hdr)
                res[name]["cpu"] += cpu_s(pids[name]) - c0
                res[name]["n"] += count
                res[name]["rps"] += r / rounds
                res[name]["fails"] += fails
                time.sleep(0.3)  # let the upstream settle
        for r in res.values():
            r["ttft"], r["lat"] = pct(r["ttft"]), pct(r["lat"])
        print("idle streams", file=sys.stderr)
        for _ in range(100):  # the upstream may have been marked down while saturated
            n = f.status()["neurons"][0]
            if n["up"] and not n["ejected"]:
                break
            time.sleep(0.2)
        held, base, peak = idle_streams(f, args.streams)
        d = res["direct to upstream"]
        lines = ["| path | TTFT p50 ms | TTFT p99 ms | non-stream p50 ms | non-stream p99 ms | "
                 f"req/s ({args.conc} clients, {args.secs:.0f} s) | server CPU µs/req |",
                 "|---|---|---|---|---|---|---|"]
        for name, r in res.items():
            add = "" if r is d else " ({:+.2f})"
            lines.append(
                f"| {name} | {r['ttft'][0]:.2f}{add.format(r['ttft'][0] - d['ttft'][0])} | "
                f"{r['ttft'][1]:.2f}{add.format(r['ttft'][1] - d['ttft'][1])} | "
                f"{r['lat'][0]:.2f}{add.format(r['lat'][0] - d['lat'][0])} | "
                f"{r['lat'][1]:.2f}{add.format(r['lat'][1] - d['lat'][1])} | {r['rps']:.0f}"
                + (f" ({r['fails']} non-200)" if r["fails"] else "")
                + f" | {r['cpu'] / max(r['n'], 1) * 1e6:.0f} |")
        lines.append("\nserver CPU µs/req: user+system CPU of the process answering that path during the "
                     "req/s phase, per request served: the upstream itself for the direct row, the proxy "
                     "alone (its own process and children) for the others.")
        if not ll:
            lines.append(f"\nLiteLLM: not measured — {ll_why}")
        lines.append(f"\nidle streams held through cortex: {held}; cortex RSS {base / 1024:.1f} MiB idle → "
                     f"{peak / 1024:.1f} MiB with streams open = {(peak - base) / max(held, 1):.1f} KiB per stream")
        with open("/proc/loadavg") as fh:
            load = " ".join(fh.read().split()[:3])
        lines.append(f"\n(run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
                     f"{os.cpu_count()} CPUs, load average after the run {load}; "
                     f"`--n {args.n} --conc {args.conc} --secs {args.secs:g} --streams {args.streams}`)")
        if args.real:
            lines += [""] + real_neuron(args.n)
        text = "\n".join(lines)
        print(text)
        if args.write_doc:
            with open(args.write_doc) as fh:
                doc = fh.read()
            a, b = "<!-- cortex-bench:begin -->\n", "<!-- cortex-bench:end -->"
            i, j = doc.index(a) + len(a), doc.index(b)
            with open(args.write_doc, "w") as fh:
                fh.write(doc[:i] + text + "\n" + doc[j:])
    finally:
        for p in (plain, ll):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
        f.stop()


if __name__ == "__main__":
    main()

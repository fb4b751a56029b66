"""cortex_fault.py — a neuron SIGKILLed mid-stream, N trials: the client must
get a terminal error in its dialect within 2 s and never a normal end.

One cortex in front of one upstream: by default the scripted
tests/e2e/fake_neuron.py (the SLOW script: 40 content chunks 0.1 s apart);
with --real a real `neuron serve` (CPU backend, one engine thread, a
synthetic tiny Qwen3 from `neuron synth --shape tiny-qwen3` with the real
Qwen3 tokenizer, ignore_eos, up to 2000 tokens). Each trial streams a chat
(alternating OpenAI /v1/chat/completions and Anthropic /v1/messages, raw HTTP
so the bytes themselves are checked), SIGKILLs the upstream after the 3rd
content chunk, and times kill -> the terminal error event. The upstream is
restarted on the same port and one request must succeed before the next
trial (this also resets cortex's failure count for it, so it is never
ejected between trials).

Usage: HELEXA_BIN=build/bin .venv/bin/python bench/cortex_fault.py
  [--trials 100] [--real] [--write-doc docs/benchmarks.md]
The e2e suite runs the same trial function (tests/e2e/test_cortex_fault.py).
Exit status 1 when any trial fails."""
import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
from cortex_harness import BIN, HERE as E2E, Fleet, free_port, get_json, wait_http  # noqa: E402

MODELS = '[[models]]\nid = "small"\npath = "m1"\n'
DEADLINE_S = 2.0
ROOT = os.path.join(HERE, "..")
TOK = os.path.join(ROOT, ".cache", "tokenizers", "qwen3", "tokenizer.json")


class RealFleet:
    """One real neuron ("a", the synthetic tiny model as "small") and a cortex,
    with the attributes of cortex_harness.Fleet that the trials use."""

    def __init__(self, tmp):
        os.makedirs(os.path.join(tmp, "models"))
        subprocess.run([os.path.join(BIN, "neuron"), "synth", "--shape", "tiny-qwen3", "--quant", "Q8_0",
                        "--tokenizer", TOK, "--out", os.path.join(tmp, "models", "tiny.gguf"), "--seed", "3"],
                       check=True, capture_output=True)
        self.tmp, self.procs = tmp, []
        port = free_port()
        self.ntoml = os.path.join(tmp, "neuron.toml")
        with open(self.ntoml, "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\nname = "a"\nmodel_dirs = ["models"]\ndevices = "cpu"\n'
                    '[memory]\ncpu_budget_mb = 512\n[limits]\nmax_context = 4096\n[engine]\nthreads = 1\n'
                    'prefix_cache_mb = 0\n[[preload]]\nmodel = "tiny"\n')
        self.neurons = {"a": {"port": port, "url": f"http://127.0.0.1:{port}", "proc": None}}
        self.start_neuron("a")
        self.port, mport = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(os.path.join(tmp, "models.toml"), "w") as f:
            f.write('[[models]]\nid = "small"\npath = "tiny"\n')
        cfg = os.path.join(tmp, "cortex.toml")
        with open(cfg, "w") as f:
            f.write(f'[gateway]\nlisten = "127.0.0.1:{self.port}"\nmetrics_listen = "127.0.0.1:{mport}"\n'
                    f'models_file = "models.toml"\n[[neurons]]\nname = "a"\n'
                    f'endpoint = "http://127.0.0.1:{port}"\npoll_interval_ms = 200\ntimeout_ms = 1000\n')
        self.log = open(os.path.join(tmp, "cortex.log"), "w")
        self.cortex = subprocess.Popen([os.path.join(BIN, "cortex"), "serve", "--config", cfg],
                                       stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(self.url + "/health", 15, proc=self.cortex)

    def start_neuron(self, name):
        log = open(os.path.join(self.tmp, "neuron.log"), "a")
        p = subprocess.Popen([os.path.join(BIN, "neuron"), "serve", "--config", self.ntoml], stdout=log,
                             stderr=subprocess.STDOUT)
        self.neurons[name]["proc"] = p
        self.procs.append(p)
        wait_http(self.neurons[name]["url"] + "/health", 30, proc=p)

    def stop(self):
        self.cortex.terminate()
        rc = self.cortex.wait(20)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        return rc


def restart_upstream(f, name="a"):
    n = f.neurons[name]
    if n["proc"].poll() is None:
        n["proc"].kill()
    n["proc"].wait()
    if isinstance(f, RealFleet):
        f.start_neuron(name)
        return
    p = subprocess.Popen([sys.executable, os.path.join(E2E, "fake_neuron.py"), "--port", str(n["port"]),
                          "--name", name, "--models", "m1:100", "--budget", "300", "--preload", "m1"],
                         stdout=subprocess.PIPE)
    p.stdout.readline()
    n["proc"] = p
    f.procs.append(p)


def wait_serving(f, timeout=10.0):
    """Until cortex sees the upstream up with the model ready and one request
    through cortex succeeds."""
    t0 = time.time()
    body = json.dumps({"model": "small", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    while time.time() - t0 < timeout:
        n = get_json(f.url + "/status")["neurons"][0]
        if n["up"] and not n["ejected"] and any(m["state"] == "ready" for m in n["loaded"]):
            c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=5)
            c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("upstream not serving through cortex after restart")


def _delta_text(d):
    return d.get("content") or d.get("reasoning_content")


def trial(f, anthropic, name="a"):
    """Returns (ok, seconds from kill to the terminal error or None, why)."""
    if anthropic:
        path, body = "/v1/messages", {"model": "small", "max_tokens": 2000, "stream": True,
                                      "messages": [{"role": "user", "content": "SLOW story"}]}
        hdr = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
    else:
        path, body = "/v1/chat/completions", {"model": "small", "stream": True, "max_tokens": 2000,
                                              "ignore_eos": True,
                                              "messages": [{"role": "user", "content": "SLOW story"}]}
        hdr = {"content-type": "application/json"}
    c = http.client.HTTPConnection("127.0.0.1", f.port, timeout=10)
    c.request("POST", path, json.dumps(body), hdr)
    r = c.getresponse()
    if r.status != 200:
        return False, None, f"HTTP {r.status}"
    chunks, t_kill, event, err_at, normal_end, why = 0, None, None, None, False, ""
    try:
        while True:
            line = r.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
                continue
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]" or event == "message_stop":
                normal_end = True
                continue
            obj = json.loads(data)
            if anthropic and event == "error":
                if obj.get("type") == "error" and isinstance(obj.get("error"), dict) and \
                        obj["error"].get("type") and obj["error"].get("message"):
                    err_at = time.time()
                else:
                    why = f"Anthropic error event in the wrong shape: {data[:200]}"
            elif not anthropic and "error" in obj:
                if isinstance(obj["error"], dict) and obj["error"].get("message"):
                    err_at = time.time()
                else:
                    why = f"OpenAI error chunk in the wrong shape: {data[:200]}"
            elif anthropic and event == "content_block_delta" or \
                    not anthropic and _delta_text((obj.get("choices") or [{}])[0].get("delta", {})):
                chunks += 1
                if chunks == 3 and t_kill is None:
                    os.kill(f.neurons[name]["proc"].pid, signal.SIGKILL)
                    t_kill = time.time()
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as e:
        why = why or f"stream broke without an error event: {e!r}"
    finally:
        c.close()
    if t_kill is None:
        return False, None, why or "stream ended before the kill"
    if normal_end:
        return False, None, "normal end after the kill"
    if err_at is None:
        return False, None, why or "no terminal error event"
    dt = err_at - t_kill
    if dt > DEADLINE_S:
        return False, dt, f"error after {dt:.2f} s"
    return True, dt, ""


def run(f, trials, log=None):
    times, fails = [], []
    for i in range(trials):
        ok, dt, why = trial(f, anthropic=i % 2 == 1)
        if ok:
            times.append(dt)
        else:
            fails.append(f"trial {i} ({'anthropic' if i % 2 else 'openai'}): {why}")
        if log:
            print(f"trial {i}: {'ok' if ok else 'FAIL ' + why} {dt if dt is not None else ''}", file=log)
        restart_upstream(f)
        wait_serving(f)
    return times, fails


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--write-doc", default=None)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    if args.real:
        f = RealFleet(tmp)
    else:
        f = Fleet(tmp, [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"}], MODELS)
    try:
        times, fails = run(f, args.trials, sys.stderr)
    finally:
        rc = f.stop()
    ts = sorted(times)
    what = "real neuron (tiny synthetic Qwen3, CPU)" if args.real else "scripted upstream (fake_neuron.py)"
    lines = [f"{what}: {len(times)}/{args.trials} trials passed ({(args.trials + 1) // 2} OpenAI, "
             f"{args.trials // 2} Anthropic); cortex exit status {rc}."]
    if ts:
        lines.append(f"kill → terminal error event at the client: median {statistics.median(ts) * 1000:.1f} ms, "
                     f"p99 {ts[max(int(len(ts) * 0.99) - 1, 0)] * 1000:.1f} ms, max {ts[-1] * 1000:.1f} ms "
                     f"(limit {DEADLINE_S * 1000:.0f} ms); normal ends after a kill: 0.")
    for x in fails:
        lines.append(f"- FAILED {x}")
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    lines.append(f"\n(run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
                 f"{os.cpu_count()} CPUs, load average after the run {load})")
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        with open(args.write_doc) as fh:
            doc = fh.read()
        tag = "cortex-fault-real" if args.real else "cortex-fault"
        a, b = f"<!-- {tag}:begin -->\n", f"<!-- {tag}:end -->"
        i, j = doc.index(a) + len(a), doc.index(b)
        with open(args.write_doc, "w") as fh:
            fh.write(doc[:i] + text + "\n" + doc[j:])
    sys.exit(1 if fails or rc != 0 else 0)


if __name__ == "__main__":
    main()

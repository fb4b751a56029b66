"""cortex placement and eviction against two REAL `neuron serve` processes
(CPU backend, small memory budgets, four copies of a synthetic tiny Qwen3
model with the real Qwen3 tokenizer): a model goes to the neuron where it fits
without evicting; concurrent requests during a load cause exactly one load;
LRU eviction takes the least recently used model that is not pinned;
alternating requests for two models that share one slot are collated (few
loads); a SIGSTOPped neuron is marked down by the poll time-out, the request
waiting on it moves to the other replica, and the neuron comes back after
SIGCONT."""
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import openai
import pytest

from cortex_harness import BIN, free_port, get_json, wait_http

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TOK = os.path.join(ROOT, ".cache", "tokenizers", "qwen3", "tokenizer.json")

# n1 may host every model, n2 only "delta"; "pin" and the rest fit two at a
# time on n1 (budget below)
MODELS = '''
[[models]]
id = "pin"
path = "a"
pinned = true
neurons = ["n1"]

[[models]]
id = "beta"
path = "b"
neurons = ["n1"]

[[models]]
id = "gamma"
path = "c"
neurons = ["n1"]

[[models]]
id = "delta"
path = "d"
'''


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(re.escape(f"{name}{{{want}}}") + r" (\S+)", text)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if not os.path.exists(TOK):
        pytest.skip("Qwen3 tokenizer not fetched (scripts/install-deps)")
    tmp = str(tmp_path_factory.mktemp("cxp"))
    src = os.path.join(tmp, "tiny.gguf")
    subprocess.run([os.path.join(BIN, "neuron"), "synth", "--shape", "tiny-qwen3", "--quant", "Q8_0",
                    "--tokenizer", TOK, "--out", src, "--seed", "5"], check=True, capture_output=True)
    procs, neurons = [], {}
    for name, files in (("n1", "abcd"), ("n2", "d")):
        d = os.path.join(tmp, f"models-{name}")
        os.makedirs(d)
        for x in files:
            os.symlink(src, os.path.join(d, f"{x}.gguf"))
        port = free_port()
        with open(os.path.join(tmp, f"{name}.toml"), "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\nname = "{name}"\nmodel_dirs = ["models-{name}"]\n'
                    f'devices = "cpu"\n[memory]\ncpu_budget_mb = 4096\n[limits]\nmax_context = 256\n'
                    f'unload_grace_ms = 1000\n[engine]\nthreads = 1\nprefix_cache_mb = 0\n'
                    f'load_on_demand = false\n')
        neurons[name] = {"url": f"http://127.0.0.1:{port}", "toml": os.path.join(tmp, f"{name}.toml")}
    # the budget: room for two models, not three, by the neuron's own
    # accounting (a probe load) and by cortex's (1.15 x the file size until
    # a model is loaded and reports its memory)
    def start(n, budget_mb):
        with open(n["toml"]) as f:
            text = re.sub(r"cpu_budget_mb = \S+", f"cpu_budget_mb = {budget_mb}", f.read())
        with open(n["toml"], "w") as f:
            f.write(text)
        log = open(n["toml"][:-5] + ".log", "a")
        p = subprocess.Popen([os.path.join(BIN, "neuron"), "serve", "--config", n["toml"]],
                             stdout=log, stderr=subprocess.STDOUT)
        n["proc"] = p
        wait_http(n["url"] + "/health", 30, proc=p)
        return p
    probe = start(neurons["n1"], 4096)
    req = urllib.request.Request(neurons["n1"]["url"] + "/models/load", data=b'{"model":"a"}',
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
    ms = get_json(neurons["n1"]["url"] + "/models")
    mem = max(m["memory_bytes"] for m in ms["loaded"])
    fb = max(m["file_bytes"] for m in ms["available"])
    probe.terminate()
    probe.wait(20)
    est = (max(mem, fb * 115 // 100) * 5 // 2) >> 20
    for n in neurons.values():
        procs.append(start(n, est))
    cport, mport = free_port(), free_port()
    with open(os.path.join(tmp, "models.toml"), "w") as f:
        f.write(MODELS)
    cfg = (f'[gateway]\nlisten = "127.0.0.1:{cport}"\nmetrics_listen = "127.0.0.1:{mport}"\n'
           f'models_file = "models.toml"\n[eviction]\nstrategy = "lru"\n')
    for name, n in neurons.items():
        cfg += f'[[neurons]]\nname = "{name}"\nendpoint = "{n["url"]}"\npoll_interval_ms = 300\ntimeout_ms = 2000\n'
    with open(os.path.join(tmp, "cortex.toml"), "w") as f:
        f.write(cfg)
    clog = open(os.path.join(tmp, "cortex.log"), "w")
    c = subprocess.Popen([os.path.join(BIN, "cortex"), "serve", "--config", os.path.join(tmp, "cortex.toml")],
                         stdout=clog, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{cport}"
    wait_http(url + "/health", 15, proc=c)
    t0 = time.time()
    while time.time() - t0 < 15:
        st = get_json(url + "/status")
        if all(n["up"] and n["available"] > 0 for n in st["neurons"]):
            break
        time.sleep(0.1)
    yield {"url": url, "metrics": f"http://127.0.0.1:{mport}/metrics", "neurons": neurons, "budget_mb": est}
    c.terminate()
    assert c.wait(20) == 0
    for p in procs:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def loaded(fleet):
    return {n["name"]: sorted(m["id"] for m in n["loaded"]) for n in get_json(fleet["url"] + "/status")["neurons"]}


def neuron_loads(fleet, name):
    text = urllib.request.urlopen(fleet["neurons"][name]["url"] + "/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r'^neuron_model_loads_total\{[^}]*outcome="ok"[^}]*\} (\S+)',
                                           text, re.M))


def neuron_requests(fleet, name):
    """Chat requests the neuron answered successfully."""
    text = urllib.request.urlopen(fleet["neurons"][name]["url"] + "/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r'^neuron_requests_total\{[^}]*outcome="ok"[^}]*\} (\S+)',
                                           text, re.M))


def client(fleet):
    return openai.OpenAI(base_url=fleet["url"] + "/v1", api_key="x", max_retries=0, timeout=120)


def ask(fleet, model, o=None):
    o = o or client(fleet)
    r = o.chat.completions.create(model=model, max_tokens=2, temperature=0,
                                  messages=[{"role": "user", "content": "hi"}])
    assert r.usage.completion_tokens == 2
    return r


def test_placement_single_load_and_lru_with_pinned(fleet):
    assert loaded(fleet) == {"n1": [], "n2": []}
    ask(fleet, "pin")                        # only n1 may host it
    assert loaded(fleet) == {"n1": ["a"], "n2": []}
    # concurrent requests while "beta" loads: every one is served, one load
    errs, gate = [], threading.Barrier(5)
    clients = [client(fleet) for _ in range(5)]

    def go(o):
        gate.wait()
        try:
            ask(fleet, "beta", o)
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=go, args=(o,)) for o in clients]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert errs == []
    m = urllib.request.urlopen(fleet["metrics"], timeout=5).read().decode()
    assert metric(m, "cortex_model_loads_total", model="beta", neuron="n1", outcome="ok") == 1
    # they overlapped the load: more than the loading request waited for it
    # (queue time ≥ 5 ms)
    assert metric(m, "cortex_queue_seconds_count", model="beta", neuron="n1") == 5
    assert metric(m, "cortex_queue_seconds_bucket", model="beta", neuron="n1", le="0.005") <= 3
    assert neuron_loads(fleet, "n1") == 2    # pin, beta: nothing loaded twice
    assert loaded(fleet) == {"n1": ["a", "b"], "n2": []}
    # n1 is full (two models): "delta" goes where it fits without evicting
    ask(fleet, "delta")
    assert loaded(fleet) == {"n1": ["a", "b"], "n2": ["d"]}
    # "gamma" may only go to n1: the pinned "a" is the least recently used,
    # but pinned; "b" is evicted
    ask(fleet, "beta")
    ask(fleet, "gamma")
    assert loaded(fleet) == {"n1": ["a", "c"], "n2": ["d"]}
    m = urllib.request.urlopen(fleet["metrics"], timeout=5).read().decode()
    assert metric(m, "cortex_model_evictions_total", model="b", neuron="n1") == 1
    assert metric(m, "cortex_model_evictions_total", model="a", neuron="n1") == 0
    assert neuron_loads(fleet, "n1") == 3 and neuron_loads(fleet, "n2") == 1


def test_alternating_requests_are_collated(fleet):
    # "pin" holds one of n1's two slots, so "beta" and "gamma" (n1 only)
    # share the other: 12 concurrent requests alternating beta, gamma, ...
    # must be served in batches by model, not with a swap per request
    ask(fleet, "pin")
    before = neuron_loads(fleet, "n1")
    m0 = urllib.request.urlopen(fleet["metrics"], timeout=5).read().decode()
    errs, gate = [], threading.Barrier(12)
    clients = [client(fleet) for _ in range(12)]

    def go(o, model):
        gate.wait()
        try:
            ask(fleet, model, o)
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=go, args=(o, ("beta", "gamma")[i % 2])) for i, o in enumerate(clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert errs == []
    loads = neuron_loads(fleet, "n1") - before
    m = urllib.request.urlopen(fleet["metrics"], timeout=5).read().decode()
    cortex_loads = sum(metric(m, "cortex_model_loads_total", model=x, neuron="n1", outcome="ok") -
                       metric(m0, "cortex_model_loads_total", model=x, neuron="n1", outcome="ok")
                       for x in ("beta", "gamma"))
    assert cortex_loads == loads
    print(f"collation: {loads:.0f} loads for 12 alternating requests")
    assert 1 <= loads <= 4, f"{loads} loads for 12 alternating requests"
    # the pinned model was never the victim
    assert metric(m, "cortex_model_evictions_total", model="a", neuron="n1") == 0
    assert "a" in loaded(fleet)["n1"]


def test_sigstop_neuron_traffic_moves_to_replica(fleet):
    # "delta" on both neurons: n2 has it, load it on n1 as well
    n1, n2 = fleet["neurons"]["n1"], fleet["neurons"]["n2"]
    ask(fleet, "delta")
    req = urllib.request.Request(fleet["url"] + "/admin/models/load", data=b'{"model":"delta","neuron":"n1"}',
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req, timeout=60).read()
    assert "d" in loaded(fleet)["n1"] and "d" in loaded(fleet)["n2"]
    # the replica that serves an idle fleet's next request (the first with
    # the least work in flight) is n1: stop it and ask straight away, before
    # the poller has noticed
    st = {n["name"]: n for n in get_json(fleet["url"] + "/status")["neurons"]}
    assert st["n1"]["in_flight"] == 0 and st["n2"]["in_flight"] == 0
    served = neuron_requests(fleet, "n2")
    os.kill(n1["proc"].pid, signal.SIGSTOP)
    try:
        t0 = time.time()
        ask(fleet, "delta")
        # it went to n1 first (the tie goes to the first neuron) and waited
        # until the poll time-out (timeout_ms = 2000) marked n1 down, then
        # was retried on n2, long before any generation time-out
        dt = time.time() - t0
        assert 1.0 <= dt < 8, dt
        assert neuron_requests(fleet, "n2") == served + 1
        st = {n["name"]: n for n in get_json(fleet["url"] + "/status")["neurons"]}
        assert st["n1"]["up"] is False and st["n2"]["up"] is True
        t0 = time.time()
        for _ in range(3):
            ask(fleet, "delta")
        assert time.time() - t0 < 6
        assert neuron_requests(fleet, "n2") == served + 4
        m = urllib.request.urlopen(fleet["metrics"], timeout=5).read().decode()
        assert metric(m, "cortex_neuron_up", neuron="n1") == 0
    finally:
        os.kill(n1["proc"].pid, signal.SIGCONT)
    # n1 comes back (re-read by the poller, its model still loaded) and takes
    # traffic again
    t0 = time.time()
    while time.time() - t0 < 15:
        st = {n["name"]: n for n in get_json(fleet["url"] + "/status")["neurons"]}
        if st["n1"]["up"]:
            break
        time.sleep(0.1)
    assert st["n1"]["up"] is True and "d" in loaded(fleet)["n1"]
    before = neuron_requests(fleet, "n1")
    ask(fleet, "delta")
    assert neuron_requests(fleet, "n1") == before + 1

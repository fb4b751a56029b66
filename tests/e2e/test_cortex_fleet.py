"""cortex fleet behaviour on loopback with scripted neurons: placement,
LRU and priority eviction with a pinned model, exactly one load under
concurrent requests, and faults (neuron SIGKILLed mid-stream, SIGSTOPped
neuron, client hang-up, slow-header clients)."""
import json
import os
import signal
import socket
import threading
import time
import urllib.request

import anthropic
import openai
import pytest

from cortex_harness import Fleet

MODELS = '''
[[models]]
id = "small"
path = "m1"
priority = 1

[[models]]
id = "med"
path = "m2"
priority = 5

[[models]]
id = "pin"
path = "m3"
pinned = true

[[models]]
id = "other"
path = "m4"
priority = 3
'''


def oai(f):
    return openai.OpenAI(base_url=f.url + "/v1", api_key="x", max_retries=0, timeout=20)


def anth(f):
    return anthropic.Anthropic(base_url=f.url, api_key="x", max_retries=0, timeout=20)


def ask(f, model, text="hi"):
    r = oai(f).chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
    return r.choices[0].message.content


def test_lru_eviction_pinned_and_single_load(tmp_path):
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:100,m2:150,m3:100", "budget": 300,
                               "load_ms": 600}], MODELS, strategy="lru")
    try:
        assert ask(f, "pin") == "Hello from m3 (a)"
        # concurrent requests during a load: exactly one load
        out = []
        ts = [threading.Thread(target=lambda: out.append(ask(f, "small"))) for _ in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert out == ["Hello from m1 (a)"] * 6
        assert f.stats("a")["loads"] == ["m3", "m1"]
        # med (150) needs room: the pinned m3 stays, m1 (least recently used, not pinned) goes
        assert ask(f, "med") == "Hello from m2 (a)"
        s = f.stats("a")
        assert s["unloads"] == ["m1"] and s["loads"] == ["m3", "m1", "m2"]
        st = f.status()
        assert sorted(m["id"] for m in st["neurons"][0]["loaded"]) == ["m2", "m3"]
        metrics = urllib.request.urlopen(f.metrics_url, timeout=5).read().decode()
        assert 'cortex_model_evictions_total{model="m1",neuron="a"} 1' in metrics
        assert 'cortex_model_loads_total{model="small",neuron="a",outcome="ok"} 1' in metrics
        assert "cortex_time_to_first_token_seconds_bucket" in metrics
        # nothing fits: 507 in the caller's dialect
        with pytest.raises(anthropic.APIStatusError) as e:
            anth(f).messages.create(model="other", max_tokens=5,
                                    messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code in (404, 507)
    finally:
        assert f.stop() == 0


def test_priority_eviction_and_collation(tmp_path):
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:100,m2:100,m4:100", "budget": 200,
                               "load_ms": 200}], MODELS, strategy="priority")
    try:
        ask(f, "med")    # priority 5, used first (LRU would evict it)
        ask(f, "small")  # priority 1, used last
        assert ask(f, "other") == "Hello from m4 (a)"
        assert f.stats("a")["unloads"] == ["m1"]  # lowest priority goes, not the LRU one
        # alternating requests for two models that cannot both fit: swaps stay
        # bounded (requests for the loaded model are served, not thrashed)
        out = []
        ts = [threading.Thread(target=lambda m=m: out.append(ask(f, m)))
              for m in ["small", "other"] * 4]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert len(out) == 8
        assert len(f.stats("a")["loads"]) <= 3 + 2
    finally:
        assert f.stop() == 0


@pytest.fixture()
def pair(tmp_path):
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"},
                              {"name": "b", "models": "m1:100", "budget": 300, "preload": "m1"}],
              MODELS)
    yield f
    for n in f.neurons.values():
        try:
            os.kill(n["proc"].pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert f.stop() == 0


def _serving_neuron(f):
    return "a" if f.status()["neurons"][0]["in_flight"] > 0 else "b"


def test_kill_mid_stream_gives_terminal_error(pair):
    f = pair
    t_kill, got_error, victim = None, False, None
    try:
        s = oai(f).chat.completions.create(model="small", stream=True,
                                           messages=[{"role": "user", "content": "SLOW"}])
        for i, ch in enumerate(s):
            if i == 3:
                victim = _serving_neuron(f)
                f.neurons[victim]["proc"].kill()
                t_kill = time.time()
    except openai.APIError:
        got_error = True  # the in-band error event, never a normal end
    assert t_kill is not None and got_error
    assert time.time() - t_kill < 2.0
    # the survivor takes new traffic (the dead one fails before the first byte)
    survivor = "b" if victim == "a" else "a"
    assert ask(f, "small") == f"Hello from m1 ({survivor})"


def test_anthropic_kill_mid_stream(pair):
    f = pair
    t_kill, got = None, False
    try:
        with anth(f).messages.stream(model="small", max_tokens=100,
                                     messages=[{"role": "user", "content": "SLOW"}]) as s:
            for i, ev in enumerate(s):
                if i == 4:
                    f.neurons[_serving_neuron(f)]["proc"].kill()
                    t_kill = time.time()
    except anthropic.APIError:
        got = True
    assert got and time.time() - t_kill < 2.0


def test_sigstop_traffic_moves(pair):
    f = pair
    os.kill(f.neurons["a"]["proc"].pid, signal.SIGSTOP)
    time.sleep(2.5)  # poll timeout (1 s) marks it down
    answers = {ask(f, "small") for _ in range(4)}
    assert answers == {"Hello from m1 (b)"}
    st = {n["name"]: n["up"] for n in f.status()["neurons"]}
    assert st == {"a": False, "b": True}


def test_client_hangup_cancels_upstream(pair):
    f = pair
    req = urllib.request.Request(f.url + "/v1/chat/completions", method="POST", data=json.dumps({
        "model": "small", "stream": True, "messages": [{"role": "user", "content": "SLOW"}]}).encode(),
        headers={"content-type": "application/json"})
    r = urllib.request.urlopen(req, timeout=10)
    r.read1(200)
    r.close()
    t0 = time.time()
    while time.time() - t0 < 3:
        if sum(f.stats(n)["cancelled"] for n in ("a", "b")) == 1:
            break
        time.sleep(0.05)
    assert sum(f.stats(n)["cancelled"] for n in ("a", "b")) == 1
    assert time.time() - t0 < 1.5


def test_slow_header_clients_do_not_block(pair):
    """1,000 connections that send half a header and stall do not block other
    clients (each is held until header_timeout_ms, 2 s here, then dropped)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1000 + 200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    f = pair
    socks = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", f.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        t0 = time.time()
        for _ in range(3):
            assert ask(f, "small").startswith("Hello from m1")
        assert time.time() - t0 < 3.0
        # the stalled ones are cut off at the header deadline (2 s), never served
        socks[-1].settimeout(5)
        try:
            got = socks[-1].recv(4096)
        except ConnectionResetError:
            got = b""
        assert got == b"" or got.startswith(b"HTTP/1.1 4"), got[:100]
    finally:
        for s in socks:
            s.close()


def test_kill_mid_stream_fault_trials(tmp_path):
    """The short version of bench/cortex_fault.py (100 trials there): a
    neuron SIGKILLed mid-stream gives the client a terminal error in its
    dialect within 2 s and never a normal end, 5 trials alternating dialects."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "cortex_fault.py")
    spec = importlib.util.spec_from_file_location("cortex_fault", path)
    cf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cf)
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"}],
              cf.MODELS)
    try:
        times, fails = cf.run(f, 5)
        assert fails == [] and len(times) == 5 and max(times) < 2.0
    finally:
        assert f.stop() == 0


def test_graceful_drain(tmp_path):
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"}], MODELS)
    try:
        chunks = []

        def stream():
            for ch in oai(f).chat.completions.create(model="small", stream=True,
                                                     messages=[{"role": "user", "content": "SLOW"}]):
                if ch.choices and ch.choices[0].delta.content:
                    chunks.append(ch.choices[0].delta.content)
        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.5)
        f.cortex.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            urllib.request.urlopen(f.url + "/health", timeout=2)
            healthy = True
        except Exception:
            healthy = False  # 503 while draining, or no longer accepting
        assert not healthy
        t.join(20)
        assert len(chunks) == 40  # the stream in flight finished normally
        assert f.cortex.wait(20) == 0
    finally:
        f.stop()


def test_upstream_connections_are_reused(pair):
    f = pair
    o = oai(f)
    for i in range(20):
        r = o.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content.startswith("Hello from m1")
        if i % 2:
            n = sum(1 for ch in o.chat.completions.create(
                model="small", stream=True, messages=[{"role": "user", "content": "hi"}])
                if ch.choices and ch.choices[0].delta.content)
            assert n == 4
    s = [f.stats(n) for n in ("a", "b")]
    assert sum(x["chats"] for x in s) == 30
    # sequential requests ride one keep-alive connection (a new one each
    # time would make this 30)
    assert sum(x["chat_conns"] for x in s) <= 2


def test_pooled_connection_to_restarted_neuron(tmp_path):
    """A neuron that restarts on the same port leaves dead connections in the
    pool: the next request reconnects instead of failing."""
    import subprocess
    import sys
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:100", "budget": 300, "preload": "m1"}], MODELS)
    try:
        assert ask(f, "small") == "Hello from m1 (a)"
        n = f.neurons["a"]
        n["proc"].kill()
        n["proc"].wait()
        p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "fake_neuron.py"),
                              "--port", str(n["port"]), "--name", "a", "--models", "m1:100",
                              "--budget", "300", "--preload", "m1"], stdout=subprocess.PIPE)
        p.stdout.readline()
        n["proc"] = p
        f.procs.append(p)
        t0 = time.time()  # the poller may have seen it down: wait until it is read again
        while not (f.status()["neurons"][0]["up"] and f.status()["neurons"][0]["loaded"]):
            assert time.time() - t0 < 5
            time.sleep(0.05)
        # the pool still holds the connection to the dead process
        for _ in range(3):
            assert ask(f, "small") == "Hello from m1 (a)"
        assert f.stats("a")["chats"] == 3
    finally:
        assert f.stop() == 0


@pytest.mark.parametrize("gpus", [0, 1])
def test_defrag_repacks_after_cycles(tmp_path, gpus):
    """defrag_after_cycles = 3: three evictions from the device (the CPU host,
    or CUDA device 0 of a GPU host), then (idle) every model there is unloaded
    and loaded back onto it, pinned first, then largest first; requests that
    arrive during the repack wait for it and succeed."""
    f = Fleet(str(tmp_path), [{"name": "a", "models": "m1:60,m2:100,m3:40,m4:100", "budget": 200,
                               "load_ms": 500, "gpus": gpus}], MODELS,
              extra_eviction="defrag_after_cycles = 3")
    dev = "0" if gpus else "all"
    try:
        assert ask(f, "pin") == "Hello from m3 (a)"      # m3 40, pinned
        assert ask(f, "small") == "Hello from m1 (a)"    # m1 60
        assert ask(f, "med") == "Hello from m2 (a)"      # m2 100: full
        assert f.status()["neurons"][0]["cycles"] == 0
        assert ask(f, "other") == "Hello from m4 (a)"    # evicts m1, m2: 2 cycles
        assert ask(f, "small") == "Hello from m1 (a)"    # fits: no cycle
        assert f.status()["neurons"][0]["cycles"] == 2
        assert ask(f, "med") == "Hello from m2 (a)"      # evicts m4: 3 cycles
        t0 = time.time()
        while not f.status()["neurons"][0]["repacking"]:
            assert time.time() - t0 < 5, "no repack started"
            time.sleep(0.02)
        out, errs = [], []

        def go(model):
            try:
                out.append(ask(f, model))
            except Exception as e:  # noqa: BLE001
                errs.append(e)
        ts = [threading.Thread(target=go, args=(m,)) for m in ("med", "med", "pin", "small")]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert errs == []
        assert sorted(out) == ["Hello from m1 (a)", "Hello from m2 (a)", "Hello from m2 (a)",
                               "Hello from m3 (a)"]
        s = f.stats("a")
        # the repack: everything on the device out, then back pinned first,
        # then largest first (m2 100 before m1 60)
        assert s["unloads"] == ["m1", "m2", "m4"] + ["m3", "m2", "m1"]
        assert s["loads"] == ["m3", "m1", "m2", "m4", "m1", "m2"] + ["m3", "m2", "m1"]
        st = f.status()["neurons"][0]
        assert st["cycles"] == 0 and not st["repacking"]
        metrics = urllib.request.urlopen(f.metrics_url, timeout=5).read().decode()
        assert f'cortex_defrag_total{{neuron="a",device="{dev}",outcome="ok"}} 1' in metrics
        assert f"repacking neuron a device {dev} after 3 load/evict cycles" in f.logs()
        # the reloads name the device they come back to (GPU host)
        assert [b.get("devices") for b in s["load_bodies"][6:]] == ([[0]] * 3 if gpus else [None] * 3)
    finally:
        assert f.stop() == 0

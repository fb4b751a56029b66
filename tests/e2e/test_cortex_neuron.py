"""cortex in front of two real `neuron serve` processes (CPU backend, a
synthetic tiny Qwen3 model with the real Qwen3 tokenizer): both dialects
through the official SDKs, exact count_tokens, the catalogue, a neuron
SIGKILLed mid-stream, and a client hang-up stopping the neuron's generation."""
import json
import os
import subprocess
import time
import urllib.request

import anthropic
import openai
import pytest

from cortex_harness import BIN, free_port, get_json, wait_http

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TOK = os.path.join(ROOT, ".cache", "tokenizers", "qwen3", "tokenizer.json")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    if not os.path.exists(TOK):
        pytest.skip("Qwen3 tokenizer not fetched (scripts/install-deps)")
    tmp = str(tmp_path_factory.mktemp("cxn"))
    os.makedirs(os.path.join(tmp, "models"))
    subprocess.run([os.path.join(BIN, "neuron"), "synth", "--shape", "tiny-qwen3", "--quant", "Q8_0",
                    "--tokenizer", TOK, "--out", os.path.join(tmp, "models", "tiny.gguf"), "--seed", "3"],
                   check=True, capture_output=True)
    procs, neurons = [], {}
    for name in ("n1", "n2"):
        port = free_port()
        with open(os.path.join(tmp, f"{name}.toml"), "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\nname = "{name}"\nmodel_dirs = ["models"]\n'
                    f'devices = "cpu"\n[memory]\ncpu_budget_mb = 512\n[[preload]]\nmodel = "tiny"\n')
        log = open(os.path.join(tmp, f"{name}.log"), "w")
        p = subprocess.Popen([os.path.join(BIN, "neuron"), "serve", "--config",
                              os.path.join(tmp, f"{name}.toml")], stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        neurons[name] = {"url": f"http://127.0.0.1:{port}", "proc": p}
        wait_http(neurons[name]["url"] + "/health", 20, proc=p)
    cport, mport = free_port(), free_port()
    with open(os.path.join(tmp, "models.toml"), "w") as f:
        f.write('[[models]]\nid = "tiny-chat"\naliases = ["tiny"]\npath = "tiny"\n')
    cfg = (f'[gateway]\nlisten = "127.0.0.1:{cport}"\nmetrics_listen = "127.0.0.1:{mport}"\n'
           f'models_file = "models.toml"\n')
    for name, n in neurons.items():
        cfg += f'[[neurons]]\nname = "{name}"\nendpoint = "{n["url"]}"\npoll_interval_ms = 300\ntimeout_ms = 1000\n'
    with open(os.path.join(tmp, "cortex.toml"), "w") as f:
        f.write(cfg)
    clog = open(os.path.join(tmp, "cortex.log"), "w")
    c = subprocess.Popen([os.path.join(BIN, "cortex"), "serve", "--config", os.path.join(tmp, "cortex.toml")],
                         stdout=clog, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{cport}"
    wait_http(url + "/health", 15, proc=c)
    # both neurons report the preloaded model ready
    t0 = time.time()
    while time.time() - t0 < 30:
        st = get_json(url + "/status")
        if all(any(m["state"] == "ready" for m in n["loaded"]) for n in st["neurons"]):
            break
        time.sleep(0.2)
    yield {"url": url, "neurons": neurons}
    c.terminate()
    assert c.wait(20) == 0
    for p in procs:
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_openai_and_anthropic_through_real_neurons(fleet):
    o = openai.OpenAI(base_url=fleet["url"] + "/v1", api_key="x", max_retries=0, timeout=60)
    r = o.chat.completions.create(model="tiny-chat", max_tokens=8, temperature=0,
                                  messages=[{"role": "user", "content": "hello"}])
    assert r.usage.completion_tokens == 8 and r.choices[0].finish_reason == "length"
    n = 0
    for ch in o.chat.completions.create(model="tiny", max_tokens=6, temperature=0, stream=True,
                                        messages=[{"role": "user", "content": "hello"}]):
        n += bool(ch.choices and ch.choices[0].delta.content)
    assert n >= 1
    a = anthropic.Anthropic(base_url=fleet["url"], api_key="x", max_retries=0, timeout=60)
    m = a.messages.create(model="tiny-chat", max_tokens=8, thinking={"type": "disabled"},
                          messages=[{"role": "user", "content": "hello"}])
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 8 and m.usage.input_tokens > 0
    with a.messages.stream(model="tiny-chat", max_tokens=5, system="be brief",
                           messages=[{"role": "user", "content": "hi"}]) as s:
        types = [e.type for e in s]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    # count_tokens is exact: the neuron's own template + tokenizer
    msgs = [{"role": "user", "content": "count these words please"}]
    ct = a.messages.count_tokens(model="tiny-chat", messages=msgs, system="sys")
    req = urllib.request.Request(fleet["neurons"]["n1"]["url"] + "/apply-template", data=json.dumps({
        "model": "tiny", "messages": [{"role": "system", "content": "sys"}] + msgs}).encode(),
        headers={"content-type": "application/json"})
    direct = json.loads(urllib.request.urlopen(req, timeout=10).read())["tokens"]
    assert ct.input_tokens == direct
    ids = [x.id for x in o.models.list().data]
    assert ids[:2] == ["tiny-chat", "tiny"]


def test_real_neuron_killed_mid_stream(fleet):
    o = openai.OpenAI(base_url=fleet["url"] + "/v1", api_key="x", max_retries=0, timeout=60)
    t_kill, err = None, False
    try:
        for i, ch in enumerate(o.chat.completions.create(
                model="tiny-chat", max_tokens=4000, temperature=0, stream=True,
                messages=[{"role": "user", "content": "write a long story"}])):
            if i == 2:
                st = get_json(fleet["url"] + "/status")
                busy = [n["name"] for n in st["neurons"] if n["in_flight"] > 0]
                killed = fleet["neurons"][busy[0]]["proc"]
                killed.kill()
                t_kill = time.time()
    except openai.APIError:
        err = True
    assert t_kill is not None and err
    assert time.time() - t_kill < 2.0
    killed.wait(timeout=30)  # reaped: later tests see it gone (poll() is not None)


def _neuron_metric_sum(fleet, name_re):
    import re
    total = 0.0
    for n in fleet["neurons"].values():
        if n["proc"].poll() is not None:  # killed by the test before
            continue
        text = urllib.request.urlopen(n["url"] + "/metrics", timeout=5).read().decode()
        total += sum(float(v) for v in re.findall(r"^" + name_re + r" (\S+)$", text, re.M))
    return total


def test_client_hangup_cancels_real_generation(fleet):
    """A client that hangs up mid-stream through cortex stops the neuron's
    generation: the neuron counts the request as client_closed within a
    second, having generated a few tokens more than the client read (the
    hang-up crosses two HTTP hops), not the 4000 asked for."""
    closed0 = _neuron_metric_sum(fleet, r'neuron_requests_total\{[^}]*outcome="client_closed"\}')
    gen0 = _neuron_metric_sum(fleet, r"neuron_generated_tokens_total\{[^}]*\}")
    body = json.dumps({"model": "tiny-chat", "stream": True, "max_tokens": 4000, "ignore_eos": True,
                       "temperature": 0, "messages": [{"role": "user", "content": "go on"}]}).encode()
    req = urllib.request.Request(fleet["url"] + "/v1/chat/completions", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    r = urllib.request.urlopen(req, timeout=30)
    seen = 0
    while seen < 3:
        line = r.readline()
        assert line, "stream ended early"
        seen += line.startswith(b"data: {")
    r.close()
    t0 = time.time()
    while _neuron_metric_sum(fleet, r'neuron_requests_total\{[^}]*outcome="client_closed"\}') == closed0:
        assert time.time() - t0 < 1.0, "the neuron kept generating after the client hung up"
        time.sleep(0.02)
    gen = _neuron_metric_sum(fleet, r"neuron_generated_tokens_total\{[^}]*\}") - gen0
    assert seen <= gen < 100, gen  # measured: 3..8

"""cortex_harness.py — start fake or real neurons and a cortex on loopback
for the cortex end-to-end tests; everything is torn down by stop()."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.environ.get("HELEXA_BIN", os.path.join(HERE, "..", "..", "build", "bin"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_http(url, timeout=10.0, want=200, proc=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == want:
                    return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not up after {timeout}s")


class Fleet:
    def __init__(self, tmp, neurons, models_toml, strategy="lru", keys="", extra_gateway="",
                 extra_eviction=""):
        """neurons: list of dicts {name, models, budget, preload?, load_ms?}."""
        self.procs = []
        self.neurons = {}
        for n in neurons:
            port = free_port()
            cmd = [sys.executable, os.path.join(HERE, "fake_neuron.py"), "--port", str(port),
                   "--name", n["name"], "--models", n["models"], "--budget", str(n["budget"]),
                   "--load-ms", str(n.get("load_ms", 300)), "--preload", n.get("preload", ""),
                   "--gpus", str(n.get("gpus", 0))]
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
            p.stdout.readline()
            self.procs.append(p)
            self.neurons[n["name"]] = {"port": port, "proc": p, "url": f"http://127.0.0.1:{port}"}
        self.port = free_port()
        self.mport = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.mport}/metrics"
        with open(os.path.join(tmp, "models.toml"), "w") as f:
            f.write(models_toml)
        cfg = (f'[gateway]\nlisten = "127.0.0.1:{self.port}"\nmetrics_listen = "127.0.0.1:{self.mport}"\n'
               f'models_file = "models.toml"\nheader_timeout_ms = 2000\n{extra_gateway}\n'
               f'[eviction]\nstrategy = "{strategy}"\n{extra_eviction}\n\n')
        for name, n in self.neurons.items():
            cfg += (f'[[neurons]]\nname = "{name}"\nendpoint = "{n["url"]}"\npoll_interval_ms = 200\n'
                    f'timeout_ms = 1000\n\n')
        cfg += keys
        self.cfg_path = os.path.join(tmp, "cortex.toml")
        with open(self.cfg_path, "w") as f:
            f.write(cfg)
        self.log = open(os.path.join(tmp, "cortex.log"), "w+")
        wrap = os.environ.get("CORTEX_WRAP", "").split()
        self.cortex = subprocess.Popen(wrap + [os.path.join(BIN, "cortex"), "serve", "--config", self.cfg_path],
                                       stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_http(self.url + "/health", 15, proc=self.cortex)
        except Exception:
            text = self.logs()
            self.stop()
            raise RuntimeError("cortex did not start:\n" + text)

    def stats(self, name):
        return get_json(self.neurons[name]["url"] + "/_debug/stats")

    def status(self):
        return get_json(self.url + "/status")

    def logs(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.cortex and self.cortex.poll() is None:
            self.cortex.terminate()
            try:
                self.cortex.wait(15)
            except subprocess.TimeoutExpired:
                self.cortex.kill()
                self.cortex.wait()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.cortex and self.cortex.returncode != 0:
            # shown by pytest with the failing assertion: why cortex did not exit cleanly
            # (an ASan/UBSan report or an HX_ASSERT ends up here)
            print(f"cortex exited with {self.cortex.returncode}; end of its log:\n"
                  + self.logs()[-6000:])
        self.log.close()
        return self.cortex.returncode

"""fake_neuron.py — a scripted stand-in for `neuron serve`, for cortex tests
that need specific model output (tool calls, stop sequences at known
places, reasoning, slow streams). Implements the neuron API that cortex
uses: /health, /hardware, /models, /models/load, /models/unload,
/v1/chat/completions and /v1/completions (streaming and not), /tokenize,
plus /_debug/stats for assertions.

Script (by the last user message's text):
  contains "TOOL"   -> a get_weather tool call, arguments streamed in pieces
  contains "THINK"  -> reasoning_content, then the answer
  contains "STOPSEQ"-> text "alpha beta END gamma delta" (stop sequence tests)
  contains "SLOW"   -> 40 tokens, 0.1 s apart
  contains "HOLD"   -> one token, then 30 s of silence (idle-stream benchmarks)
  otherwise         -> "Hello from <model> (<name>)"
Usage: fake_neuron.py --port P --name N --models a:100,b:200 --budget 300 [--load-ms 300]
  [--gpus K]  (sizes in MiB). With --gpus K the host reports K CUDA devices of
--budget MiB each instead of a CPU budget; a load goes to the device its
"devices" field names, else to the one with the most room; loaded models
report their device."""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MiB = 1 << 20


class State:
    def __init__(self, args):
        self.name = args.name
        self.avail = {}
        for spec in args.models.split(","):
            mid, mb = spec.split(":")
            self.avail[mid] = int(mb) * MiB
        self.budget = args.budget * MiB  # per device with --gpus
        self.gpus = args.gpus
        self.dev = {}  # id -> device index (--gpus)
        self.load_bodies = []
        self.loaded = {}  # id -> state
        self.load_ms = args.load_ms
        self.lock = threading.Lock()
        self.loads = []
        self.unloads = []
        self.chats = 0
        self.chat_conns = 0  # connections that carried at least one chat request
        self.cancelled = 0
        self.completed = 0
        self.last_request = None


def _used(self, dev):
    """Bytes held on device dev (None: the whole host). Hold the lock."""
    return sum(self.avail[k] for k in self.loaded if dev is None or self.dev.get(k) == dev)


State.used = _used


def tokens_for(model, text, name):
    if "TOOL" in text:
        return "tool", None
    if "THINK" in text:
        return "think", None
    if "STOPSEQ" in text:
        return "text", ["alpha", " beta", " EN", "D gamma", " delta"]
    if "SLOW" in text:
        return "slow", [f" t{i}" for i in range(40)]
    if "HOLD" in text:
        return "hold", [" first", " second"]
    return "text", ["Hello", " from", f" {model}", f" ({name})"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    st: State = None

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.chatted = False

    def send_json(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        st = self.st
        if self.path == "/health":
            return self.send_json(200, {"status": "ok"})
        if self.path == "/hardware":
            if st.gpus:
                with st.lock:
                    devs = [{"index": d, "name": "fake-gpu", "compute_capability": "8.6",
                             "vram_total_bytes": st.budget, "vram_free_bytes": st.budget - st.used(d)}
                            for d in range(st.gpus)]
                return self.send_json(200, {"host": st.name, "cpu": {"model": "fake"}, "ram": {
                    "total_bytes": 8 << 30, "available_bytes": 4 << 30}, "devices": devs})
            return self.send_json(200, {"host": st.name, "cpu": {"model": "fake", "logical_cores": 2,
                                        "physical_cores": 2}, "ram": {"total_bytes": 8 << 30,
                                        "available_bytes": 4 << 30}, "devices": [],
                                        "memory_budget_bytes": st.budget})
        if self.path == "/models":
            with st.lock:
                return self.send_json(200, {
                    "available": [{"id": k, "estimated_vram_bytes": v} for k, v in st.avail.items()],
                    "loaded": [{"id": k, "state": s, "vram_used_bytes": st.avail[k],
                                "devices": [st.dev[k]] if k in st.dev else []}
                               for k, s in st.loaded.items()]})
        if self.path == "/_debug/stats":
            with st.lock:
                return self.send_json(200, {"loads": st.loads, "unloads": st.unloads, "chats": st.chats,
                                            "load_bodies": st.load_bodies,
                                            "chat_conns": st.chat_conns,
                                            "cancelled": st.cancelled, "completed": st.completed,
                                            "last_request": st.last_request})
        self.send_json(404, {"error": {"message": "no route", "type": "not_found", "code": 404}})

    def do_POST(self):
        st = self.st
        b = self.body()
        if self.path == "/models/load":
            m = b.get("model")
            with st.lock:
                if m not in st.avail:
                    return self.send_json(404, {"error": {"message": f"unknown model {m}"}})
                dev = None
                if st.gpus:
                    want = b.get("devices")
                    cands = want if want else sorted(range(st.gpus), key=lambda d: st.used(d))
                    fits = [d for d in cands if st.used(d) + st.avail[m] <= st.budget]
                    if not fits:
                        return self.send_json(507, {"error": {"message": "does not fit"}})
                    dev = fits[0]
                elif st.used(None) + st.avail[m] > st.budget:
                    return self.send_json(507, {"error": {"message": "does not fit"}})
                st.loaded[m] = "loading"
                if dev is not None:
                    st.dev[m] = dev
                st.loads.append(m)
                st.load_bodies.append(b)
            time.sleep(st.load_ms / 1000)
            with st.lock:
                st.loaded[m] = "ready"
            return self.send_json(200, {"model": m, "state": "ready"})
        if self.path == "/models/unload":
            m = b.get("model")
            with st.lock:
                st.loaded.pop(m, None)
                st.dev.pop(m, None)
                st.unloads.append(m)
            return self.send_json(200, {"model": m, "state": "unloaded"})
        if self.path == "/apply-template":
            text = json.dumps(b.get("messages")) + json.dumps(b.get("tools") or [])
            with st.lock:
                st.last_request = b
            return self.send_json(200, {"model": b.get("model"), "prompt": text,
                                        "tokens": len(text.split())})
        if self.path in ("/v1/chat/completions", "/v1/completions"):
            return self.chat(b)
        self.send_json(404, {"error": {"message": "no route"}})

    def chat(self, b):
        st = self.st
        model = b.get("model")
        with st.lock:
            st.chats += 1
            if not self.chatted:
                st.chat_conns += 1
                self.chatted = True
            st.last_request = b
            if st.loaded.get(model) != "ready":
                return self.send_json(404, {"error": {"message": f"model {model} not loaded",
                                                      "type": "not_found", "code": 404}})
        msgs = b.get("messages") or [{"role": "user", "content": b.get("prompt", "")}]
        last = ""
        for m in msgs:
            if m.get("role") == "user":
                c = m.get("content")
                last = c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [])
        kind, toks = tokens_for(model, last, st.name)
        deltas = []
        finish = "stop"
        if kind == "tool":
            deltas.append({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": ""}}]})
            for piece in ['{"city"', ': "Pa', 'ris"}']:
                deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            finish = "tool_calls"
        elif kind == "think":
            for piece in ["Let me", " think."]:
                deltas.append({"reasoning_content": piece})
            deltas.append({"content": "The answer is 4."})
        else:
            for t in toks:
                deltas.append({"content": t})
        max_tokens = b.get("max_tokens")
        if max_tokens is not None and max_tokens < len(deltas):
            deltas = deltas[:max_tokens]
            finish = "length"
        usage = {"prompt_tokens": 11, "completion_tokens": len(deltas), "total_tokens": 11 + len(deltas),
                 "prompt_tokens_details": {"cached_tokens": 3}}
        cid = "chatcmpl-fake"
        if not b.get("stream"):
            msg = {"role": "assistant", "content": "".join(d.get("content") or "" for d in deltas)}
            rc = "".join(d.get("reasoning_content", "") for d in deltas)
            if rc:
                msg["reasoning_content"] = rc
            if kind == "tool":
                msg["tool_calls"] = [{"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
            with st.lock:
                st.completed += 1
            return self.send_json(200, {"id": cid, "object": "chat.completion", "created": 1, "model": model,
                                        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                                        "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        try:
            for i, d in enumerate(deltas):
                send({"id": cid, "object": "chat.completion.chunk", "created": 1, "model": model,
                      "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
                if kind == "slow":
                    time.sleep(0.1)
                if kind == "hold":
                    time.sleep(30)
            send({"id": cid, "object": "chat.completion.chunk", "created": 1, "model": model,
                  "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            if (b.get("stream_options") or {}).get("include_usage"):
                send({"id": cid, "object": "chat.completion.chunk", "created": 1, "model": model,
                      "choices": [], "usage": usage})
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            with st.lock:
                st.completed += 1
        except (BrokenPipeError, ConnectionResetError):
            with st.lock:
                st.cancelled += 1
            self.close_connection = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="fake")
    ap.add_argument("--models", default="m1:100")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--load-ms", type=int, default=300)
    ap.add_argument("--preload", default="")
    ap.add_argument("--gpus", type=int, default=0)
    args = ap.parse_args()
    Handler.st = State(args)
    for m in filter(None, args.preload.split(",")):
        Handler.st.loaded[m] = "ready"
        if args.gpus:
            Handler.st.dev[m] = 0
    ThreadingHTTPServer.request_queue_size = 1024
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()

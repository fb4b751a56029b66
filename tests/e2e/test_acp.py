"""helexa-acp end to end: the official ACP Python client (agent-client-protocol)
spawns $HELEXA_BIN/helexa-acp and drives it, while a small scripted
OpenAI-compatible upstream (below) stands in for cortex so that each test can
ask for exactly the model output it needs: streamed content, reasoning, tool
calls, a slow stream to cancel, a length finish.

The upstream picks its behaviour from the last user message (a "cue") and,
after a tool round, answers with the tool's result so tests can see what the
model was told."""

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import acp
from acp import schema
from acp.helpers import resource_block, embedded_text_resource, resource_link_block, text_block

BIN = os.environ.get("HELEXA_BIN", "build/bin")
AGENT = os.path.join(BIN, "helexa-acp")
ASAN = os.environ.get("HELEXA_ASAN", "0") in ("1", "ON", "TRUE", "true")
SLOW = 3.0 if ASAN else 1.0


def _chunk(delta=None, finish=None, usage=None):
    obj = {"id": "c1", "object": "chat.completion.chunk", "model": "scripted",
           "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage is not None:
        obj["choices"] = []
        obj["usage"] = usage
    return obj


class Upstream:
    """Scripted OpenAI-compatible server on 127.0.0.1:<ephemeral>."""

    def __init__(self):
        self.requests = []          # parsed request bodies
        self.auth = []              # their Authorization headers
        self.aborted = threading.Event()  # a stream's client hung up
        self.slow_started = threading.Event()
        up = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "no such path"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n))
                up.requests.append(body)
                up.auth.append(self.headers.get("Authorization"))
                if not self.path.endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "no such path"}})
                try:
                    up.respond(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    up.aborted.set()

            def _json(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/v1" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def respond(self, h, body):
        msgs = body["messages"]
        last = msgs[-1]
        user = [m for m in msgs if m["role"] == "user"][-1]["content"]
        if "cue:http500" in user:
            data = json.dumps({"error": {"message": "model qwen is not loaded", "type": "server_error"}}).encode()
            h.send_response(500)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.close_connection = True
        h.end_headers()

        def send(obj, delay=0.0):
            h.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            h.wfile.flush()
            if delay:
                time.sleep(delay)

        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        if last["role"] == "tool":
            send(_chunk({"role": "assistant", "content": "tool said: "}))
            send(_chunk({"content": last["content"]}))
            send(_chunk({}, "stop"))
        elif "cue:slow" in user:
            self.slow_started.set()
            send(_chunk({"role": "assistant", "content": "tick"}))
            for _ in range(200):
                send(_chunk({"content": " tick"}), 0.05)
                h.wfile.write(b": keep-alive\n\n")
            send(_chunk({}, "stop"))
        elif "cue:length" in user:
            send(_chunk({"role": "assistant", "content": "cut"}))
            send(_chunk({}, "length"))
        elif "cue:tool:" in user:
            name, args = user.split("cue:tool:", 1)[1].split(" ", 1)
            send(_chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": "model-call-1", "type": "function",
                 "function": {"name": name, "arguments": ""}}]}))
            half = len(args) // 2  # arguments arrive in pieces
            for piece in (args[:half], args[half:]):
                send(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            send(_chunk({}, "tool_calls"))
        else:
            send(_chunk({"role": "assistant", "reasoning_content": "Let me "}))
            send(_chunk({"reasoning_content": "think."}))
            send(_chunk({"content": "Hello"}))
            send(_chunk({"content": ", world"}))
            send(_chunk({}, "stop"))
        send(_chunk(usage=usage))
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


class Client:
    """The editor side: records updates, answers fs/terminal/permission calls."""

    def __init__(self, files=None, permission="allow"):
        self.updates = []
        self.files = dict(files or {})
        self.permission = permission  # "allow", "reject" or "cancelled"
        self.permission_requests = []
        self.terminals = {}
        self.released = []

    async def session_update(self, session_id, update, **kw):
        self.updates.append(update)

    async def request_permission(self, session_id, tool_call, options, **kw):
        self.permission_requests.append((tool_call, options))
        if self.permission == "cancelled":
            return schema.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))
        kind = "allow_once" if self.permission == "allow" else "reject_once"
        opt = next(o for o in options if o.kind == kind)
        return schema.RequestPermissionResponse(
            outcome=schema.AllowedOutcome(outcome="selected", option_id=opt.option_id))

    async def read_text_file(self, session_id, path, line=None, limit=None, **kw):
        if path not in self.files:
            raise acp.RequestError.resource_not_found(path)
        return schema.ReadTextFileResponse(content=self.files[path])

    async def write_text_file(self, session_id, path, content, **kw):
        self.files[path] = content
        return schema.WriteTextFileResponse()

    async def create_terminal(self, session_id, command, args=None, env=None, cwd=None,
                              output_byte_limit=None, **kw):
        p = subprocess.run([command] + list(args or []), cwd=cwd, capture_output=True, text=True)
        tid = "term-%d" % len(self.terminals)
        self.terminals[tid] = p
        return schema.CreateTerminalResponse(terminal_id=tid)

    async def terminal_output(self, session_id, terminal_id, **kw):
        p = self.terminals[terminal_id]
        return schema.TerminalOutputResponse(output=p.stdout + p.stderr, truncated=False)

    async def wait_for_terminal_exit(self, session_id, terminal_id, **kw):
        return schema.WaitForTerminalExitResponse(exit_code=self.terminals[terminal_id].returncode)

    async def release_terminal(self, session_id, terminal_id, **kw):
        self.released.append(terminal_id)
        return schema.ReleaseTerminalResponse()

    async def kill_terminal(self, session_id, terminal_id, **kw):
        return schema.KillTerminalResponse()

    async def ext_method(self, method, params):
        raise acp.RequestError.method_not_found(method)

    async def ext_notification(self, method, params):
        pass

    def text(self, kind):
        return "".join(u.content.text for u in self.updates if u.session_update == kind)

    def of(self, kind):
        return [u for u in self.updates if u.session_update == kind]


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["HOME"] = str(tmp_path / "home")
    e["XDG_DATA_HOME"] = str(tmp_path / "data")
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return e


CAPS = schema.ClientCapabilities(fs=schema.FileSystemCapabilities(read_text_file=True, write_text_file=True),
                                 terminal=True)


async def _with_agent(client, endpoint, env, body, caps=CAPS, extra_args=()):
    async with acp.spawn_agent_process(client, AGENT, "--endpoint", endpoint, *extra_args,
                                       env=env) as (conn, proc):
        init = await asyncio.wait_for(conn.initialize(protocol_version=1, client_capabilities=caps), 10 * SLOW)
        try:
            return await asyncio.wait_for(body(conn, init), 30 * SLOW)
        finally:
            if proc.returncode is None:
                proc.stdin.close()
                await asyncio.wait_for(proc.wait(), 10 * SLOW)
            assert proc.returncode == 0


def run(coro):
    return asyncio.run(coro)


def test_initialize_and_new_session(upstream, env, tmp_path):
    client = Client()

    async def body(conn, init):
        assert init.protocol_version == 1
        assert init.agent_capabilities.load_session is True
        assert init.agent_capabilities.prompt_capabilities.embedded_context is True
        assert init.agent_capabilities.prompt_capabilities.image is False
        assert init.auth_methods == []
        assert init.agent_info.name == "helexa-acp"
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        assert len(s.session_id) == 32
        assert s.modes.current_mode_id == "ask"
        assert {m.id for m in s.modes.available_modes} == {"ask", "read_only"}
        s2 = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        assert s2.session_id != s.session_id
        with pytest.raises(acp.RequestError) as ei:
            await conn.new_session(cwd="relative/dir", mcp_servers=[])
        assert ei.value.code == -32602 and "absolute" in str(ei.value.data or ei.value)
        await conn.set_session_mode(session_id=s.session_id, mode_id="read_only")
        with pytest.raises(acp.RequestError):
            await conn.set_session_mode(session_id=s.session_id, mode_id="yolo")

    run(_with_agent(client, upstream.url, env, body))


def test_prompt_streams_message_and_thought_chunks(upstream, env, tmp_path):
    client = Client()

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[
            text_block("hi there"),
            resource_link_block(name="main.c", uri="file:///w/main.c"),
            resource_block(embedded_text_resource("file:///w/notes.txt", "remember the milk")),
        ])
        assert r.stop_reason == "end_turn"
        assert r.usage.input_tokens == 11 and r.usage.output_tokens == 5
        return s.session_id

    run(_with_agent(client, upstream.url, env, body))
    assert client.text("agent_message_chunk") == "Hello, world"
    assert len(client.of("agent_message_chunk")) == 2  # streamed, not batched
    assert client.text("agent_thought_chunk") == "Let me think."
    usage = client.of("usage_update")
    assert usage and usage[-1].used == 16 and usage[-1].size > 0
    req = upstream.requests[-1]
    assert req["stream"] is True and req["stream_options"]["include_usage"] is True
    assert req["model"] == "scripted"  # from GET /models
    user = req["messages"][-1]["content"]
    assert "hi there" in user and "file:///w/main.c" in user and "remember the milk" in user
    assert {t["function"]["name"] for t in req["tools"]} == {"read_file", "write_file", "run_command"}


def test_max_tokens_stop_reason(upstream, env, tmp_path):
    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:length")])
        assert r.stop_reason == "max_tokens"

    run(_with_agent(Client(), upstream.url, env, body))


def test_cancel_mid_stream_aborts_upstream(upstream, env, tmp_path):
    client = Client()

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        task = asyncio.create_task(conn.prompt(session_id=s.session_id, prompt=[text_block("cue:slow")]))
        while not client.of("agent_message_chunk"):
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await conn.cancel(session_id=s.session_id)
        r = await task
        assert r.stop_reason == "cancelled"
        assert time.monotonic() - t0 < 2 * SLOW
        # The session stays usable.
        r2 = await conn.prompt(session_id=s.session_id, prompt=[text_block("again")])
        assert r2.stop_reason == "end_turn"

    run(_with_agent(client, upstream.url, env, body))
    assert upstream.aborted.wait(5 * SLOW), "the upstream stream was not aborted"
    assert len(client.of("agent_message_chunk")) < 100


def test_write_tool_permission_granted(upstream, env, tmp_path):
    target = str(tmp_path / "out.txt")
    client = Client(files={target: "old text"}, permission="allow")
    args = json.dumps({"path": "out.txt", "content": "new text"})

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:tool:write_file " + args)])
        assert r.stop_reason == "end_turn"

    run(_with_agent(client, upstream.url, env, body))
    assert client.files[target] == "new text"
    assert len(client.permission_requests) == 1
    tc, options = client.permission_requests[0]
    assert {o.kind for o in options} >= {"allow_once", "reject_once"}
    start = client.of("tool_call")[0]
    assert start.kind == "edit" and start.status == "pending"
    diff = start.content[0]
    assert diff.type == "diff" and diff.path == target
    assert diff.old_text == "old text" and diff.new_text == "new text"
    statuses = [u.status for u in client.of("tool_call_update") if u.tool_call_id == start.tool_call_id]
    assert statuses[-1] == "completed"
    # The model got the tool result and answered after it.
    assert "Wrote 8 bytes" in client.text("agent_message_chunk")
    tool_msgs = [m for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["tool_call_id"] == upstream.requests[-1]["messages"][-2]["tool_calls"][0]["id"]


def test_command_tool_permission_denied(upstream, env, tmp_path):
    client = Client(permission="reject")
    args = json.dumps({"command": "touch", "args": [str(tmp_path / "should-not-exist")]})

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:tool:run_command " + args)])
        assert r.stop_reason == "end_turn"

    run(_with_agent(client, upstream.url, env, body))
    assert len(client.permission_requests) == 1
    assert not client.terminals and not (tmp_path / "should-not-exist").exists()
    start = client.of("tool_call")[0]
    assert start.kind == "execute"
    assert [u.status for u in client.of("tool_call_update")][-1] == "failed"
    assert "denied" in client.text("agent_message_chunk")


def test_command_tool_runs_in_terminal(upstream, env, tmp_path):
    client = Client(permission="allow")
    args = json.dumps({"command": "echo", "args": ["from-terminal"]})

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:tool:run_command " + args)])
        assert r.stop_reason == "end_turn"

    run(_with_agent(client, upstream.url, env, body))
    assert list(client.terminals) == ["term-0"] and client.released == ["term-0"]
    assert "exit code 0" in client.text("agent_message_chunk")
    assert "from-terminal" in client.text("agent_message_chunk")


def test_read_tool_and_session_load(upstream, env, tmp_path):
    path = str(tmp_path / "src.txt")
    client = Client(files={path: "line one\nline two\n"})
    args = json.dumps({"path": path})

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:tool:read_file " + args)])
        assert r.stop_reason == "end_turn"
        return s.session_id

    sid = run(_with_agent(client, upstream.url, env, body))
    assert not client.permission_requests  # reads need no approval
    start = client.of("tool_call")[0]
    assert start.kind == "read" and start.locations[0].path == path
    assert "tool said: line one\nline two" in client.text("agent_message_chunk")

    # A fresh agent process restores the session and replays it.
    client2 = Client()

    async def body2(conn, init):
        await conn.load_session(cwd=str(tmp_path), session_id=sid, mcp_servers=[])
        with pytest.raises(acp.RequestError):
            await conn.load_session(cwd=str(tmp_path), session_id="0" * 32, mcp_servers=[])
        with pytest.raises(acp.RequestError):
            await conn.load_session(cwd=str(tmp_path), session_id="../../etc/passwd", mcp_servers=[])

    run(_with_agent(client2, upstream.url, env, body2))
    assert "cue:tool:read_file" in client2.text("user_message_chunk")
    assert "line one" in client2.text("agent_message_chunk")
    assert client2.of("tool_call") and client2.of("tool_call_update")


def test_unreachable_endpoint_is_reported_in_session(env, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = Client()

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("hello")])
        assert r.stop_reason == "end_turn"

    run(_with_agent(client, "http://127.0.0.1:%d/v1" % port, env, body, extra_args=("--model", "m")))
    msg = client.text("agent_message_chunk")
    assert "cannot reach the model endpoint" in msg and str(port) in msg


def test_upstream_http_error_is_reported_in_session(upstream, env, tmp_path):
    client = Client()

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:http500")])
        assert r.stop_reason == "end_turn"

    run(_with_agent(client, upstream.url, env, body))
    msg = client.text("agent_message_chunk")
    assert "HTTP 500" in msg and "model qwen is not loaded" in msg


@pytest.mark.skipif(not os.environ.get("HELEXA_ACP_ENDPOINT"),
                    reason="set HELEXA_ACP_ENDPOINT to a running cortex or neuron (…/v1)")
def test_real_endpoint(env, tmp_path):
    """Against a real cortex/neuron: one prompt streams an answer."""
    client = Client()

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("Say hello in one word.")])
        assert r.stop_reason in ("end_turn", "max_tokens")

    run(_with_agent(client, os.environ["HELEXA_ACP_ENDPOINT"], env, body))
    assert client.text("agent_message_chunk") or client.text("agent_thought_chunk")


@pytest.fixture(scope="module")
def real_neuron(tmp_path_factory):
    """A real `neuron serve` with a tiny random-weight Qwen3-shaped model (real
    vocabulary and chat template, tools/make_tiny_chat_model.py), loaded on
    demand by the first request."""
    import re
    import sys
    root = Path(__file__).resolve().parents[2]
    models = tmp_path_factory.mktemp("acp-models")
    r = subprocess.run([sys.executable, str(root / "tools" / "make_tiny_chat_model.py"),
                        str(models / "tiny-acp")], capture_output=True, text=True)
    if r.returncode == 2:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([os.path.join(BIN, "neuron"), "serve", "--listen", "127.0.0.1:0",
                          "--models", str(models)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    m = re.search(r"listening on .*:(\d+)", p.stdout.readline())
    if not m:
        p.kill()
        pytest.fail("neuron did not start")
    yield f"http://127.0.0.1:{m.group(1)}/v1"
    p.terminate()
    assert p.wait(timeout=60 * SLOW) == 0


def test_real_neuron_streams_an_answer(real_neuron, env, tmp_path):
    """helexa-acp against a real neuron: the prompt streams chunks from the
    engine (random weights: the text is gibberish, the protocol is real) and
    the turn ends with a mapped stop reason; usage is reported."""
    client = Client()

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("Say hello.")])
        assert r.stop_reason in ("end_turn", "max_tokens")

    run(_with_agent(client, real_neuron, env, body, extra_args=("--model", "tiny-acp", "--max-tokens", "24")))
    assert client.text("agent_message_chunk") or client.text("agent_thought_chunk")


def _raw(lines, env, endpoint="http://127.0.0.1:9/v1"):
    """Feeds raw lines to the agent and returns its stdout messages."""
    p = subprocess.run([AGENT, "--endpoint", endpoint], input=b"".join(lines), capture_output=True,
                       env=env, timeout=30 * SLOW)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    out = [json.loads(l) for l in p.stdout.splitlines()]  # stdout is pure protocol
    return out, p.stderr.decode(errors="replace")


def test_malformed_input_gets_errors_and_agent_survives(env):
    lines = [
        b"this is not json\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":1}}\n",
        b"[1,2,3]\n",
        b"{\"jsonrpc\":\"1.0\",\"id\":2,\"method\":\"initialize\"}\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"no/such\",\"params\":{}}\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"session/new\",\"params\":{\"cwd\":5}}\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"session/prompt\",\"params\":[]}\n",
        b"{\"jsonrpc\":\"2.0\",\"method\":\"session/cancel\",\"params\":{\"sessionId\":\"nope\"}}\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"session/prompt\",\"params\":"
        b"{\"sessionId\":\"nope\",\"prompt\":[{\"type\":\"text\",\"text\":\"x\"}]}}\n",
        b"\xff\xfe garbage \x00\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"" + b"a" * (17 * 1024 * 1024) + b"\"}\n",
        b"\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"initialize\",\"params\":{\"protocolVersion\":1}}\n",
    ]
    out, err = _raw(lines, env)
    by_id = {m.get("id"): m for m in out if m.get("id") is not None}
    nulls = [m for m in out if m.get("id") is None]
    assert by_id[1]["result"]["protocolVersion"] == 1
    assert by_id[2]["error"]["code"] == -32600
    assert by_id[3]["error"]["code"] == -32601
    assert by_id[4]["error"]["code"] == -32602 and "cwd" in by_id[4]["error"]["message"]
    assert by_id[5]["error"]["code"] == -32602
    assert by_id[6]["error"]["code"] == -32002
    assert by_id[8]["result"]["protocolVersion"] == 1  # still alive after all of it
    codes = sorted(m["error"]["code"] for m in nulls)
    # not json, batch, invalid utf-8, over-long line
    assert codes == [-32700, -32700, -32600, -32600], nulls
    assert any("exceeds the limit" in m["error"]["message"] for m in nulls)


def test_config_file_api_key_and_read_only_mode(upstream, env, tmp_path):
    cfg = tmp_path / "config" / "helexa"
    cfg.mkdir(parents=True)
    (cfg / "acp.toml").write_text(
        'endpoint = "%s"\nmodel = "from-toml"\napi_key_env = "ACP_TEST_KEY"\n' % upstream.url)
    env = dict(env, ACP_TEST_KEY="sekrit")
    client = Client()

    async def body(conn, init):
        assert init.auth_methods == []  # the key is there: nothing to log in to
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        await conn.set_session_mode(session_id=s.session_id, mode_id="read_only")
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("hello")])
        assert r.stop_reason == "end_turn"

    async def run_agent():  # no --endpoint: it comes from acp.toml
        async with acp.spawn_agent_process(client, AGENT, env=env) as (conn, proc):
            init = await conn.initialize(protocol_version=1, client_capabilities=CAPS)
            await asyncio.wait_for(body(conn, init), 30 * SLOW)
            proc.stdin.close()
            assert await asyncio.wait_for(proc.wait(), 10 * SLOW) == 0

    run(run_agent())
    req = upstream.requests[-1]
    assert req["model"] == "from-toml"
    assert upstream.auth[-1] == "Bearer sekrit"
    assert [t["function"]["name"] for t in req["tools"]] == ["read_file"]


def test_missing_api_key_requires_auth(upstream, env, tmp_path):
    async def body(conn, init):
        assert [m.id for m in init.auth_methods] == ["env"]
        with pytest.raises(acp.RequestError) as ei:
            await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        assert ei.value.code == -32000

    env = {k: v for k, v in env.items() if k != "ACP_TEST_KEY"}
    run(_with_agent(Client(), upstream.url, env, body, extra_args=("--api-key-env", "ACP_TEST_KEY")))


def test_help_version_and_bad_flags(env):
    p = subprocess.run([AGENT, "--help"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "--endpoint" in p.stdout and "--api-key-env" in p.stdout
    p = subprocess.run([AGENT, "--version"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.startswith("helexa-acp ")
    p = subprocess.run([AGENT, "--endpoint", "nope"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "--endpoint" in p.stderr and p.stdout == ""


def test_cancel_while_permission_pending(upstream, env, tmp_path):
    """The user cancels while the agent waits for approval: the client answers
    the pending request with `cancelled` (as ACP asks) and the turn ends
    `cancelled` without writing."""
    target = str(tmp_path / "f.txt")
    args = json.dumps({"path": target, "content": "x"})
    holder = {}

    class Cancelling(Client):
        async def request_permission(self, session_id, tool_call, options, **kw):
            self.permission_requests.append((tool_call, options))
            await holder["conn"].cancel(session_id=session_id)
            await asyncio.sleep(0.2)
            return schema.RequestPermissionResponse(outcome=schema.DeniedOutcome(outcome="cancelled"))

    client = Cancelling()

    async def body(conn, init):
        holder["conn"] = conn
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("cue:tool:write_file " + args)])
        assert r.stop_reason == "cancelled"
        r = await conn.prompt(session_id=s.session_id, prompt=[text_block("hello")])
        assert r.stop_reason == "end_turn"
        # The history stays well-formed: the unanswered tool call got a result.
        msgs = upstream.requests[-1]["messages"]
        call_ids = [tc["id"] for m in msgs for tc in m.get("tool_calls") or []]
        answered = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
        assert call_ids and call_ids == answered

    run(_with_agent(client, upstream.url, env, body))
    assert target not in client.files
    assert len(client.permission_requests) == 1


def test_tool_loop_stops_at_max_turn_requests(upstream, env, tmp_path):
    """A model that keeps calling tools is stopped after --max-turn-requests."""
    path = str(tmp_path / "a.txt")
    client = Client(files={path: "cue:tool:read_file " + json.dumps({"path": path})})

    async def body(conn, init):
        s = await conn.new_session(cwd=str(tmp_path), mcp_servers=[])
        r = await conn.prompt(session_id=s.session_id,
                              prompt=[text_block("cue:tool:read_file " + json.dumps({"path": path}))])
        return r.stop_reason

    # With 1 request per turn the tool runs once and no follow-up is asked.
    stop = run(_with_agent(client, upstream.url, env, body, extra_args=("--max-turn-requests", "1")))
    assert stop == "max_turn_requests"
    assert len(upstream.requests) == 1 and len(client.of("tool_call")) == 1


def test_eof_mid_turn_exits_cleanly(upstream, env, tmp_path):
    """The editor goes away while a turn streams: the agent aborts the
    upstream request and exits 0 (no hang, no leak under ASan)."""
    p = subprocess.Popen([AGENT, "--endpoint", upstream.url], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def call(obj):
        p.stdin.write((json.dumps(obj) + "\n").encode())
        p.stdin.flush()

    call({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}})
    assert json.loads(p.stdout.readline())["id"] == 1
    call({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": str(tmp_path), "mcpServers": []}})
    sid = json.loads(p.stdout.readline())["result"]["sessionId"]
    call({"jsonrpc": "2.0", "id": 3, "method": "session/prompt",
          "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "cue:slow"}]}})
    assert upstream.slow_started.wait(10 * SLOW)
    assert b"agent_message_chunk" in p.stdout.readline()
    p.stdin.close()
    assert p.wait(timeout=10 * SLOW) == 0
    assert upstream.aborted.wait(5 * SLOW)

"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests: real HTTP, real `openai` SDK.

Use the `llm_server` fixture (import it into a test module or a conftest:
`from tests.llm_server import llm_server  # noqa: F401`):

    def test_x(llm_server):
        llm_server.push(Reply(status=429), Reply(content='{"label": "dates"}'))   # consumed in order
        llm_server.responder = lambda body: '{"label": "x"}'   # answers when the queue is empty
        cfg = LLMConfig(model="test-model", base_url=llm_server.url, api_key="sk-test")
        ...
        assert len(llm_server.requests) == 2

A responder gets the request body (dict) and returns a Reply, a str (the message content) or a dict
(sent as JSON content). `requests` records every request received (body, headers, path); `completed`
counts answers actually sent with status 200.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest


@dataclass
class Reply:
    content: str | None = None  # the assistant message; None with status 200 -> an empty message
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering (longer than the client timeout = a timeout)
    raw: bytes | None = None  # send these bytes as the body instead of a chat completion
    headers: dict = field(default_factory=dict)
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens; default: chars/4 of the prompt


class ScriptedLLMServer:
    def __init__(self, responder: Callable[[dict], object] | None = None):
        self.queue: deque[Reply] = deque()
        self.responder = responder
        self.requests: list[dict] = []
        self.completed = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "ScriptedLLMServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def push(self, *replies: Reply | str) -> None:
        with self._lock:
            self.queue.extend(r if isinstance(r, Reply) else Reply(content=r) for r in replies)

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            if self.queue:
                return self.queue.popleft()
        if self.responder is None:
            return Reply(content='{"error": "no scripted reply"}')
        out = self.responder(body)
        if isinstance(out, Reply):
            return out
        if isinstance(out, dict):
            return Reply(content=json.dumps(out))
        return Reply(content=str(out))

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                body["_headers"] = {k.lower(): v for k, v in self.headers.items()}
                body["_path"] = self.path
                reply = server._next_reply(body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status != 200:
                    payload = json.dumps({"error": {"message": f"scripted {reply.status}", "type": "test"}}).encode()
                else:
                    msgs = body.get("messages", [])  # like real servers: ~4 chars a token + per-message overhead
                    prompt = sum(len(str(m.get("content", ""))) // 4 + 4 for m in msgs)
                    p, c = reply.usage or (prompt, len(reply.content or "") // 4)
                    payload = json.dumps({
                        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", "test"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": reply.content}}],
                        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                    }).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                    if reply.status == 200:
                        with server._lock:
                            server.completed += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


@pytest.fixture
def llm_server():
    server = ScriptedLLMServer().start()
    yield server
    server.stop()

"""The warm search server: a ThreadingHTTPServer answering POST /search and /similar (and GET /health)
with JSON, for one store.

The store is opened per request and closed after it (a held DuckDB connection would lock the file
against every other saeembed process); what stays warm is in-process: the sentence model
(encode.dense.get_embedder), the feature-description vectors and FAISS indexes the search modules
cache. One lock serialises requests: one store connection at a time, as DuckDB wants.

Every request must carry the token of the rendezvous file (header X-Saeembed-Token) and a Host header
naming this server (report.listen: DNS rebinding); anything else gets 403."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from saeembed.errors import InputError, SaeembedError
from saeembed.report.listen import allowed_hosts, check_remote, host_ok, resolve
from saeembed.serve import api, rendezvous
from saeembed.serve.wire import frame_to_json

TOKEN_HEADER = "X-Saeembed-Token"
MAX_BODY = 1 << 20  # a search request is a few hundred bytes


class SearchServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, store: str, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False,
                 log=None):
        listen = resolve(host)
        check_remote(listen, allow_remote)
        self.address_family = listen.family
        self.store = os.path.realpath(store)
        if not os.path.isfile(self.store):
            raise InputError(f"no store at {store}; create one with `saeembed ingest FILE --corpus NAME`")
        live, _ = rendezvous.find(self.store)
        if live is not None:
            raise InputError(f"a server already runs for {store} (pid {live.pid}, {live.url}); stop it first")
        super().__init__((listen.address, port), Handler)
        self.port = self.server_address[1]
        self.allowed = allowed_hosts(listen, self.port)
        self.token = secrets.token_urlsafe(32)
        self.lock = threading.Lock()
        self.log = log
        loopback = "::1" if listen.family == socket.AF_INET6 else "127.0.0.1"
        connect = loopback if listen.wildcard else listen.address  # a client never connects to 0.0.0.0
        self.rendezvous = rendezvous.Rendezvous(connect, self.port, os.getpid(), self.token, self.store)
        self._written = False

    def publish(self) -> None:
        """Write the rendezvous file: from now on CLI runs on this store come here."""
        try:
            rendezvous.write(self.rendezvous)
        except OSError as e:
            raise InputError(f"cannot write {rendezvous.path_for(self.store)} ({e.strerror}): the CLI finds the "
                             "server through that file beside the store") from None
        self._written = True

    def close(self) -> None:
        if self._written:
            rendezvous.remove(self.rendezvous)
            self._written = False
        self.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Handler(BaseHTTPRequestHandler):
    server: SearchServer
    protocol_version = "HTTP/1.1"
    server_version = "saeembed-serve"

    def log_message(self, format, *args):  # requests are logged by _answer, without client details
        pass

    def _refuse(self) -> bool:
        if not host_ok(self.headers.get("Host"), self.server.allowed):
            self._send(403, {"error": "Host header not allowed"})
            return True
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.server.token.encode()):
            self._send(403, {"error": f"missing or wrong {TOKEN_HEADER} (see {rendezvous.path_for(self.server.store)})"})
            return True
        return False

    def do_GET(self):
        if self._refuse():
            return
        if self.path != "/health":
            self._send(404, {"error": f"no such endpoint {self.path!r}; GET /health, POST /search, POST /similar"})
            return
        self._send(200, {"ok": True, "pid": os.getpid(), "store": self.server.store, "api": rendezvous.API_VERSION})

    def do_POST(self):
        if self._refuse():
            return
        endpoint = api.ENDPOINTS.get(self.path.lstrip("/"))
        if endpoint is None:
            self._send(404, {"error": f"no such endpoint {self.path!r}; POST /search or /similar"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(413 if length > MAX_BODY else 400, {"error": f"request body must be 0 to {MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise ValueError("expected a JSON object of arguments")
        except (ValueError, UnicodeDecodeError) as e:
            self._send(400, {"error": f"request body is not a JSON object: {e}"})
            return
        self._answer(endpoint, args)

    def _answer(self, endpoint, args: dict) -> None:
        t0 = time.perf_counter()
        try:
            with self.server.lock:
                frame, plan = endpoint(self.server.store, args)
            status = 200
            reply = {"frame": frame_to_json(frame), "plan": frame_to_json(plan)}
        except SaeembedError as e:  # the user's mistake: the CLI shows it as a local run would
            status, reply = 400, {"error": str(e), "type": type(e).__name__}
        except Exception as e:  # a bug: the client runs locally, where the traceback shows
            status, reply = 500, {"error": f"{type(e).__name__}: {e}", "type": "internal"}
        seconds = time.perf_counter() - t0
        reply["seconds"] = round(seconds, 6)
        self._send(status, reply)
        if self.server.log is not None:
            self.server.log(self.path.lstrip("/"), status, seconds, args.get("corpus"))

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def serve(server: SearchServer, *, warm: bool = True, ready=None) -> None:
    """Load the models, publish the rendezvous file, then answer until interrupted; the file is
    removed on the way out. ready(server) is called once requests are answered."""
    try:
        if warm:
            api.warm(server.store)
        server.publish()
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.close()

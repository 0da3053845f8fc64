"""The CLI's side of `saeembed serve`: find the store's server, send it a request, rebuild the frames.

Light on purpose: json, http.client and polars only (no torch, DuckDB or analysis code), so a served
search costs a Python start and one round trip. Whenever the server cannot answer (no rendezvous file,
a dead pid, a refused connection, a server error) `call` returns None and the caller runs locally; a
user mistake the server reports (a library InputError or the like) is raised here as the same error."""

from __future__ import annotations

import http.client
import json

from saeembed import errors
from saeembed.serve import rendezvous
from saeembed.serve.wire import frame_from_json

TOKEN_HEADER = "X-Saeembed-Token"
CONNECT_TIMEOUT = 2.0
# A first query on a corpus may embed its documents (minutes on a large one); later ones take well under a second.
READ_TIMEOUT = 3600.0


class Served:
    """A server's answer: the results frame, the plan frame (or None), and the server's own seconds."""

    def __init__(self, reply: dict, rv: rendezvous.Rendezvous):
        self.frame = frame_from_json(reply["frame"])
        self.plan = frame_from_json(reply.get("plan"))
        self.seconds = float(reply.get("seconds", 0.0))
        self.rendezvous = rv


def call(store: str, endpoint: str, args: dict, *, say=None) -> Served | None:
    """POST args to the store's server; None when there is none to answer (say(reason) is told why)."""
    rv, why = rendezvous.find(store)
    if rv is None:
        if say is not None:
            say(f"{why}; running locally")
        return None
    try:
        status, reply = _post(rv, endpoint, args)
    except (OSError, http.client.HTTPException, ValueError) as e:
        if say is not None:
            say(f"server at {rv.url} (pid {rv.pid}) did not answer ({type(e).__name__}: {e}); running locally")
        return None
    if status == 400 and reply.get("type") in _USER_ERRORS:
        raise _USER_ERRORS[reply["type"]](reply.get("error", ""))
    if status != 200:
        if say is not None:
            say(f"server at {rv.url} answered {status} ({reply.get('error', '')}); running locally")
        return None
    served = Served(reply, rv)
    if say is not None:
        say(f"answered by saeembed serve at {rv.url} (pid {rv.pid}) in {served.seconds:.3f} s")
    return served


def _post(rv: rendezvous.Rendezvous, endpoint: str, args: dict) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(rv.host, rv.port, timeout=CONNECT_TIMEOUT)
    try:
        conn.connect()
        conn.sock.settimeout(READ_TIMEOUT)
        body = json.dumps(args).encode()
        conn.request("POST", f"/{endpoint}", body=body,
                     headers={"Content-Type": "application/json", TOKEN_HEADER: rv.token})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError("reply is not a JSON object")
    return resp.status, reply


# The typed errors a server may report, raised here as the same class (the CLI prints them as it would locally).
_USER_ERRORS = {name: cls for name, cls in vars(errors).items()
                if isinstance(cls, type) and issubclass(cls, errors.SaeembedError)}

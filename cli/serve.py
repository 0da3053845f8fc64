"""`saeembed serve`: keep the models warm for one store; `saeembed search`/`similar` on that store use it."""

from __future__ import annotations

import signal

import typer

from saeembed.cli import render
from saeembed.cli.options import StoreOpt, migrated


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def serve_cmd(
    store: str = StoreOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless --allow-remote)."),
    port: int = typer.Option(0, "--port", "-p", min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Allow a non-loopback --host. Every request still needs the token, which only "
                                      "the rendezvous file beside the store holds."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per request."),
):
    """Answer searches on the store from one warm process: the sentence model loads once, then
    `saeembed search` (and `similar`) on this store answer in well under a second.

    The server writes `<store>.serve.json` beside the store (port, pid and a token; readable by you only)
    and removes it on exit; the CLI finds it there, and runs locally when it cannot reach the server (`--no-server` forces that).
    The store is opened per request, so `encode`, `label` and the rest keep working beside it.
    Example: `saeembed serve --store demo.duckdb &` then `saeembed search "refund for a double charge" -c support_tickets --store demo.duckdb`.
    """
    from saeembed.serve.server import SearchServer, serve

    def log(endpoint: str, status: int, seconds: float, corpus) -> None:
        render.note(f"{render.safe(endpoint)} {render.safe(corpus)}: {status} in {seconds:.3f} s")

    def ready(server) -> None:
        render.note(f"[green]✓[/green] serving {render.safe(server.store)} at {render.safe(server.rendezvous.url)} "
                    f"(pid {server.rendezvous.pid}); search and similar on this store answer from here. Ctrl-C stops.")

    def stop(signum, frame):  # `kill PID` removes the rendezvous file too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server = SearchServer(migrated(store), host=host, port=port, allow_remote=allow_remote, log=None if quiet else log)
    render.note(f"loading the sentence model for {render.safe(store)} …")
    try:
        serve(server, ready=ready)
    except KeyboardInterrupt:
        render.note("stopped")

"""`saeembed browse`: serve the read-only feature browser on the loopback interface."""

from __future__ import annotations

from typing import Optional

import typer

from saeembed.cli import render

StoreOpt = typer.Option(
    "saeembed.duckdb", "--store", "-s", envvar="SAEEMBED_STORE", help="Store file (opened read-only).",
)


def browse(
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="Port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind. Default loopback only; anything else "
                             "exposes your documents to the network."),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE hash (prefix) when the store holds several."),
    store: str = StoreOpt,
):
    """Browse features in a local web page: search by label or density, exemplars, co-occurring features,
    which corpora use them. Read-only; Ctrl-C stops it."""
    from saeembed.report.browse import LOOPBACK, make_server

    with render.err_console.status("reading feature statistics…"):
        server = make_server(store, host=host, port=port, sae=sae)
    if host not in LOOPBACK:
        render.note(f"[yellow]warning:[/yellow] listening on {host}: anyone who can reach this machine can read the store")
    h, p = server.server_address[:2]
    render.note(f"[green]✓[/green] feature browser for {store} at [bold]http://{'127.0.0.1' if h == '127.0.0.1' else h}:{p}/[/bold] "
                "(read-only; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        render.note("stopped")
    finally:
        server.server_close()

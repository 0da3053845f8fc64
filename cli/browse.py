"""`saeembed browse`: serve the read-only feature browser on the loopback interface."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape

from saeembed.cli import render
from saeembed.cli.options import ReadStoreOpt, SaeOpt, migrated


def browse(
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="Port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind: a loopback address (127.0.0.1, ::1, "
                             "localhost). Anything else is refused unless --allow-remote."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host: anyone who can "
                                      "reach it reads every document in the store, without authentication."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
):
    """Browse features in a local web page: search by label or density (generic features hidden unless asked
    for), exemplars, co-occurring features; each document by its id, with one chosen feature's tokens
    highlighted. Read-only; Ctrl-C stops it."""
    from saeembed.report.browse import make_server

    with render.err_console.status("reading feature statistics…"):
        server = make_server(migrated(store), host=host, port=port, sae=sae, allow_remote=allow_remote)
    h, p = server.server_address[:2]
    shown = f"[{h}]" if ":" in h else h
    if allow_remote and not server.loopback:
        render.note(f"[bold red]WARNING: listening on {escape(shown)}:{p} (--allow-remote): anyone who can reach "
                    "this machine can read every document in the store; there is no authentication.[/bold red]")
    render.note(f"[green]✓[/green] feature browser for {escape(str(store))} at "
                f"[bold]http://{escape(shown)}:{p}/[/bold] (read-only; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        render.note("stopped")
    finally:
        server.server_close()

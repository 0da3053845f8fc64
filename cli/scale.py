"""`saeembed compact` and `saeembed shards`: look after the Parquet shards of large encodes."""

from __future__ import annotations

from typing import Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import CsvOpt, JsonOpt, ReadStoreOpt, StoreOpt, open_store


def register(app: typer.Typer) -> None:
    @app.command()
    def compact(
        corpus: Optional[str] = typer.Argument(None, help="Only this corpus (default: every corpus with shards)."),
        into: str = typer.Option("shard", "--into", help="shard: one sorted shard per encoding; table: move the rows into the store file."),
        store: str = StoreOpt,
        as_json: bool = JsonOpt,
        as_csv: bool = CsvOpt,
    ):
        """Merge the activation shards of each encoding (and remove files left by crashed runs)."""
        with open_store(store) as st:
            frame = st.compact(corpus, into=into)
        if frame.is_empty():
            if as_json:
                render.emit_json([])
            elif as_csv:
                render.emit_frame(frame, as_csv=True)
            else:
                render.note("nothing to compact: no activation shards"
                            + (f" for corpus {render.safe(corpus)}" if corpus else ""))
            return
        render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="compacted")

    @app.command("shards")
    def list_shards(
        corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus."),
        store: str = ReadStoreOpt,
        as_json: bool = JsonOpt,
        as_csv: bool = CsvOpt,
    ):
        """List the Parquet shards of the store's activations, and whether each is readable."""
        with open_store(store, read_only=True) as st:
            frame = st.shards(corpus)
        render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="activation shards")

"""`saeembed triggers CORPUS -f N`: the n-grams that carry a feature's activations."""

from __future__ import annotations

from typing import Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import CsvOpt, JsonOpt, ReadStoreOpt, SaeOpt, feature_ids, open_store, opt
from saeembed.config import TriggersConfig


def triggers(
    corpus: str = typer.Argument(..., help="Corpus to look in."),
    features: list[str] = typer.Option(..., "--feature", "-f", help="Feature id (repeatable or comma-separated)."),
    n: int = opt(TriggersConfig, "n", "--n"),
    top: int = opt(TriggersConfig, "top", "--top"),
    min_count: int = opt(TriggersConfig, "min_count", "--min-count"),
    recompute_docs: int = opt(TriggersConfig, "recompute_docs", "--recompute-docs"),
    device: str = typer.Option("cpu", "--device", help="Device for recomputing tokens when the corpus has no token rows."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Trigger phrases: for each feature, the token n-grams (the activating token with its neighbours)
    that carry its activations most often, with counts (activations, documents), share of its activations,
    background frequency in all the corpus's tokens and lift (share / background). Reads token rows
    (encode --keep-tokens); without them, recomputes the feature's top documents (a note says so).

    Example: `saeembed triggers support -f 812 --n 2`
    """
    from saeembed.analysis.triggers import triggers as find_triggers

    cfg = TriggersConfig(n=n, top=top, min_count=min_count, recompute_docs=recompute_docs)
    with open_store(store, read_only=True) as st:
        result = find_triggers(st, corpus, feature_ids(features), sae=sae, config=cfg, device=device)
    for note in result.notes:
        render.note(render.safe(note))
    render.emit_frame(result.frame, as_json=as_json, as_csv=as_csv, title=f"trigger {n}-grams ({result.source})")


def register(app: typer.Typer) -> None:
    from saeembed.cli.show import show

    app.command()(triggers)
    app.command()(show)

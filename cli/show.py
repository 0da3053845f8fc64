"""`saeembed show DOC_ID -c CORPUS [-f N …]`: one document with the tokens where features fire marked."""

from __future__ import annotations

from typing import Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import ReadStoreOpt, ResultJsonOpt, SaeOpt, feature_ids, open_store


def show(
    doc_id: str = typer.Argument(..., help="The document's id (as ingested)."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus holding the document."),
    features: Optional[list[str]] = typer.Option(None, "--feature", "-f", help="Mark where this feature fires (repeatable or comma-separated)."),
    top: int = typer.Option(10, "--top", "-n", help="Without -f: how many of the document's strongest features to list."),
    device: str = typer.Option("cpu", "--device", help="Device for recomputing tokens when the corpus has no token rows."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
    as_json: bool = ResultJsonOpt,
):
    """Show a document with the tokens where feature N fires marked «token»(value); --json gives the spans
    (feature, token_index, start, end, token, value). Tokens come from the stored token rows (encode
    --keep-tokens) or are recomputed with the model (a note says which). Without -f: the document's top
    features with their labels.

    Example: `saeembed show ticket-17 -c support -f 812 -f 95`
    """
    from saeembed.analysis.doc_view import mark_spans, show_document

    feats = feature_ids(features)
    with open_store(store, read_only=True) as st:
        view = show_document(st, corpus, doc_id, feats or None, sae=sae, top=top, device=device)
    if as_json:
        render.emit_json(view.to_dict())
        return
    for n in view.notes:
        render.note(render.safe(n))
    if view.top is not None:
        render.console.print(render.safe(view.text, newlines=True), soft_wrap=True)
        render.emit_frame(view.top, title=f"top features of {view.doc_id}")
        return
    render.note(f"tokens from {view.source}")
    render.console.print(render.safe(mark_spans(view.text, view.spans, with_feature=len(feats) > 1), newlines=True),
                         soft_wrap=True, markup=False)

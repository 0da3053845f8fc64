"""`saeembed search` and `saeembed similar`: thin wrappers over saeembed.analysis.retrieve."""

from __future__ import annotations

from typing import List, Optional

import typer
from saeembed.cli import render
from saeembed.cli.options import CsvOpt, JsonOpt, ReadStoreOpt, SaeOpt, StoreOpt, open_store, opt
from saeembed.config import PoolConfig

NoServerOpt = typer.Option(False, "--no-server", help="Run here even when `saeembed serve` runs for the store.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Say on stderr whether `saeembed serve` answered, and why not.")


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("similar")(similar_cmd)


def search_cmd(
    query: Optional[str] = typer.Argument(None, help="What the documents should have, e.g. \"mentions a specific date\"."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus to search."),
    top: int = typer.Option(20, "--top", "-n", help="How many documents."),
    feature: List[str] = typer.Option(
        [], "--feature", "-f", help="Score with this feature (repeatable); FEATURE:WEIGHT sets its weight (negative penalises)."
    ),
    not_feature: List[int] = typer.Option([], "--not-feature", help="Leave out documents where this feature fires (repeatable)."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="Metadata filter, e.g. \"lang = 'en' and n_chars < 2000\"."),
    explain: bool = typer.Option(False, "--explain", help="Show which features were chosen for the query and why."),
    dense: bool = typer.Option(False, "--dense", help="Search by sentence embeddings (FAISS) instead of SAE features."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Fuse SAE and dense rankings (reciprocal-rank fusion, the SAE ranking counting twice); the default for a query text."),
    sae_only: bool = typer.Option(False, "--sae-only", help="SAE features only, no dense fusion (the default when only --feature is given)."),
    length_control: str = typer.Option("residual", "--length-control", help="residual, zscore or off: rank by how far a document's SAE score exceeds what documents of its token length score anyway."),
    n_features: int = typer.Option(30, "--n-features", help="How many features a query is mapped to."),
    match: str = typer.Option("auto", "--match", help="Query-to-feature matcher: auto, describe (labels/exemplars), prf (pseudo-relevance feedback), or a registered one."),
    pool: str = opt(PoolConfig, "pool", "--pool"),
    sae: Optional[str] = SaeOpt,
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
    no_server: bool = NoServerOpt,
    verbose: bool = VerboseOpt,
):
    """Find documents with a property: a query mapped to SAE features, or features given directly.

    Examples: `saeembed search "mentions a specific date" -c news --top 20 --explain`;
    `saeembed search -c news -f 123 -f 456:0.5 --not-feature 789 --where "source = 'web'"`;
    `saeembed search "angry customer" -c support --hybrid`. With `saeembed serve` running for the store,
    the search is answered there (warm model: well under a second).
    """
    if dense + hybrid + sae_only > 1:
        raise typer.BadParameter("use one of --dense, --hybrid and --sae-only")
    if dense and feature:
        raise typer.BadParameter("--feature does not apply to --dense (sentence-embedding) search")
    mode = "dense" if dense else "hybrid" if hybrid else "sae" if sae_only else None  # None: hybrid for a query text
    args = dict(mode=mode, feature=list(feature), not_feature=list(not_feature), where=where, top=top,
                n_features=n_features, match=match, sae=sae, length_control=length_control)
    served = None if no_server or pool != "max" else _served(store, "search", dict(corpus=corpus, query=query, **args), verbose)
    if served is not None:
        frame, plan = served.frame, served.plan
    else:
        from saeembed.analysis.search_plan import planned_search

        with open_store(store) as st:  # writable: feature and dense embeddings are cached on first use
            from saeembed.analysis.pooling import use_pool

            pool_note = use_pool(st, [corpus], pool, sae=sae)
            if pool_note:
                render.note(render.safe(pool_note))
            with render.embedding_progress(enabled=not (as_json or as_csv)) as bar:
                frame, plan = planned_search(st, corpus, query, progress=bar, **args)
    if explain and plan is not None:
        if as_json or as_csv:  # keep stdout machine-readable
            render.emit_frame(plan, title="features searched for", stderr=True)
        else:
            render.emit_frame(plan, title="features searched for")
    if frame.is_empty():
        what = "the query" if mode == "dense" else "none of the chosen features fire"
        render.note(f"no documents found in {render.safe(repr(corpus))}"
                    + (f" where {render.safe(where)}" if where else "") + f": {what}"
                    + ("" if mode == "dense" else "; try --explain, other --feature ids, or --dense"))
    if as_json or as_csv:
        out = frame.drop("doc_idx") if as_json else frame.drop("doc_idx", "matched")
        render.emit_frame(out, as_json=as_json, as_csv=as_csv and not as_json)
        return
    if frame.is_empty():
        return
    show = frame.select("rank", "doc_id", "score", "features", "snippet")
    shown = mode or ("hybrid" if query else "sae")
    render.emit_frame(show, title=f"{shown} search in {corpus}")


def similar_cmd(
    doc_id: str = typer.Argument(..., help="Id of the document to start from."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus holding the document (and searched)."),
    top: int = typer.Option(10, "--top", "-n", help="How many documents."),
    feature: List[int] = typer.Option([], "--feature", "-f", help="Compare on these features only (repeatable)."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="Only documents matching this metadata filter."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
    no_server: bool = NoServerOpt,
    verbose: bool = VerboseOpt,
):
    """Nearest documents to DOC_ID by SAE embedding (cosine), optionally on chosen features only."""
    args = dict(features=list(feature) or None, where=where, top=top, sae=sae)
    served = None if no_server else _served(store, "similar", dict(corpus=corpus, doc_id=doc_id, **args), verbose)
    if served is not None:
        frame = served.frame
    else:
        from saeembed.analysis.retrieve import similar

        with open_store(store, read_only=True) as st:
            frame = similar(st, corpus, doc_id, **args)
    if frame.is_empty():
        render.note(f"no document in {render.safe(repr(corpus))} shares an active feature with "
                    f"{render.safe(repr(doc_id))}" + (f" where {render.safe(where)}" if where else ""))
    if as_json or as_csv:
        render.emit_frame(frame.drop("doc_idx"), as_json=as_json, as_csv=as_csv and not as_json)
        return
    if not frame.is_empty():
        render.emit_frame(frame.drop("doc_idx"), title=f"nearest to {doc_id} in {corpus}")


def _served(store: str, endpoint: str, args: dict, verbose: bool):
    """The answer of `saeembed serve` for this store, or None to run here (see saeembed.serve.client)."""
    from saeembed.serve.client import call

    return call(store, endpoint, args, say=(lambda m: render.note(render.safe(m))) if verbose else None)

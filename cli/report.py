"""`saeembed report ...`: analyses as self-contained HTML pages (plots inline, nothing fetched when opened).

Each subcommand: read the analysis result, build its page with saeembed.report.<x>_page, write it
atomically, and finish with one summary line naming the file. The analysis itself lives in the library.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import (AxisOpt, BinaryOpt, ClusterFeaturesOpt, ClusterSeedOpt, ClusterWhereOpt,
                                  DedupeOpt, DedupeSeedOpt, DropFeatureOpt, DropOpt, KeepOpt, KOpt, MinClusterSizeOpt,
                                  MinSamplesOpt, NFeaturesOpt, QualityDropOpt, QualityLabelOpt, QualityModelOpt,
                                  QualityNameOpt, QualityPositiveOpt, filter_spec)

app = typer.Typer(
    help=(
        "Write an analysis as one self-contained HTML file (inline plots, no network assets; opens offline "
        "and can be mailed to a colleague).\n\n"
        "Subcommands: features, diff, correlate, cluster, search, classify, filter.\n\n"
        "Example: `saeembed report diff support_tickets product_reviews --out diff.html`."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

StoreOpt = typer.Option(
    "saeembed.duckdb", "--store", "-s", envvar="SAEEMBED_STORE", help="Store file (created when missing).",
)
JsonOpt = typer.Option(False, "--json", help="Print a JSON summary (out, bytes, counts) instead of a line.")
SaeOpt = typer.Option(None, "--sae", help="SAE hash (prefix) when the store holds several.")
ExemplarsOpt = typer.Option(3, "--exemplars", help="Exemplars shown per feature (and per side for a diff).")


def out_option(default: str):
    return typer.Option(Path(default), "--out", "-o", help=f"HTML file to write (default {default}).")


@contextmanager
def steps(total: int, enabled: bool = True):
    """A small progress bar over a report's stages; yields advance(description)."""
    if not (enabled and render.err_console.is_terminal):  # no bar (nor its blank line) in pipes and logs
        yield lambda description: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=render.err_console, transient=True) as bar:
        task = bar.add_task("report", total=total)

        def advance(description: str) -> None:
            bar.update(task, advance=1, description=description)

        yield advance


def finish(path: Path, what: str, counts: dict, as_json: bool) -> None:
    """The one summary line (or JSON object) every report command ends with."""
    size = path.stat().st_size
    if as_json:
        render.emit_json({"out": str(path), "bytes": size, "report": what, **counts})
        return
    detail = ", ".join(f"{v} {k}" for k, v in counts.items())
    render.note(f"[green]✓[/green] wrote {what} report ({detail}; {size / 1024:,.0f} KB) to [bold]{path}[/bold]")


@app.command("features")
def features_cmd(
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus (default: all encoded with the SAE)."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="How many features."),
    by: str = typer.Option("docs", "--by", help="Rank by docs (how many documents fire), max or mean activation."),
    exemplars: int = ExemplarsOpt,
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("features.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Top features of a corpus: ranked bars of document frequency, labels, exemplars with the activating token shaded."""
    from saeembed.report import features_page, write_report
    from saeembed.report.data import exemplar_windows, provenance
    from saeembed.store import Store

    with Store(store, read_only=True) as st, steps(3, not as_json) as advance:
        frame = st.feature_summary(corpus, sae=sae, top=top, order_by=by)
        info = st.encoded_sae(corpus, sae) if corpus else st._only_sae(sae)
        advance("exemplars")
        ex = exemplar_windows(st, info.sae_key, frame["feature"].to_list(), corpus=corpus, per_feature=exemplars)
        corpora = [corpus] if corpus else st.query(
            "SELECT c.name FROM encodings e JOIN corpora c USING (corpus_id) WHERE e.sae_key = ? ORDER BY c.name",
            [info.sae_key])["name"].to_list()
        prov = provenance(st, info, analysis="features", params={"corpus": corpus, "top": top, "by": by,
                                                                  "exemplars": exemplars}, corpora=corpora)
        advance("page")
        title = f"Top features of {corpus}" if corpus else "Top features"
        path = write_report(features_page(frame, prov, exemplars=ex, title=title), out)
        advance("written")
    finish(path, "features", {"features": frame.height, "exemplars": ex.height}, as_json)


@app.command("diff")
def diff_cmd(
    a: str = typer.Argument(..., help="Corpus A."),
    b: Optional[str] = typer.Argument(None, help="Corpus B. Omit to compare --where against --vs (or the rest) of A."),
    where: Optional[str] = typer.Option(None, "--where", help="Filter for side A, e.g. \"source = 'web'\"."),
    vs: Optional[str] = typer.Option(None, "--vs", help="Filter for side B (default: all of B, or the rest of A)."),
    paired_on: Optional[str] = typer.Option(None, "--paired-on", help="Column pairing A and B documents: McNemar's test."),
    length_control: str = typer.Option("auto", "--length-control", help="on, off or auto (rank within token-length strata)."),
    keep_generic: bool = typer.Option(False, "--keep-generic", help="Keep features that fire on nearly everything."),
    top: int = typer.Option(20, "--top", "-n", min=1, help="Features per side in the charts."),
    exemplars: int = typer.Option(2, "--exemplars", help="Exemplars per feature and side."),
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("diff.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """How two corpora (or two slices of one) differ: features more frequent on each side (paired bars),
    p/q-values, the length difference, exemplars from both sides with the activating token shaded."""
    import numpy as np
    import polars as pl

    from saeembed.analysis.diff import DiffConfig, diff
    from saeembed.analysis.selection import Selection, select
    from saeembed.errors import InputError
    from saeembed.report import diff_page, write_report
    from saeembed.report.data import provenance, selection_windows
    from saeembed.report.pages import diff_sides
    from saeembed.store import Store

    if b is None and not where:
        raise InputError("give a second corpus, or --where (and optionally --vs) to compare slices of one")
    cfg = DiffConfig(length_control=length_control, keep_generic=keep_generic, exemplars=1, top=None)
    with Store(store, read_only=True) as st, steps(3, not as_json) as advance:
        sa = select(st, a, where=where, sae=sae)
        if b is not None:
            sb = select(st, b, where=vs, sae=sae)
        elif vs is not None:
            sb = select(st, a, where=vs, sae=sae)
        else:
            rest = np.setdiff1d(select(st, a, sae=sae).doc_idx, sa.doc_idx)
            sb = Selection(sa.corpus, sa.sae, rest, f"{a} not ({where})")
        result = diff(st, sa, sb, paired_on=paired_on, config=cfg)
        advance("exemplars")
        frame = result.frame
        more_a, more_b = diff_sides(frame, result.summary, top)
        shown = more_a["feature"].to_list() + more_b["feature"].to_list()

        ex = pl.concat([selection_windows(st, sa, shown, per_feature=exemplars).with_columns(side=pl.lit("a")),
                        selection_windows(st, sb, shown, per_feature=exemplars).with_columns(side=pl.lit("b"))])
        prov = provenance(st, sa.sae, analysis="diff", corpora=sorted({sa.corpus.name, sb.corpus.name}), params={
            "a": sa.name, "b": sb.name, "where": where, "vs": vs, "paired_on": paired_on,
            "length_control": length_control, "keep_generic": keep_generic, "top": top, "test": result.summary.get("test")})
        advance("page")
        path = write_report(diff_page(frame, result.summary, prov, exemplars=ex, top=top), out)
        advance("written")
    finish(path, "diff", {"features": len(shown), "significant_q05": result.summary.get("significant_q05", 0),
                          "exemplars": ex.height}, as_json)


@app.command("correlate")
def correlate_cmd(
    corpus: str = typer.Argument(..., help="Corpus to mine."),
    where: Optional[str] = typer.Option(None, "--where", help="Only documents matching this filter."),
    min_support: float = typer.Option(0.001, "--min-support", help="A feature must fire in at least this share of documents."),
    min_docs: int = typer.Option(5, "--min-docs", help="...and in at least this many documents (pairs too)."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="Pairs listed (strongest and unexpected)."),
    keep_generic: bool = typer.Option(False, "--keep-generic", help="Keep features that fire on nearly every document or on random tokens."),
    sae_weights: Optional[str] = typer.Option(None, "--sae-weights", help="SAE weights for decoder directions, when the store's recorded source is gone."),
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("correlate.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Which features fire together: an NPMI heatmap of the strongest pairs, unexpected pairs outlined."""
    from saeembed.analysis.correlate import CorrelateConfig, correlate
    from saeembed.report import correlate_page, write_report
    from saeembed.report.data import provenance
    from saeembed.store import Store

    cfg = CorrelateConfig(min_support=min_support, min_docs=min_docs, min_pair_docs=min_docs, top=top,
                          keep_generic=keep_generic)
    with Store(store, read_only=True) as st, steps(2, not as_json) as advance:
        r = correlate(st, corpus, where=where, sae=sae, sae_weights=sae_weights, config=cfg)
        info = st.encoded_sae(corpus, sae)
        prov = provenance(st, info, analysis="correlate", corpora=[corpus], params={
            "where": where, "min_support": min_support, "min_docs": min_docs, "top": top})
        advance("page")
        path = write_report(correlate_page(r.pairs, prov, unexpected=r.unexpected, summary=r.summary, top=top), out)
        advance("written")
    finish(path, "correlate", {"pairs": r.pairs.height, "unexpected": r.unexpected.height}, as_json)


@app.command("cluster")
def cluster_cmd(
    corpus: Optional[str] = typer.Argument(None, help="Corpus to cluster (omit with --saved)."),
    saved: Optional[str] = typer.Option(None, "--saved", help="Report this clustering saved by `saeembed cluster` (see `saeembed clusterings`) instead of clustering now."),
    axis: Optional[str] = AxisOpt,
    features: List[int] = ClusterFeaturesOpt,
    k: Optional[int] = KOpt,
    n_features: int = NFeaturesOpt,
    min_cluster_size: Optional[int] = MinClusterSizeOpt,
    min_samples: Optional[int] = MinSamplesOpt,
    where: Optional[str] = ClusterWhereOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Also save the clustering under this name (usable as --where \"cluster.NAME = 3\"); without it nothing is stored."),
    seed: int = ClusterSeedOpt,
    binary: bool = BinaryOpt,
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("cluster.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Clusters of a corpus: a 2-D map of documents coloured by cluster (noise grey), and each cluster's
    over-represented features. Clusters now (same steering as `saeembed cluster`) or reads a saved clustering.

    Examples: `saeembed report cluster support --axis "writing style"`; `saeembed report cluster --saved support_style`.
    """
    import polars as pl

    from saeembed.analysis.cluster import ClusterConfig, cluster
    from saeembed.errors import InputError
    from saeembed.report import cluster_page, write_report
    from saeembed.report.data import cluster_map, provenance, saved_clustering
    from saeembed.store import Store

    if saved is not None:
        given = [opt for opt, v in (("--axis", axis), ("--features", features), ("--k", k), ("--where", where),
                                    ("--name", name), ("--min-cluster-size", min_cluster_size), ("--binary", binary)) if v]
        if given:
            raise InputError(f"--saved reports a stored clustering as it is; drop {', '.join(given)}")
    elif corpus is None:
        raise InputError("name a corpus to cluster, or --saved NAME for a stored clustering")
    cfg = ClusterConfig(k=k, n_features=n_features, min_cluster_size=min_cluster_size, min_samples=min_samples,
                        seed=seed, binary=binary)
    # Writable only when something is stored: the saved clustering, or the axis's feature embeddings cache.
    with Store(store, read_only=saved is not None or not (axis or name)) as st, steps(3, not as_json) as advance:
        if saved is not None:
            sel, result = saved_clustering(st, saved)
            if corpus is not None and corpus != sel.corpus.name:
                raise InputError(f"clustering {saved!r} is of corpus {sel.corpus.name!r}, not {corpus!r}")
        else:
            result = cluster(st, corpus, axis=axis, features=features or None, where=where, sae=sae, name=name,
                             save=name is not None, config=cfg)
            sel = None
        info = st.corpus(result.params.get("corpus") or corpus) if sel is None else sel.corpus
        sae_info = sel.sae if sel is not None else st.encoded_sae(info, sae)
        advance("map")
        docs = cluster_map(st, info, result.assignments)
        n_clusters = int(result.assignments.filter(pl.col("cluster") >= 0)["cluster"].n_unique())
        summary = {"noise": result.n_noise}
        if result.n_empty:
            summary["without any chosen feature (noise)"] = result.n_empty
        summary["features clustered on"] = result.features.height or "all (SVD)"
        found = result.params.get("axis_found")
        if found:  # the full reason is in the provenance footer (params)
            summary["axis"] = (f"{found['number']} of {found['of']} ({found['kind']})" if found["number"]
                               else "none stands out: matched to descriptions")
        summary["method"] = result.params.get("method")
        params = {"name": result.name, "saved": saved is not None or name is not None,
                  **{k_: v for k_, v in result.params.items() if k_ not in ("corpus",)}}
        prov = provenance(st, sae_info, analysis="cluster", params=params, corpora=[info.name])
        advance("page")
        path = write_report(cluster_page(docs, result.descriptions, prov, summary=summary), out)
        advance("written")
    finish(path, "cluster", {"documents": docs.height, "clusters": n_clusters, "noise": result.n_noise}, as_json)


@app.command("search")
def search_cmd(
    query: Optional[str] = typer.Argument(None, help="What the documents should have, e.g. \"mentions a specific date\"."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus to search."),
    top: int = typer.Option(20, "--top", "-n", min=1, help="How many documents."),
    feature: List[str] = typer.Option([], "--feature", "-f", help="Score with this feature (repeatable); FEATURE:WEIGHT sets its weight (negative penalises)."),
    not_feature: List[int] = typer.Option([], "--not-feature", help="Drop documents where this feature fires (repeatable)."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="Metadata filter, e.g. \"lang = 'en' and n_chars < 2000\"."),
    dense: bool = typer.Option(False, "--dense", help="Search by sentence embeddings (FAISS) instead of SAE features."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Fuse SAE and dense rankings (reciprocal-rank fusion)."),
    n_features: int = typer.Option(30, "--n-features", help="How many features a query is mapped to."),
    match: str = typer.Option("auto", "--match", help="Query-to-feature matcher: auto, describe, prf, or a registered one."),
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("search.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Search results as a page: scores as bars, each hit with the features that matched it and its
    snippet with the matched spans shaded.

    Example: `saeembed report search "mentions a specific date" -c news --out search.html`.
    """
    from saeembed.cli.search import planned_search
    from saeembed.errors import InputError
    from saeembed.report import search_page, write_report
    from saeembed.report.data import provenance, search_rows
    from saeembed.store import Store

    if dense and hybrid:
        raise InputError("use --dense or --hybrid, not both")
    if dense and feature:
        raise InputError("--feature does not apply to --dense (sentence-embedding) search")
    mode = "dense" if dense else "hybrid" if hybrid else "sae"
    with Store(store) as st, steps(3, not as_json) as advance:  # writable: feature / dense embeddings are cached
        frame, plan = planned_search(st, corpus, query, mode=mode, feature=feature, not_feature=not_feature,
                                     where=where, top=top, n_features=n_features, match=match, sae=sae)
        if frame.is_empty():
            what = "the query" if mode == "dense" else "none of the chosen features fire"
            raise InputError(f"no documents found in {corpus!r}" + (f" where {where}" if where else "")
                             + f": {what}; nothing written")
        advance("page")
        rows = search_rows(frame.drop("doc_idx"))
        prov = provenance(st, st.encoded_sae(corpus, sae), analysis="search", corpora=[corpus], params={
            "query": query, "features": list(feature), "not_features": list(not_feature), "where": where, "top": top,
            "mode": mode, "match": match if query and mode != "dense" else None,
            "searched_features": plan["feature"].to_list() if plan is not None else None})
        title = query or ("features " + ", ".join(feature) if feature else None)
        path = write_report(search_page(rows, prov, query=title), out)
        advance("written")
    matched = int((rows["matched_features"].list.len() > 0).sum()) if "matched_features" in rows.columns else 0
    finish(path, "search", {"results": rows.height, "with_matched_features": matched}, as_json)


@app.command("classify")
def classify_cmd(
    name: str = typer.Argument(..., help="Saved classifier (see `saeembed classify list`)."),
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Labelled, encoded corpus to evaluate on (default: the held-out split saved at training)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", "-l", help="With --corpus: the column holding the true classes."),
    baseline: Optional[List[str]] = typer.Option(None, "--baseline", "-b", help="With --corpus: also evaluate a baseline (dense or tfidf) trained on the classifier's training rows. Repeatable."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="With --corpus: only documents matching this filter."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="Weighted features shown."),
    out: Path = out_option("classify.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """A classifier as a page: its precision-recall curve, metrics, and the most heavily weighted features
    (signed, with labels). Evaluated on its saved held-out split, or on --corpus/--label-column.

    Examples: `saeembed report classify toxicity`; `saeembed report classify toxicity -c tox2 -l toxic`.
    """
    from saeembed.errors import InputError
    from saeembed.report import classify_page, write_report
    from saeembed.report.data import classifier_report, provenance
    from saeembed.store import Store

    if corpus is None and (baseline or where):
        raise InputError("--baseline and --where apply to an evaluation on --corpus with --label-column")
    with Store(store, read_only=corpus is None) as st, steps(3, not as_json) as advance:
        r = classifier_report(st, name, corpus=corpus, label_column=label_column, where=where,
                              baselines=baseline or [])
        advance("page")
        clf = r["saved"]
        trained_on = clf.provenance.get("corpus")
        corpora = [c for c in dict.fromkeys([trained_on, corpus]) if c and st.has_corpus(c)]
        prov = provenance(st, clf.sae, analysis="classify", corpora=corpora, params={
            "name": name, "kind": clf.kind, "trained_on": trained_on,
            "label_column": label_column or clf.params.get("label_column"), "evaluated_on": r["metrics"]["evaluated on"],
            "where": where, "baselines": list(baseline or []), "top": top})
        page_html = classify_page(r["curve"], r["metrics"], r["weights"], prov, top=top)
        path = write_report(page_html, out)
        advance("written")
    finish(path, "classify", {"documents": r["metrics"].get("n", 0), "curve_points": r["curve"].height,
                              "features": min(top, r["weights"].height)}, as_json)


@app.command("filter")
def filter_cmd(
    corpus: str = typer.Argument(..., help="Corpus to clean (ingested; encoded when a rule needs SAE features)."),
    drop: Optional[List[str]] = DropOpt,
    keep: Optional[List[str]] = KeepOpt,
    drop_feature: Optional[List[int]] = DropFeatureOpt,
    dedupe: Optional[float] = DedupeOpt,
    quality_model: Optional[str] = QualityModelOpt,
    quality_label: Optional[str] = QualityLabelOpt,
    quality_positive: Optional[str] = QualityPositiveOpt,
    quality_name: str = QualityNameOpt,
    quality_drop: Optional[float] = QualityDropOpt,
    samples: int = typer.Option(3, "--samples", help="Sample dropped rows shown per rule."),
    sae: Optional[str] = SaeOpt,
    seed: int = DedupeSeedOpt,
    out: Path = out_option("filter.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """A filter dry run as a page (rules as in `saeembed filter`; no rows are written): rows dropped per
    rule, the features the dropped rows have in common, and sample dropped rows with those features shaded.

    Example: `saeembed report filter inst --drop "n_chars < 60" --dedupe 0.8 --out filter.html`.
    """
    import polars as pl

    from saeembed.analysis.filter import filter_corpus
    from saeembed.errors import InputError, StoreError
    from saeembed.report import filter_page, write_report
    from saeembed.report.data import marked_samples, provenance
    from saeembed.store import Store

    if not (drop or keep or drop_feature or dedupe is not None or quality_drop is not None):
        raise InputError("give at least one rule: --drop, --keep, --drop-feature, --dedupe or --quality-drop")
    spec = filter_spec(drop=drop, keep=keep, drop_feature=drop_feature, dedupe=dedupe, quality_model=quality_model,
                       quality_label=quality_label, quality_positive=quality_positive, quality_name=quality_name,
                       quality_drop=quality_drop, sae=sae, seed=seed)
    with Store(store) as st, steps(3, not as_json) as advance:  # writable: scores / a quality model may be stored
        res = filter_corpus(st, corpus, spec, samples_per_rule=samples)
        advance("samples")
        info = st.corpus(corpus)
        try:
            sae_info = st.encoded_sae(info, sae)
        except StoreError:  # metadata-only rules on a corpus not encoded
            sae_info = None
        feats = res.features["feature"].to_list() if res.features is not None else []
        shown = marked_samples(st, info, sae_info, res.samples, res.dropped, feats)
        rule_counts = res.rules.select("rule", pl.col("matched").alias("count"), "dropped", "only_this")
        summary = {"documents": res.n_docs, "kept": int(len(res.kept)), "dropped": res.dropped.height,
                   "dropped share": f"{res.dropped.height / max(res.n_docs, 1):.1%}"}
        if res.quality:
            summary |= {f"quality {k}": v for k, v in res.quality.items() if k in ("name", "auroc", "n_train")}
        params = {k: v for k, v in spec.__dict__.items() if v not in (None, [])}
        if not quality_label:
            params.pop("quality_name", None)
        prov = provenance(st, sae_info, analysis="filter", corpora=[corpus],
                          params=params | {"samples": samples, "dry_run": True})
        advance("page")
        path = write_report(filter_page(rule_counts, res.features, shown, prov, summary=summary), out)
        advance("written")
    finish(path, "filter", {"documents": res.n_docs, "kept": int(len(res.kept)), "dropped": res.dropped.height,
                            "rules": res.rules.height, "samples": 0 if shown is None else shown.height}, as_json)

"""`saeembed report ...`: analyses as self-contained HTML pages (plots inline, nothing fetched when opened).

Each subcommand parses its options, calls one saeembed.report.build function (which runs the analysis and
builds the page), writes the page atomically and finishes with one summary line naming the file by its
absolute path. --out is required: a page is never dropped silently into the current folder.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import (AxisOpt, BinaryOpt, ClusterFeaturesOpt, ClusterSeedOpt, ClusterWhereOpt,
                                  DedupeOpt, DedupeSeedOpt, DropFeatureOpt, DropOpt, KeepOpt, KeepShortOpt, KOpt,
                                  MinClusterSizeOpt, MinSamplesOpt, NFeaturesOpt, QualityDropOpt, QualityLabelOpt,
                                  QualityModelOpt, QualityNameOpt, QualityPositiveOpt, ReadStoreOpt, SaeOpt, StoreOpt,
                                  feature_ids, filter_spec, json_opt, migrated, opt)
from saeembed.config import CorrelateConfig, DiffConfig, FeaturesConfig
from saeembed.errors import InputError

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

JsonOpt = json_opt("Print a JSON summary (out, bytes, counts) instead of a line.")
ExemplarsOpt = typer.Option(3, "--exemplars", help="Exemplars shown per feature (and per side for a diff).")


def out_option(example: str):
    return typer.Option(None, "--out", "-o", help=f"HTML file to write, e.g. {example} (required).")


def need_out(out: Path | None, command: str, example: str) -> Path:
    """--out, checked before any work: without it nothing is written (one line saying what to add)."""
    if out is None:
        raise InputError(f"saeembed report {command} needs --out FILE.html, the page to write (e.g. --out {example})")
    return out


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
            bar.update(task, advance=1, description=render.safe(description))

        yield advance


def finish(path: Path, report, as_json: bool) -> None:
    """The one summary line (or JSON object) every report command ends with."""
    what, counts = report.kind, report.counts
    path = Path(path).resolve()
    size = path.stat().st_size
    if as_json:
        render.emit_json({"out": str(path), "bytes": size, "report": what, **counts})
        return
    detail = render.safe(", ".join(f"{v} {k}" for k, v in counts.items()))
    render.note(f"[green]✓[/green] wrote {render.safe(what)} report ({detail}; {size / 1024:,.0f} KB) to "
                f"[bold]{render.safe(path)}[/bold]")


@app.command("features")
def features_cmd(
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus (default: all encoded with the SAE)."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="How many features."),
    by: str = typer.Option("docs", "--by", help="Rank by docs (how many documents fire), max or mean activation."),
    exemplars: int = ExemplarsOpt,
    keep_generic: bool = opt(FeaturesConfig, "keep_generic", "--keep-generic"),
    sae: Optional[str] = SaeOpt,
    out: Optional[Path] = out_option("features.html"),
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
):
    """Top features of a corpus: ranked bars of document frequency, labels, exemplars with the activating token shaded."""
    need_out(out, "features", "features.html")

    from saeembed.report.build import build_features_report

    with steps(3, not as_json) as advance:
        report = build_features_report(migrated(store), corpus, top=top, by=by, exemplars=exemplars, sae=sae,
                                       keep_generic=keep_generic, progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)


@app.command("diff")
def diff_cmd(
    a: str = typer.Argument(..., help="Corpus A."),
    b: Optional[str] = typer.Argument(None, help="Corpus B. Omit to compare --where against --vs (or the rest) of A."),
    where: Optional[str] = typer.Option(None, "--where", help="Filter for side A, e.g. \"source = 'web'\"."),
    vs: Optional[str] = typer.Option(None, "--vs", help="Filter for side B (default: all of B, or the rest of A)."),
    paired_on: Optional[str] = typer.Option(None, "--paired-on", help="Column pairing A and B documents: McNemar's test."),
    length_control: str = opt(DiffConfig, "length_control", "--length-control"),
    keep_generic: bool = opt(DiffConfig, "keep_generic", "--keep-generic"),
    group_column: Optional[str] = opt(DiffConfig, "group_column", "--group-column"),
    separability: bool = opt(DiffConfig, "separability", "--separability/--no-separability"),
    top: int = typer.Option(20, "--top", "-n", min=1, help="Features per side in the charts."),
    exemplars: int = typer.Option(2, "--exemplars", help="Exemplars per feature and side."),
    sae: Optional[str] = SaeOpt,
    out: Optional[Path] = out_option("diff.html"),
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
):
    """How two corpora (or two slices of one) differ: features more frequent on each side (paired bars),
    p/q-values, the length difference, exemplars from both sides with the activating token shaded."""
    need_out(out, "diff", "diff.html")

    from saeembed.report.build import build_diff_report

    with steps(3, not as_json) as advance:
        report = build_diff_report(migrated(store), a, b, where=where, vs=vs, paired_on=paired_on, length_control=length_control,
                                   keep_generic=keep_generic, group_column=group_column, separability=separability,
                                   top=top, exemplars=exemplars, sae=sae, progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)


@app.command("correlate")
def correlate_cmd(
    corpus: str = typer.Argument(..., help="Corpus to mine."),
    where: Optional[str] = typer.Option(None, "--where", help="Only documents matching this filter."),
    min_support: float = opt(CorrelateConfig, "min_support", "--min-support"),
    min_docs: int = opt(CorrelateConfig, "min_docs", "--min-docs"),
    min_pair_docs: int = opt(CorrelateConfig, "min_pair_docs", "--min-pair-docs"),
    top: int = typer.Option(30, "--top", "-n", min=1, help="Pairs listed (strongest and unexpected)."),
    keep_generic: bool = opt(CorrelateConfig, "keep_generic", "--keep-generic"),
    sae_weights: Optional[str] = typer.Option(None, "--sae-weights", help="SAE weights for decoder directions, when the store's recorded source is gone."),
    sae: Optional[str] = SaeOpt,
    out: Optional[Path] = out_option("correlate.html"),
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
):
    """Which features fire together: an NPMI heatmap of the strongest pairs, unexpected pairs outlined."""
    need_out(out, "correlate", "correlate.html")

    from saeembed.report.build import build_correlate_report

    with steps(2, not as_json) as advance:
        report = build_correlate_report(migrated(store), corpus, where=where, min_support=min_support, min_docs=min_docs,
                                        min_pair_docs=min_pair_docs, top=top, keep_generic=keep_generic, sae_weights=sae_weights, sae=sae,
                                        progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)


@app.command("cluster")
def cluster_cmd(
    corpus: Optional[str] = typer.Argument(None, help="Corpus to cluster (omit with --saved)."),
    saved: Optional[str] = typer.Option(None, "--saved", help="Report this clustering saved by `saeembed cluster` (see `saeembed clusterings`) instead of clustering now."),
    axis: Optional[str] = AxisOpt,
    features: List[str] = ClusterFeaturesOpt,
    k: Optional[int] = KOpt,
    n_features: Optional[int] = NFeaturesOpt,
    min_cluster_size: Optional[int] = MinClusterSizeOpt,
    min_samples: Optional[int] = MinSamplesOpt,
    where: Optional[str] = ClusterWhereOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Also save the clustering under this name (usable as --where \"cluster.NAME = 3\"); without it nothing is stored."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a clustering already saved under --name."),
    seed: int = ClusterSeedOpt,
    binary: bool = BinaryOpt,
    sae: Optional[str] = SaeOpt,
    out: Optional[Path] = out_option("cluster.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Clusters of a corpus: a 2-D map of documents coloured by cluster (noise grey), and each cluster's
    over-represented features. Clusters now (same steering as `saeembed cluster`) or reads a saved clustering.

    Examples: `saeembed report cluster support --axis "writing style"`; `saeembed report cluster --saved support_style`.
    """
    need_out(out, "cluster", "cluster.html")

    from saeembed.analysis.cluster import ClusterConfig
    from saeembed.report.build import build_cluster_report

    cfg = ClusterConfig(k=k, n_features=n_features, min_cluster_size=min_cluster_size, min_samples=min_samples,
                        seed=seed, binary=binary)
    with steps(3, not as_json) as advance:
        report = build_cluster_report(migrated(store), corpus, saved=saved, axis=axis, features=feature_ids(features), where=where,
                                      name=name, replace=replace, sae=sae, config=cfg, progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)


@app.command("search")
def search_cmd(
    query: Optional[str] = typer.Argument(None, help="What the documents should have, e.g. \"mentions a specific date\"."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Corpus to search."),
    top: int = typer.Option(20, "--top", "-n", min=1, help="How many documents."),
    feature: List[str] = typer.Option([], "--feature", "-f", help="Score with this feature (repeatable); FEATURE:WEIGHT sets its weight (negative penalises)."),
    not_feature: List[int] = typer.Option([], "--not-feature", help="Leave out documents where this feature fires (repeatable)."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="Metadata filter, e.g. \"lang = 'en' and n_chars < 2000\"."),
    dense: bool = typer.Option(False, "--dense", help="Search by sentence embeddings (FAISS) instead of SAE features."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Fuse SAE and dense rankings (reciprocal-rank fusion)."),
    n_features: int = typer.Option(30, "--n-features", help="How many features a query is mapped to."),
    match: str = typer.Option("auto", "--match", help="Query-to-feature matcher: auto, describe, prf, or a registered one."),
    sae: Optional[str] = SaeOpt,
    out: Optional[Path] = out_option("search.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Search results as a page: scores as bars, each hit with the features that matched it and its
    snippet with the matched spans shaded.

    Example: `saeembed report search "mentions a specific date" -c news --out search.html`.
    """
    need_out(out, "search", "search.html")

    from saeembed.report.build import build_search_report

    if dense and hybrid:
        raise InputError("use --dense or --hybrid, not both")
    mode = "dense" if dense else ("hybrid" if hybrid else None)  # None: hybrid for a query text
    with steps(3, not as_json) as advance:
        report = build_search_report(migrated(store), corpus, query, mode=mode, feature=feature, not_feature=not_feature,
                                     where=where, top=top, n_features=n_features, match=match, sae=sae,
                                     progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)


@app.command("classify")
def classify_cmd(
    name: str = typer.Argument(..., help="Saved classifier (see `saeembed classify list`)."),
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Labelled, encoded corpus to evaluate on (default: the held-out split saved at training)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", "-l", help="The column holding the true classes (with --corpus)."),
    baseline: Optional[List[str]] = typer.Option(None, "--baseline", "-b", help="Also evaluate a baseline (dense or tfidf) trained on the classifier's training rows (with --corpus). Repeatable."),
    where: Optional[str] = typer.Option(None, "--where", "-w", help="Only documents matching this filter (with --corpus)."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="Weighted features shown."),
    out: Optional[Path] = out_option("classify.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """A classifier as a page: its precision-recall curve, metrics, and the most heavily weighted features
    (signed, with labels). Evaluated on its saved held-out split, or on --corpus/--label-column.

    Examples: `saeembed report classify toxicity`; `saeembed report classify toxicity -c tox2 -l toxic`.
    """
    need_out(out, "classify", "classify.html")

    from saeembed.report.build import build_classify_report

    with steps(3, not as_json) as advance:
        report = build_classify_report(migrated(store), name, corpus=corpus, label_column=label_column,
                                       baselines=baseline or [], where=where, top=top, progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)


@app.command("filter")
def filter_cmd(
    corpus: str = typer.Argument(..., help="Corpus to clean (ingested; encoded when a rule needs SAE features)."),
    drop: Optional[List[str]] = DropOpt,
    keep: Optional[List[str]] = KeepOpt,
    keep_short: Optional[List[str]] = KeepShortOpt,
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
    out: Optional[Path] = out_option("filter.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """A filter dry run as a page (rules as in `saeembed filter`; no rows are written): rows dropped per
    rule, the features the dropped rows have in common, and sample dropped rows with those features shaded.

    Example: `saeembed report filter inst --drop "n_chars < 60" --dedupe 0.8 --out filter.html`.
    """
    need_out(out, "filter", "filter.html")

    from saeembed.report.build import build_filter_report

    spec = filter_spec(drop=drop, keep=keep, keep_short=keep_short, drop_feature=drop_feature, dedupe=dedupe,
                       quality_model=quality_model, quality_label=quality_label, quality_positive=quality_positive,
                       quality_name=quality_name, quality_drop=quality_drop, sae=sae, seed=seed)
    with steps(3, not as_json) as advance:
        report = build_filter_report(migrated(store), corpus, spec, samples=samples, progress=advance)
        path = report.write(out)
        advance("written")
    finish(path, report, as_json)

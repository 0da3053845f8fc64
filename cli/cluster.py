"""`saeembed cluster` and `saeembed clusterings`: thin wrappers over saeembed.analysis.cluster."""

from __future__ import annotations

from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.config import PoolConfig
from saeembed.errors import InputError
from saeembed.cli.options import (AxisMatchOpt, AxisOpt, BinaryOpt, ClusterFeaturesOpt, ClusterSeedOpt, ClusterWhereOpt, CsvOpt,
                                  JsonOpt, KOpt, MinClusterSizeOpt, MinSamplesOpt, NFeaturesOpt, ReadStoreOpt, SaeOpt, StoreOpt,
                                  feature_ids, open_store, opt)


def register(app: typer.Typer) -> None:
    app.command("cluster")(cluster_cmd)
    app.command("clusterings")(clusterings_cmd)
    app.command("axes")(axes_cmd)


def cluster_cmd(
    corpus: Optional[str] = typer.Argument(None, help="Corpus to cluster (omit with --saved)."),
    axis: Optional[str] = AxisOpt,
    features: List[str] = ClusterFeaturesOpt,
    k: Optional[int] = KOpt,
    match: str = AxisMatchOpt,
    n_features: Optional[int] = NFeaturesOpt,
    min_cluster_size: Optional[int] = MinClusterSizeOpt,
    min_samples: Optional[int] = MinSamplesOpt,
    where: Optional[str] = ClusterWhereOpt,
    name: Optional[str] = typer.Option(None, "--name", help="Save under this name (default CORPUS_AXIS); filter later with --where \"cluster.NAME = 3\"."),
    replace: bool = typer.Option(False, "--replace", "--overwrite", help="Overwrite a clustering already saved under the name (refused without it)."),
    no_save: bool = typer.Option(False, "--no-save", help="Do not store the assignments."),
    compare_column: Optional[str] = typer.Option(None, "--compare-column", metavar="COLUMN", help="Also crosstab the clusters against this metadata column (or cluster.NAME): purity, ARI, NMI."),
    saved: Optional[str] = typer.Option(None, "--saved", metavar="NAME", help="Compare the clustering saved as NAME (see `saeembed clusterings`) with --compare-column instead of clustering now."),
    seed: int = ClusterSeedOpt,
    binary: bool = BinaryOpt,
    pool: str = opt(PoolConfig, "pool", "--pool"),
    show_features: bool = typer.Option(False, "--explain", help="Also show which features were clustered on and why."),
    llm: Optional[str] = typer.Option(None, "--llm", help="An OpenAI-compatible model that names each cluster from its features and a few of its documents (offline: from its features' labels); key from $SAEEMBED_LLM_KEY or $OPENAI_API_KEY."),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="SAEEMBED_LLM_BASE_URL", help="OpenAI-compatible server for --llm."),
    sae: Optional[str] = SaeOpt,
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Cluster documents on the features of an axis (or given features, or all), describe each cluster
    by its over-represented features, and save the assignments + 2-D layout in the store.

    Examples: `saeembed cluster support --axis "writing style" --k 4`; `saeembed cluster support --axis 2`
    (axis 2 of `saeembed axes support`); `saeembed cluster support -f 12 -f 40 --k 4`;
    `saeembed cluster support --k 4 --compare-column channel` (crosstab, purity, ARI, NMI);
    `saeembed cluster --saved support_all --compare-column channel` (a saved clustering).
    With --compare-column, --csv writes the crosstab (else the assignments).
    """
    if saved is not None:
        given = [flag for flag, v in (("--axis", axis), ("--features", features), ("--k", k), ("--where", where),
                                      ("--name", name), ("--replace", replace), ("--no-save", no_save),
                                      ("--min-cluster-size", min_cluster_size), ("--binary", binary),
                                      ("--sae", sae), ("--llm", llm)) if v]
        if given:
            raise InputError(f"--saved compares a stored clustering as it is; drop {', '.join(given)}")
        if compare_column is None:
            raise InputError("--saved NAME needs --compare-column COLUMN (what to compare the clustering with)")
        _compare_saved(saved, corpus, compare_column, store, as_json, as_csv)
        return
    if corpus is None:
        raise InputError("name a corpus to cluster, or --saved NAME --compare-column COLUMN for a saved clustering")
    from saeembed.analysis.cluster import ClusterConfig, cluster

    cfg = ClusterConfig(k=k, n_features=n_features, min_cluster_size=min_cluster_size, min_samples=min_samples,
                        seed=seed, binary=binary, match=match)
    with open_store(store) as st, render.embedding_progress(enabled=not (as_json or as_csv)) as bar:
        from saeembed.analysis.pooling import use_pool

        pool_note = use_pool(st, [corpus], pool, sae=sae)
        if pool_note:
            render.note(render.safe(pool_note))
        client = None
        if llm:
            from saeembed.interp.llm import LLMClient, LLMConfig

            client = LLMClient(st, LLMConfig(model=llm, base_url=base_url))
        result = cluster(st, corpus, axis=axis, features=feature_ids(features) or None, where=where, sae=sae, name=name,
                         save=not no_save, replace=replace, compare_column=compare_column, config=cfg, progress=bar,
                         llm=client)
    if as_json:
        render.emit_json({
            "name": result.name, "saved": result.clustering_id is not None, "replaced": result.replaced,
            "n_docs": result.assignments.height,
            "n_clusters": int((result.clusters["cluster"] >= 0).sum()), "n_noise": result.n_noise,
            "noise_share": result.noise_share, "n_empty": result.n_empty, "axis": result.params.get("axis_found"),
            "features": result.features.to_dicts(), "clusters": result.clusters.to_dicts(),
            "descriptions": result.descriptions.to_dicts(),
            **(_comparison_json(*result.comparison) if result.comparison else {}),
        })
        return
    if as_csv:
        render.emit_frame(result.comparison[0] if result.comparison else result.assignments, as_csv=True)
        return
    found = result.params.get("axis_found")
    if found:
        render.note(render.safe(found["why"], newlines=True))
    if show_features and result.features.height:
        render.emit_frame(result.features, title="features clustered on")
    render.emit_frame(result.clusters, title=f"clusters of {corpus}" + (f" along {axis!r}" if axis else ""))
    n_clusters = int((result.clusters["cluster"] >= 0).sum())
    msg = (f"{n_clusters} clusters over {result.assignments.height} documents; noise {result.n_noise} "
           f"({result.noise_share:.0%})")
    if result.n_empty:
        msg += f", of which {result.n_empty} have none of the chosen features"
    if result.noise_share > 0.3 and k is None:
        msg += "; lots of noise: try --min-cluster-size smaller, --min-samples 1, or --k"
    render.note(msg)
    weak = [c for c, q in result.clusters.select("cluster", "features_q05").iter_rows() if c >= 0 and q == 0]
    if weak:
        render.note(f"cluster {', '.join(map(str, weak))}: no feature differs from the rest at q ≤ 0.05 (as "
                    "`saeembed diff --where` will say); its description shows tendencies, not findings")
    if result.comparison:
        _show_comparison(*result.comparison)
    if result.clustering_id is not None:
        what = "replaced the clustering saved as" if result.replaced else "saved as"
        render.note(f"{what} [bold]{render.safe(result.name)}[/bold]; select a cluster with "
                    f"--where \"cluster.{render.safe(result.name)} = 0\"")
    else:
        render.note("not saved (--no-save)")


def _compare_saved(saved: str, corpus: Optional[str], column: str, store: str, as_json: bool, as_csv: bool) -> None:
    from saeembed.analysis.cluster_compare import compare_saved

    with open_store(store, read_only=True) as st:
        crosstab, metrics = compare_saved(st, saved, column)
    if corpus is not None and corpus != metrics["corpus"]:
        raise InputError(f"clustering {saved!r} is of corpus {metrics['corpus']!r}, not {corpus!r}")
    if as_json:
        render.emit_json({"name": saved, **_comparison_json(crosstab, metrics)})
    elif as_csv:
        render.emit_frame(crosstab, as_csv=True)
    else:
        _show_comparison(crosstab, metrics)


def _comparison_json(crosstab, metrics: dict) -> dict:
    """crosstab, purity, ari, nmi at the top; the counts behind them under "comparison"."""
    return {"crosstab": crosstab.to_dicts(), "purity": metrics["purity"], "ari": metrics["ari"], "nmi": metrics["nmi"],
            "comparison": {k: v for k, v in metrics.items() if k not in ("clustering", "purity", "ari", "nmi")}}


def _show_comparison(crosstab, metrics: dict) -> None:
    render.emit_frame(crosstab, title=f"clusters × {metrics['column']}")
    if metrics["purity"] is None:
        render.note("no clustered document has a value in this column: nothing to score")
        return
    left = [f"{metrics['n_noise']} noise"] if metrics["n_noise"] else []
    left += [f"{metrics['n_missing']} without a value"] if metrics["n_missing"] else []
    render.note(f"purity {metrics['purity']:.3f} · ARI {metrics['ari']:.3f} · NMI {metrics['nmi']:.3f} over "
                f"{metrics['n_docs']} documents in {metrics['n_clusters']} clusters × {metrics['n_values']} values of "
                f"{render.safe(metrics['column'])}" + (f" (left out: {', '.join(left)})" if left else ""))


def clusterings_cmd(
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus."),
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """List saved clusterings (usable as --where "cluster.NAME = N")."""
    from saeembed.analysis.cluster import clusterings

    with open_store(store, read_only=True) as st:
        frame = clusterings(st, corpus)
    render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="clusterings")


def axes_cmd(
    corpus: str = typer.Argument(..., help="Corpus whose axes of variation to find."),
    k: int = typer.Option(3, "--k", "-k", help="Groups per axis while searching; more than an axis has values mixes axes."),
    max_axes: int = typer.Option(5, "--max-axes", help="Stop after this many axes."),
    where: Optional[str] = ClusterWhereOpt,
    seed: int = ClusterSeedOpt,
    top: int = typer.Option(4, "--top", help="Features shown per axis."),
    sae: Optional[str] = SaeOpt,
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Find the independent axes along which the documents vary (e.g. language, then topic, then style),
    each with its kind, strength and top features; no labels or LLM needed.

    Each axis: the documents grouped on the features left by the axes before it. kind: language (the groups
    share few common words), content (sentence embeddings separate the groups) or form (they do not: style,
    tone, format). lift: strength against column-shuffled features. Cluster along one with
    `saeembed cluster CORPUS --axis 2` or by name (`--axis topic`).
    """
    import polars as pl

    from saeembed.analysis.axes import AxisConfig, find_axes

    with open_store(store) as st, render.embedding_progress(enabled=not (as_json or as_csv)) as bar:
        frame = find_axes(st, corpus, where=where, sae=sae, config=AxisConfig(k=k, max_axes=max_axes, seed=seed),
                          top=top, progress=bar)
    if frame.is_empty() and not (as_json or as_csv):
        render.note("no axis of variation stands out: the features vary no more than shuffled ones")
        return
    if as_json or as_csv:
        render.emit_frame(frame, as_json=as_json, as_csv=as_csv)
        return
    shown = frame.select("axis", "kind", "lift", pl.col("semantic_share").alias("dense"),
                         pl.col("word_overlap").alias("overlap"), pl.col("n_features").alias("feats"), "top_features")
    render.emit_frame(shown, title=f"axes of variation of {corpus}")
    render.note("kind: language = the groups share few common words; content = sentence embeddings separate "
                "them (dense); form = they barely do (style, tone, format). lift: strength vs shuffled features.")
    render.note(f"cluster along one: saeembed cluster {render.safe(corpus)} --axis 1 --k {k}")

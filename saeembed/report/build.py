"""One function per report: run (or read) the analysis, gather what its page shows, build the page.

    from saeembed.report.build import build_diff_report
    build_diff_report("project.duckdb", "support", "reviews").write("diff.html")

Each takes an open Store or a store path (opened read-only unless the report stores something), checks its
arguments before touching the store, and returns a Report: the page and the counts its summary line gives.
`progress`, when given, is called with the name of each stage as it starts.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import polars as pl

from saeembed.errors import InputError, StoreError
from saeembed.report.data import (classifier_report, cluster_map, exemplar_windows, marked_samples, provenance,
                                  saved_clustering, search_rows, selection_windows)
from saeembed.report.html import write_report
from saeembed.report.pages import (classify_page, cluster_page, correlate_page, diff_page, diff_sides, features_page,
                                   filter_page, search_page)
from saeembed.store import Store

Progress = Optional[Callable[[str], None]]


@dataclass
class Report:
    """A built page: `kind` (features, diff, ...), the self-contained `html`, and `counts` for a summary."""

    kind: str
    html: str
    counts: dict

    def write(self, out: str | os.PathLike) -> Path:
        """Write the page atomically; returns the resolved path."""
        return write_report(self.html, out)


@contextmanager
def _opened(store: Store | str | os.PathLike, *, read_only: bool):
    if isinstance(store, Store):
        yield store
    else:
        with Store(store, read_only=read_only, create=False) as st:
            yield st


def _stage(progress: Progress) -> Callable[[str], None]:
    return progress or (lambda description: None)


def build_features_report(store, corpus: str | None = None, *, top: int = 30, by: str = "docs", exemplars: int = 3,
                          sae: str | None = None, keep_generic: bool = False, progress: Progress = None) -> Report:
    """Top features of a corpus (or of every corpus encoded with the store's SAE): document frequency,
    labels, exemplars with the activating token shaded; generic features left out unless keep_generic
    (saeembed.analysis.feature_list)."""
    from saeembed.analysis.feature_list import list_features
    from saeembed.config import FeaturesConfig

    stage = _stage(progress)
    with _opened(store, read_only=True) as st:
        listed = list_features(st, corpus, sae=sae,
                               config=FeaturesConfig(top=top, order_by=by, keep_generic=keep_generic))
        frame = listed.frame
        info, corpora = st.features_scope(corpus, sae)
        stage("exemplars")
        ex = exemplar_windows(st, info.sae_key, frame["feature"].to_list(), corpus=corpus, per_feature=exemplars)
        prov = provenance(st, info, analysis="features", params={"corpus": corpus, "top": top, "by": by,
                                                                  "exemplars": exemplars, "keep_generic": keep_generic},
                          corpora=corpora)
        stage("page")
        title = f"Top features of {corpus}" if corpus else "Top features"
        html = features_page(frame, prov, exemplars=ex, title=title,
                             generic_excluded=listed.summary["generic_excluded"])
    return Report("features", html, {"features": frame.height, "exemplars": ex.height,
                                     "generic_excluded": listed.summary["generic_excluded"]})


def build_diff_report(store, a: str, b: str | None = None, *, where: str | None = None, vs: str | None = None,
                      paired_on: str | None = None, length_control: str = "auto", keep_generic: bool = False,
                      top: int = 20, exemplars: int = 2, sae: str | None = None, group_column: str | None = None,
                      separability: bool = True, progress: Progress = None) -> Report:
    """How two corpora (or two slices of one) differ: the length finding, separability of the listed
    features, features more frequent on each side in each ranking (raw; beyond length), p/q-values,
    exemplars from both sides with the activating token shaded."""
    from saeembed.analysis.diff import DiffConfig, diff, diff_selections

    if b is None and not where:
        raise InputError("give a second corpus, or --where (and optionally --vs) to compare slices of one")
    stage = _stage(progress)
    cfg = DiffConfig(length_control=length_control, keep_generic=keep_generic, exemplars=1, top=None,
                     separability_top=top, group_column=group_column, separability=separability)
    with _opened(store, read_only=True) as st:
        sa, sb = diff_selections(st, a, b, where=where, vs=vs, sae=sae)
        result = diff(st, sa, sb, paired_on=paired_on, config=cfg)
        stage("exemplars")
        shown = []  # the charted features of every ranking, once each
        for ranking in result.summary.get("rankings", [None]):
            for part in diff_sides(result.frame, result.summary, top, ranking):
                shown += [f for f in part["feature"].to_list() if f not in shown]
        ex = pl.concat([selection_windows(st, sa, shown, per_feature=exemplars).with_columns(side=pl.lit("a")),
                        selection_windows(st, sb, shown, per_feature=exemplars).with_columns(side=pl.lit("b"))])
        prov = provenance(st, sa.sae, analysis="diff", corpora=sorted({sa.corpus.name, sb.corpus.name}), params={
            "a": sa.name, "b": sb.name, "where": where, "vs": vs, "paired_on": paired_on,
            "length_control": length_control, "keep_generic": keep_generic, "top": top,
            "test": result.summary.get("test"), "group_column": group_column})
        stage("page")
        html = diff_page(result.frame, result.summary, prov, exemplars=ex, top=top)
    return Report("diff", html, {"features": len(shown), "significant_q05": result.summary.get("significant_q05", 0),
                                 "exemplars": ex.height})


def build_correlate_report(store, corpus: str, *, where: str | None = None, min_support: float | None = None,
                           min_docs: int | None = None, min_pair_docs: int | None = None, top: int = 30,
                           keep_generic: bool = False,
                           sae_weights: str | None = None, sae: str | None = None,
                           progress: Progress = None) -> Report:
    """Which features fire together: an NPMI heatmap of the strongest pairs, unexpected pairs outlined."""
    from saeembed.analysis.correlate import correlate
    from saeembed.config import CorrelateConfig

    stage = _stage(progress)
    given = {"min_support": min_support, "min_docs": min_docs, "min_pair_docs": min_pair_docs}
    cfg = CorrelateConfig(top=top, keep_generic=keep_generic, **{k: v for k, v in given.items() if v is not None})
    with _opened(store, read_only=True) as st:
        r = correlate(st, corpus, where=where, sae=sae, sae_weights=sae_weights, config=cfg)
        prov = provenance(st, st.encoded_sae(corpus, sae), analysis="correlate", corpora=[corpus], params={
            "where": where, "min_support": min_support, "min_docs": min_docs, "top": top})
        stage("page")
        html = correlate_page(r.pairs, prov, unexpected=r.unexpected, summary=r.summary, top=top)
    return Report("correlate", html, {"pairs": r.pairs.height, "unexpected": r.unexpected.height})


def build_cluster_report(store, corpus: str | None = None, *, saved: str | None = None, axis: str | None = None,
                         features: list[int] | None = None, where: str | None = None, name: str | None = None, replace: bool = False,
                         sae: str | None = None, config=None, progress: Progress = None) -> Report:
    """Clusters of a corpus: a 2-D map of documents coloured by cluster (noise grey) and each cluster's
    over-represented features. Clusters now (`config`: analysis.cluster.ClusterConfig; `name` also saves
    the clustering) or reads the clustering saved as `saved`."""
    from saeembed.analysis.cluster import ClusterConfig, cluster

    cfg = config or ClusterConfig()
    if saved is not None:
        given = [opt for opt, v in (("--axis", axis), ("--features", features), ("--k", cfg.k), ("--where", where),
                                    ("--name", name), ("--min-cluster-size", cfg.min_cluster_size),
                                    ("--binary", cfg.binary)) if v]
        if given:
            raise InputError(f"--saved reports a stored clustering as it is; drop {', '.join(given)}")
    elif corpus is None:
        raise InputError("name a corpus to cluster, or --saved NAME for a stored clustering")
    stage = _stage(progress)
    # Writable only when something is stored: the saved clustering, or the axis's feature embeddings cache.
    with _opened(store, read_only=saved is not None or not (axis or name)) as st:
        if saved is not None:
            sel, result = saved_clustering(st, saved)
            if corpus is not None and corpus != sel.corpus.name:
                raise InputError(f"clustering {saved!r} is of corpus {sel.corpus.name!r}, not {corpus!r}")
        else:
            result = cluster(st, corpus, axis=axis, features=features or None, where=where, sae=sae, name=name,
                             save=name is not None, replace=replace, config=cfg)
            sel = None
        info = st.corpus(result.params.get("corpus") or corpus) if sel is None else sel.corpus
        sae_info = sel.sae if sel is not None else st.encoded_sae(info, sae)
        stage("map")
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
                  **{k: v for k, v in result.params.items() if k != "corpus"}}
        prov = provenance(st, sae_info, analysis="cluster", params=params, corpora=[info.name])
        stage("page")
        html = cluster_page(docs, result.descriptions, prov, summary=summary)
    return Report("cluster", html, {"documents": docs.height, "clusters": n_clusters, "noise": result.n_noise})


def build_search_report(store, corpus: str, query: str | None = None, *, mode: str | None = None,
                        feature: list[str] = (), not_feature: list[int] = (), where: str | None = None,
                        top: int = 20, n_features: int = 30, match: str = "auto", sae: str | None = None,
                        progress: Progress = None) -> Report:
    """Search results as a page (`mode`: sae, dense or hybrid; None: hybrid for a query text, sae for
    features only): scores as bars, each hit with the features that matched it and its snippet with the
    matched spans shaded."""
    from saeembed.analysis.search_plan import default_mode, planned_search

    mode = mode or default_mode(query)
    if mode == "dense" and feature:
        raise InputError("--feature does not apply to --dense (sentence-embedding) search")
    stage = _stage(progress)
    with _opened(store, read_only=False) as st:  # writable: feature / dense embeddings are cached
        frame, plan = planned_search(st, corpus, query, mode=mode, feature=feature, not_feature=not_feature,
                                     where=where, top=top, n_features=n_features, match=match, sae=sae)
        if frame.is_empty():
            what = "the query" if mode == "dense" else "none of the chosen features fire"
            raise InputError(f"no documents found in {corpus!r}" + (f" where {where}" if where else "")
                             + f": {what}; nothing written")
        stage("page")
        rows = search_rows(frame.drop("doc_idx"))
        prov = provenance(st, st.encoded_sae(corpus, sae), analysis="search", corpora=[corpus], params={
            "query": query, "features": list(feature), "not_features": list(not_feature), "where": where, "top": top,
            "mode": mode, "match": match if query and mode != "dense" else None,
            "searched_features": plan["feature"].to_list() if plan is not None else None})
        title = query or ("features " + ", ".join(feature) if feature else None)
        html = search_page(rows, prov, query=title)
    matched = int((rows["matched_features"].list.len() > 0).sum()) if "matched_features" in rows.columns else 0
    return Report("search", html, {"results": rows.height, "with_matched_features": matched})


def build_classify_report(store, name: str, *, corpus: str | None = None, label_column: str | None = None,
                          baselines: list[str] = (), where: str | None = None, top: int = 30,
                          progress: Progress = None) -> Report:
    """A saved classifier: its precision-recall curve, metrics and most heavily weighted features, evaluated
    on its saved held-out split or (given `corpus` and `label_column`) on a labelled corpus."""
    if corpus is None and (baselines or where):
        raise InputError("--baseline and --where apply to an evaluation on --corpus with --label-column")
    stage = _stage(progress)
    with _opened(store, read_only=corpus is None) as st:
        r = classifier_report(st, name, corpus=corpus, label_column=label_column, where=where,
                              baselines=list(baselines))
        stage("page")
        clf = r["saved"]
        trained_on = clf.provenance.get("corpus")
        corpora = [c for c in dict.fromkeys([trained_on, corpus]) if c and st.has_corpus(c)]
        prov = provenance(st, clf.sae, analysis="classify", corpora=corpora, params={
            "name": name, "kind": clf.kind, "trained_on": trained_on,
            "label_column": label_column or clf.params.get("label_column"),
            "evaluated_on": r["metrics"]["evaluated on"], "where": where, "baselines": list(baselines), "top": top})
        html = classify_page(r["curve"], r["metrics"], r["weights"], prov, top=top)
    return Report("classify", html, {"documents": r["metrics"].get("n", 0), "curve_points": r["curve"].height,
                                     "features": min(top, r["weights"].height)})


def build_filter_report(store, corpus: str, spec, *, samples: int = 3, progress: Progress = None) -> Report:
    """A filter dry run (`spec`: analysis.filter.FilterSpec; no rows are written): rows dropped per rule, the
    features the dropped rows have in common, sample dropped rows with those features shaded."""
    from saeembed.analysis.filter import filter_corpus

    if not (spec.drop or spec.keep or spec.drop_features or spec.dedupe is not None
            or spec.quality_drop is not None):
        raise InputError("give at least one rule: --drop, --keep, --drop-feature, --dedupe or --quality-drop")
    stage = _stage(progress)
    with _opened(store, read_only=False) as st:  # writable: scores / a quality model may be stored
        res = filter_corpus(st, corpus, spec, samples_per_rule=samples)
        stage("samples")
        info = st.corpus(corpus)
        try:
            sae_info = st.encoded_sae(info, spec.sae)
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
        if not spec.quality_label:
            params.pop("quality_name", None)
        prov = provenance(st, sae_info, analysis="filter", corpora=[corpus],
                          params=params | {"samples": samples, "dry_run": True})
        stage("page")
        html = filter_page(rule_counts, res.features, shown, prov, summary=summary)
    return Report("filter", html, {"documents": res.n_docs, "kept": int(len(res.kept)), "dropped": res.dropped.height,
                                   "rules": res.rules.height, "samples": 0 if shown is None else shown.height})

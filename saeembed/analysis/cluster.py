"""Clustering steered by features: choose the features that express an axis ("writing style"), keep
only them in every document's SAE embedding, cluster (HDBSCAN by default, k-means with k), describe
each cluster by the features over-represented in it against the rest, lay the documents out in 2-D,
and save it all in the store under a name.

Axis to features: when most features carry LLM or hand-written labels and some label is close to the
axis text ("tone of voice" ~ "formal polite tone of voice"), those features are taken (interp.match,
`describe`); otherwise the corpus's own axes of variation are found and the one the name refers to is
taken (analysis.axes: `--axis topic`, `--axis "writing style"`, or `--axis 2`).

Geometry: each chosen feature's value is divided by its corpus maximum (so features on different
scales count alike) and rows are L2-normalised (cosine geometry). Documents where none of the chosen
features fire cannot be placed on the axis: they get cluster -1 with the HDBSCAN noise and are
counted separately (`n_empty`). Without an axis or features, all features are used through a seeded
TruncatedSVD to `svd_dims` dimensions (never a dense N x d_sae matrix). HDBSCAN runs on at most
`max_dims` PCA dimensions and, above `max_fit` documents, on a seeded sample whose clusters the other
documents join through their nearest sampled neighbour (HDBSCAN's cost grows faster than linearly).

A saved clustering named NAME becomes a filter column `cluster.NAME` of its corpus, so
`--where "cluster.NAME = 3"` (or `cluster.NAME = -1` for noise) selects a cluster in search, diff, etc.
Saving under a name already saved is refused (before any work) unless replace=True. With
compare_column, the clusters are also crosstabbed against that column (analysis.cluster_compare).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.analysis.axes import MAX_K, NO_AXES, AxisConfig, choose_axis, discover_axes
from saeembed.analysis.cluster_compare import check_column, compare_with_column
from saeembed.analysis.cluster_describe import cluster_table, describe_clusters, llm_names
from saeembed.analysis.cluster_words import cluster_words
from saeembed.analysis.diff_length import token_lengths
from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.config import ClusterConfig
from saeembed.errors import InputError
from saeembed.store import Store
from saeembed.store.names import check_name
from saeembed.store.results import clustering_exists_message


@dataclass
class ClusterResult:
    name: str
    clustering_id: int | None
    assignments: pl.DataFrame  # doc_idx, doc_id, cluster, probability, x, y
    clusters: pl.DataFrame  # cluster, size, share, features, description, exemplar
    descriptions: pl.DataFrame  # cluster, rank, feature, freq_in, freq_out, diff, label, exemplar
    features: pl.DataFrame  # the features clustered on: feature, label, score, evidence
    params: dict = field(default_factory=dict)
    n_noise: int = 0
    n_empty: int = 0
    replaced: bool = False  # saving replaced a clustering of the same name
    comparison: tuple[pl.DataFrame, dict] | None = None  # (crosstab, metrics) against compare_column

    @property
    def noise_share(self) -> float:
        return self.n_noise / max(self.assignments.height, 1)


def cluster(
    store: Store,
    corpus: str,
    *,
    axis: str | None = None,
    features=None,
    where: str | None = None,
    sae: str | None = None,
    name: str | None = None,
    save: bool = True,
    replace: bool = False,
    compare_column: str | None = None,
    config: ClusterConfig | None = None,
    progress=None,
    llm=None,
    **overrides,
) -> ClusterResult:
    """Cluster the documents of `corpus` (matching `where`) on the features of `axis`, on `features`,
    or on all features. overrides: any ClusterConfig field (k=8, min_cluster_size=20, ...).
    save: store it under `name` (refused when that name is saved, unless replace); compare_column: also
    crosstab the clusters against this column (result.comparison). Each cluster is named offline from its
    most distinctive features' labels; llm (an interp.llm.LLMClient) names it from those and a few of its
    documents instead (`name_source` says which)."""
    cfg = config or ClusterConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise InputError(f"unknown clustering option {key!r}")
        setattr(cfg, key, value)
    if cfg.k is not None:
        cfg.method = "kmeans"
    if cfg.method not in ("hdbscan", "kmeans"):
        raise InputError(f"unknown clustering method {cfg.method!r}; use hdbscan or kmeans (--k)")
    if cfg.method == "kmeans" and (cfg.k is None or cfg.k < 2):
        raise InputError("k-means needs --k of at least 2")
    if axis is not None and features:
        raise InputError("give an --axis or --features, not both")
    name = check_name(name or _default_name(corpus, axis, features), "clustering")
    existing = store.clustering_corpus(name) if save else None
    if existing is not None and not replace:  # say so before the work, not after
        raise InputError(clustering_exists_message(name, existing))
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    if compare_column is not None:
        check_column(store, sel.corpus, compare_column)
    chosen, axis_info = _choose_features(store, sel, axis, features, cfg, progress)
    X, empty = _matrix(store, sel, chosen, cfg)
    n = sel.n_docs
    fit_rows = np.flatnonzero(~empty)
    if len(fit_rows) < 2:
        raise InputError(f"only {len(fit_rows)} of {n} documents have any of the chosen features; nothing to cluster")
    labels = np.full(n, -1, dtype=np.int64)
    prob = np.zeros(n)
    Z = X[fit_rows]
    fit_labels, fit_prob = _fit(Z, cfg)
    labels[fit_rows], prob[fit_rows] = fit_labels, fit_prob
    xy = np.zeros((n, 2))
    xy[fit_rows] = _layout(Z, cfg.seed)
    if empty.any():  # off the axis: park them left of the layout
        xy[empty] = [xy[fit_rows, 0].min() - 1.0, 0.0]
    ids = store.documents(sel.corpus, text=False, metadata=False, doc_idx=sel.doc_idx.tolist())["doc_id"]
    assignments = pl.DataFrame({
        "doc_idx": sel.doc_idx, "doc_id": ids, "cluster": labels, "probability": prob,
        "x": xy[:, 0].astype(np.float32), "y": xy[:, 1].astype(np.float32),
    })
    descriptions = describe_clusters(store, sel, labels, top=cfg.describe_top)
    tokens = token_lengths(store, sel.sae.sae_key, sel.corpus.corpus_id, sel.doc_idx)[sel.doc_idx]
    clusters = cluster_table(labels, descriptions, tokens=tokens, words=cluster_words(store, sel, labels))
    if llm is not None:
        clusters = llm_names(store, sel, assignments, clusters, llm)
    params = {"corpus": corpus, "axis": axis, "features": [int(f) for f in chosen["feature"]], "where": where,
              "axis_found": axis_info, **{k: v for k, v in cfg.__dict__.items()}}
    result = ClusterResult(name, None, assignments, clusters, descriptions, chosen, params,
                           n_noise=int((labels == -1).sum()), n_empty=int(empty.sum()))
    if save:
        result.clustering_id = save_clustering(store, sel, result, replace=replace)
        result.replaced = existing is not None
    if compare_column is not None:
        result.comparison = compare_with_column(store, sel.corpus, assignments, compare_column, sae=sel.sae,
                                                name=name if save else None)
    return result


# --- features -----------------------------------------------------------------------------------


FEATURE_SCHEMA = {"feature": pl.Int64, "label": pl.Utf8, "score": pl.Float64, "evidence": pl.Utf8}


def _choose_features(store: Store, sel: Selection, axis, features, cfg: ClusterConfig,
                     progress) -> tuple[pl.DataFrame, dict | None]:
    """The features to cluster on (empty = all) and, for an axis found by analysis.axes, what was found."""
    schema = FEATURE_SCHEMA
    if features:
        feats = sel.sae.check_features(features)
        labels = dict(store.labels(sel.sae.sae_key, feats).select("feature", "label").iter_rows())
        return pl.DataFrame([(f, labels.get(f), 1.0, "given with --features") for f in dict.fromkeys(feats)],
                            schema=schema, orient="row"), None
    if axis is None:
        return pl.DataFrame(schema=schema), None  # all features
    candidates = _splitting_features(store, sel, cfg)
    by_number = axis.strip().isdigit()
    method = "axes" if by_number else cfg.match
    if method == "auto":
        method = "axes"
        if _mostly_labelled(store, sel, candidates):
            got = _matched(store, sel, axis, cfg, candidates, progress, "describe")
            if got["score"].max() >= LABEL_MATCH:  # the name says what some labels say: those features
                return got, None
            # an abstract name ("topic") is close to no label: find the axis instead
    if method != "axes":
        return _matched(store, sel, axis, cfg, candidates, progress, method), None
    found = _axis_features(store, sel, axis, cfg, progress, schema)
    if found is not None:
        return found
    if by_number:
        raise InputError(NO_AXES)
    why = f"{NO_AXES.split(';')[0]}; matched {axis!r} to feature descriptions instead"
    return _matched(store, sel, axis, cfg, candidates, progress, "describe"), {"number": None, "kind": None, "why": why}


LABEL_MATCH = 0.5  # cosine of an axis name to a label above which the name picks labelled features
# Features of a found axis that k-means clusters on. A wider SAE spreads an axis over more features, and
# k-means separates its values better with more of them (syngoalex --axis topic, default SAE: ARI 0.650 at
# 50, 0.749 at 200; agnews 0.477 -> 0.552); HDBSCAN does worse with more (0.243 -> 0.135), so it keeps 50.
# benchmarks/results/cluster.md "How many features an axis gives k-means".
N_AXIS_KMEANS = 200
N_MATCHED = 50  # features matched to an axis name (by label or description), and a found axis for HDBSCAN


def _matched(store: Store, sel: Selection, axis: str, cfg: ClusterConfig, candidates, progress, method: str):
    from saeembed.interp.match import match_features

    got = match_features(store, sel.sae, axis, corpus=sel.corpus.name, top=cfg.n_features or N_MATCHED, method=method,
                         doc_idx=sel.doc_idx, candidates=candidates, progress=progress)
    if got.is_empty():
        raise InputError(f"no feature of this corpus matches the axis {axis!r}")
    return got.select(*FEATURE_SCHEMA).cast(FEATURE_SCHEMA)


def _mostly_labelled(store: Store, sel: Selection, candidates: list[int]) -> bool:
    """Labels written by an LLM or a person name what a feature is about, so an axis name can match them;
    offline labels, and the atlas's (offline phrases too), are the feature's own words, which an axis name
    ("topic") never shares."""
    if not candidates:
        return False
    labels = store.labels(sel.sae.sae_key, candidates)
    named = labels.filter(~pl.col("label_source").is_in(["offline", "atlas"]) & pl.col("label").is_not_null())
    return named.height >= 0.5 * len(candidates)


def _axis_features(store: Store, sel: Selection, axis: str, cfg: ClusterConfig, progress, schema):
    groups = min(cfg.k, MAX_K) if cfg.k else AxisConfig.k  # asking for 2 clusters suggests a 2-valued axis
    found = discover_axes(store, sel, AxisConfig(k=groups, min_df=cfg.min_df, max_df=cfg.max_df, seed=cfg.seed),
                          progress=progress)
    if not found:
        return None
    chosen, why = choose_axis(found, axis)
    n = cfg.n_features or (N_AXIS_KMEANS if cfg.k else N_MATCHED)
    feats = [int(f) for f in chosen.features[:n]]
    labels = dict(store.labels(sel.sae.sae_key, feats).select("feature", "label").iter_rows())
    rows = [(f, labels.get(f), float(e), f"axis {chosen.number} ({chosen.kind}) explains {e:.0%} of where it fires")
            for f, e in zip(feats, chosen.eta2[:n])]
    info = {"number": chosen.number, "of": len(found), "kind": chosen.kind, "why": why,
            "strength": chosen.strength, "lift": chosen.lift, "semantic_share": chosen.semantic_share,
            "word_overlap": chosen.word_overlap}
    return pl.DataFrame(rows, schema=schema, orient="row"), info


def _splitting_features(store: Store, sel: Selection, cfg: ClusterConfig) -> list[int]:
    """Features that can split the selection: firing in between min_df and max_df of its documents
    (a feature on 0.1 % or 95 % of documents cannot shape clusters; skipping them also saves embedding
    thousands of feature descriptions)."""
    df = store.feature_doc_counts(sel.corpus, sel.sae, sel.doc_idx.tolist())
    share = df["docs"] / max(sel.n_docs, 1)
    return df.filter((share >= cfg.min_df) & (share <= cfg.max_df))["feature"].sort().to_list()


def _matrix(store: Store, sel: Selection, chosen: pl.DataFrame, cfg: ClusterConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rows to cluster (dense, n x |features| or n x svd_dims) and which rows are empty."""
    from sklearn.preprocessing import normalize

    feats = chosen["feature"].to_list() or None
    X = embedding_matrix(store, sel, features=feats, binary=cfg.binary).tocsc()
    if feats:
        X = X[:, feats]
    X = X.tocsr()
    if not cfg.binary:  # each feature on its corpus scale
        top = np.asarray(X.max(axis=0).todense()).ravel()
        X = X @ sp.diags(1.0 / np.where(top > 0, top, 1.0))
    empty = np.diff(X.indptr) == 0
    X = normalize(X)
    if feats:
        return np.asarray(X.todense(), dtype=np.float32), empty
    from sklearn.decomposition import TruncatedSVD

    dims = min(cfg.svd_dims, X.shape[1] - 1, max(X.shape[0] - 1, 1))
    Z = TruncatedSVD(dims, random_state=cfg.seed).fit_transform(X)
    return Z.astype(np.float32), empty


# --- fitting and layout ---------------------------------------------------------------------------


def _fit(Z: np.ndarray, cfg: ClusterConfig) -> tuple[np.ndarray, np.ndarray]:
    if cfg.method == "kmeans":
        from sklearn.cluster import KMeans

        if len(Z) < cfg.k:
            raise InputError(f"--k {cfg.k} is more than the {len(Z)} documents to cluster")
        km = KMeans(cfg.k, n_init=4, random_state=cfg.seed).fit(Z)
        d = km.transform(Z)
        near = d.min(axis=1)
        return km.labels_.astype(np.int64), 1.0 / (1.0 + near)
    from sklearn.cluster import HDBSCAN

    n = len(Z)
    mcs = cfg.min_cluster_size or max(10, n // 50)
    mcs = max(2, min(mcs, n))
    ms = None if cfg.min_samples is None else max(1, min(cfg.min_samples, n - 1))
    if Z.shape[1] > cfg.max_dims:
        Z = _pca(Z, cfg.max_dims, cfg.seed)
    if n <= cfg.max_fit:  # HDBSCAN itself has no randomness: same input, same clusters
        model = HDBSCAN(min_cluster_size=mcs, min_samples=ms, copy=True).fit(Z)
        return model.labels_.astype(np.int64), np.asarray(model.probabilities_, dtype=np.float64)
    # Large inputs: HDBSCAN's cost grows faster than linearly, so fit a seeded sample (cluster sizes
    # scaled down with it) and give every other document the label of its nearest sampled document.
    from sklearn.neighbors import NearestNeighbors

    sample = np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_fit, replace=False))
    mcs_s = max(2, int(round(mcs * cfg.max_fit / n)))
    model = HDBSCAN(min_cluster_size=mcs_s, min_samples=ms, copy=True).fit(Z[sample])
    nearest = NearestNeighbors(n_neighbors=1).fit(Z[sample]).kneighbors(Z, return_distance=False)[:, 0]
    labels = model.labels_.astype(np.int64)[nearest]
    prob = np.asarray(model.probabilities_, dtype=np.float64)[nearest]
    labels[sample], prob[sample] = model.labels_, model.probabilities_
    return labels, prob


def _pca(Z: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = max(1, min(dims, Z.shape[1], len(Z)))
    return PCA(dims, random_state=seed, svd_solver="randomized" if len(Z) > 2000 else "full").fit_transform(Z)


def _layout(Z: np.ndarray, seed: int) -> np.ndarray:
    """2-D layout for plots: the first two principal components (fast and deterministic at any size)."""
    if Z.shape[1] < 2 or len(Z) < 2:
        out = np.zeros((len(Z), 2))
        out[:, : min(Z.shape[1], 2)] = Z[:, :2]
        return out
    return _pca(Z, 2, seed)


# --- saving and reuse ---------------------------------------------------------------------------------


def save_clustering(store: Store, sel: Selection, result: ClusterResult, *, replace: bool = False) -> int:
    """Store the clustering under result.name (replacing one of that name only when `replace`); returns its id."""
    cid = store.save_clustering(result.name, sel.corpus, sel.sae, result.params, result.assignments, replace=replace)
    store.record_run("cluster", result.params, {"name": result.name, "clustering_id": cid,
                                                "n_noise": result.n_noise, "n_empty": result.n_empty})
    return cid


def clusterings(store: Store, corpus: str | None = None) -> pl.DataFrame:
    """Saved clusterings: name, corpus, clusters, noise share, docs, created_at, params."""
    return store.clusterings(corpus)


def _default_name(corpus: str, axis, features) -> str:
    what = _slug(axis) if axis else "features" if features else "all"
    return f"{_slug(corpus)}_{what}"[:64]


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "x"
    return s if not s[0].isdigit() else "c" + s

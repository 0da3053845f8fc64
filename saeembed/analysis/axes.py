"""The independent axes along which a corpus varies, found from the SAE features alone, and the
axis a name such as "topic" or "writing style" refers to: offline steering for `cluster --axis`.

Discovery (alternative clustering): group the documents on every feature that can split them (k
groups, binary presence, TruncatedSVD, k-means); that partition is axis 1. Each feature's link to it
is the share of the feature's presence it explains (eta squared, for a 0/1 variable chi-square / n).
Features an axis explains beyond chance are its features; the rest are grouped again for axis 2, and
so on. An axis is kept while its strength (mean eta squared of its top features) is at least
`min_lift` times the strength of the same step on column-shuffled features (features keep their
frequencies, lose their co-variation). A corpus written in 4 languages on 4 topics in 4 styles gives
language, then topic, then style.

Naming without labels: an axis name has no words in common with the features of that axis, so the
name is matched to a *kind* of axis, and each found axis gets a kind from two measurements on a
sample of its documents:
- language: its groups hardly share their most common words (different vocabularies);
- content: sentence embeddings, which are trained to encode what a text means, separate its groups
  (eta squared of the embeddings at least `content_share` of what k-means on the embeddings reaches,
  both measured after removing the language axes' group means, which embeddings also separate);
- form: the rest: SAE features separate the groups, sentence embeddings do not (style, tone, format).
The name's kind is the nearest (cosine, default sentence model) of the three KINDS descriptions; the
strongest axis of that kind is chosen. `saeembed axes CORPUS` shows what was found and why.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.analysis.selection import Selection, embedding_matrix, require_docs, select
from saeembed.errors import InputError
from saeembed.store import Store

KINDS = {
    "content": "what the text is about: its topic, subject matter and content",
    "form": "how the text is written: its style, tone, format and wording",
    "language": "which language the text is written in, such as English, German or French",
}
KIND_WHY = {
    "content": "sentence embeddings separate its groups",
    "form": "SAE features separate its groups, sentence embeddings barely do",
    "language": "its groups hardly share their common words",
}
NO_AXES = ("no axis of variation stands out in these documents (their features vary no more than shuffled "
           "ones); give --features, or label the features (saeembed label --llm) and retry")
MAX_K = 4  # discovery groups cluster --k N asks for: min(N, MAX_K)


@dataclass
class AxisConfig:
    k: int = 3  # groups per axis while discovering. More groups than an axis has values also split along
    # the next axis and take its features (4 languages in 6 groups take the topics); fewer still explain
    # all its features, but separate its values less clearly. cluster passes its own k, at most MAX_K.
    max_axes: int = 5
    min_lift: float = 3.0  # an axis must be this many times stronger than shuffled features
    min_df: float = 0.01  # features firing in 1 %..70 % of the documents can split them
    max_df: float = 0.7
    svd_dims: int = 50
    max_fit: int = 50_000  # larger selections: SVD and k-means fitted on a seeded sample this large
    top: int = 50  # an axis's strength: mean eta squared of its top features (at most 1 % of them, at least 3)
    sample: int = 500  # documents embedded / read to give each axis a kind
    language_overlap: float = 0.25  # below: groups in different languages
    content_share: float = 0.4  # at or above: sentence embeddings separate the groups
    seed: int = 0


@dataclass
class Axis:
    number: int  # 1 = strongest
    features: np.ndarray  # explained beyond chance, most explained first
    eta2: np.ndarray  # share of each feature's presence the axis explains
    groups: np.ndarray  # the discovery partition, rows follow selection.doc_idx
    strength: float
    chance: float
    semantic_share: float  # sentence-embedding eta squared / that of k-means on them (both beyond language)
    word_overlap: float  # mean Jaccard of the groups' 30 most common words
    kind: str

    @property
    def lift(self) -> float:
        return self.strength / max(self.chance, 1e-12)


def find_axes(store: Store, corpus: str, *, where: str | None = None, sae: str | None = None,
              config: AxisConfig | None = None, top: int = 6, progress=None) -> pl.DataFrame:
    """`saeembed axes` from Python: one row per axis of the documents of `corpus` matching `where`
    (see axes_table for the columns)."""
    sel = require_docs(select(store, corpus, where=where, sae=sae))
    return axes_table(store, sel, discover_axes(store, sel, config, progress=progress), top=top)


def discover_axes(store: Store, sel: Selection, config: AxisConfig | None = None, *, model: str | None = None,
                  progress=None) -> list[Axis]:
    """The axes of variation of the selected documents, strongest first (may be empty)."""
    cfg = config or AxisConfig()
    n = sel.n_docs
    if n < 2 * cfg.k:
        raise InputError(f"{n} documents are too few to find axes with {cfg.k} groups each")
    B = embedding_matrix(store, sel, binary=True).tocsc()
    df = np.diff(B.indptr) / n
    feats = np.flatnonzero((df >= cfg.min_df) & (df <= cfg.max_df))
    if len(feats) < 2:
        return []
    rng = np.random.default_rng(cfg.seed)
    top = int(np.clip(round(0.01 * len(feats)), 3, cfg.top))
    null = _shuffled(B[:, feats], rng)
    null_eta2 = _eta2(null, _groups(null, cfg))
    chance = _strength(null_eta2, top)
    explained_above = float(np.quantile(null_eta2, 0.99))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    while len(found) < cfg.max_axes and len(feats) >= 2:
        groups = _groups(B[:, feats], cfg)
        eta2 = _eta2(B[:, feats], groups)
        strength = _strength(eta2, top)
        if strength < cfg.min_lift * chance:
            break
        mine = eta2 > explained_above
        order = np.argsort(-eta2[mine], kind="stable")
        found.append((feats[mine][order], eta2[mine][order], groups, strength))
        feats = feats[~mine]
    if not found:
        return []
    sample = np.sort(rng.choice(n, min(n, cfg.sample), replace=False))
    dense, words = _sample_signals(store, sel, sample, model, progress)
    overlaps = [_word_overlap(words, groups[sample]) for _, _, groups, _ in found]
    # Sentence embeddings separate languages too; what they separate beyond the language axes is the
    # measure of content (else a corpus in two languages would make every topic axis look like form).
    for (_, _, groups, _), overlap in zip(found, overlaps):
        if overlap < cfg.language_overlap:
            dense = _minus_group_means(dense, groups[sample])
    dense_best = _dense_eta2(dense, _kmeans(dense, cfg.k, cfg.seed))
    axes = []
    for i, ((f, e, groups, strength), overlap) in enumerate(zip(found, overlaps)):
        share = max(0.0, _dense_eta2(dense, groups[sample]) / dense_best) if dense_best > 1e-6 else 0.0
        kind = ("language" if overlap < cfg.language_overlap else
                "content" if share >= cfg.content_share else "form")
        axes.append(Axis(i + 1, f, e, groups, strength, chance, float(share), float(overlap), kind))
    return axes


def name_kind(name: str, model: str | None = None) -> tuple[str, dict[str, float]]:
    """Which kind of axis a name asks for: the nearest KINDS description, with every cosine."""
    from saeembed.encode.dense import get_embedder

    embedder = get_embedder(model)
    q, *anchors = embedder.embed([name, *KINDS.values()])
    cos = {kind: float(np.dot(q, a)) for kind, a in zip(KINDS, anchors)}
    return max(cos, key=cos.get), cos


def choose_axis(axes: list[Axis], name: str, *, model: str | None = None) -> tuple[Axis, str]:
    """The axis `name` refers to (a number picks it directly) and a sentence saying why."""
    if not axes:
        raise InputError(NO_AXES)
    if name.strip().isdigit():
        number = int(name)
        if not 1 <= number <= len(axes):
            raise InputError(f"axis {number} does not exist: {len(axes)} axes were found (see saeembed axes)")
        return axes[number - 1], f"axis {number} of {len(axes)} ({axes[number - 1].kind}), as asked"
    kind, _ = name_kind(name, model)
    of_kind = [a for a in axes if a.kind == kind]
    if of_kind:
        axis = of_kind[0]
        why = f"{name!r} reads as a {kind} axis; axis {axis.number} of {len(axes)} is the strongest {kind} one ({KIND_WHY[kind]})"
    else:
        axis = axes[0]
        why = (f"{name!r} reads as a {kind} axis but none was found; took the strongest, axis 1 ({axis.kind}) - "
               f"see saeembed axes, or give the axis number")
    return axis, why


def axes_table(store: Store, sel: Selection, axes: list[Axis], *, top: int = 6) -> pl.DataFrame:
    """One row per axis: axis, kind, why, strength, lift, semantic_share, word_overlap, n_features,
    group_sizes, features (ids) and top_features (labels, or the words they fire on)."""
    from saeembed.interp.match import feature_texts

    rows = []
    for a in axes:
        feats = [int(f) for f in a.features[:top]]
        texts = feature_texts(store, sel.sae, feats, per_feature=3)
        names = dict(zip(texts["feature"].to_list(), texts["shown"].to_list()))
        shown = [f"{f} {_short(names.get(f) or '?')}" for f in feats]
        rows.append({
            "axis": a.number, "kind": a.kind, "why": KIND_WHY[a.kind], "strength": round(a.strength, 4),
            "lift": round(a.lift, 2), "semantic_share": round(a.semantic_share, 3),
            "word_overlap": round(a.word_overlap, 3), "n_features": len(a.features),
            "group_sizes": np.bincount(a.groups).tolist(), "features": feats, "top_features": " · ".join(shown),
        })
    schema = {"axis": pl.Int64, "kind": pl.Utf8, "why": pl.Utf8, "strength": pl.Float64, "lift": pl.Float64,
              "semantic_share": pl.Float64, "word_overlap": pl.Float64, "n_features": pl.Int64,
              "group_sizes": pl.List(pl.Int64), "features": pl.List(pl.Int64), "top_features": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


def _short(text: str, n: int = 16) -> str:
    text = " ".join(text.split())
    return f"«{text if len(text) <= n else text[: n - 1] + '…'}»"


# --- steps ------------------------------------------------------------------------------------------


def _groups(B: sp.csc_matrix, cfg: AxisConfig) -> np.ndarray:
    """k groups of the rows of a 0/1 matrix: k-means on a TruncatedSVD of the L2-normalised rows, fitted
    on a seeded sample of at most max_fit rows (the rest join the nearest centre)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    X = normalize(B.tocsr())
    n = X.shape[0]
    fit = np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_fit, replace=False)) if n > cfg.max_fit else None
    dims = max(1, min(cfg.svd_dims, X.shape[1] - 1, n - 1))
    if X.shape[1] > 1:
        svd = TruncatedSVD(dims, random_state=cfg.seed).fit(X if fit is None else X[fit])
        Z = svd.transform(X)
    else:
        Z = X.toarray()
    return _kmeans(Z, cfg.k, cfg.seed, fit=fit)


def _kmeans(Z: np.ndarray, k: int, seed: int, *, fit: np.ndarray | None = None) -> np.ndarray:
    """k-means labels of every row of Z, fitted on the rows `fit` (None = all)."""
    from sklearn.cluster import KMeans

    model = KMeans(k, n_init=10, random_state=seed).fit(Z if fit is None else Z[fit])
    return model.predict(Z).astype(np.int64)


def _eta2(B: sp.csc_matrix, groups: np.ndarray) -> np.ndarray:
    """Per column of a 0/1 matrix: between-group share of its variance (chi-square / n of its 2 x k table)."""
    n = B.shape[0]
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), groups)), shape=(n, groups.max() + 1))
    inside = np.asarray((B.T @ onehot).todense())  # features x groups: documents with the feature
    size = np.bincount(groups).astype(np.float64)
    p = inside.sum(axis=1) / n
    var = p * (1 - p)
    between = ((inside / size - p[:, None]) ** 2 * size).sum(axis=1) / n
    return np.where(var > 0, between / np.where(var > 0, var, 1), 0.0)


def _strength(eta2: np.ndarray, top: int) -> float:
    return float(np.sort(eta2)[-top:].mean()) if len(eta2) else 0.0


def _shuffled(B: sp.csc_matrix, rng: np.random.Generator) -> sp.csc_matrix:
    """Each column's ones moved to random rows: same frequencies, no co-variation."""
    n = B.shape[0]
    counts = np.diff(B.indptr)
    rows = np.concatenate([np.sort(rng.choice(n, c, replace=False)) for c in counts]) if len(counts) else []
    return sp.csc_matrix((np.ones(len(rows)), rows, B.indptr.copy()), shape=B.shape)


def _sample_signals(store: Store, sel: Selection, sample: np.ndarray, model, progress):
    """Unit-length sentence embeddings and word counts of the sampled documents."""
    from saeembed.encode.dense import doc_embeddings

    idx = sel.doc_idx[sample]
    texts = store.documents(sel.corpus, metadata=False, doc_idx=idx.tolist())
    by_idx = dict(zip(texts["doc_idx"].to_list(), texts["text"].to_list()))
    words = [Counter(_WORD.findall(by_idx[int(i)].lower())) for i in idx]
    dense = doc_embeddings(store, sel.corpus, idx, model=model, progress=progress)
    return dense / np.maximum(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12), words


_WORD = re.compile(r"[^\W\d_]+", re.U)


def _dense_eta2(D: np.ndarray, groups: np.ndarray) -> float:
    total = ((D - D.mean(axis=0)) ** 2).sum()
    inside = sum(((D[groups == g] - D[groups == g].mean(axis=0)) ** 2).sum() for g in np.unique(groups))
    return float(1 - inside / total) if total > 0 else 0.0


def _minus_group_means(D: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = D.copy()
    for g in np.unique(groups):
        out[groups == g] -= D[groups == g].mean(axis=0)
    return out


def _word_overlap(words: list[Counter], groups: np.ndarray, top: int = 30) -> float:
    tops = []
    for g in np.unique(groups):
        counts: Counter = Counter()
        for i in np.flatnonzero(groups == g):
            counts.update(words[i])
        tops.append({w for w, _ in counts.most_common(top)})
    pairs = [len(a & b) / max(len(a | b), 1) for i, a in enumerate(tops) for b in tops[i + 1:]]
    return float(np.mean(pairs)) if pairs else 1.0

"""Property-based search over a corpus: by SAE features (chosen from a query, or given), by dense
sentence embeddings (a FAISS index), or both fused; and nearest documents to a document.

SAE score of a document = sum over the chosen features f of weight_f * value_df / max_f, where
max_f is the feature's largest value in the corpus (its rank-1 exemplar), so features on different
activation scales count alike. That raw score grows with document length (more tokens, higher maxima,
more features firing), so by default documents are ranked by how far it exceeds the score documents of
the same length get (search_length; raw_score keeps the raw one). Documents where a --not-feature fires
are dropped. Everything is computed from the sparse rows in the store; nothing N x d_sae is built.

Results: rank, doc_id, score (raw_score too in sae mode), features (the chosen features that fired, by contribution), matched
(per feature: label, value, contribution, the strongest token's span and text), snippet (the text
around the best span with every matched span marked «like this»), doc_idx.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from saeembed.analysis.search_length import LENGTH_STRENGTH, check_length_control, length_adjusted
from saeembed.analysis.search_words import word_ranking
from saeembed.analysis.selection import Selection, embedding_matrix
from saeembed.errors import InputError
from saeembed.store import CorpusInfo, SAEInfo, Store

RRF_K = 60  # reciprocal-rank-fusion constant (Cormack et al. 2009)
# The SAE ranking counts twice the dense one in hybrid fusion: of weights 0.5, 1 and 2 (k 10 and 60),
# 2 was best on all three benchmark sets (benchmarks/results/search_real.md).
HYBRID_SAE_WEIGHT = 2.0
# The literal-word ranking (search_words) joins hybrid fusion with this weight (0: left out); chosen on
# the same three sets.
HYBRID_WORD_WEIGHT = 1.0
MODES = ("sae", "dense", "hybrid")


def default_mode(query: str | None) -> str:
    """hybrid for a query text (never worse than dense on the benchmark sets), sae for features only."""
    return "hybrid" if query and query.strip() else "sae"


@dataclass(frozen=True)
class Target:
    """What a search runs over: a corpus, its SAE, and optionally a subset of its documents."""

    corpus: CorpusInfo
    sae: SAEInfo
    doc_idx: np.ndarray | None  # sorted; None = every document
    name: str


def target(store: Store, corpus: str, *, where: str | None = None, sae: str | None = None,
           doc_idx=None) -> Target:
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    keep = None if doc_idx is None else np.unique(np.asarray(doc_idx, dtype=np.int64))
    name = corpus
    if where:  # only the columns the filter names are read (1 M documents: milliseconds, not seconds)
        table = store.select_documents(info, s, [where], encoded_only=False)[0]
        idx = table["doc_idx"].to_numpy().astype(np.int64)
        keep = idx if keep is None else np.intersect1d(keep, idx)
        name = f"{corpus} where {where}"
    return Target(info, s, keep, name)


# --- which features: the query plan ---------------------------------------------------------------


def parse_feature_weights(items) -> dict[int, float]:
    """--feature values: 123 or 123:0.5 (weight; negative weights penalise)."""
    out: dict[int, float] = {}
    for item in items or []:
        if isinstance(item, (int, np.integer)):
            out[int(item)] = 1.0
            continue
        if isinstance(item, tuple):
            out[int(item[0])] = float(item[1])
            continue
        text = str(item).strip()
        fid, _, w = text.partition(":")
        try:
            out[int(fid)] = float(w) if w else 1.0
        except ValueError:
            raise InputError(f"--feature {text!r}: use a feature id, optionally with a weight, e.g. 123 or 123:0.5") from None
    return out


def plan_query(
    store: Store,
    t: Target,
    query: str | None = None,
    *,
    features=None,
    n_features: int = 30,
    match: str = "auto",
    matcher=None,
    **match_opts,
) -> pl.DataFrame:
    """The features a search scores with: feature, weight, label, evidence, source (query | given).

    Query-matched features get weight = match score / best match score; given features weight 1 (or
    FEATURE:WEIGHT) and override a matched one."""
    from saeembed.interp.match import match_features

    given = parse_feature_weights(features)
    t.sae.check_features(list(given))
    rows = []
    if query:
        matched = match_features(store, t.sae, query, corpus=t.corpus.name, top=n_features, method=match,
                                 matcher=matcher, doc_idx=t.doc_idx, **match_opts)
        best = float(matched["score"].max()) if matched.height else 0.0
        for f, s, lab, ev in matched.select("feature", "score", "label", "evidence").iter_rows():
            if f in given:
                continue
            rows.append((int(f), s / best if best > 0 else 1.0, lab, ev, "query"))
    labels = dict(store.labels(t.sae.sae_key, list(given)).select("feature", "label").iter_rows()) if given else {}
    rows += [(f, w, labels.get(f), "given with --feature", "given") for f, w in given.items()]
    if not rows:
        raise InputError("nothing to search for: give a query or --feature IDs")
    return pl.DataFrame(rows, schema={"feature": pl.Int64, "weight": pl.Float64, "label": pl.Utf8,
                                      "evidence": pl.Utf8, "source": pl.Utf8}, orient="row")


# --- scoring ------------------------------------------------------------------------------------


def _sae_scores(store: Store, t: Target, plan: pl.DataFrame, not_features: list[int],
                length_control: str = "off", length_strength: float = LENGTH_STRENGTH
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(doc_idx, score, raw score) of every document where a planned feature fires (raw score > 0), best
    first by score (raw, or with the length effect removed: see search_length); filters applied."""
    scale = store.feature_scales(t.corpus, t.sae, plan["feature"].to_list())
    w = plan.select("feature", "weight").join(scale, on="feature", how="inner")
    if w.is_empty():
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    doc, raw = store.weighted_scores(t.corpus, t.sae, w)
    keep = raw > 0
    if t.doc_idx is not None:
        keep &= np.isin(doc, t.doc_idx)
    if not_features:
        keep &= ~np.isin(doc, store.docs_with_features(t.corpus, t.sae, not_features))
    doc, raw = doc[keep], raw[keep]
    score = raw
    if length_control != "off" and len(doc):
        pool_doc, pool_len = store.token_counts(t.corpus.corpus_id, t.sae.sae_key)
        if t.doc_idx is not None:
            inside = np.isin(pool_doc, t.doc_idx)
            pool_doc, pool_len = pool_doc[inside], np.asarray(pool_len)[inside]
        score = length_adjusted(doc, raw, pool_doc, np.asarray(pool_len), length_control, length_strength)
    order = np.lexsort((doc, -score))
    return doc[order], score[order], raw[order]


_FAISS: dict[tuple, object] = {}


def forget_indexes() -> None:
    """Forget the in-process FAISS indexes (a warm server whose store another process changed)."""
    _FAISS.clear()


def dense_index(store: Store, info: CorpusInfo, model: str | None = None, progress=None):
    """(FAISS inner-product index over the corpus's unit sentence embeddings, embedder); built once per
    process and corpus size (the embeddings themselves are cached in the store)."""
    import faiss

    from saeembed.encode.dense import corpus_embeddings, get_embedder

    embedder = get_embedder(model)
    key = (str(store.path.resolve()), info.corpus_id, embedder.name, info.n_docs)
    if key not in _FAISS:
        vectors = corpus_embeddings(store, info, model=model, progress=progress)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        _FAISS[key] = index
    return _FAISS[key], embedder


def _dense_scores(store: Store, t: Target, query: str, depth: int, model=None, progress=None):
    import faiss

    index, embedder = dense_index(store, t.corpus, model, progress)
    q = embedder.embed([query]).astype(np.float32)
    if t.doc_idx is None:
        k = min(depth, index.ntotal)
        scores, idx = index.search(q, k)
    else:  # restrict the exact search to the selected documents
        sel = faiss.IDSelectorBatch(t.doc_idx.astype(np.int64))
        k = min(depth, len(t.doc_idx))
        scores, idx = index.search(q, k, params=faiss.SearchParameters(sel=sel))
    ok = idx[0] >= 0
    return idx[0][ok].astype(np.int64), scores[0][ok].astype(np.float64)


def search(
    store: Store,
    corpus: str,
    query: str | None = None,
    *,
    features=None,
    not_features=None,
    where: str | None = None,
    top: int = 20,
    mode: str | None = None,
    n_features: int = 30,
    match: str = "auto",
    matcher=None,
    plan: pl.DataFrame | None = None,
    sae: str | None = None,
    model: str | None = None,
    doc_idx=None,
    depth: int = 1000,
    length_control: str = "residual",
    length_strength: float = LENGTH_STRENGTH,
    sae_weight: float = HYBRID_SAE_WEIGHT,
    word_weight: float = HYBRID_WORD_WEIGHT,
    progress=None,
    **match_opts,
) -> pl.DataFrame:
    """Documents of `corpus` best matching `query` and/or `features`, best first (see module doc).

    mode: sae | dense | hybrid (reciprocal-rank fusion of the sae and dense rankings, each cut at
    `depth`, the sae one weighted `sae_weight`, and the literal-word ranking of search_words weighted
    `word_weight`); default: default_mode(query). not_features: drop documents where any fires. where: metadata filter. doc_idx: only these
    documents. plan: a frame from plan_query (skips matching). length_control: residual | zscore | off,
    how SAE scores are corrected for document length, length_strength: how much of the expected score
    at a length residual subtracts (search_length). Empty frame when nothing matches."""
    check_length_control(length_control)
    mode = mode or default_mode(query)
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    if top < 1:
        raise InputError("--top must be at least 1")
    if mode != "sae" and not (query and query.strip()):
        raise InputError(f"{mode} search needs a query text")
    t = target(store, corpus, where=where, sae=sae, doc_idx=doc_idx)
    not_features = t.sae.check_features(list(not_features or []))
    if mode != "dense" and plan is None:
        plan = plan_query(store, t, query, features=features, n_features=n_features, match=match, matcher=matcher,
                          model=model, progress=progress, **match_opts)
    if mode == "sae":
        doc, score, raw = _sae_scores(store, t, plan, not_features, length_control, length_strength)
        doc, score = doc[:top], score[:top]
        extra = {"raw_score": raw[:top]}
    else:
        d_doc, d_score = _dense_scores(store, t, query, max(depth, top), model, progress)
        if not_features:
            banned = store.docs_with_features(t.corpus, t.sae, not_features)
            keep = ~np.isin(d_doc, banned)
            d_doc, d_score = d_doc[keep], d_score[keep]
        if mode == "dense":
            doc, score = d_doc[:top], d_score[:top]
            extra = {"dense_score": score}
        else:
            s_doc, s_score, _ = _sae_scores(store, t, plan, not_features, length_control, length_strength)
            rankings = {"sae_score": (s_doc[:depth], s_score[:depth], sae_weight), "dense_score": (d_doc, d_score, 1.0)}
            if word_weight > 0:
                n = t.corpus.n_docs if t.doc_idx is None else len(t.doc_idx)
                w_doc, w_score = word_ranking(store, t.corpus.corpus_id, query, t.doc_idx, n, depth)
                if not_features and len(w_doc):
                    keep = ~np.isin(w_doc, store.docs_with_features(t.corpus, t.sae, not_features))
                    w_doc, w_score = w_doc[keep], w_score[keep]
                rankings["word_score"] = (w_doc, w_score, word_weight)
            doc, score, extra = _fuse(rankings, top)
    return _results(store, t, doc, score, plan if mode != "dense" else None, extra)


def _fuse(rankings: dict[str, tuple[np.ndarray, np.ndarray, float]], top: int):
    """Reciprocal-rank fusion: weight/(K + rank) summed over the rankings {column: (docs, scores, weight)};
    each ranking's own score comes back as that column (NaN where it did not rank the document)."""
    fused: dict[int, float] = {}
    for docs, _, w in rankings.values():
        for r, d in enumerate(docs.tolist()):
            fused[d] = fused.get(d, 0.0) + w / (RRF_K + r + 1)
    order = sorted(fused, key=lambda d: (-fused[d], d))[:top]
    extra = {}
    for column, (docs, scores, _) in rankings.items():
        by_doc = dict(zip(docs.tolist(), scores.tolist()))
        extra[column] = np.asarray([by_doc.get(d, np.nan) for d in order])
    return np.asarray(order, np.int64), np.asarray([fused[d] for d in order]), extra


# --- result rows with matched features and highlighted spans ---------------------------------------

_MATCHED = pl.List(pl.Struct({"feature": pl.Int64, "label": pl.Utf8, "value": pl.Float64, "contribution": pl.Float64,
                              "span_start": pl.Int64, "span_end": pl.Int64, "token": pl.Utf8}))


def _results(store: Store, t: Target, doc: np.ndarray, score: np.ndarray, plan: pl.DataFrame | None,
             extra: dict) -> pl.DataFrame:
    schema = {"rank": pl.Int64, "doc_id": pl.Utf8, "score": pl.Float64, "features": pl.List(pl.Int64),
              "matched": _MATCHED, "snippet": pl.Utf8, "doc_idx": pl.Int64}
    if len(doc) == 0:
        return pl.DataFrame(schema=schema | {k: pl.Float64 for k in extra})
    docs = store.documents(t.corpus, metadata=False, doc_idx=doc.tolist())
    text = dict(zip(docs["doc_idx"].to_list(), docs["text"].to_list()))
    ids = dict(zip(docs["doc_idx"].to_list(), docs["doc_id"].to_list()))
    per_doc: dict[int, list[dict]] = {int(d): [] for d in doc}
    if plan is not None and plan.height:
        acts = store.activation_spans(t.corpus, t.sae, doc.tolist(), plan["feature"].to_list())
        scale = dict(store.feature_scales(t.corpus, t.sae, plan["feature"].to_list()).iter_rows())
        weight = dict(plan.select("feature", "weight").iter_rows())
        label = dict(plan.select("feature", "label").iter_rows())
        for d, f, v, s, e in acts.iter_rows():
            tx = text[d]
            ok = s is not None and e is not None and 0 <= s < e <= len(tx)
            per_doc[d].append({
                "feature": f, "label": label.get(f), "value": float(v),
                "contribution": weight[f] * v / scale[f] if scale.get(f) else 0.0,
                "span_start": s if ok else None, "span_end": e if ok else None, "token": tx[s:e] if ok else None,
            })
        for d in per_doc:
            per_doc[d].sort(key=lambda m: (-m["contribution"], m["feature"]))
    frame = pl.DataFrame({
        "rank": np.arange(1, len(doc) + 1),
        "doc_id": [ids[int(d)] for d in doc],
        "score": np.asarray(score, np.float64),
        "features": [[m["feature"] for m in per_doc[int(d)] if m["contribution"] > 0] for d in doc],
        "matched": [per_doc[int(d)] for d in doc],
        "snippet": [highlight(text[int(d)], [(m["span_start"], m["span_end"]) for m in per_doc[int(d)]]) for d in doc],
        "doc_idx": doc.astype(np.int64),
        **{k: np.asarray(v, np.float64) for k, v in extra.items()},
    }, schema_overrides=schema)
    return frame


def highlight(text: str, spans: list[tuple], width: int = 80) -> str:
    """One line of `text` around its first (strongest) span, every span in view marked «…»."""
    spans = [(s, e) for s, e in spans if s is not None and e is not None and 0 <= s < e <= len(text)]
    if not spans:
        body = " ".join(text[: 2 * width].split())
        return body + ("…" if len(text) > 2 * width else "")
    first = spans[0]
    left, right = max(0, first[0] - width), min(len(text), first[1] + width)
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        s, e = max(s, left), min(e, right)
        if s >= e:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, pos = [], left
    for s, e in merged:
        out += [text[pos:s], "«", text[s:e], "»"]
        pos = e
    out.append(text[pos:right])
    line = " ".join("".join(out).split())
    return ("…" if left else "") + line + ("…" if right < len(text) else "")


# --- similar documents -----------------------------------------------------------------------------


def similar(
    store: Store,
    corpus: str,
    doc_id: str,
    *,
    features=None,
    where: str | None = None,
    top: int = 10,
    sae: str | None = None,
) -> pl.DataFrame:
    """Documents nearest to `doc_id` by cosine of SAE embeddings (restricted to `features` when given):
    rank, doc_id, score, features (shared features, biggest product first), snippet, doc_idx."""
    t = target(store, corpus, where=where, sae=sae)
    feats = t.sae.check_features([int(f) for f in features]) if features else None
    q_idx = store.doc_idx_of(t.corpus, doc_id)
    if q_idx is None:
        raise InputError(f"no document with id {doc_id!r} in corpus {corpus!r}")
    everyone = np.arange(t.corpus.n_docs, dtype=np.int64) if t.doc_idx is None else t.doc_idx
    pool = np.union1d(everyone, [q_idx])
    X = embedding_matrix(store, Selection(t.corpus, t.sae, pool, t.name), features=feats).tocsr()
    X.sum_duplicates()
    X.sort_indices()
    qpos = int(np.searchsorted(pool, q_idx))
    q = X[qpos]
    if q.nnz == 0:
        what = "the chosen features" if feats else "any feature"
        raise InputError(f"document {doc_id!r} has no activation on {what}; nothing to compare")
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    sims = np.asarray((X @ q.T).toarray()).ravel() / np.maximum(norms * norms[qpos], 1e-12)
    sims[qpos] = -np.inf
    in_pool = np.isin(pool, everyone)
    sims[~in_pool] = -np.inf
    cand = np.flatnonzero(sims > 0)
    order = cand[np.lexsort((pool[cand], -sims[cand]))][:top]
    doc = pool[order]
    if len(doc) == 0:
        return pl.DataFrame(schema={"rank": pl.Int64, "doc_id": pl.Utf8, "score": pl.Float64,
                                    "features": pl.List(pl.Int64), "snippet": pl.Utf8, "doc_idx": pl.Int64})
    docs = store.documents(t.corpus, metadata=False, doc_idx=doc.tolist())
    text = dict(zip(docs["doc_idx"].to_list(), docs["doc_id"].to_list()))
    body = dict(zip(docs["doc_idx"].to_list(), docs["text"].to_list()))
    shared = []
    qf, qv = q.indices, q.data
    for p in order:
        r = X[p]
        common = np.intersect1d(qf, r.indices)
        prod = [float(qv[np.searchsorted(qf, c)] * r.data[np.searchsorted(r.indices, c)]) for c in common]
        shared.append([int(c) for _, c in sorted(zip(prod, common), key=lambda x: (-x[0], x[1]))][:10])
    return pl.DataFrame({
        "rank": np.arange(1, len(doc) + 1),
        "doc_id": [text[int(d)] for d in doc],
        "score": sims[order].astype(np.float64),
        "features": shared,
        "snippet": [highlight(body[int(d)], []) for d in doc],
        "doc_idx": doc.astype(np.int64),
    }, schema_overrides={"features": pl.List(pl.Int64)})

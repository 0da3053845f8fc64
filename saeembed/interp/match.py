"""From a free-text query ("mentions a specific date") to the SAE features that express it, offline.

Three ways to find them, each a "matcher" returning the same frame (feature, score, label, evidence):

- describe: the query's sentence embedding against each feature's description, which is its label
  when the store has one, else its exemplars (the strongest tokens, widened to whole words, and the
  text around them). Feature vectors are cached in the `feature_embeddings` table, keyed by a hash of
  the text that was embedded, so they are recomputed only when a label or the exemplars change.
- prf (pseudo-relevance feedback): the documents of the corpus densely most similar to the query are
  taken as a guess at what the user wants; features over-represented among them (share of those
  documents minus share of the corpus) are the answer. Needs a corpus and its dense embeddings.
- lexical: features whose strongest exemplars in the corpus fire on the query's own words
  (match_lexical): reaches "mentions a deprecated parameter" when no label or dense neighbour does.
- auto (default): describe and prf fused (each min-max scaled over the candidates, weighted by
  PRF_WEIGHT), plus LEXICAL_WEIGHT times the lexical share; describe alone when neither prf nor
  lexical is available (no corpus; prf also not for a large corpus without cached dense embeddings).

Other matchers (e.g. an LLM choosing among labelled features) plug in with `register_matcher(name, fn)` or by
passing `matcher=fn`; `fn(store, sae, query, corpus=..., top=..., **opts)` returns the same frame.
opts may carry doc_idx (the documents a search is restricted to), model and progress; a matcher
ignores what it does not use (accept **_). `saeembed search --match NAME` picks a registered matcher.
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable

import numpy as np
import polars as pl

from saeembed.errors import InputError
from saeembed.interp.match_lexical import lexical
from saeembed.store import SAEInfo, Store
from saeembed.textwindow import window, word_bounds

# Columns every matcher returns (more are allowed).
MATCH_COLUMNS = ["feature", "score", "label", "evidence"]
# auto runs prf without asking only when the corpus's dense embeddings are cheap to get.
PRF_AUTO_MAX_DOCS = 20_000
PRF_WEIGHT = 0.7  # share of prf in the fused score (the rest is describe)
LEXICAL_WEIGHT = 0.5  # added to the fused score per unit of exemplar-word share (match_lexical)

Matcher = Callable[..., pl.DataFrame]
_MATCHERS: dict[str, Matcher] = {}


def register_matcher(name: str, fn: Matcher) -> None:
    """Make `fn` available as match_features(..., method=name) and `--match name` in the CLI."""
    _MATCHERS[name] = fn


def matchers() -> list[str]:
    return sorted(_MATCHERS)


def match_features(
    store: Store,
    sae: SAEInfo,
    query: str,
    *,
    corpus: str | None = None,
    top: int = 10,
    method: str = "auto",
    matcher: Matcher | None = None,
    **opts,
) -> pl.DataFrame:
    """The `top` features that best express `query`, best first: feature, score, label, evidence
    (plus per-source scores). corpus: only features that fire in it, and enables prf.

    method: auto | describe | prf | any registered name; matcher: a callable used instead of method.
    opts: model (sentence model, default the embedded MiniLM), prf_docs (50), exemplars (5 per feature),
    candidates (only these feature ids, for describe), doc_idx (documents a search is restricted to),
    progress (callable(done, total) while embedding feature descriptions or documents).
    """
    if not isinstance(query, str) or not query.strip():
        raise InputError("empty query: say what the documents should be about, e.g. \"mentions a specific date\"")
    if top < 1:
        raise InputError("--top must be at least 1")
    fn = matcher or _MATCHERS.get(method)
    if fn is None:
        raise InputError(f"unknown feature matcher {method!r}; choose one of: {', '.join(matchers())}")
    frame = fn(store, sae, query.strip(), corpus=corpus, top=top, **opts)
    missing = [c for c in MATCH_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"matcher {method!r} returned no {missing[0]!r} column")
    return frame.sort(["score", "feature"], descending=[True, False]).head(top)


# --- describe: query vs labels / exemplars -------------------------------------------------------


def _describe(store, sae, query, *, corpus=None, top=10, model=None, exemplars=5, progress=None, candidates=None,
              **_) -> pl.DataFrame:
    from saeembed.encode.dense import get_embedder

    embedder = get_embedder(model)
    if candidates is None:
        candidates = _candidates(store, sae, corpus)
    key = (str(store.path.resolve()), sae.sae_key, embedder.name, exemplars,
           _hash(",".join(map(str, candidates))) if candidates is not None else None, store.description_fingerprint(sae.sae_key))
    if key not in _DESCRIBED:  # rebuilding 4k description texts costs seconds; labels/exemplars rarely change
        texts = feature_texts(store, sae, candidates, per_feature=exemplars)
        vectors = feature_vectors(store, sae, texts, embedder, progress=progress) if texts.height else None
        if len(_DESCRIBED) > 8:
            _DESCRIBED.clear()
        _DESCRIBED[key] = (texts, vectors)
    texts, vectors = _DESCRIBED[key]
    if texts.is_empty():
        return _empty()
    q = embedder.embed([query])[0]
    cos = vectors @ q
    return pl.DataFrame({
        "feature": texts["feature"],
        "score": cos.astype(np.float64),
        "label": texts["label"],
        "evidence": [
            f"{src} “{_short(t)}” ~ query (cos {c:.2f})"
            for src, t, c in zip(texts["source"], texts["shown"], cos)
        ],
        "describe": cos.astype(np.float64),
    }).sort("score", descending=True)


_DESCRIBED: dict[tuple, tuple] = {}


def _candidates(store: Store, sae: SAEInfo, corpus: str | None) -> list[int] | None:
    """Features worth matching: those that fire in the corpus (None = every feature of the SAE)."""
    if corpus is None:
        return None
    return store.exemplar_features(store.corpus(corpus).corpus_id, sae.sae_key)


def feature_texts(store: Store, sae: SAEInfo, features: list[int] | None = None, *, per_feature: int = 5) -> pl.DataFrame:
    """What describes each feature: feature, source (label | exemplars), text (to embed), shown
    (short form for evidence), label. Labels win; exemplars come from every corpus encoded with the SAE."""
    labels = store.labels(sae.sae_key, features)
    labelled = set(labels["feature"].to_list())
    rows = [
        (f, "label", lab, lab, lab) for f, lab in zip(labels["feature"], labels["label"]) if lab and lab.strip()
    ]
    todo = None if features is None else [f for f in features if f not in labelled]
    if todo is None or todo:
        ex = store.exemplar_texts(sae.sae_key, todo, per_feature)
        for (feature,), part in ex.group_by(["feature"], maintain_order=True):
            if feature in labelled:
                continue
            words, contexts = [], []
            for text, s, e in zip(part["text"], part["span_start"], part["span_end"]):
                w, c = _word_and_context(text, s, e)
                if w and w.lower() not in (x.lower() for x in words):
                    words.append(w)
                contexts.append(c)
            # Tokens first (what fires), then their contexts (what it is about).
            text = ", ".join(words) + ". " + " … ".join(contexts)
            rows.append((int(feature), "exemplars", text, ", ".join(words), None))
    return pl.DataFrame(
        rows, schema={"feature": pl.Int64, "source": pl.Utf8, "text": pl.Utf8, "shown": pl.Utf8, "label": pl.Utf8},
        orient="row",
    ).sort("feature")


def _word_and_context(text: str, start, end, width: int = 40) -> tuple[str, str]:
    """The span widened to whole words, and a one-line window around it."""
    if start is None or end is None or not 0 <= start < end <= len(text):
        start = end = None
    else:
        start, end = word_bounds(text, start, end)
    context, _ = window(text, start, end, width, ellipsis=False)
    return (text[start:end].strip() if start is not None else ""), " ".join(context.split())


def feature_vectors(store: Store, sae: SAEInfo, texts: pl.DataFrame, embedder, *, progress=None) -> np.ndarray:
    """Sentence embeddings of texts["text"] (rows aligned), from the feature_embeddings cache where the
    text is unchanged; the rest are embedded and stored."""
    hashes = [_hash(t) for t in texts["text"]]
    have = store.feature_embeddings(sae.sae_key, embedder.name)
    out = np.zeros((texts.height, embedder.dim), dtype=np.float32)
    todo = []
    for i, key in enumerate(zip(texts["feature"], texts["source"], hashes)):
        if key in have:
            out[i] = have[key]
        else:
            todo.append(i)
    if todo:
        done = [0]

        def tick(n):
            done[0] += n
            if progress is not None:
                progress(done[0], len(todo))

        for start in range(0, len(todo), VECTOR_BLOCK):  # stored block by block: an interrupted first query keeps them
            block = todo[start : start + VECTOR_BLOCK]
            new = embedder.embed([texts["text"][i] for i in block], progress=tick)
            out[block] = new
            if not store.read_only:  # still usable, just not cached
                store.save_feature_embeddings(sae.sae_key, embedder.name, texts["feature"].to_numpy()[block],
                                              [texts["source"][i] for i in block], [hashes[i] for i in block], new)
    return out


VECTOR_BLOCK = 512  # feature descriptions embedded (and cached) per step


# --- prf: features over-represented among the documents densely nearest the query ------------------


def _prf(store, sae, query, *, corpus=None, top=10, model=None, prf_docs=50, doc_idx=None, progress=None,
         **_) -> pl.DataFrame:
    from saeembed.encode.dense import corpus_embeddings, get_embedder

    if corpus is None:
        raise InputError("feature matching by pseudo-relevance feedback needs a corpus (--corpus)")
    info = store.corpus(corpus)
    embedder = get_embedder(model)
    dense = corpus_embeddings(store, info, model=model, progress=progress)
    # doc_idx (a search restricted by --where): feedback only from, and frequencies only over, those docs
    pool = np.arange(info.n_docs) if doc_idx is None else np.asarray(doc_idx, dtype=np.int64)
    if len(pool) == 0:
        return _empty()
    sims = dense[pool] @ embedder.embed([query])[0]
    m = int(min(max(prf_docs, 1), len(pool)))
    nearest = pool[np.argpartition(-sims, m - 1)[:m]] if m < len(pool) else pool
    restrict = doc_idx is not None
    frame = store.near_feature_docs(info.corpus_id, sae.sae_key, nearest.tolist(),
                                    pool.tolist() if restrict else None)
    if frame.is_empty():
        return _empty()
    n = len(pool) if restrict else max(store.n_encoded_docs(info, sae), 1)
    frame = frame.with_columns(
        near=pl.col("near_docs") / m, overall=pl.col("docs") / n
    ).with_columns(score=pl.col("near") - pl.col("overall")).filter(pl.col("score") > 0)
    labels = store.labels(sae.sae_key, frame["feature"].to_list()).select("feature", "label")
    return (
        frame.join(labels, on="feature", how="left")
        .with_columns(
            evidence=pl.format("fires in {}/{} docs nearest the query vs {}% of the corpus",
                               pl.col("near_docs"), pl.lit(m), (pl.col("overall") * 100).round(1)),
            prf=pl.col("score"),
        )
        .select("feature", "score", "label", "evidence", "prf")
        .with_columns(pl.col("feature").cast(pl.Int64))
        .sort("score", descending=True)
    )


def prf_available(store: Store, corpus: str | None, model: str | None = None) -> bool:
    """Whether auto should use prf: a corpus whose dense embeddings are cached or cheap to compute."""
    if corpus is None:
        return False
    info = store.corpus(corpus)
    if info.n_docs <= PRF_AUTO_MAX_DOCS:
        return True
    from saeembed.encode.models import resolve_model

    return len(store.dense_embedded_docs(info, resolve_model(model)[1])) >= info.n_docs


def _auto(store, sae, query, *, corpus=None, top=10, prf_weight: float = PRF_WEIGHT,
          lexical_weight: float = LEXICAL_WEIGHT, **opts) -> pl.DataFrame:
    desc = _describe(store, sae, query, corpus=corpus, top=top, **opts)
    parts = [desc.select("feature", "label", "describe", ev_d="evidence")]
    use_prf = prf_available(store, corpus, opts.get("model"))
    prf = _prf(store, sae, query, corpus=corpus, top=top, **opts) if use_prf else _empty()
    if "prf" in prf.columns and not prf.is_empty():
        parts.append(prf.select("feature", "prf", ev_p="evidence", label_p="label"))
    lex = lexical(store, sae, query, corpus=corpus, **opts) if corpus is not None and lexical_weight > 0 else _empty()
    if "lexical" in lex.columns and not lex.is_empty():
        parts.append(lex.select("feature", "lexical", ev_l="evidence"))
    if len(parts) == 1:
        return desc
    both = parts[0]
    for p in parts[1:]:
        both = both.join(p, on="feature", how="full", coalesce=True)
    d = _minmax(both["describe"].fill_null(both["describe"].min()))
    p = _minmax(both["prf"].fill_null(0.0)) if "prf" in both.columns else None
    # prf and describe are min-max scaled; lexical is already a share (0..1) and stays one, so a query
    # whose words no exemplar fires on adds nothing
    score = d if p is None else (1 - prf_weight) * d + prf_weight * p
    if "lexical" in both.columns:
        score = score + lexical_weight * both["lexical"].fill_null(0.0)
    evidence = [c for c in ("ev_l", "ev_p", "ev_d") if c in both.columns]
    out = both.with_columns(
        score=score,
        label=pl.coalesce("label", "label_p") if "label_p" in both.columns else pl.col("label"),
        evidence=pl.concat_str([pl.col(c) for c in evidence], separator="; ", ignore_nulls=True),
    )
    return out.select("feature", "score", "label", "evidence",
                      *[c for c in ("describe", "prf", "lexical") if c in out.columns])


def _minmax(s: pl.Series) -> pl.Series:
    lo, hi = s.min(), s.max()
    if lo is None or hi is None or hi <= lo:
        return pl.Series(s.name, np.zeros(len(s)))
    return (s - lo) / (hi - lo)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"feature": pl.Int64, "score": pl.Float64, "label": pl.Utf8, "evidence": pl.Utf8})


def _short(text: str, n: int = 80) -> str:
    text = re.sub(r"\s+", " ", text or "")
    return text if len(text) <= n else text[: n - 1] + "…"


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


register_matcher("describe", _describe)
register_matcher("prf", _prf)
register_matcher("lexical", lexical)
register_matcher("auto", _auto)


# --- llm: an LLM chooses among the labelled features (assist.choose_features) ----------------------


def _llm_matcher(store: Store, sae: SAEInfo, query: str, *, corpus: str | None = None, top: int = 10, **_):
    """`--match llm`: the model named by $SAEEMBED_LLM_MODEL (server: $SAEEMBED_LLM_BASE_URL, key:
    $SAEEMBED_LLM_KEY or $OPENAI_API_KEY) picks features among the labelled ones closest to the query."""
    import os

    from saeembed.interp.assist import choose_features
    from saeembed.interp.llm import LLMClient, LLMConfig

    model = os.environ.get("SAEEMBED_LLM_MODEL")
    if not model:
        raise InputError("--match llm needs a model: set SAEEMBED_LLM_MODEL (and SAEEMBED_LLM_KEY or "
                         "OPENAI_API_KEY; SAEEMBED_LLM_BASE_URL for another OpenAI-compatible server)")
    client = LLMClient(store, LLMConfig(model=model, base_url=os.environ.get("SAEEMBED_LLM_BASE_URL")))
    chosen = choose_features(store, query, sae=sae.sae_hash, llm=client, top=top)
    if chosen.is_empty():
        raise InputError("--match llm chooses among labelled features and none are labelled; run `saeembed label` first")
    return chosen.select("feature", pl.col("similarity").alias("score"), "label", pl.col("reason").alias("evidence"))


register_matcher("llm", _llm_matcher)

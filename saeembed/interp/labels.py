"""Labelling features end to end: choose features, draw examples, label (offline or LLM), score, store.

`label_features` is the library entry point behind `saeembed label`; `search_labels` is behind
`saeembed features --search`. Labels go to the store's feature_labels table with their source
("offline" or "llm"), score, the model used and, in `details`, the examples used to explain and to
score (corpus_id, doc_idx pairs that never overlap), the score breakdown and the LLM's description.
A label whose score is near chance, that matched none of its held-out activating examples, or that was
copied from an instruction inside the example texts (prompt injection) is stored but marked weak:
status "weak: <why>", weak = true, and details["weak"] = why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from saeembed.errors import InputError, StoreError
from saeembed.interp.examples import ExampleSampler, FeatureExamples, SampleConfig
from saeembed.interp.explain import explain_prompt, parse_explanation
from saeembed.interp.llm import LLMClient, LLMResult, MalformedAnswer
from saeembed.interp.offline import TermStats, metadata_overrep, offline_label
from saeembed.interp.quoting import copied_from_instructions
from saeembed.interp.scoring import EmbeddingScorer, answer_checks, collect_scores, score_prompts, weak_reason
from saeembed.store import SAEInfo, Store
from saeembed.store.labels import metadata_context

RESULT_SCHEMA = {
    "feature": pl.Int64, "label": pl.Utf8, "label_source": pl.Utf8, "score": pl.Float64, "status": pl.Utf8,
    "n_active": pl.Int64, "description": pl.Utf8, "detection": pl.Float64, "fuzzing": pl.Float64,
    "auroc_hard": pl.Float64, "weak": pl.Boolean,
}


@dataclass
class LabelConfig:
    n_terms: int = 3  # offline: terms in a label
    sample: SampleConfig | None = None  # None: offline/LLM defaults below
    batch: int = 10  # LLM scoring: examples per detection/fuzzing prompt
    relabel_below: float | None = None  # LLM: explain again once when the score is below this
    background: int = 400  # offline: background windows for the term statistics
    chunk: int = 64  # features sampled per round of queries
    save: bool = True
    embed_model: str | None = None  # offline scorer's sentence model (default: embedded MiniLM)


OFFLINE_SAMPLE = SampleConfig(n_top=20, n_quantile=30, n_score=30, n_random=30, n_hard=10)
LLM_SAMPLE = SampleConfig(n_top=10, n_quantile=10, n_score=20, n_random=5, n_hard=5)


@dataclass
class LabelRun:
    frame: pl.DataFrame  # RESULT_SCHEMA rows, one per requested feature
    method: str
    usage: dict | None = None  # LLM tokens / calls / cost
    budget_stopped: bool = False
    provenance: dict = field(default_factory=dict)


# --- which SAE, corpora, features --------------------------------------------------------------------

def resolve_scope(store: Store, corpus: str | list[str] | None = None, sae: str | None = None) -> tuple[SAEInfo, list[int]]:
    """The SAE and the corpora whose documents explain its features (default: all encoded with it)."""
    if corpus:
        names = [corpus] if isinstance(corpus, str) else list(corpus)
        infos = [store.corpus(n) for n in names]
        saes = {store.encoded_sae(i, sae).sae_key for i in infos}
        if len(saes) > 1:
            raise StoreError("these corpora are encoded with different SAEs; label one SAE at a time (--sae)")
        return store.sae_info(saes.pop()), [i.corpus_id for i in infos]
    keys = store.sae_keys(sae)
    if not keys:
        raise StoreError("the store holds no SAE" + (f" matching {sae!r}" if sae else "; run `saeembed encode`"))
    if len(keys) > 1:
        raise StoreError("the store holds several SAEs; pick one with --sae")
    s = store.sae_info(keys[0])
    ids = store.encoded_corpus_ids(s.sae_key)
    if not ids:
        raise StoreError(f"no corpus is encoded with SAE {s.sae_hash}; run `saeembed encode` first")
    return s, ids


def live_features(store: Store, sae: SAEInfo, corpus_ids: list[int], limit: int | None = None) -> list[int]:
    """Features that fire on at least one document, most frequent first."""
    return store.firing_features(sae.sae_key, corpus_ids, limit)


# --- labelling --------------------------------------------------------------------------------------

def label_features(
    store: Store,
    features: list[int],
    *,
    corpus: str | list[str] | None = None,
    sae: str | None = None,
    llm: LLMClient | None = None,
    config: LabelConfig | None = None,
    scorer: EmbeddingScorer | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelRun:
    """Label and score `features`; store the labels (config.save). Offline unless an LLMClient is given.

    Failures (a malformed LLM answer, a feature that never fires) are rows with a `status`, never
    exceptions; when the LLM budget runs out the remaining features are returned as skipped."""
    cfg = config or LabelConfig()
    s, corpus_ids = resolve_scope(store, corpus, sae)
    features = list(dict.fromkeys(s.check_features(features)))
    if not features:
        raise InputError("no features to label")
    method = "llm" if llm is not None else "offline"
    sample_cfg = cfg.sample or (LLM_SAMPLE if llm is not None else OFFLINE_SAMPLE)
    sampler = ExampleSampler(store, s, corpus_ids, sample_cfg)
    scorer = scorer or (EmbeddingScorer(model=cfg.embed_model) if llm is None else None)
    background = TermStats.of(e.text for e in sampler.background(cfg.background)) if llm is None else None
    rows: list[dict] = []
    stopped = False
    for start in range(0, len(features), cfg.chunk):
        chunk = features[start : start + cfg.chunk]
        if stopped:
            rows += [_row(f, status="skipped: budget exhausted") for f in chunk]
            continue
        examples = sampler.sample(chunk)
        if llm is None:
            labelled = _offline_chunk(store, s, corpus_ids, examples, background, scorer, cfg)
        else:
            labelled = _llm_chunk(llm, examples, cfg)
            stopped = llm.stopped
        if cfg.save:
            _save(store, s, labelled, llm, scorer, corpus_ids)
        rows += [r for r, _ in labelled]
        if progress is not None:
            progress(min(start + cfg.chunk, len(features)), len(features))
    frame = pl.DataFrame(rows, schema=RESULT_SCHEMA)
    usage = llm.usage.to_dict() if llm is not None else None
    prov = {"sae": s.sae_hash, "corpus_ids": corpus_ids, "method": method,
            "model": llm.config.model if llm is not None else scorer.model, "n_features": len(features)}
    if cfg.save and not store.read_only:
        store.record_run("label", {"features": len(features), "method": method}, prov | {"usage": usage})
    return LabelRun(frame, method, usage, stopped, prov)


def _status(weak: str | None) -> str:
    return f"weak: {weak}"[:200] if weak else "ok"


def _row(feature: int, **kw) -> dict:
    row = {k: None for k in RESULT_SCHEMA}
    row.update(feature=feature, **kw)
    return row


def _keys(examples) -> list[list[int]]:
    return [[e.corpus_id, e.doc_idx] for e in examples]


def _example_details(fe: FeatureExamples) -> dict:
    return {"explain_examples": _keys(fe.explain), "explain_negatives": _keys(fe.explain_negatives),
            "score_examples": _keys(fe.score), "score_negatives": _keys(fe.score_negatives)}


def _offline_chunk(store, s, corpus_ids, examples: dict[int, FeatureExamples], background, scorer, cfg):
    meta = metadata_overrep(store, s.sae_key, corpus_ids, list(examples))
    names = list(store.corpus_names(corpus_ids).values())
    here = names[0] if len(names) == 1 else None  # the run's table shows the labelled corpus's metadata
    scorer.prefetch([e for fe in examples.values() for e in fe.score + fe.score_negatives])
    out = []
    for f, fe in examples.items():
        if fe.n_active == 0:
            out.append((_row(f, status="never fires", n_active=0), None))
            continue
        lab = offline_label(fe.explain, background, meta.get(f), n_terms=cfg.n_terms,
                            similar=[e for e in fe.explain_negatives if e.kind == "hard"])
        text = lab.text
        rand = [e for e in fe.score_negatives if e.kind == "random"]
        hard = [e for e in fe.score_negatives if e.kind == "hard"]
        score = scorer.score(text, fe.score, rand)
        score_hard = scorer.score(text, fe.score, hard)
        details = {"phrase": lab.label, "terms": lab.terms, "term_scores": lab.term_scores, "metadata": lab.metadata,
                   "kind": lab.kind,
                   "scorer": "embedding-auroc", "auroc_random": score, "auroc_hard": score_hard,
                   "n_active": fe.n_active} | _example_details(fe)
        weak = weak_reason(score)
        if weak:
            details["weak"] = weak
        shown = lab.label + (metadata_context(json.dumps(lab.metadata), here) if here else "")
        out.append((_row(f, label=shown, label_source="offline", score=score, status=_status(weak),
                         n_active=fe.n_active, description=text, auroc_hard=score_hard, weak=bool(weak)), details))
    scorer.forget()
    return out


def _llm_chunk(llm: LLMClient, examples: dict[int, FeatureExamples], cfg: LabelConfig):
    feats = [f for f, fe in examples.items() if fe.n_active > 0 and fe.explain]
    out: dict[int, tuple[dict, dict | None]] = {
        f: (_row(f, status="never fires", n_active=0), None) for f in examples if f not in feats
    }
    explained = _explain(llm, {f: examples[f] for f in feats}, out)
    scored = _score(llm, examples, explained, cfg, out)
    if cfg.relabel_below is not None:
        low = {f: e for f, e in explained.items() if f in scored and (scored[f].score or 0) < cfg.relabel_below}
        if low:
            again = _explain(llm, {f: examples[f] for f in low}, {}, previous={f: (low[f], scored[f]) for f in low})
            rescored = _score(llm, examples, again, cfg, {})
            for f, sc in rescored.items():
                if (sc.score or 0) > (scored[f].score or 0):
                    explained[f], scored[f] = again[f], sc
                    scored[f].relabelled = True
    for f, sc in scored.items():
        fe, ex = examples[f], explained[f]
        shown = [e.text for e in fe.explain + fe.explain_negatives]
        copied = copied_from_instructions(ex.label, shown) or copied_from_instructions(ex.description, shown)
        weak = weak_reason(sc.score, detection_hits=sc.detection_hits, copied=copied)
        details = {"description": ex.description, "detection": sc.detection, "fuzzing": sc.fuzzing,
                   "n_detection": sc.n_detection, "n_fuzzing": sc.n_fuzzing, "scorer": "detection+fuzzing",
                   "detection_hits": sc.detection_hits,
                   "score_failures": sc.failures[:5], "relabelled": getattr(sc, "relabelled", False),
                   "n_active": fe.n_active} | _example_details(fe) | ({"weak": weak} if weak else {})
        out[f] = (_row(f, label=ex.label, label_source="llm", score=sc.score, status=_status(weak),
                       n_active=fe.n_active, description=ex.description, detection=sc.detection,
                       fuzzing=sc.fuzzing, weak=bool(weak)), details)
    return [out[f] for f in examples]


def _explain(llm, examples: dict[int, FeatureExamples], out: dict, previous: dict | None = None):
    prompts = []
    for f, fe in examples.items():
        msgs = explain_prompt(fe)
        if previous and f in previous:
            ex, sc = previous[f]
            msgs = msgs + [{"role": "assistant", "content": json.dumps({"label": ex.label, "description": ex.description})},
                           {"role": "user", "content": f"That explanation scored {sc.score or 0:.2f} (balanced accuracy) "
                            "when used to tell held-out texts where it fires from texts where it does not. "
                            "Give a more precise one, as JSON in the same form."}]
        prompts.append(msgs)
    results = llm.chat_many(prompts, check=_check_explanation)
    explained = {}
    for (f, fe), res in zip(examples.items(), results):
        if res.budget:
            out[f] = (_row(f, status="skipped: budget exhausted", n_active=fe.n_active), None)
            continue
        try:
            explained[f] = parse_explanation(res)
        except MalformedAnswer as e:
            out[f] = (_row(f, status=f"failed: {e}"[:200], n_active=fe.n_active), None)
    return explained


def _check_explanation(text: str):
    return parse_explanation(LLMResult(text=text))


def _score(llm, examples, explained: dict, cfg: LabelConfig, out: dict):
    plans, prompts, checks = {}, [], []
    for f, ex in explained.items():
        det, det_p, fuz, fuz_p = score_prompts(examples[f], ex.description or ex.label, cfg.batch)
        plans[f] = (det, fuz, len(prompts), len(det_p), len(fuz_p))
        prompts += det_p + fuz_p
        checks += answer_checks(det, cfg.batch) + answer_checks(fuz, cfg.batch)
    results = llm.chat_many(prompts, max_tokens=200, check=checks) if prompts else []
    scored = {}
    for f, (det, fuz, at, nd, nf) in plans.items():
        res = results[at : at + nd + nf]
        if any(r.budget for r in res):
            out[f] = (_row(f, status="skipped: budget exhausted", n_active=examples[f].n_active), None)
            continue
        sc = collect_scores(det, fuz, res[:nd], res[nd:], cfg.batch)
        if sc.score is None:
            out[f] = (_row(f, label=explained[f].label, status="failed: scoring answers unusable: "
                           + "; ".join(sc.failures[:2])[:150], n_active=examples[f].n_active), None)
            continue
        scored[f] = sc
    return scored


def _save(store: Store, s: SAEInfo, labelled, llm, scorer, corpus_ids) -> None:
    rows = [(r, d) for r, d in labelled if d is not None and r["label"]]
    if not rows or store.read_only:
        return
    model = llm.config.model if llm is not None else f"offline-phrase; scorer {scorer.model}"
    # the stored label is the phrase alone: metadata context is added per corpus when read
    store.save_labels(s.sae_key, model, [(r["feature"], d.get("phrase", r["label"]), r["label_source"], r["score"],
                                          d | {"corpus_ids": corpus_ids}) for r, d in rows])


# --- finding features by label -----------------------------------------------------------------------

def search_labels(
    store: Store, query: str, *, sae: str | None = None, top: int = 20, semantic: bool = True,
    min_similarity: float = 0.3, embed: Callable[[list[str]], np.ndarray] | None = None,
) -> pl.DataFrame:
    """Labelled features whose label (or LLM description) contains `query` (case-insensitive), then
    those whose label is closest in meaning (sentence-embedding cosine ≥ min_similarity).
    Columns: feature, label, label_source, score, match, similarity."""
    query = (query or "").strip()
    if not query:
        raise InputError("--search needs a non-empty text")
    s, _ = resolve_scope(store, None, sae)
    newest = store.labels(s.sae_key, descriptions=True)
    empty = pl.DataFrame(schema={"feature": pl.Int32, "label": pl.Utf8, "label_source": pl.Utf8,
                                 "score": pl.Float64, "match": pl.Utf8, "similarity": pl.Float64})
    if newest.is_empty():
        return empty
    q = query.lower()
    hit = newest["label"].str.to_lowercase().str.contains(q, literal=True) | \
        newest["description"].str.to_lowercase().str.contains(q, literal=True)
    sims = np.zeros(newest.height, dtype=np.float32)
    if semantic:
        sims = _label_vectors(store, s, newest, embed) @ _embed_one(query, embed)
    frame = newest.with_columns(
        pl.Series("similarity", sims.astype(float)),
        pl.when(pl.Series(hit)).then(pl.lit("text")).otherwise(pl.lit("semantic")).alias("match"),
    )
    frame = frame.filter((pl.col("match") == "text") | (pl.col("similarity") >= min_similarity))
    return (
        frame.sort(["match", "similarity", "score"], descending=[True, True, True], nulls_last=True)
        .head(top)
        .select("feature", "label", "label_source", "score", "match", "similarity")
        .with_columns(pl.col("feature").cast(pl.Int32))
    )


def _embed_one(text: str, embed) -> np.ndarray:
    if embed is not None:
        return embed([text])[0]
    from saeembed.encode.dense import get_embedder

    return get_embedder(None).embed([text])[0]


def _label_vectors(store: Store, s: SAEInfo, labels: pl.DataFrame, embed) -> np.ndarray:
    """Sentence vectors of the labels: an atlas label's (or a cached one's) from the store, the rest embedded."""
    from saeembed.store.labels import text_hash

    if embed is None:
        from saeembed.encode.dense import get_embedder

        embedder = get_embedder(None)
        embed, have = embedder.embed, store.feature_embeddings(s.sae_key, embedder.name)
    else:
        have = {}
    keys = [(int(f), "label", text_hash(lab)) for f, lab in zip(labels["feature"], labels["label"])]
    todo = [i for i, k in enumerate(keys) if k not in have]
    new = embed([labels["label"][i] for i in todo]) if todo else None
    dim = new.shape[1] if new is not None else len(next(iter(have.values())))
    out = np.zeros((len(keys), dim), dtype=np.float32)
    for j, i in enumerate(todo):
        out[i] = new[j]
    for i, k in enumerate(keys):
        if k in have:
            out[i] = have[k]
    return out

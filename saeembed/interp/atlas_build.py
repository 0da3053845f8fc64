"""Labelling every live feature of an SAE for its atlas, from a store that holds corpora encoded with it.

Features go in chunks; after each chunk its records are appended to a checkpoint (`atlas.partial.jsonl`
in the build folder, one JSON line per feature after a header naming the SAE), so a stopped build
resumes where it was and gives what one uninterrupted run gives (the sampling is seeded and does not
depend on which features were done before).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from saeembed.atlas_format import Atlas
from saeembed.errors import SAEError
from saeembed.interp.examples import ExampleSampler, FeatureExamples, SampleConfig, window
from saeembed.interp.choose import choose
from saeembed.interp.generic import generic_label, generic_phrase
from saeembed.interp.offline import Background, OfflineLabel, metadata_overrep, offline_label
from saeembed.interp.scoring import EmbeddingScorer, weak_reason
from saeembed.store import SAEInfo, Store

CHECKPOINT = "atlas.partial.jsonl"
# Share of documents from which a feature is labelled "generic: <kind of token>". High on purpose: half
# the atlas sample is 300-430 tokens long, so a feature firing on 50-90 % of it still tells short
# corpora apart (one on 76 % of the sample fires on 91 % of the demo's product reviews, 12 % of tickets).
GENERIC_DENSITY = 0.9
ATLAS_SAMPLE = SampleConfig(n_top=10, n_quantile=20, n_score=20, n_random=20, n_hard=10)


@dataclass
class LabelPass:
    done: int  # features with a record in the checkpoint
    total: int  # live features
    finished: bool


def read_checkpoint(path: Path, sae_hash: str) -> dict[int, dict]:
    """Records already made ({feature: record}); a torn last line (a crash mid-write) is dropped."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    head = json.loads(lines[0])
    if head.get("sae_hash") != sae_hash:
        raise SAEError(f"{path} is a partial atlas of SAE {head.get('sae_hash')}, not {sae_hash}; "
                       "use another --out folder or delete it")
    out = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            break
        out[int(rec["feature"])] = rec
    return out


def _append(path: Path, sae_hash: str, records: list[dict]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        data = path.read_bytes()
        if not data.endswith(b"\n"):  # a torn last line: cut it off before appending
            with open(path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write(json.dumps({"sae_hash": sae_hash}) + "\n")
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, default=float) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def label_pass(
    store: Store, sae: SAEInfo, out: Path, *, chunk: int = 64, background: int = 400, exemplars: int = 5,
    sample: SampleConfig | None = None, scorer: EmbeddingScorer | None = None, stop_after: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelPass:
    """Label the live features not yet in the checkpoint, chunk by chunk. stop_after: stop once this many
    features are done in this call (a build split across calls, as an interruption would split it)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT
    done = read_checkpoint(path, sae.sae_hash)
    corpus_ids = store.encoded_corpus_ids(sae.sae_key)
    live = sorted(store.firing_features(sae.sae_key, corpus_ids))
    todo = [f for f in live if f not in done]
    if progress is not None:
        progress(len(live) - len(todo), len(live))
    if not todo:
        return LabelPass(len(live), len(live), True)
    sampler = ExampleSampler(store, sae, corpus_ids, sample or ATLAS_SAMPLE)
    bg_windows = sampler.background(background)
    bg = Background.of(bg_windows, sampler.texts([e.key for e in bg_windows]))
    scorer = scorer or EmbeddingScorer()
    n_docs = max(int(store.encoded_doc_counts(sae.sae_key, corpus_ids)["n"].sum()), 1)
    made = 0
    for start in range(0, len(todo), chunk):
        if stop_after is not None and made >= stop_after:
            break
        feats = todo[start : start + chunk][: None if stop_after is None else stop_after - made]
        examples = sampler.sample(feats)
        meta = metadata_overrep(store, sae.sae_key, corpus_ids, feats) if len(corpus_ids) > 1 else {}
        scorer.prefetch([e for fe in examples.values()
                         for e in fe.explain + fe.explain_negatives + fe.score + fe.score_negatives])
        records = [feature_record(examples[f], meta.get(f, []), bg, scorer, n_docs, exemplars,
                                  docs=sampler.texts(list(dict.fromkeys(e.key for e in examples[f].explain
                                                                        + examples[f].explain_negatives))))
                   for f in feats]
        _append(path, sae.sae_hash, [r for r in records if r is not None])
        scorer.forget()
        made += len(feats)
        if progress is not None:
            progress(len(live) - len(todo) + start + len(feats), len(live))
    finished = len(read_checkpoint(path, sae.sae_hash)) >= len(live)
    return LabelPass(len(live) - len(todo) + made, len(live), finished)


def feature_record(fe: FeatureExamples, meta: list[dict], background: Background, scorer: EmbeddingScorer,
                   n_docs: int, n_exemplars: int, docs: dict | None = None) -> dict | None:
    """One feature's atlas record: phrase label, both scores, density, exemplars, description text.
    docs: the texts of its explain documents ({key: text}), for naming a broad feature by its topic."""
    if fe.n_active == 0 or not fe.explain:
        return None
    density = fe.n_active / n_docs
    similar = [e for e in fe.explain_negatives if e.kind == "hard"]
    if density >= GENERIC_DENSITY:
        # a feature firing on most texts: say so, the kind of token it peaks on (judged from its top and
        # its typical windows), then what its top windows show when they agree on one thing
        top = offline_label([e for e in fe.explain if e.kind == "top"], background.windows)
        phrase = generic_label(generic_phrase(fe.explain, background.examples), (top.what, top.kind))
        lab = OfflineLabel(f"generic: {phrase}", [], [], [], phrase.replace('"', ""), "generic")
    else:
        # only which corpus dominates travels with the SAE: other metadata belongs to the build corpus
        lab = offline_label(fe.explain, background.windows, [m for m in meta if m["column"] == "corpus"],
                            similar=similar, docs=[docs[e.key] for e in fe.explain if e.key in docs] if docs else None,
                            doc_background=background.docs,
                            similar_docs=[docs[e.key] for e in similar if e.key in docs] if docs else None)
        lab = choose(lab, fe.explain, similar, [e for e in fe.explain_negatives if e.kind == "random"], scorer.score)
    rand = [e for e in fe.score_negatives if e.kind == "random"]
    hard = [e for e in fe.score_negatives if e.kind == "hard"]
    score, score_hard = scorer.score(lab.text, fe.score, rand), scorer.score(lab.text, fe.score, hard)
    top = sorted((e for e in fe.explain if e.kind == "top"), key=lambda e: -e.value)[:n_exemplars]
    ex = []
    for e in top:
        text, hl = window(e.text, e.hl[0], e.hl[1], 60) if e.hl else (e.text[:120], None)
        ex.append({"text": text, "start": hl[0] if hl else None, "end": hl[1] if hl else None,
                   "value": round(e.value, 3)})
    contexts = [" ".join(e.around(30).split()) for e in top[:3]]
    return {"feature": fe.feature, "label": lab.label, "source": "offline", "kind": lab.kind, "score": score,
            "score_hard": score_hard, "weak": weak_reason(score) is not None, "density": density,
            "description": lab.text + ". " + " … ".join(contexts), "exemplars": ex}


def atlas_from_records(records: dict[int, dict], sae: SAEInfo, *, embed: Callable[[list[str]], np.ndarray],
                       embed_model: str, meta: dict) -> Atlas:
    feats = sorted(records)
    recs = [records[f] for f in feats]
    vectors = embed([r["description"] for r in recs]) if recs else np.zeros((0, 0), np.float32)

    def num(key):
        return np.asarray([np.nan if r.get(key) is None else r[key] for r in recs], dtype=np.float32)

    return Atlas(
        sae_hash=sae.sae_hash, d_sae=sae.d_sae, features=np.asarray(feats, dtype=np.int32),
        labels=[r["label"] for r in recs], sources=[r.get("source", "offline") for r in recs],
        score=num("score"), score_hard=num("score_hard"), weak=np.asarray([bool(r.get("weak")) for r in recs]),
        density=num("density"), descriptions=[r["description"] for r in recs],
        vectors=np.asarray(vectors, dtype=np.float16), exemplars=[r.get("exemplars", []) for r in recs],
        meta=dict(meta, embed_model=embed_model),
    )

"""Clean a corpus (e.g. a fine-tuning set) with rules a person can read.

Rules, applied in this order; a dropped row records the first rule that dropped it (`drop_rule`) and
every rule that matched it (`drop_rules`):

1. `keep`: keep only rows matching the expression; the others are dropped (`keep: EXPR`).
2. `drop`: drop rows matching the expression (`drop: EXPR`).
3. `drop_features`: drop rows where SAE feature N is active (`drop-feature: N`).
4. quality: drop the lowest-scored share by a quality model ("quality: lowest 50% by quality").
5. `dedupe`: among the rows still kept, drop every row whose active-feature set has Jaccard >= t with
   an earlier kept row ("dedupe 0.9: near-duplicate of ID (jaccard 0.93)").

Expressions go through the store's parse_filter (no user text reaches SQL) over one frame per
document with these columns: doc_id, n_chars, n_tokens, the user's metadata; one column per stored
classifier score (`toxicity`, or `kind.<class>` for multi-class; a saved classifier not yet applied
to the corpus is applied on first use); and `f<N>` = the max activation of SAE feature N (0 when it
does not fire). These columns are the same whatever the rules: n_tokens is there whenever the
corpus is encoded (with the one SAE, or the --sae given). A name with two meanings (a metadata column
`f12` in a store from before ingest refused such names, beside feature 12) is an error when a rule
names it: the message names both meanings and how to rename the column.

Every input row ends in exactly one of kept / dropped; `FilterResult.check` verifies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from saeembed.analysis.names import feature_name
from saeembed.analysis.selection import Selection, embedding_matrix
from saeembed.columns import FEATURE_NAME
from saeembed.errors import InputError, StoreError
from saeembed.store import CorpusInfo, SAEInfo, Store
from saeembed.analysis.filter_output import OUTPUT_FORMATS, original_rows, recover_outputs, write_outputs
from saeembed.store.filters import parse_filter

__all__ = ["FilterResult", "FilterSpec", "OUTPUT_FORMATS", "dropped_vs_kept", "filter_corpus", "original_rows",
           "recover_outputs", "write_outputs"]
_FEATURE_COL = re.compile(r"(?<![\w.])f(\d+)(?![\w.])")


@dataclass
class FilterSpec:
    """What to drop. Rule strings are user text; they are parsed, never pasted into SQL."""

    drop: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    drop_features: list[int] = field(default_factory=list)
    dedupe: float | None = None  # Jaccard threshold on active features
    quality_model: str | None = None  # a saved classifier whose score is quality (higher = better)
    quality_label: str | None = None  # or: train one on the rows where this column is set
    quality_positive: str | None = None  # which label value means "good" (default: true/1/last)
    quality_name: str = "quality_score"  # name to save a trained quality model under
    quality_drop: float | None = None  # drop this share of rows with the lowest quality score
    sae: str | None = None
    seed: int = 0


@dataclass
class FilterResult:
    corpus: str
    n_docs: int
    kept: np.ndarray  # doc_idx of kept rows
    dropped: pl.DataFrame  # doc_idx, doc_id, drop_rule, drop_rules (list)
    rules: pl.DataFrame  # rule, matched, dropped (as first rule), only_this
    check: dict
    features: pl.DataFrame | None = None  # over-represented features among dropped vs kept
    samples: pl.DataFrame | None = None  # a few dropped rows per rule
    quality: dict | None = None  # metrics of a quality model trained here

    def summary(self) -> dict:
        out = {"corpus": self.corpus, "n_docs": self.n_docs, "kept": int(len(self.kept)),
               "dropped": int(self.dropped.height), "check": self.check, "rules": self.rules.to_dicts()}
        if self.features is not None:
            out["dropped_vs_kept_features"] = self.features.to_dicts()
        if self.samples is not None:
            out["samples"] = self.samples.to_dicts()
        if self.quality is not None:
            out["quality_model"] = self.quality
        return out


def _rule_label(option: str, rule) -> str:
    """A rule's label names the option that made it: ("--drop-feature", 5) -> drop-feature: 5."""
    return f"{option.lstrip('-')}: {rule}"


def _encoded(store: Store, info: CorpusInfo, sae: str | None, why: str) -> SAEInfo:
    try:
        s = store.encoded_sae(info, sae)
    except StoreError as e:  # say which rule needs it
        raise type(e)(f"{why} needs the corpus encoded: {e}") from None
    done = store.n_encoded_docs(info, s)
    if done < info.n_docs:
        raise InputError(
            f"{why} needs SAE embeddings of every document, but {info.n_docs - done} of {info.n_docs} documents of "
            f"{info.name!r} are not encoded; run `saeembed encode {info.name}` first"
        )
    return s


def filter_corpus(store: Store, corpus: str, spec: FilterSpec, *, samples_per_rule: int = 3,
                  top_features: int = 15) -> FilterResult:
    """Decide for every document of `corpus` whether it is kept or dropped, and why."""
    from saeembed.analysis.classify import apply_classifier, train_classifier

    info = store.corpus(corpus)
    if spec.dedupe is not None and not 0 < spec.dedupe <= 1:
        raise InputError("--dedupe takes a Jaccard threshold in (0, 1], e.g. 0.9")
    if spec.quality_drop is not None and not 0 < spec.quality_drop < 1:
        raise InputError("--quality-drop takes a share in (0, 1), e.g. 0.5")
    if spec.quality_drop is not None and not (spec.quality_model or spec.quality_label):
        raise InputError("--quality-drop needs a quality model: --quality-model NAME or --quality-label COLUMN")
    if spec.quality_model and spec.quality_label:
        raise InputError("use --quality-model or --quality-label, not both")
    # Rules are parsed first, against the same columns whatever the rules are (see _parse_rules).
    parsed, named, feature_cols = _parse_rules(store, info, spec)
    feats = sorted(set(feature_cols.values()))
    needs_sae = bool(feats or spec.drop_features or spec.dedupe or spec.quality_model or spec.quality_label)
    if needs_sae:
        sae = _encoded(store, info, spec.sae, "a feature rule, dedupe or a quality model")
    elif "n_tokens" in named:
        sae = _encoded(store, info, spec.sae, "a rule on n_tokens (tokens of the model the corpus is encoded with)")
    else:  # the encoding in use, when there is one, so the frame has n_tokens whatever the rules
        sae = store.encoded_sae(info, spec.sae) if spec.sae else _encoding_if_any(store, info)
    if sae is not None:
        sae.check_features(feats + list(spec.drop_features))

    quality_metrics = None
    quality_col = None
    if (spec.quality_label or spec.quality_model) and (spec.quality_name if spec.quality_label else spec.quality_model) \
            in set(info.metadata_columns) | {"doc_id", "n_chars", "n_tokens"}:
        raise InputError(f"the quality score would be hidden by the metadata column "
                         f"{spec.quality_name if spec.quality_label else spec.quality_model!r}; pick another name")
    if spec.quality_label:
        res = train_classifier(store, corpus, spec.quality_label, spec.quality_name, sae=sae.sae_hash,
                               positive=spec.quality_positive, kind="quality")
        if len(res.info["classes"]) != 2:
            raise InputError(f"--quality-label {spec.quality_label!r} must have two values (good / bad)")
        quality_metrics = {k: res.metrics.get(k) for k in ("auroc", "f1", "macro_f1", "n")} | {
            "name": spec.quality_name, "n_train": res.info["n_train"], "positive": res.info["positive"]}
        quality_col = spec.quality_name
    elif spec.quality_model:
        quality_col = spec.quality_model

    # The frame rules are evaluated on.
    frame = store.doc_table(info, sae, text="text" in named)
    base_cols = set(frame.columns) - {"doc_idx"}
    clf_cols = store.classifier_score_columns()
    stored = set(store.score_names(info))
    wanted_scores = {c for c in named if c not in base_cols and (c in stored or c in clf_cols)}
    if quality_col:
        wanted_scores.add(quality_col)
    for col in sorted(wanted_scores - stored):  # saved but not yet applied to this corpus
        if col not in clf_cols:
            raise StoreError(f"no classifier or score named {col!r} for corpus {corpus!r}")
        apply_classifier(store, clf_cols[col], corpus)
    if wanted_scores:
        frame = frame.join(store.doc_scores(info, sorted(wanted_scores)), on="doc_idx", how="left")
    if quality_col and frame[quality_col].null_count() == frame.height:
        raise StoreError(f"quality model {quality_col!r} gave no scores for {corpus!r}")
    X_rules = None
    if feats or spec.drop_features:
        want = sorted(set(feats) | set(spec.drop_features))
        sel = Selection(info, sae, frame["doc_idx"].to_numpy().astype(np.int64), corpus)
        X_rules = embedding_matrix(store, sel, features=want).tocsc()
        frame = frame.with_columns([  # named as the rule wrote it (f12, or f012)
            pl.Series(name, np.asarray(X_rules[:, f].todense()).ravel().astype(np.float64))
            for name, f in feature_cols.items()
        ])

    n = frame.height
    doc_idx = frame["doc_idx"].to_numpy().astype(np.int64)
    masks: list[tuple[str, np.ndarray]] = []
    for label, is_keep, flt in parsed:
        m = flt.mask(frame).to_numpy()
        masks.append((label, ~m if is_keep else m))
    for f in spec.drop_features:
        masks.append((_rule_label("--drop-feature", f), np.asarray(X_rules[:, f].todense()).ravel() > 0))
    if spec.quality_drop is not None:
        q = frame[quality_col].to_numpy().astype(np.float64)
        q = np.where(np.isnan(q), -np.inf, q)
        k = int(round(spec.quality_drop * n))
        order = np.argsort(q, kind="stable")
        low = np.zeros(n, dtype=bool)
        low[order[:k]] = True
        cut = q[order[k - 1]] if k else float("nan")
        masks.append((f"quality: lowest {spec.quality_drop:.0%} by {quality_col} (score <= {cut:.4g})", low))

    first = np.full(n, -1, dtype=np.int64)
    for r, (_, m) in enumerate(masks):
        first[(first == -1) & m] = r
    rule_labels = [lbl for lbl, _ in masks]
    dedupe_note = {}
    if spec.dedupe is not None:
        from saeembed.analysis.dedupe import greedy_dedupe, near_duplicate_pairs

        sel = Selection(info, sae, doc_idx, corpus)
        X = embedding_matrix(store, sel, binary=True)
        i, j, jac = near_duplicate_pairs(X, spec.dedupe, seed=spec.seed)
        dup_of, sim = greedy_dedupe(n, i, j, jac, eligible=first == -1)
        label = f"dedupe {spec.dedupe:g}"
        rule_labels.append(label)
        dmask = dup_of >= 0
        masks.append((label, dmask))
        first[dmask & (first == -1)] = len(rule_labels) - 1
        ids = frame["doc_id"].to_list()
        dedupe_note = {int(r): f"{label}: near-duplicate of {ids[dup_of[r]]} (jaccard {sim[r]:.3f})"
                       for r in np.flatnonzero(dmask)}

    dropped_rows = np.flatnonzero(first >= 0)
    all_rules = [[lbl for lbl, m in masks if m[r]] for r in dropped_rows]
    reasons = [dedupe_note.get(int(r), rule_labels[first[r]]) for r in dropped_rows]
    dropped = pl.DataFrame({
        "doc_idx": doc_idx[dropped_rows], "doc_id": frame["doc_id"].to_numpy()[dropped_rows].tolist()
        if len(dropped_rows) else [],
        "drop_rule": reasons, "drop_rules": all_rules,
    }, schema={"doc_idx": pl.Int64, "doc_id": pl.Utf8, "drop_rule": pl.Utf8, "drop_rules": pl.List(pl.Utf8)})
    kept = doc_idx[first < 0]

    rule_feats = [sorted(feature_cols[c] for c in flt.columns if c in feature_cols) for _, _, flt in parsed]
    rule_feats += [[f] for f in spec.drop_features]
    rule_feats += [[] for _ in range(len(masks) - len(rule_feats))]  # quality, dedupe: no feature
    rules = pl.DataFrame({
        "rule": rule_labels,
        "matched": [int(m.sum()) for _, m in masks],
        "dropped": [int((first == r).sum()) for r in range(len(masks))],
        "only_this": [int((m & (sum(mm.astype(int) for _, mm in masks) == 1)).sum()) for _, m in masks],
        "features": _feature_names(store, sae, rule_feats),
    }, schema={"rule": pl.Utf8, "matched": pl.Int64, "dropped": pl.Int64, "only_this": pl.Int64,
               "features": pl.List(pl.Utf8)})

    check = _check(n, kept, dropped["doc_idx"].to_numpy())
    result = FilterResult(corpus, n, kept, dropped, rules, check, quality=quality_metrics)
    result.samples = _samples(store, info, dropped, samples_per_rule)
    if sae is not None:
        result.features = dropped_vs_kept(store, info, sae, doc_idx, first >= 0, top=top_features)
    store.record_run("filter", {"corpus": corpus, **{k: v for k, v in spec.__dict__.items()}},
                     {"kept": int(len(kept)), "dropped": int(dropped.height)})
    return result


def _feature_names(store: Store, sae: SAEInfo | None, per_rule: list[list[int]]) -> list[list[str]]:
    """The features each rule reads, as `#12 · label`, so a reason says what it drops in words."""
    wanted = sorted({f for fs in per_rule for f in fs})
    labels = dict(store.labels(sae.sae_key, wanted).select("feature", "label").iter_rows()) if wanted and sae else {}
    return [[feature_name(f, labels.get(f)) for f in fs] for fs in per_rule]


def _encoding_if_any(store: Store, info: CorpusInfo) -> SAEInfo | None:
    """The one SAE the corpus is encoded with, or None (not encoded, or with several and no --sae: then
    a rule needing it says why)."""
    try:
        return store.encoded_sae(info)
    except StoreError:
        return None


_BUILTIN = {"doc_id": "the document id", "n_chars": "the text's length in characters",
            "n_tokens": "the text's length in tokens of the encoding model"}


def _parse_rules(store: Store, info: CorpusInfo, spec: FilterSpec):
    """Parse the --keep / --drop rules against the corpus's filter columns: built-ins, metadata, saved
    clusterings, classifier scores and fN for any feature N — the same set whatever the rules.
    A name with two of these meanings (e.g. a metadata column `f12`, stored before ingest refused such
    names, beside feature 12) is refused when a rule names it, naming both: saeembed never guesses.
    Returns [(label, is_keep, Filter)], the names read, and {column name: feature} for fN names."""
    meta = set(info.metadata_columns)
    clusters = set(store.cluster_names(info))
    scores = set(store.score_names(info)) | set(store.classifier_score_columns())
    if spec.quality_label:
        scores.add(spec.quality_name)  # trained by this run, before the rules are evaluated
    allowed = set(store.filter_columns(info)) | scores
    parsed, named = [], set()
    for option, text in [("--keep", k) for k in spec.keep] + [("--drop", d) for d in spec.drop]:
        flt = parse_filter(text, allowed | {"f" + n for n in _FEATURE_COL.findall(text if isinstance(text, str) else "")})
        named |= flt.columns
        parsed.append((_rule_label(option, text), option == "--keep", flt))
    for name in sorted(named):
        meanings = ([f"your metadata column {name!r}"] if name in meta else []) \
            + ([f"the built-in column {name} ({_BUILTIN[name]})"] if name in _BUILTIN else []) \
            + ([f"the saved clustering {name[len('cluster.'):]!r}"] if name in clusters else []) \
            + ([f"the classifier score {name!r}"] if name in scores else []) \
            + ([f"SAE feature {int(name[1:])}"] if FEATURE_NAME.fullmatch(name) else [])
        if len(meanings) > 1:
            fix = (f"re-ingest the corpus with the column renamed (saeembed ingest FILE --corpus {info.name} "
                   f"--replace --rename {name}={name}_meta)" if name in meta else
                   "save the classifier under another name")
            raise InputError(f"filter column {name!r} of corpus {info.name!r} has two meanings, "
                             f"{' and '.join(meanings)}; saeembed will not guess which: {fix}")
    feature_cols = {c: int(c[1:]) for c in named if FEATURE_NAME.fullmatch(c)}
    return parsed, named, feature_cols


def _check(n: int, kept: np.ndarray, dropped: np.ndarray) -> dict:
    both = np.intersect1d(kept, dropped)
    union = np.union1d(kept, dropped)
    ok = len(both) == 0 and len(union) == n and len(kept) + len(dropped) == n
    if not ok:  # a bug, never a user mistake: refuse to write anything
        raise RuntimeError(f"filter partition check failed: {len(kept)} kept + {len(dropped)} dropped != {n} "
                           f"or {len(both)} rows in both")
    return {"input": n, "kept": int(len(kept)), "dropped": int(len(dropped)), "ok": ok}


def _samples(store: Store, info: CorpusInfo, dropped: pl.DataFrame, per_rule: int) -> pl.DataFrame:
    if dropped.is_empty() or per_rule <= 0:
        return pl.DataFrame(schema={"rule": pl.Utf8, "doc_id": pl.Utf8, "text": pl.Utf8})
    first_rule = dropped.with_columns(rule=pl.col("drop_rule").str.replace(r": near-duplicate of .*$", ""))
    picked = first_rule.group_by("rule", maintain_order=True).head(per_rule)
    texts = store.documents(info, metadata=False, doc_idx=picked["doc_idx"].to_list())
    return (picked.join(texts.select("doc_idx", "text"), on="doc_idx", how="left")
            .select("rule", "doc_id", pl.col("drop_rule").alias("reason"),
                    pl.col("text").str.replace_all(r"\s+", " ").str.slice(0, 120)))


def dropped_vs_kept(store: Store, info: CorpusInfo, sae: SAEInfo, doc_idx: np.ndarray, is_dropped: np.ndarray,
                    *, top: int = 15) -> pl.DataFrame:
    """Features most over-represented among dropped rows: share of dropped rows where the feature fires
    minus share of kept rows, with label and an exemplar."""
    cols = {"feature": pl.Int64, "freq_dropped": pl.Float64, "freq_kept": pl.Float64, "diff": pl.Float64}
    if is_dropped.all() or not is_dropped.any():
        return pl.DataFrame(schema=cols | {"label": pl.Utf8, "exemplar": pl.Utf8})
    X = embedding_matrix(store, Selection(info, sae, doc_idx, info.name), binary=True)
    fd = np.asarray(X[is_dropped].mean(axis=0)).ravel()
    fk = np.asarray(X[~is_dropped].mean(axis=0)).ravel()
    diff = fd - fk
    best = np.argsort(-diff, kind="stable")[:top]
    best = best[diff[best] > 0]
    frame = pl.DataFrame({"feature": best.astype(np.int64), "freq_dropped": fd[best], "freq_kept": fk[best],
                          "diff": diff[best]}, schema=cols)
    labels = store.labels(sae.sae_key, best.tolist()).select(pl.col("feature").cast(pl.Int64), "label")
    ex = store.exemplar_snippets(sae.sae_key, best.tolist(), corpus=info.name, per_feature=1, width=40)
    ex = ex.select(pl.col("feature").cast(pl.Int64), exemplar="snippet").unique("feature")
    return frame.join(labels, on="feature", how="left").join(ex, on="feature", how="left")


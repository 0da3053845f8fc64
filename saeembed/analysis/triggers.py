"""Trigger phrases: the token n-grams that carry a feature's activations, with lift over the corpus.

For a feature and n (1..3), every n consecutive content tokens of a document form an n-gram (its text
is the document's text from the first token's start to the last token's end, whitespace collapsed). An
n-gram covers the n tokens it spans. For each n-gram:

- activations: tokens where the feature fires that an occurrence of the n-gram covers;
- documents: documents holding such a token;
- share: activations / all tokens where the feature fires;
- background: tokens of the corpus the n-gram covers / all content tokens of the corpus;
- lift: share / background (how much more often the n-gram sits on the feature's tokens than on any).

From token rows (encode --keep-tokens) over the whole corpus. Without them the feature's tokens are
recomputed with the model in its top documents only, and counts and background cover just those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from saeembed.config import TriggersConfig
from saeembed.errors import InputError
from saeembed.store import Store

_DOC_BATCH = 4096  # documents per background pass step


@dataclass
class TriggersResult:
    frame: pl.DataFrame  # feature, rank, ngram, activations, documents, share, background, lift
    source: str  # "token rows" or "recomputed"
    notes: list[str] = field(default_factory=list)


def ngrams(tokens: pl.DataFrame, texts: pl.DataFrame, n: int) -> pl.DataFrame:
    """(doc_idx, token_index, ngram) for every token and every n-gram covering it. tokens: doc_idx,
    token_index, start, end; texts: doc_idx, text."""
    t = tokens.sort(["doc_idx", "token_index"]).join(texts, on="doc_idx", how="inner")
    last = pl.col("token_index").shift(-(n - 1))
    grams = t.with_columns(
        last_doc=pl.col("doc_idx").shift(-(n - 1)), last_index=last, last_end=pl.col("end").shift(-(n - 1)),
    ).filter((pl.col("last_doc") == pl.col("doc_idx")) & (pl.col("last_index") == pl.col("token_index") + n - 1))
    grams = grams.select(
        "doc_idx", first=pl.col("token_index"),
        ngram=pl.col("text").str.slice(pl.col("start"), pl.col("last_end") - pl.col("start"))
        .str.replace_all(r"\s+", " ").str.strip_chars(),
    )
    return pl.concat([grams.select("doc_idx", (pl.col("first") + j).alias("token_index"), "ngram")
                      for j in range(n)]).unique()


def triggers(store: Store, corpus: str, features: list[int], *, sae: str | None = None,
             config: TriggersConfig | None = None, device: str = "cpu") -> TriggersResult:
    """The top n-grams of each feature (see the module text)."""
    cfg = config or TriggersConfig()
    if not 1 <= cfg.n <= 3:
        raise InputError(f"--n must be 1, 2 or 3, not {cfg.n}")
    if cfg.top < 1:
        raise InputError("--top must be at least 1")
    if not features:
        raise InputError("name at least one feature with -f N")
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    features = s.check_features(features)
    source = (_Stored(store, info, s) if store.has_token_rows(info, s)
              else _Recomputed(store, info, s, features, cfg.recompute_docs, device))
    parts, hits_per = [], {}
    for f in features:
        hits = source.hits(f)
        hits_per[f] = hits.height
        if hits.is_empty():
            continue
        docs = hits["doc_idx"].unique().to_list()
        covered = ngrams(source.positions(docs), source.texts(docs), cfg.n)
        found = (covered.join(hits, on=["doc_idx", "token_index"], how="semi").group_by("ngram")
                 .agg(activations=pl.len(), documents=pl.col("doc_idx").n_unique())
                 .filter(pl.col("activations") >= cfg.min_count))
        parts.append(found.with_columns(feature=pl.lit(f, dtype=pl.Int64)))
    empty = pl.DataFrame(schema={"feature": pl.Int64, "rank": pl.Int64, "ngram": pl.Utf8, "activations": pl.Int64,
                                 "documents": pl.Int64, "share": pl.Float64, "background": pl.Float64,
                                 "lift": pl.Float64})
    notes = list(source.notes)
    silent = [f for f in features if not hits_per.get(f)]
    if silent:
        notes.append(f"feature(s) {', '.join(map(str, silent))} fire on no stored token")
    if not parts:
        return TriggersResult(empty, source.name, notes)
    found = pl.concat(parts)
    covered, n_tokens = source.background(set(found["ngram"].to_list()), cfg.n)
    frame = (found.join(covered, on="ngram", how="left")
             .with_columns(share=pl.col("activations") / pl.col("feature").replace_strict(hits_per, return_dtype=pl.Int64),
                           background=pl.col("covered").fill_null(0) / max(n_tokens, 1))
             .with_columns(lift=pl.col("share") / pl.col("background"))
             .sort(["feature", "activations", "lift", "ngram"], descending=[False, True, True, False])
             .with_columns(rank=pl.int_range(1, pl.len() + 1).over("feature"))
             .filter(pl.col("rank") <= cfg.top))
    return TriggersResult(frame.select(empty.columns).cast(empty.schema), source.name, notes)


def trigger_column(store: Store, frame: pl.DataFrame, corpora: dict[str, str], *, sae: str | None = None,
                   n: int = 2, per_feature: int = 3) -> tuple[pl.DataFrame, str | None]:
    """A diff table with a `triggers` column: the top n-grams of each listed feature in the corpus of the
    side it is more frequent in (corpora: {"a": name, "b": name}). Only from token rows; otherwise the
    frame comes back unchanged with a note saying why."""
    lacking = [c for c in dict.fromkeys(corpora.values())
               if not store.has_token_rows(store.corpus(c), store.encoded_sae(c, sae))]
    if lacking:
        return frame, (f"--triggers needs token rows; corpus {lacking[0]!r} has none (encode it with --keep-tokens)")
    feats = frame["feature"].unique().to_list()
    cfg = TriggersConfig(n=n, top=per_feature, min_count=1)
    tops = {}
    for side, name in corpora.items():
        if name in tops.values():
            tops[side] = tops[next(k for k, v in corpora.items() if v == name)]
            continue
        r = triggers(store, name, feats, sae=sae, config=cfg).frame
        tops[side] = dict(r.group_by("feature").agg(pl.col("ngram").sort_by("rank").str.join(" · "))
                          .iter_rows())
    side = np.where(frame["diff"].to_numpy() >= 0, "a", "b") if "diff" in frame.columns else np.full(frame.height, "a")
    col = [tops.get(s, tops["a"]).get(f) for s, f in zip(side, frame["feature"].to_list())]
    return frame.with_columns(pl.Series("triggers", col, dtype=pl.Utf8)), None


class _Stored:
    """Token rows from the store."""

    name = "token rows"
    notes: tuple = ()

    def __init__(self, store, info, sae):
        self.store, self.info, self.sae = store, info, sae

    def hits(self, feature: int) -> pl.DataFrame:
        return self.store.token_rows(self.info, self.sae, features=[feature]).select("doc_idx", "token_index").unique()

    def positions(self, docs: list[int]) -> pl.DataFrame:
        return self.store.token_positions(self.info, self.sae, min(docs), max(docs), docs)

    def texts(self, docs: list[int]) -> pl.DataFrame:
        return self.store.documents(self.info, text=True, metadata=False, doc_idx=docs).select("doc_idx", "text")

    def background(self, wanted: set[str], n: int) -> tuple[pl.DataFrame, int]:
        """(ngram, covered) for the wanted n-grams over the whole corpus, and its content tokens."""
        keep = pl.DataFrame({"ngram": sorted(wanted)}, schema={"ngram": pl.Utf8})
        counts, n_tokens = [], 0
        for lo in range(0, self.info.n_docs, _DOC_BATCH):
            pos = self.store.token_positions(self.info, self.sae, lo, lo + _DOC_BATCH - 1)
            if pos.is_empty():
                continue
            n_tokens += pos.height
            texts = self.texts(pos["doc_idx"].unique().to_list())
            counts.append(ngrams(pos, texts, n).join(keep, on="ngram", how="semi").group_by("ngram").len("covered"))
        if not counts:
            return pl.DataFrame(schema={"ngram": pl.Utf8, "covered": pl.UInt32}), n_tokens
        return pl.concat(counts).group_by("ngram").agg(pl.col("covered").sum()), n_tokens


class _Recomputed(_Stored):
    """No token rows: each feature's top documents run through the model again (encode/doc_tokens.py)."""

    name = "recomputed"

    def __init__(self, store, info, sae, features, max_docs: int, device: str):
        super().__init__(store, info, sae)
        from saeembed.encode.doc_tokens import DocTokens
        from saeembed.encode.tokens import tokenize

        setup = store.encoding_setup(info.corpus_id, sae.sae_key)
        if not setup or not setup.get("sae_source"):
            raise InputError(f"corpus {info.name!r} has no token rows and the store does not say where its SAE came "
                             f"from; re-encode with `saeembed encode {info.name} --keep-tokens --replace`")
        self.scorer = DocTokens(setup["model"], setup["sae_source"], setup["hook"], setup["params"], device=device)
        self._tokenize = tokenize
        top = store.top_documents(info, sae, features, max_docs)
        self.docs = sorted(set(top["doc_idx"].to_list()))
        self._texts = store.documents(info, text=True, metadata=False, doc_idx=self.docs).select("doc_idx", "text")
        self._pos = self._positions_of(self._texts)
        self.notes = [f"no token rows (encode --keep-tokens): recomputed with the model in each feature's top "
                      f"{max_docs} documents ({len(self.docs)} in all); counts and background cover those only"]

    def _positions_of(self, texts: pl.DataFrame) -> pl.DataFrame:
        rows = []
        for doc, text in texts.iter_rows():
            windows = self._tokenize(self.scorer.loaded.tokenizer, [text], window=self.scorer.window,
                                     exclude_special=self.scorer.exclude_special)
            spans = [tuple(map(int, w.offsets[i])) for w in windows for i in np.flatnonzero(w.content)]
            rows += [(doc, i, s, e) for i, (s, e) in enumerate(spans)]
        return pl.DataFrame(rows, schema={"doc_idx": pl.Int32, "token_index": pl.Int32, "start": pl.Int32,
                                          "end": pl.Int32}, orient="row")

    def hits(self, feature: int) -> pl.DataFrame:
        spans = []
        for doc, text in self._texts.iter_rows():
            spans += [(doc, t.start, t.end) for t in self.scorer.feature_tokens(text, feature)]
        found = pl.DataFrame(spans, schema={"doc_idx": pl.Int32, "start": pl.Int32, "end": pl.Int32}, orient="row")
        return self._pos.join(found, on=["doc_idx", "start", "end"], how="semi").select("doc_idx", "token_index")

    def positions(self, docs: list[int]) -> pl.DataFrame:
        return self._pos.filter(pl.col("doc_idx").is_in(docs))

    def texts(self, docs: list[int]) -> pl.DataFrame:
        return self._texts.filter(pl.col("doc_idx").is_in(docs))

    def background(self, wanted: set[str], n: int) -> tuple[pl.DataFrame, int]:
        keep = pl.DataFrame({"ngram": sorted(wanted)}, schema={"ngram": pl.Utf8})
        counts = ngrams(self._pos, self._texts, n).join(keep, on="ngram", how="semi").group_by("ngram").len("covered")
        return counts, self._pos.height

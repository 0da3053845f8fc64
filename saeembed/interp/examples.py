"""Examples of what a feature fires on, for explaining it and, separately, for scoring the explanation.

Per feature: the strongest activations plus samples from every quantile of its activation values
(an explanation must cover the weak end too), split into an explain set and a held-out score set that
never share a document; and non-activating contrasts: random documents, and hard negatives (documents
that fire many of the same other features, i.e. similar in SAE space, but not this one), again split
between the two sets. Every example is a window of text around a token span: the feature's strongest
token for activating documents, a co-firing feature's strongest token for negatives, so all windows
look alike and only the feature tells them apart.

Everything is read in chunks of features with a few store queries; nothing dense over the corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from saeembed.store import SAEInfo, Store
from saeembed.textwindow import window as text_window
from saeembed.textwindow import word_bounds


@dataclass(frozen=True)
class Example:
    corpus_id: int
    doc_idx: int
    value: float  # the feature's activation (0 for a non-activating example)
    text: str  # a window of the document
    hl: tuple[int, int] | None  # the highlighted span inside `text` (whole words)
    kind: str  # top | quantile | random | hard
    # (for a non-activating example, hl is the token its window is centred on, never shown as marked)
    tok: tuple[int, int] | None = None  # the activating token itself inside `text` (hl grows it to words)

    @property
    def token_text(self) -> str:
        return self.text[self.tok[0] : self.tok[1]] if self.tok else self.span_text

    @property
    def key(self) -> tuple[int, int]:
        return (self.corpus_id, self.doc_idx)

    @property
    def span_text(self) -> str:
        return self.text[self.hl[0] : self.hl[1]] if self.hl else ""

    def around(self, width: int) -> str:
        """A narrower window: `width` characters each side of the highlighted (or centre) span."""
        if self.hl is None:
            return self.text
        return window(self.text, self.hl[0], self.hl[1], width)[0]

    def marked(self, hl: tuple[int, int] | None = None, left: str = "<<", right: str = ">>") -> str:
        """The window with a span marked (default: its own highlight)."""
        hl = self.hl if hl is None else hl
        if not hl:
            return self.text
        return self.text[: hl[0]] + left + self.text[hl[0] : hl[1]] + right + self.text[hl[1] :]


@dataclass
class FeatureExamples:
    feature: int
    n_active: int  # documents it fires on in the sampled corpora
    explain: list[Example] = field(default_factory=list)
    score: list[Example] = field(default_factory=list)
    explain_negatives: list[Example] = field(default_factory=list)
    score_negatives: list[Example] = field(default_factory=list)

    def check_disjoint(self) -> None:
        a = {e.key for e in self.explain + self.explain_negatives}
        b = {e.key for e in self.score + self.score_negatives}
        assert not a & b, f"feature {self.feature}: explain and score examples overlap"


@dataclass
class SampleConfig:
    n_top: int = 10  # strongest activations, all in the explain set
    n_quantile: int = 10  # quantile-sampled activations in the explain set
    n_score: int = 20  # held-out activations for scoring
    n_bins: int = 5  # activation quantile bins sampled from
    n_random: int = 10  # random non-activating examples per set (explain / score)
    n_hard: int = 10  # hard negatives per set
    window: int = 80  # characters of context on each side of the span
    pool_size: int = 3000  # random documents the negatives are drawn from
    seed: int = 0


def window(text: str, start: int | None, end: int | None, width: int) -> tuple[str, tuple[int, int] | None]:
    """About `width` characters each side of [start, end), cut at spaces, no ellipses; whitespace becomes
    spaces (offsets kept). Returns (window, highlight span inside it)."""
    return text_window(text, start, end, width, words=True, fold=True, ellipsis=False)


def token_span(text: str, start, end, hl: tuple[int, int] | None) -> tuple[int, int] | None:
    """Where the token [start, end) of `text` lies in its window, given the window's grown span `hl`."""
    if hl is None or start is None or end is None or not 0 <= start < end <= len(text):
        return None
    grown = word_bounds(text, start, end)[0]
    return hl[0] + start - grown, hl[0] + end - grown


class ExampleSampler:
    """Draws explain/score examples for features of one SAE over one or more corpora."""

    def __init__(self, store: Store, sae: SAEInfo, corpus_ids: list[int], config: SampleConfig | None = None):
        self.store, self.sae, self.corpus_ids = store, sae, list(corpus_ids)
        self.cfg = config or SampleConfig()
        self._texts: dict[tuple[int, int], str] = {}
        self._load_pool()

    # --- background pool (random documents) -----------------------------------------------------

    def _load_pool(self) -> None:
        pool = self.store.sample_encoded_docs(self.sae.sae_key, self.corpus_ids, seed=self.cfg.seed,
                                              limit=self.cfg.pool_size)
        self.pool_keys = list(zip(pool["corpus_id"].to_list(), pool["doc_idx"].to_list()))
        pos = {k: i for i, k in enumerate(self.pool_keys)}
        rows = self.store.activations_of_docs(self.sae.sae_key, self.pool_keys)
        rows = rows.with_columns(
            pl.Series("pos", [pos[k] for k in zip(rows["corpus_id"].to_list(), rows["doc_idx"].to_list())],
                      dtype=pl.Int64)
        ).sort("pos", "feature")
        # CSR built by hand so its data order is exactly the rows' order (spans stay aligned)
        row_pos = rows["pos"].to_numpy()
        indptr = np.searchsorted(row_pos, np.arange(len(self.pool_keys) + 1)).astype(np.int64)
        self.pool_csr = sp.csr_matrix(
            (np.ones(rows.height, dtype=np.float32), rows["feature"].to_numpy().astype(np.int32), indptr),
            shape=(len(self.pool_keys), self.sae.d_sae),
        )
        self.pool_csc = self.pool_csr.tocsc()
        self.pool_span = np.stack([rows["span_start"].fill_null(-1).to_numpy(),
                                   rows["span_end"].fill_null(-1).to_numpy()], axis=1)
        n = max(len(self.pool_keys), 1)
        self.pool_freq = np.asarray(self.pool_csr.sum(axis=0)).ravel() / n

    def texts(self, keys) -> dict[tuple[int, int], str]:
        missing = sorted({k for k in keys if k not in self._texts})
        by_corpus: dict[int, list[int]] = {}
        for c, d in missing:
            by_corpus.setdefault(c, []).append(d)
        for c, docs in by_corpus.items():
            rows = self.store.doc_texts(c, docs)
            for d, t in zip(rows["doc_idx"].to_list(), rows["text"].to_list()):
                self._texts[(c, d)] = t
        return {k: self._texts.get(k, "") for k in keys}

    def background(self, n: int) -> list[Example]:
        """Windows of random pool documents around a random active token: what text looks like in general."""
        rng = np.random.default_rng([self.cfg.seed, 7])
        idx = rng.permutation(len(self.pool_keys))[:n]
        texts = self.texts([self.pool_keys[i] for i in idx])
        out = []
        for i in idx:
            key = self.pool_keys[i]
            lo, hi = self.pool_csr.indptr[i], self.pool_csr.indptr[i + 1]
            s = e = None
            if hi > lo:
                s, e = (int(v) for v in self.pool_span[lo + int(rng.integers(hi - lo))])
                s, e = (s, e) if s >= 0 and e > s else (None, None)
            text, hl = window(texts[key], s, e, self.cfg.window)
            out.append(Example(key[0], key[1], 0.0, text, hl, "random"))
        return out

    # --- per-feature examples -------------------------------------------------------------------

    def positives(self, features: list[int]) -> pl.DataFrame:
        """Top activations and per-quantile random samples of each feature (one query)."""
        c = self.cfg
        per_bin = math.ceil((c.n_quantile + c.n_score) / c.n_bins) + 2
        return self.store.activation_samples(self.sae.sae_key, self.corpus_ids, features, n_bins=c.n_bins,
                                             seed=c.seed, n_top=c.n_top, per_bin=per_bin)

    def sample(self, features: list[int]) -> dict[int, FeatureExamples]:
        c = self.cfg
        rows = self.positives(features)
        groups = {f: g for (f,), g in rows.partition_by("feature", as_dict=True).items()} if rows.height else {}
        chosen: dict[int, tuple[list[dict], list[dict]]] = {}
        for f in features:
            g = groups.get(f)
            if g is None:
                continue
            chosen[f] = self._split_positives(g.to_dicts())
        keys = {(r["corpus_id"], r["doc_idx"]) for ex, sc in chosen.values() for r in ex + sc}
        doc_rows = self.store.activations_of_docs(self.sae.sae_key, sorted(keys)) if keys else None
        texts = self.texts(keys)
        out: dict[int, FeatureExamples] = {}
        for f in features:
            if f not in chosen:
                out[f] = FeatureExamples(f, 0)
                continue
            ex_rows, sc_rows = chosen[f]
            n_active = int(groups[f]["n"][0])

            def make(r, kind):
                key = (r["corpus_id"], r["doc_idx"])
                text, hl = window(texts[key], r["span_start"], r["span_end"], c.window)
                return Example(key[0], key[1], float(r["value"]), text, hl, kind,
                               token_span(texts[key], r["span_start"], r["span_end"], hl))

            fe = FeatureExamples(
                f, n_active,
                explain=[make(r, "top" if r["rk"] <= c.n_top else "quantile") for r in ex_rows],
                score=[make(r, "top" if r["rk"] <= c.n_top else "quantile") for r in sc_rows],
            )
            self._negatives(fe, {(r["corpus_id"], r["doc_idx"]) for r in ex_rows + sc_rows}, doc_rows)
            fe.check_disjoint()
            out[f] = fe
        return out

    def _split_positives(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        """Explain = the top n_top + quantile samples; score = other quantile samples. Documents are unique."""
        c = self.cfg
        seen, uniq = set(), []
        for r in rows:
            k = (r["corpus_id"], r["doc_idx"])
            if k not in seen:
                seen.add(k)
                uniq.append(r)
        want = c.n_top + c.n_quantile + c.n_score
        if len(uniq) < want:  # a rare feature: alternate ranks so both sets span its range
            uniq.sort(key=lambda r: r["rk"])
            n_ex = min(c.n_top + c.n_quantile, math.ceil(len(uniq) / 2))
            ex = uniq[0::2][:n_ex]
            ex_keys = {id(r) for r in ex}
            return ex, [r for r in uniq if id(r) not in ex_keys][: c.n_score]
        top = [r for r in uniq if r["rk"] <= c.n_top]
        rest = sorted((r for r in uniq if r["rk"] > c.n_top), key=lambda r: (r["r2"], r["bin"]))
        ex_q, score = [], []
        for r in rest:  # round-robin over bins; each goes to the set that is least full
            if len(ex_q) / max(c.n_quantile, 1) <= len(score) / max(c.n_score, 1) and len(ex_q) < c.n_quantile:
                ex_q.append(r)
            elif len(score) < c.n_score:
                score.append(r)
            elif len(ex_q) < c.n_quantile:
                ex_q.append(r)
        return top + ex_q, score

    def _negatives(self, fe: FeatureExamples, positive_keys: set, doc_rows: pl.DataFrame | None) -> None:
        c = self.cfg
        if not self.pool_keys:
            return
        fires = set(self.pool_csc.indices[self.pool_csc.indptr[fe.feature] : self.pool_csc.indptr[fe.feature + 1]])
        candidates = [i for i in range(len(self.pool_keys)) if i not in fires and self.pool_keys[i] not in positive_keys]
        # hard: pool documents closest to the feature's co-firing profile (idf-weighted), minus its own
        weights = np.zeros(self.sae.d_sae, dtype=np.float32)
        if doc_rows is not None and doc_rows.height:
            mine = doc_rows.join(
                pl.DataFrame({"corpus_id": [k[0] for k in positive_keys], "doc_idx": [k[1] for k in positive_keys]},
                             schema={"corpus_id": pl.Int32, "doc_idx": pl.Int32}),
                on=["corpus_id", "doc_idx"],
            )
            counts = np.bincount(mine["feature"].to_numpy(), minlength=self.sae.d_sae)[: self.sae.d_sae]
            weights = (counts / max(len(positive_keys), 1)).astype(np.float32)
            weights *= np.log1p(1.0 / np.maximum(self.pool_freq, 1.0 / max(len(self.pool_keys), 1))).astype(np.float32)
            weights[fe.feature] = 0.0
        hard_idx: list[int] = []
        if c.n_hard and weights.any() and candidates:
            sim = self.pool_csr[candidates] @ weights
            order = np.argsort(-sim, kind="stable")[: 2 * c.n_hard]
            hard_idx = [candidates[i] for i in order if sim[i] > 0]
        hard_set = set(hard_idx)
        # random: the first pool documents (the pool is in random order) that do not fire; features share
        # most of them, so their windows are embedded once per run
        rand_idx = [i for i in candidates if i not in hard_set][: 2 * c.n_random]
        texts = self.texts([self.pool_keys[i] for i in hard_idx + rand_idx])

        def make(i: int, kind: str) -> Example:
            key = self.pool_keys[i]
            lo, hi = self.pool_csr.indptr[i], self.pool_csr.indptr[i + 1]
            feats = self.pool_csr.indices[lo:hi]
            if hi > lo:  # centre the window on the doc's strongest co-firing token (hard) or a fixed random one
                j = lo + (int(np.argmax(weights[feats])) if kind == "hard"
                          else int(np.random.default_rng([c.seed, i]).integers(hi - lo)))
                s, e = (int(v) for v in self.pool_span[j])
            else:
                s = e = -1
            text, hl = window(texts[key], s if s >= 0 else None, e if e > 0 else None, c.window)
            return Example(key[0], key[1], 0.0, text, hl, kind)  # hl: the token the window is centred on

        hard = [make(i, "hard") for i in hard_idx]
        rand = [make(i, "random") for i in rand_idx]
        fe.explain_negatives = hard[0::2][: c.n_hard] + rand[0::2][: c.n_random]
        fe.score_negatives = hard[1::2][: c.n_hard] + rand[1::2][: c.n_random]

"""The offline labeller: a short phrase for what a feature fires on, no LLM.

The phrase (saeembed.interp.phrases) says what fires — a token or its kind: currency amounts, years,
"?" ending a question, a word family — then the context words the feature's windows over-represent
against background windows, then the kind of document when one dominates (the corpus). Metadata values
the feature's documents over-represent (a share ≥ 50 % and ≥ 1.5× the corpus's) are kept beside the
label with the corpus they were measured in, and shown only where that corpus is analysed: a label is
store-wide, "stdlib=false 83 % vs 48 %" is a fact about one corpus.
The contrastive terms behind it are kept too: for each window word and bigram (and, counted again, the
highlighted words) p·log(p/q), its share of activating examples p against its background share q;
numbers also count as shapes (<year>, <number>).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from saeembed.interp.examples import Example
from saeembed.interp.phrases import compose, piece_of, topical, what_fires
from saeembed.interp.topics import DocStats, topic_words
from saeembed.store import Store

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.U)
_PUNCT = re.compile(r"[^\w\s]", re.U)
# Only used to drop bigrams made of two function words; single words compete on their statistics.
_STOP = set(
    "a an the and or but of to in on at by for with from as is are was were be been it its this that these those "
    "i you he she we they me him her us them my your our their not no do does did have has had will would can could "
    "there here so if then than".split()
)


_PLACEHOLDERS = {"unk"}  # "<unk>" stands for any rare word in some corpora (WikiText): no context


def terms_of(text: str) -> list[str]:
    """Lower-cased words, number shapes, and bigrams of adjacent words."""
    words = [w.lower() for w in _WORD.findall(text)]
    out = list(words)
    for w in words:
        if w.isdecimal() and w.isascii():
            out.append("<year>" if len(w) == 4 and 1800 <= int(w) <= 2099 else "<number>")
    out.extend(f"{a} {b}" for a, b in zip(words, words[1:]) if not (a in _STOP and b in _STOP))
    return out


def span_terms(ex: Example) -> list[str]:
    """Terms of the highlighted span; a span of pure punctuation is its own term."""
    span = ex.span_text.strip()
    if not span:
        return []
    words = terms_of(span)
    return words or [c for c in _PUNCT.findall(span)][:1]


class TermStats(DocStats):
    """Document frequencies of terms over a set of windows (each window counts a term once)."""

    @classmethod
    def of(cls, texts, words=terms_of) -> "TermStats":
        return super().of(texts, words)


@dataclass
class Background:
    """What text looks like in general, to contrast a feature's examples with: random windows (their terms
    and the windows themselves) and the whole documents they come from."""

    windows: TermStats
    examples: list[Example] = field(default_factory=list)
    docs: DocStats = field(default_factory=DocStats)

    @classmethod
    def of(cls, examples: list[Example], texts: dict | None = None) -> "Background":
        docs = DocStats.of(texts[k] for k in dict.fromkeys(e.key for e in examples)) if texts else DocStats()
        return cls(TermStats.of(e.text for e in examples), list(examples), docs)


@dataclass
class OfflineLabel:
    label: str  # the phrase, shown everywhere; metadata it over-represents is per corpus (Store.labels(corpus=…))
    terms: list[str]  # what the embedding scorer embeds
    term_scores: list[float]
    metadata: list[dict]
    text: str = ""  # what the scorer embeds: the phrase without metadata
    kind: str = ""  # what fires: currency, punct, year, word, family, words, …
    what: str = ""  # the phrase's first part alone: what fires, without its context


def contrastive_terms(
    positives: list[Example], background: TermStats, *, n_terms: int = 3, min_share: float = 0.1
) -> tuple[list[str], list[float]]:
    n = len(positives)
    if n == 0:
        return [], []
    window_counts, span_counts = Counter(), Counter()
    for ex in positives:
        window_counts.update(set(terms_of(ex.text)))
        span_counts.update(set(span_terms(ex)))
    floor = 0.5 / (background.n + 1)

    def kl(p: float, q: float) -> float:
        return p * math.log(p / q) if p > q else 0.0

    scored = []
    for t in set(window_counts) | set(span_counts):
        p_w, p_s = window_counts[t] / n, span_counts[t] / n
        if max(p_w, p_s) < min_share or window_counts[t] + span_counts[t] < 2:
            continue
        q = max((background.counts.get(t, 0) + 0.5) / (background.n + 1), floor)
        s = kl(p_w, q) + kl(p_s, q)
        if s > 0:
            scored.append((s, t))
    scored.sort(key=lambda x: (-x[0], x[1]))
    chosen, scores = [], []
    for s, t in scored:
        words = t.split()
        if any(t in c.split() for c in chosen):  # a word already said inside a chosen bigram
            continue
        inside = [i for i, c in enumerate(chosen) if c in words]
        if inside:  # a bigram extending chosen words replaces them only when nearly as strong
            if s < 0.8 * max(scores[i] for i in inside):
                continue
            for i in reversed(inside):
                del chosen[i], scores[i]
        chosen.append(t)
        scores.append(s)
        if len(chosen) == n_terms:
            break
    if not chosen:  # nothing contrasts: fall back to the commonest highlighted words
        common = span_counts.most_common(n_terms)
        chosen, scores = [t for t, _ in common], [0.0] * len(common)
    return chosen, [round(s, 4) for s in scores]


def metadata_overrep(
    store: Store, sae_key: int, corpus_ids: list[int], features: list[int], *,
    min_share: float = 0.5, min_lift: float = 1.5, min_docs: int = 5, max_values: int = 50,
) -> dict[int, list[dict]]:
    """Metadata values (and, over several corpora, the corpus) that a feature's documents over-represent:
    {feature: [{column, value, share, base_share, lift}]} with share ≥ min_share and lift ≥ min_lift."""
    out: dict[int, list[dict]] = {f: [] for f in features}
    infos = store.corpus_names(corpus_ids)
    totals = store.feature_doc_totals(sae_key, corpus_ids, features)
    n_active = dict(zip(totals["feature"].to_list(), totals["n"].to_list()))
    if len(infos) > 1:  # which corpus a feature lives in is the first "metadata"
        sizes = store.encoded_doc_counts(sae_key, corpus_ids)
        total = max(int(sizes["n"].sum()), 1)
        base = {c: n / total for c, n in zip(sizes["corpus_id"].to_list(), sizes["n"].to_list())}
        per = store.feature_docs_by_corpus(sae_key, corpus_ids, features)
        for f, c, n in per.iter_rows():
            _maybe_add(out, f, "corpus", infos.get(c, c), n, n_active.get(f, 0), base.get(c, 0), min_share,
                       min_lift, min_docs, None)
    for cid in infos:
        info = store.corpus(infos[cid])
        for col in info.metadata_columns:
            base_rows = store.metadata_value_counts(info, col, max_values=max_values)
            if base_rows is None:
                continue
            n_docs = max(int(base_rows["n"].sum()), 1)
            base = {v: n / n_docs for v, n in base_rows.iter_rows()}
            per = store.feature_docs_by_value(info, sae_key, col, features)
            in_corpus = per.group_by("feature").agg(pl.col("n").sum().alias("tot"))
            tot = dict(zip(in_corpus["feature"].to_list(), in_corpus["tot"].to_list()))
            for f, v, n in per.iter_rows():
                if v is None:
                    continue
                _maybe_add(out, f, col, v, n, tot.get(f, 0), base.get(v, 0), min_share, min_lift, min_docs,
                           infos[cid])
    for f in out:
        out[f].sort(key=lambda m: -m["lift"])
    return out


def _maybe_add(out, f, column, value, n, total, base, min_share, min_lift, min_docs, corpus) -> None:
    if total < min_docs or base <= 0:
        return
    share = n / total
    lift = share / base
    if share >= min_share and lift >= min_lift:
        # a metadata value is a fact about one corpus: shown only where that corpus is analysed
        out[f].append({"column": column, "value": str(value), "share": round(share, 3),
                       "base_share": round(base, 3), "lift": round(lift, 2), "corpus": corpus})


def offline_label(
    positives: list[Example], background: TermStats, metadata: list[dict] | None = None, *, n_terms: int = 3,
    similar: list[Example] | None = None, docs: list[str] | None = None, doc_background: DocStats | None = None,
    similar_docs: list[str] | None = None,
) -> OfflineLabel:
    """A short phrase for what the feature fires on (saeembed.interp.phrases), the context words its
    windows over-represent, and metadata values it over-represents. `text` is what the scorer embeds.
    similar: non-activating windows of similar documents; context words common there do not tell the
    feature apart, so they are left out. docs (the activating documents' texts) and doc_background:
    a feature firing on many different words is named by the words its documents share (and
    similar_docs, the similar windows' documents, do not)."""
    spans = [(e.text, e.tok or e.hl) for e in positives]
    examples = [(t, s, piece_of(t, s)) for t, s in spans if s and t[s[0]:s[1]].strip()]
    meta = list(metadata or [])
    if not examples:
        return OfflineLabel("(no clear pattern)", [], [], meta, "")
    n = len(examples)
    span_words = Counter(p.lower() for _, _, p in examples)
    specific = {w: math.log((c / n + 1e-9) / ((background.counts.get(w, 0) + 0.5) / (background.n + 1)))
                for w, c in span_words.items()}
    what, kind = what_fires(examples, specific)
    context = context_words(positives, background, exclude=set(span_words) | set(terms_of(" ".join(span_words))),
                            similar=similar)
    # broad: no word covers even a third of the examples, most are different; the documents may share a topic
    broad = kind == "words" and span_words.most_common(1)[0][1] < 0.3 * n and len(span_words) >= 0.5 * n
    if broad and docs and doc_background is not None:
        topic = topic_words(docs, doc_background, exclude={w for p in span_words for w in terms_of(p)},
                            similar=DocStats.of(similar_docs) if similar_docs else None)
        if topic:
            what, kind, context = topical(what, topic), "topic", []
    where = next((f"mostly {m['value']}" for m in meta if m["column"] == "corpus" and m["share"] >= 0.7), None)
    label = compose(what, context[:2], where)
    terms, scores = contrastive_terms(positives, background, n_terms=n_terms)
    # the scorer reads the phrase without display quotes: a sentence model sees the words themselves
    text = compose(what, context[:2], None).replace('"', "")
    return OfflineLabel(label, terms, scores, meta, text, kind, what)


def context_words(positives: list[Example], background: TermStats, *, exclude: set[str], min_share: float = 0.3,
                  min_lift: float = 2.0, similar: list[Example] | None = None) -> list[str]:
    """Words around the activating piece that the feature's windows over-represent (share ≥ min_share
    and ≥ min_lift × their share in background windows and in `similar` non-activating ones), strongest first."""
    n = len(positives)
    counts, near = Counter(), Counter()
    for ex in positives:
        counts.update({w.lower() for w in _WORD.findall(ex.text)})
    for ex in similar or []:
        near.update({w.lower() for w in _WORD.findall(ex.text)})
    scored = []
    for w, c in counts.items():
        p = c / max(n, 1)
        if w in exclude or w in _STOP or w in _PLACEHOLDERS or p < min_share or len(w) < 2:
            continue
        q = (background.counts.get(w, 0) + 0.5) / (background.n + 1)
        if similar:
            q = max(q, (near[w] + 0.5) / (len(similar) + 1))
        if p >= min_lift * q:
            scored.append((p * math.log(p / q), w))
    return [w for _, w in sorted(scored, key=lambda x: (-x[0], x[1]))]

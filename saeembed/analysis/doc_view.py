"""One document seen through the SAE: where given features fire, token by token, or its top features.

Token spans come from the stored token rows (encode --keep-tokens) when the encoding has them, else
they are recomputed with the encoding's model and SAE (encode/doc_tokens.py); the result says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from saeembed.errors import InputError
from saeembed.store import Store


@dataclass
class DocView:
    corpus: str
    doc_id: str
    text: str
    spans: list[dict] = field(default_factory=list)  # feature, token_index, start, end, token, value
    top: pl.DataFrame | None = None  # without features: feature, label, label_source, value, active_tokens
    source: str | None = None  # "token rows" | "recomputed"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"corpus": self.corpus, "doc_id": self.doc_id, "text": self.text, "source": self.source,
               "notes": self.notes, "spans": self.spans}
        if self.top is not None:
            out["top_features"] = self.top.to_dicts()
        return out


def show_document(store: Store, corpus: str, doc_id: str, features: list[int] | None = None, *,
                  sae: str | None = None, top: int = 10, device: str = "cpu") -> DocView:
    """The document `doc_id` of `corpus` with the tokens where each of `features` fires (value > 0), or,
    without features, its `top` strongest features with their labels."""
    info = store.corpus(corpus)
    s = store.encoded_sae(info, sae)
    doc = store.document_by_id(corpus, doc_id)
    if doc.is_empty():
        raise InputError(f"no document {doc_id!r} in corpus {corpus!r}")
    d = doc.row(0, named=True)
    view = DocView(corpus, doc_id, d["text"])
    stored = store.document_activations(s.sae_key, info.corpus_id, d["doc_idx"])
    if not features:
        rows = stored.head(top)
        labels = store.labels(s.sae_key, rows["feature"].to_list()).select("feature", "label", "label_source")
        view.top = rows.join(labels, on="feature", how="left", maintain_order="left").select(
            "feature", "label", "label_source", "value", "active_tokens")
        return view
    features = s.check_features(features)
    if store.has_token_rows(info, s):
        view.source = "token rows"
        rows = store.doc_token_rows(info, s, d["doc_idx"], features)
        view.spans = [{"feature": r["feature"], "token_index": r["token_index"], "start": r["start"], "end": r["end"],
                       "token": d["text"][r["start"]:r["end"]], "value": float(r["value"])}
                      for r in rows.iter_rows(named=True)]
    else:
        view.source = "recomputed"
        view.notes.append("no token rows (encode --keep-tokens): recomputed with the encoding's model and SAE")
        view.spans = _recompute(store, info, s, d["text"], features, device)
    fired = {sp["feature"] for sp in view.spans}
    for f in features:
        if f not in fired:
            view.notes.append(f"feature {f} does not fire in this document")
    view.spans.sort(key=lambda sp: (sp["start"], sp["feature"]))
    return view


def _recompute(store: Store, info, s, text: str, features: list[int], device: str) -> list[dict]:
    from saeembed.encode.doc_tokens import DocTokens

    setup = store.encoding_setup(info.corpus_id, s.sae_key)
    if not setup or not setup.get("sae_source"):
        raise InputError(f"corpus {info.name!r} has no token rows and the store does not say where its SAE came from; "
                         f"re-encode with `saeembed encode {info.name} --keep-tokens --replace`")
    scorer = DocTokens(setup["model"], setup["sae_source"], setup["hook"], setup["params"], device=device)
    return [{"feature": f, "token_index": None, "start": t.start, "end": t.end, "token": text[t.start:t.end],
             "value": t.value} for f in features for t in scorer.feature_tokens(text, f)]


def mark_spans(text: str, spans: list[dict], *, with_feature: bool = False) -> str:
    """The text with each span as «token»(value) (several features on one token: one mark, values joined)."""
    by_span: dict[tuple[int, int], list[dict]] = {}
    for sp in spans:
        by_span.setdefault((sp["start"], sp["end"]), []).append(sp)
    out, at = [], 0
    for (start, end), group in sorted(by_span.items()):
        if start < at:  # overlapping spans cannot both be marked inline; the first wins
            continue
        vals = ", ".join((f"f{g['feature']} " if with_feature else "") + f"{g['value']:.3g}" for g in group)
        out += [text[at:start], f"«{text[start:end]}»({vals})"]
        at = end
    out.append(text[at:])
    return "".join(out)

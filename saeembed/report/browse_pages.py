"""The feature browser's HTML pages: the feature list, one feature, one document.

Every piece of user text (labels, corpus names, doc ids, document text) goes through `esc` or
`highlight`, which escape; links are built by browse_urls (percent-quoted, then escaped as attributes).
"""

from __future__ import annotations

from urllib.parse import urlencode

import polars as pl

from saeembed.report import charts
from saeembed.report.browse_urls import doc_url, feature_url, flag_param, float_param, int_param
from saeembed.report.highlight import Span, exemplar_block, highlight
from saeembed.report.html import Section, cards, esc, fmt, page, pct, table

PAGE_SIZE = 100
DOC_ROWS = 100  # a document page lists its strongest features; the /api twin lists all
GENERIC_NOTE = "generic: fires on nearly every document (the rule diff uses), so it says little about any one"


def _nav(q: str = "") -> str:
    return (f'<form class="search" method="get" action="/"><input type="search" name="q" value="{esc(q)}" '
            f'placeholder="label words or feature id" size="32"><button type="submit">search</button></form>')


def _flink(feature, label=None) -> str:
    return f'<a href="{feature_url(feature)}">#{int(feature)}</a>' + (f" {esc(label)}" if label else "")


def _toggle(href: str, hidden: int, shown: bool) -> str:
    """The line that says how many generic features are out of view, with the link that flips it."""
    if shown:
        return f'<p class="note generic-toggle">generic features shown · <a href="{esc(href)}">hide them</a></p>'
    if not hidden:
        return ""
    return (f'<p class="note generic-toggle">{hidden:,} generic feature{"s" if hidden != 1 else ""} hidden '
            f'(fire on ≥90% of documents or of random-token texts) · <a href="{esc(href)}">show them</a></p>')


def index_html(b, params: dict) -> str:
    s = b.stats()
    q = params.get("q", "")
    corpus = params.get("corpus") or None
    order = params.get("order", "density")
    offset = int_param(params, "offset", 0)
    generic = flag_param(params, "generic")
    rows, total, hidden = b.search(q, min_density=float_param(params, "min_density"),
                                   max_density=float_param(params, "max_density"), corpus=corpus, order=order,
                                   offset=offset, generic=generic)
    opts = "".join(f'<option value="{esc(c)}"{" selected" if c == corpus else ""}>{esc(c)}</option>'
                   for c in s.corpora["corpus"].to_list())
    order_opts = "".join(f'<option value="{o}"{" selected" if o == order else ""}>{o}</option>'
                         for o in ("density", "rare", "max", "feature"))
    form = (
        '<form class="search" method="get" action="/">'
        f'<input type="search" name="q" value="{esc(q)}" placeholder="label words or feature id" size="30">'
        f'<input type="number" step="any" min="0" max="1" name="min_density" value="{esc(params.get("min_density", ""))}" placeholder="min density">'
        f'<input type="number" step="any" min="0" max="1" name="max_density" value="{esc(params.get("max_density", ""))}" placeholder="max density">'
        f'<select name="corpus"><option value="">all corpora</option>{opts}</select>'
        f'<select name="order">{order_opts}</select>'
        f'<label><input type="checkbox" name="generic" value="1"{" checked" if generic else ""}> generic</label>'
        '<button type="submit">search</button></form>'
    )
    out = []
    for r in rows.to_dicts():
        r["feature"] = _flink(r["feature"])
        r["density"] = pct(r["density"])
        r["generic"] = r.pop("generic_reason") or ""
        out.append(r)
    rest = {k: v for k, v in params.items() if k not in ("offset", "generic")}
    toggle = _toggle("/?" + urlencode(rest | ({} if generic else {"generic": "1"})), hidden, generic)
    pager = ""
    if total > offset + PAGE_SIZE:
        nxt = dict(params, offset=str(offset + PAGE_SIZE))
        pager = f'<p><a href="/?{esc(urlencode(nxt))}">next {PAGE_SIZE} →</a></p>'
    corpora_rows = s.corpora.select("corpus", "n_docs").to_dicts()
    summary = {"SAE": s.sae.sae_hash, "model": s.sae.model, "hook": s.sae.hook, "latents": s.sae.d_sae,
               "documents": s.n_docs, "features that fire": s.features.height, "generic": s.n_generic,
               "labelled": s.features.filter(pl.col("label").is_not_null()).height}
    columns = ["feature", "label", "label_source", "docs", "density", "max_value", "mean_value", "n_corpora"]
    sections = [
        Section("Store", cards(summary) + table(corpora_rows), id="store"),
        Section(f"Features ({total:,} match)", form + toggle
                + table(out, columns + (["generic"] if generic else []), raw={"feature"}, table_id="features") + pager,
                note="density = share of all encoded documents where the feature fires; label_source says where "
                     "the label comes from (atlas: shipped with the SAE; others: made for this store).",
                id="features"),
    ]
    return page("saeembed feature browser", sections, None, subtitle=str(b.store_path))


def feature_html(b, feature: int) -> str:
    d = b.feature(feature)
    info = d["feature"]
    per = d["corpora"]
    figures = {"documents": info.get("docs", 0), "density": pct(info.get("density")),
               "max activation": info.get("max_value"), "label source": info.get("label_source"),
               "label score": info.get("score"), "generic": info.get("generic_reason") or None}
    sections = [Section("Summary", _nav() + cards({k: v for k, v in figures.items() if v is not None}), id="summary")]
    if per.height:
        sections.append(Section("Corpora", charts.bar_chart(per["corpus"].to_list(), per["density"].to_list(),
                                                            value_label="share of the corpus's documents", percent=True)
                                + table(per.to_dicts()), id="corpora"))
    ex = d["exemplars"]
    if ex is not None and ex.height:
        blocks = []
        for (corpus,), part in ex.group_by("corpus", maintain_order=True):
            items = "".join(
                exemplar_block(highlight(r["text"], [Span(r["span_start"], r["span_end"], r["rel"], feature)]
                                         if r["span_end"] > r["span_start"] else [], vmax=1.0),
                               f"doc {r['doc_id']} · activation {fmt(r['value'])}")
                + f'<a class="note doc-link" href="{esc(doc_url(r["corpus"], r["doc_id"], feature))}">'
                  "whole document, this feature highlighted →</a>"
                for r in part.iter_rows(named=True))
            blocks.append(f"<h3>{esc(corpus)}</h3>{items}")
        sections.append(Section("Exemplars", "".join(blocks), id="exemplars",
                                note="Strongest stored documents; the shaded token is where the feature peaks."))
    co = d["correlated"]
    if co is not None:
        rows = co.to_dicts()
        for r in rows:
            r["feature"] = _flink(r["feature"])
            r["generic"] = "generic" if r["generic"] else ""
        sections.append(Section("Co-occurring features", table(rows, raw={"feature"}), id="correlated",
                                note="NPMI of presence in the same documents (1 = always together, 0 = independent); "
                                     "support = documents where both fire."))
    title = f"Feature #{feature}" + (f": {info['label']}" if info.get("label") else "")
    return page(title, sections, None, subtitle=str(b.store_path))


def document_html(b, d: dict, generic: bool = False) -> str:
    doc, acts, feature = d["doc"], d["activations"], d["feature"]
    corpus, doc_id = doc["corpus"], doc["doc_id"]
    chosen = acts.filter(pl.col("feature") == feature).to_dicts() if feature is not None else []
    if chosen:
        c = chosen[0]
        peak = max([sp.value for sp in d["spans"]] + [c["value"]])
        body = highlight(doc["text"], d["spans"], vmax=peak)
        caption = f"{corpus} · doc {doc_id} · feature #{feature}" + (f" {c['label']}" if c["label"] else "")
        note = (f"Every token where feature #{feature} fires ({len(d['spans'])} token{'s' if len(d['spans']) != 1 else ''}), "
                "shaded by its activation relative to its peak in this document; hover for values."
                if d["spans_from"] in ("tokens", "stored tokens") else f"Feature #{feature}'s strongest token in this document.")
    else:
        body, caption = esc(doc["text"]), f"{corpus} · doc {doc_id}"
        note = "Pick a feature below to shade every token where it fires."
    warn = f'<p class="note warn">{esc(d["note"])}</p>' if d["note"] else ""
    shown = acts if generic else acts.filter(~pl.col("generic") | (pl.col("feature") == (feature if feature is not None else -1)))
    hidden = acts.height - shown.height
    rows = []
    for r in shown.to_dicts():
        f = r["feature"]
        current = ' aria-current="true"' if f == feature else ""
        link = f'<a href="{esc(doc_url(corpus, doc_id, f, generic=generic))}"{current}>#{f}</a>'
        rows.append({"feature": f"<strong>{link}</strong>" if f == feature else link, "label": r["label"],
                     "label_source": r["label_source"], "activation": r["value"], "rel": r["rel"],
                     "active_tokens": r["active_tokens"], "density": pct(r["density"]),
                     "page": f'<a href="{feature_url(f)}">feature page</a>'})
    toggle = _toggle(doc_url(corpus, doc_id, feature, generic=not generic), hidden, generic)
    sections = [
        Section("Text", warn + exemplar_block(body, caption), note=note, id="text"),
        Section("Strongest features", toggle + table(
            rows, ["feature", "label", "label_source", "activation", "rel", "active_tokens", "density", "page"],
            raw={"feature", "page"}, table_id="doc-features", max_rows=DOC_ROWS), id="features",
            note="Click a feature id to highlight its tokens; rel = activation over the feature's strongest in the "
                 "store."),
    ]
    return page(f"Document {doc_id}", sections, None, subtitle=f"{corpus} · {b.store_path}")

"""One function per analysis page: polars frames / dicts in, a self-contained HTML string out.

They read only the columns they need and tolerate extra or missing optional ones, so an analysis can
grow its frame without breaking its page. `write_report(html, out)` writes any of them.
"""

from __future__ import annotations

import math

import polars as pl

from saeembed.analysis import names as naming
from saeembed.report import charts
from saeembed.report.highlight import Span, exemplar_block, highlight, marked
from saeembed.report.html import Section, cards, esc, fmt, page, pct, table


# --- shared pieces ----------------------------------------------------------------------------------

def feature_name(feature, label=None) -> str:
    """`#123 · mentions a refund`, or `#123` when unlabelled (the label without the atlas's note on how it
    was found: tables beside the charts show it in full)."""
    return naming.feature_name(feature, label, short=True)


def _pick(frame: pl.DataFrame | None, *names: str) -> str | None:
    if frame is None:
        return None
    return next((n for n in names if n in frame.columns), None)


def _get(row: dict, name: str, default=None):
    v = row.get(name, default)
    return default if isinstance(v, float) and math.isnan(v) else v


def _exemplar_html(row: dict) -> str:
    """One exemplar row (text window + span + value + rel) as highlighted, escaped HTML."""
    span = []
    if row.get("span_end") and row.get("span_end", 0) > (row.get("span_start") or 0):
        span = [Span(row["span_start"], row["span_end"], float(row.get("rel") or 1.0), row.get("feature"))]
    meta = " · ".join(x for x in (
        str(row["corpus"]) if row.get("corpus") else None,
        f"doc {row['doc_id']}" if row.get("doc_id") is not None else None,
        f"activation {fmt(row['value'])}" if row.get("value") is not None else None,
    ) if x)
    return exemplar_block(highlight(row.get("text") or "", span, vmax=1.0), meta)


def _exemplar_sections(order: list[int], labels: dict, exemplars: pl.DataFrame | None, *,
                       sides: list[tuple[str, str]] | None = None, fallback: dict | None = None) -> str:
    """Per feature: its exemplars (optionally split by a `side` column into columns), else the fallback
    «marked» snippets {feature: {side: snippet}}."""
    blocks = []
    by_feature: dict[int, list[dict]] = {}
    if exemplars is not None and not exemplars.is_empty():
        for r in exemplars.iter_rows(named=True):
            by_feature.setdefault(r["feature"], []).append(r)
    for f in order:
        rows = by_feature.get(f, [])
        head = f'<h3>#{esc(f)} <span class="lbl">{esc(labels.get(f) or "(no label)")}</span></h3>'
        if sides:
            cols = []
            for key, name in sides:
                mine = [r for r in rows if r.get("side") == key]
                inner = "".join(_exemplar_html(r) for r in mine)
                if not inner and fallback and (fallback.get(f) or {}).get(key):
                    inner = exemplar_block(marked(fallback[f][key]))
                inner = inner or '<p class="empty">(not in this corpus)</p>'
                cols.append(f'<div><div class="note">{esc(name)}</div>{inner}</div>')
            body = f'<div class="grid2">{"".join(cols)}</div>'
        else:
            body = "".join(_exemplar_html(r) for r in rows)
            if not body and fallback and fallback.get(f):
                body = "".join(exemplar_block(marked(s)) for s in fallback[f].values() if s)
            body = body or '<p class="empty">(no exemplars stored)</p>'
        blocks.append(f'<div class="feature-block" data-feature="{esc(f)}">{head}{body}</div>')
    return "".join(blocks)


def _marked_cell(snippet) -> str:
    return marked(snippet) if snippet else ""


# --- features -----------------------------------------------------------------------------------------

def features_page(frame: pl.DataFrame, provenance: dict | None = None, *, exemplars: pl.DataFrame | None = None,
                  title: str = "Top features", generic_excluded: int = 0) -> str:
    """Top features of a corpus (analysis.feature_list): ranked bars of document frequency, the table,
    and exemplars with the activating token shaded. generic_excluded: how many generic features the
    listing left out (said in the summary and under the chart)."""
    rows = frame.to_dicts()
    labels = {r["feature"]: _get(r, "label") for r in rows}
    names = [feature_name(r["feature"], _get(r, "label")) for r in rows]
    corpora = (provenance or {}).get("corpora") or {}
    n_docs = sum(c.get("documents", 0) for c in corpora.values()) if corpora else None
    figures = {"features shown": len(rows)}
    if n_docs:
        figures["documents"] = n_docs
    if rows:
        figures["labelled"] = sum(1 for r in rows if _get(r, "label"))
    if generic_excluded:
        figures["generic left out"] = generic_excluded
    fallback = {r["feature"]: {"top": r.get("top_exemplar")} for r in rows}
    for r in rows:
        r["top_exemplar"] = _marked_cell(r.get("top_exemplar"))
    cols = [c for c in ("rank", "feature", "label", "here", "docs", "freq", "mean_value", "max_value", "label_source",
                        "score", "top_exemplar") if c in frame.columns]
    if "generic" in frame.columns and frame["generic"].any():  # kept with --keep-generic: say which
        cols.append("generic_reason")
    sections = [
        Section("Summary", cards(figures), id="summary"),
        Section("Most frequent features", charts.bar_chart(names, [r["freq"] for r in rows], value_label="share of documents",
                                                           percent=True),
                note="Share of documents where the feature fires (max activation over the document's tokens > 0)."
                     + (f" {generic_excluded} generic features (firing on nearly every document or on random "
                        "tokens) are left out; --keep-generic shows them." if generic_excluded else ""),
                id="chart"),
        Section("Table", table(rows, cols, raw={"top_exemplar"}, table_id="features-table", filter_box=True,
                               headers={"here": "peaks here on"}), id="table"),
        Section("Exemplars", _exemplar_sections([r["feature"] for r in rows], labels, exemplars,
                                                fallback=fallback),
                note="Strongest stored documents per feature; the shaded token is where the feature peaks "
                     "(shade = activation relative to the feature's strongest).", id="exemplars"),
    ]
    return page(title, sections, provenance, subtitle=_subtitle(provenance))


# --- diff -----------------------------------------------------------------------------------------------

DIFF_COLUMNS = ("ranking", "feature", "label", "here", "freq_a", "freq_b", "diff", "diff_adj", "ratio", "mean_a",
                "mean_b", "p_value", "q_value", "more_in")


RANKING_TITLES = {"raw": "What differs (length included)", "length_controlled": "What differs beyond length"}


def diff_sides(frame: pl.DataFrame, summary: dict | None, top: int,
               ranking: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The top features more frequent in A and in B, in one ranking (default: the first) of a diff frame
    with a `ranking` column. With the diff's `more_in` column its order and direction are kept; features
    with no difference are on neither side."""
    if "ranking" in frame.columns:
        ranking = ranking or frame["ranking"][0] if frame.height else ranking
        frame = frame.filter(pl.col("ranking") == ranking)
    if "more_in" in frame.columns:
        effect = "diff_adj" if ranking == "length_controlled" or (
            ranking is None and (summary or {}).get("length_controlled") and "diff_adj" in frame.columns) else "diff"
        moved = frame.filter(pl.col(effect) != 0)
        return moved.filter(pl.col("more_in") == "A").head(top), moved.filter(pl.col("more_in") == "B").head(top)
    return (frame.filter(pl.col("diff") > 0).sort("diff", descending=True).head(top),
            frame.filter(pl.col("diff") < 0).sort("diff").head(top))


def _separability_section(sep: dict | None) -> Section | None:
    if not sep:
        return None
    def f(v):
        return None if v is None else round(v, 3)
    figures = {f"top-{sep['top']} {k.replace('_', '-')}": f(v) for k, v in sep["auroc_top"].items()}
    figures |= {"all features": f(sep["auroc_all"]), "length alone": f(sep["auroc_length"])}
    return Section("Separability", cards(figures), id="separability",
                   note=f"How well the listed features tell the sides apart: {sep['note']}. An AUROC near the "
                        f"all-feature figure means the listed features carry the difference.")


def diff_page(frame: pl.DataFrame, summary: dict | None = None, provenance: dict | None = None, *,
              exemplars: pl.DataFrame | None = None, top: int = 20) -> str:
    """Dataset diff: the length finding, separability, then for each ranking (what differs; what differs
    beyond length) the features more frequent in A and in B (paired bars of their frequency on each
    side), the full table, and exemplars from each side. `summary` may name the sides (`a`, `b`)."""
    summary = dict(summary or {})
    a_name, b_name = str(summary.get("a", "A")), str(summary.get("b", "B"))
    rankings = frame["ranking"].unique(maintain_order=True).to_list() if "ranking" in frame.columns else [None]
    labels = {r["feature"]: _get(r, "label") for r in frame.iter_rows(named=True)}

    def chart(part: pl.DataFrame) -> str:
        rows = part.to_dicts()
        return charts.paired_bar_chart([feature_name(r["feature"], _get(r, "label")) for r in rows],
                                       [r["freq_a"] for r in rows], [r["freq_b"] for r in rows],
                                       a_name=a_name, b_name=b_name)

    figures = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))
               and k not in ("length_note", "length_finding")}
    for k, v in (summary.get("length") or {}).items() if isinstance(summary.get("length"), dict) else ():
        figures[f"length {k}"] = v
    summary_note = summary.get("length_note") or "Sizes of both sides; a length difference explains many feature differences by itself."
    if summary.get("length_finding"):
        summary_note = f"Finding: {summary['length_finding']}. {summary_note}"
    sections = [Section("Summary", cards(figures), id="summary", note=summary_note)]
    sep = _separability_section(summary.get("separability"))
    if sep is not None:
        sections.append(sep)
    shown = []
    for i, ranking in enumerate(rankings):
        more_a, more_b = diff_sides(frame, summary, top, ranking)
        shown += [more_a, more_b]
        part = frame.filter(pl.col("ranking") == ranking) if ranking else frame
        sig = ""
        if "q_value" in part.columns:
            sig = f" {part.filter(pl.col('q_value') < 0.05).height} of {part.height} features differ at q < 0.05 (FDR-corrected)."
        heading = f"{RANKING_TITLES[ranking]}: " if ranking and len(rankings) > 1 else ""
        how = "length-controlled (CMH) " if ranking == "length_controlled" else ""
        sections += [
            Section(f"{heading}more frequent in {a_name}", chart(more_a), id=f"more-a{'-' + str(i) if i else ''}",
                    note=f"Share of documents where each feature fires, top {more_a.height} by {how}frequency "
                         f"difference.{sig}"),
            Section(f"{heading}more frequent in {b_name}", chart(more_b), id=f"more-b{'-' + str(i) if i else ''}"),
        ]
    shown = pl.concat(shown).unique("feature", keep="first", maintain_order=True)
    fallback = {r["feature"]: {"a": r.get("exemplar_a"), "b": r.get("exemplar_b")} for r in shown.to_dicts()}
    cols = [c for c in DIFF_COLUMNS if c in frame.columns]
    sections += [
        Section("All features", table(frame.to_dicts(), cols, table_id="diff-table", filter_box=True, max_rows=500,
                                      headers={"here": "peaks here on", "freq_a": f"freq {a_name}", "freq_b": f"freq {b_name}",
                                               "mean_a": f"mean {a_name}", "mean_b": f"mean {b_name}"}), id="table"),
        Section("Exemplars", _exemplar_sections(shown["feature"].to_list(), labels, exemplars,
                                                sides=[("a", a_name), ("b", b_name)], fallback=fallback),
                note="Strongest documents of each side; the shaded token is where the feature peaks.", id="exemplars"),
    ]
    return page(f"Diff: {a_name} vs {b_name}", sections, provenance, subtitle=_subtitle(provenance))


# --- correlate -----------------------------------------------------------------------------------------

_PAIR_HEADERS = {"here_a": "a peaks here on", "here_b": "b peaks here on"}


def correlate_page(pairs: pl.DataFrame, provenance: dict | None = None, *, unexpected: pl.DataFrame | None = None,
                   summary: dict | None = None, top: int = 30, heatmap_features: int = 24) -> str:
    """Feature co-occurrence: a heatmap of NPMI among the features of the strongest pairs (unexpected
    pairs outlined), and tables of the strongest and the unexpected pairs. Unexpected pairs come as their
    own frame (CorrelateResult.unexpected) or as rows of `pairs` flagged by a boolean `unexpected` column."""
    rank = "npmi_shrunk" if "npmi_shrunk" in pairs.columns else "npmi"  # support-aware when correlate gives it
    strongest = pairs.sort(rank, descending=True).head(top)
    if unexpected is None:
        unexpected = pairs.filter(pl.col("unexpected")) if "unexpected" in pairs.columns else pairs.clear()
    else:  # one frame of every pair for the heatmap, the unexpected ones flagged
        unexpected = unexpected.with_columns(unexpected=pl.lit(True))
        flagged_pairs = pairs if "unexpected" in pairs.columns else pairs.with_columns(unexpected=pl.lit(False))
        pairs = pl.concat([flagged_pairs, unexpected], how="diagonal_relaxed").unique(
            ["feature_a", "feature_b"], keep="last", maintain_order=True)
    unexpected = unexpected.sort(rank if rank in unexpected.columns else "npmi", descending=True).head(top)
    label = {}
    for r in pairs.iter_rows(named=True):
        label.setdefault(r["feature_a"], _get(r, "label_a"))
        label.setdefault(r["feature_b"], _get(r, "label_b"))
    feats: list[int] = []
    for r in pl.concat([strongest, unexpected], how="diagonal_relaxed").iter_rows(named=True):
        for f in (r["feature_a"], r["feature_b"]):
            if f not in feats and len(feats) < heatmap_features:
                feats.append(f)
    pos = {f: i for i, f in enumerate(feats)}
    matrix = [[None] * len(feats) for _ in feats]
    flagged = set()
    for r in pairs.filter(pl.col("feature_a").is_in(feats) & pl.col("feature_b").is_in(feats)).iter_rows(named=True):
        i, j = pos[r["feature_a"]], pos[r["feature_b"]]
        matrix[i][j] = matrix[j][i] = r["npmi"]
        if r.get("unexpected"):
            flagged |= {(i, j), (j, i)}
    names = [feature_name(f, label.get(f)) for f in feats]
    cols = [c for c in ("feature_a", "label_a", "here_a", "feature_b", "label_b", "here_b", "npmi", "docs", "support",
                        "decoder_cosine", "label_similarity", "unexpected") if c in pairs.columns]
    sections = []
    if summary:
        sections.append(Section("Summary", cards(summary), id="summary"))
    sections += [
        Section("Co-occurrence heatmap", charts.heatmap(names, names, matrix, value_label="NPMI", flagged=flagged),
                note="NPMI of binary presence (−1 never together, 0 independent, 1 always together); outlined cells are "
                     "unexpected pairs (co-occur although their decoder directions are unrelated).", id="heatmap"),
        Section("Strongest pairs", table(strongest.to_dicts(), cols, table_id="strong-table", headers=_PAIR_HEADERS),
                id="strongest"),
        Section("Unexpected pairs", table(unexpected.to_dicts(), cols, table_id="unexpected-table", headers=_PAIR_HEADERS),
                id="unexpected"),
    ]
    return page("Feature correlations", sections, provenance, subtitle=_subtitle(provenance))


# --- cluster --------------------------------------------------------------------------------------------

def cluster_page(docs: pl.DataFrame, descriptions: pl.DataFrame | None = None, provenance: dict | None = None, *,
                 summary: dict | None = None, max_points: int = 5000, features_per_cluster: int = 5) -> str:
    """Clustering: a 2-D map of documents coloured by cluster (noise = −1, grey) and what each cluster's
    documents have in common (its top features, frequency inside vs outside)."""
    n = docs.height
    shown = docs if n <= max_points else docs.sample(max_points, seed=0)
    sizes = dict(docs.group_by("cluster").len().iter_rows())
    n_noise = sizes.get(-1, 0)
    figures = {"documents": n, "clusters": len([c for c in sizes if c != -1]), "noise share": pct(n_noise / n if n else 0)}
    figures |= dict(summary or {})
    lab_col = _pick(descriptions, "label")
    top_desc: dict = {}
    if descriptions is not None and not descriptions.is_empty():
        for r in descriptions.iter_rows(named=True):
            top_desc.setdefault(r["cluster"], []).append(r)
    group_names = {}
    for c, size in sizes.items():
        head = top_desc.get(c, [])
        what = (naming.group_name([r.get(lab_col) for r in head] if lab_col else [])
                or ", ".join(f"#{r['feature']}" for r in head[:2]))
        group_names[c] = f"noise ({size})" if c == -1 else f"cluster {c} ({size}){': ' + what if what else ''}"
    title_col = _pick(shown, "title", "snippet", "doc_id")
    titles = [f"{r.get('doc_id', '')} · cluster {r['cluster']}" + (f" · {r[title_col]}" if title_col and title_col != "doc_id" else "")
              for r in shown.iter_rows(named=True)]
    note = "Each point is a document; colour = cluster, grey = noise."
    if shown.height < n:
        note += f" Showing a random {shown.height:,} of {n:,} documents."
    blocks = []
    for c in sorted(top_desc, key=lambda c: (c == -1, -sizes.get(c, 0))):
        rows = [dict(r) for r in top_desc[c][:features_per_cluster]]
        cols = [k for k in ("feature", "label", "here", "freq_in", "freq_out", "exemplar") if k in rows[0]]
        for r in rows:  # «marked» snippet → escaped text with the activating token highlighted
            if "exemplar" in r:
                r["exemplar"] = _marked_cell(r["exemplar"])
        swatch = f'<i style="display:inline-block;width:10px;height:10px;background:{charts.color_for(c)}"></i>'
        blocks.append(f'<div class="feature-block" data-cluster="{esc(c)}"><h3>{swatch} {esc(group_names.get(c, f"cluster {c}"))}</h3>'
                      f'{table(rows, cols, raw={"exemplar"})}</div>')
    sections = [
        Section("Summary", cards(figures), id="summary"),
        Section("Map", charts.scatter(shown["x"].to_list(), shown["y"].to_list(), shown["cluster"].to_list(),
                                      titles=titles, group_names=group_names), note=note, id="map"),
        Section("Clusters", "".join(blocks) or '<p class="empty">(no descriptions)</p>',
                note="Top features of each cluster: share of its documents where the feature fires vs the rest, "
                     "and the member where the feature is strongest (shaded: its activating token).",
                id="clusters"),
    ]
    return page("Clusters", sections, provenance, subtitle=_subtitle(provenance))


# --- search ---------------------------------------------------------------------------------------------

def search_page(results: pl.DataFrame, provenance: dict | None = None, *, query: str | None = None) -> str:
    """Search results: scores as bars, and each hit's snippet with the matched spans highlighted."""
    rows = results.to_dicts()
    feat_col = _pick(results, "matched_features", "features", "matched")
    snip_col = _pick(results, "snippet", "text")
    for i, r in enumerate(rows, 1):
        r.setdefault("rank", i)
        if snip_col:
            r[snip_col] = marked(r.get(snip_col) or "")
    cols = [c for c in ("rank", "doc_id", "corpus", "score", feat_col, snip_col) if c and (c in results.columns or c == "rank")]
    sections = [
        Section("Scores", charts.bar_chart([str(r.get("doc_id")) for r in rows], [float(r["score"]) for r in rows],
                                           value_label="score"), id="scores"),
        Section("Results", table(rows, cols, raw={snip_col} if snip_col else set(), table_id="results-table"), id="results"),
    ]
    title = f"Search: {query}" if query else "Search results"
    return page(title, sections, provenance, subtitle=_subtitle(provenance))


# --- classify -------------------------------------------------------------------------------------------

def classify_page(curve: pl.DataFrame, metrics: dict | None = None, weights: pl.DataFrame | None = None,
                  provenance: dict | None = None, *, top: int = 30) -> str:
    """Classifier: precision–recall curve(s) (one per value of a `model`/`curve` column, e.g. SAE vs dense
    baseline), its metrics, and the most heavily weighted features (signed)."""
    metrics = dict(metrics or {})
    name_col = _pick(curve, "model", "curve", "name")
    curves = {}
    if name_col:
        for (name,), part in curve.group_by(name_col, maintain_order=True):
            part = _pr_order(part)
            curves[str(name)] = (part["recall"].to_list(), part["precision"].to_list())
    elif not curve.is_empty():
        part = _pr_order(curve)
        curves["classifier"] = (part["recall"].to_list(), part["precision"].to_list())
    base = metrics.get("positive_rate") or metrics.get("prevalence")
    sections = [
        Section("Metrics", cards(metrics), id="metrics"),
        Section("Precision–recall", charts.line_chart(curves, x_label="recall", y_label="precision", baseline=base),
                note="Dashed line: precision of a classifier that guesses (the positive rate)." if base else None, id="pr"),
    ]
    if weights is not None and not weights.is_empty():
        w = weights.with_columns(_abs=pl.col("weight").abs()).sort("_abs", descending=True).head(top).drop("_abs")
        rows = w.to_dicts()
        cols = [c for c in ("feature", "label", "weight") if c in w.columns]
        sections += [
            Section("Top weighted features",
                    charts.diverging_bar_chart([feature_name(r["feature"], _get(r, "label")) for r in rows],
                                               [r["weight"] for r in rows]),
                    note="Positive weights push towards the positive class, negative away from it.", id="weights"),
            Section("Weights table", table(rows, cols, table_id="weights-table"), id="weights-table"),
        ]
    return page("Classifier", sections, provenance, subtitle=_subtitle(provenance))


def _pr_order(part: pl.DataFrame) -> pl.DataFrame:
    """Points of one PR curve in descending-threshold order: recall rising and, at equal recall,
    precision falling (a lower threshold adds only false positives there); then threshold, highest first."""
    keys, desc = ["recall", "precision"], [False, True]
    if "threshold" in part.columns:
        keys, desc = keys + ["threshold"], desc + [True]
    return part.sort(keys, descending=desc, nulls_last=True, maintain_order=True)


# --- filter ---------------------------------------------------------------------------------------------

def filter_page(rule_counts: pl.DataFrame, overrepresented: pl.DataFrame | None = None,
                samples: pl.DataFrame | None = None, provenance: dict | None = None, *,
                summary: dict | None = None) -> str:
    """Filtering: how many rows each rule dropped, which features the dropped rows share (frequency among
    dropped vs kept), and samples of dropped rows."""
    rule_col = _pick(rule_counts, "rule", "name") or rule_counts.columns[0]
    count_col = _pick(rule_counts, "count", "dropped", "n", "rows") or rule_counts.columns[1]
    rows = rule_counts.to_dicts()
    sections = []
    if summary:
        sections.append(Section("Summary", cards(summary), id="summary"))
    sections.append(Section("Rows dropped per rule",
                            charts.bar_chart([str(r[rule_col]) for r in rows], [float(r[count_col] or 0) for r in rows],
                                             value_label="rows dropped") + table(rows),
                            note="A row matched by several rules counts once per rule.", id="rules"))
    if overrepresented is not None and not overrepresented.is_empty():
        o = overrepresented.to_dicts()
        a_col = _pick(overrepresented, "freq_dropped", "freq_in", "freq_a")
        b_col = _pick(overrepresented, "freq_kept", "freq_out", "freq_b")
        names = [feature_name(r["feature"], _get(r, "label")) for r in o]
        chart = (charts.paired_bar_chart(names, [r[a_col] for r in o], [r[b_col] for r in o], a_name="dropped", b_name="kept")
                 if a_col and b_col else "")
        for r in o:  # «marked» snippet → escaped text with the activating token highlighted
            if "exemplar" in r:
                r["exemplar"] = _marked_cell(r["exemplar"])
        sections.append(Section("What the dropped rows have in common", chart + table(o, raw={"exemplar"}),
                                note="Features over-represented among dropped rows.", id="common"))
    if samples is not None and not samples.is_empty():
        s = samples.to_dicts()
        snip = _pick(samples, "snippet", "text")
        if snip:
            for r in s:
                r[snip] = marked(r[snip] or "")
        sections.append(Section("Samples of dropped rows", table(s, raw={snip} if snip else set()), id="samples"))
    return page("Filtering", sections, provenance, subtitle=_subtitle(provenance))


def _subtitle(provenance: dict | None) -> str | None:
    if not provenance:
        return None
    bits = []
    if provenance.get("model"):
        bits.append(f"model {provenance['model']}")
    sae = provenance.get("sae") or {}
    if sae.get("hash"):
        bits.append(f"SAE {sae['hash']} ({sae.get('d_sae', '?')} latents at {sae.get('hook', '?')})")
    if provenance.get("corpora"):
        bits.append("corpora " + ", ".join(f"{k} ({v.get('documents', '?')} docs)" for k, v in provenance["corpora"].items()))
    return " · ".join(bits) or None

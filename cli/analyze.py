"""`saeembed diff` and `saeembed correlate`: parse, call saeembed.analysis, render."""

from __future__ import annotations

from typing import Optional

import polars as pl
import typer

from saeembed.cli import render
from saeembed.cli.options import CsvOpt, JsonOpt, ReadStoreOpt, SaeOpt, open_store, opt
from saeembed.config import CorrelateConfig, DiffConfig, DiffView, PoolConfig


DIFF_TABLE = ["feature", "label", "freq_a", "freq_b", "diff", "diff_adj", "q_value", "more_in", "exemplar_a", "exemplar_b"]


SECTION_TITLES = {"raw": "features that differ (raw: length included)",
                  "length_controlled": "features that differ beyond length (length-controlled)"}


def diff(
    a: str = typer.Argument(..., help="Corpus A (or the one corpus to slice with --where/--vs or --by)."),
    b: Optional[str] = typer.Argument(None, help="Corpus B. Omit to compare slices of A."),
    by: Optional[str] = typer.Option(None, "--by", help="Metadata column: each of its values against the rest."),
    where: Optional[str] = typer.Option(None, "--where", help="Filter for side A, e.g. \"source = 'web' and stars >= 4\"."),
    vs: Optional[str] = typer.Option(None, "--vs", help="Filter for side B (default: the rest of the corpus, or all of corpus B)."),
    paired_on: Optional[str] = typer.Option(None, "--paired-on", help="Column pairing A and B documents (e.g. prompt_id): McNemar's test."),
    top: int = opt(DiffView, "top", "--top", "-n"),
    length_control: str = opt(DiffConfig, "length_control", "--length-control"),
    keep_generic: bool = opt(DiffConfig, "keep_generic", "--keep-generic"),
    direction: str = opt(DiffView, "direction", "--direction"),
    max_q: float = opt(DiffView, "max_q", "--max-q"),
    min_freq: float = opt(DiffView, "min_freq", "--min-freq"),
    exemplars: int = opt(DiffConfig, "exemplars", "--exemplars"),
    group_column: Optional[str] = opt(DiffConfig, "group_column", "--group-column"),
    separability: bool = opt(DiffConfig, "separability", "--separability/--no-separability"),
    pool: str = opt(PoolConfig, "pool", "--pool"),
    triggers: bool = typer.Option(False, "--triggers", help="Add a triggers column: the top token bigrams of each listed feature, in the corpus of the side it is more frequent in (needs `encode --keep-tokens`)."),
    summarize: bool = typer.Option(False, "--summarize", help="Also write a few hypotheses (with evidence and frequencies) from the top features of each ranking: offline, or with --llm."),
    llm: Optional[str] = typer.Option(None, "--llm", help="An OpenAI-compatible model for --summarize; key from $SAEEMBED_LLM_KEY or $OPENAI_API_KEY."),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="SAEEMBED_LLM_BASE_URL", help="OpenAI-compatible server for --llm."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """How do two corpora (or two slices of one) differ? Features ranked by the difference in the share
    of documents where they fire, with p/q-values, labels and exemplars from each side. When the sides'
    lengths differ, two sections: what differs (length included; the length difference stated first) and
    what differs beyond length (ranked within token-length strata). A separability line says how well the
    listed features tell the sides apart (cross-validated AUROC) beside all features and length alone;
    rows in --json/--csv carry `ranking` and `separability`.

    Examples:
      saeembed diff support_tickets product_reviews
      saeembed diff concise verbose --group-column prompt
      saeembed diff toxicity --where "toxic = true" --vs "toxic = false"
      saeembed diff answers --by generator
    """
    from saeembed.analysis.diff import diff_by, diff_corpora, diff_slices
    from saeembed.analysis.diff_rank import with_separability
    from saeembed.errors import InputError

    view = DiffView(direction=direction, max_q=max_q, min_freq=min_freq, top=top)
    cfg = DiffConfig(length_control=length_control, keep_generic=keep_generic, exemplars=exemplars, top=None,
                     separability=separability, separability_top=top, group_column=group_column)
    hypotheses = None
    with open_store(store, read_only=not summarize) as st:
        from saeembed.analysis.pooling import use_pool

        pool_note = use_pool(st, [a] + ([b] if b else []), pool, sae=sae)
        if by:
            if b or vs:
                raise InputError("--by compares groups within one corpus; drop the second corpus / --vs")
            results = diff_by(st, a, by, where=where, sae=sae, config=cfg)
        elif b:
            results = {"": diff_corpora(st, a, b, where_a=where, where_b=vs, sae=sae, paired_on=paired_on, config=cfg)}
        elif where:
            results = {"": diff_slices(st, a, where, vs, sae=sae, paired_on=paired_on, config=cfg)}
        else:
            raise InputError("give a second corpus, --where (and optionally --vs), or --by COLUMN")
        if summarize:
            hypotheses = _summarize(st, results, llm, base_url)
    if pool_note:
        render.note(render.safe(pool_note))
    frames = []
    tstore = open_store(store, read_only=True) if triggers else None
    for group, r in results.items():
        f = view.apply(r.frame)
        if tstore is not None:
            from saeembed.analysis.triggers import trigger_column

            f, tnote = trigger_column(tstore, f, {"a": a, "b": b or a}, sae=sae)
            if tnote:  # said once: no token rows means none for any group
                render.note(render.safe(tnote))
                tstore.close()
                tstore = None
        if as_json or as_csv:
            f = with_separability(f, r.summary)
        if by:
            f = f.with_columns(pl.lit(group).alias(by)).select(by, pl.all().exclude(by))
        frames.append((group, r, f))
    if tstore is not None:
        tstore.close()
    if as_json or as_csv:
        rows = pl.concat([f for _, _, f in frames], how="diagonal_relaxed")
        if as_csv:  # CSV holds no nested values: one column per figure
            sep = rows["separability"]
            rows = rows.drop("separability")
            if isinstance(sep.dtype, pl.Struct):
                rows = rows.hstack(sep.struct.unnest().select(pl.all().name.prefix("separability_")))
        render.emit_frame(rows, as_json=as_json, as_csv=as_csv)
        if hypotheses is not None:
            for h in hypotheses.iter_rows(named=True):
                render.note(f"hypothesis ({render.safe(h['ranking'])}, {render.safe(h['source'])}): "
                            f"{render.safe(h['hypothesis'])} — more in {render.safe(h['direction'])}")
        return
    for group, r, f in frames:
        _header(r.summary)
        for ranking in r.summary["rankings"]:
            part = f.filter(pl.col("ranking") == ranking)
            part = render.hinted(part)
            cols = [c for c in DIFF_TABLE + ["triggers"]
                    if c in part.columns and not (c == "diff_adj" and not r.summary["length_controlled"])]
            title = SECTION_TITLES[ranking] if len(r.summary["rankings"]) > 1 else "features that differ"
            render.emit_frame(render.named(part.select(cols)), title=f"{by} = {group}: {title}" if by else title)
    if hypotheses is not None:
        cols = ["hypothesis", "direction", "share_a", "share_b", "evidence", "source"]
        cols = (["group"] if by else []) + (["ranking"] if hypotheses["ranking"].n_unique() > 1 else []) + cols
        render.emit_frame(hypotheses.select(cols), title="hypotheses")


def _header(s: dict) -> None:
    """What a reader needs before the rows: the sides, the length finding, separability, confounds."""
    render.note(f"[bold]A[/bold] = {render.safe(s['a'])} ({s['n_a']} docs) · [bold]B[/bold] = {render.safe(s['b'])} "
                f"({s['n_b']} docs) · test: {render.safe(s['test'])}"
                + (f" and {render.safe(s['test_length_controlled'])}" if s.get("test_length_controlled") else "")
                + f" · SAE {render.safe(s['sae'])}")
    if s.get("length_finding"):  # the length difference, said first (with the test behind it)
        p = s["length"]["p_value"]
        render.note(f"  [bold]finding:[/bold] {render.safe(s['length_finding'])} (Mann–Whitney p = {p:.2g})")
    else:
        render.note(f"  length: {render.safe(s['length_note'])}")
    if s.get("separability"):
        render.note(f"  separability: {render.safe(s['separability']['note'])}")
    if s["generic_excluded"]:
        render.note(f"  {s['generic_excluded']} generic features left out (--keep-generic to show them); "
                    f"random-token probe: {render.safe(s['random_probe'])}")
    msg = f"  {s['significant_q05']} of {s['features_tested']} features differ at q ≤ 0.05"
    if "significant_q05_length_controlled" in s:
        msg += f"; {s['significant_q05_length_controlled']} beyond length"
    render.note(msg)


def _summarize(st, results, llm, base_url) -> pl.DataFrame:
    from saeembed.analysis.diff_summary import summarize

    client = None
    if llm:
        from saeembed.interp.llm import LLMClient, LLMConfig

        client = LLMClient(st, LLMConfig(model=llm, base_url=base_url))
    return summarize(st, results, llm=client)


def correlate(
    corpus: str = typer.Argument(..., help="Corpus to mine."),
    with_column: Optional[str] = typer.Option(None, "--with-column", help="Metadata column (category, number or date): which features rise or fall with it."),
    where: Optional[str] = typer.Option(None, "--where", help="Only documents matching this filter."),
    min_support: float = opt(CorrelateConfig, "min_support", "--min-support"),
    min_docs: int = opt(CorrelateConfig, "min_docs", "--min-docs"),
    min_pair_docs: int = opt(CorrelateConfig, "min_pair_docs", "--min-pair-docs"),
    top: int = typer.Option(30, "--top", "-n", help="Pairs (or features per category) to show."),
    keep_generic: bool = opt(CorrelateConfig, "keep_generic", "--keep-generic"),
    sae_weights: Optional[str] = typer.Option(None, "--sae-weights", metavar="PATH_OR_HUB_ID", help="SAE weights to load for decoder directions, when the store's recorded source is gone."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Which features fire together (NPMI over documents), which pairs are unexpected (strong co-occurrence
    of features with dissimilar decoder directions or labels), or which features rise and fall with a
    metadata column.

    Examples:
      saeembed correlate support_tickets
      saeembed correlate toxicity --with-column category
    """
    from saeembed.analysis.correlate import correlate as run, correlate_with_column

    with open_store(store, read_only=True) as st:
        if with_column:
            r = correlate_with_column(st, corpus, with_column, where=where, sae=sae, top=top, min_docs=min_docs)
        else:
            cfg = CorrelateConfig(min_support=min_support, min_docs=min_docs, min_pair_docs=min_pair_docs, top=top,
                                  keep_generic=keep_generic)
            r = run(st, corpus, where=where, sae=sae, sae_weights=sae_weights, config=cfg)
    if with_column:
        if as_json or as_csv:
            render.emit_frame(r.frame, as_json=as_json, as_csv=as_csv)
            return
        render.note(f"{render.safe(r.summary['corpus'])}: {r.summary['n_docs']} documents · column "
                    f"{render.safe(with_column)} ({render.safe(r.summary['kind'])})")
        render.emit_frame(render.named(r.frame), title=f"features that move with {with_column}")
        if r.trend is not None and r.trend.height:
            render.emit_frame(r.trend, title="share of documents per bin (columns: f<feature>)")
        return
    rows = pl.concat([r.pairs.with_columns(list=pl.lit("strongest")),
                      r.unexpected.with_columns(list=pl.lit("unexpected"))], how="diagonal_relaxed")
    if as_json or as_csv:
        render.emit_frame(rows, as_json=as_json, as_csv=as_csv)
        return
    s = r.summary
    render.note(f"{render.safe(s['corpus'])}: {s['n_docs']} documents · {s['features_with_support']} features with "
                f"support ≥ {s['min_support']:.2%} and ≥ {s['min_docs']} docs · a listed pair co-occurs in ≥ "
                f"{s['pair_min_docs']} docs · similarity: {render.safe(s['similarity'])}")
    if s["generic_excluded"]:
        render.note(f"  {s['generic_excluded']} generic features left out (--keep-generic to keep them)")
    if s.get("unexpected_same_token"):
        render.note(f"  {s['unexpected_same_token']} pairs left out of the unexpected ones: both features peak on "
                    "the same token here")
    pair_names = (("feature_a", "label_a"), ("feature_b", "label_b"))
    hints = (("label_a", "here_a"), ("label_b", "here_b"))
    render.emit_frame(render.named(render.hinted(r.pairs, *hints), *pair_names),
                      title="strongest co-occurring pairs (NPMI shrunk by support)")
    render.emit_frame(render.named(render.hinted(r.unexpected, *hints), *pair_names),
                      title="unexpected pairs: strong co-occurrence, dissimilar meaning")

"""`saeembed report ...`: analyses as self-contained HTML pages (plots inline, nothing fetched when opened).

Each subcommand: read the analysis result, build its page with saeembed.report.<x>_page, write it
atomically, and finish with one summary line naming the file. The analysis itself lives in the library.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from saeembed.cli import render

app = typer.Typer(
    help=(
        "Write an analysis as one self-contained HTML file (inline plots, no network assets; opens offline "
        "and can be mailed to a colleague).\n\n"
        "Example: `saeembed report diff support_tickets product_reviews --out diff.html`."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

StoreOpt = typer.Option(
    "saeembed.duckdb", "--store", "-s", envvar="SAEEMBED_STORE", help="Store file (created when missing).",
)
JsonOpt = typer.Option(False, "--json", help="Print a JSON summary (out, bytes, counts) instead of a line.")
SaeOpt = typer.Option(None, "--sae", help="SAE hash (prefix) when the store holds several.")
ExemplarsOpt = typer.Option(3, "--exemplars", help="Exemplars shown per feature (and per side for a diff).")


def out_option(default: str):
    return typer.Option(Path(default), "--out", "-o", help=f"HTML file to write (default {default}).")


@contextmanager
def steps(total: int, enabled: bool = True):
    """A small progress bar over a report's stages; yields advance(description)."""
    if not (enabled and render.err_console.is_terminal):  # no bar (nor its blank line) in pipes and logs
        yield lambda description: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=render.err_console, transient=True) as bar:
        task = bar.add_task("report", total=total)

        def advance(description: str) -> None:
            bar.update(task, advance=1, description=description)

        yield advance


def finish(path: Path, what: str, counts: dict, as_json: bool) -> None:
    """The one summary line (or JSON object) every report command ends with."""
    size = path.stat().st_size
    if as_json:
        render.emit_json({"out": str(path), "bytes": size, "report": what, **counts})
        return
    detail = ", ".join(f"{v} {k}" for k, v in counts.items())
    render.note(f"[green]✓[/green] wrote {what} report ({detail}; {size / 1024:,.0f} KB) to [bold]{path}[/bold]")


@app.command("features")
def features_cmd(
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus (default: all encoded with the SAE)."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="How many features."),
    by: str = typer.Option("docs", "--by", help="Rank by docs (how many documents fire), max or mean activation."),
    exemplars: int = ExemplarsOpt,
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("features.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Top features of a corpus: ranked bars of document frequency, labels, exemplars with the activating token shaded."""
    from saeembed.report import features_page, write_report
    from saeembed.report.data import exemplar_windows, provenance
    from saeembed.store import Store

    with Store(store, read_only=True) as st, steps(3, not as_json) as advance:
        frame = st.feature_summary(corpus, sae=sae, top=top, order_by=by)
        info = st.encoded_sae(corpus, sae) if corpus else st._only_sae(sae)
        advance("exemplars")
        ex = exemplar_windows(st, info.sae_key, frame["feature"].to_list(), corpus=corpus, per_feature=exemplars)
        corpora = [corpus] if corpus else st.query(
            "SELECT c.name FROM encodings e JOIN corpora c USING (corpus_id) WHERE e.sae_key = ? ORDER BY c.name",
            [info.sae_key])["name"].to_list()
        prov = provenance(st, info, analysis="features", params={"corpus": corpus, "top": top, "by": by,
                                                                  "exemplars": exemplars}, corpora=corpora)
        advance("page")
        title = f"Top features of {corpus}" if corpus else "Top features"
        path = write_report(features_page(frame, prov, exemplars=ex, title=title), out)
        advance("written")
    finish(path, "features", {"features": frame.height, "exemplars": ex.height}, as_json)


@app.command("diff")
def diff_cmd(
    a: str = typer.Argument(..., help="Corpus A."),
    b: Optional[str] = typer.Argument(None, help="Corpus B. Omit to compare --where against --vs (or the rest) of A."),
    where: Optional[str] = typer.Option(None, "--where", help="Filter for side A, e.g. \"source = 'web'\"."),
    vs: Optional[str] = typer.Option(None, "--vs", help="Filter for side B (default: all of B, or the rest of A)."),
    paired_on: Optional[str] = typer.Option(None, "--paired-on", help="Column pairing A and B documents: McNemar's test."),
    length_control: str = typer.Option("auto", "--length-control", help="on, off or auto (rank within token-length strata)."),
    keep_generic: bool = typer.Option(False, "--keep-generic", help="Keep features that fire on nearly everything."),
    top: int = typer.Option(20, "--top", "-n", min=1, help="Features per side in the charts."),
    exemplars: int = typer.Option(2, "--exemplars", help="Exemplars per feature and side."),
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("diff.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """How two corpora (or two slices of one) differ: features more frequent on each side (paired bars),
    p/q-values, the length difference, exemplars from both sides with the activating token shaded."""
    import numpy as np
    import polars as pl

    from saeembed.analysis.diff import DiffConfig, diff
    from saeembed.analysis.selection import Selection, select
    from saeembed.errors import InputError
    from saeembed.report import diff_page, write_report
    from saeembed.report.data import provenance, selection_windows
    from saeembed.report.pages import diff_sides
    from saeembed.store import Store

    if b is None and not where:
        raise InputError("give a second corpus, or --where (and optionally --vs) to compare slices of one")
    cfg = DiffConfig(length_control=length_control, keep_generic=keep_generic, exemplars=1, top=None)
    with Store(store, read_only=True) as st, steps(3, not as_json) as advance:
        sa = select(st, a, where=where, sae=sae)
        if b is not None:
            sb = select(st, b, where=vs, sae=sae)
        elif vs is not None:
            sb = select(st, a, where=vs, sae=sae)
        else:
            rest = np.setdiff1d(select(st, a, sae=sae).doc_idx, sa.doc_idx)
            sb = Selection(sa.corpus, sa.sae, rest, f"{a} not ({where})")
        result = diff(st, sa, sb, paired_on=paired_on, config=cfg)
        advance("exemplars")
        frame = result.frame
        more_a, more_b = diff_sides(frame, result.summary, top)
        shown = more_a["feature"].to_list() + more_b["feature"].to_list()

        ex = pl.concat([selection_windows(st, sa, shown, per_feature=exemplars).with_columns(side=pl.lit("a")),
                        selection_windows(st, sb, shown, per_feature=exemplars).with_columns(side=pl.lit("b"))])
        prov = provenance(st, sa.sae, analysis="diff", corpora=sorted({sa.corpus.name, sb.corpus.name}), params={
            "a": sa.name, "b": sb.name, "where": where, "vs": vs, "paired_on": paired_on,
            "length_control": length_control, "keep_generic": keep_generic, "top": top, "test": result.summary.get("test")})
        advance("page")
        path = write_report(diff_page(frame, result.summary, prov, exemplars=ex, top=top), out)
        advance("written")
    finish(path, "diff", {"features": len(shown), "significant_q05": result.summary.get("significant_q05", 0),
                          "exemplars": ex.height}, as_json)


@app.command("correlate")
def correlate_cmd(
    corpus: str = typer.Argument(..., help="Corpus to mine."),
    where: Optional[str] = typer.Option(None, "--where", help="Only documents matching this filter."),
    min_support: float = typer.Option(0.001, "--min-support", help="A feature must fire in at least this share of documents."),
    min_docs: int = typer.Option(5, "--min-docs", help="...and in at least this many documents (pairs too)."),
    top: int = typer.Option(30, "--top", "-n", min=1, help="Pairs listed (strongest and unexpected)."),
    keep_generic: bool = typer.Option(False, "--keep-generic", help="Keep features that fire on nearly every document or on random tokens."),
    sae_weights: Optional[str] = typer.Option(None, "--sae-weights", help="SAE weights for decoder directions, when the store's recorded source is gone."),
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("correlate.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Which features fire together: an NPMI heatmap of the strongest pairs, unexpected pairs outlined."""
    from saeembed.analysis.correlate import CorrelateConfig, correlate
    from saeembed.report import correlate_page, write_report
    from saeembed.report.data import provenance
    from saeembed.store import Store

    cfg = CorrelateConfig(min_support=min_support, min_docs=min_docs, min_pair_docs=min_docs, top=top,
                          keep_generic=keep_generic)
    with Store(store, read_only=True) as st, steps(2, not as_json) as advance:
        r = correlate(st, corpus, where=where, sae=sae, sae_weights=sae_weights, config=cfg)
        info = st.encoded_sae(corpus, sae)
        prov = provenance(st, info, analysis="correlate", corpora=[corpus], params={
            "where": where, "min_support": min_support, "min_docs": min_docs, "top": top})
        advance("page")
        path = write_report(correlate_page(r.pairs, prov, unexpected=r.unexpected, summary=r.summary, top=top), out)
        advance("written")
    finish(path, "correlate", {"pairs": r.pairs.height, "unexpected": r.unexpected.height}, as_json)

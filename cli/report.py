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
    a: str = typer.Argument(..., help="First corpus (side A)."),
    b: str = typer.Argument(..., help="Second corpus (side B)."),
    top: int = typer.Option(20, "--top", "-n", min=1, help="Features per side."),
    exemplars: int = typer.Option(2, "--exemplars", help="Exemplars per feature and side."),
    sae: Optional[str] = SaeOpt,
    out: Path = out_option("diff.html"),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """How two corpora differ: features more frequent on each side (paired bars), the table, exemplars from both."""
    from saeembed.report import diff_page, write_report
    from saeembed.report.data import frequency_diff, provenance
    from saeembed.store import Store

    with Store(store, read_only=True) as st, steps(2, not as_json) as advance:
        # Interim: frequency difference; the statistical diff (analysis.diff) replaces this call.
        frame, summary, ex, info = frequency_diff(st, a, b, top=top, sae=sae, per_feature=exemplars)
        prov = provenance(st, info, analysis="diff (frequency difference)",
                          params={"a": a, "b": b, "top": top, "exemplars": exemplars}, corpora=[a, b])
        advance("page")
        path = write_report(diff_page(frame, summary, prov, exemplars=ex, top=top), out)
        advance("written")
    finish(path, "diff", {"features": frame.height, "exemplars": ex.height}, as_json)

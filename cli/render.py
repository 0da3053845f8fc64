"""Output for the CLI: rich tables for people at a terminal, plain aligned columns when piped or redirected,
JSON/CSV for programs, one-line errors, progress bars."""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import time
from contextlib import ExitStack, contextmanager

import polars as pl
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(emoji=False)  # `:name:` in data stays as written
err_console = Console(stderr=True, emoji=False)

# Characters that act on a terminal instead of showing: C0 controls but tab, DEL, C1 (\x9b is a CSI on some
# terminals), and the marks, overrides and isolates that reorder what is shown.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match) -> str:
    c = match.group()
    if c == "\n":
        return "⏎"
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def safe(value, *, newlines: bool = False) -> str:
    """User or data text (a cell, a name, a document, an error naming them) as console markup that shows it as
    written: rich markup is escaped and control characters are made visible (ESC as `\\x1b`, a newline as `⏎`
    unless `newlines`, for a message of several lines). Every piece of user text printed on the console goes
    through here; JSON and CSV output do not (they are data, written exactly)."""
    if value is None:
        return ""
    text = str(value)
    if newlines:
        return escape(_CONTROL_BUT_NEWLINE.sub(_visible, text))
    return escape(_CONTROL.sub(_visible, text.replace("\r\n", "\n")))


_JSON_CONTROL = re.compile(r"[\x7f-\x9f]")  # json.dumps escapes C0 itself; DEL and C1 are written raw


def _json_text(obj, **kw) -> str:
    """JSON of obj with every control character as a \\u escape: the same data, nothing a terminal acts on."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    return _JSON_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _jsonable(value):
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def emit_frame(frame: pl.DataFrame, *, as_json: bool = False, as_csv: bool = False, title: str | None = None,
               stderr: bool = False) -> None:
    """Print a DataFrame as a table, a JSON list of row objects, or CSV. The table is drawn with rich at a
    terminal; piped or redirected it is plain text in aligned columns at full width (nothing folded or cut),
    so `saeembed … > out.txt` reads as shown. stderr: the table goes to stderr (beside JSON on stdout)."""
    if as_json:
        rows = [{k: _jsonable(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
        sys.stdout.write(_json_text(rows, default=str) + "\n")
        return
    if as_csv:
        flat = frame.with_columns(
            [pl.col(c).cast(pl.List(pl.Utf8)).list.join("|") for c, t in frame.schema.items() if isinstance(t, pl.List)]
        )
        sys.stdout.write(flat.write_csv())
        return
    target = err_console if stderr else console
    if frame.is_empty():
        target.print("[dim](no rows)[/dim]")
        return
    if not target.is_terminal:
        target.file.write(plain_table(frame, title))
        return
    shown = table(title, show_lines=False, header_style="bold")
    for col in frame.columns:
        numeric = frame.schema[col].is_numeric()
        # a header is never folded mid-word (`featur e`); long cells still fold to fit the terminal
        shown.add_column(safe(col), justify="right" if numeric else "left", overflow="fold", min_width=cell_len(col))
    for row in frame.iter_rows():
        shown.add_row(*[cell(v) for v in row])
    target.print(shown)


def hinted(frame: pl.DataFrame, *pairs: tuple[str, str]) -> pl.DataFrame:
    """For a table a person reads: each (label, hint) column pair as one label cell, `"debt" · here «CV» 10/10`
    (the token the feature's strongest documents here peak on; saeembed.analysis.local_tokens). JSON and CSV
    keep the two apart."""
    for label, here in pairs or (("label", "here"),):
        if here in frame.columns and label in frame.columns:
            frame = frame.with_columns(pl.when(pl.col(here).is_null()).then(pl.col(label)).otherwise(
                pl.concat_str([pl.col(label).fill_null(""), pl.lit(" · here "), pl.col(here)])).alias(label)).drop(here)
    return frame


def named(frame: pl.DataFrame, *pairs: tuple[str, str], width: int | None = None) -> pl.DataFrame:
    """A frame for a table a person reads: each (id column, label column) pair (default: feature, label) as
    one column reading `#id · label` (saeembed.analysis.names.named_columns). JSON and CSV keep both."""
    from saeembed.analysis.names import named_columns

    return named_columns(frame, pairs or (("feature", "label"),), width=width)


def _format_cell(value, text, item) -> str:
    """A table cell: '' for None, floats to 4 significant digits, lists' items through `item` joined with
    commas, anything else through `text` (escaped markup for rich tables, visible control characters for
    plain ones)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(item(v) for v in value)
    return text(value)


def _plain_text(value) -> str:
    return _CONTROL.sub(_visible, str(value).replace("\r\n", "\n"))


def _plain_cell(value) -> str:
    return _format_cell(value, _plain_text, _plain_cell)


def plain_table(frame: pl.DataFrame, title: str | None = None) -> str:
    """A frame as plain text: an optional title line, a header and one line per row, columns separated by
    two spaces and padded to their widest cell (numbers right-aligned), then a blank line. Control
    characters are made visible as in `safe`; there is no markup to escape in plain text."""
    header = [_plain_cell(c) for c in frame.columns]
    rows = [[_plain_cell(v) for v in row] for row in frame.iter_rows()]
    widths = [max(cell_len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = [frame.schema[c].is_numeric() for c in frame.columns]

    def line(cells: list[str]) -> str:
        padded = [(" " * (w - cell_len(c)) + c) if r else (c + " " * (w - cell_len(c)))
                  for c, w, r in zip(cells, widths, right)]
        return "  ".join(padded).rstrip() + "\n"

    head = (_plain_cell(title) + "\n") if title else ""
    return head + line(header) + "".join(line(r) for r in rows) + "\n"


def emit_json(obj) -> None:
    sys.stdout.write(_json_text(obj, default=_jsonable) + "\n")


def cell(value) -> str:
    """A table cell as escaped markup (see `safe`): floats to 4 significant digits, lists joined with commas."""
    return _format_cell(value, safe, safe)


def table(title: str | None = None, **kw) -> Table:
    """An empty rich table whose title is shown as written; add cells with `cell` (or `safe`)."""
    return Table(title=safe(title) if title else None, **kw)


def error(message: str) -> None:
    """One red line; the message is shown as written (library errors name user text: corpora, filters, paths)."""
    err_console.print(f"[bold red]error:[/bold red] {safe(message, newlines=True)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A line on stderr. `message` is console markup written by the CLI: every user value in it goes through
    `safe` (e.g. f"wrote {render.safe(path)}"). Control characters are made visible here as a last guard."""
    err_console.print(_CONTROL_BUT_NEWLINE.sub(_visible, message), highlight=False, soft_wrap=True)


@contextmanager
def encode_progress(description: str, enabled: bool = True):
    """A progress bar fed by encode_corpus's callback: docs done / to do, docs/s, tokens/s."""
    if not enabled:
        yield None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("docs · {task.fields[docs_s]:.1f} docs/s · {task.fields[tok_s]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    # started by the first update with work to do: an argument refused before encoding starts (or nothing
    # to encode) leaves no empty bar or blank line above the message
    state = {"t0": None, "bar": None, "task": None}

    def update(docs: int, tokens: int, total: int) -> None:
        now = time.perf_counter()
        if state["t0"] is None:  # the first call (0 docs) marks the start of encoding
            state["t0"] = now
        if total == 0:
            return
        if state["bar"] is None:
            state["bar"] = stack.enter_context(Progress(*columns, console=err_console, transient=False))
            state["task"] = state["bar"].add_task(safe(description), total=total, docs_s=0.0, tok_s=0.0)  # names the corpus
        elapsed = max(now - state["t0"], 1e-9)
        state["bar"].update(state["task"], completed=docs, total=total, docs_s=docs / elapsed, tok_s=tokens / elapsed)

    with ExitStack() as stack:
        yield update


@contextmanager
def train_progress(total_tokens: int | None, enabled: bool = True):
    """A progress bar fed by train_sae's callback: tokens, loss, FVU, L0 and dead fraction."""
    if not enabled:
        yield None
        return
    columns = [
        TextColumn("[bold]train SAE"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} tokens · loss {task.fields[loss]:.3f} · FVU {task.fields[fvu]:.3f} · "
                   "L0 {task.fields[l0]:.1f} · "
                   "dead {task.fields[dead]:.1%}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task("train", total=total_tokens, loss=float("nan"), fvu=float("nan"), l0=0.0, dead=0.0)

        def update(stats: dict) -> None:
            bar.update(task, completed=stats["tokens"], loss=stats["loss"], fvu=stats["fvu"], l0=stats["l0"],
                       dead=stats["dead_fraction"])

        yield update


@contextmanager
def embedding_progress(enabled: bool = True):
    """A bar for the one-off slow steps (embedding feature descriptions or a corpus the first time)."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("embedding (cached for next time)", total=None, visible=False)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, visible=True)

        yield update

"""Output for the CLI: rich tables for people, JSON/CSV for programs, one-line errors, progress bars."""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import time
from contextlib import contextmanager

import polars as pl
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


def emit_frame(frame: pl.DataFrame, *, as_json: bool = False, as_csv: bool = False, title: str | None = None) -> None:
    """Print a DataFrame as a table, a JSON list of row objects, or CSV."""
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
    if frame.is_empty():
        console.print("[dim](no rows)[/dim]")
        return
    shown = table(title, show_lines=False, header_style="bold")
    for col in frame.columns:
        numeric = frame.schema[col].is_numeric()
        shown.add_column(safe(col), justify="right" if numeric else "left", overflow="fold")
    for row in frame.iter_rows():
        shown.add_row(*[cell(v) for v in row])
    console.print(shown)


def emit_json(obj) -> None:
    sys.stdout.write(_json_text(obj, default=_jsonable) + "\n")


def cell(value) -> str:
    """A table cell as escaped markup (see `safe`): floats to 4 significant digits, lists joined with commas."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(safe(v) for v in value)
    return safe(value)


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
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task(safe(description), total=None, docs_s=0.0, tok_s=0.0)  # it names the corpus
        state = {"t0": None}

        def update(docs: int, tokens: int, total: int) -> None:
            now = time.perf_counter()
            if state["t0"] is None:  # the first call (0 docs) marks the start of encoding
                state["t0"] = now
            elapsed = max(now - state["t0"], 1e-9)
            if total == 0:  # nothing to encode: no empty bar
                bar.update(task, visible=False)
                return
            bar.update(task, completed=docs, total=total, docs_s=docs / elapsed, tok_s=tokens / elapsed)

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

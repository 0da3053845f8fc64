"""Output for the CLI: rich tables for people, JSON/CSV for programs, one-line errors, progress bars."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from contextlib import contextmanager

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


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
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, default=str) + "\n")
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
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in frame.columns:
        numeric = frame.schema[col].is_numeric()
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    for row in frame.iter_rows():
        table.add_row(*[_cell(v) for v in row])
    console.print(table)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=_jsonable) + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def store(path: str, *, read_only: bool = False):
    """Open the store a command names (a context manager)."""
    from saeembed.store import Store

    return Store(path, read_only=read_only)


def error(message: str) -> None:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


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
        task = bar.add_task(description, total=None, docs_s=0.0, tok_s=0.0)
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

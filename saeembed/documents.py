"""Read user files into validated documents: a polars frame of doc_id, text and the user's metadata.

Supported: .csv, .tsv, .jsonl/.ndjson, .json (an array of objects, or JSON Lines under a .json name),
.parquet, and a folder of .txt files (one document per file). Every problem with the input raises
InputError with one sentence saying what is wrong and how to fix it; a file is read whole and checked
before anything is returned, so nothing is ever half-read. The file-format readers are in
saeembed.readers; metadata column names saeembed reserves are in saeembed.columns.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from saeembed.columns import DOCUMENT_COLUMNS as RESERVED, reserved_error
from saeembed.errors import InputError
from saeembed.store.corpora import APPEND, NEW
from saeembed.readers import (
    FORMATS, _as_json_text, _format, _read_txt_folder, iter_text_files, read_raw, separator_hint,
)

__all__ = ["FORMATS", "RESERVED", "Documents", "ingest", "iter_text_files", "read_documents"]
_SHOWN = 5  # how many offending values/rows an error message names


@dataclass
class Documents:
    frame: pl.DataFrame  # doc_id (str, unique), text (str), then the user's metadata columns
    text_column: str
    id_column: str | None  # None when ids were generated from the text
    metadata_columns: list[str]
    source: str  # the path read
    skipped_empty: int  # rows dropped because their text was empty or whitespace


def read_documents(
    path: str | os.PathLike,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    format: str | None = None,
    skip_empty: bool = True,
    separator: str | None = None,
    rename: dict[str, str] | None = None,
    drop_columns: list[str] | None = None,
) -> Documents:
    """Read documents from a csv/tsv/jsonl/json/parquet file or a folder of .txt files.

    text_column: the column holding the text (numbers are cast to str, null counts as empty).
    id_column: the column holding unique ids (cast to str); None generates "d" + 16 hex digits of the
      text's SHA-1, with "-2", "-3", ... appended to repeats of a text in file order.
    format: overrides the file suffix; one of FORMATS. A folder is always read as "txt": doc_id and the
      `filename` metadata column are each file's path relative to the folder, and the column options
      do not apply.
    skip_empty: drop (and count in skipped_empty) documents whose text is empty or whitespace; when
      False such documents are an error.
    separator: the csv/tsv field separator (CLI --sep); default "," for csv (";", tab or "|" when the
      header has the text and id columns only with that one) and tab for tsv.
    rename: {old: new} column names, and drop_columns: columns to leave out; both are applied first, so
      text_column and id_column name columns as renamed, and a column whose name saeembed reserves
      (n_tokens, f12, ... see saeembed.columns) can be ingested under another name.
    The text and id columns are read exactly as written (csv "1.10" stays "1.10", JSON 1e3 stays "1e3").
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InputError(f"{source} does not exist; check the path")
    fmt = _format(path, format)
    if fmt == "txt":
        if id_column not in (None, "filename"):
            raise InputError(f"{source} is a folder of .txt files, whose ids are their file names; drop --id-column")
        # doc_id is the relative path, also kept as the `filename` metadata column to filter on.
        if rename or drop_columns or separator is not None:
            raise InputError(f"{source} is a folder of .txt files; --rename, --drop-column and --sep do not apply")
        return _build(_read_txt_folder(path), source, "text", "filename", skip_empty, labels=None, keep_id=True)
    rename, drop_columns = dict(rename or {}), list(drop_columns or [])
    # The columns to read as text, by their names in the file (before renaming).
    back = {new: old for old, new in rename.items()}
    as_text = {back.get(c, None if c in rename else c) for c in (text_column, id_column) if c is not None} - {None}
    raw, labels = read_raw(path, fmt, as_text=as_text, separator=separator)
    raw = _renamed(raw, source, rename, drop_columns)
    hint = separator_hint(raw.columns) if fmt in ("csv", "tsv") and separator is None else ""
    return _build(raw, source, text_column, id_column, skip_empty, labels=labels, hint=hint)


def _renamed(raw: pl.DataFrame, source: str, rename: dict[str, str], drop: list[str]) -> pl.DataFrame:
    """raw without the `drop` columns and with the `rename` ones renamed; every name must be in the file."""
    listed = f"its columns are {', '.join(map(repr, raw.columns))}"
    for option, names in (("--drop-column", drop), ("--rename", list(rename))):
        missing = [c for c in names if c not in raw.columns]
        if missing:
            raise InputError(f"{source} has no column {missing[0]!r} to {option.strip('-')}; {listed}")
    both = [c for c in drop if c in rename]
    if both:
        raise InputError(f"column {both[0]!r} is both renamed and dropped; use --rename or --drop-column for it")
    bad = [new for new in rename.values() if not isinstance(new, str) or not new.strip()]
    if bad:
        raise InputError(f"--rename needs a new name for each column, e.g. --rename a=b, not {bad[0]!r}")
    kept = raw.drop(drop)
    names = [rename.get(c, c) for c in kept.columns]
    repeated = [c for c, n in Counter(names).items() if n > 1]
    if repeated:
        raise InputError(f"{source}: after --rename two columns are named {repeated[0]!r}; pick another new name")
    return kept.rename(rename) if rename else kept


# ----------------------------------------------------------------------------------------- validation


def _build(
    raw: pl.DataFrame,
    source: str,
    text_column: str,
    id_column: str | None,
    skip_empty: bool,
    *,
    labels: list[str] | None,
    keep_id: bool = False,
    hint: str = "",
) -> Documents:
    """Check the columns, make doc_id and text, drop empty texts, and keep the rest as metadata.
    labels name each row in messages ("line 7"); rows are numbered from 1 when there are none."""
    if raw.height == 0:
        raise InputError(f"{source} has no documents; check that it is the file you meant")
    columns = raw.columns
    where = (lambda i: labels[i]) if labels else (lambda i: f"row {i + 1}")
    for option, column in (("--text-column", text_column), ("--id-column", id_column)):
        if column is not None and column not in columns:
            raise InputError(
                f"{source} has no column {column!r}; its columns are {', '.join(map(repr, columns))}; "
                f"name the right one with {option}{hint}"
            )
    if id_column == text_column:
        raise InputError(f"--text-column and --id-column both name {text_column!r}; ids must come from another column")
    for name in RESERVED:
        if name in columns and name not in (text_column, id_column):
            role, option = ("id", "--id-column") if name == "doc_id" else ("text", "--text-column")
            raise InputError(
                f"{source} has a column named {name!r}, a name saeembed reserves for the document's own {role}; "
                f"rename it (--rename {name}={name}_meta), or pass {option} {name} to use it as such"
            )
    for name in columns:
        problem = None if name in (text_column, id_column) else reserved_error(name, source)
        if problem is not None:
            raise problem

    texts = [t if t is not None else "" for t in _as_text(raw[text_column], source).to_list()]
    if id_column is not None:
        ids = _as_text(raw[id_column], source).to_list()
        _check_ids(ids, source, id_column, where)

    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty and not skip_empty:
        raise InputError(
            f"{source} has {_count(len(empty), 'document')} with empty text ({_first(empty, where)}); "
            "remove them or let saeembed skip them"
        )
    if len(empty) == raw.height:
        raise InputError(f"{source} has no documents: all {raw.height} texts are empty; check --text-column")
    dropped = set(empty)
    keep = [i not in dropped for i in range(raw.height)]
    if empty:
        texts = [t for t, k in zip(texts, keep) if k]
        if id_column is not None:
            ids = [d for d, k in zip(ids, keep) if k]
    if id_column is None:
        ids = _generated_ids(texts)

    metadata = [c for c in columns if c != text_column and (keep_id or c != id_column)]
    kept = raw.filter(pl.Series(keep)) if empty else raw
    frame = pl.DataFrame({"doc_id": ids, "text": texts}, schema={"doc_id": pl.String, "text": pl.String})
    frame = frame.hstack([_storable(kept[c]) for c in metadata])
    return Documents(
        frame=frame,
        text_column=text_column,
        id_column=id_column,
        metadata_columns=metadata,
        source=source,
        skipped_empty=len(empty),
    )


def _as_text(s: pl.Series, source: str) -> pl.Series:
    """A text or id column as str: numbers become "123" / "1.5", nested values JSON."""
    if s.dtype == pl.String:
        return s
    if s.dtype.is_nested():
        return _storable(s)
    try:
        return s.cast(pl.String)
    except pl.exceptions.PolarsError:
        raise InputError(f"{source} column {s.name!r} holds {s.dtype} values, which cannot be read as text") from None


def _check_ids(ids: list[str | None], source: str, id_column: str, where) -> None:
    missing = [i for i, d in enumerate(ids) if d is None or not d.strip()]
    if missing:
        raise InputError(
            f"{source} has {_count(len(missing), 'document')} without an id in column {id_column!r} "
            f"({_first(missing, where)}); fill them in, or drop --id-column to generate ids"
        )
    repeated = [d for d, n in Counter(ids).items() if n > 1]
    if repeated:
        raise InputError(
            f"{source} has {_count(len(repeated), 'repeated id')} in column {id_column!r} "
            f"({_first(repeated, repr)}); make them unique, or drop --id-column to generate ids"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _first(items: list, show) -> str:
    """The first few items for a message, e.g. "line 3, line 9, ..."."""
    return ", ".join(show(x) for x in items[:_SHOWN]) + (", ..." if len(items) > _SHOWN else "")


def _generated_ids(texts: list[str]) -> list[str]:
    """ "d" + 16 hex digits of SHA-1(text); the n-th repeat of a text gets "-n" (n >= 2) in file order,
    so ids are unique, and the same file gives the same ids on every run."""
    seen: Counter[str] = Counter()
    ids = []
    for text in texts:
        base = "d" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return ids


def _storable(s: pl.Series) -> pl.Series:
    """A metadata column in a type the store can hold and filter: nested values become JSON text,
    categoricals and all-null columns become str; everything else keeps its dtype."""
    if s.dtype.is_nested():
        return pl.Series(s.name, [_as_json_text(v) for v in s.to_list()], dtype=pl.String)
    if s.dtype in (pl.Null, pl.Categorical) or isinstance(s.dtype, pl.Enum):
        return s.cast(pl.String)
    return s


def ingest(
    store,
    path: str | os.PathLike,
    *,
    corpus: str,
    text_column: str = "text",
    id_column: str | None = None,
    format: str | None = None,
    mode: str = NEW,
    separator: str | None = None,
    rename: dict[str, str] | None = None,
    drop_columns: list[str] | None = None,
) -> dict:
    """Read a file and store its documents as a corpus (see Store.add_corpus for `mode`, and
    read_documents for the other options).

    Returns a JSON-safe summary: corpus, added, n_docs, skipped_empty, skipped_existing, metadata_columns.
    """
    docs = read_documents(path, text_column=text_column, id_column=id_column, format=format, separator=separator,
                          rename=rename, drop_columns=drop_columns)
    before = store.corpus(corpus).n_docs if mode == APPEND and store.has_corpus(corpus) else 0
    info = store.add_corpus(corpus, docs, mode=mode)
    added = info.n_docs - before
    return {
        "corpus": info.name,
        "added": added,
        "n_docs": info.n_docs,
        "skipped_empty": docs.skipped_empty,
        "skipped_existing": docs.frame.height - added,
        "metadata_columns": docs.metadata_columns,
        "source": docs.source,
    }

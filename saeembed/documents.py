"""Read user files into validated documents: a polars frame of doc_id, text and the user's metadata.

Supported: .csv, .tsv, .jsonl/.ndjson, .json (an array of objects, or JSON Lines under a .json name),
.parquet, and a folder of .txt files (one document per file). Every problem with the input raises
InputError with one sentence saying what is wrong and how to fix it; a file is read whole and checked
before anything is returned, so nothing is ever half-read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from saeembed.errors import InputError

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "txt")
RESERVED = ("doc_id", "text")  # the columns every Documents frame starts with
_SUFFIXES = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"
}
_BOM = b"\xef\xbb\xbf"
_INT64 = (-(2**63), 2**63 - 1)
_SHOWN = 5  # how many offending values/rows an error message names
# A \uD800-\uDFFF escape in JSON; only lines with one need the (slower) lone-surrogate check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


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
        return _build(_read_txt_folder(path), source, "text", "filename", skip_empty, labels=None, keep_id=True)
    raw, labels = _READERS[fmt](path)
    return _build(raw, source, text_column, id_column, skip_empty, labels=labels)


def iter_text_files(folder: str | os.PathLike) -> list[Path]:
    """The .txt files under folder, recursively, sorted by relative path; hidden files and folders
    (names starting with ".", e.g. macOS "._x.txt" resource forks) are skipped."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files if f.lower().endswith(".txt") and not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# ---------------------------------------------------------------------------------------------- format


def _format(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = {"ndjson": "jsonl"}.get(format.lower(), format.lower())
        if fmt not in FORMATS:
            raise InputError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
        if path.is_dir() != (fmt == "txt"):
            what = "a folder" if path.is_dir() else "a file"
            raise InputError(
                f"{path} is {what}, but format {fmt!r} reads {'a folder of .txt files' if fmt == 'txt' else 'a file'}; "
                "give a folder for txt and a file otherwise"
            )
        return fmt
    if path.is_dir():
        return "txt"
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; use a .csv, .tsv, .jsonl, .json or "
            f".parquet file, a folder of .txt files, or name the format with --format"
        )
    return fmt


# --------------------------------------------------------------------------------------------- readers


def _utf8(path: Path, label: str | None = None) -> tuple[bytes, str]:
    """The file's bytes (BOM stripped) and their text. Decoding ourselves, strictly, is what lets us name
    the bad line; polars would replace or reject bad bytes without saying where."""
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise InputError(
            f"{label or path} is not valid UTF-8 at line {line}{hint}; re-save it with UTF-8 encoding"
        ) from None


def _no_documents(path: Path) -> InputError:
    return InputError(f"{path} has no documents; check that it is the file you meant")


def _read_csv(path: Path, separator: str = ",") -> tuple[pl.DataFrame, None]:
    data, text = _utf8(path)
    if not text.strip():
        raise _no_documents(path)
    kind = "TSV" if separator == "\t" else "CSV"
    try:
        # All columns as strings: texts and ids must not be re-typed ("007" is an id, not 7); metadata
        # columns are typed afterwards by _typed, which only accepts exact conversions.
        frame = pl.read_csv(data, separator=separator, infer_schema=False)
    except pl.exceptions.PolarsError as e:
        where = _ragged_line(text, separator)
        raise InputError(
            f"{path} could not be read as {kind}{f' (line {where} has more fields than the header)' if where else ''}: "
            f"{_reason(e)}; check the separator, that every row has as many fields as the header, "
            "and that quotes are closed"
        ) from None
    frame.columns = _header_names(path, text, separator, frame.columns)
    return frame.with_columns(_typed(frame[c]) for c in frame.columns), None


def _header_names(path: Path, text: str, separator: str, polars_names: list[str]) -> list[str]:
    """The header as written: polars silently renames a repeated name to "<name>_duplicated_0", which
    would hide a mistake, so we read the header row ourselves and refuse repeats."""
    # The head of the file is enough for the header row and spares copying a large file.
    header = next(csv.reader(io.StringIO(text[: 1 << 16]), delimiter=separator), [])
    if len(header) != len(polars_names):
        return polars_names
    # An unnamed column (e.g. the index pandas writes) gets polars' name for headerless columns.
    header = [name or f"column_{i + 1}" for i, name in enumerate(header)]
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        raise InputError(f"{path} has the column name {repeated[0]!r} more than once in its header; rename the repeats")
    return header


def _ragged_line(text: str, separator: str) -> int | None:
    """The line of the first row with more fields than the header, if Python's csv finds one (polars
    does not say where). Short rows are not looked for: polars reads them with nulls at the end."""
    try:
        rows = csv.reader(io.StringIO(text), delimiter=separator)
        width = len(next(rows))
        for row in rows:
            if len(row) > width:
                return rows.line_num
    except csv.Error:  # e.g. a field over csv's size limit: polars' reason alone will do
        pass
    return None


def _typed(s: pl.Series) -> pl.Series:
    """A CSV column as Int64, Float64 or Boolean when every value converts exactly, else left as str."""
    if s.dtype != pl.String or s.null_count() == s.len():
        return s
    as_int = s.cast(pl.Int64, strict=False)
    # Round-trip check: "007", "+5" or " 5" stay text, since casting them would change the value shown.
    if as_int.null_count() == s.null_count():
        return as_int if (as_int.cast(pl.String) == s).all() else s
    as_float = s.cast(pl.Float64, strict=False)
    # Every value must have a digit, so that words like "nan" or "inf" stay words.
    if as_float.null_count() == s.null_count() and s.str.contains("[0-9]").all():
        return as_float
    lower = s.str.to_lowercase()
    if lower.drop_nulls().is_in(["true", "false"]).all():
        return (lower == "true").alias(s.name)
    return s


def _read_jsonl(path: Path) -> tuple[pl.DataFrame, list[str]]:
    _, text = _utf8(path)
    rows, lines = [], []
    # Split on "\n" only: str.splitlines would also split on U+2028 etc., which JSON allows inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue  # blank lines are harmless, e.g. a trailing newline
        row = _parse_json(line, path, number)
        if not isinstance(row, dict):
            raise InputError(
                f"{path} line {number} is a JSON {_json_type(row)}, not an object; write one object per line, "
                'like {"text": "..."}'
            )
        rows.append(row)
        lines.append(f"line {number}")
    if not rows:
        raise _no_documents(path)
    return _json_frame(rows), lines


def _read_json(path: Path) -> tuple[pl.DataFrame, list[str] | None]:
    _, text = _utf8(path)
    if not text.strip():
        raise _no_documents(path)
    if not text.lstrip().startswith("["):
        # Many ".json" files are really JSON Lines; read them as such, but name a lone object plainly.
        try:
            return _read_jsonl(path)
        except InputError as err:
            try:
                whole = json.loads(text)
            except Exception:
                raise err from None
            raise InputError(
                f"{path} holds a single JSON {_json_type(whole)}; expected an array of objects or one object per line"
            ) from None
    items = _parse_json(text, path)
    if not isinstance(items, list):
        raise InputError(f"{path} is not a JSON array of objects; write [{{\"text\": ...}}, ...] or use JSON Lines")
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InputError(
                f"{path} item {i} of the array is a JSON {_json_type(item)}, not an object; every item must be an object"
            )
    if not items:
        raise _no_documents(path)
    return _json_frame(items), [f"item {i}" for i in range(1, len(items) + 1)]


def _parse_json(text: str, path: Path, line: int | None = None):
    """json.loads with errors that name the place: `line` is the JSONL line number, None for a whole file."""
    where = f"{path} line {line}" if line else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        loc = f"column {e.colno}" if line else f"line {e.lineno} column {e.colno}"
        raise InputError(f"{where} is not valid JSON ({e.msg} at {loc}); fix or remove it") from None
    except RecursionError:  # Python's json gives up near 1000 levels; refuse cleanly rather than crash
        raise InputError(f"{where} is JSON nested too deeply to read (about 1000 levels or more); flatten it") from None
    if _SURROGATE_ESCAPE.search(text):
        try:  # a lone \ud800-style escape decodes to a str that cannot be stored as UTF-8
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"{where} has an unpaired \\uD800-\\uDFFF surrogate escape, which is not valid text; fix it"
            ) from None
    return value


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _json_frame(rows: list[dict]) -> pl.DataFrame:
    names = dict.fromkeys(k for row in rows for k in row)  # every key seen, in first-seen order
    return pl.DataFrame([_json_series(name, [row.get(name) for row in rows]) for name in names])


def _json_series(name: str, values: list) -> pl.Series:
    """One typed column from JSON values: all str/bool/int/number → that type; anything else (mixed
    types, nested objects and arrays, ints beyond 64 bits) → str, non-strings written as JSON."""
    kinds = {type(v) for v in values if v is not None}
    ints_fit = all(_INT64[0] <= v <= _INT64[1] for v in values if type(v) is int)
    if kinds <= {str}:
        return pl.Series(name, values, dtype=pl.String)
    if kinds <= {bool}:
        return pl.Series(name, values, dtype=pl.Boolean)
    if kinds <= {int} and ints_fit:
        return pl.Series(name, values, dtype=pl.Int64)
    if kinds <= {int, float} and ints_fit:
        return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)
    return pl.Series(name, [_as_json_text(v) for v in values], dtype=pl.String)


def _as_json_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _read_parquet(path: Path) -> tuple[pl.DataFrame, None]:
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise InputError(
            f"{path} could not be read as Parquet: {_reason(e)}; check that it is a Parquet file"
        ) from None
    if frame.height == 0:
        raise _no_documents(path)
    return frame, None


def _read_txt_folder(folder: Path) -> pl.DataFrame:
    files = iter_text_files(folder)
    if not files:
        raise InputError(f"{folder} has no .txt files; put one document per .txt file in it, or give a file instead")
    names = [f.relative_to(folder).as_posix() for f in files]
    texts = [_utf8(f, label=f"{folder}: {name}")[1] for f, name in zip(files, names)]
    return pl.DataFrame({"filename": names, "text": texts}, schema={"filename": pl.String, "text": pl.String})


_READERS = {
    "csv": _read_csv,
    "tsv": lambda path: _read_csv(path, "\t"),
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _read_parquet,
}


def _reason(e: Exception) -> str:
    """A polars error as one short line: the underlying cause when it gives one, whitespace collapsed."""
    msg = str(e)
    if "Original error:" in msg:
        msg = msg.split("Original error:", 1)[1]
    else:
        msg = msg.strip().split("\n\n", 1)[0]
    msg = " ".join(msg.replace("`", "").split())
    msg = msg if len(msg) <= 200 else msg[:197] + "..."
    return msg.rstrip(".")


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
                f"name the right one with {option}"
            )
    if id_column == text_column:
        raise InputError(f"--text-column and --id-column both name {text_column!r}; ids must come from another column")
    for name in RESERVED:
        if name in columns and name not in (text_column, id_column):
            role, option = ("id", "--id-column") if name == "doc_id" else ("text", "--text-column")
            raise InputError(
                f"{source} has a column named {name!r}, a name saeembed reserves for the document's own {role}; "
                f"rename it, or pass {option} {name} to use it as such"
            )

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
    mode: str = "create",
) -> dict:
    """Read a file and store its documents as a corpus (see Store.add_corpus for `mode`).

    Returns a JSON-safe summary: corpus, added, n_docs, skipped_empty, skipped_existing, metadata_columns.
    """
    docs = read_documents(path, text_column=text_column, id_column=id_column, format=format)
    before = store.corpus(corpus).n_docs if mode == "append" and store.has_corpus(corpus) else 0
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

"""File-format readers for saeembed.documents: csv/tsv, JSON Lines, JSON arrays, Parquet and folders of
.txt files, each into a raw polars frame (every column as the file holds it) plus row labels for messages.

The columns named in `as_text` (the text and id columns) are kept exactly as written: CSV cells are never
re-typed, and JSON numbers keep their written form ("1.10" stays "1.10", "1e3" stays "1e3").
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import polars as pl

from saeembed.errors import InputError

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "txt")
_SUFFIXES = {
    ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"
}
_BOM = b"\xef\xbb\xbf"
_INT64 = (-(2**63), 2**63 - 1)
# A \uD800-\uDFFF escape in JSON; only lines with one need the (slower) lone-surrogate check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
GUESSED_SEPARATORS = (";", "\t", "|")  # tried, in this order, when a .csv file's header lacks a wanted column


def read_raw(
    path: Path, fmt: str, *, as_text: set[str] = frozenset(), separator: str | None = None
) -> tuple[pl.DataFrame, list[str] | None]:
    """The file (not a folder) as a raw frame and its row labels ("line 7"; None: number rows from 1).

    as_text: columns read exactly as written (never re-typed). separator: the csv/tsv field separator
    (default "," for csv, tab for tsv; for csv, a header that lacks a column of `as_text` with "," but has
    them all with ";", tab or "|" is read with that separator)."""
    if separator is not None:
        if fmt not in ("csv", "tsv"):
            raise InputError(f"--sep applies to csv and tsv files, but {path} is read as {fmt}; drop --sep")
        if len(separator) != 1 or len(separator.encode("utf-8")) != 1 or separator in "\"\r\n":
            raise InputError(f"--sep takes one character such as ',' ';' '|' or a tab, not {separator!r}")
    if fmt in ("csv", "tsv"):
        return _read_csv(path, separator or ("\t" if fmt == "tsv" else ","), as_text,
                         guess=separator is None and fmt == "csv")
    return _READERS[fmt](path, as_text)


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


def _read_csv(path: Path, separator: str, as_text: set[str], guess: bool = False) -> tuple[pl.DataFrame, None]:
    data, text = _utf8(path)
    if not text.strip():
        raise _no_documents(path)
    if guess:
        separator = _guess_separator(text, as_text)
    kind = "TSV" if separator == "\t" else "CSV"
    try:
        # All columns as strings: texts and ids must not be re-typed ("007" is an id, not 7; "1.10" is not
        # 1.1); metadata columns are typed afterwards by _typed, which only accepts exact conversions.
        frame = pl.read_csv(data, separator=separator, infer_schema=False)
    except pl.exceptions.PolarsError as e:
        where = _ragged_line(text, separator)
        raise InputError(
            f"{path} could not be read as {kind}{f' (line {where} has more fields than the header)' if where else ''}: "
            f"{_reason(e)}; check the separator (--sep), that every row has as many fields as the header, "
            "and that quotes are closed"
        ) from None
    frame.columns = _header_names(path, text, separator, frame.columns)
    return frame.with_columns(_typed(frame[c]) for c in frame.columns if c not in as_text), None


def _header(text: str, separator: str) -> list[str]:
    """The header row's names (from the head of the file, which spares copying a large one)."""
    try:
        return next(csv.reader(io.StringIO(text[: 1 << 16]), delimiter=separator), [])
    except csv.Error:
        return []


def _guess_separator(text: str, wanted: set[str]) -> str:
    """"," unless the header lacks a wanted column with "," but has them all with ";", tab or "|"."""
    if not wanted or wanted <= set(_header(text, ",")):
        return ","
    for sep in GUESSED_SEPARATORS:
        if wanted <= set(_header(text, sep)):
            return sep
    return ","


def separator_hint(columns: list[str]) -> str:
    """For a missing-column error: "; the file looks ';'-separated: pass --sep ';'" when the only column
    name holds a likely separator (a header read with the wrong one), else ""."""
    if len(columns) == 1:
        for sep in GUESSED_SEPARATORS + (",",):
            if sep in columns[0]:
                return f"; the file looks {sep!r}-separated: pass --sep {sep!r}"
    return ""


def _header_names(path: Path, text: str, separator: str, polars_names: list[str]) -> list[str]:
    """The header as written: polars silently renames a repeated name to "<name>_duplicated_0", which
    would hide a mistake, so we read the header row ourselves and refuse repeats."""
    header = _header(text, separator)
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


def _read_jsonl(path: Path, as_text: set[str] = frozenset(), written: bool = False) -> tuple[pl.DataFrame, list[str]]:
    _, text = _utf8(path)
    rows, lines = [], []
    # Split on "\n" only: str.splitlines would also split on U+2028 etc., which JSON allows inside strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue  # blank lines are harmless, e.g. a trailing newline
        row = _parse_json(line, path, number, written)
        if not isinstance(row, dict):
            raise InputError(
                f"{path} line {number} is a JSON {_json_type(row)}, not an object; write one object per line, "
                'like {"text": "..."}'
            )
        rows.append(row)
        lines.append(f"line {number}")
    if not rows:
        raise _no_documents(path)
    if not written and _has_floats(rows, as_text):  # rare: read again, keeping how those numbers were written
        return _read_jsonl(path, as_text, written=True)
    return _json_frame(rows, as_text), lines


def _read_json(path: Path, as_text: set[str] = frozenset()) -> tuple[pl.DataFrame, list[str] | None]:
    _, text = _utf8(path)
    if not text.strip():
        raise _no_documents(path)
    if not text.lstrip().startswith("["):
        # Many ".json" files are really JSON Lines; read them as such, but name a lone object plainly.
        try:
            return _read_jsonl(path, as_text)
        except InputError as err:
            try:
                whole = json.loads(text)
            except Exception:
                raise err from None
            raise InputError(
                f"{path} holds a single JSON {_json_type(whole)}; expected an array of objects or one object per line"
            ) from None
    items = _parse_json(text, path)
    if isinstance(items, list) and _has_floats(items, as_text):
        items = _parse_json(text, path, written=True)
    if not isinstance(items, list):
        raise InputError(f"{path} is not a JSON array of objects; write [{{\"text\": ...}}, ...] or use JSON Lines")
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InputError(
                f"{path} item {i} of the array is a JSON {_json_type(item)}, not an object; every item must be an object"
            )
    if not items:
        raise _no_documents(path)
    return _json_frame(items, as_text), [f"item {i}" for i in range(1, len(items) + 1)]


def _has_floats(rows: list, columns: set[str]) -> bool:
    """Whether a text or id column holds a JSON number with a fraction or exponent somewhere."""
    return any(type(row.get(c)) is float for row in rows if isinstance(row, dict) for c in columns)


def _parse_json(text: str, path: Path, line: int | None = None, written: bool = False):
    """json.loads with errors that name the place: `line` is the JSONL line number, None for a whole file.
    written: floats as _WrittenFloat (about 2x slower on float-heavy files, so only when needed)."""
    where = f"{path} line {line}" if line else str(path)
    try:
        value = _WRITTEN.decode(text) if written else json.loads(text)
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


class _WrittenFloat(float):
    """A JSON number with a fraction or exponent that remembers how it was written ("1.10", "1e3"), so a
    text or id column holding numbers keeps them exactly as in the file."""

    __slots__ = ("written",)

    def __new__(cls, written: str):
        value = super().__new__(cls, written)
        value.written = written
        return value


_WRITTEN = json.JSONDecoder(parse_float=_WrittenFloat)


def _json_frame(rows: list[dict], as_text: set[str] = frozenset()) -> pl.DataFrame:
    names = dict.fromkeys(k for row in rows for k in row)  # every key seen, in first-seen order
    return pl.DataFrame([_json_series(name, [row.get(name) for row in rows], name in as_text) for name in names])


def _json_series(name: str, values: list, as_text: bool = False) -> pl.Series:
    """One typed column from JSON values: all str/bool/int/number → that type; anything else (mixed
    types, nested objects and arrays, ints beyond 64 bits) → str, non-strings written as JSON.
    as_text: always str, numbers as written in the file."""
    kinds = {float if type(v) is _WrittenFloat else type(v) for v in values if v is not None}
    if as_text and not kinds <= {str}:
        return pl.Series(name, [_as_json_text(v) for v in values], dtype=pl.String)
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
    if type(value) is _WrittenFloat:
        return value.written
    return json.dumps(value, ensure_ascii=False, default=str)


def _read_parquet(path: Path, as_text: set[str] = frozenset()) -> tuple[pl.DataFrame, None]:
    # Parquet columns are typed already: a float id has no written form to keep, and is cast as polars does.
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


_READERS = {  # the non-CSV readers: (path, as_text) -> (frame, labels)
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


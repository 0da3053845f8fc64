"""Checks of a parsed filter that need more than its grammar: a regex the matcher can run, and values of
the kind their column holds. Each problem is one FilterError that says what to write instead, before
any row is read (a mismatch would otherwise match nothing, or fail deep inside polars)."""

from __future__ import annotations

import re

import polars as pl

from saeembed.errors import FilterError


def check_regex(pattern: str, text: str) -> None:
    """Refuse a pattern Python's `re` cannot compile, or one the matcher (linear-time: no look-around,
    no back-references) cannot run, naming what is wrong."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise FilterError(f"bad regular expression {pattern!r} in filter {text!r}: {e.msg}"
                          + (f" at position {e.pos}" if e.pos is not None else "")) from None
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError:
        raise FilterError(f"regular expression {pattern!r} in filter {text!r} uses look-around or a "
                          "back-reference, which the matcher does not support; write it without them") from None


def _kind(dtype) -> str | None:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_numeric():
        return "number"
    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "text"
    return None  # dates, lists, nulls: left to the comparison itself


def _quoted(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def check_types(node, schema: dict, text: str) -> None:
    """Every compared value is of its column's kind (schema: column -> polars dtype); else a FilterError
    that names the column's kind and shows the test written right."""
    args = getattr(node, "args", None)
    if args is not None:
        for a in args:
            check_types(a, schema, text)
        return
    dtype = schema.get(node.column)
    kind = _kind(dtype) if dtype is not None else None
    if kind is None or node.op in ("is_null", "not_null") or node.op.removeprefix("not_") in (
            "contains", "like", "ilike", "matches"):
        return
    col = node.column
    for v in node.values:
        if v is None:
            continue
        if kind == "bool" and not isinstance(v, bool):
            raise FilterError(f"column {col!r} is true/false, not {_quoted(v) if isinstance(v, str) else v}: write "
                              f"`{col} = true` or `{col} = false` (no quotes) in filter {text!r}")
        if kind == "number" and (isinstance(v, (str, bool))):
            example = v if isinstance(v, str) and _is_number(v) else 5
            raise FilterError(f"column {col!r} holds numbers, not {_quoted(v) if isinstance(v, str) else str(v).lower()}: "
                              f"write numbers without quotes, e.g. `{col} = {example}`, in filter {text!r}")
        if kind == "text" and not isinstance(v, str):
            shown = str(v).lower() if isinstance(v, bool) else v
            raise FilterError(f"column {col!r} holds text: quote the value, e.g. `{col} = {_quoted(shown)}`, in "
                              f"filter {text!r}")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True

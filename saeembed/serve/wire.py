"""DataFrames on the wire: JSON rows plus a schema, so the client rebuilds exactly the frame the library
returned (same dtypes, NaN kept) and renders it with the same code as a local run.

NaN floats travel as the bare token NaN (Python's json reads and writes it; strict JSON parsers do not),
because a table and CSV show NaN and null differently."""

from __future__ import annotations

import polars as pl

# Types whose values json carries as they are; temporal columns travel as ISO text.
_PLAIN = ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32", "Float64",
          "String", "Boolean", "Null")
_TEMPORAL = ("Date", "Datetime")


def dtype_to_json(t):
    """A polars dtype as JSON: a name, {"list": inner}, {"struct": [[name, dtype], ...]}; other types as String."""
    if isinstance(t, pl.List):
        return {"list": dtype_to_json(t.inner)}
    if isinstance(t, pl.Struct):
        return {"struct": [[f.name, dtype_to_json(f.dtype)] for f in t.fields]}
    name = t.base_type().__name__
    return name if name in _PLAIN + _TEMPORAL else "String"


def dtype_from_json(spec):
    if isinstance(spec, dict) and "list" in spec:
        return pl.List(dtype_from_json(spec["list"]))
    if isinstance(spec, dict) and "struct" in spec:
        return pl.Struct({name: dtype_from_json(s) for name, s in spec["struct"]})
    if spec in _TEMPORAL:
        return pl.String  # cast back after building, see frame_from_json
    if spec not in _PLAIN:
        raise ValueError(f"unknown column type {spec!r}")
    return getattr(pl, spec)


def frame_to_json(frame: pl.DataFrame | None) -> dict | None:
    """{"columns": [[name, dtype], ...], "rows": [{column: value}, ...]} (None stays None)."""
    if frame is None:
        return None
    columns = [[c, dtype_to_json(t)] for c, t in frame.schema.items()]
    odd = [c for c, spec in columns if isinstance(spec, str) and spec not in _PLAIN]
    if odd:
        frame = frame.with_columns(pl.col(odd).cast(pl.String))
    return {"columns": columns, "rows": frame.to_dicts()}


def frame_from_json(obj: dict | None) -> pl.DataFrame | None:
    if obj is None:
        return None
    specs = [(name, spec) for name, spec in obj["columns"]]
    schema = {name: dtype_from_json(spec) for name, spec in specs}
    rows = [[row.get(name) for name, _ in specs] for row in obj["rows"]]
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    temporal = {name: spec for name, spec in specs if spec in _TEMPORAL}
    if temporal:
        frame = frame.with_columns([pl.col(n).str.to_date() if s == "Date" else pl.col(n).str.to_datetime()
                                    for n, s in temporal.items()])
    return frame

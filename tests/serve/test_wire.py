"""Frames survive the wire: dtypes, NaN vs null, nested lists of structs, empty frames, dates."""

from __future__ import annotations

import datetime as dt
import json
import math

import polars as pl

from saeembed.serve.wire import frame_from_json, frame_to_json

MATCHED = pl.List(pl.Struct({"feature": pl.Int64, "label": pl.Utf8, "value": pl.Float64}))


def _round(frame):
    return frame_from_json(json.loads(json.dumps(frame_to_json(frame))))


def test_round_trip_keeps_types_nan_and_nulls():
    frame = pl.DataFrame({
        "rank": [1, 2], "score": [0.5, float("nan")], "dense": [None, 1.0], "features": [[3, 7], []],
        "matched": [[{"feature": 3, "label": None, "value": 2.0}], []], "ok": [True, None],
        "day": [dt.date(2024, 2, 29), None], "n": pl.Series([1, 2], dtype=pl.Int32),
    }, schema_overrides={"matched": MATCHED})
    back = _round(frame)
    assert back.schema == frame.schema
    assert back.equals(frame)  # equals treats NaN as equal to NaN, null only to null
    assert math.isnan(back["score"][1]) and back["dense"][0] is None


def test_empty_frame_and_none():
    empty = pl.DataFrame(schema={"rank": pl.Int64, "matched": MATCHED, "snippet": pl.Utf8})
    back = _round(empty)
    assert back.height == 0 and back.schema == empty.schema
    assert frame_from_json(frame_to_json(None)) is None

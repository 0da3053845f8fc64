"""Small SQL helpers shared by the store's modules (nothing outside saeembed/store builds SQL)."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB (the user's column names)."""
    return '"' + str(name).replace('"', '""') + '"'


def first_line(msg: str) -> str:
    return msg.strip().splitlines()[0] if msg.strip() else msg

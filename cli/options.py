"""Options every command shares, defined once."""

from __future__ import annotations

import typer

StoreOpt = typer.Option(
    "saeembed.duckdb", "--store", "-s", envvar="SAEEMBED_STORE", help="Store file (created when missing).",
)
JsonOpt = typer.Option(False, "--json", help="Print JSON (a list of row objects, best first) instead of a table.")
CsvOpt = typer.Option(False, "--csv", help="Print CSV instead of a table.")
SaeOpt = typer.Option(None, "--sae", help="SAE hash (prefix) when the store or corpus has several.")

"""Options every command shares, defined once."""

from __future__ import annotations

import typer

StoreOpt = typer.Option(
    "saeembed.duckdb", "--store", "-s", envvar="SAEEMBED_STORE", help="Store file (created when missing).",
)
JsonOpt = typer.Option(False, "--json", help="Print JSON (a list of row objects, best first) instead of a table.")
CsvOpt = typer.Option(False, "--csv", help="Print CSV instead of a table.")
SaeOpt = typer.Option(None, "--sae", help="SAE hash (prefix) when the store or corpus has several.")


# Steering a clustering (`saeembed cluster` and `saeembed report cluster`).
AxisOpt = typer.Option(None, "--axis", "-a", help="What the clusters should differ in, e.g. \"topic\" or \"writing style\", or an axis number from `saeembed axes`; that axis's features are used.")
AxisMatchOpt = typer.Option("auto", "--match", help="How --axis picks features: auto (describe when most features have LLM or hand-written labels, else axes), axes (the corpus's own axis of that kind, see `saeembed axes`), describe (labels/exemplar text), prf, llm.")
ClusterFeaturesOpt = typer.Option([], "--features", "-f", help="Cluster on these features (repeatable) instead of an axis.")
KOpt = typer.Option(None, "--k", "-k", help="k-means with k clusters (default: HDBSCAN, which finds the number and marks noise).")
NFeaturesOpt = typer.Option(50, "--n-features", help="How many features an --axis selects.")
MinClusterSizeOpt = typer.Option(None, "--min-cluster-size", help="HDBSCAN: smallest cluster (default max(10, docs/50)).")
MinSamplesOpt = typer.Option(5, "--min-samples", help="HDBSCAN: lower means less noise.")
ClusterWhereOpt = typer.Option(None, "--where", "-w", help="Only documents matching this metadata filter.")
ClusterSeedOpt = typer.Option(0, "--seed", help="Seed for k-means, SVD and the layout.")
BinaryOpt = typer.Option(False, "--binary", help="Cluster on feature presence instead of scaled values.")

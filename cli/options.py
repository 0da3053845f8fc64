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
AxisMatchOpt = typer.Option("auto", "--match", help="How --axis picks features: auto (labelled features whose label is close to the name, else axes), axes (the corpus's own axis of that kind, see `saeembed axes`), describe (labels/exemplar text), prf, llm.")
ClusterFeaturesOpt = typer.Option([], "--features", "-f", help="Cluster on these features (repeatable) instead of an axis.")
KOpt = typer.Option(None, "--k", "-k", help="k-means with k clusters (default: HDBSCAN, which finds the number and marks noise).")
NFeaturesOpt = typer.Option(50, "--n-features", help="How many features an --axis selects.")
MinClusterSizeOpt = typer.Option(None, "--min-cluster-size", help="HDBSCAN: smallest cluster (default max(10, docs/50)).")
MinSamplesOpt = typer.Option(5, "--min-samples", help="HDBSCAN: lower means less noise.")
ClusterWhereOpt = typer.Option(None, "--where", "-w", help="Only documents matching this metadata filter.")
ClusterSeedOpt = typer.Option(0, "--seed", help="Seed for k-means, SVD and the layout.")
BinaryOpt = typer.Option(False, "--binary", help="Cluster on feature presence instead of scaled values.")


# Filter rules (`saeembed filter`, `saeembed report filter`, `saeembed clean`).
DropOpt = typer.Option(
    None, "--drop", "-d",
    help="Drop rows matching this expression, e.g. \"toxicity > 0.8\" (a classifier's score), \"f123 > 0.5\" "
         "(max activation of SAE feature 123) or \"source = 'scraped' and n_chars < 40\". Repeatable.")
KeepOpt = typer.Option(None, "--keep", "-k", help="Keep only rows matching this expression; the others are dropped. Repeatable.")
DropFeatureOpt = typer.Option(None, "--drop-feature", help="Drop rows where this SAE feature fires at all. Repeatable.")
DedupeOpt = typer.Option(
    None, "--dedupe", help="Drop near-duplicates: Jaccard of active SAE features >= this (e.g. 0.9); the first row is kept.")
QualityModelOpt = typer.Option(
    None, "--quality-model", help="A saved classifier scoring quality (higher = better); its score is a column in rules.")
QualityLabelOpt = typer.Option(
    None, "--quality-label",
    help="Train a quality model on the rows where this column is filled in (a small labelled sample), "
         "save it as --quality-name and score every row.")
QualityPositiveOpt = typer.Option(
    None, "--quality-positive", help="The --quality-label value meaning good (default: true, 1, or the last value).")
QualityNameOpt = typer.Option("quality_score", "--quality-name", help="Name of the trained quality model and its score column.")
QualityDropOpt = typer.Option(None, "--quality-drop", help="Drop this share of rows with the lowest quality score, e.g. 0.5.")
DedupeSeedOpt = typer.Option(0, "--seed", help="Seed of the MinHash permutations (dedupe on large corpora).")


def filter_spec(*, drop=None, keep=None, drop_feature=None, **rest):
    """The FilterSpec the filter options above describe (rest: FilterSpec fields by name)."""
    from saeembed.analysis.filter import FilterSpec

    return FilterSpec(drop=list(drop or []), keep=list(keep or []), drop_features=list(drop_feature or []), **rest)

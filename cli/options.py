"""Options every command shares, defined once. Settings come from saeembed.config: default and help
are written there, on the config dataclass, and `opt` turns a field into an option."""

from __future__ import annotations

from dataclasses import fields

import typer

from saeembed.cli import render
from saeembed.config import ClusterConfig
from saeembed.errors import InputError


def opt(config, name: str, *flags: str, **kw):
    """A typer option for field `name` of a config dataclass, with that field's default and help
    (kw may override either, or add typer arguments such as min=1)."""
    f = next(f for f in fields(config) if f.name == name)
    kw.setdefault("help", f.metadata["help"])
    return typer.Option(kw.pop("default", f.default), *flags, **kw)


def deprecated_opt(default, old: str, new: str):
    """A hidden option kept working for one release; using it prints one line on stderr saying what to
    write instead."""
    def note(value):
        if value not in (None, [], ()):
            render.note(f"[yellow]deprecated:[/yellow] {old} is now {new}; {old} stops working in the next release")
        return value

    return typer.Option(default, old, hidden=True, callback=note)


def open_store(path: str, *, read_only: bool = False, create: bool = False):
    """Open the store a command names (a context manager): the one way the CLI opens a store. Only a
    command that adds documents creates a missing one; the others say there is no store."""
    from saeembed.errors import MigrationNeeded, SchemaVersionError, StoreError
    from saeembed.store import Store

    try:
        return Store(path, read_only=read_only, create=create)
    except MigrationNeeded as e:
        # a store from an older saeembed: migrate it once (one transaction), then read it as asked
        try:
            with Store(path) as st:
                version = st.schema_version
        except SchemaVersionError:  # says why it cannot be migrated
            raise
        except Exception as why:  # e.g. the file is not writable, or another process holds it open
            reason = (str(why).splitlines() or [type(why).__name__])[0].removeprefix(f"cannot open store {path}: ")
            raise StoreError(f"{str(e).split(';')[0]}, but it could not be opened for writing to migrate it "
                             f"({reason}); run it again when nothing else holds the store open and the file is writable") from None
        render.note(f"store {render.safe(str(path))} migrated to schema version {version}")
        return Store(path, read_only=True)


def migrated(path: str) -> str:
    """The store path, after migrating a store from an older saeembed as open_store does: for commands
    that open the store themselves (reports, browse, serve)."""
    from pathlib import Path

    if Path(path).exists():
        with open_store(path, read_only=True):
            pass
    return path


def feature_ids(values) -> list[int]:
    """Feature ids from --features values, each one id or a comma-separated list: `-f 12 -f 45` or `12,45`."""
    try:
        return [int(x) for v in values or [] for x in str(v).replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--features takes feature ids, repeated or comma-separated, e.g. 12,45 "
                         f"(got {' '.join(map(str, values))!r})") from None


_STORE = ("saeembed.duckdb", "--store", "-s")
# Each help says what the command does to the store: create it (ingest), write to it, or only read it.
CreateStoreOpt = typer.Option(*_STORE, envvar="SAEEMBED_STORE", help="Store file (created when missing).")
StoreOpt = typer.Option(*_STORE, envvar="SAEEMBED_STORE", help="Store file (must exist; this command may write to it).")
ReadStoreOpt = typer.Option(*_STORE, envvar="SAEEMBED_STORE", help="Store file (only read).")


def json_opt(help: str = "Print JSON (a list of row objects, best first) instead of a table."):
    """--json: machine-readable output (the help says what the JSON holds)."""
    return typer.Option(False, "--json", help=help)


JsonOpt = json_opt()
ResultJsonOpt = json_opt("Print the result as JSON.")
CsvOpt = typer.Option(False, "--csv", help="Print CSV instead of a table.")


def csv_opt(help: str):
    """--csv on a command that prints several tables: the help says which one the CSV holds."""
    return typer.Option(False, "--csv", help=help)

# Two kinds of `--sae`: a stored SAE (its hash), or weights to load (a path or hub id).
SaeOpt = typer.Option(None, "--sae", metavar="HASH", help="Stored SAE: its hash (a prefix will do) when the store or corpus has several.")
SaeWeightsOpt = typer.Option(
    None, "--sae", metavar="PATH_OR_HUB_ID",
    help="SAE weights to load: folder/file (SAELens, sparsify, Gemma Scope, Goodfire, Llama Scope) or hub id. "
         "Default: the embedded SAE.")


# Steering a clustering (`saeembed cluster` and `saeembed report cluster`).
AxisOpt = typer.Option(None, "--axis", "-a", help="What the clusters should differ in, e.g. \"topic\" or \"writing style\", or an axis number from `saeembed axes`; that axis's features are used.")
AxisMatchOpt = opt(ClusterConfig, "match", "--match")
ClusterFeaturesOpt = typer.Option([], "--features", "-f", help="Cluster on these feature ids (repeatable or comma-separated) instead of an axis.")
KOpt = opt(ClusterConfig, "k", "--k", "-k")
NFeaturesOpt = opt(ClusterConfig, "n_features", "--n-features")
MinClusterSizeOpt = opt(ClusterConfig, "min_cluster_size", "--min-cluster-size")
MinSamplesOpt = opt(ClusterConfig, "min_samples", "--min-samples")
ClusterWhereOpt = typer.Option(None, "--where", "-w", help="Only documents matching this metadata filter.")
ClusterSeedOpt = opt(ClusterConfig, "seed", "--seed")
BinaryOpt = opt(ClusterConfig, "binary", "--binary")


# Filter rules (`saeembed filter`, `saeembed report filter`, `saeembed clean`).
DropOpt = typer.Option(
    None, "--drop", "-d",
    help="Rows matching this expression are dropped, e.g. \"toxicity > 0.8\" (a classifier's score), \"f123 > 0.5\" "
         "(max activation of SAE feature 123) or \"source = 'scraped' and n_chars < 40\". Repeatable.")
KeepOpt = typer.Option(None, "--keep", help="Keep only rows matching this expression; the others are dropped. Repeatable.")
KeepShortOpt = deprecated_opt(None, "-k", "--keep")  # -k means --k (clusters) everywhere now
DropFeatureOpt = typer.Option(None, "--drop-feature", help="Rows where this SAE feature fires at all are dropped. Repeatable.")
DedupeOpt = typer.Option(
    None, "--dedupe", help="Near-duplicates go: Jaccard of active SAE features >= this (e.g. 0.9); the first row is kept.")
QualityModelOpt = typer.Option(
    None, "--quality-model", help="A saved classifier scoring quality (higher = better); its score is a column in rules.")
QualityLabelOpt = typer.Option(
    None, "--quality-label",
    help="Train a quality model on the rows where this column is filled in (a small labelled sample), "
         "save it as --quality-name and score every row.")
QualityPositiveOpt = typer.Option(
    None, "--quality-positive", help="The --quality-label value meaning good (default: true, 1, or the last value).")
QualityNameOpt = typer.Option("quality_score", "--quality-name", help="Name of the trained quality model and its score column.")
QualityDropOpt = typer.Option(None, "--quality-drop", help="Share of rows with the lowest quality score to leave out, e.g. 0.5.")
DedupeSeedOpt = typer.Option(0, "--seed", help="Seed of the MinHash permutations (dedupe on large corpora).")


def filter_spec(*, drop=None, keep=None, keep_short=None, drop_feature=None, **rest):
    """The FilterSpec the filter options above describe (rest: FilterSpec fields by name)."""
    from saeembed.analysis.filter import FilterSpec

    return FilterSpec(drop=list(drop or []), keep=[*(keep or []), *(keep_short or [])],
                      drop_features=list(drop_feature or []), **rest)

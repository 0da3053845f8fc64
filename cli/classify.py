"""`saeembed classify ...`: train, apply, evaluate and zero-shot interpretable classifiers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import List, Optional

import polars as pl
import typer

from saeembed.cli import render
from saeembed.cli.options import (CsvOpt, JsonOpt, ReadStoreOpt, ResultJsonOpt, SaeOpt, StoreOpt, csv_opt, deprecated_opt,
                                  open_store)

app = typer.Typer(
    help=(
        "Interpretable classifiers on SAE embeddings (toxicity or any labelled property).\n\n"
        "Example with the bundled sample data:\n\n"
        "    saeembed ingest sample_data/toxicity.jsonl --corpus tox --id-column id\n\n"
        "    saeembed encode tox\n\n"
        "    saeembed classify train tox --label-column toxic --name toxicity --baseline tfidf\n\n"
        "    saeembed classify apply toxicity --corpus tox\n\n"
        "    saeembed classify zero-shot \"insulting or profane language\" --corpus tox --label-column toxic"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

BaselineOpt = typer.Option(
    None, "--baseline", "-b",
    help="Also train a baseline on the same split and print it beside the probe: dense (logistic regression on "
         "sentence embeddings of the embedded MiniLM) or tfidf. Repeatable.",
)
WhereOpt = typer.Option(None, "--where", "-w", help="Only documents matching this filter, e.g. \"source = 'forum'\".")


@contextmanager
def _status(enabled: bool, what: str):
    """A spinner whose text follows the library's progress messages."""
    if not enabled:
        yield None
        return
    with render.err_console.status(render.safe(what)) as status:
        yield lambda msg: status.update(render.safe(f"{what}: {msg}"))


def _metrics_line(name: str, m: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    return f"{render.safe(name):<14} AUROC {f(m.get('auroc'))} · F1 {f(m.get('f1'))} · macro-F1 {f(m.get('macro_f1'))} · n {m.get('n')}"


@app.command()
def train(
    corpus: str = typer.Argument(..., help="Encoded corpus with a label column."),
    label_column: str = typer.Option(..., "--label-column", "-l", help="Metadata column holding the classes (bool, int or text)."),
    name: str = typer.Option(..., "--name", "-n", help="Save the classifier under this name (also the score column in `filter` rules)."),
    baseline: Optional[List[str]] = BaselineOpt,
    penalty: str = typer.Option("l1", "--penalty", help="l1 (sparsest) or elasticnet."),
    l1_ratio: float = typer.Option(0.5, "--l1-ratio", help="Elastic-net mix (1 = pure L1)."),
    test_size: float = typer.Option(0.2, "--test-size", help="Held-out share."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds (on the training split) for choosing C."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and folds."),
    binary: bool = typer.Option(False, "--binary", help="Use feature presence (0/1) instead of max activation."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Two text classes: which one is positive (default: true, 1, or the last in order)."),
    group_column: Optional[str] = typer.Option(None, "--group-column", help="Keep rows sharing this value (e.g. the prompt of paired answers) on one side of every split."),
    top: int = typer.Option(10, "--top", help="Features to show per direction."),
    where: Optional[str] = WhereOpt,
    sae: Optional[str] = SaeOpt,
    store: str = StoreOpt,
    as_json: bool = ResultJsonOpt,
    as_csv: bool = csv_opt("Print the features with the largest weights as CSV (the metrics are in --json)."),
):
    """Train a sparse logistic probe (C by cross-validation), report held-out AUROC/F1/PR and top features, save it.

    Example: `saeembed classify train tox --label-column toxic --name toxicity --baseline dense`
    """
    from saeembed.analysis.classify import ProbeConfig, train_classifier

    cfg = ProbeConfig(penalty=penalty, l1_ratio=l1_ratio, test_size=test_size, folds=folds, seed=seed, binary=binary)
    with open_store(store) as st, _status(not (as_json or as_csv), f"train {name}") as progress:
        res = train_classifier(st, corpus, label_column, name, where=where, sae=sae, config=cfg,
                               baselines=baseline or [], positive=positive, group_column=group_column, top=top,
                               progress=progress)
    if as_json:
        render.emit_json(res.to_dict())
        return
    if as_csv:
        render.emit_frame(res.top_features, as_csv=True)
        return
    i = res.info
    render.note(f"[green]✓[/green] classifier [bold]{render.safe(name)}[/bold] on {render.safe(corpus)}: {i['n_train']} "
                f"train / {i['n_test']} held-out, classes {render.safe(i['classes'])}, C={i['C']:g}, "
                f"{i['features_used']} features with non-zero weight (SAE {render.safe(i['sae'])})")
    render.console.print(_metrics_line("SAE probe", res.metrics), soft_wrap=True)
    for b, m in res.baselines.items():
        render.console.print(_metrics_line(f"baseline {b}", m), soft_wrap=True)
    if not res.pr.is_empty():
        render.emit_frame(res.pr, title="held-out precision / recall by threshold")
    tops = res.top_features
    if len(i["classes"]) == 2:  # binary: the sign of the weight says the direction
        tops = tops.drop("class", "direction")
    render.emit_frame(render.named(tops), title="features with the largest weights (freq_in_class / freq_rest: share of "
                                  "training rows of the class / the rest where the feature fires)")


@app.command()
def apply(
    name: str = typer.Argument(..., help="Saved classifier."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Encoded corpus to score (same SAE as the classifier)."),
    where: Optional[str] = WhereOpt,
    top: int = typer.Option(20, "--top", help="Highest-scored documents to print."),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Score every document of a corpus and store the scores (usable as a column in `saeembed filter`).

    Example: `saeembed classify apply toxicity --corpus tox`
    """
    from saeembed.analysis.classify import apply_classifier

    with open_store(store) as st:
        out = apply_classifier(st, name, corpus, where=where)
        score_col = [c for c in out.columns if c not in ("doc_idx", "doc_id", "predicted")][0]
        out = out.sort(score_col, descending=True)
        texts = st.documents(corpus, metadata=False, doc_idx=out["doc_idx"].head(top).to_list())
    if as_json or as_csv:
        render.emit_frame(out.drop("doc_idx"), as_json=as_json, as_csv=as_csv)
        return
    render.note(f"[green]✓[/green] scored {out.height} documents of {render.safe(corpus)} with {render.safe(name)}; "
                "stored as score column(s) "
                + ", ".join(render.safe(c) for c in out.columns if c not in ('doc_idx', 'doc_id', 'predicted')))
    shown = out.head(top).join(texts.select("doc_idx", pl.col("text").str.slice(0, 100)), on="doc_idx", how="left",
                               maintain_order="left")
    render.emit_frame(shown.drop("doc_idx"), title=f"top {top} by {score_col}")


@app.command("eval")
def evaluate(
    name: str = typer.Argument(..., help="Saved classifier."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Labelled, encoded corpus to evaluate on (transfer)."),
    label_column: str = typer.Option(..., "--label-column", "-l", help="Column holding the true classes."),
    baseline: Optional[List[str]] = BaselineOpt,
    where: Optional[str] = WhereOpt,
    store: str = StoreOpt,
    as_json: bool = ResultJsonOpt,
    as_csv: bool = csv_opt("Print the metrics as CSV, one row per model (the SAE probe, then each baseline)."),
):
    """Evaluate a saved classifier on another labelled corpus; baselines are trained on the classifier's own
    training rows and applied here.

    Example: `saeembed classify eval toxicity --corpus tox --label-column toxic --baseline tfidf --json`
    """
    from saeembed.analysis.classify import evaluate_classifier

    with open_store(store) as st, _status(not (as_json or as_csv), f"eval {name}"):
        res = evaluate_classifier(st, name, corpus, label_column, where=where, baselines=baseline or [])
    if as_json:
        render.emit_json(res)
        return
    if as_csv:
        keys = ("auroc", "f1", "macro_f1", "n")
        rows = [{"model": "SAE probe", **{k: res.get(k) for k in keys}}]
        rows += [{"model": f"baseline {b}", **{k: m.get(k) for k in keys}} for b, m in res.get("baselines", {}).items()]
        render.emit_frame(pl.DataFrame(rows, infer_schema_length=None), as_csv=True)
        return
    render.note(f"{render.safe(name)} (trained on {render.safe(res['trained_on'])}) evaluated on {render.safe(corpus)}:")
    if res.get("rows_seen_in_training"):
        render.note(f"[yellow]warning:[/yellow] {res['rows_seen_in_training']} of these rows were used to train "
                    f"{render.safe(name)}; "
                    "these metrics are optimistic")
    render.console.print(_metrics_line("SAE probe", res), soft_wrap=True)
    for b, m in res.get("baselines", {}).items():
        render.console.print(_metrics_line(f"baseline {b}", m), soft_wrap=True)
    if res.get("pr_table"):
        render.emit_frame(pl.DataFrame(res["pr_table"]), title="precision / recall by threshold")


@app.command("zero-shot")
def zero_shot_cmd(
    description: str = typer.Argument(..., help="What the documents to find look like, e.g. \"insulting or profane language\"."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Encoded corpus to score."),
    name: str = typer.Option("zeroshot", "--name", "-n", help="Save the scorer under this name (score column for `filter`)."),
    n_features: int = typer.Option(10, "--n-features", help="How many matched features to score with."),
    features_count: Optional[int] = deprecated_opt(None, "--features", "--n-features"),
    method: str = typer.Option("auto", "--match", help="Feature matcher: auto, describe (labels/exemplars) or prf (pseudo-relevance feedback on the corpus)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", "-l", help="If the corpus is labelled: also report AUROC/F1 against this column."),
    where: Optional[str] = WhereOpt,
    top: int = typer.Option(10, "--top", help="Highest-scored documents to print."),
    store: str = StoreOpt,
    as_json: bool = ResultJsonOpt,
    as_csv: bool = csv_opt("Print the top documents as CSV (the matched features and metrics are in --json)."),
):
    """Score documents by the SAE features matched to a description: no labels needed.

    Example: `saeembed classify zero-shot "insulting or profane language" --corpus tox`
    """
    from saeembed.analysis.classify import zero_shot

    n_features = n_features if features_count is None else features_count
    with open_store(store) as st, _status(not (as_json or as_csv), "zero-shot"):
        res = zero_shot(st, description, corpus, name=name, top_features=n_features, where=where,
                        label_column=label_column, match_options={"method": method})
        texts = st.documents(corpus, metadata=False, doc_idx=res.scores["doc_idx"].head(top).to_list())
    if as_json:
        render.emit_json(res.to_dict(top))
        return
    shown = res.scores.head(top).join(texts.select("doc_idx", pl.col("text").str.slice(0, 100)), on="doc_idx",
                                      how="left", maintain_order="left")
    if as_csv:
        render.emit_frame(shown.drop("doc_idx"), as_csv=True)
        return
    render.emit_frame(render.named(res.features), title=f"features matched to {description!r}")
    render.emit_frame(shown.drop("doc_idx"), title=f"top {top} documents (score column {name!r} stored)")
    if res.metrics:
        render.console.print(_metrics_line("zero-shot", res.metrics), soft_wrap=True)


@app.command("list")
def list_cmd(store: str = ReadStoreOpt, as_json: bool = JsonOpt, as_csv: bool = CsvOpt):
    """Saved classifiers with their SAE, training corpus and held-out AUROC."""

    with open_store(store, read_only=True) as st:
        render.emit_frame(st.classifiers(), as_json=as_json, as_csv=as_csv, title="classifiers")

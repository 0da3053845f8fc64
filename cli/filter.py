"""`saeembed filter CORPUS ...`: clean a corpus with readable rules, dedupe and a quality model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import (DedupeOpt, DedupeSeedOpt, DropFeatureOpt, DropOpt, KeepOpt, KeepShortOpt, QualityDropOpt,
                                  QualityLabelOpt, QualityModelOpt, QualityNameOpt, QualityPositiveOpt, ResultJsonOpt, SaeOpt,
                                  CreateStoreOpt, StoreOpt, csv_opt, filter_spec, open_store)


def filter_command(
    corpus: str = typer.Argument(..., help="Corpus to clean (ingested; encoded when a rule needs SAE features)."),
    drop: Optional[List[str]] = DropOpt,
    keep: Optional[List[str]] = KeepOpt,
    keep_short: Optional[List[str]] = KeepShortOpt,
    drop_feature: Optional[List[int]] = DropFeatureOpt,
    dedupe: Optional[float] = DedupeOpt,
    quality_model: Optional[str] = QualityModelOpt,
    quality_label: Optional[str] = QualityLabelOpt,
    quality_positive: Optional[str] = QualityPositiveOpt,
    quality_name: str = QualityNameOpt,
    quality_drop: Optional[float] = QualityDropOpt,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Kept rows, unchanged (.jsonl, .parquet or .csv)."),
    dropped: Optional[Path] = typer.Option(None, "--dropped", help="Dropped rows plus drop_rule (first rule) and drop_rules (all that matched)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing: show counts per rule, features over-represented among dropped rows, samples."),
    samples: int = typer.Option(3, "--samples", help="Sample dropped rows shown per rule."),
    sae: Optional[str] = SaeOpt,
    seed: int = DedupeSeedOpt,
    store: str = StoreOpt,
    as_json: bool = ResultJsonOpt,
    as_csv: bool = csv_opt("Print the rules table (rows matched and dropped per rule) as CSV; notes go to stderr."),
):
    """Clean a corpus with readable rules: classifier scores, SAE features, metadata, near-duplicates, quality.

    Rules see one row per document with: doc_id, n_chars, n_tokens, your metadata columns, each stored
    classifier score by name (a saved classifier is applied on first use), and fN = max activation of
    SAE feature N (0 when silent). Every input row ends in exactly one of --out / --dropped; the command
    checks this. Example with the bundled sample data:

        saeembed ingest sample_data/instructions.jsonl --corpus inst --id-column id

        saeembed encode inst

        saeembed filter inst --keep "source = 'curated'" --drop "n_chars < 60" --dedupe 0.8 --dry-run

        saeembed filter inst --dedupe 0.9 --quality-label quality --quality-positive good --quality-drop 0.2 --out kept.jsonl --dropped dropped.jsonl
    """
    from saeembed.analysis.filter import filter_corpus, write_outputs
    from saeembed.errors import InputError

    if not dry_run and not (out or dropped):
        raise InputError("say where to write: --out kept.jsonl (and --dropped dropped.jsonl), or use --dry-run")
    spec = filter_spec(drop=drop, keep=keep, keep_short=keep_short, drop_feature=drop_feature, dedupe=dedupe,
                       quality_model=quality_model, quality_label=quality_label, quality_positive=quality_positive,
                       quality_name=quality_name, quality_drop=quality_drop, sae=sae, seed=seed)
    with open_store(store) as st:
        with render.err_console.status(render.safe(f"filter {corpus}")) if not (as_json or as_csv) else _null():
            res = filter_corpus(st, corpus, spec, samples_per_rule=samples)
            written = {} if dry_run else write_outputs(st, res, out, dropped)
    if as_json:
        render.emit_json(res.summary() | {"written": written, "dry_run": dry_run})
        return
    if as_csv:
        render.emit_frame(res.rules, as_csv=True)
        return
    if res.quality:
        q = res.quality
        render.note(f"quality model {render.safe(repr(q['name']))} trained on {q['n_train']} labelled rows: held-out AUROC "
                    f"{q['auroc']:.3f}, F1 {q['f1']:.3f} (n {q['n']})" if q.get("auroc") is not None else
                    f"quality model {render.safe(repr(q['name']))} trained on {q['n_train']} labelled rows")
    render.emit_frame(res.rules, title="rules (matched: rows the rule matches; dropped: rows it drops first; only_this: rows no other rule drops)")
    if res.features is not None and not res.features.is_empty():
        render.emit_frame(render.named(res.features), title="features over-represented among dropped rows (vs kept)")
    if res.samples is not None and not res.samples.is_empty():
        render.emit_frame(res.samples.drop("rule"), title="sample dropped rows")
    c = res.check
    render.note(f"[green]✓[/green] check: {c['input']} input rows = {c['kept']} kept + {c['dropped']} dropped, none in both")
    if dry_run:
        render.note("dry run: nothing written")
    else:
        for what, path in (("kept_rows", out), ("dropped_rows", dropped)):
            if path:
                render.note(f"[green]✓[/green] wrote {written[what]} {what.replace('_', ' ')} to {render.safe(str(path))}")


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def clean_command(
    path: Path = typer.Argument(..., help="Raw instruction-tuning file (.jsonl, .csv, .parquet...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cleaned file (kept rows, unchanged)."),
    dropped: Optional[Path] = typer.Option(None, "--dropped", help="Dropped rows with the rule that dropped them."),
    report: Optional[Path] = typer.Option(None, "--report", help="Markdown report of the cleaning."),
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Corpus name in the store (default: file stem)."),
    text_column: str = typer.Option("text", "--text-column", "-t"),
    id_column: Optional[str] = typer.Option(None, "--id-column", "-i"),
    drop: Optional[List[str]] = DropOpt,
    keep: Optional[List[str]] = KeepOpt,
    keep_short: Optional[List[str]] = KeepShortOpt,
    drop_feature: Optional[List[int]] = DropFeatureOpt,
    dedupe: float = typer.Option(0.9, "--dedupe", help="Near-duplicate Jaccard threshold (1 = exact feature-set copies)."),
    quality_label: Optional[str] = QualityLabelOpt,
    quality_positive: Optional[str] = QualityPositiveOpt,
    quality_drop: Optional[float] = QualityDropOpt,
    store: str = CreateStoreOpt,
    as_json: bool = ResultJsonOpt,
    as_csv: bool = csv_opt("Print the rules table (rows matched and dropped per rule) as CSV; notes go to stderr."),
):
    """Raw instruction-tuning file → cleaned file + report: ingest, encode, filter, write.

    Example: `saeembed clean sample_data/instructions.jsonl --id-column id --dedupe 0.8 --drop "n_chars < 40" --out clean.jsonl --dropped dropped.jsonl --report report.md`
    """
    from saeembed.pipelines.clean_finetune import clean_file

    spec = filter_spec(drop=drop, keep=keep, keep_short=keep_short, drop_feature=drop_feature, dedupe=dedupe,
                       quality_label=quality_label, quality_positive=quality_positive, quality_drop=quality_drop)
    with render.encode_progress(f"encode {corpus or path.stem}", enabled=not (as_json or as_csv)) as bar:
        res = clean_file(path, out, dropped=dropped, report=report, store=store, corpus=corpus,
                         text_column=text_column, id_column=id_column, spec=spec, progress=bar)
    c = res.filter.check
    if as_json:
        render.emit_json(res.filter.summary() | {"corpus": res.corpus, "written": res.written,
                                                 "report": str(res.report) if res.report else None})
        return
    render.emit_frame(res.filter.rules, as_csv=as_csv, title="rules")
    render.note(f"[green]✓[/green] {c['input']} rows = {c['kept']} kept → {render.safe(str(out))} + {c['dropped']} dropped"
                + (f" → {render.safe(str(dropped))}" if dropped else "") + (f"; report: {render.safe(str(report))}" if report else ""))

"""Fine-tuning data cleanup, end to end: a raw instruction-tuning file -> a cleaned file plus a report.

ingest (idempotent) -> encode (resumable; default model + SAE unless given) -> filter (saeembed's rules,
dedupe, quality model) -> kept / dropped files with the original rows -> a Markdown report (rules,
counts, features over-represented among dropped rows, samples, the partition check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from saeembed.analysis.filter import FilterResult, FilterSpec, filter_corpus, write_outputs
from saeembed.documents import ingest
from saeembed.encode.pipeline import encode_corpus
from saeembed.store import Store


@dataclass
class CleanResult:
    corpus: str
    filter: FilterResult
    written: dict
    report: Path | None


def clean_file(
    path: str | Path,
    out: str | Path,
    *,
    dropped: str | Path | None = None,
    report: str | Path | None = None,
    store: str | Path = "saeembed.duckdb",
    corpus: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    spec: FilterSpec | None = None,
    model: str | None = None,
    sae: str | None = None,
    progress=None,
) -> CleanResult:
    """Clean `path` into `out` (+ `dropped`, `report`). Default rules: near-duplicates at Jaccard 0.9."""
    path = Path(path)
    corpus = corpus or path.stem
    spec = spec or FilterSpec(dedupe=0.9)
    with Store(store) as st:
        if not st.has_corpus(corpus):
            ingest(st, path, corpus=corpus, text_column=text_column, id_column=id_column)
        encode_corpus(st, corpus, model=model, sae=sae, progress=progress)
        res = filter_corpus(st, corpus, spec)
        written = write_outputs(st, res, out, dropped)
    report_path = None
    if report:
        report_path = Path(report)
        report_path.write_text(render_report(res, path, out, dropped, spec), encoding="utf-8")
    return CleanResult(corpus, res, written, report_path)


def _md_table(frame: pl.DataFrame) -> str:
    if frame is None or frame.is_empty():
        return "(none)\n"
    cols = frame.columns

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, list):
            return "; ".join(map(str, v))
        return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines) + "\n"


def render_report(res: FilterResult, source: Path, out, dropped, spec: FilterSpec) -> str:
    c = res.check
    parts = [
        f"# Cleaning report: {source.name}\n",
        f"- input rows: {c['input']}\n- kept: {c['kept']} → `{out}`\n- dropped: {c['dropped']}"
        + (f" → `{dropped}`" if dropped else "") + "\n"
        f"- check: every input row is in exactly one of kept / dropped: {'yes' if c['ok'] else 'NO'}\n",
        "## Rules\n", _md_table(res.rules),
    ]
    if res.quality:
        q = res.quality
        parts.append(f"\nQuality model `{q['name']}` trained on {q['n_train']} labelled rows; held-out AUROC "
                     f"{q.get('auroc')}, F1 {q.get('f1')}.\n")
    parts += ["\n## Features over-represented among dropped rows\n", _md_table(res.features),
              "\n## Sample dropped rows\n", _md_table(res.samples)]
    return "\n".join(parts)

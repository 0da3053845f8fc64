"""`saeembed label`: name features, offline by default or with any OpenAI-compatible LLM. Thin: the work
is saeembed.interp.labels."""

from __future__ import annotations

from contextlib import contextmanager
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import CsvOpt, JsonOpt, SaeOpt, StoreOpt, feature_ids, open_store
from saeembed.errors import InputError


@contextmanager
def _progress(description: str, total: int, enabled: bool = True):
    """A bar fed by label_features's progress(done, total) callback."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("features"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=render.err_console) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, _total: bar.update(task, completed=done)


def label(
    diff_sides: Optional[List[str]] = typer.Argument(
        None, metavar="[A [B]]", help="Corpora for --top-diff: A and B, or one corpus A with --where/--vs or --by."),
    features: Optional[List[str]] = typer.Option(
        None, "--features", "-f", help="Feature ids, comma-separated or repeated: 12,45 or -f 12 -f 45."),
    top_diff: bool = typer.Option(
        False, "--top-diff", help="Label the features that differ most between two corpora (--top-diff A B), two "
        "slices of one (--top-diff A --where ... [--vs ...]) or each --by group and the rest: both rankings of "
        "each diff in turn (raw, length-controlled)."),
    where: Optional[str] = typer.Option(None, "--where", help="--top-diff: filter for side A."),
    vs: Optional[str] = typer.Option(None, "--vs", help="--top-diff: filter for side B (default: the rest, or all of B)."),
    by: Optional[str] = typer.Option(None, "--by", help="--top-diff: metadata column; each value against the rest."),
    all_live: bool = typer.Option(False, "--all-live", help="Every feature that fires on some document, most frequent first."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="At most this many features (--top-diff default 20)."),
    corpus: Optional[list[str]] = typer.Option(
        None, "--corpus", "-c", help="Explain from these corpora only (repeatable). Default: all encoded with the SAE."),
    sae: Optional[str] = SaeOpt,
    llm: Optional[str] = typer.Option(
        None, "--llm", help="Label with this LLM (e.g. gpt-4o-mini) via an OpenAI-compatible API; key from "
        "$SAEEMBED_LLM_KEY or $OPENAI_API_KEY. Without it labels are made offline."),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", envvar="SAEEMBED_LLM_BASE_URL", help="OpenAI-compatible server, e.g. http://localhost:8000/v1."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop (cleanly) before the estimated cost passes this many USD."),
    max_calls: Optional[int] = typer.Option(None, "--max-calls", help="Stop (cleanly) after this many uncached LLM calls."),
    concurrency: int = typer.Option(4, "--concurrency", help="LLM calls in flight at once."),
    timeout: float = typer.Option(30.0, "--timeout", help="LLM: seconds to wait for one answer; a timed-out call is tried once more, and a server that answers none of 3 calls in a row stops the run."),
    relabel_below: Optional[float] = typer.Option(
        None, "--relabel-below", help="LLM: explain again once when the score (balanced accuracy) is below this."),
    price_in: Optional[float] = typer.Option(None, "--price-in", help="USD per million prompt tokens (cost estimate; 0 for a local server)."),
    price_out: Optional[float] = typer.Option(None, "--price-out", help="USD per million completion tokens."),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Label features from their exemplars and score the labels on held-out examples.

    Offline (default): contrastive words of the activating spans vs background text, plus metadata the
    feature over-represents; score = AUROC of label-to-text similarity (activating vs random texts).
    With --llm: an explanation from top and quantile-sampled examples and contrasting ones; score =
    balanced accuracy of detection and fuzzing on held-out examples. Labels are stored and shown by
    `saeembed features`; LLM calls are cached in the store, so a re-run costs nothing.
    """
    from saeembed.analysis.diff import top_diff_features
    from saeembed.interp.labels import LabelConfig, label_features, live_features, resolve_scope
    from saeembed.interp.llm import LLMClient, LLMConfig

    chosen = sum(x is not None and x is not False and x != () for x in (features or None, top_diff or None, all_live or None))
    if chosen != 1:
        raise InputError("say which features to label: --features 12,45, --top-diff A B or --all-live")
    sides = list(diff_sides or [])
    if top_diff and not (len(sides) == 2 or (len(sides) == 1 and (where or by))):
        raise InputError("--top-diff needs two corpora (--top-diff A B) or one with --where/--vs or --by")
    if (sides or where or vs or by) and not top_diff:
        raise InputError("corpora, --where, --vs and --by go with --top-diff")
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    ids = feature_ids(features) if features else None
    with open_store(store) as st:
        s, corpus_ids = resolve_scope(st, corpus, sae)
        if ids is not None:
            ids = ids[: limit or None]
        elif top_diff:
            ids = top_diff_features(st, sides[0], sides[1] if len(sides) > 1 else None, where=where, vs=vs, by=by,
                                    top=limit or 20, sae=s.sae_hash)
        else:
            ids = live_features(st, s, corpus_ids, limit)
        client = None
        if llm:
            client = LLMClient(st, LLMConfig(model=llm, base_url=base_url, concurrency=concurrency, timeout=timeout, max_cost=max_cost,
                                             max_calls=max_calls, price_in=price_in, price_out=price_out))
        elif any(v is not None for v in (max_cost, max_calls, relabel_below)):
            render.note("[yellow]note:[/yellow] --max-cost/--max-calls/--relabel-below apply to --llm only")
        if not llm and not (as_json or as_csv):
            render.note("labelling offline (no LLM); pass --llm MODEL to use one")
        cfg = LabelConfig(relabel_below=relabel_below)
        with _progress("label", len(ids), enabled=not (quiet or as_json or as_csv)) as bar:
            run = label_features(st, ids, corpus=corpus or None, sae=s.sae_hash, llm=client, config=cfg,
                                 progress=bar)
    frame = run.frame
    if run.method == "offline":
        frame = frame.drop("detection", "fuzzing")
    else:
        frame = frame.drop("auroc_hard")
    render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title=f"labels ({run.method})")
    ok = frame.filter(frame["status"] == "ok")
    scores = ok["score"].drop_nulls()
    msg = f"labelled {ok.height} of {frame.height} features ({run.method})"
    if len(scores):
        msg += f"; median score {scores.median():.3f}"
    if run.usage:
        u = run.usage
        msg += (f"; LLM {u['calls']} calls ({u['cached']} cached, {u['retries']} retries, {u['failed']} failed), "
                f"{u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} completion tokens, est. ${u['cost']:.4f}")
        if u.get("usage_estimated"):
            msg += f"; token counts estimated for {u['usage_estimated']} answers (the server sent none usable)"
    n_weak = int(frame["weak"].fill_null(False).sum()) if "weak" in frame.columns else 0
    if n_weak:
        msg += f"; {n_weak} weak (near-chance score or copied from the examples: see status)"
    render.note(msg)
    if run.budget_stopped:
        render.note("[yellow]budget reached:[/yellow] the remaining features were skipped; re-run with a larger "
                    "--max-cost/--max-calls to finish (answers so far are cached)")

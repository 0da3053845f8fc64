"""The `saeembed` command line. Thin: parse, call the library, render. No analysis logic here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from saeembed.cli.options import CsvOpt, JsonOpt, StoreOpt
from saeembed.cli import render
from saeembed.errors import SaeembedError

app = typer.Typer(
    name="saeembed",
    help=(
        "Sparse, interpretable SAE embeddings of text corpora, stored in one DuckDB file.\n\n"
        "Typical flow: `saeembed ingest FILE --corpus NAME`, then `saeembed encode NAME`, then look with "
        "`saeembed features --corpus NAME` or export with `saeembed export NAME --out emb.parquet`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)

def _add_subcommands() -> None:
    from saeembed.cli import analyze
    from saeembed.cli import cluster as cluster_cli, search as search_cli  # search, similar, cluster(ings)
    from saeembed.cli.browse import browse
    from saeembed.cli.classify import app as classify_app
    from saeembed.cli.filter import clean_command, filter_command
    from saeembed.cli.label import label
    from saeembed.cli.report import app as report_app
    from saeembed.cli.sae import app as sae_app

    app.add_typer(sae_app, name="sae")
    app.command()(analyze.diff)
    app.command()(analyze.correlate)
    search_cli.register(app)
    cluster_cli.register(app)
    app.add_typer(classify_app, name="classify")
    app.command("filter")(filter_command)
    app.command("clean")(clean_command)
    app.command("label")(label)
    app.add_typer(report_app, name="report")
    app.command()(browse)
    from saeembed.cli.scale import register as register_scale  # compact, shards

    register_scale(app)


_add_subcommands()



def _store(path: str, *, read_only: bool = False):
    from saeembed.store import Store

    return Store(path, read_only=read_only)


@app.command()
def ingest(
    path: Path = typer.Argument(..., help="A .csv, .tsv, .jsonl, .json or .parquet file, or a folder of .txt files."),
    corpus: str = typer.Option(..., "--corpus", "-c", help="Name to store the documents under."),
    text_column: str = typer.Option("text", "--text-column", "-t", help="Column holding the document text."),
    id_column: Optional[str] = typer.Option(
        None, "--id-column", "-i", help="Column of unique document ids; without it ids are a hash of the text."
    ),
    format: Optional[str] = typer.Option(None, "--format", help="Override the format guessed from the suffix."),
    append: bool = typer.Option(False, "--append", help="Add new documents to an existing corpus."),
    replace: bool = typer.Option(False, "--replace", help="Drop the corpus (and its encodings) first."),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
):
    """Read documents from a file into the store. Other columns are kept as metadata."""
    from saeembed.documents import ingest as do_ingest

    if append and replace:
        raise typer.BadParameter("use --append or --replace, not both")
    mode = "append" if append else "replace" if replace else "create"
    with _store(store) as st:
        result = do_ingest(st, path, corpus=corpus, text_column=text_column, id_column=id_column,
                           format=format, mode=mode)
    if as_json:
        render.emit_json(result)
        return
    msg = f"[green]✓[/green] {result['added']} documents → corpus [bold]{result['corpus']}[/bold] ({result['n_docs']} in all) in {store}"
    if result["skipped_empty"]:
        msg += f"; skipped {result['skipped_empty']} empty texts"
    if result["skipped_existing"]:
        msg += f"; {result['skipped_existing']} already stored"
    render.note(msg)
    if result["metadata_columns"]:
        render.note(f"  metadata columns: {', '.join(result['metadata_columns'])}")


@app.command()
def encode(
    corpus: str = typer.Argument(..., help="Corpus to encode."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Hugging Face hub id or local folder. Default: the SAE's own model, else the embedded all-MiniLM-L6-v2."
    ),
    sae: Optional[str] = typer.Option(
        None, "--sae", help="SAE folder/file (SAELens, sparsify, Gemma Scope, Goodfire, Llama Scope) or hub id. Default: the embedded SAE."
    ),
    hook: Optional[str] = typer.Option(
        None, "--hook", help="layers.N = output of block N (0-indexed); layers.N.pre, blocks.N.hook_resid_post/_pre also work. Default: the SAE's hook."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N, mps or auto."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per forward pass."),
    window: Optional[int] = typer.Option(None, "--window", help="Tokens per window (long documents are split, never truncated)."),
    chat_template: bool = typer.Option(False, "--chat-template", help="Wrap each document as an assistant turn of the model's chat template; template tokens are not pooled."),
    prompt_column: Optional[str] = typer.Option(None, "--prompt-column", help="With --chat-template: metadata column holding the user turn."),
    keep_special: bool = typer.Option(False, "--keep-special", help="Pool BOS/CLS/SEP tokens too (excluded by default)."),
    replace: bool = typer.Option(False, "--replace", help="Drop a stored encoding of this corpus with this SAE first."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the model repo's own Python code to run."),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    backend: str = typer.Option("local", "--backend", help="local, or ray (pip install 'saeembed[ray]'): an actor pool, one model+SAE per actor."),
    address: Optional[str] = typer.Option(None, "--address", help="With --backend ray: cluster address ('auto' joins the running cluster; default starts a local one)."),
    workers: int = typer.Option(2, "--workers", help="With --backend ray: number of actors."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="With --backend ray: GPUs each actor reserves."),
    shards: str = typer.Option("auto", "--shards", help="Write activations as Parquet shards beside the store: on, off, auto (100k+ documents; always with Ray)."),
    shard_docs: Optional[int] = typer.Option(None, "--shard-docs", help="Documents per shard."),
    chunk_docs: Optional[int] = typer.Option(None, "--chunk-docs", help="Documents per write (local) or per Ray batch."),
):
    """Encode a corpus into sparse SAE embeddings (resumable: re-running skips stored documents)."""
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus

    cfg = EncodeConfig(device=device, window=window, chat_template=chat_template, prompt_column=prompt_column,
                       exclude_special=not keep_special, replace=replace, trust_remote_code=trust_remote_code,
                       backend=backend, ray_address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                       shards=shards)
    for name, value in (("batch_size", batch_size), ("shard_docs", shard_docs), ("chunk_docs", chunk_docs)):
        if value is not None:
            if value < 1:
                raise typer.BadParameter(f"--{name.replace('_', '-')} must be at least 1")
            setattr(cfg, name, value)
    with _store(store) as st, render.encode_progress(f"encode {corpus}", enabled=not (quiet or as_json)) as bar:
        result = encode_corpus(st, corpus, model=model, sae=sae, hook=hook, config=cfg, progress=bar)
    if as_json:
        render.emit_json(result.to_dict())
        return
    for w in result.warnings:
        render.note(f"[yellow]warning:[/yellow] {w}")
    if result.docs_encoded == 0:
        render.note(f"nothing to do: all {result.docs_total} documents of {corpus} are already encoded with SAE {result.sae}")
        return
    render.note(
        f"[green]✓[/green] encoded {result.docs_encoded} documents ({result.tokens:,} tokens) of {corpus} "
        f"with SAE {result.sae} at {result.hook} of {result.model} in {result.seconds:.1f}s "
        f"({result.docs_per_s:.1f} docs/s, {result.tokens_per_s:,.0f} tokens/s); {result.activation_rows:,} sparse rows"
    )
    if result.split_docs:
        render.note(f"  {result.split_docs} long documents were split into windows and pooled across them (none truncated)")
    if result.docs_already:
        render.note(f"  {result.docs_already} documents were already stored and skipped")


@app.command()
def info(store: str = StoreOpt, as_json: bool = JsonOpt):
    """What the store holds: corpora, documents, SAEs, rows, schema version."""
    with _store(store, read_only=True) as st:
        data = st.info()
        saes = st.saes()
    if as_json:
        render.emit_json(data | {"sae_list": saes.to_dicts()})
        return
    for k, v in data.items():
        render.console.print(f"[bold]{k:>18}[/bold]  {v}")
    if not saes.is_empty():
        render.emit_frame(saes, title="SAEs")


@app.command()
def corpora(store: str = StoreOpt, as_json: bool = JsonOpt, as_csv: bool = CsvOpt):
    """List corpora with their size, metadata columns and encodings."""
    with _store(store, read_only=True) as st:
        frame = st.corpora()
    render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="corpora")


@app.command()
def features(
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus (default: all encoded with the SAE)."),
    top: int = typer.Option(20, "--top", "-n", help="How many features."),
    by: str = typer.Option("docs", "--by", help="Rank by docs (how many documents fire), max or mean activation."),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE hash (prefix) when the store holds several."),
    search: Optional[str] = typer.Option(None, "--search", help="Find labelled features by label text or meaning, e.g. \"date\"."),
    store: str = StoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Top features with their label (when labelled) and strongest exemplar."""
    with _store(store, read_only=True) as st:
        if search is not None:
            from saeembed.interp.labels import search_labels

            frame = search_labels(st, search, sae=sae, top=top)
        else:
            frame = st.feature_summary(corpus, sae=sae, top=top, order_by=by)
    render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="features")


@app.command()
def export(
    corpus: str = typer.Argument(..., help="Corpus to export."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .parquet, .csv or .jsonl."),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE hash (prefix) when the corpus has several encodings."),
    store: str = StoreOpt,
):
    """Write sparse embeddings as rows of (doc_id, feature, value, active_tokens)."""
    with _store(store, read_only=True) as st:
        n = st.export(corpus, out, sae=sae)
    render.note(f"[green]✓[/green] wrote {n:,} rows to {out}")


@app.command()
def demo(
    store: str = typer.Option("demo.duckdb", "--store", "-s", help="Store file for the demo."),
    top: int = typer.Option(8, "--top", "-n", help="Features to show per corpus."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: embedded all-MiniLM-L6-v2)."),
    sae: Optional[str] = typer.Option(None, "--sae", help="SAE (default: the embedded SAE)."),
    hook: Optional[str] = typer.Option(None, "--hook", help="Hook (default: the SAE's)."),
    as_json: bool = JsonOpt,
):
    """Run the whole flow on the bundled sample corpora: ingest → encode → top features per corpus."""
    from saeembed.pipelines.demo import run_demo

    factory = None if as_json else (lambda corpus: render.encode_progress(f"encode {corpus}"))
    result = run_demo(store, top=top, model=model, sae=sae, hook=hook, progress_factory=factory)
    if as_json:
        render.emit_json({
            "store": result.store,
            "encodes": [r.to_dict() for r in result.encodes],
            "top_features": {c: f.to_dicts() for c, f in result.top_features.items()},
        })
        return
    for r in result.encodes:
        if r.docs_encoded:
            render.note(f"[green]✓[/green] {r.corpus}: {r.docs_encoded} documents, {r.tokens:,} tokens, "
                        f"{r.tokens_per_s:,.0f} tokens/s")
    for corpus, frame in result.top_features.items():
        render.emit_frame(frame, title=f"{corpus}: most distinctive features (share of its documents vs the other corpora)")
    render.note(f"store: {result.store} · next: saeembed features --store {result.store} --corpus toxicity")


def main() -> None:
    """Entry point: user mistakes become one red line and exit code 1, never a traceback."""
    try:
        app(standalone_mode=True)
    except SaeembedError as e:
        render.error(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        render.error("interrupted; stored batches are kept, re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The `saeembed` command line. Thin: parse, call the library, render. No analysis logic here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import (CreateStoreOpt, CsvOpt, JsonOpt, ReadStoreOpt, ResultJsonOpt, SaeOpt, SaeWeightsOpt,
                                  StoreOpt, csv_opt, open_store, opt)
from saeembed.config import EncodeConfig, FeaturesConfig
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
    from saeembed.cli.serve import register as register_serve

    register_scale(app)
    register_serve(app)
    from saeembed.cli.triggers import register as register_tokens  # triggers, show

    register_tokens(app)


_add_subcommands()


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
    replace: bool = typer.Option(False, "--replace", help="Start the corpus over: its documents and encodings are dropped first."),
    sep: Optional[str] = typer.Option(
        None, "--sep", help="Field separator of a .csv/.tsv file, e.g. ';' (default: ',' or tab, or guessed from the header)."),
    rename: List[str] = typer.Option(
        [], "--rename", help="Rename a column on the way in, OLD=NEW (repeatable), e.g. a metadata column named n_tokens."),
    drop_column: List[str] = typer.Option([], "--drop-column", help="Leave this column out (repeatable)."),
    store: str = CreateStoreOpt,
    as_json: bool = ResultJsonOpt,
):
    """Read documents from a file into the store. Other columns are kept as metadata."""
    from saeembed.documents import ingest as do_ingest
    from saeembed.store.corpora import APPEND, NEW, REPLACE

    if append and replace:
        raise typer.BadParameter("use --append or --replace, not both")
    renames = {}
    for item in rename:
        old, eq, new = item.partition("=")
        if not eq or not old or not new:
            raise typer.BadParameter(f"--rename takes OLD=NEW, not {item!r}")
        renames[old] = new
    mode = APPEND if append else REPLACE if replace else NEW
    with open_store(store, create=True) as st:
        result = do_ingest(st, path, corpus=corpus, text_column=text_column, id_column=id_column, format=format,
                           mode=mode, separator=sep, rename=renames or None, drop_columns=drop_column or None)
    if as_json:
        render.emit_json(result)
        return
    msg = (f"[green]✓[/green] {result['added']} documents → corpus [bold]{render.safe(result['corpus'])}[/bold] "
           f"({result['n_docs']} in all) in {render.safe(store)}")
    if result["skipped_empty"]:
        msg += f"; skipped {result['skipped_empty']} empty texts"
    if result["skipped_existing"]:
        msg += f"; {result['skipped_existing']} already stored"
    render.note(msg)
    if result["metadata_columns"]:
        render.note(f"  metadata columns: {', '.join(map(render.safe, result['metadata_columns']))}")


@app.command()
def encode(
    corpus: str = typer.Argument(..., help="Corpus to encode."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Hugging Face hub id or local folder. Default: the SAE's own model, else the embedded all-MiniLM-L6-v2."
    ),
    gguf: Optional[str] = typer.Option(
        None, "--gguf", help="A GGUF model file (llama.cpp/ollama): a path, or a file name inside --model DIR or hub repo. "
        "Read through transformers (needs: pip install gguf); weights are dequantised to float32."
    ),
    sae: Optional[str] = SaeWeightsOpt,
    hook: Optional[str] = typer.Option(
        None, "--hook", help="Where to read activations (default: the hook the SAE was trained at): layers.N = output "
        "of block N (0-indexed), layers.N.pre/.mid/.mlp_out/.attn_z/.ln2, or TransformerLens names (blocks.N.hook_resid_post, "
        "hook_resid_mid, hook_mlp_out, attn.hook_z, ln2.hook_normalized). A hook other than the SAE's is refused without --force-hook."
    ),
    force_hook: bool = typer.Option(False, "--force-hook", help="Use --hook even where the SAE says it was trained at another hook (its activations will not be what it expects)."),
    device: str = opt(EncodeConfig, "device", "--device"),
    batch_size: int = opt(EncodeConfig, "batch_size", "--batch-size"),
    window: Optional[int] = opt(EncodeConfig, "window", "--window"),
    chat_template: bool = opt(EncodeConfig, "chat_template", "--chat-template"),
    prompt_column: Optional[str] = opt(EncodeConfig, "prompt_column", "--prompt-column"),
    messages_column: Optional[str] = opt(EncodeConfig, "messages_column", "--messages-column"),
    roles: List[str] = opt(EncodeConfig, "roles", "--roles", default=list(EncodeConfig.roles)),
    keep_special: bool = typer.Option(False, "--keep-special", help="Pool BOS/CLS/SEP tokens too (excluded by default)."),
    replace: bool = opt(EncodeConfig, "replace", "--replace"),
    trust_remote_code: bool = opt(EncodeConfig, "trust_remote_code", "--trust-remote-code"),
    store: str = StoreOpt,
    as_json: bool = ResultJsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    backend: str = opt(EncodeConfig, "backend", "--backend"),
    address: Optional[str] = opt(EncodeConfig, "ray_address", "--address"),
    workers: int = opt(EncodeConfig, "workers", "--workers"),
    gpus_per_worker: float = opt(EncodeConfig, "gpus_per_worker", "--gpus-per-worker"),
    shards: str = opt(EncodeConfig, "shards", "--shards"),
    shard_docs: int = opt(EncodeConfig, "shard_docs", "--shard-docs"),
    chunk_docs: int = opt(EncodeConfig, "chunk_docs", "--chunk-docs"),
    keep_tokens: bool = opt(EncodeConfig, "keep_tokens", "--keep-tokens"),
    skip_tokens: Optional[str] = opt(EncodeConfig, "skip_tokens", "--skip-tokens", metavar="function|none"),
):
    """Encode a corpus into sparse SAE embeddings (resumable: re-running skips stored documents)."""
    from saeembed.encode.gguf import with_gguf
    from saeembed.encode.pipeline import encode_corpus

    for name, value in (("batch_size", batch_size), ("shard_docs", shard_docs), ("chunk_docs", chunk_docs)):
        if value < 1:
            raise typer.BadParameter(f"--{name.replace('_', '-')} must be at least 1")
    if not messages_column and tuple(roles) != EncodeConfig.roles:
        raise typer.BadParameter("--roles picks turns of --messages-column; give that column too")
    cfg = EncodeConfig(device=device, batch_size=batch_size, window=window, chat_template=chat_template,
                       prompt_column=prompt_column, messages_column=messages_column, roles=tuple(roles),
                       exclude_special=not keep_special, replace=replace,
                       trust_remote_code=trust_remote_code, backend=backend, ray_address=address, workers=workers,
                       gpus_per_worker=gpus_per_worker, shards=shards, shard_docs=shard_docs, chunk_docs=chunk_docs,
                       keep_tokens=keep_tokens, skip_tokens=skip_tokens)
    with open_store(store) as st, render.encode_progress(f"encode {corpus}", enabled=not (quiet or as_json)) as bar:
        result = encode_corpus(st, corpus, model=with_gguf(model, gguf), sae=sae, hook=hook, config=cfg, progress=bar,
                               force_hook=force_hook)
    if as_json:
        render.emit_json(result.to_dict())
        return
    for w in result.warnings:
        render.note(f"[yellow]warning:[/yellow] {render.safe(w)}")
    if result.docs_encoded == 0:
        render.note(f"nothing to do: all {result.docs_total} documents of {render.safe(corpus)} are already encoded with "
                    f"SAE {render.safe(result.sae)}")
        return
    render.note(
        f"[green]✓[/green] encoded {result.docs_encoded} documents ({result.tokens:,} tokens) of {render.safe(corpus)} "
        f"using SAE {render.safe(result.sae)} at {render.safe(result.hook)} of {render.safe(result.model)} "
        f"in {result.seconds:.1f}s "
        f"({result.docs_per_s:.1f} docs/s, {result.tokens_per_s:,.0f} tokens/s); {result.activation_rows:,} sparse rows"
    )
    if result.token_rows:
        render.note(f"  {result.token_rows:,} token-level rows kept (--keep-tokens)")
    if result.skip_tokens != "none":
        why = {"sae": "as the SAE recommends; --skip-tokens none pools every token",
               "stored": "as the stored rows of this encoding were pooled"}.get(result.skip_tokens_from, "--skip-tokens")
        render.note(f"  pooled without function tokens (stop words, punctuation): {why}")
    if result.split_docs:
        render.note(f"  {result.split_docs} long documents were split into windows and pooled across them (none truncated)")
    if result.docs_already:
        render.note(f"  {result.docs_already} documents were already stored and skipped")


@app.command()
def info(store: str = ReadStoreOpt, as_json: bool = ResultJsonOpt,
         as_csv: bool = csv_opt("Print the SAEs table as CSV (the store's totals are in --json).")):
    """What the store holds: corpora, documents, SAEs, rows, schema version."""
    with open_store(store, read_only=True) as st:
        data = st.info()
        saes = st.saes()
    if as_json:
        render.emit_json(data | {"sae_list": saes.to_dicts()})
        return
    if as_csv:
        render.emit_frame(saes, as_csv=True)
        return
    for k, v in data.items():
        render.console.print(f"[bold]{k:>18}[/bold]  {render.safe(v)}", soft_wrap=True)
    if not saes.is_empty():
        render.emit_frame(saes, title="SAEs")


@app.command()
def corpora(store: str = ReadStoreOpt, as_json: bool = JsonOpt, as_csv: bool = CsvOpt):
    """List corpora with their size, metadata columns and encodings."""
    with open_store(store, read_only=True) as st:
        frame = st.corpora()
    render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="corpora")


@app.command()
def features(
    corpus: Optional[str] = typer.Option(None, "--corpus", "-c", help="Only this corpus (default: all encoded with the SAE)."),
    top: int = opt(FeaturesConfig, "top", "--top", "-n"),
    by: str = opt(FeaturesConfig, "order_by", "--by"),
    keep_generic: bool = opt(FeaturesConfig, "keep_generic", "--keep-generic"),
    sae: Optional[str] = SaeOpt,
    search: Optional[str] = typer.Option(None, "--search", help="Find labelled features by label text or meaning, e.g. \"date\"."),
    store: str = ReadStoreOpt,
    as_json: bool = JsonOpt,
    as_csv: bool = CsvOpt,
):
    """Top features with their label and strongest exemplar. Generic features (firing on nearly every
    document or on random tokens) are left out, as diff leaves them out; --keep-generic shows them, flagged."""
    with open_store(store, read_only=True) as st:
        if search is not None:
            from saeembed.interp.labels import search_labels

            frame = search_labels(st, search, sae=sae, top=top)
            render.emit_frame(frame, as_json=as_json, as_csv=as_csv, title="features")
            return
        from saeembed.analysis.feature_list import list_features

        result = list_features(st, corpus, sae=sae,
                               config=FeaturesConfig(top=top, order_by=by, keep_generic=keep_generic))
    frame = result.frame
    if as_json or as_csv:
        render.emit_frame(frame, as_json=as_json, as_csv=as_csv)
        return
    # the label keeps its own column here, beside its source and score; generic flags only when kept
    render.emit_frame(frame if keep_generic else frame.drop("generic", "generic_reason"), title="features")
    if result.summary["generic_excluded"]:
        render.note(f"{result.summary['generic_excluded']} generic features left out (fire on nearly every document "
                    "or on random tokens); --keep-generic to show them")


@app.command()
def export(
    corpus: str = typer.Argument(..., help="Corpus to export."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file: .parquet, .csv or .jsonl."),
    with_metadata: bool = typer.Option(
        False, "--with-metadata",
        help="Add the document's metadata columns and its saved clusterings (columns cluster.NAME) to every row; "
             "a metadata column named like an export column (e.g. value) comes out as value_meta."),
    tokens: bool = typer.Option(
        False, "--tokens", help="Export the token-level rows instead (doc_id, token_index, token, start, end, feature, "
                                "value; needs `encode --keep-tokens`)."),
    feature: Optional[list[int]] = typer.Option(None, "--feature", "-f", help="Only this feature's token rows (repeatable; for --tokens)."),
    sae: Optional[str] = SaeOpt,
    store: str = ReadStoreOpt,
    as_json: bool = ResultJsonOpt,
):
    """Write sparse embeddings as rows of (doc_id, feature, value, active_tokens), streamed (any corpus size).

    Example: `saeembed export support --out emb.parquet --with-metadata`;
    `saeembed export support --tokens -f 12 --out tokens.csv` (token rows of feature 12)
    """
    from saeembed.errors import InputError

    if feature and not tokens:
        raise InputError("--feature filters token rows; add --tokens")
    if tokens and with_metadata:
        raise InputError("--with-metadata applies to document rows; drop it with --tokens")
    with open_store(store, read_only=True) as st:
        n = (st.export_tokens(corpus, out, sae=sae, features=feature or None) if tokens
             else st.export(corpus, out, sae=sae, with_metadata=with_metadata))
    if as_json:
        render.emit_json({"out": str(out.resolve()), "rows": n, "with_metadata": with_metadata, "tokens": tokens})
        return
    render.note(f"[green]✓[/green] wrote {n:,} rows to {render.safe(out.resolve())}")


@app.command()
def demo(
    store: str = typer.Option("demo.duckdb", "--store", "-s", help="Store file for the demo."),
    top: int = typer.Option(8, "--top", "-n", help="Features to show per corpus."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: embedded all-MiniLM-L6-v2)."),
    sae: Optional[str] = SaeWeightsOpt,
    hook: Optional[str] = typer.Option(None, "--hook", help="Hook (default: the SAE's)."),
    as_json: bool = ResultJsonOpt,
    as_csv: bool = csv_opt("Print the top features of every corpus as one CSV (a corpus column first)."),
):
    """Run the whole flow on the bundled sample corpora: ingest → encode → top features per corpus."""
    from saeembed.pipelines.demo import run_demo

    factory = None if as_json or as_csv else (lambda corpus: render.encode_progress(f"encode {corpus}"))
    result = run_demo(store, top=top, model=model, sae=sae, hook=hook, progress_factory=factory)
    if as_csv:
        import polars as pl

        render.emit_frame(pl.concat([f.select(pl.lit(c).alias("corpus"), pl.all()) for c, f in result.top_features.items()],
                                    how="diagonal_relaxed"), as_csv=True)
        return
    if as_json:
        render.emit_json({
            "store": result.store,
            "encodes": [r.to_dict() for r in result.encodes],
            "top_features": {c: f.to_dicts() for c, f in result.top_features.items()},
        })
        return
    for r in result.encodes:
        if r.docs_encoded:
            render.note(f"[green]✓[/green] {render.safe(r.corpus)}: {r.docs_encoded} documents, {r.tokens:,} tokens, "
                        f"{r.tokens_per_s:,.0f} tokens/s")
    for corpus, frame in result.top_features.items():
        render.emit_frame(render.hinted(frame),
                          title=f"{corpus}: most distinctive features (share of its documents vs the other corpora)")
    render.note(f"store: {render.safe(result.store)} · next: saeembed features --store {render.safe(result.store)} "
                "--corpus toxicity")


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

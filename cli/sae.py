"""`saeembed sae …`: train SAEs for any model and measure the quality of any loadable SAE."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import CsvOpt, ReadStoreOpt, json_opt, open_store, opt
from saeembed.config import TrainConfig
from saeembed.errors import InputError
from saeembed.config import AtlasConfig

app = typer.Typer(help="Train an SAE for a model, or measure an SAE's quality.", no_args_is_help=True)


@app.command()
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Hub id or local folder (default: embedded all-MiniLM-L6-v2)."),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="A GGUF model file: a path, or a file name inside --model (needs: pip install gguf)."),
    hook: str = typer.Option(..., "--hook", help="Where to read activations: layers.N (output of block N)."),
    data: List[str] = typer.Option(..., "--data", "-d", help="Corpus name in the store, or a file/folder of texts. Repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the SAE to (SAELens format + model card)."),
    latents: int = opt(TrainConfig, "d_sae", "--latents", help="Number of SAE latents (d_sae)."),
    k: int = opt(TrainConfig, "k", "--k"),
    architecture: str = opt(TrainConfig, "architecture", "--architecture"),
    max_tokens: Optional[int] = opt(TrainConfig, "max_tokens", "--max-tokens"),
    batch_size: int = opt(TrainConfig, "batch_size", "--batch-size"),
    lr: Optional[float] = opt(TrainConfig, "lr", "--lr"),
    seed: int = opt(TrainConfig, "seed", "--seed"),
    checkpoint_dir: Optional[Path] = opt(TrainConfig, "checkpoint_dir", "--checkpoint-dir"),
    checkpoint_every: int = opt(TrainConfig, "checkpoint_every", "--checkpoint-every", min=1),
    text_column: str = typer.Option("text", "--text-column", help="Text column of --data files."),
    device: str = typer.Option("auto", "--device"),
    fp16: bool = typer.Option(False, "--fp16", help="Save weights in fp16 (half the size)."),
    with_atlas: bool = typer.Option(False, "--atlas", help="Then name its features: build its atlas from the same --data files (see `saeembed sae atlas`)."),
    store: str = ReadStoreOpt,
    as_json: bool = json_opt("Print the model card as JSON."),
):
    """Train a TopK (or BatchTopK) SAE on a model's activations and save it in SAELens format with a model card."""
    import torch

    from saeembed.encode.gguf import with_gguf
    from saeembed.encode.models import load_model, pick_device
    from saeembed.sae.formats import save_sae
    from saeembed.sae.recipe import train_for_model

    texts, names = _texts(data, store, text_column)
    loaded = load_model(with_gguf(model, gguf), device=device)
    # A short run (--max-tokens) gets a warm-up and dead-latent window scaled to it (TrainConfig does that).
    cfg = TrainConfig(d_sae=latents, k=k, architecture=architecture, max_tokens=max_tokens, batch_size=batch_size, lr=lr, seed=seed,
                      device=str(pick_device(device)),
                      checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, checkpoint_every=checkpoint_every)
    with render.train_progress(max_tokens, enabled=not as_json) as bar:
        sae, card = train_for_model(loaded, hook, texts, cfg, data_names=names, progress=bar)
    path = save_sae(sae, out, model_card=card, dtype=torch.float16 if fp16 else torch.float32)
    built = _train_atlas(path, data, text_column, device, as_json) if with_atlas else None
    if as_json:
        render.emit_json(card | {"path": str(path)} | ({"atlas": built} if built else {}))
        return
    h = card["heldout"]
    render.note(
        f"[green]✓[/green] SAE {render.safe(sae.identity)} ({sae.d_sae} latents, {'k' if architecture == 'topk' else 'batch k'}={k}) for "
        f"{render.safe(loaded.name)} at {render.safe(card['hook'])} → {render.safe(path)}\n  held-out: explained variance {h['explained_variance']:.3f}, L0 {h['l0']:.1f}, "
        f"dead {h['dead_fraction']:.1%} ({h['n_tokens']:,} tokens)"
    )
    if built:
        render.note(f"  atlas: {built['labelled']:,} of {built['live_features']:,} live features named → "
                    f"{render.safe(built.get('installed') or built['atlas'])}")
    else:
        render.note(f"  name its features (an atlas every store using it reads): saeembed sae atlas "
                    f"{render.safe(path)} --data {render.safe(' '.join(data))}")


def _train_atlas(path, data, text_column, device, quiet) -> dict:
    """`sae train --atlas`: the atlas of the SAE just written, built beside it from the --data files."""
    from saeembed.interp.atlas import build_atlas, install_atlas
    from saeembed.sae.formats import load_sae

    files = [d for d in data if Path(d).exists()]
    if not files:
        raise InputError("--atlas builds from files or folders; the --data given are store corpora")
    sae_obj = load_sae(path)
    folder = Path(path).parent / (Path(path).name + "-atlas-build")
    cfg = AtlasConfig(text_column=text_column, device=device)
    with _atlas_progress(enabled=not quiet) as bar:
        built = build_atlas(sae_obj, files, folder, cfg, progress=bar)
    result = built.to_dict()
    placed = install_atlas(built.path, sae_obj) if built.path else None
    result["installed"] = str(placed) if placed else None
    return result


@app.command("eval")
def evaluate(
    sae: Optional[str] = typer.Argument(None, metavar="[PATH_OR_HUB_ID]", help="SAE weights to load: folder/file or hub id (default: the embedded SAE)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the SAE's own model)."),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="A GGUF model file: a path, or a file name inside --model (needs: pip install gguf)."),
    hook: Optional[str] = typer.Option(None, "--hook", help="Hook (default: the SAE's; another is refused without --force-hook)."),
    force_hook: bool = typer.Option(False, "--force-hook", help="Measure at --hook even where the SAE was trained at another hook."),
    data: Optional[List[str]] = typer.Option(None, "--data", "-d", help="Corpus name or file/folder; default: the bundled sample_data."),
    max_tokens: int = typer.Option(200_000, "--max-tokens", help="Evaluate on at most this many tokens."),
    text_column: str = typer.Option("text", "--text-column"),
    device: str = typer.Option("auto", "--device"),
    store: str = ReadStoreOpt,
    as_json: bool = json_opt("Print explained_variance, l0, dead_fraction, … as JSON."),
):
    """Quality of an SAE on a model's activations: explained variance (about the mean), L0, dead latents."""
    from saeembed.encode.gguf import with_gguf
    from saeembed.encode.models import load_model
    from saeembed.encode.pipeline import resolve_hook, resolve_sae, sae_model_name
    from saeembed.sae.doc_measures import RUN, TOP
    from saeembed.sae.recipe import evaluate_on_texts

    sae_obj = resolve_sae(sae)
    hook_name = resolve_hook(hook, sae_obj, [], force=force_hook)
    if not data:
        from saeembed.pipelines.demo import find_sample_dir

        data = [str(p) for p in sorted(find_sample_dir().glob("*.jsonl"))]
    texts, names = _texts(data, store, text_column)
    model = with_gguf(model, gguf)
    loaded = load_model(model if model is not None else sae_model_name(sae_obj), device=device)
    q = evaluate_on_texts(sae_obj.to(loaded.device), loaded, hook_name, texts, max_tokens=max_tokens)
    result = {"sae": sae_obj.identity, "model": loaded.name, "hook": hook_name, "data": names, **q.to_dict()}
    if as_json:
        render.emit_json(result)
        return
    render.note(
        f"SAE {render.safe(sae_obj.identity)} on {render.safe(loaded.name)} at {render.safe(hook_name)}, "
        f"{q.n_tokens:,} tokens of {render.safe(', '.join(names))}\n"
        f"  explained variance {q.explained_variance:.3f} (FVU {q.fvu:.3f}) · L0 {q.l0:.1f} · "
        f"dead {q.dead_fraction:.1%} ({q.dead_count} of {sae_obj.d_sae})"
    )
    d = q.documents
    if d is not None:
        render.note(
            f"  generic latents (fire in > half of the {d.documents:,} documents): {d.generic_docs:.1%} of the "
            f"{d.live:,} live ones; in > half of the {d.runs:,} runs of {RUN} tokens: {d.generic_runs:.1%}\n"
            f"  latents whose {TOP} strongest activations are mostly function tokens {d.function:.1%}, "
            f"word pieces {d.piece:.1%}, either {d.function_or_piece:.1%}")
    counts, edges = q.histogram(bins=12)
    render.note("  latent density (log10 share of tokens where a latent fires):")
    peak = max(int(counts.max()), 1)
    for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
        render.note(f"  {lo:6.2f} … {hi:6.2f} {'█' * max(0, round(40 * c / peak)):<40} {int(c)}")


@app.command("releases")
def releases(
    release: Optional[str] = typer.Argument(None, help="Show only this release's SAEs."),
    as_json: bool = json_opt("Print the catalogue as JSON rows."),
    as_csv: bool = CsvOpt,
):
    """Published SAE releases saeembed knows: use one as --sae release:RELEASE/SAE_ID (read from the local
    Hugging Face cache; fetched when absent unless HF_HUB_OFFLINE is set)."""
    from saeembed.sae.releases import releases_table

    frame = releases_table(release)
    if as_json or as_csv:
        render.emit_frame(frame, as_json=as_json, as_csv=as_csv)
        return
    cols = ["release", "sae_id", "hook", "model", "format", "d_sae", "context_size", "prepend_bos"]
    render.emit_frame(frame.select(cols), title="SAE releases (--sae release:RELEASE/SAE_ID)")


@app.command("info")
def info(
    sae: Optional[str] = typer.Argument(None, metavar="[SAE]", help="Folder/file, hub id or release:RELEASE/SAE_ID (default: the embedded SAE)."),
    as_json: bool = json_opt("Print the description as JSON."),
):
    """What an SAE is and how saeembed runs it: format, architecture, the hook it reads (and, for a
    transcoder, the hook it writes), input normalisation, BOS and context size."""
    from saeembed.sae.describe import describe_sae

    d = describe_sae(sae)
    if as_json:
        render.emit_json(d)
        return
    for key, value in d.items():
        if value is not None and not (key in ("hook_out", "d_out") and not d["transcoder"]):
            render.note(f"{key:>20}  {render.safe(value)}")


def _texts(data, store_path, text_column):
    from saeembed.sae.recipe import load_texts

    if Path(store_path).exists():
        with open_store(store_path, read_only=True) as st:
            return load_texts(list(data), store=st, text_column=text_column)
    return load_texts(list(data), text_column=text_column)


@app.command("atlas")
def atlas(
    sae: Optional[str] = typer.Argument(None, metavar="[PATH_OR_HUB_ID]", help="SAE to name: folder/file or hub id (default: the embedded SAE)."),
    data: Optional[List[str]] = typer.Option(None, "--data", "-d", help="Files or folders of texts to build from (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Build folder: work store, checkpoint and atlas.npz (default: ./atlas-<SAE hash>; with --import-labels alone, the SAE's folder). Run again to resume."),
    docs: int = opt(AtlasConfig, "docs", "--docs", min=0),
    seed: int = opt(AtlasConfig, "seed", "--seed"),
    exemplars: int = opt(AtlasConfig, "exemplars", "--exemplars", min=1),
    chunk: int = opt(AtlasConfig, "chunk", "--chunk", min=1),
    text_column: str = opt(AtlasConfig, "text_column", "--text-column"),
    device: str = opt(AtlasConfig, "device", "--device"),
    scorer: str = opt(AtlasConfig, "scorer", "--scorer"),
    import_file: Optional[Path] = typer.Option(None, "--import-labels", help="A JSON of feature → description (e.g. a Neuronpedia export) to add to the atlas; imported labels replace offline ones."),
    install: bool = typer.Option(True, "--install/--no-install", help="Copy the finished atlas beside the SAE's weights (a local folder), where stores find it."),
    as_json: bool = json_opt("Print the build summary as JSON."),
):
    """Name every live feature of an SAE: an atlas (label, score, density, exemplars, search vector per
    feature) that every store using the SAE reads. Stop it any time; the same command resumes."""
    from saeembed.encode.pipeline import resolve_sae
    from saeembed.interp.atlas import atlas_path_for, build_atlas, import_labels, install_atlas

    if not data and import_file is None:
        raise InputError("say what to build from (--data FILES) or what to import (--import-labels FILE)")
    sae_obj = resolve_sae(sae)
    folder = atlas_path_for(sae_obj, out if out is not None or not data else Path(f"atlas-{sae_obj.identity}"))
    result: dict = {"sae": sae_obj.identity}
    if data:
        cfg = AtlasConfig(docs=docs or None, seed=seed, exemplars=exemplars, chunk=chunk, text_column=text_column,
                          device=device, scorer=scorer)
        with _atlas_progress(enabled=not as_json) as bar:
            built = build_atlas(sae_obj, list(data), folder, cfg, progress=bar)
        result |= built.to_dict()
    if import_file is not None:
        path, n = import_labels(sae_obj, import_file, folder)
        result |= {"atlas": str(path), "imported": n}
    if install and result.get("atlas"):
        placed = install_atlas(Path(result["atlas"]), sae_obj)
        result["installed"] = str(placed) if placed else None
    if as_json:
        render.emit_json(result)
        return
    if data:
        render.note(f"[green]✓[/green] atlas of SAE {render.safe(sae_obj.identity)}: {result['labelled']:,} of "
                    f"{result['live_features']:,} live features named from {result['documents']:,} documents "
                    f"({result['seconds']:.0f} s) → {render.safe(result['atlas'])}")
    if import_file is not None:
        render.note(f"imported {result['imported']:,} labels into {render.safe(result['atlas'])}")
    if result.get("installed"):
        render.note(f"installed beside the SAE's weights: {render.safe(result['installed'])}")


@contextmanager
def _atlas_progress(enabled: bool = True):
    """One bar per stage of build_atlas's progress(stage, done, total): each corpus's encoding, then labels."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=render.err_console) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(render.safe(stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update

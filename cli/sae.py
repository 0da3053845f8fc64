"""`saeembed sae …`: train SAEs for any model and measure the quality of any loadable SAE."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from saeembed.cli import render
from saeembed.cli.options import ReadStoreOpt, json_opt, open_store, opt
from saeembed.config import TrainConfig

app = typer.Typer(help="Train an SAE for a model, or measure an SAE's quality.", no_args_is_help=True)


@app.command()
def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Hub id or local folder (default: embedded all-MiniLM-L6-v2)."),
    hook: str = typer.Option(..., "--hook", help="Where to read activations: layers.N (output of block N)."),
    data: List[str] = typer.Option(..., "--data", "-d", help="Corpus name in the store, or a file/folder of texts. Repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the SAE to (SAELens format + model card)."),
    latents: int = opt(TrainConfig, "d_sae", "--latents", help="Number of SAE latents (d_sae)."),
    k: int = opt(TrainConfig, "k", "--k"),
    max_tokens: Optional[int] = opt(TrainConfig, "max_tokens", "--max-tokens"),
    batch_size: int = opt(TrainConfig, "batch_size", "--batch-size"),
    lr: Optional[float] = opt(TrainConfig, "lr", "--lr"),
    seed: int = opt(TrainConfig, "seed", "--seed"),
    checkpoint_dir: Optional[Path] = opt(TrainConfig, "checkpoint_dir", "--checkpoint-dir"),
    checkpoint_every: int = opt(TrainConfig, "checkpoint_every", "--checkpoint-every", min=1),
    text_column: str = typer.Option("text", "--text-column", help="Text column of --data files."),
    device: str = typer.Option("auto", "--device"),
    fp16: bool = typer.Option(False, "--fp16", help="Save weights in fp16 (half the size)."),
    store: str = ReadStoreOpt,
    as_json: bool = json_opt("Print the model card as JSON."),
):
    """Train a TopK SAE on a model's activations and save it in SAELens format with a model card."""
    import torch

    from saeembed.encode.models import load_model, pick_device
    from saeembed.sae.formats import save_sae
    from saeembed.sae.recipe import train_for_model

    texts, names = _texts(data, store, text_column)
    loaded = load_model(model, device=device)
    # A short run (--max-tokens) gets a warm-up and dead-latent window scaled to it (TrainConfig does that).
    cfg = TrainConfig(d_sae=latents, k=k, max_tokens=max_tokens, batch_size=batch_size, lr=lr, seed=seed,
                      device=str(pick_device(device)),
                      checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None, checkpoint_every=checkpoint_every)
    with render.train_progress(max_tokens, enabled=not as_json) as bar:
        sae, card = train_for_model(loaded, hook, texts, cfg, data_names=names, progress=bar)
    path = save_sae(sae, out, model_card=card, dtype=torch.float16 if fp16 else torch.float32)
    if as_json:
        render.emit_json(card | {"path": str(path)})
        return
    h = card["heldout"]
    render.note(
        f"[green]✓[/green] SAE {render.safe(sae.identity)} ({sae.d_sae} latents, k={sae.cfg.k}) for "
        f"{render.safe(loaded.name)} at {render.safe(card['hook'])} → {render.safe(path)}\n  held-out: explained variance {h['explained_variance']:.3f}, L0 {h['l0']:.1f}, "
        f"dead {h['dead_fraction']:.1%} ({h['n_tokens']:,} tokens)"
    )


@app.command("eval")
def evaluate(
    sae: Optional[str] = typer.Argument(None, metavar="[PATH_OR_HUB_ID]", help="SAE weights to load: folder/file or hub id (default: the embedded SAE)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the SAE's own model)."),
    hook: Optional[str] = typer.Option(None, "--hook", help="Hook (default: the SAE's)."),
    data: Optional[List[str]] = typer.Option(None, "--data", "-d", help="Corpus name or file/folder; default: the bundled sample_data."),
    max_tokens: int = typer.Option(200_000, "--max-tokens", help="Evaluate on at most this many tokens."),
    text_column: str = typer.Option("text", "--text-column"),
    device: str = typer.Option("auto", "--device"),
    store: str = ReadStoreOpt,
    as_json: bool = json_opt("Print explained_variance, l0, dead_fraction, … as JSON."),
):
    """Quality of an SAE on a model's activations: explained variance (about the mean), L0, dead latents."""
    from saeembed.encode.models import load_model
    from saeembed.encode.pipeline import resolve_hook, resolve_sae, sae_model_name
    from saeembed.sae.recipe import evaluate_on_texts

    sae_obj = resolve_sae(sae)
    hook_name = resolve_hook(hook, sae_obj, [])
    if not data:
        from saeembed.pipelines.demo import find_sample_dir

        data = [str(p) for p in sorted(find_sample_dir().glob("*.jsonl"))]
    texts, names = _texts(data, store, text_column)
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
    counts, edges = q.histogram(bins=12)
    render.note("  latent density (log10 share of tokens where a latent fires):")
    peak = max(int(counts.max()), 1)
    for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
        render.note(f"  {lo:6.2f} … {hi:6.2f} {'█' * max(0, round(40 * c / peak)):<40} {int(c)}")


def _texts(data, store_path, text_column):
    from saeembed.sae.recipe import load_texts

    if Path(store_path).exists():
        with open_store(store_path, read_only=True) as st:
            return load_texts(list(data), store=st, text_column=text_column)
    return load_texts(list(data), text_column=text_column)

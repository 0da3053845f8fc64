"""Train or evaluate an SAE on a model's activations over some texts (what `saeembed sae train/eval` run).

Texts come from corpora in a store or from files; activations stream through the same tokenization and
special-token rules as encoding, so the SAE sees exactly the vectors it will later encode.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict
from typing import Callable

from saeembed.encode.activations import iter_activations, iter_token_batches
from saeembed.encode.capture import hook_width
from saeembed.encode.tokens import adds_bos
from saeembed.encode.models import LoadedModel
from saeembed.errors import InputError
from saeembed.hookpoints import parse_hook
from saeembed.sae.doc_measures import DocMeasures
from saeembed.sae.metrics import SAEQuality, evaluate_sae
from saeembed.sae.model import SAE
from saeembed.sae.train import TrainConfig, train_sae


def load_texts(sources: list[str], *, store=None, text_column: str = "text") -> tuple[list[str], list[str]]:
    """Texts from each source: a corpus of `store` when one has that name, else a file or folder."""
    from pathlib import Path

    from saeembed.documents import read_documents

    texts: list[str] = []
    names: list[str] = []
    for source in sources:
        if store is not None and store.has_corpus(source):
            texts += store.documents(source, metadata=False)["text"].to_list()
            names.append(f"corpus:{source}")
        elif Path(source).exists():
            texts += read_documents(source, text_column=text_column).frame["text"].to_list()
            names.append(str(Path(source).name))
        else:
            raise InputError(f"--data {source!r} is neither a corpus in the store nor a file or folder")
    if not texts:
        raise InputError("no texts to train on")
    return texts, names


def is_heldout(text: str, every: int = 20) -> bool:
    """A stable 1-in-`every` split by content hash, so re-runs and resumes hold out the same texts."""
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % every == 0


def train_for_model(
    loaded: LoadedModel,
    hook: str,
    texts: list[str],
    cfg: TrainConfig,
    *,
    data_names: list[str] | None = None,
    eval_tokens: int = 200_000,
    progress: Callable[[dict], None] | None = None,
) -> tuple[SAE, dict]:
    """Train a TopK or BatchTopK SAE on `texts` (minus a hashed 1-in-20 held-out split) and measure it on the held-out part.

    Returns the SAE (model and hook recorded in its config) and a model card dict.
    """
    hook = parse_hook(hook).name
    train_texts = [t for t in texts if not is_heldout(t)]
    eval_texts = [t for t in texts if is_heldout(t)] or texts[: max(1, len(texts) // 20)]
    stream = iter_activations(loaded, hook, train_texts, max_tokens=cfg.max_tokens)
    sae, stats = train_sae(stream, hook_width(loaded, hook), cfg, progress=progress)
    sae.cfg.model = loaded.name
    sae.cfg.hook = hook
    # the training setup, so that encoders (and SAELens) feed it the same: BOS as the tokenizer does, windows
    sae.cfg.prepend_bos = adds_bos(loaded.tokenizer)
    sae.cfg.context_size = loaded.max_window
    quality = evaluate_on_texts(sae, loaded, hook, eval_texts, max_tokens=eval_tokens)
    card = {
        "model": loaded.name,
        "hook": hook,
        "architecture": cfg.architecture,  # a BatchTopK SAE is saved (and read) as JumpReLU
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "k": cfg.k,
        "data": data_names or [],
        "train_documents": len(train_texts),
        "tokens_seen": stats.get("tokens_seen"),
        "train_stats": {k: v for k, v in stats.items() if k != "config"},
        "train_config": asdict(cfg),
        "heldout": {"documents": len(eval_texts), "split": "sha1(text) % 20 == 0", **quality.to_dict()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    sae.cfg.extra["model_card"] = card
    return sae, card


def evaluate_on_texts(sae: SAE, loaded: LoadedModel, hook: str, texts: list[str], *, max_tokens: int | None = 200_000) -> SAEQuality:
    from saeembed.encode.pipeline import check_width, encode_window
    from saeembed.encode.tokens import bos_rule

    check_width(sae, loaded, hook)
    # measured as the SAE was trained and as encode feeds it: its BOS rule and context size
    bos = bos_rule(loaded.tokenizer, sae.cfg.prepend_bos)
    window = encode_window(None, loaded.max_window, sae.cfg.context_size, bos.extra_tokens, [])
    measures = DocMeasures(sae.d_sae)

    def stream():
        for b in iter_token_batches(loaded, hook, texts, max_tokens=max_tokens, window=window, bos=bos):
            measures.expect(b.doc, b.pos, b.kind, b.chunk)
            yield b.x

    quality = evaluate_sae(sae, stream(), observe=measures.observe)
    quality.documents = measures.result()
    return quality

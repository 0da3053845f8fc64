"""Encode a stored corpus into SAE embeddings, streaming batches into the store.

documents (not yet encoded) -> windows -> model forward stopped at the hook -> SAE per content token
-> max-pool per document -> one transaction per chunk of documents. Re-running skips what is stored,
so an interrupted encode resumes and loses at most the chunk in flight.

torch and the model code are imported only once the cheap arguments (corpus, backend, window, hook,
prompt column) are checked, so a typo is said at once, not after seconds of loading.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from saeembed.config import EncodeConfig
from saeembed.encode.probe import PROBE, run_random_probe
from saeembed.errors import InputError, SAEError
from saeembed.hookpoints import parse_hook
from saeembed.store import Store

if TYPE_CHECKING:
    from saeembed.encode.models import LoadedModel
    from saeembed.sae.model import SAE

# Names once imported here at the top; still importable from this module, loaded on first use.
_LAZY = {"ActivationCapture": "saeembed.encode.capture", "chat_prompts": "saeembed.encode.chunk",
         "encode_chunk": "saeembed.encode.chunk", "LoadedModel": "saeembed.encode.models",
         "load_model": "saeembed.encode.models", "SAE": "saeembed.sae.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Random-token texts encoded once per SAE to find features that fire regardless of content.
RANDOM_PROBE_DOCS = 128


@dataclass
class EncodeResult:
    corpus: str
    sae: str
    model: str
    hook: str
    docs_total: int
    docs_encoded: int  # by this run
    docs_already: int  # stored before this run
    tokens: int  # content tokens pooled by this run
    split_docs: int  # documents longer than one window (pooled across windows, not truncated)
    activation_rows: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        return self.docs_encoded / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"docs_per_s": self.docs_per_s, "tokens_per_s": self.tokens_per_s}


# progress(docs_done_this_run, tokens_done_this_run, docs_to_do)
ProgressFn = Callable[[int, int, int], None]


def encode_corpus(
    store: Store,
    corpus: str,
    *,
    model: str | LoadedModel | None = None,
    sae: str | SAE | None = None,
    hook: str | None = None,
    config: EncodeConfig | None = None,
    progress: ProgressFn | None = None,
) -> EncodeResult:
    """Encode every document of `corpus` not yet stored for this SAE. Returns what was done.

    model: hub id, local folder, or a loaded model; None = the SAE's own model, else the embedded default.
    sae: path, hub id, or an SAE; None = the embedded default SAE.
    hook: layers.N / blocks.N.hook_resid_post …; None = the hook the SAE was trained on.
    """
    cfg = config or EncodeConfig()
    info = check_arguments(store, corpus, hook, cfg)  # before anything loads: a typo is said at once
    if cfg.backend == "ray":
        from saeembed.encode.ray_backend import _ray

        _ray()  # a missing extra is said before anything loads or is written
    from saeembed.encode.capture import ActivationCapture
    from saeembed.encode.chunk import chat_prompts, encode_chunk
    from saeembed.encode.models import LoadedModel, load_model

    sae_obj = resolve_sae(sae)
    warnings: list[str] = []
    hook_name = resolve_hook(hook, sae_obj, warnings)
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model if model is not None else sae_model_name(sae_obj),
        # with Ray the driver's copy only checks widths and windows; the actors hold the working ones
        device="cpu" if cfg.backend == "ray" else cfg.device, trust_remote_code=cfg.trust_remote_code
    )
    check_width(sae_obj, loaded)
    if sae_obj.cfg.model and sae_model_name(sae_obj) != loaded.name:
        warnings.append(f"the SAE says it was trained on {sae_obj.cfg.model}, encoding with {loaded.name}")
    window = min(cfg.window or loaded.max_window, loaded.max_window)
    if window < 4:
        raise InputError(f"--window {window} is too small")  # the model's own limit, known only once loaded
    sae_obj = sae_obj.to(loaded.device).eval()
    sae_info = store.register_sae(sae_obj)
    if cfg.replace:
        store.drop_encoding(info, sae_info)
    already = store.begin_encoding(info, sae_info, loaded.name, hook_name, cfg.pooling_params(window))
    to_do = info.n_docs - already
    started = time.perf_counter()
    done_docs = done_tokens = split_docs = rows = 0
    sharded = cfg.use_shards(to_do)
    if progress:
        progress(0, 0, to_do)
    if cfg.backend == "ray":
        from saeembed.encode.ray_backend import encode_on_ray

        stats = encode_on_ray(store, info, sae_info, sae_obj, loaded.name, hook_name, cfg, window, to_do, progress)
        if not store.has_probe(sae_info, PROBE):
            with ActivationCapture(loaded, hook_name) as capture:
                _random_probe(store, sae_info, loaded, capture, sae_obj, cfg, window, hook_name)
        return _finish(store, info, sae_info, loaded, hook_name, cfg, already, stats, started, warnings)
    capture = ActivationCapture(loaded, hook_name)
    pending: list[tuple[pl.DataFrame, pl.DataFrame]] = []  # chunks not yet written (sharding only)

    def flush() -> None:
        if pending:
            store.write_encoded(info, sae_info, pl.concat([a for a, _ in pending]),
                                pl.concat([d for _, d in pending]), shard=True)
            pending.clear()

    try:
        for doc_idx, texts in store.iter_unencoded(info, sae_info.sae_key, batch_size=cfg.chunk_docs):
            prompts = chat_prompts(store, info, cfg.prompt_column, doc_idx) if cfg.chat_template else None
            acts, docs = encode_chunk(loaded, capture, sae_obj, texts, cfg, window, prompts)
            # chunk positions -> the corpus's doc_idx
            global_idx = np.asarray(doc_idx, dtype=np.int32)
            acts = acts.with_columns(pl.Series("doc_idx", global_idx[acts["doc_idx"].to_numpy()]))
            docs = docs.with_columns(pl.Series("doc_idx", global_idx))
            if sharded:  # one shard per shard_docs documents, not per chunk: few, large files
                pending.append((acts, docs))
                if sum(d.height for _, d in pending) >= cfg.shard_docs:
                    flush()
            else:
                store.write_encoded(info, sae_info, acts, docs)
            done_docs += len(doc_idx)
            done_tokens += int(docs["n_tokens"].sum())
            split_docs += int((docs["n_windows"] > 1).sum())
            rows += acts.height
            if progress:
                progress(done_docs, done_tokens, to_do)
        flush()
        if not store.has_probe(sae_info, PROBE):
            _random_probe(store, sae_info, loaded, capture, sae_obj, cfg, window, hook_name)
    except KeyboardInterrupt:
        flush()  # keep the finished chunks of an interrupted sharded encode
        raise
    finally:
        capture.close()
    return _finish(store, info, sae_info, loaded, hook_name, cfg, already, (done_docs, done_tokens, split_docs, rows),
                   started, warnings)


def check_arguments(store: Store, corpus: str, hook: str | None, cfg: EncodeConfig):
    """The arguments that can be checked without loading anything: the corpus (its CorpusInfo is
    returned), the backend, the window, the hook's spelling and the prompt column."""
    info = store.corpus(corpus)
    if cfg.backend not in ("local", "ray"):
        raise InputError(f"unknown backend {cfg.backend!r}; use local or ray")
    if cfg.window is not None and cfg.window < 4:
        raise InputError(f"--window {cfg.window} is too small")
    if hook is not None:
        parse_hook(hook)
    if cfg.chat_template and cfg.prompt_column and cfg.prompt_column not in info.metadata_columns:
        raise InputError(f"--prompt-column {cfg.prompt_column!r} is not a column of corpus {info.name!r} "
                         f"(columns: {', '.join(info.metadata_columns) or 'none'})")
    return info


def _random_probe(store, sae_info, loaded, capture, sae_obj, cfg, window, hook_name) -> None:
    """Once per SAE: which features fire on random-token text (flags generic features in analyses)."""
    stats = run_random_probe(loaded, capture, sae_obj, cfg, window, n_docs=RANDOM_PROBE_DOCS)
    store.set_probe(sae_info, PROBE, stats, RANDOM_PROBE_DOCS, {"model": loaded.name, "hook": hook_name})


def _finish(store, info, sae_info, loaded, hook_name, cfg, already, stats, started, warnings) -> EncodeResult:
    done_docs, done_tokens, split_docs, rows = stats
    if done_docs or store.encoding(info, sae_info)["status"] != "complete":
        store.finish_encoding(info, sae_info, exemplars_per_feature=cfg.exemplars_per_feature)
    return EncodeResult(
        corpus=info.name,
        sae=sae_info.sae_hash,
        model=loaded.name,
        hook=hook_name,
        docs_total=info.n_docs,
        docs_encoded=done_docs,
        docs_already=already,
        tokens=done_tokens,
        split_docs=split_docs,
        activation_rows=rows,
        seconds=time.perf_counter() - started,
        warnings=warnings,
    )


def check_width(sae: SAE, loaded: LoadedModel) -> None:
    """A clear error, before any work, when the SAE was trained on a model of another width."""
    if sae.d_in != loaded.hidden_size:
        raise SAEError(
            f"SAE width {sae.d_in} does not match {loaded.name} (hidden size {loaded.hidden_size}); "
            "this SAE was trained on another model"
        )


def resolve_sae(sae: str | SAE | None) -> SAE:
    """An SAE object from an SAE, a path or hub id, or None (the embedded default)."""
    from saeembed.sae.model import SAE

    if isinstance(sae, SAE):
        return sae
    if sae is None:
        from saeembed.sae.default import load_default_sae

        return load_default_sae()
    from saeembed.sae.formats import load_sae

    return load_sae(sae)


def sae_model_name(sae: SAE) -> str | None:
    """The canonical name of the model the SAE says it was trained on (None when it does not say)."""
    from saeembed.encode.models import resolve_model

    return resolve_model(sae.cfg.model)[1] if sae.cfg.model else None


def resolve_hook(hook: str | None, sae: SAE, warnings: list[str]) -> str:
    """The hook to encode at: the one asked for (warning when the SAE names another), else the SAE's."""
    if hook is None:
        if not sae.cfg.hook:
            raise SAEError("the SAE does not say which hook it was trained on; pass --hook layers.N")
        return parse_hook(sae.cfg.hook).name
    name = parse_hook(hook).name
    if sae.cfg.hook and parse_hook(sae.cfg.hook).name != name:
        warnings.append(f"the SAE was trained on {sae.cfg.hook}, encoding at {name} as asked")
    return name

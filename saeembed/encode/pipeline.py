"""Encode a stored corpus into SAE embeddings, streaming batches into the store.

documents (not yet encoded) -> windows -> model forward stopped at the hook -> SAE per content token
-> max-pool per document -> one transaction per chunk of documents. Re-running skips what is stored,
so an interrupted encode resumes and loses at most the chunk in flight.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import polars as pl
import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import LoadedModel, load_model
from saeembed.encode.pooling import TokenLatents, pool_max
from saeembed.encode.probe import PROBE, run_random_probe
from saeembed.encode.tokens import batches, pad_token_id, tokenize
from saeembed.errors import InputError, SAEError
from saeembed.hookpoints import parse_hook
from saeembed.sae.model import SAE
from saeembed.store import CorpusInfo, Store


# Random-token texts encoded once per SAE to find features that fire regardless of content.
RANDOM_PROBE_DOCS = 128

SHARD_AUTO_DOCS = 100_000  # encodes at least this large write Parquet shards by default


@dataclass
class EncodeConfig:
    """How documents are encoded. The CLI reads these defaults; it does not redefine them."""

    batch_size: int = 64  # windows per forward pass at most
    max_batch_tokens: int = 16384  # padded tokens per forward pass at most
    chunk_docs: int = 256  # documents per write transaction (what a crash can lose)
    window: int | None = None  # tokens per window; None = the model's limit (at most 512)
    exclude_special: bool = True  # leave BOS/CLS/SEP/pad out of pooling
    chat_template: bool = False  # wrap each document as an assistant turn; template tokens excluded
    prompt_column: str | None = None  # with chat_template: metadata column holding the user turn
    exemplars_per_feature: int = 20
    device: str | None = "auto"
    replace: bool = False  # drop a stored encoding of this corpus with this SAE first
    trust_remote_code: bool = False
    # --- scale (issue 8) ---
    shards: str = "auto"  # write activations as Parquet shards: "on", "off", or "auto" (>= SHARD_AUTO_DOCS to do)
    shard_docs: int = 16384  # documents per shard (what a crash can lose when sharding)
    backend: str = "local"  # "local" or "ray" (saeembed[ray]: an actor pool, one model+SAE per actor)
    ray_address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    workers: int = 2  # Ray actors
    gpus_per_worker: float = 0.0  # GPUs each Ray actor reserves (0: CPU)

    def use_shards(self, to_do: int) -> bool:
        if self.shards not in ("on", "off", "auto"):
            raise InputError(f"--shards must be on, off or auto, not {self.shards!r}")
        return self.backend == "ray" or self.shards == "on" or (self.shards == "auto" and to_do >= SHARD_AUTO_DOCS)

    def pooling_params(self, window: int) -> dict:
        return {
            "pooling": "max",
            "exclude_special": self.exclude_special,
            "chat_template": self.chat_template,
            "window": window,
            "prompt_column": self.prompt_column,
        }


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
    info = store.corpus(corpus)  # unknown corpus -> clear error before any loading
    if cfg.backend == "ray":
        from saeembed.encode.ray_backend import _ray

        _ray()  # a missing extra is said before anything loads or is written
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
        raise InputError(f"--window {window} is too small")
    sae_obj = sae_obj.to(loaded.device).eval()
    sae_info = store.register_sae(sae_obj)
    if cfg.replace:
        store.drop_encoding(info, sae_info)
    already = store.begin_encoding(info, sae_info, loaded.name, hook_name, cfg.pooling_params(window))
    to_do = info.n_docs - already
    started = time.perf_counter()
    done_docs = done_tokens = split_docs = rows = 0
    if cfg.backend not in ("local", "ray"):
        raise InputError(f"unknown backend {cfg.backend!r}; use local or ray")
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
            prompts = _prompts(store, info, cfg.prompt_column, doc_idx) if cfg.chat_template else None
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


def encode_chunk(loaded: LoadedModel, capture: ActivationCapture, sae: SAE, texts: list[str], cfg: EncodeConfig,
                 window: int, prompts: list[str | None] | None = None):
    """Encode a list of texts. Returns (sparse rows with doc_idx = position in `texts`, per-doc stats)."""
    windows = tokenize(
        loaded.tokenizer, texts, window=window, exclude_special=cfg.exclude_special,
        chat_template=cfg.chat_template, prompts=prompts,
    )
    n_windows = np.bincount([w.doc for w in windows], minlength=len(texts)).astype(np.int32)
    n_tokens = np.zeros(len(texts), dtype=np.int64)
    latents = TokenLatents()
    pad = pad_token_id(loaded.tokenizer)
    for batch in batches(windows, pad_id=pad, max_windows=cfg.batch_size, max_tokens=cfg.max_batch_tokens):
        hidden = capture(batch.input_ids, batch.attention_mask)
        content = batch.content.to(hidden.device)
        x = hidden[content]  # [n_content_tokens, d]
        if x.shape[0] == 0:
            continue
        rows_in_batch = content.nonzero(as_tuple=True)
        docs_of_rows = torch.tensor([w.doc for w in batch.windows], dtype=torch.long)[rows_in_batch[0].cpu()]
        offsets = torch.from_numpy(np.stack([_padded_offsets(w, content.shape[1]) for w in batch.windows]))
        spans = offsets[rows_in_batch[0].cpu(), rows_in_batch[1].cpu()]
        np.add.at(n_tokens, docs_of_rows.numpy(), 1)
        with torch.inference_mode():
            r, f, v = sae.encode_coo(x)
        latents.add(docs_of_rows, spans, r.cpu(), f.cpu(), v.cpu())
    docs = pl.DataFrame({"doc_idx": np.arange(len(texts), dtype=np.int32), "n_tokens": n_tokens.astype(np.int32),
                         "n_windows": n_windows})
    return pool_max(latents, sae.d_sae), docs


def _padded_offsets(w, T: int) -> np.ndarray:
    out = np.zeros((T, 2), dtype=np.int64)
    out[: len(w.offsets)] = w.offsets
    return out


def check_width(sae: SAE, loaded: LoadedModel) -> None:
    """A clear error, before any work, when the SAE was trained on a model of another width."""
    if sae.d_in != loaded.hidden_size:
        raise SAEError(
            f"SAE width {sae.d_in} does not match {loaded.name} (hidden size {loaded.hidden_size}); "
            "this SAE was trained on another model"
        )


def resolve_sae(sae: str | SAE | None) -> SAE:
    """An SAE object from an SAE, a path or hub id, or None (the embedded default)."""
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


def _prompts(store: Store, info: CorpusInfo, column: str | None, doc_idx: list[int]) -> list[str | None] | None:
    if column is None:
        return None
    if column not in info.metadata_columns:
        raise InputError(
            f"--prompt-column {column!r} is not a column of corpus {info.name!r} "
            f"(columns: {', '.join(info.metadata_columns) or 'none'})"
        )
    frame = store.documents(info, text=False, doc_idx=doc_idx)
    lookup = dict(zip(frame["doc_idx"].to_list(), frame[column].cast(str).to_list()))
    return [lookup.get(i) for i in doc_idx]

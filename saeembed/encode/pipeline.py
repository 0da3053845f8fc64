"""Encode a stored corpus into SAE embeddings, streaming batches into the store.

documents (not yet encoded) -> windows -> model forward stopped at the hook -> SAE per content token
-> max-pool per document -> one transaction per chunk of documents. Re-running skips what is stored,
so an interrupted encode resumes and loses at most the chunk in flight.

torch and the model code are imported only once the cheap arguments (corpus, backend, window, hook,
prompt column) are checked, so a typo is said at once, not after seconds of loading.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from saeembed.config import EncodeConfig
from saeembed.encode.probe import PROBE, run_random_probe
from saeembed.errors import InputError, SAEError, StoreError
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
    token_rows: int = 0  # token-level rows written by this run (--keep-tokens)
    skip_tokens: str = "none"  # "function": stop-word and symbol-only tokens left out of the max-pool
    skip_tokens_from: str = "default"  # option (--skip-tokens), sae (its recommendation), stored (a resume) or default

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
    force_hook: bool = False,
) -> EncodeResult:
    """Encode every document of `corpus` not yet stored for this SAE. Returns what was done.

    model: hub id, local folder, or a loaded model; None = the SAE's own model, else the embedded default.
    sae: path, hub id, or an SAE; None = the embedded default SAE.
    hook: layers.N / blocks.N.hook_resid_post …; None = the hook the SAE was trained on. A hook other
    than the SAE's is refused unless `force_hook`.
    The SAE's training setup is honoured: its BOS token (`prepend_bos`) and context size cap the windows,
    and its pooling recommendation (skip_tokens) applies unless config.skip_tokens says otherwise.
    """
    cfg = config or EncodeConfig()
    info = check_arguments(store, corpus, hook, cfg)  # before anything loads: a typo is said at once
    if cfg.backend == "ray":
        from saeembed.encode.ray_backend import _ray

        _ray()  # a missing extra is said before anything loads or is written
    from saeembed.encode.capture import ActivationCapture
    from saeembed.encode.chunk import chat_inputs, encode_chunk
    from saeembed.encode.models import LoadedModel, load_model
    from saeembed.encode.token_kinds import resolve_skip
    from saeembed.encode.token_rows import TokenRows, save_token_rows
    from saeembed.encode.tokens import bos_rule

    sae_obj = resolve_sae(sae)
    warnings: list[str] = []
    hook_name = resolve_hook(hook, sae_obj, warnings, force=force_hook)
    asked_skip = cfg.skip_tokens
    skip, skip_from = resolve_skip(asked_skip, sae_obj.cfg, warnings)
    cfg = replace(cfg, skip_tokens=skip)  # what every chunk (and Ray actor) pools by
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model if model is not None else sae_model_name(sae_obj),
        # with Ray the driver's copy only checks widths and windows; the actors hold the working ones
        device="cpu" if cfg.backend == "ray" else cfg.device, trust_remote_code=cfg.trust_remote_code
    )
    check_width(sae_obj, loaded, hook_name)
    if cfg.messages_column:  # before the encoding is begun in the store
        from saeembed.encode.chat import check_template

        check_template(loaded.tokenizer)
    if sae_obj.cfg.model and sae_model_name(sae_obj) != loaded.name:
        warnings.append(f"the SAE says it was trained on {sae_obj.cfg.model}, encoding with {loaded.name}")
    bos = bos_rule(loaded.tokenizer, sae_obj.cfg.prepend_bos)
    window = encode_window(cfg.window, loaded.max_window, sae_obj.cfg.context_size, bos.extra_tokens, warnings)
    if window < 4:
        raise InputError(f"--window {window} is too small")  # the model's own limit, known only once loaded
    sae_obj = sae_obj.to(loaded.device).eval()
    sae_info = store.register_sae(sae_obj)
    if cfg.replace:
        store.drop_encoding(info, sae_info)
    elif asked_skip is None:
        # Unasked, a resume pools as its stored rows did (an SAE's recommendation may be newer than them)
        stored = _stored_skip(store, info, sae_info)
        if stored is not None and stored != skip:
            skip, skip_from = stored, "stored"
            cfg = replace(cfg, skip_tokens=skip)
    already = store.begin_encoding(info, sae_info, loaded.name, hook_name, cfg.pooling_params(window))
    store.begin_token_rows(info, sae_info, cfg.keep_tokens, already)
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
            with ActivationCapture(loaded, hook_name, bos=bos) as capture:
                _random_probe(store, sae_info, loaded, capture, sae_obj, cfg, window, hook_name)
        return _finish(store, info, sae_info, loaded, hook_name, cfg, already, stats, started, warnings,
                       (skip, skip_from))
    capture = ActivationCapture(loaded, hook_name, bos=bos)
    pending: list[tuple] = []  # chunks not yet written (sharding only): acts, docs, their token shard files
    token_rows = 0

    def flush() -> None:
        if pending:  # token shards are on disk already (flat memory); registered with their documents
            store.write_encoded_tokens(info, sae_info, pl.concat([p[0] for p in pending]),
                                       pl.concat([p[1] for p in pending]), [f for p in pending for f in p[2]],
                                       shard=True)
            pending.clear()

    try:
        for doc_idx, texts in store.iter_unencoded(info, sae_info.sae_key, batch_size=cfg.chunk_docs):
            prompts = chat_inputs(store, info, cfg, doc_idx)
            tok = TokenRows() if cfg.keep_tokens else None
            acts, docs = encode_chunk(loaded, capture, sae_obj, texts, cfg, window, prompts, tokens=tok)
            # chunk positions -> the corpus's doc_idx
            global_idx = np.asarray(doc_idx, dtype=np.int32)
            acts = acts.with_columns(pl.Series("doc_idx", global_idx[acts["doc_idx"].to_numpy()]))
            docs = docs.with_columns(pl.Series("doc_idx", global_idx))
            files = save_token_rows(store, info, sae_info, tok, global_idx)
            token_rows += sum(f[1] for f in files)
            if sharded:  # one shard per shard_docs documents, not per chunk: few, large files
                pending.append((acts, docs, files))
                if sum(p[1].height for p in pending) >= cfg.shard_docs:
                    flush()
            else:
                store.write_encoded_tokens(info, sae_info, acts, docs, files)
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
    return _finish(store, info, sae_info, loaded, hook_name, cfg, already,
                   (done_docs, done_tokens, split_docs, rows, token_rows), started, warnings, (skip, skip_from))


def _stored_skip(store: Store, info, sae_info) -> str | None:
    """The skip_tokens of this corpus's stored encoding with this SAE ("none" when it predates the
    option), None when there is no such encoding."""
    try:
        return store.encoding(info, sae_info)["params"].get("skip_tokens") or "none"
    except StoreError:
        return None


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
    if cfg.skip_tokens is not None:
        from saeembed.encode.token_kinds import check_skip

        check_skip(cfg.skip_tokens)
    if cfg.messages_column:
        from saeembed.encode.chat import check_messages

        check_messages(store, info, cfg)
    elif cfg.chat_template and cfg.prompt_column and cfg.prompt_column not in info.metadata_columns:
        raise InputError(f"--prompt-column {cfg.prompt_column!r} is not a column of corpus {info.name!r} "
                         f"(columns: {', '.join(info.metadata_columns) or 'none'})")
    return info


def _random_probe(store, sae_info, loaded, capture, sae_obj, cfg, window, hook_name) -> None:
    """Once per SAE: which features fire on random-token text (flags generic features in analyses)."""
    # kept once per SAE, whichever encoding runs first: so always over every token
    stats = run_random_probe(loaded, capture, sae_obj, replace(cfg, skip_tokens="none"), window, n_docs=RANDOM_PROBE_DOCS)
    store.set_probe(sae_info, PROBE, stats, RANDOM_PROBE_DOCS, {"model": loaded.name, "hook": hook_name})


def _finish(store, info, sae_info, loaded, hook_name, cfg, already, stats, started, warnings, skip) -> EncodeResult:
    """stats: (docs, tokens, split_docs, rows, token_rows) this run did; skip: (skip_tokens, where it came from)."""
    done_docs, done_tokens, split_docs, rows, token_rows = stats
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
        token_rows=token_rows,
        skip_tokens=skip[0],
        skip_tokens_from=skip[1],
    )


def encode_window(asked: int | None, model_max: int, context_size: int | None, extra_tokens: int,
                  warnings: list[str]) -> int:
    """Tokens per tokenized window: the asked or model's window, no longer than the SAE's training
    context, less the tokens the capture adds in front (a BOS)."""
    window = min(asked or model_max, model_max)
    if context_size and context_size < window:
        if asked:
            warnings.append(f"the SAE was trained on contexts of {context_size} tokens; windows are "
                            f"{context_size} tokens, not {asked}")
        window = context_size
    return window - extra_tokens


def check_width(sae: SAE, loaded: LoadedModel, hook: str | None = None) -> None:
    """A clear error, before any work, when the SAE was trained on a model of another width (or when
    the hook cannot be captured on this model)."""
    from saeembed.encode.capture import hook_width

    width = hook_width(loaded, hook) if hook else loaded.hidden_size
    if sae.d_in != width:
        what = "hidden size" if width == loaded.hidden_size else f"width at {hook}"
        raise SAEError(
            f"SAE width {sae.d_in} does not match {loaded.name} ({what} {width}); "
            "this SAE was trained on another model"
        )


def resolve_sae(sae: str | SAE | None) -> SAE:
    """An SAE object from an SAE, a path or hub id, a shipped SAE's name ("smollm2"), or None (the
    embedded default)."""
    from saeembed.sae.model import SAE

    if isinstance(sae, SAE):
        return sae
    if sae is None:
        from saeembed.sae.default import load_default_sae

        return load_default_sae()
    from saeembed.sae.default import shipped_sae
    from saeembed.sae.formats import load_sae

    return load_sae(shipped_sae(sae) or sae)


def sae_model_name(sae: SAE) -> str | None:
    """The canonical name of the model the SAE says it was trained on (None when it does not say)."""
    from saeembed.encode.models import resolve_model

    return resolve_model(sae.cfg.model)[1] if sae.cfg.model else None


def resolve_hook(hook: str | None, sae: SAE, warnings: list[str], *, force: bool = False) -> str:
    """The hook to encode at: the SAE's own, or the one asked for when it is the same hook (in any
    spelling) or `force` is set (with a warning). Never another hook silently."""
    from saeembed.hookpoints import SUPPORTED, try_parse_hook

    own = try_parse_hook(sae.cfg.hook)
    if sae.cfg.hook and own is None and not (hook is not None and force):
        raise SAEError(f"the SAE was trained at hook {sae.cfg.hook!r}, which saeembed cannot capture; "
                       f"it captures {SUPPORTED}")
    if hook is None:
        if own is None:
            raise SAEError("the SAE does not say which hook it was trained on; pass --hook layers.N")
        return own.name
    name = parse_hook(hook).name
    if sae.cfg.hook and (own is None or own.name != name):
        if not force:
            raise SAEError(f"--hook {hook} is not the hook the SAE was trained on ({sae.cfg.hook}); "
                           "leave --hook out to use the SAE's, or add --force-hook to encode there anyway")
        warnings.append(f"the SAE was trained on {sae.cfg.hook}, encoding at {name} as forced")
    return name

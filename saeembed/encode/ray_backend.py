"""Distributed encode on Ray (`pip install saeembed[ray]`, `saeembed encode … --backend ray`).

Ray Data streams the documents not yet encoded through an actor pool: each actor loads the model and
the SAE once, encodes batches of `chunk_docs` documents exactly as the local pipeline does
(`encode_chunk`), and writes each batch's sparse rows as a Parquet shard straight into the store's
shard folder, in parallel (with --keep-tokens its token rows too, as the same token shard a local encode
writes). Only per-document counts and the shards' paths travel back; the driver registers each shard
together with its documents' `encoded_docs` rows in one transaction, so a run
killed at any moment resumes like a local one (files written but never registered are swept by
`saeembed compact`).

On a multi-node cluster the store's shard folder (`<store>.shards/`) must be on a filesystem every
node mounts at the same path (NFS, Lustre, …); the driver checks each file before registering it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from saeembed.errors import InputError, StoreError


class _EncodeActor:
    """One model + SAE per actor; called with a batch of (doc_idx, text), returns per-document stats."""

    def __init__(self, model_name, sae, hook, cfg, window, folder, sae_hash, corpus, prompts):
        import torch

        from saeembed.encode.capture import ActivationCapture
        from saeembed.encode.models import load_model
        from saeembed.encode.tokens import bos_rule

        cpus = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if cpus > 0:
            torch.set_num_threads(cpus)
        device = "cuda" if cfg.gpus_per_worker and torch.cuda.is_available() else "cpu"
        self.loaded = load_model(model_name, device=device, trust_remote_code=cfg.trust_remote_code)
        self.sae = sae.to(self.loaded.device).eval()
        self.capture = ActivationCapture(self.loaded, hook, bos=bos_rule(self.loaded.tokenizer, sae.cfg.prepend_bos))
        self.cfg, self.window, self.folder = cfg, window, Path(folder)
        self.sae_hash, self.corpus, self.prompts = sae_hash, corpus, prompts

    def __call__(self, batch: pa.Table) -> pa.Table:
        from saeembed.encode.chunk import encode_chunk
        from saeembed.encode.token_rows import TokenRows
        from saeembed.store.shards import write_shard

        doc_idx = np.asarray(batch.column("doc_idx").to_numpy(), dtype=np.int32)
        texts = batch.column("text").to_pylist()
        prompts = [self.prompts.get(int(i)) for i in doc_idx] if self.prompts is not None else None
        tok = TokenRows() if self.cfg.keep_tokens else None
        acts, docs = encode_chunk(self.loaded, self.capture, self.sae, texts, self.cfg, self.window, prompts,
                                  tokens=tok)
        acts = acts.with_columns(pl.Series("doc_idx", doc_idx[acts["doc_idx"].to_numpy()]))
        path, n_rows = write_shard(self.folder, acts, sae_hash=self.sae_hash, corpus=self.corpus)
        token_path, token_rows = self._token_shard(tok, doc_idx)
        n = len(doc_idx)
        return pa.table({
            "doc_idx": pa.array(doc_idx, pa.int32()),
            "n_tokens": pa.array(docs["n_tokens"].to_numpy(), pa.int32()),
            "n_windows": pa.array(docs["n_windows"].to_numpy(), pa.int32()),
            "shard": pa.array([str(path)] * n, pa.string()),
            "shard_rows": pa.array([n_rows] * n, pa.int64()),
            "token_shard": pa.array([token_path] * n, pa.string()),
            "token_rows": pa.array([token_rows] * n, pa.int64()),
        })

    def _token_shard(self, tok, doc_idx: np.ndarray) -> tuple[str | None, int]:
        """The batch's token rows (--keep-tokens) as a token shard, as the local pipeline writes them
        (store.write_token_shard); (None, 0) when none are kept or no feature fired."""
        from saeembed.store.shards import write_shard

        rows = tok.frame() if tok is not None else None
        if rows is None or rows.is_empty():
            return None, 0
        rows = rows.with_columns(pl.Series("doc_idx", doc_idx[rows["doc_idx"].to_numpy()]))
        path, n = write_shard(self.folder, rows, sae_hash=self.sae_hash, corpus=self.corpus, kind="tokens")
        return str(path), int(n)


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--backend ray needs Ray: pip install 'saeembed[ray]'") from None
    return ray


def encode_on_ray(store, info, sae_info, sae, model_name: str, hook: str, cfg, window: int, to_do: int, progress):
    """Encode the corpus's unencoded documents on Ray; returns (docs, tokens, split_docs, rows, token_rows) done."""
    ray = _ray()
    if to_do == 0:
        return 0, 0, 0, 0, 0
    if cfg.workers < 1:
        raise InputError("--workers must be at least 1")
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        if cfg.ray_address:
            kwargs["address"] = cfg.ray_address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot start or reach Ray at {cfg.ray_address or 'a new local cluster'}: {e}") from None
    try:
        return _run(ray, store, info, sae_info, sae, model_name, hook, cfg, window, to_do, progress)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, store, info, sae_info, sae, model_name, hook, cfg, window, to_do, progress):
    from saeembed.encode.chunk import chat_inputs
    from saeembed.store.shards import encoding_dir

    import logging

    for name in ("ray", "ray.data"):  # saeembed shows its own progress bar
        logging.getLogger(name).setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.max_errored_blocks = 0
    parts = [pa.table({"doc_idx": pa.array(i, pa.int32()), "text": pa.array(t, pa.string())})
             for i, t in store.iter_unencoded(info, sae_info.sae_key, batch_size=cfg.chunk_docs)]
    prompts = None
    if cfg.messages_column or (cfg.chat_template and cfg.prompt_column):
        idx = [i for p in parts for i in p.column("doc_idx").to_pylist()]
        prompts = dict(zip(idx, chat_inputs(store, info, cfg, idx)))
    folder = encoding_dir(store.shard_root, info.corpus_id, sae_info.sae_key)
    folder.mkdir(parents=True, exist_ok=True)
        # one block per chunk, so every actor gets work
    ds = ray.data.from_arrow(parts).map_batches(
        _EncodeActor,
        fn_constructor_kwargs=dict(model_name=model_name, sae=sae.to("cpu"), hook=hook, cfg=cfg, window=window,
                                   folder=str(folder), sae_hash=sae_info.sae_hash, corpus=info.name, prompts=prompts),
        batch_size=cfg.chunk_docs,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.workers),
        num_gpus=cfg.gpus_per_worker or None,
        num_cpus=1,
        zero_copy_batch=True,
    )
    done_docs = done_tokens = split_docs = rows = token_rows = 0
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            frame = pl.from_arrow(block)
            keys = ["shard", "shard_rows", "token_shard", "token_rows"]
            for (shard, n_rows, token_shard, n_token_rows), part in frame.group_by(keys, maintain_order=True):
                path = _visible(shard)
                stats = part.select("doc_idx", "n_tokens", "n_windows")
                if cfg.keep_tokens:  # the batch's token shard registers with its documents, as a local encode's
                    idx = stats["doc_idx"]
                    files = [(_visible(token_shard), int(n_token_rows), stats.height, int(idx.min()), int(idx.max()))
                             ] if token_shard is not None else []
                    store.write_encoded_tokens(info, sae_info, None, stats, files, shard_file=(path, int(n_rows)))
                    token_rows += int(n_token_rows or 0)
                else:
                    store.write_encoded(info, sae_info, None, stats, shard_file=(path, int(n_rows)))
                done_docs += stats.height
                done_tokens += int(stats["n_tokens"].sum())
                split_docs += int((stats["n_windows"] > 1).sum())
                rows += int(n_rows)
                if progress:
                    progress(done_docs, done_tokens, to_do)
    except Exception as e:
        if isinstance(e, (StoreError, InputError)):
            raise
        cause = getattr(e, "cause", None) or e
        from saeembed.errors import SaeembedError

        if isinstance(cause, SaeembedError):
            raise type(cause)(str(cause)) from None
        raise StoreError(
            f"the Ray encode failed after {done_docs} documents were stored ({type(cause).__name__}: "
            f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}); re-run to resume"
        ) from e
    return done_docs, done_tokens, split_docs, rows, token_rows


def _visible(shard: str) -> Path:
    path = Path(shard)
    if not path.exists():
        raise StoreError(
            f"a Ray worker wrote shard {path}, which the driver cannot see; on a multi-node cluster "
            "the store's shard folder must be on a filesystem every node mounts at the same path"
        )
    return path

"""Encode one chunk of texts: windows -> model forward to the hook -> SAE per content token -> max-pool.

Shared by the local pipeline, the random-token probe and the Ray workers (so none of them imports another).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import LoadedModel
from saeembed.encode.pooling import TokenLatents, pool_max
from saeembed.encode.token_kinds import pooled_masks
from saeembed.encode.token_rows import padded_index, window_bases
from saeembed.encode.tokens import batches, pad_token_id, tokenize
from saeembed.errors import InputError
from saeembed.sae.model import SAE
from saeembed.store import CorpusInfo, Store


def encode_chunk(loaded: LoadedModel, capture: ActivationCapture, sae: SAE, texts: list[str], cfg,
                 window: int, prompts: list | None = None, tokens=None):
    """Encode a list of texts with an EncodeConfig. Returns (sparse rows with doc_idx = position in `texts`,
    per-doc stats). prompts: what chat_inputs gives (user turns, or conversations with --messages-column).
    tokens: a token_rows.TokenRows that also receives every content token's rows (--keep-tokens), each
    marked pooled or not. cfg.skip_tokens "function" leaves function tokens out of the max-pool."""
    chats = prompts if cfg.messages_column else None
    windows = tokenize(
        loaded.tokenizer, texts, window=window, exclude_special=cfg.exclude_special,
        chat_template=cfg.chat_template, prompts=None if chats is not None else prompts, chats=chats,
    )
    n_windows = np.bincount([w.doc for w in windows], minlength=len(texts)).astype(np.int32)
    n_tokens = np.zeros(len(texts), dtype=np.int64)
    latents = TokenLatents()
    pad = pad_token_id(loaded.tokenizer)
    bases = window_bases(windows) if tokens is not None else None
    keep = pooled_masks(texts, windows, cfg.skip_tokens or "none")  # None: every content token is pooled
    for batch in batches(windows, pad_id=pad, max_windows=cfg.batch_size, max_tokens=cfg.max_batch_tokens):
        hidden = capture(batch.input_ids, batch.attention_mask)
        content = batch.content.to(hidden.device)
        x = hidden[content]  # [n_content_tokens, d]
        if x.shape[0] == 0:
            continue
        rows_in_batch = content.nonzero(as_tuple=True)
        at = (rows_in_batch[0].cpu(), rows_in_batch[1].cpu())
        docs_of_rows = torch.tensor([w.doc for w in batch.windows], dtype=torch.long)[at[0]]
        offsets = torch.from_numpy(np.stack([_padded(w.offsets, content.shape[1]) for w in batch.windows]))
        spans = offsets[at]
        np.add.at(n_tokens, docs_of_rows.numpy(), 1)
        with torch.inference_mode():
            r, f, v = sae.encode_coo(x)
        r, f, v = r.cpu(), f.cpu(), v.cpu()
        pooled = None
        if keep is not None:  # the SAE still sees every token (token rows keep them); the max-pool does not
            pooled = torch.from_numpy(np.stack([_padded(keep[id(w)], content.shape[1]) for w in batch.windows]))[at]
            taken = pooled[r]
            latents.add(docs_of_rows, spans, r[taken], f[taken], v[taken])
        else:
            latents.add(docs_of_rows, spans, r, f, v)
        if tokens is not None:
            index = torch.from_numpy(np.stack([padded_index(w, bases[id(w)], content.shape[1]) for w in batch.windows]))
            tokens.add(docs_of_rows, index[at], spans, r, f, v, pooled=pooled)
    docs = pl.DataFrame({"doc_idx": np.arange(len(texts), dtype=np.int32), "n_tokens": n_tokens.astype(np.int32),
                         "n_windows": n_windows})
    return pool_max(latents, sae.d_sae), docs


def _padded(a: np.ndarray, T: int) -> np.ndarray:
    """A window's per-token array (offsets [n, 2], a mask [n]) zero-padded to T tokens."""
    out = np.zeros((T, *a.shape[1:]), dtype=a.dtype)
    out[: len(a)] = a
    return out


def chat_inputs(store: Store, info: CorpusInfo, cfg, doc_idx: list[int]) -> list | None:
    """What encode_chunk needs besides the texts: the conversations (--messages-column), the user turns
    (--chat-template with --prompt-column), or None."""
    if cfg.messages_column:
        from saeembed.encode.chat import chats_of

        return chats_of(store, info, cfg, doc_idx)
    return chat_prompts(store, info, cfg.prompt_column, doc_idx) if cfg.chat_template else None


def chat_prompts(store: Store, info: CorpusInfo, column: str | None, doc_idx: list[int]) -> list[str | None] | None:
    """The user turn of each document (the --prompt-column values) for chat-template encoding."""
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

"""Stream a model's content-token activations at a hook point (for training and evaluating SAEs).

Same tokenization, windows and special-token rules as encoding, so an SAE is trained on exactly the
kind of vectors it will later encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import LoadedModel
from saeembed.encode.token_kinds import token_kinds
from saeembed.encode.tokens import BosRule, batches, pad_token_id, tokenize


@dataclass
class TokenBatch:
    """One batch of content-token activations with where each token comes from."""

    x: torch.Tensor  # [n, d] float32
    doc: np.ndarray  # [n] index of the token's document in the texts given
    pos: np.ndarray  # [n] its place among its document's content tokens
    kind: np.ndarray  # [n] token_kinds.CONTENT / FUNCTION / PIECE
    chunk: int  # documents are read in chunks; a document's tokens all come in one chunk


def iter_activations(loaded: LoadedModel, hook: str, texts: Iterable[str], **kw) -> Iterator[torch.Tensor]:
    """Yield [n_tokens, d] float32 tensors of content-token activations, batch by batch (the arguments of
    iter_token_batches, without its token kinds).

    Stops once `max_tokens` tokens have been yielded (the last tensor is cut to fit).
    """
    for b in iter_token_batches(loaded, hook, texts, kinds=False, **kw):
        yield b.x


def iter_token_batches(
    loaded: LoadedModel,
    hook: str,
    texts: Iterable[str],
    *,
    window: int | None = None,
    docs_per_chunk: int = 256,
    max_batch_tokens: int = 16384,
    max_tokens: int | None = None,
    bos: BosRule | None = None,
    kinds: bool = True,
) -> Iterator[TokenBatch]:
    """iter_activations with each token's document, place and kind (kinds=False: all CONTENT, not judged)."""
    window = min(window or loaded.max_window, loaded.max_window)
    pad = pad_token_id(loaded.tokenizer)
    seen = first_doc = 0
    with ActivationCapture(loaded, hook, bos=bos) as capture:
        for n_chunk, chunk in enumerate(_chunks(texts, docs_per_chunk)):
            windows = tokenize(loaded.tokenizer, chunk, window=window)
            start, done = {}, {}  # id(window) -> place of its first content token in its document
            for w in windows:  # tokenize returns each document's windows in order
                start[id(w)] = done.get(w.doc, 0)
                done[w.doc] = start[id(w)] + int(w.content.sum())
            for batch in batches(windows, pad_id=pad, max_windows=64, max_tokens=max_batch_tokens):
                hidden = capture(batch.input_ids, batch.attention_mask)
                x = hidden[batch.content.to(hidden.device)]
                if not x.shape[0]:
                    continue
                doc = np.concatenate([np.full(int(w.content.sum()), first_doc + w.doc) for w in batch.windows])
                pos = np.concatenate([start[id(w)] + np.arange(int(w.content.sum())) for w in batch.windows])
                kind = (np.concatenate([token_kinds(chunk[w.doc], w.offsets[w.content]) for w in batch.windows])
                        if kinds else np.zeros(len(doc), dtype=np.int8))
                out = TokenBatch(x, doc, pos, kind, n_chunk)
                if max_tokens is not None and seen + x.shape[0] >= max_tokens:
                    n = max_tokens - seen
                    yield TokenBatch(x[:n], doc[:n], pos[:n], kind[:n], n_chunk)
                    return
                seen += x.shape[0]
                yield out
            first_doc += len(chunk)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

"""Stream a model's content-token activations at a hook point (for training and evaluating SAEs).

Same tokenization, windows and special-token rules as encoding, so an SAE is trained on exactly the
kind of vectors it will later encode.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch

from saeembed.encode.capture import ActivationCapture
from saeembed.encode.models import LoadedModel
from saeembed.encode.tokens import BosRule, batches, pad_token_id, tokenize


def iter_activations(
    loaded: LoadedModel,
    hook: str,
    texts: Iterable[str],
    *,
    window: int | None = None,
    docs_per_chunk: int = 256,
    max_batch_tokens: int = 16384,
    max_tokens: int | None = None,
    bos: BosRule | None = None,
) -> Iterator[torch.Tensor]:
    """Yield [n_tokens, d] float32 tensors of content-token activations, batch by batch.

    Stops once `max_tokens` tokens have been yielded (the last tensor is cut to fit).
    """
    window = min(window or loaded.max_window, loaded.max_window)
    pad = pad_token_id(loaded.tokenizer)
    seen = 0
    with ActivationCapture(loaded, hook, bos=bos) as capture:
        for chunk in _chunks(texts, docs_per_chunk):
            windows = tokenize(loaded.tokenizer, chunk, window=window)
            for batch in batches(windows, pad_id=pad, max_windows=64, max_tokens=max_batch_tokens):
                hidden = capture(batch.input_ids, batch.attention_mask)
                x = hidden[batch.content.to(hidden.device)]
                if max_tokens is not None and seen + x.shape[0] >= max_tokens:
                    yield x[: max_tokens - seen]
                    return
                seen += x.shape[0]
                if x.shape[0]:
                    yield x


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk

"""The shuffle buffer SAE training draws its minibatches from (only the buffer is ever in memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from saeembed.errors import InputError


class ShuffleBuffer:
    """Token-exact shuffle buffer: the batches it yields depend only on the sequence of tokens in the
    stream and on the generator, not on how the stream is chunked."""

    def __init__(self, capacity: int, batch_size: int, d_in: int, device: torch.device, generator: torch.Generator):
        self.capacity = max(capacity, batch_size)
        self.batch_size = batch_size
        self.d_in = d_in
        self.device = device
        self.gen = generator
        # Tokens emitted per refill: about half the buffer, in whole batches.
        self.emit = max(batch_size, (self.capacity // 2) // batch_size * batch_size)
        self.stream_tokens = 0  # tokens read from the stream so far
        self.on_first_fill: Callable[[torch.Tensor], None] | None = None

    def _first_fill(self, filled: torch.Tensor) -> None:
        if self.on_first_fill is not None:
            self.on_first_fill(filled)
            self.on_first_fill = None

    def batches(self, stream: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        buf: torch.Tensor | None = None
        free = torch.arange(self.capacity)  # slots to fill, in order
        n_free_used = 0
        for chunk in stream:
            chunk = as_activations(chunk, self.d_in)
            if buf is None:
                dtype = chunk.dtype if chunk.dtype.is_floating_point else torch.float32
                buf = torch.empty(self.capacity, self.d_in, dtype=dtype, device=self.device)
            pos = 0
            while pos < chunk.shape[0]:
                take = min(free.shape[0] - n_free_used, chunk.shape[0] - pos)
                slots = free[n_free_used : n_free_used + take].to(self.device)
                buf.index_copy_(0, slots, chunk[pos : pos + take].to(device=self.device, dtype=buf.dtype))
                n_free_used += take
                pos += take
                self.stream_tokens += take
                if n_free_used == free.shape[0]:  # full
                    self._first_fill(buf)
                    perm = torch.randperm(self.capacity, generator=self.gen)
                    out = perm[: self.emit]
                    for s in range(0, self.emit, self.batch_size):
                        yield buf.index_select(0, out[s : s + self.batch_size].to(self.device)).float()
                    free, n_free_used = out.sort().values, 0
        if buf is None:
            return
        # Drain: every filled slot, shuffled; a final partial batch is kept if at least half a batch.
        filled = torch.ones(self.capacity, dtype=torch.bool)
        filled[free[n_free_used:]] = False
        slots = filled.nonzero().squeeze(1)
        if slots.numel() == 0:
            return
        self._first_fill(buf[slots.to(self.device)])
        slots = slots[torch.randperm(slots.numel(), generator=self.gen)]
        min_last = max(2, self.batch_size // 2)
        for s in range(0, slots.numel(), self.batch_size):
            sel = slots[s : s + self.batch_size]
            if sel.numel() < min_last:
                break
            yield buf.index_select(0, sel.to(self.device)).float()


def as_activations(chunk, d_in: int) -> torch.Tensor:
    t = torch.as_tensor(chunk)
    if t.dim() < 2 or t.shape[-1] != d_in:
        raise InputError(f"activations must be [n_tokens, {d_in}], got a batch of shape {tuple(t.shape)}")
    return t.detach().reshape(-1, d_in)

"""Pool per-token SAE latents into per-document sparse rows.

For every (document, feature) pair that fired on at least one content token: the max activation,
the number of content tokens where it fired, and the character span of the strongest token (the
first such token on ties). Pooling scatters into a dense (documents x d_sae) block a few documents
at a time: linear in the active latents, no sorting, and memory bounded by _MAX_BLOCK whatever the
corpus size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

_MAX_BLOCK = 1 << 22  # documents x d_sae cells pooled at once (~50 MB of working memory)


@dataclass
class TokenLatents:
    """Sparse latents of many tokens, with the document and character span of each token."""

    doc: list[torch.Tensor] = field(default_factory=list)  # per entry: document index
    feature: list[torch.Tensor] = field(default_factory=list)
    value: list[torch.Tensor] = field(default_factory=list)
    span: list[torch.Tensor] = field(default_factory=list)  # [n, 2]

    def add(self, token_doc: torch.Tensor, token_span: torch.Tensor, rows, feats, vals) -> None:
        """rows index into token_doc/token_span (the tokens this chunk of latents belongs to)."""
        self.doc.append(token_doc[rows])
        self.feature.append(feats)
        self.value.append(vals)
        self.span.append(token_span[rows])


def pool_max(latents: TokenLatents, d_sae: int) -> pl.DataFrame:
    """Max-pool: one row per (doc, feature) with value, active_tokens, span_start, span_end."""
    if not latents.doc or sum(len(d) for d in latents.doc) == 0:
        return _empty()
    doc = torch.cat(latents.doc).long().cpu()
    feat = torch.cat(latents.feature).long().cpu()
    val = torch.cat(latents.value).float().cpu()
    span = torch.cat(latents.span).cpu()
    n_docs = int(doc.max()) + 1
    per_block = max(1, _MAX_BLOCK // d_sae)
    parts = []
    for first in range(0, n_docs, per_block):
        keep = (doc >= first) & (doc < first + per_block) if n_docs > per_block else slice(None)
        parts.append(_pool_block(doc[keep] - first, feat[keep], val[keep], span[keep], min(per_block, n_docs - first),
                                 d_sae, first))
    return pl.concat(parts) if len(parts) > 1 else parts[0]


def _pool_block(doc, feat, val, span, n_docs: int, d_sae: int, offset: int) -> pl.DataFrame:
    cell = doc * d_sae + feat
    size = n_docs * d_sae
    best = torch.zeros(size).scatter_reduce_(0, cell, val, reduce="amax", include_self=False)
    count = torch.bincount(cell, minlength=size)
    # The first entry (in token order) reaching the max (in encoding order) gives the span.
    at_max = val == best[cell]
    entry = torch.full((size,), len(val), dtype=torch.long)
    entry.scatter_reduce_(0, cell[at_max], torch.nonzero(at_max).flatten(), reduce="amin")
    active = torch.nonzero(count).flatten()
    first = entry[active]
    return pl.DataFrame(
        {
            "doc_idx": (active // d_sae + offset).to(torch.int32).numpy(),
            "feature": (active % d_sae).to(torch.int32).numpy(),
            "value": best[active].numpy(),
            "active_tokens": count[active].to(torch.int32).numpy(),
            "span_start": span[first, 0].to(torch.int32).numpy(),
            "span_end": span[first, 1].to(torch.int32).numpy(),
        }
    )


def _empty() -> pl.DataFrame:
    z = np.zeros(0, dtype=np.int32)
    return pl.DataFrame(
        {"doc_idx": z, "feature": z, "value": np.zeros(0, np.float32), "active_tokens": z, "span_start": z, "span_end": z}
    )

"""Pool per-token SAE latents into per-document sparse rows.

For every (document, feature) pair that fired on at least one content token: the max activation,
the number of content tokens where it fired, and the character span of the strongest token.
Everything stays sparse (COO triplets), so memory follows the active latents, not d_sae.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch


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
    key = doc * d_sae + feat
    # Sort by value (descending), then stably by key: each key's first entry is its max.
    by_value = torch.argsort(val, descending=True, stable=True)
    order = by_value[torch.argsort(key[by_value], stable=True)]
    sorted_key = key[order]
    uniq, counts = torch.unique_consecutive(sorted_key, return_counts=True)
    first = order[torch.cumsum(counts, 0) - counts]
    return pl.DataFrame(
        {
            "doc_idx": (uniq // d_sae).to(torch.int32).numpy(),
            "feature": (uniq % d_sae).to(torch.int32).numpy(),
            "value": val[first].numpy(),
            "active_tokens": counts.to(torch.int32).numpy(),
            "span_start": span[first, 0].to(torch.int32).numpy(),
            "span_end": span[first, 1].to(torch.int32).numpy(),
        }
    )


def _empty() -> pl.DataFrame:
    z = np.zeros(0, dtype=np.int32)
    return pl.DataFrame(
        {"doc_idx": z, "feature": z, "value": np.zeros(0, np.float32), "active_tokens": z, "span_start": z, "span_end": z}
    )

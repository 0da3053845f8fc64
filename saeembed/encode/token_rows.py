"""Per-token sparse rows for encode --keep-tokens: every content token's active features, each token
taken from the one window that holds it (windows split a document into consecutive, non-overlapping
runs of tokens, the same tokens the document pooling sees).

token_index is the token's position among its document's content tokens, counted across windows, so
max over a (document, feature)'s pooled token rows is the stored document value and their count its
active_tokens (every token is pooled unless function tokens are skipped).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch


def window_bases(windows) -> dict[int, int]:
    """id(window) -> token_index of its first content token (content tokens of the document's earlier
    windows; tokenize keeps each document's windows in order)."""
    seen: dict[int, int] = {}
    out = {}
    for w in windows:
        out[id(w)] = seen.get(w.doc, 0)
        seen[w.doc] = out[id(w)] + int(np.count_nonzero(w.content))
    return out


def padded_index(w, base: int, T: int) -> np.ndarray:
    """[T] token_index of each content position of window w (-1 elsewhere)."""
    out = np.full(T, -1, dtype=np.int64)
    where = np.flatnonzero(w.content)
    out[where] = base + np.arange(len(where))
    return out


class TokenRows:
    """Collects (doc, token_index, start, end, feature, value, pooled) of a chunk's tokens; pooled: whether
    the token is one the document's max-pool takes (all of them unless function tokens are skipped)."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def add(self, token_doc: torch.Tensor, token_index: torch.Tensor, token_span: torch.Tensor, rows, feats, vals,
            pooled: torch.Tensor | None = None):
        """rows index into token_doc/token_index/token_span/pooled (the tokens this chunk of latents belongs to);
        pooled None: every token is pooled."""
        rows = rows.cpu()
        flag = np.ones(len(rows), dtype=bool) if pooled is None else pooled[rows].numpy()
        self.parts.append((token_doc[rows].numpy(), token_index[rows].numpy(), token_span[rows].numpy(),
                           feats.cpu().numpy(), vals.float().cpu().numpy(), flag))

    def frame(self) -> pl.DataFrame:
        """The rows, ordered by document, token, feature (doc_idx = position in the chunk's texts)."""
        if not self.parts:
            z = np.zeros(0, dtype=np.int32)
            return pl.DataFrame({"doc_idx": z, "token_index": z, "start": z, "end": z, "feature": z,
                                 "value": np.zeros(0, np.float32), "pooled": np.zeros(0, bool)})
        doc, idx, span, feat, val, flag = (np.concatenate(p) for p in zip(*self.parts))
        return pl.DataFrame({
            "doc_idx": doc.astype(np.int32), "token_index": idx.astype(np.int32),
            "start": span[:, 0].astype(np.int32), "end": span[:, 1].astype(np.int32),
            "feature": feat.astype(np.int32), "value": val.astype(np.float32), "pooled": flag.astype(bool),
        }).sort(["doc_idx", "token_index", "feature"])


def save_token_rows(store, info, sae_info, tokens: TokenRows | None, global_idx: np.ndarray) -> list[tuple]:
    """Write a chunk's token rows as a token shard (not yet registered); returns [(path, n_rows, n_docs,
    doc_min, doc_max)], empty without rows. global_idx maps chunk positions to the corpus's doc_idx."""
    if tokens is None:
        return []
    rows = tokens.frame()
    if rows.is_empty():
        return []
    rows = rows.with_columns(pl.Series("doc_idx", global_idx[rows["doc_idx"].to_numpy()]))
    path, n = store.write_token_shard(info, sae_info, rows)
    return [(path, n, len(global_idx), int(global_idx.min()), int(global_idx.max()))]

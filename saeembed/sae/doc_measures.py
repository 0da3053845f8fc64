"""What an SAE's latents give document-level analyses, measured while `sae eval` streams its tokens.

Reconstruction says little about whether the latents are worth listing. Two things make a latent
useless to an analyst who reads max-pooled documents:
- **generic**: it fires in more than half of all documents, so it tells none apart. Long documents
  fire more latents, so the share is also given per run of RUN content tokens (every document cut
  into runs; a shorter document, or a document's last run, is one run): long answers and short tweets
  are then judged at the same length.
- **function / word-piece**: its strongest activations are mostly on stop words and punctuation, or
  on pieces of words (the token kinds of saeembed.encode.token_kinds), not on what a text says.
The default-SAE selection benchmark (benchmarks/default_sae) chose by the same measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from saeembed.encode.token_kinds import FUNCTION, PIECE

RUN = 64  # content tokens per run
GENERIC_SHARE = 0.5  # a latent firing in more than this share of documents (runs) is generic
TOP = 20  # strongest activations per latent judged for its token kind
_DOC_SHIFT = 20  # run key = doc << _DOC_SHIFT | run: documents up to 2**20 runs (67 M tokens)


@dataclass
class DocQuality:
    documents: int
    runs: int
    live: int  # latents firing on at least one token
    generic_docs: float  # share of live latents firing in > GENERIC_SHARE of the documents
    generic_runs: float  # … of the runs of RUN tokens
    function: float  # share of live latents whose TOP strongest activations are mostly function tokens
    piece: float  # … mostly word pieces
    function_or_piece: float  # … mostly either

    def to_dict(self) -> dict:
        return {"documents": self.documents, "runs_of_tokens": self.runs, "run_length": RUN,
                "live_latents": self.live, "generic_share_documents": self.generic_docs,
                "generic_share_runs": self.generic_runs, "function_token_share": self.function,
                "word_piece_share": self.piece, "function_or_piece_share": self.function_or_piece}


class DocMeasures:
    """Fed the token metadata of each batch (`expect`), then its codes in order (`observe`, any number of
    slices); `result()` at the end. Memory: one chunk of documents' (run, latent) pairs at a time, and
    TOP values per latent."""

    def __init__(self, d_sae: int):
        self.d_sae = d_sae
        self._meta: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._at = 0
        self._chunk: int | None = None
        self._run_keys: list[np.ndarray] = []
        self._doc_keys: list[np.ndarray] = []
        self._runs_seen: list[np.ndarray] = []  # the run keys of every token, fired or not
        self.run_counts = np.zeros(d_sae, dtype=np.int64)
        self.doc_counts = np.zeros(d_sae, dtype=np.int64)
        self.n_docs = 0
        self.n_runs = 0
        self.top_values = np.zeros((d_sae, TOP), dtype=np.float32)  # 0 = empty slot (codes are > 0)
        self.top_kinds = np.zeros((d_sae, TOP), dtype=np.int8)

    def expect(self, doc: np.ndarray, pos: np.ndarray, kind: np.ndarray, chunk: int) -> None:
        """The next batch's tokens: document index, place among its document's content tokens, token
        kind. Documents of one chunk never reach into another, so a new chunk closes the last one."""
        if chunk != self._chunk:
            self._close_chunk()
            self._chunk = chunk
        self._meta, self._at = (doc, pos, kind), 0

    def observe(self, z: torch.Tensor) -> None:
        """Codes [n, d_sae] of the next n tokens of the expected batch."""
        doc, pos, kind = (a[self._at:self._at + len(z)] for a in self._meta)
        self._at += len(z)
        rows, lat = (t.cpu().numpy() for t in torch.nonzero(z > 0, as_tuple=True))
        vals = z[rows, lat].float().cpu().numpy()
        doc = doc.astype(np.int64)
        run = (doc << _DOC_SHIFT) | (pos // RUN)
        self._run_keys.append(run[rows] * self.d_sae + lat)
        self._doc_keys.append(doc[rows] * self.d_sae + lat)
        self._runs_seen.append(np.unique(run))
        self._keep_top(lat, vals, kind[rows])

    def _keep_top(self, lat: np.ndarray, vals: np.ndarray, kinds: np.ndarray) -> None:
        """Merge these activations into each latent's TOP strongest."""
        if not len(lat):
            return
        touched = np.unique(lat)
        old_v = self.top_values[touched].ravel()
        old_k = self.top_kinds[touched].ravel()
        old_l = np.repeat(touched, TOP)
        keep = old_v > 0
        L = np.concatenate([old_l[keep], lat])
        V = np.concatenate([old_v[keep], vals])
        K = np.concatenate([old_k[keep], kinds])
        order = np.lexsort((-V, L))
        L, V, K = L[order], V[order], K[order]
        rank = np.arange(len(L)) - np.searchsorted(L, L)
        top = rank < TOP
        self.top_values[touched] = 0
        self.top_values[L[top], rank[top]] = V[top]
        self.top_kinds[L[top], rank[top]] = K[top]

    def _close_chunk(self) -> None:
        if self._run_keys:
            for keys, counts in ((self._run_keys, self.run_counts), (self._doc_keys, self.doc_counts)):
                uniq = np.unique(np.concatenate(keys))
                counts += np.bincount(uniq % self.d_sae, minlength=self.d_sae)
        if self._runs_seen:
            all_runs = np.unique(np.concatenate(self._runs_seen))
            self.n_runs += len(all_runs)
            self.n_docs += len(np.unique(all_runs >> _DOC_SHIFT))
        self._run_keys, self._doc_keys, self._runs_seen = [], [], []

    def result(self) -> DocQuality:
        self._close_chunk()
        live = self.run_counts > 0
        n_live = max(int(live.sum()), 1)
        n = (self.top_values > 0).sum(1)
        half = n / 2

        def mostly(*kinds) -> float:
            hits = np.isin(self.top_kinds, kinds) & (self.top_values > 0)
            return float(((hits.sum(1) > half) & live).sum() / n_live)

        return DocQuality(
            documents=self.n_docs, runs=self.n_runs, live=int(live.sum()),
            generic_docs=float((self.doc_counts > GENERIC_SHARE * max(self.n_docs, 1)).sum() / n_live),
            generic_runs=float((self.run_counts > GENERIC_SHARE * max(self.n_runs, 1)).sum() / n_live),
            function=mostly(FUNCTION), piece=mostly(PIECE), function_or_piece=mostly(FUNCTION, PIECE),
        )

"""Dense sentence embeddings: the baseline every SAE analysis is compared with, and the embedder that
maps a free-text query onto feature labels and exemplars.

The recipe is sentence-transformers' for all-MiniLM-L6-v2: mean of the last hidden state over real
tokens, then L2 normalisation. Texts longer than the model's window are truncated here (a dense
sentence embedding of a 100k-token document is a summary anyway; the SAE path never truncates).
Corpus embeddings are cached in the store per (corpus, model).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from saeembed.store import CorpusInfo, Store


class DenseEmbedder:
    """A loaded sentence model. embed(texts) -> float32 [n, d], rows of unit length."""

    def __init__(self, model: str | None = None, *, device: str | None = "auto", batch_size: int = 64):
        from saeembed.encode.models import load_model

        self.loaded = load_model(model, device=device)
        self.name = self.loaded.name
        self.batch_size = batch_size
        self.max_length = min(self.loaded.max_window, 256)
        self._recent: dict[str, np.ndarray] = {}  # one query is embedded by several steps of a search

    @property
    def dim(self) -> int:
        return self.loaded.hidden_size

    def embed(self, texts: list[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        if len(texts) == 1 and texts[0] in self._recent:
            return self._recent[texts[0]].copy()
        out = self._embed(texts, progress)
        if len(texts) == 1:
            if len(self._recent) >= 32:
                self._recent.pop(next(iter(self._recent)))
            self._recent[texts[0]] = out.copy()
        return out

    def _embed(self, texts: list[str], progress: Callable[[int], None] | None) -> np.ndarray:
        import torch

        tok, model, dev = self.loaded.tokenizer, self.loaded.model, self.loaded.device
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths pad less
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                      return_tensors="pt")
            enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.inference_mode():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            mean = torch.nn.functional.normalize(mean.float(), dim=-1)
            out[idx] = mean.cpu().numpy()
            if progress is not None:
                progress(len(idx))
        return out


_EMBEDDERS: dict[str, DenseEmbedder] = {}


def get_embedder(model: str | None = None, *, device: str | None = "auto") -> DenseEmbedder:
    """A process-wide cached embedder (loading a model takes seconds; queries need it often)."""
    key = f"{model}|{device}"
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = DenseEmbedder(model, device=device)
    return _EMBEDDERS[key]


def embed_texts(texts: list[str], *, model: str | None = None, device: str | None = "auto") -> np.ndarray:
    """Unit-length sentence embeddings of `texts` (default model: the embedded all-MiniLM-L6-v2)."""
    return get_embedder(model, device=device).embed(list(texts))


def corpus_embeddings(
    store: Store,
    corpus: str | CorpusInfo,
    *,
    model: str | None = None,
    device: str | None = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Dense embeddings of every document of a corpus, rows in doc_idx order; computed once and cached
    in the store (documents added later are embedded on the next call)."""
    info = corpus if isinstance(corpus, CorpusInfo) else store.corpus(corpus)
    return doc_embeddings(store, info, None, model=model, device=device, progress=progress)


def doc_embeddings(
    store: Store,
    corpus: str | CorpusInfo,
    doc_idx,
    *,
    model: str | None = None,
    device: str | None = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Dense embeddings of the documents `doc_idx` (None = all), rows in that order; those not yet in the
    store's cache are embedded and cached."""
    info = corpus if isinstance(corpus, CorpusInfo) else store.corpus(corpus)
    embedder = get_embedder(model, device=device)
    wanted = np.arange(info.n_docs) if doc_idx is None else np.asarray(doc_idx, dtype=np.int64)
    missing = np.setdiff1d(wanted, store.dense_embedded_docs(info, embedder.name))
    if len(missing):
        docs = store.documents(info, metadata=False, doc_idx=missing.tolist())
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], len(missing))

        vectors = embedder.embed(docs["text"].to_list(), progress=tick)
        store.add_dense_embeddings(info, embedder.name, docs["doc_idx"].to_numpy(), vectors)
    return store.dense_embeddings(info, embedder.name, dim=embedder.dim, doc_idx=doc_idx)

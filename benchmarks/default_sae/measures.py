"""Measures of the selection benchmark computed straight from cached token activations (numpy, no store).

Token level: explained variance and dead latents; document level (max-pooling with saeembed's own
pool_max, exactly as `saeembed encode` pools): generic features, function-token features, and the
toxicity probe transfer against the dense probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

CHUNK = 4096  # tokens encoded at once (dense latents: CHUNK x d_sae floats)
TOP_TOKENS = 20  # activations read per feature for the function-token measure
GENERIC_DF = 0.5  # a feature is generic when it fires in more than this share of a set's documents


@dataclass
class SetCodes:
    """One eval set under one SAE: per-document pooled rows and token-level sparse entries."""

    name: str
    n_docs: int
    pooled: pl.DataFrame  # pool_max output: doc_idx, feature, value, active_tokens, span_start, span_end
    n_tokens: np.ndarray  # content tokens per document
    entries: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)  # token row, feature, value
    sums: dict = field(repr=False, default_factory=dict)  # for explained variance


def load_set(acts: Path, name: str, layer: int) -> dict:
    d = acts / name
    return {
        "x": np.load(d / f"layer{layer}.npy", mmap_mode="r"),
        "doc": np.load(d / "tok_doc.npy"),
        "id": np.load(d / "tok_id.npy"),
        "span": np.load(d / "tok_span.npy"),
        "dense": np.load(d / "dense.npy"),
        "rows": [json.loads(line) for line in open(d / "docs.jsonl", encoding="utf-8")],
    }


def pooled_tokens(data: dict, skip: str) -> np.ndarray | None:
    """Per content token: whether the document's max-pool takes it under `saeembed encode --skip-tokens
    SKIP` (the product's own rule, saeembed.encode.token_kinds; None: every token, skip "none")."""
    if skip == "none":
        return None
    from saeembed.encode.token_kinds import function_tokens as is_function

    keep = np.ones(len(data["doc"]), dtype=bool)
    order, starts = _doc_order(data)
    for d, row in enumerate(data["rows"]):
        rows = order[starts[d] : starts[d + 1]]
        mask = ~is_function(row["text"], data["span"][rows])
        keep[rows] = mask if mask.any() else True  # a document with no token left pools all of them
    return keep


def _doc_order(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """Token rows sorted by (document, position) -- the cache holds them in batch order -- and where each
    document's run starts in that order."""
    order = np.lexsort((data["span"][:, 0], data["doc"]))
    return order, np.searchsorted(data["doc"][order], np.arange(len(data["rows"]) + 1))


@torch.inference_mode()
def encode_set(sae, data: dict, name: str, pooled_mask: np.ndarray | None = None) -> SetCodes:
    """SAE forward over every content token of a set; pooled exactly as encode pools (over the tokens of
    pooled_mask when given, see pooled_tokens; explained variance always counts every token)."""
    from saeembed.encode.pooling import TokenLatents, pool_max

    x_all, doc, span = data["x"], torch.from_numpy(data["doc"]).long(), torch.from_numpy(data["span"]).long()
    d_in = x_all.shape[1]
    s_err, s_x, s_x2 = 0.0, np.zeros(d_in), np.zeros(d_in)
    rows, feats, vals = [], [], []
    latents = TokenLatents()
    for start in range(0, x_all.shape[0], CHUNK):
        x = torch.from_numpy(np.asarray(x_all[start : start + CHUNK], dtype=np.float32))
        r, f, v = sae.encode_coo(x)
        z = torch.zeros(x.shape[0], sae.d_sae)
        z[r, f] = v
        recon = sae.decode(z)
        s_err += float((x - recon).double().pow(2).sum())
        xd = x.double()
        s_x += xd.sum(0).numpy()
        s_x2 += xd.pow(2).sum(0).numpy()
        idx = torch.arange(start, start + x.shape[0])
        if pooled_mask is None:
            latents.add(doc[idx], span[idx], r, f, v)
        else:
            take = torch.from_numpy(pooled_mask[start : start + x.shape[0]])[r]
            latents.add(doc[idx], span[idx], r[take], f[take], v[take])
        rows.append((r + start).numpy().astype(np.int32))
        feats.append(f.numpy().astype(np.int32))
        vals.append(v.numpy().astype(np.float32))
    pooled = pool_max(latents, sae.d_sae)
    n_docs = len(data["rows"])
    return SetCodes(name, n_docs, pooled, np.bincount(data["doc"], minlength=n_docs),
                    (np.concatenate(rows), np.concatenate(feats), np.concatenate(vals)),
                    {"err": s_err, "x": s_x, "x2": s_x2, "n": x_all.shape[0]})


def explained_variance(codes: list[SetCodes]) -> float:
    """1 - SSE / total sum of squares about the per-dimension mean of all the given sets' tokens."""
    n = sum(c.sums["n"] for c in codes)
    sx = sum(c.sums["x"] for c in codes)
    sx2 = sum(c.sums["x2"] for c in codes)
    total = float((sx2 - sx**2 / n).sum())
    return 1.0 - sum(c.sums["err"] for c in codes) / total


def fire_counts(codes: list[SetCodes], d_sae: int) -> np.ndarray:
    return sum(np.bincount(c.entries[1], minlength=d_sae) for c in codes)


def generic_share(c: SetCodes, d_sae: int) -> dict:
    """Of the features live on this set (fire in >= 1 document), the share firing in > GENERIC_DF of them."""
    df = np.bincount(c.pooled["feature"].to_numpy(), minlength=d_sae) / c.n_docs
    live = int((df > 0).sum())
    generic = int((df > GENERIC_DF).sum())
    return {"generic": generic, "live": live, "share": generic / max(live, 1)}


def generic_share_windows(c: SetCodes, data: dict, d_sae: int, window: int = 64,
                          pooled_mask: np.ndarray | None = None) -> dict:
    """generic_share at a fixed length: every document cut into runs of `window` content tokens (a shorter
    document, or a document's last run, is one unit), so long answers and short tweets are judged alike.
    Of the features live on the set, the share firing in > GENERIC_DF of those units."""
    order, starts = _doc_order(data)
    unit_of_token = np.zeros(len(order), dtype=np.int64)
    n_units = 0
    for d in range(c.n_docs):
        a, b = starts[d], starts[d + 1]
        unit_of_token[order[a:b]] = n_units + np.arange(b - a) // window
        n_units += max(1, -(-(b - a) // window))
    rows, feats, _ = c.entries
    if pooled_mask is not None:
        keep = pooled_mask[rows]
        rows, feats = rows[keep], feats[keep]
    pairs = np.unique(unit_of_token[rows] * d_sae + feats)
    df = np.bincount(pairs % d_sae, minlength=d_sae) / n_units
    live, generic = int((df > 0).sum()), int((df > GENERIC_DF).sum())
    return {"generic": generic, "live": live, "share": generic / max(live, 1), "units": n_units}


def function_tokens(tokenizer, data: dict) -> np.ndarray:
    """Per content token: True when it is a stop word, punctuation/symbols only, or a piece of a word
    that WordPiece split (a ##-continuation, or a token followed by one in the same document)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    cont = np.array([t.startswith("##") for t in vocab])
    stop = np.array([t.lower() in ENGLISH_STOP_WORDS or not any(ch.isalnum() for ch in t) for t in vocab])
    ids, doc = data["id"], data["doc"]
    nxt_cont = np.zeros(len(ids), bool)
    nxt_cont[:-1] = cont[ids[1:]] & (doc[1:] == doc[:-1])
    return {"stop": stop[ids], "piece": cont[ids] | nxt_cont}


def function_feature_share(codes: list[SetCodes], flags: list[dict], d_sae: int) -> dict:
    """Of the live features (over all given sets), the share whose TOP_TOKENS strongest activations
    are mostly (> half) on function tokens (stop words/punctuation, or word pieces)."""
    offs = np.cumsum([0] + [len(f["stop"]) for f in flags])
    r = np.concatenate([c.entries[0] + offs[i] for i, c in enumerate(codes)])
    f = np.concatenate([c.entries[1] for c in codes])
    v = np.concatenate([c.entries[2] for c in codes])
    stop = np.concatenate([x["stop"] for x in flags])
    piece = np.concatenate([x["piece"] for x in flags])
    order = np.lexsort((-v, f))
    f, r = f[order], r[order]
    first = np.searchsorted(f, np.arange(d_sae))
    counts = np.bincount(f, minlength=d_sae)
    rank = np.arange(len(f)) - first[f]
    top = rank < TOP_TOKENS
    ft, rt = f[top], r[top]
    n = np.minimum(counts, TOP_TOKENS)
    live = counts > 0
    s = np.bincount(ft, weights=stop[rt], minlength=d_sae)
    p = np.bincount(ft, weights=piece[rt], minlength=d_sae)
    sp_ = np.bincount(ft, weights=stop[rt] | piece[rt], minlength=d_sae)
    nl = max(int(live.sum()), 1)
    return {
        "live": int(live.sum()),
        "stop_share": float((s[live] > n[live] / 2).sum() / nl),
        "piece_share": float((p[live] > n[live] / 2).sum() / nl),
        "function_share": float((sp_[live] > n[live] / 2).sum() / nl),
    }


def pooled_matrix(c: SetCodes, d_sae: int) -> sp.csr_matrix:
    p = c.pooled
    return sp.csr_matrix((p["value"].to_numpy(), (p["doc_idx"].to_numpy(), p["feature"].to_numpy())),
                         shape=(c.n_docs, d_sae))


def _fit(X, y, sparse_probe: bool):
    """saeembed's own probe fit (analysis.classify_fit.fit_cv, ProbeConfig defaults): L1 with C by 5-fold CV
    for the SAE probe; L2 with the dense baseline's C grid for the dense one; balanced classes."""
    from saeembed.analysis.classify_fit import ProbeConfig, fit_cv

    cfg = ProbeConfig()
    if sparse_probe:
        model, C, _ = fit_cv(X, y, cfg, l1=True)
    else:
        model, C, _ = fit_cv(X, y, cfg, l1=False, Cs=(0.1, 1.0, 10.0, 100.0))
    return model, C


def probe_transfer(train: tuple, test: tuple) -> dict:
    """train/test: (sae csr, dense array, y). AUROC on the test set of the SAE probe and the dense probe."""
    from sklearn.metrics import roc_auc_score

    Xs, Xd, y = train
    Ts, Td, yt = test
    scale = np.asarray(abs(Xs).max(axis=0).todense()).ravel()
    scale[scale == 0] = 1.0
    D = sp.diags(1.0 / scale)
    m, C = _fit(sp.csr_matrix(Xs @ D), y, True)
    auc_s = roc_auc_score(yt, m.predict_proba(sp.csr_matrix(Ts @ D))[:, 1])
    md, Cd = _fit(Xd, y, False)
    auc_d = roc_auc_score(yt, md.predict_proba(Td)[:, 1])
    return {"sae": float(auc_s), "dense": float(auc_d), "gap": float(auc_s - auc_d), "C_sae": C, "C_dense": Cd,
            "features_used": int((m.coef_ != 0).sum())}

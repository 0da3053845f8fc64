"""How good is an SAE on a stream of activations: explained variance, L0, dead latents, firing density.

Explained variance is 1 - FVU, where FVU (fraction of variance unexplained) is

    sum_t ||x_t - x_hat_t||^2  /  sum_t ||x_t - mean(x)||^2

with mean(x) the per-dimension mean over *all* evaluated tokens. The variance is taken about the mean,
not about zero: measured about zero, a residual stream with a large common offset looks far better
reconstructed than it is (an SAE that only outputs the mean would score EV near 1).

Everything is computed streaming: per batch we keep only float64 sums (per-dimension mean and centred
sum of squares, merged across batches with Chan's parallel formula, which does not suffer the
cancellation of sum(x^2) - n*mean^2), the squared error, and per-latent firing counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from saeembed.errors import InputError, SAEError
from saeembed.sae.model import SAE

if TYPE_CHECKING:
    from saeembed.sae.doc_measures import DocQuality

# Dense latents materialised at once while evaluating (tokens x d_sae elements).
_MAX_DENSE_ELEMENTS = 1 << 24


@dataclass
class SAEQuality:
    """Reconstruction quality and sparsity of an SAE on a set of tokens."""

    explained_variance: float  # 1 - fvu
    fvu: float  # squared error over the variance about the mean (nan if the tokens have no variance)
    l0: float  # mean number of active latents per token
    dead_fraction: float  # share of latents that never fired on these tokens
    n_tokens: int
    density: np.ndarray  # per-latent firing frequency (share of tokens where the latent is > 0), [d_sae]
    documents: "DocQuality | None" = None  # what the latents give document-level analyses (evaluate_on_texts)

    @property
    def dead_count(self) -> int:
        return int((self.density == 0).sum())

    def histogram(self, bins: int | Sequence[float] = 40) -> tuple[np.ndarray, np.ndarray]:
        """Histogram of log10(density) over the latents that fired at least once.

        Dead latents (density 0, log10 = -inf) are not in it; see `dead_count`. With an integer
        `bins`, the edges run evenly from log10(1 / n_tokens) (fired once) to 0 (fires on every token).
        Returns (counts, edges) like numpy.histogram.
        """
        alive = self.density[self.density > 0]
        logd = np.log10(alive) if alive.size else np.empty(0)
        if isinstance(bins, (int, np.integer)):
            lo = min(math.floor(math.log10(1.0 / max(self.n_tokens, 1))), -1)
            edges = np.linspace(lo, 0.0, int(bins) + 1)
        else:
            edges = np.asarray(bins, dtype=float)
        counts, edges = np.histogram(logd, bins=edges)
        return counts, edges

    def to_dict(self, bins: int | Sequence[float] = 40) -> dict:
        """JSON-safe summary (no arrays; nan/inf become None)."""
        counts, edges = self.histogram(bins)
        return {
            "explained_variance": _finite(self.explained_variance),
            "fvu": _finite(self.fvu),
            "l0": _finite(self.l0),
            "dead_fraction": _finite(self.dead_fraction),
            "n_tokens": int(self.n_tokens),
            "dead_count": self.dead_count,
            "density_histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
            **({"documents": self.documents.to_dict()} if self.documents is not None else {}),
        }


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def evaluate_sae(sae: SAE, batches: Iterable[torch.Tensor],
                 observe: Callable[[torch.Tensor], None] | None = None) -> SAEQuality:
    """Measure an SAE on a stream of activation batches, each [n_tokens, d_in] (leading dims flattened).
    observe: called with the codes of every slice of tokens, in order (doc_measures.DocMeasures.observe).

    Memory stays bounded by one chunk of dense latents, whatever the number of tokens.
    """
    if sae.cfg.transcoder:  # its decoder predicts another hook: a reconstruction of the input means nothing
        raise SAEError(f"this SAE is a transcoder (reads {sae.cfg.hook}, writes {sae.cfg.hook_out}); "
                       "explained variance of its input is not defined")
    d_in, d_sae = sae.d_in, sae.d_sae
    device = sae.W_enc.device
    chunk = max(1, _MAX_DENSE_ELEMENTS // d_sae)

    n_total = 0
    mean = torch.zeros(d_in, dtype=torch.float64, device=device)  # running per-dimension mean
    m2 = torch.zeros(d_in, dtype=torch.float64, device=device)  # running centred sum of squares
    sse = torch.zeros((), dtype=torch.float64, device=device)
    active = torch.zeros((), dtype=torch.float64, device=device)
    fires = torch.zeros(d_sae, dtype=torch.float64, device=device)

    with torch.inference_mode():
        for batch in batches:
            x_all = torch.as_tensor(batch)
            if x_all.dim() < 2 or x_all.shape[-1] != d_in:
                raise InputError(
                    f"activations must be [n_tokens, {d_in}] for this SAE, got shape {tuple(x_all.shape)}"
                )
            x_all = x_all.reshape(-1, d_in)
            for start in range(0, x_all.shape[0], chunk):
                x = x_all[start : start + chunk].to(device=device, dtype=torch.float32)
                n = x.shape[0]
                z = sae.encode(x)
                if observe is not None:
                    observe(z)
                x_hat = sae.decode(z)
                x64 = x.double()
                sse += (x64 - x_hat.double()).pow(2).sum()
                on = z > 0
                active += on.sum()
                fires += on.sum(0)
                # Chan et al.: merge (n_total, mean, m2) with this chunk's (n, mean_b, m2_b).
                mean_b = x64.mean(0)
                m2_b = (x64 - mean_b).pow(2).sum(0)
                delta = mean_b - mean
                tot = n_total + n
                mean += delta * (n / tot)
                m2 += m2_b + delta.pow(2) * (n_total * n / tot)
                n_total = tot

    if n_total == 0:
        raise InputError("no activations to evaluate the SAE on")
    total_var = float(m2.sum())
    err = float(sse)
    if total_var > 0:
        fvu = err / total_var
    else:  # constant activations: FVU is undefined unless the reconstruction is exact
        fvu = 0.0 if err == 0 else math.nan
    density = (fires / n_total).cpu().numpy()
    return SAEQuality(
        explained_variance=1.0 - fvu,
        fvu=fvu,
        l0=float(active) / n_total,
        dead_fraction=float((density == 0).mean()),
        n_tokens=n_total,
        density=density,
    )

"""The sparse autograd pieces of SAE training: gradients flow only through the k (+ auxk) latents
selected per token, through sparse matmuls; no dense tokens x d_sae matrix in the backward pass."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def _scatter_matrix(idx: torch.Tensor, weights: torch.Tensor, d_sae: int) -> torch.Tensor:
    """Sparse [d_sae, n] matrix with weights[t, s] at (idx[t, s], t)."""
    n, m = idx.shape
    rows = torch.arange(n, device=idx.device).unsqueeze(1).expand(n, m).reshape(-1)
    return torch.sparse_coo_tensor(
        torch.stack([idx.reshape(-1), rows]), weights.reshape(-1), (d_sae, n), check_invariants=False
    )


class SelectedPreActs(torch.autograd.Function):
    """relu((x - b_dec) @ W_enc + b_enc) at the chosen latents idx [n, m], from the dense `pre` computed
    without autograd. The backward touches only the n*m selected entries."""

    @staticmethod
    def forward(ctx, pre, idx, xc, W_encT, b_enc, b_dec):  # noqa: ARG004 - b_enc/b_dec only get gradients
        vals = pre.gather(1, idx).float()
        ctx.save_for_backward(idx, xc, W_encT, vals > 0)
        return vals

    @staticmethod
    def backward(ctx, grad):
        idx, xc, W_encT, positive = ctx.saved_tensors
        d_sae = W_encT.shape[0]
        g = grad * positive  # ReLU
        grad_b_enc = torch.zeros(d_sae, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        grad_W_encT = torch.sparse.mm(_scatter_matrix(idx, g, d_sae), xc) if ctx.needs_input_grad[3] else None
        # d pre[t, j] / d b_dec = -W_enc[:, j], summed over the selected (t, j).
        grad_b_dec = -(grad_b_enc @ W_encT) if ctx.needs_input_grad[5] else None
        return None, None, None, grad_W_encT, grad_b_enc, grad_b_dec


class SparseDecode(torch.autograd.Function):
    """sum_s vals[t, s] * W_dec[idx[t, s]] with a sparse backward. idx must be sorted within each row
    (the gradient of vals is a sampled matmul on a CSR pattern built from it)."""

    @staticmethod
    def forward(ctx, vals, idx, W_dec):
        ctx.save_for_backward(vals, idx, W_dec)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        vals, idx, W_dec = ctx.saved_tensors
        grad_vals = grad_W_dec = None
        if ctx.needs_input_grad[0]:
            # grad_vals[t, s] = <grad_out[t], W_dec[idx[t, s]]>: only the n*m needed dot products.
            n, m = idx.shape
            crow = torch.arange(0, n * m + 1, m, device=idx.device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                pattern = torch.sparse_csr_tensor(
                    crow, idx.reshape(-1), torch.zeros(n * m, dtype=grad_out.dtype, device=idx.device),
                    (n, W_dec.shape[0]), check_invariants=False,
                )
                sampled = torch.sparse.sampled_addmm(pattern, grad_out, W_dec.T)
            grad_vals = sampled.values().view(n, m)
        if ctx.needs_input_grad[2]:
            grad_W_dec = torch.sparse.mm(_scatter_matrix(idx, vals, W_dec.shape[0]), grad_out)
        return grad_vals, None, grad_W_dec

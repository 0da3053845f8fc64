import json

import numpy as np
import pytest
import torch

from saeembed.errors import InputError
from saeembed.sae import metrics
from saeembed.sae.metrics import evaluate_sae
from saeembed.sae.model import SAE, SAEConfig


def _identity_sae(d_in: int) -> SAE:
    """ReLU SAE with latents relu(x) and relu(-x): reconstructs every input exactly."""
    eye = torch.eye(d_in)
    cfg = SAEConfig(d_in=d_in, d_sae=2 * d_in, architecture="relu")
    return SAE(cfg, torch.cat([eye, -eye], 1), torch.zeros(2 * d_in), torch.cat([eye, -eye], 0), torch.zeros(d_in))


def _zero_sae(d_in: int, d_sae: int, b_dec: torch.Tensor) -> SAE:
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="relu")
    return SAE(cfg, torch.zeros(d_in, d_sae), torch.zeros(d_sae), torch.zeros(d_sae, d_in), b_dec)


def _data(n=500, d_in=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g) + 0.3 * torch.arange(d_in, dtype=torch.float32)  # non-zero mean
    x[:, 0] = x[:, 0].abs() + 0.1  # dimension 0 is always positive: its "-x" latent never fires
    x[torch.rand(n, d_in, generator=g) < 0.25] = 0.0  # exact zeros: fewer active latents
    x[:, 0] = x[:, 0].clamp_min(0)
    return x


def test_identity_sae_reconstructs_exactly_and_counts_by_hand():
    x = _data()
    q = evaluate_sae(_identity_sae(6), [x])
    assert q.explained_variance == pytest.approx(1.0, abs=1e-5)
    assert q.fvu == pytest.approx(0.0, abs=1e-5)
    # each non-zero coordinate fires exactly one of its two latents
    assert q.l0 == pytest.approx(float((x != 0).sum()) / x.shape[0])
    pos = (x > 0).double().mean(0).numpy()
    neg = (x < 0).double().mean(0).numpy()
    np.testing.assert_allclose(q.density, np.concatenate([pos, neg]), rtol=0, atol=1e-12)
    dead_by_hand = int((pos == 0).sum() + (neg == 0).sum())
    assert dead_by_hand == 1  # the "-x0" latent
    assert q.dead_fraction == pytest.approx(dead_by_hand / 12)
    assert q.n_tokens == 500


def test_variance_is_about_the_mean_not_zero():
    # Activations with a big common offset and small spread, like a residual stream.
    g = torch.Generator().manual_seed(1)
    x = 10.0 + 0.5 * torch.randn(400, 8, generator=g, dtype=torch.float64)
    x32 = x.float()
    mean = x32.double().mean(0)

    # Reconstruction = the mean: explains nothing, EV = 0 (about zero it would look like ~0.998).
    q = evaluate_sae(_zero_sae(8, 16, mean.float()), [x32])
    x64 = x32.double()
    about_zero = 1 - float(((x64 - mean.float().double()) ** 2).sum() / (x64**2).sum())
    assert about_zero > 0.99
    assert q.explained_variance == pytest.approx(0.0, abs=1e-5)
    assert q.l0 == 0.0
    assert q.dead_fraction == 1.0

    # Reconstruction = 0: worse than the mean, EV < 0 (about zero it would be exactly 0).
    q0 = evaluate_sae(_zero_sae(8, 16, torch.zeros(8)), [x32])
    expected = 1 - float((x64**2).sum() / ((x64 - x64.mean(0)) ** 2).sum())
    assert expected < -100
    assert q0.explained_variance == pytest.approx(expected, rel=1e-9)


def test_streaming_matches_one_batch_and_survives_a_large_offset():
    g = torch.Generator().manual_seed(2)
    d_in, d_sae = 16, 48
    # offset 1e3 on unit-variance data: sum(x^2) - n*mean^2 in float32 would lose most digits
    x = (1e3 + torch.randn(3000, d_in, generator=g)).float()
    W_enc = torch.randn(d_in, d_sae, generator=g) / 4
    W_dec = torch.randn(d_sae, d_in, generator=g) / 4
    cfg = SAEConfig(d_in=d_in, d_sae=d_sae, architecture="topk", k=5, apply_b_dec_to_input=True)
    sae = SAE(cfg, W_enc, torch.zeros(d_sae), W_dec, x.double().mean(0).float())

    one = evaluate_sae(sae, [x])
    pieces = evaluate_sae(sae, [x[:7], x[7:1000], x[1000:1001], x[1001:]])
    for a, b in ((one.fvu, pieces.fvu), (one.l0, pieces.l0), (one.dead_fraction, pieces.dead_fraction)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(one.density, pieces.density)

    # ... and both equal a float64 computation done all at once
    with torch.no_grad():
        x_hat = sae(x).double()
    x64 = x.double()
    fvu = float(((x64 - x_hat) ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum())
    assert one.fvu == pytest.approx(fvu, rel=1e-9)
    assert 0 < one.l0 <= 5


def test_chunked_encoding_gives_the_same_numbers(monkeypatch):
    x = _data(n=300, d_in=6, seed=3)
    full = evaluate_sae(_identity_sae(6), [x])
    monkeypatch.setattr(metrics, "_MAX_DENSE_ELEMENTS", 12 * 7)  # 7 tokens per chunk
    chunked = evaluate_sae(_identity_sae(6), [x])
    assert chunked.l0 == pytest.approx(full.l0)
    assert chunked.fvu == pytest.approx(full.fvu, abs=1e-12)
    np.testing.assert_allclose(chunked.density, full.density)


def test_histogram_and_json_summary():
    q = evaluate_sae(_identity_sae(6), [_data()])
    counts, edges = q.histogram(bins=10)
    assert len(edges) == 11 and edges[-1] == 0.0
    assert edges[0] <= np.log10(1 / q.n_tokens)
    assert counts.sum() + q.dead_count == 12
    d = q.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["dead_count"] == 1
    assert sum(d["density_histogram"]["counts"]) == 11
    assert set(d) >= {"explained_variance", "fvu", "l0", "dead_fraction", "n_tokens", "dead_count"}


def test_bad_input_is_a_user_error():
    sae = _identity_sae(6)
    with pytest.raises(InputError):
        evaluate_sae(sae, [torch.zeros(10, 5)])
    with pytest.raises(InputError):
        evaluate_sae(sae, [])

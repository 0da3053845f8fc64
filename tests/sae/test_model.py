"""The SAE math in saeembed.sae.model: activation rules, sparse encoding, identity, shape checks."""

from __future__ import annotations

import pytest
import torch

import saeembed.sae.model as model_mod
from saeembed.errors import SAEError
from saeembed.sae import SAE, SAEConfig

D_IN, D_SAE = 8, 32


def weights(seed=0, b_enc_shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(D_IN, D_SAE, generator=g) * 0.5,
        torch.randn(D_SAE, generator=g) * 0.3 + b_enc_shift,
        torch.randn(D_SAE, D_IN, generator=g) * 0.5,
        torch.randn(D_IN, generator=g) * 0.5,
    )


def make(architecture="relu", *, k=None, threshold=None, seed=0, b_enc_shift=0.0, **cfg):
    W_enc, b_enc, W_dec, b_dec = weights(seed, b_enc_shift)
    if architecture == "jumprelu" and threshold is None:
        threshold = torch.full((D_SAE,), 0.3)
    return SAE(SAEConfig(D_IN, D_SAE, architecture, k=k, **cfg), W_enc, b_enc, W_dec, b_dec, threshold)


def x_batch(n=10, seed=1):
    return torch.randn(n, D_IN, generator=torch.Generator().manual_seed(seed))


def coo_dense(sae, x):
    r, f, v = sae.encode_coo(x)
    out = torch.zeros(x.shape[0], sae.d_sae)
    out[r, f] = v
    return out, r.numel()


def test_topk_keeps_exactly_k_when_all_positive():
    sae = make("topk", k=5, b_enc_shift=100.0)  # every pre-activation is positive
    x = x_batch(12)
    pre = sae.pre_activations(x)
    assert (pre > 0).all()
    z = sae.encode(x)
    assert ((z > 0).sum(1) == 5).all()
    # the kept values are the 5 largest pre-activations of each row, unchanged
    torch.testing.assert_close(z.sort(1, descending=True).values[:, :5], pre.topk(5, dim=1).values)
    dense, nnz = coo_dense(sae, x)
    assert nnz == 12 * 5
    torch.testing.assert_close(dense, z)


def test_topk_drops_negative_values_among_the_top_k():
    sae = make("topk", k=5, b_enc_shift=-100.0)  # every pre-activation is negative
    x = x_batch()
    assert (sae.encode(x) == 0).all()
    assert sae.encode_coo(x)[0].numel() == 0


def test_jumprelu_threshold_is_strictly_greater():
    cfg = SAEConfig(2, 3, "jumprelu")
    sae = SAE(cfg, torch.zeros(2, 3), torch.tensor([0.5, 0.5, 0.5]), torch.zeros(3, 2), torch.zeros(2),
              threshold=torch.tensor([0.5, 0.4, 0.6]))
    z = sae.encode(torch.zeros(4, 2))
    assert z[0].tolist() == [0.0, 0.5, 0.0]  # equal to threshold: off; above: on; below: off


def test_jumprelu_scalar_threshold_applies_to_every_latent():
    sae = make("jumprelu", threshold=torch.tensor(0.3))
    assert sae.threshold.shape == (D_SAE,) and (sae.threshold == 0.3).all()
    x = x_batch()
    pre = sae.pre_activations(x)
    torch.testing.assert_close(sae.encode(x), torch.where(pre > 0.3, pre, torch.zeros_like(pre)))


def test_jumprelu_needs_a_threshold():
    W_enc, b_enc, W_dec, b_dec = weights()
    with pytest.raises(SAEError, match="needs a threshold"):
        SAE(SAEConfig(D_IN, D_SAE, "jumprelu"), W_enc, b_enc, W_dec, b_dec)


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu"])
def test_encode_coo_equals_dense_encode_with_chunks(monkeypatch, architecture):
    sae = make(architecture, k=4 if architecture == "topk" else None)
    x = x_batch(11)
    expected = sae.encode(x)
    assert 0 < (expected > 0).float().mean() < 0.9
    dense, _ = coo_dense(sae, x)
    torch.testing.assert_close(dense, expected)

    monkeypatch.setattr(model_mod, "_MAX_DENSE_ELEMENTS", D_SAE * 3)  # 3 rows per chunk: 4 chunks
    r, f, v = sae.encode_coo(x)
    assert (v > 0).all()
    assert r.max().item() == 10  # rows of later chunks are offset back to their place
    chunked, _ = coo_dense(sae, x)
    torch.testing.assert_close(chunked, expected)


def test_encode_coo_of_no_rows():
    r, f, v = make().encode_coo(torch.zeros(0, D_IN))
    assert r.numel() == f.numel() == v.numel() == 0


def test_apply_b_dec_and_scales():
    sae = make(apply_b_dec_to_input=True, input_scale=2.0)
    x = x_batch()
    pre = (x * 2.0 - sae.b_dec) @ sae.W_enc + sae.b_enc
    torch.testing.assert_close(sae.pre_activations(x), pre)
    z = sae.encode(x)
    torch.testing.assert_close(sae.decode(z), (z @ sae.W_dec + sae.b_dec) / 2.0)  # default 1 / input_scale
    sae.cfg.output_scale = 3.0
    torch.testing.assert_close(sae.decode(z), (z @ sae.W_dec + sae.b_dec) * 3.0)
    torch.testing.assert_close(sae(x), sae.decode(sae.encode(x)))


def test_identity_is_stable_and_follows_weights_and_rule():
    a, b = make(seed=3), make(seed=3)
    assert a.identity == b.identity  # same content, same id
    assert make(seed=3, hook="layers.9", model="other").identity == a.identity  # names are not content

    with torch.no_grad():
        b.W_dec[0, 0] += 1e-3
    b.invalidate_identity()
    assert b.identity != a.identity

    assert make(seed=3, apply_b_dec_to_input=True).identity != a.identity
    assert make("topk", k=4, seed=3).identity != make("topk", k=5, seed=3).identity
    assert make("jumprelu", seed=3).identity != make("jumprelu", seed=3, threshold=torch.full((D_SAE,), 0.4)).identity


def test_d_in_mismatch():
    sae = make()
    with pytest.raises(SAEError, match=r"activations of width 8, got shape \(5, 7\)"):
        sae.encode_coo(torch.zeros(5, 7))
    W_enc, b_enc, W_dec, b_dec = weights()
    with pytest.raises(SAEError, match=r"W_dec has shape \(8, 32\), expected \(32, 8\)"):
        SAE(SAEConfig(D_IN, D_SAE), W_enc, b_enc, W_dec.T, b_dec)


def test_config_validation():
    with pytest.raises(SAEError, match="unknown SAE architecture 'matryoshka'"):
        SAEConfig(D_IN, D_SAE, "matryoshka")
    with pytest.raises(SAEError, match="unknown input normalisation 'rms'"):
        SAEConfig(D_IN, D_SAE, normalize="rms")
    with pytest.raises(SAEError, match="needs k >= 1"):
        SAEConfig(D_IN, D_SAE, "topk")

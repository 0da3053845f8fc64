"""The SAEs shipped besides the default: found by name, read as their card says, a local folder wins."""

import json

import torch

from saeembed.encode.gguf import SMOLLM2_ID
from saeembed.encode.pipeline import resolve_sae
from saeembed.sae.default import SHIPPED, shipped_sae


def test_smollm2_sae_ships_and_resolves_by_name():
    sae = resolve_sae("smollm2")
    card = json.loads((SHIPPED["smollm2"] / "MODEL_CARD.json").read_text())
    assert (sae.d_in, sae.d_sae, sae.cfg.k) == (576, 4096, 32)  # SmolLM2-135M's residual width
    assert sae.cfg.hook == "layers.9" and sae.cfg.model == SMOLLM2_ID == card["model"]
    assert sae.cfg.prepend_bos is True and sae.cfg.context_size == 512
    assert card["heldout"]["explained_variance"] > 0.8
    x = torch.randn(5, 576)
    z = sae.encode(x)
    assert ((z > 0).sum(dim=1) <= 32).all() and torch.isfinite(z).all()


def test_local_folder_named_like_a_shipped_sae_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped_sae("smollm2") == SHIPPED["smollm2"] and shipped_sae("nosuch") is None
    (tmp_path / "smollm2").mkdir()
    assert shipped_sae("smollm2") is None

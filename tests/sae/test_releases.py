"""The release catalogue: `release:RELEASE/SAE_ID` resolved from a Hugging Face cache built here in the hub's
own layout (models--org--name/snapshots/<hash>/..., refs/main), holding files in each release's format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saeembed.errors import SAEError
from saeembed.sae import load_sae
from saeembed.sae.releases import release_entries, releases_table

HASH = "0123456789abcdef0123456789abcdef01234567"


def snapshot(cache, repo_id, commit=HASH):
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def rand(*shape, seed=0, scale=0.4):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def write_gpt2_res_jb(snap, layer=8, d_sae=64, d_in=16, hook=None):
    folder = snap / f"blocks.{layer}.hook_resid_pre"
    folder.mkdir(parents=True)
    w = {"W_enc": rand(d_in, d_sae, seed=1), "b_enc": rand(d_sae, seed=2, scale=0.2),
         "W_dec": rand(d_sae, d_in, seed=3), "b_dec": rand(d_in, seed=4, scale=1.0)}
    # the fields of the real cfg.json (SAELens 2.x, no prepend_bos key, hook_point spelling)
    cfg = {"model_name": "gpt2-small", "hook_point": hook or f"blocks.{layer}.hook_resid_pre", "hook_point_layer": layer,
           "d_in": d_in, "d_sae": d_sae, "dtype": "torch.float32", "context_size": 128, "device": "cpu"}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(folder / "sae_weights.safetensors"))
    return w


def test_release_resolves_from_the_cache_and_loads(cache, monkeypatch):
    import saeembed.sae.releases as rel

    monkeypatch.setattr(rel, "_catalogue", lambda: _small_catalogue())
    w = write_gpt2_res_jb(snapshot(cache, "jbloom/GPT2-Small-SAEs-Reformatted"))
    sae = load_sae("release:gpt2-small-res-jb/blocks.8.hook_resid_pre")
    x = rand(30, 16, seed=5, scale=2.0)
    expected = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])  # SAELens 2 default: subtract b_dec
    assert 0.05 < (expected > 0).float().mean() < 0.9
    torch.testing.assert_close(sae.encode(x), expected, atol=1e-5, rtol=1e-5)
    c = sae.cfg
    assert (c.hook, c.model, c.prepend_bos, c.context_size) == ("layers.8.pre", "openai-community/gpt2", True, 128)
    assert c.extra["model_in_files"] == "gpt2-small" and c.source == "release:gpt2-small-res-jb/blocks.8.hook_resid_pre"
    assert c.extra["release"] == {"release": "gpt2-small-res-jb", "sae_id": "blocks.8.hook_resid_pre",
                                  "repo_id": "jbloom/GPT2-Small-SAEs-Reformatted", "path": "blocks.8.hook_resid_pre"}


def test_newest_snapshot_that_holds_the_files_wins_over_a_stale_one(cache, monkeypatch):
    import saeembed.sae.releases as rel

    monkeypatch.setattr(rel, "_catalogue", lambda: _small_catalogue())
    snapshot(cache, "jbloom/GPT2-Small-SAEs-Reformatted", commit="a" * 40)  # refs/main -> an empty snapshot
    (cache / "models--jbloom--GPT2-Small-SAEs-Reformatted" / "refs" / "main").write_text("a" * 40)
    older = cache / "models--jbloom--GPT2-Small-SAEs-Reformatted" / "snapshots" / HASH
    older.mkdir(parents=True)
    write_gpt2_res_jb(older)
    assert load_sae("release:gpt2-small-res-jb/blocks.8.hook_resid_pre").cfg.d_sae == 64


def test_gemma_scope_release_from_params_npz(cache, monkeypatch):
    import saeembed.sae.releases as rel

    monkeypatch.setattr(rel, "_catalogue", lambda: _small_catalogue())
    d_in, d_sae = 16, 64
    folder = snapshot(cache, "google/gemma-scope-2b-pt-res") / "layer_12" / "width_16k" / "average_l0_82"
    folder.mkdir(parents=True)
    r = np.random.default_rng(0)
    arrays = {"W_enc": r.normal(0, 0.5, (d_in, d_sae)).astype(np.float32), "W_dec": r.normal(0, 0.5, (d_sae, d_in)).astype(np.float32),
              "b_enc": r.normal(0, 0.2, d_sae).astype(np.float32), "b_dec": r.normal(0, 1, d_in).astype(np.float32),
              "threshold": r.uniform(0.2, 0.8, d_sae).astype(np.float32)}
    np.savez(folder / "params.npz", **arrays)
    sae = load_sae("release:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")
    c = sae.cfg
    assert (c.format, c.architecture, c.hook, c.model) == ("gemmascope", "jumprelu", "layers.12", "google/gemma-2-2b")
    assert (c.prepend_bos, c.context_size) == (True, 1024)  # SAELens's gemma_2 config getter
    x = torch.as_tensor(r.normal(0, 1, (20, d_in)), dtype=torch.float32)
    pre = x.double() @ torch.as_tensor(arrays["W_enc"]).double() + torch.as_tensor(arrays["b_enc"]).double()
    expected = torch.relu(pre) * (pre > torch.as_tensor(arrays["threshold"]).double())  # no b_dec subtracted
    assert 0.05 < (expected > 0).double().mean() < 0.9
    torch.testing.assert_close(sae.encode(x).double(), expected, atol=1e-4, rtol=1e-4)


def test_llama_scope_release_from_hyperparams(cache, monkeypatch):
    import saeembed.sae.releases as rel

    catalogue = _small_catalogue()
    monkeypatch.setattr(rel, "_catalogue", lambda: catalogue)
    snap = snapshot(cache, "fnlp/Llama3_1-8B-Base-LXR-8x")
    folder = snap / "Llama3_1-8B-Base-L15R-8x"
    (folder / "checkpoints").mkdir(parents=True)
    enc, dec = rand(64, 16, seed=6), rand(16, 64, seed=7)
    hp = {"d_model": 16, "d_sae": 64, "hook_point_in": "blocks.15.hook_resid_post", "hook_point_out": "blocks.15.hook_resid_post",
          "act_fn": "jumprelu", "jump_relu_threshold": 0.3, "norm_activation": "dataset-wise",
          "dataset_average_activation_norm": {"in": 8.0, "out": 8.0}}
    (folder / "hyperparams.json").write_text(json.dumps(hp))
    save_file({"encoder.weight": enc, "encoder.bias": rand(64, seed=8, scale=0.1), "decoder.weight": dec,
               "decoder.bias": torch.zeros(16)}, str(folder / "checkpoints" / "final.safetensors"))
    sae = load_sae("release:llama_scope_lxr_8x/l15r_8x")
    assert (sae.cfg.format, sae.cfg.hook, sae.cfg.model) == ("llamascope", "layers.15", "meta-llama/Llama-3.1-8B")
    assert sae.cfg.input_scale == pytest.approx(4.0 / 8.0)


def test_missing_files_offline_say_what_to_download(cache):
    with pytest.raises(SAEError) as e:
        load_sae("release:gpt2-small-res-jb/blocks.8.hook_resid_pre")
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and str(cache) in msg
    assert "hf download jbloom/GPT2-Small-SAEs-Reformatted blocks.8.hook_resid_pre/cfg.json " \
           "blocks.8.hook_resid_pre/sae_weights.safetensors" in msg


@pytest.mark.parametrize(("text", "match"), [
    ("release:no-such-release/x", "no release 'no-such-release'.*gpt2-small-res-jb"),
    ("release:gpt2-small-res-jb/blocks.99.hook_resid_pre", "has no SAE id 'blocks.99.hook_resid_pre'; it has blocks.0"),
    ("release:gpt2-small-res-jb", "no SAE id \\(write release:RELEASE/SAE_ID\\)"),
])
def test_unknown_release_or_id(cache, text, match):
    with pytest.raises(SAEError, match=match):
        load_sae(text)


def test_cached_files_that_contradict_the_catalogue_are_refused(cache, monkeypatch):
    import saeembed.sae.releases as rel

    monkeypatch.setattr(rel, "_catalogue", lambda: _small_catalogue())
    write_gpt2_res_jb(snapshot(cache, "jbloom/GPT2-Small-SAEs-Reformatted"), hook="blocks.3.hook_mlp_out")
    with pytest.raises(SAEError, match="files say hook layers.3.mlp_out, the catalogue blocks.8.hook_resid_pre"):
        load_sae("release:gpt2-small-res-jb/blocks.8.hook_resid_pre")


def test_a_local_folder_named_like_a_release_needs_dot_slash(cache, tmp_path, monkeypatch):
    import saeembed.sae.releases as rel

    monkeypatch.setattr(rel, "_catalogue", lambda: _small_catalogue())
    monkeypatch.chdir(tmp_path)
    write_gpt2_res_jb(tmp_path / "release:gpt2-small-res-jb", layer=8)
    with pytest.raises(SAEError, match="HF_HUB_OFFLINE"):  # the prefix always means the catalogue
        load_sae("release:gpt2-small-res-jb/blocks.8.hook_resid_pre")
    assert load_sae("./release:gpt2-small-res-jb/blocks.8.hook_resid_pre").cfg.d_sae == 64


def test_catalogue_contents():
    rows = release_entries()
    by = {(r["release"], r["sae_id"]): r for r in rows}
    assert len([r for r in rows if r["release"] == "gpt2-small-res-jb"]) == 13
    assert by[("gpt2-small-res-jb", "blocks.8.hook_resid_pre")]["path"] == "blocks.8.hook_resid_pre"
    assert by[("llama_scope_lxr_8x", "l31r_8x")]["path"] == "Llama3_1-8B-Base-L31R-8x"
    assert by[("pythia-70m-deduped-res-sm", "blocks.0.hook_resid_pre")]["path"] == "e-res-sm"
    assert by[("pythia-70m-deduped-res-sm", "blocks.5.hook_resid_post")]["path"] == "5-res-sm"
    from saeembed.hookpoints import try_parse_hook

    assert all(try_parse_hook(r["hook"]) is not None for r in rows)  # every catalogued hook can be captured
    assert releases_table("gemma-scope-2b-pt-res-canonical").height == 2


def test_cli_releases_and_info(cache, capsys, monkeypatch):
    from tests.test_cli import run as cli_run

    def run(*args):
        return cli_run(capsys, monkeypatch, *args)

    code, out, _ = run("sae", "releases", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == len(release_entries())
    assert {"release": "llama_scope_lxr_8x", "sae_id": "l3r_8x", "hook": "blocks.3.hook_resid_post"}.items() <= \
        next(r for r in rows if r["sae_id"] == "l3r_8x").items()
    code, out, err = run("sae", "info", "release:gpt2-small-res-jb/blocks.8.hook_resid_pre")
    assert code != 0 and "hf download" in err and "Traceback" not in err
    monkeypatch.setattr("saeembed.sae.releases._catalogue", lambda: _small_catalogue())
    write_gpt2_res_jb(snapshot(cache, "jbloom/GPT2-Small-SAEs-Reformatted"))
    code, out, err = run("sae", "info", "release:gpt2-small-res-jb/blocks.8.hook_resid_pre", "--json")
    info = json.loads(out)
    assert code == 0, err
    assert (info["hook"], info["model"], info["format"], info["context_size"]) == \
        ("layers.8.pre", "openai-community/gpt2", "saelens", 128)


def _small_catalogue():
    """The real catalogue with its sizes shrunk to what the test files hold (the real ones are GBs)."""
    from saeembed.sae.releases import _CATALOGUE

    releases = json.loads(_CATALOGUE.read_text())["releases"]
    for name in ("gpt2-small-res-jb", "llama_scope_lxr_8x", "gemma-scope-2b-pt-res-canonical"):
        releases[name] = {**releases[name], "d_in": 16, "d_sae": 64}
    return releases

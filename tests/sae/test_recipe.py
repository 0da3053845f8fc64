"""`saeembed sae train` and `sae eval` through the real CLI on a tiny model, on text written here."""

import json
import random

from saeembed.sae.formats import load_sae
from saeembed.sae.recipe import is_heldout
from tests.conftest import CORPUS_WORDS
from tests.test_cli import run


def _write_texts(path, n=1500, seed=0):
    rng = random.Random(seed)
    rows = [{"text": " ".join(rng.choices(CORPUS_WORDS, k=rng.randint(5, 30)))} for _ in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_train_then_eval(tmp_path, capsys, monkeypatch, tiny_bert_dir):
    data = tmp_path / "texts.jsonl"
    _write_texts(data)
    out = tmp_path / "sae"
    code, stdout, err = run(capsys, monkeypatch, "sae", "train", "--model", tiny_bert_dir, "--hook", "layers.1",
                            "--data", data, "--out", out, "--latents", "128", "--k", "8", "--batch-size", "256",
                            "--max-tokens", "20000", "--device", "cpu", "--json")
    assert code == 0, err
    card = json.loads(stdout)
    assert card["hook"] == "layers.1" and card["d_sae"] == 128 and card["k"] == 8
    assert 20000 - 256 < card["tokens_seen"] <= 20000  # whole optimizer steps of 256 tokens
    held = card["heldout"]
    assert 0.3 < held["explained_variance"] <= 1.0  # a trained SAE explains much of a tiny model's variance
    assert 0 < held["l0"] <= 8
    sae = load_sae(out)
    assert (sae.d_in, sae.d_sae, sae.cfg.k, sae.cfg.hook) == (32, 128, 8, "layers.1")
    assert sae.cfg.extra["model_card"]["tokens_seen"] == card["tokens_seen"]

    other = tmp_path / "other.jsonl"
    _write_texts(other, n=60, seed=1)
    code, stdout, err = run(capsys, monkeypatch, "sae", "eval", str(out), "--model", tiny_bert_dir,
                            "--data", other, "--device", "cpu", "--json")
    assert code == 0, err
    q = json.loads(stdout)
    assert {"explained_variance", "l0", "dead_fraction", "n_tokens"} <= set(q)
    assert q["hook"] == "layers.1" and q["n_tokens"] > 300
    assert abs(q["explained_variance"] - held["explained_variance"]) < 0.2  # same distribution of text


def test_heldout_split_is_stable_and_small():
    texts = [f"document {i}" for i in range(2000)]
    held = [t for t in texts if is_heldout(t)]
    assert held == [t for t in texts if is_heldout(t)]
    assert 60 < len(held) < 140  # about 1 in 20


def test_train_batch_topk_through_the_cli(tmp_path, capsys, monkeypatch, tiny_bert_dir):
    data = tmp_path / "texts.jsonl"
    _write_texts(data)
    out = tmp_path / "sae"
    code, stdout, err = run(capsys, monkeypatch, "sae", "train", "--model", tiny_bert_dir, "--hook", "layers.1",
                            "--data", data, "--out", out, "--latents", "128", "--k", "8", "--architecture",
                            "batchtopk", "--batch-size", "256", "--max-tokens", "20000", "--device", "cpu", "--json")
    assert code == 0, err
    card = json.loads(stdout)
    assert card["architecture"] == "batchtopk" and card["k"] == 8
    sae = load_sae(out)
    assert sae.cfg.architecture == "jumprelu" and float(sae.threshold.min()) > 0
    # the threshold keeps about k latents per token on unseen text of the same kind (not exactly k)
    assert 3 < card["heldout"]["l0"] < 16, card["heldout"]["l0"]
    assert card["heldout"]["explained_variance"] > 0.3
    code, _, err = run(capsys, monkeypatch, "sae", "train", "--model", tiny_bert_dir, "--hook", "layers.1",
                       "--data", data, "--out", tmp_path / "x", "--architecture", "gated", "--device", "cpu")
    assert code != 0 and "batchtopk" in err

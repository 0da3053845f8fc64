"""The feature atlas: phrase labels on planted features, the file's round trip and refusal of another SAE's
atlas, a store showing atlas names under user labels, a resumable build, imported label sets."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from saeembed import atlas_format
from saeembed.atlas_format import find_atlas, read_atlas, write_atlas
from saeembed.errors import SAEError
from saeembed.interp.atlas import import_labels, parse_label_file
from saeembed.interp.atlas_build import CHECKPOINT, atlas_from_records, label_pass, read_checkpoint
from saeembed.interp.scoring import EmbeddingScorer
from saeembed.store import Store
from tests.interp.planted import FILLERS, bag_of_words_embed, write_planted
from tests.synthetic import make_sae

PRICES = ["$18.75", "$49", "$120", "$5.99", "$1,200", "$3.50", "$75", "$240"]
QUESTIONS = ["is the shop open today?", "can you help me with this?", "what time does it start?",
             "where did you park the car?", "why is the sky blue?", "how much is the ticket?"]


def _at(text: str, piece: str, sub: str) -> tuple[int, int]:
    """Span of `sub` inside the first `piece` of text (the token the feature fired on)."""
    i = text.index(piece) + piece.index(sub)
    return i, i + len(sub)


def currency_store(store: Store, n: int = 200, seed: int = 1):
    """feature 2: the digits of a price ("$18.75" fires at "18"); feature 4: a question's "?";
    features 8..15: random filler words (co-firing background)."""
    rng = random.Random(seed)
    sae = store.register_sae(make_sae(8, 16, seed=3))
    texts, acts = [], []
    for i in range(n):
        parts = rng.sample(FILLERS, 2)
        rows = []
        if i % 3 == 0:
            price = rng.choice(PRICES)
            parts.insert(1, f"the lamp costs {price} at the store")
        elif i % 3 == 1:
            parts.append(rng.choice(QUESTIONS).rstrip("?"))
        text = ". ".join(parts)
        text = text + "?" if i % 3 == 1 else text + "."
        if i % 3 == 0:
            digits = price.strip("$").split(".")[0].split(",")[0]
            rows.append((2, 1.0 + 3 * rng.random(), *_at(text, price, digits)))
        if i % 3 == 1:
            rows.append((4, 1.0 + 3 * rng.random(), len(text) - 1, len(text)))
        words = [w for w in text.replace(".", " ").split() if w.isalpha() and len(w) > 3]
        for f in rng.sample(range(8, 16), 3):
            w = rng.choice(words)
            rows.append((f, rng.random(), text.index(w), text.index(w) + len(w)))
        texts.append(text)
        acts += [(i, f, v, 1, s, e) for f, v, s, e in rows]
    write_planted(store, sae, "shop", texts, acts)
    return sae


def _build(store, sae, out, **kw):
    kw.setdefault("chunk", 4)
    lp = label_pass(store, sae, out, scorer=EmbeddingScorer(bag_of_words_embed), background=100, **kw)
    return lp, read_checkpoint(out / CHECKPOINT, sae.sae_hash)


@pytest.fixture
def shop(store, tmp_path):
    sae = currency_store(store)
    lp, records = _build(store, sae, tmp_path / "build")
    assert lp.finished
    return store, sae, records


def test_phrase_labels_name_currency_amounts_and_questions(shop):
    _, _, rec = shop
    cur, q = rec[2], rec[4]
    assert cur["label"].startswith("currency amounts (") and cur["kind"] == "currency"
    shown = cur["label"].split("(", 1)[1]
    assert sum(p in shown for p in PRICES) == 2  # two of the planted amounts, whole ("$18.75", not "18")
    assert q["label"].startswith('"?" ending a question') and q["kind"] == "punct"
    assert cur["score"] > 0.6 and cur["weak"] is False  # the label's context words are in held-out windows
    assert cur["density"] == pytest.approx(67 / 200) and q["density"] == pytest.approx(67 / 200)
    ex = cur["exemplars"][0]
    assert ex["text"][ex["start"]:ex["end"]].isdigit() and "$" + ex["text"][ex["start"]:ex["end"]] in ex["text"]
    assert len(cur["exemplars"]) == 5 and cur["exemplars"][0]["value"] >= cur["exemplars"][-1]["value"]


def test_atlas_round_trip_and_refusal_of_another_sae(shop, tmp_path):
    _, sae, rec = shop
    atlas = atlas_from_records(rec, sae, embed=bag_of_words_embed, embed_model="bow", meta={"built_from": ["x"]})
    path = write_atlas(atlas, tmp_path)
    back = read_atlas(path, sae_hash=sae.sae_hash)
    assert back.features.tolist() == sorted(rec) and back.labels == [rec[f]["label"] for f in sorted(rec)]
    assert back.vectors.dtype == np.float16 and back.vectors.shape == (len(rec), 256)
    np.testing.assert_allclose(back.vectors.astype(np.float32), atlas.vectors.astype(np.float32))
    np.testing.assert_allclose(back.score_hard, [rec[f]["score_hard"] for f in sorted(rec)], rtol=1e-6)
    assert back.entry(2)["exemplars"] == rec[2]["exemplars"] and back.entry(7) is None
    assert back.embed_model == "bow" and back.meta["built_from"] == ["x"]
    with pytest.raises(SAEError, match="built for SAE"):
        read_atlas(path, sae_hash="0123456789abcdef")
    assert find_atlas("0123456789abcdef", str(tmp_path)) is None  # a store never uses another SAE's atlas
    assert find_atlas(sae.sae_hash, str(tmp_path)).labels == back.labels
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(SAEError, match="not a readable atlas"):
        read_atlas(tmp_path / "bad.npz")


def test_store_shows_atlas_names_and_user_labels_win(shop, tmp_path, monkeypatch):
    store, sae, rec = shop
    atlas = atlas_from_records(rec, sae, embed=bag_of_words_embed, embed_model="bow", meta={})
    write_atlas(atlas, tmp_path)
    monkeypatch.setattr(atlas_format, "DEFAULT_SAE_DIR", tmp_path)  # where stores look for an SAE's atlas
    rows = {r["feature"]: r for r in store.labels(sae.sae_key).to_dicts()}
    assert set(rows) == set(rec) and {r["label_source"] for r in rows.values()} == {"atlas"}
    assert rows[2]["label"] == rec[2]["label"] and rows[2]["score"] == pytest.approx(rec[2]["score"], rel=1e-5)
    store.save_labels(sae.sae_key, "me", [(2, "prices in a shop", "hand", None, {})])
    rows = {r["feature"]: r for r in store.labels(sae.sae_key, [2, 4], descriptions=True).to_dicts()}
    assert (rows[2]["label"], rows[2]["label_source"]) == ("prices in a shop", "hand")
    assert rows[4]["label_source"] == "atlas" and rows[4]["description"] == rec[4]["description"]
    assert store.labels(sae.sae_key, atlas=False)["feature"].to_list() == [2]
    # text search reads the atlas's description vectors: keyed by the atlas label's hash, nothing embedded
    from saeembed.interp.match import _hash

    vecs = store.feature_embeddings(sae.sae_key, "bow")
    key = (4, "label", _hash(rec[4]["label"]))
    assert key in vecs and np.allclose(vecs[key], bag_of_words_embed([rec[4]["description"]])[0], atol=1e-3)
    assert store.feature_embeddings(sae.sae_key, "another-model") == {}


def test_build_stopped_and_resumed_equals_one_run(store, tmp_path):
    sae = currency_store(store)
    lp1, part = _build(store, sae, tmp_path / "a", stop_after=3)
    assert not lp1.finished and len(part) == 3 and lp1.done == 3
    with open(tmp_path / "a" / CHECKPOINT, "a") as fh:
        fh.write('{"feature": 9, "lab')  # a torn line from a crash mid-write is dropped
    lp2, resumed = _build(store, sae, tmp_path / "a")
    _, once = _build(store, sae, tmp_path / "b")
    assert lp2.finished and sorted(resumed) == sorted(once) == [2, 4] + list(range(8, 16))
    for f in once:
        assert resumed[f]["label"] == once[f]["label"] and resumed[f]["exemplars"] == once[f]["exemplars"]
        assert resumed[f]["score"] == pytest.approx(once[f]["score"], abs=1e-6)
    with pytest.raises(SAEError, match="partial atlas of SAE"):
        read_checkpoint(tmp_path / "a" / CHECKPOINT, "0123456789abcdef")


def test_import_a_published_label_set(shop, tmp_path):
    _, sae, rec = shop
    sae_obj = make_sae(8, 16, seed=3)
    assert sae_obj.identity == sae.sae_hash
    write_atlas(atlas_from_records(rec, sae, embed=bag_of_words_embed, embed_model="bow", meta={}), tmp_path)
    exported = [{"modelId": "m", "layer": "4-res", "index": "2", "description": "prices in dollars"},
                {"index": 7, "description": "  never  seen  "}, {"index": 99, "description": "out of range"}]
    (tmp_path / "np.json").write_text(json.dumps(exported))
    assert parse_label_file(tmp_path / "np.json", 16) == {2: "prices in dollars", 7: "never seen"}
    path, n = import_labels(sae_obj, tmp_path / "np.json", tmp_path, embed=bag_of_words_embed, embed_model="bow")
    a = read_atlas(path, sae_hash=sae.sae_hash)
    assert n == 2 and a.entry(2)["label"] == "prices in dollars" and a.entry(2)["label_source"] == "imported"
    assert a.entry(7)["label"] == "never seen" and a.entry(4)["label"] == rec[4]["label"]
    assert a.entry(2)["score"] is None and len(a) == len(rec) + 1
    i = a.row(2)
    assert np.allclose(a.vectors[i].astype(np.float32), bag_of_words_embed(["prices in dollars"])[0], atol=1e-3)


def test_sae_atlas_cli_builds_installs_and_a_store_shows_the_names(capsys, monkeypatch, tmp_path, tiny_bert_dir):
    """`saeembed sae atlas SAE --data FILE --out DIR` end to end on a tiny model: the atlas lands beside the
    weights, a store encoded with that SAE shows its labels (source "atlas") from the first run, and
    `--import-labels` puts a published label in."""
    from saeembed.sae.formats import save_sae
    from tests.conftest import make_sae as make_model_sae
    from tests.test_cli import run

    words = ["refund", "order", "login", "password", "battery", "price", "shipping", "billing"]
    rng = random.Random(0)
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(rng.choices(words, k=8)) + rng.choice([" ?", " !", " ."])})
                            + "\n" for _ in range(60)))
    sae_dir = save_sae(make_model_sae(32, 64, hook="layers.1", model=str(tiny_bert_dir)), tmp_path / "sae")
    args = ["sae", "atlas", sae_dir, "--data", data, "--out", tmp_path / "build", "--docs", "0", "--json"]
    code, out, err = run(capsys, monkeypatch, *args)
    assert code == 0, err
    res = json.loads(out)
    assert res["finished"] and res["documents"] == 60 and res["labelled"] == res["live_features"] > 10
    assert res["installed"] == str(sae_dir / "atlas.npz")
    code, out, err = run(capsys, monkeypatch, *args)  # a second run finds everything done
    assert code == 0 and json.loads(out)["labelled"] == res["labelled"]
    code, out, err = run(capsys, monkeypatch, "ingest", data, "--corpus", "c", "--store", tmp_path / "s.duckdb")
    code, out, err = run(capsys, monkeypatch, "encode", "c", "--model", tiny_bert_dir, "--sae", sae_dir,
                         "--store", tmp_path / "s.duckdb")
    assert code == 0, err
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        labels = st.labels(1)
    assert labels.height == res["labelled"] and set(labels["label_source"]) == {"atlas"}
    f = int(labels["feature"][0])
    (tmp_path / "set.json").write_text(json.dumps({str(f): "a published name"}))
    code, out, err = run(capsys, monkeypatch, "sae", "atlas", sae_dir, "--import-labels", tmp_path / "set.json",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["imported"] == 1
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        assert st.labels(1, [f])["label"].to_list() == ["a published name"]

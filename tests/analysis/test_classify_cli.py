"""classify and filter as a user runs them (real entry point, store file with planted embeddings)."""

import json

import numpy as np
import pytest

from saeembed.store import Store
from tests.analysis.test_classify import planted
from tests.synthetic import register_sae, write_corpus
from tests.test_cli import run


@pytest.fixture
def proj(tmp_path):
    path = tmp_path / "p.duckdb"
    with Store(path) as st:
        sae = register_sae(st, 40)
        docs, labels = planted(200, 0)
        texts = [("you idiot " if y else "thanks friend ") + f"row {i}" for i, y in enumerate(labels)]
        write_corpus(st, sae, "tox", docs, texts=texts, meta={"toxic": labels, "source": ["a", "b"] * 100},
                     ids=[f"t{i}" for i in range(200)])
        docs2, labels2 = planted(80, 1)
        write_corpus(st, sae, "other", docs2, meta={"toxic": labels2})
        write_corpus(st, register_sae(st, 40, seed=9), "alien", planted(20, 2)[0])
    return path, tmp_path


def test_train_apply_eval_json(capsys, monkeypatch, proj):
    path, tmp = proj
    code, out, err = run(capsys, monkeypatch, "classify", "train", "tox", "--label-column", "toxic", "--name", "toxicity",
                         "--baseline", "tfidf", "--store", path, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["auroc"] > 0.95 and 0 <= res["f1"] <= 1 and set(res["baseline"]) >= {"auroc", "f1"}
    assert res["baseline"]["kind"] == "tfidf" and res["n_test"] == 40
    assert {r["feature"] for r in res["top_features"] if r["direction"] == "+"} >= {3, 7}
    code, out, err = run(capsys, monkeypatch, "classify", "apply", "toxicity", "--corpus", "other", "--store", path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 80 and rows[0]["toxicity"] >= rows[-1]["toxicity"]
    code, out, err = run(capsys, monkeypatch, "classify", "eval", "toxicity", "--corpus", "other", "--label-column", "toxic",
                         "--baseline", "tfidf", "--store", path, "--json")
    assert code == 0, err
    ev = json.loads(out)
    assert ev["auroc"] > 0.9 and set(ev["baseline"]) >= {"auroc", "f1"}
    code, out, err = run(capsys, monkeypatch, "classify", "train", "tox", "--label-column", "toxic", "--name", "t2",
                         "--store", path)
    assert code == 0 and "AUROC" in out and "held-out" in out
    code, out, err = run(capsys, monkeypatch, "classify", "list", "--store", path, "--json")
    assert [r["name"] for r in json.loads(out)] == ["t2", "toxicity"]


@pytest.mark.parametrize("args, message", [
    (["classify", "apply", "toxicity", "--corpus", "alien"], "trained on SAE"),
    (["classify", "apply", "nope", "--corpus", "other"], "no classifier named 'nope'"),
    (["classify", "train", "tox", "--label-column", "zzz", "--name", "x"], "no column 'zzz'"),
    (["classify", "train", "tox", "--label-column", "toxic", "--name", "x", "--baseline", "bert"], "unknown baseline"),
    (["filter", "tox", "--drop", "toxicity >", "--dry-run"], "cannot parse"),
    (["filter", "tox", "--drop", "f4000 > 1", "--dry-run"], "does not exist"),
    (["filter", "tox", "--dedupe", "0.9"], "--out"),
    (["filter", "tox", "--drop", "source = 'a'", "--out", "{tmp}/x.txt", "--dropped", "{tmp}/d.jsonl"], ".jsonl"),
])
def test_errors_are_one_line(capsys, monkeypatch, proj, args, message):
    path, tmp = proj
    if "toxicity" in args:
        run(capsys, monkeypatch, "classify", "train", "tox", "--label-column", "toxic", "--name", "toxicity", "--store", path)
    code, out, err = run(capsys, monkeypatch, *[a.format(tmp=tmp) for a in args], "--store", path)
    assert code == 1 and message in err and "Traceback" not in err
    assert err.strip().count("\n") <= 2  # one message (rich may wrap it)


def test_filter_cli(capsys, monkeypatch, proj):
    path, tmp = proj
    run(capsys, monkeypatch, "classify", "train", "tox", "--label-column", "toxic", "--name", "toxicity", "--store", path)
    code, out, err = run(capsys, monkeypatch, "filter", "tox", "--drop", "toxicity > 0.8", "--keep", "source = 'a'",
                         "--drop-feature", "11", "--dry-run", "--store", path, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["dry_run"] and s["check"]["ok"] and s["kept"] + s["dropped"] == 200
    assert [r["rule"] for r in s["rules"]] == ["keep: source = 'a'", "drop: toxicity > 0.8", "drop-feature: 11"]
    assert not (tmp / "kept.jsonl").exists()
    code, out, err = run(capsys, monkeypatch, "filter", "tox", "--drop", "toxicity > 0.8", "--out", tmp / "kept.jsonl",
                         "--dropped", tmp / "dropped.jsonl", "--store", path)
    assert code == 0, err
    kept = [json.loads(l) for l in (tmp / "kept.jsonl").read_text().splitlines()]
    dropped = [json.loads(l) for l in (tmp / "dropped.jsonl").read_text().splitlines()]
    assert len(kept) + len(dropped) == 200 and "check: 200 input rows" in err
    assert all(r["drop_rule"] == "drop: toxicity > 0.8" for r in dropped)
    assert np.mean([r["toxic"] for r in dropped]) > 0.9 and np.mean([r["toxic"] for r in kept]) < 0.1


def test_filter_keep_short_flag_still_works_with_a_note(capsys, monkeypatch, proj):
    # -k now means --k (clusters); as --keep it keeps working for one release and says so on stderr.
    path, _ = proj
    code, out, err = run(capsys, monkeypatch, "filter", "tox", "-k", "source = 'a'", "--dry-run", "--store", path, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert [r["rule"] for r in s["rules"]] == ["keep: source = 'a'"] and s["kept"] == 100
    assert "deprecated" in err and "--keep" in err
    code, out, err = run(capsys, monkeypatch, "filter", "tox", "--keep", "source = 'a'", "--dry-run", "--store", path, "--json")
    assert code == 0 and json.loads(out)["kept"] == 100 and "deprecated" not in err


def test_zero_shot_features_count_spelling_still_works_with_a_note(capsys, monkeypatch, proj):
    # --features means feature ids everywhere; the count is --n-features (old spelling kept one release).
    path, _ = proj
    code, out, err = run(capsys, monkeypatch, "classify", "zero-shot", "toxic", "--corpus", "tox", "--features", "2",
                         "--store", path, "--json")
    assert code == 0, err
    assert len(json.loads(out)["features"]) <= 2 and "deprecated" in err and "--n-features" in err
    code, new_out, err = run(capsys, monkeypatch, "classify", "zero-shot", "toxic", "--corpus", "tox", "--n-features", "2",
                             "--store", path, "--json")
    assert code == 0 and "deprecated" not in err
    assert json.loads(new_out)["features"] == json.loads(out)["features"]

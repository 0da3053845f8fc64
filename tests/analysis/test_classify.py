"""Probes on planted sparse embeddings: the weights must land on the planted features."""

import json

import numpy as np
import pytest

from saeembed.analysis.classify import ProbeConfig, apply_classifier, evaluate_classifier, train_classifier
from saeembed.analysis.classify import LinearProbe
from saeembed.analysis.selection import embedding_matrix, select
from saeembed.errors import InputError, StoreError
from tests.synthetic import register_sae, write_corpus


def planted(n, seed, *, signal=(3, 7), anti=(11,), d=40, noise=0.08):
    """Positives fire features 3 and 7 (each with prob .9), negatives fire 11; every doc fires random noise."""
    rng = np.random.default_rng(seed)
    docs, labels = [], []
    for i in range(n):
        pos = bool(i % 3 == 0)
        row = {int(f): float(rng.uniform(0.2, 1.0)) for f in np.flatnonzero(rng.random(d) < noise)}
        for f in (signal if pos else anti):
            if rng.random() < 0.9:
                row[f] = float(rng.uniform(0.5, 2.0))
        if not pos:
            for f in signal:
                row.pop(f, None)
        else:
            for f in anti:
                row.pop(f, None)
        docs.append(row)
        labels.append(pos)
    return docs, labels


@pytest.fixture
def toy(store):
    sae = register_sae(store, 40)
    docs, labels = planted(300, 0)
    write_corpus(store, sae, "train", docs, meta={"toxic": labels, "src": ["a" if i % 2 else "b" for i in range(300)]})
    docs2, labels2 = planted(120, 1)
    write_corpus(store, sae, "other", docs2, meta={"toxic": labels2})
    return store, sae


def test_probe_recovers_planted_features_and_reloads(toy):
    store, sae = toy
    res = train_classifier(store, "train", "toxic", "tox", config=ProbeConfig(seed=1))
    assert res.metrics["auroc"] > 0.95 and res.metrics["f1"] > 0.85
    pos = res.top_features.filter(res.top_features["direction"] == "+")["feature"].to_list()
    neg = res.top_features.filter(res.top_features["direction"] == "-")["feature"].to_list()
    assert set(pos[:2]) == {3, 7} and neg[0] == 11
    assert res.info["n_test"] == 60 and res.info["n_train"] == 240
    # PR table: recall never rises with the threshold
    rec = res.pr["recall"].to_list()
    assert all(a >= b for a, b in zip(rec, rec[1:]))
    # saved with SAE identity and provenance; reloaded weights give the same scores as at training time
    clf = store.load_classifier("tox")
    assert clf.sae.sae_hash == sae.sae_hash and clf.provenance["corpus"] == "train"
    assert len(clf.params["train_doc_idx"]) == 240 and not set(clf.params["train_doc_idx"]) & set(clf.params["test_doc_idx"])
    stored = store.doc_scores(store.corpus("train"), ["tox"])["tox"].to_numpy()
    probe = LinearProbe.from_json(json.loads(json.dumps(clf.model)))
    X = embedding_matrix(store, select(store, "train"))
    assert np.array_equal(probe.predict_proba(X), stored)
    again = apply_classifier(store, "tox", "train")
    assert np.array_equal(again["tox"].to_numpy(), stored)


def test_probe_matches_sklearn(toy):
    """Folding the MaxAbs scale into stored weights must not change sklearn's probabilities."""
    from saeembed.analysis.classify_fit import _maxabs, _scaled, _to_probe, fit_cv

    store, _ = toy
    sel = select(store, "train")
    X = embedding_matrix(store, sel)
    y = np.array([i % 3 == 0 for i in range(300)], dtype=int)
    scale = _maxabs(X)
    model, C, _ = fit_cv(_scaled(X, scale), y, ProbeConfig())
    probe = _to_probe(model, scale, [False, True], True, False)
    np.testing.assert_allclose(probe.predict_proba(X), model.predict_proba(_scaled(X, scale))[:, 1], atol=1e-9)


def test_large_training_sets_choose_c_on_a_sample_and_fit_on_all(toy):
    """Above cv_max_rows, C is chosen on a stratified sample; the model is still fitted on every row."""
    from saeembed.analysis.classify_fit import _cv_sample, _logreg, _maxabs, _scaled, fit_cv

    store, _ = toy
    X = embedding_matrix(store, select(store, "train"))
    X = _scaled(X, _maxabs(X))
    y = np.array([i % 3 == 0 for i in range(300)], dtype=int)
    cfg = ProbeConfig(cv_max_rows=90)
    model, C, cv = fit_cv(X, y, cfg)
    assert set(cv["cv_rows"].to_list()) == {90}
    sample = _cv_sample(y, None, 90, cfg.seed)
    assert len(sample) == 90 and y[sample].sum() == 30  # the class shares of all 300 rows (1 in 3 positive)
    everything = _logreg(C, cfg, False, l1=True).fit(X, y)
    np.testing.assert_allclose(model.coef_, everything.coef_)  # final fit on all rows, not the sample
    full_model, _, full_cv = fit_cv(X, y, ProbeConfig(cv_max_rows=None))
    assert set(full_cv["cv_rows"].to_list()) == {300}
    groups = np.arange(300) // 2  # paired rows: the sample keeps both rows of a pair
    grouped = _cv_sample(y, groups, 90, 0)
    assert len(grouped) == 90 and np.all(np.bincount(groups[grouped])[np.unique(groups[grouped])] == 2)


def test_apply_and_transfer_eval(toy):
    store, _ = toy
    train_classifier(store, "train", "toxic", "tox")
    out = apply_classifier(store, "tox", "other")
    assert out.height == 120 and out["tox"].is_between(0, 1).all()
    lab = np.array([i % 3 == 0 for i in range(120)])
    assert out.filter(lab)["tox"].mean() > out.filter(~lab)["tox"].mean() + 0.5
    ev = evaluate_classifier(store, "tox", "other", "toxic")
    assert ev["auroc"] > 0.95 and ev["trained_on"] == "train" and "baseline" not in ev
    assert "rows_seen_in_training" not in ev
    assert evaluate_classifier(store, "tox", "train", "toxic")["rows_seen_in_training"] == 240


def test_tfidf_baseline_same_split(store):
    sae = register_sae(store, 40)
    docs, labels = planted(120, 2)
    texts = [("you idiot " if y else "thanks friend ") + f"row {i}" for i, y in enumerate(labels)]
    write_corpus(store, sae, "t", docs, texts=texts, meta={"toxic": labels})
    res = train_classifier(store, "t", "toxic", "tox", baselines=["tfidf"])
    assert res.baselines["tfidf"]["auroc"] == 1.0 and res.baselines["tfidf"]["n"] == res.metrics["n"]
    d = res.to_dict()
    assert set(d["baseline"]) >= {"auroc", "f1"} and d["baseline"]["kind"] == "tfidf"
    ev = evaluate_classifier(store, "tox", "t", "toxic", baselines=["tfidf"])
    assert ev["baseline"]["auroc"] == 1.0


def test_multiclass(store):
    sae = register_sae(store, 30)
    rng = np.random.default_rng(0)
    docs, cls = [], []
    for i in range(240):
        c = ["hate", "offensive", "neither"][i % 3]
        row = {int(f): 0.5 for f in np.flatnonzero(rng.random(30) < 0.1)}
        row[{"hate": 1, "offensive": 2, "neither": 3}[c]] = 1.5
        docs.append(row)
        cls.append(c)
    write_corpus(store, sae, "m", docs, meta={"class": cls})
    res = train_classifier(store, "m", "class", "kind")
    assert res.metrics["auroc"] > 0.95 and res.metrics["f1"] > 0.9
    top = {r["class"]: r["feature"] for r in res.top_features.iter_rows(named=True) if r["direction"] == "+"}
    assert top == {"hate": 1, "offensive": 2, "neither": 3} or all(
        res.top_features.filter(res.top_features["class"] == c)["feature"][0] == f
        for c, f in {"hate": 1, "offensive": 2, "neither": 3}.items())
    scores = store.doc_scores(store.corpus("m"), ["kind.hate", "kind.neither", "kind.offensive"])
    total = scores["kind.hate"] + scores["kind.neither"] + scores["kind.offensive"]
    assert np.allclose(total.to_numpy(), 1.0)


def test_apply_refuses_other_sae(toy):
    store, _ = toy
    train_classifier(store, "train", "toxic", "tox")
    other = register_sae(store, 40, seed=5)
    write_corpus(store, other, "elsewhere", planted(30, 3)[0])
    with pytest.raises(StoreError, match="trained on SAE .* encoded with SAE"):
        apply_classifier(store, "tox", "elsewhere")


@pytest.mark.parametrize("label, err", [("nope", "no column 'nope'"), ("src", None)])
def test_label_problems(toy, label, err):
    store, _ = toy
    if err:
        with pytest.raises(InputError, match=err):
            train_classifier(store, "train", label, "x")
    else:  # a random label: the probe should be near chance on held-out data
        res = train_classifier(store, "train", label, "x")
        assert 0.3 < res.metrics["auroc"] < 0.7


@pytest.mark.parametrize("name", ["bad name", "1abc", "x'; DROP TABLE classifiers; --", ""])
def test_hostile_names_rejected(toy, name):
    store, _ = toy
    with pytest.raises(InputError):
        train_classifier(store, "train", "toxic", name)
    assert store.query("SELECT count(*) AS n FROM classifiers")["n"][0] == 0


def test_zero_shot_scores_by_matched_features(toy):
    """match_features (with a matcher that returns the planted features) -> scores; saved, re-applicable."""
    import polars as pl

    from saeembed.analysis.classify import zero_shot

    store, _ = toy
    calls = []

    def matcher(store_, sae, query, *, corpus=None, top=10, **_):
        calls.append((query, corpus, top))
        return pl.DataFrame({"feature": [3, 7, 11], "score": [0.9, 0.6, -0.2], "label": [None, None, None],
                             "evidence": ["planted", "planted", "anti"]})

    res = zero_shot(store, "insults", "train", name="zs", label_column="toxic", match_options={"matcher": matcher})
    assert calls == [("insults", "train", 10)]
    assert res.features["feature"].to_list() == [3, 7]  # the negative match is not used
    assert res.metrics["auroc"] > 0.95
    top = res.scores.head(20)
    assert top["zs"].is_sorted(descending=True) and top["zs"].max() <= 1.0
    again = apply_classifier(store, "zs", "other")
    lab = np.array([i % 3 == 0 for i in range(120)])
    assert again.filter(lab)["zs"].mean() > again.filter(~lab)["zs"].mean() + 0.3
    assert store.load_classifier("zs").kind == "zero_shot"


# --- review fixes ------------------------------------------------------------------------------------


def _refuse(name):
    raise ValueError(f"not strict JSON: {name}")


def strict(text: str):
    """json.loads that refuses NaN / Infinity, as a strict JSON reader does."""
    return json.loads(text, parse_constant=_refuse)


def test_top_features_lists_each_feature_once(toy):
    """Fewer non-zero weights than `top`: every feature once, positives first (largest first), then
    negatives (most negative first)."""
    from saeembed.analysis.classify import top_features

    store, _ = toy
    sel = select(store, "train")
    X = embedding_matrix(store, sel)
    y = np.array([i % 3 == 0 for i in range(300)], dtype=int)
    probe = LinearProbe(classes=[False, True], weights=[{3: 1.2, 7: 0.4, 2: -0.8, 11: -1.5}], intercepts=[0.0],
                        scales={3: 1.0, 7: 1.0, 2: 1.0, 11: 1.0}, positive=True)
    tops = top_features(store, probe, sel, X, y, top=10)
    assert tops["feature"].to_list() == [3, 7, 11, 2]
    assert tops["direction"].to_list() == ["+", "+", "-", "-"]
    assert tops["weight"].to_list() == [1.2, 0.4, -1.5, -0.8]
    one = top_features(store, probe, sel, X, y, top=1)
    assert one["feature"].to_list() == [3, 11] and one["direction"].to_list() == ["+", "-"]
    # a trained probe: no feature listed twice
    res = train_classifier(store, "train", "toxic", "tox", top=50)
    feats = res.top_features["feature"].to_list()
    assert len(feats) == len(set(feats)) == len(store.load_classifier("tox").model["weights"][0])
    signs = dict(zip(feats, res.top_features["direction"]))
    assert signs[3] == signs[7] == "+" and signs[11] == "-"


def test_nan_to_none_recurses():
    from saeembed.analysis.classify_metrics import _nan_to_none

    nan, inf = float("nan"), float("inf")
    got = _nan_to_none({"a": [{"precision": nan, "recall": 0.5}], "b": (inf, 2), "c": nan, "d": {"e": [[np.nan]]}})
    assert got == {"a": [{"precision": None, "recall": 0.5}], "b": [None, 2], "c": None, "d": {"e": [[None]]}}
    assert strict(json.dumps(got)) == got


def test_pr_curve_at_every_distinct_threshold():
    from saeembed.analysis.classify import pr_curve

    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.4, 0.35, 0.8])
    c = pr_curve(y, p)
    assert c["threshold"].to_list() == [0.8, 0.4, 0.35, 0.1]  # highest threshold first
    assert c["precision"].to_list() == [1.0, 1.0, 0.75, 0.6]
    assert c["recall"].to_list() == pytest.approx([1 / 3, 1.0, 1.0, 1.0])
    assert pr_curve(np.zeros(4, dtype=int), np.linspace(0, 1, 4)).is_empty()  # one class: no curve
    # thinned to at most max_points, the extreme thresholds kept, still in threshold order
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.3
    p = np.clip(y * 0.3 + rng.random(5000) * 0.7, 0, 1)
    c = pr_curve(y, p, max_points=200)
    assert 150 < c.height <= 200
    assert c["threshold"][0] == p.max() and c["threshold"][-1] == p.min()
    assert c["threshold"].is_sorted(descending=True) and c["recall"].is_sorted()
    assert c["recall"][-1] == 1.0 and c["precision"][-1] == pytest.approx(y.mean())


def test_saved_curve_is_fine_and_table_unchanged(toy):
    from saeembed.analysis.classify import THRESHOLDS, pr_curve

    store, _ = toy
    res = train_classifier(store, "train", "toxic", "tox", config=ProbeConfig(seed=1))
    clf = store.load_classifier("tox")
    te = np.asarray(clf.params["test_doc_idx"])
    X = embedding_matrix(store, select(store, "train"))
    p = LinearProbe.from_json(clf.model).predict_proba(X[te])
    y = np.array([i % 3 == 0 for i in te], dtype=int)
    assert res.pr["threshold"].to_list() == list(THRESHOLDS)  # the readable table as before
    assert res.curve.height == len(np.unique(p)) > len(THRESHOLDS)  # every distinct held-out score
    assert res.curve.equals(pr_curve(y, p))
    assert clf.metrics["pr_curve"] == res.curve.to_dicts()
    d = res.to_dict()
    assert d["pr_curve"] == res.curve.to_dicts() and len(d["pr_table"]) == len(THRESHOLDS)
    assert {"auroc", "f1", "average_precision", "n_test", "top_features", "cv"} <= set(d)
    ev = evaluate_classifier(store, "tox", "other", "toxic")
    assert len(ev["pr_table"]) == len(THRESHOLDS) and len(ev["pr_curve"]) > len(THRESHOLDS)
    assert [r["threshold"] for r in ev["pr_curve"]] == sorted((r["threshold"] for r in ev["pr_curve"]), reverse=True)


def test_classify_json_is_strict(capsys, monkeypatch, tmp_path):
    """A near-chance probe flags nothing at high thresholds (precision undefined): --json output, the saved
    metrics and the run log still parse as strict JSON, with null for the undefined precision."""
    from saeembed.store import Store
    from tests.test_cli import run

    path = tmp_path / "p.duckdb"
    with Store(path) as st:
        sae = register_sae(st, 40)
        docs, _ = planted(200, 0)
        write_corpus(st, sae, "tox", docs, meta={"src": ["a" if i % 2 else "b" for i in range(200)]})
    code, out, err = run(capsys, monkeypatch, "classify", "train", "tox", "--label-column", "src", "--name", "rnd",
                         "--store", path, "--json")
    assert code == 0, err
    res = strict(out)
    assert res["pr_table"][-1]["threshold"] == 0.9 and res["pr_table"][-1]["precision"] is None
    assert res["pr_table"][-1]["flagged"] == 0.0 and {"auroc", "f1", "pr_table", "pr_curve"} <= set(res)
    code, out, err = run(capsys, monkeypatch, "classify", "eval", "rnd", "--corpus", "tox", "--label-column", "src",
                         "--store", path, "--json")
    assert code == 0, err
    ev = strict(out)
    assert ev["pr_table"][-1]["precision"] is None and {"auroc", "f1", "pr_table"} <= set(ev)
    with Store(path, read_only=True) as st:
        for (metrics,) in st.con.execute("SELECT metrics FROM classifiers").fetchall():
            assert strict(metrics)["pr_table"][-1]["precision"] is None
        for (prov,) in st.con.execute("SELECT provenance FROM runs WHERE kind = 'classify.eval'").fetchall():
            strict(prov)

"""Separability of a diff's listed features: cross-validated AUROC checked against sklearn on the same
matrix, grouped folds that never split a group, and the seeded sample of large sides."""

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score

from saeembed.analysis.selection import select
from saeembed.analysis.separability import folds_for, model, separability
from tests.synthetic import register_sae, write_corpus


def _dense(docs, d):
    x = np.zeros((len(docs), d))
    for i, fs in enumerate(docs):
        x[i, list(fs)] = 1.0
    return x


def test_auroc_matches_sklearn_on_the_same_matrix(store):
    rng = np.random.default_rng(0)
    sae = register_sae(store, d_sae=16)
    da = [[f for f in range(16) if rng.random() < (0.55 if f in (3, 5) else 0.2)] for _ in range(120)]
    db = [[f for f in range(16) if rng.random() < 0.2] for _ in range(100)]
    la, lb = rng.integers(5, 60, 120), rng.integers(20, 90, 100)
    write_corpus(store, sae, "A", da, n_tokens=la.tolist())
    write_corpus(store, sae, "B", db, n_tokens=lb.tolist())
    s = separability(store, select(store, "A"), select(store, "B"), {"raw": [3, 5, 7]}, lengths=(la, lb))
    x, y = _dense(da + db, 16), np.r_[np.ones(120), np.zeros(100)]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    want = {"top": cross_val_score(model(), x[:, [3, 5, 7]], y, cv=cv, scoring="roc_auc").mean(),
            "all": cross_val_score(model(), x, y, cv=cv, scoring="roc_auc").mean(),
            "len": cross_val_score(model(), np.log1p(np.r_[la, lb])[:, None], y, cv=cv, scoring="roc_auc").mean()}
    assert s["auroc_top"]["raw"] == pytest.approx(want["top"], abs=1e-9)
    assert s["auroc_all"] == pytest.approx(want["all"], abs=1e-9)
    assert s["auroc_length"] == pytest.approx(want["len"], abs=1e-9)
    assert s["auroc_top"]["raw"] > 0.7 and s["auroc_length"] > 0.7  # the planted differences are found
    assert s["share_of_all"]["raw"] == pytest.approx(s["auroc_top"]["raw"] / s["auroc_all"])
    assert (s["folds"], s["fold_kind"], s["sampled"]) == (5, "stratified", False)


def test_grouped_folds_never_split_a_group_and_stop_a_pairing_leak(store):
    """Both sides answer the same 150 prompts; each prompt's answers share a prompt-specific feature and
    nothing else differs. Stratified folds leak each answer's twin (opposite label) into training, so
    the all-feature AUROC falls far below 0.5; grouped by prompt it stays near chance."""
    rng = np.random.default_rng(1)
    n, d = 150, 512
    sae = register_sae(store, d_sae=d)
    prompts = [f"p{i}" for i in range(n)]

    def side():
        return [[16 + i] + [f for f in range(16) if rng.random() < 0.3] for i in range(n)]

    da, db = side(), side()
    write_corpus(store, sae, "A", da, meta={"prompt": prompts})
    write_corpus(store, sae, "B", db[::-1], meta={"prompt": prompts[::-1]})
    sa, sb = select(store, "A"), select(store, "B")
    leaky = separability(store, sa, sb, {"raw": [1, 2]})
    grouped = separability(store, sa, sb, {"raw": [1, 2]}, group_column="prompt")
    assert leaky["auroc_all"] < 0.3
    assert abs(grouped["auroc_all"] - 0.5) < 0.12 and grouped["fold_kind"] == "grouped by prompt"
    groups = np.unique(prompts + prompts[::-1], return_inverse=True)[1]  # A's rows, then B's (stored reversed)
    y = np.r_[np.ones(n, dtype=int), np.zeros(n, dtype=int)]
    _, splits = folds_for(y, groups, 5, 0)
    assert len(splits) == 5
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    x = _dense(da + db[::-1], d)
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    want = cross_val_score(model(), x, y, groups=groups, cv=cv, scoring="roc_auc").mean()
    assert grouped["auroc_all"] == pytest.approx(want, abs=1e-9)


def test_large_sides_are_sampled_and_say_so(store):
    rng = np.random.default_rng(2)
    sae = register_sae(store)
    write_corpus(store, sae, "A", [[1, 2] if rng.random() < 0.7 else [2] for _ in range(90)])
    write_corpus(store, sae, "B", [[1, 2] if rng.random() < 0.2 else [2] for _ in range(70)])
    s = separability(store, select(store, "A"), select(store, "B"), {"raw": [1]}, max_docs=40)
    assert s["sampled"] and (s["docs_a"], s["docs_b"]) == (40, 40)
    assert "seeded sample of 40 of 90 and 40 of 70" in s["note"]
    assert s["auroc_top"]["raw"] > 0.6 and s["auroc_length"] is None
    again = separability(store, select(store, "A"), select(store, "B"), {"raw": [1]}, max_docs=40)
    assert again["auroc_top"] == s["auroc_top"]  # seeded

"""`saeembed diff` and `saeembed correlate` through the real entry point on a store file."""

import json

import numpy as np
import pytest

from saeembed.store import Store
from tests.synthetic import register_sae, write_corpus
from tests.test_cli import run


@pytest.fixture
def planted_store(tmp_path):
    path = tmp_path / "s.duckdb"
    rng = np.random.default_rng(0)
    with Store(path) as st:
        sae = register_sae(st)
        a = [sorted({f for f in range(1, 16) if rng.random() < 0.2} | ({3} if rng.random() < 0.7 else set()))
             for _ in range(150)]
        b = [sorted({f for f in range(1, 16) if rng.random() < 0.2} | ({2, 9} if rng.random() < 0.4 else set()))
             for _ in range(150)]
        write_corpus(st, sae, "A", a, meta={"gen": ["x", "y", "z"] * 50})
        write_corpus(st, sae, "B", b)
    return path


def test_diff_json_rows(capsys, monkeypatch, planted_store):
    code, out, err = run(capsys, monkeypatch, "diff", "A", "B", "--store", planted_store, "--json", "--top", "5")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 5 and rows[0]["feature"] == 3
    assert {"feature", "freq_a", "freq_b", "p_value", "q_value", "label"} <= set(rows[0])
    assert rows[0]["freq_a"] > rows[0]["freq_b"]
    code, out, _ = run(capsys, monkeypatch, "diff", "A", "B", "-s", planted_store, "--json", "--direction", "b")
    assert all(r["more_in"] == "B" for r in json.loads(out))
    code, out, _ = run(capsys, monkeypatch, "diff", "A", "--by", "gen", "-s", planted_store, "--json", "--top", "2")
    rows = json.loads(out)
    assert sorted({r["gen"] for r in rows}) == ["x", "y", "z"] and len(rows) == 6


def test_diff_table_states_the_confounds(capsys, monkeypatch, planted_store):
    code, out, err = run(capsys, monkeypatch, "diff", "A", "B", "-s", planted_store)
    assert code == 0 and "features that differ" in out
    assert "length" in err and "differ at q ≤ 0.05" in err


@pytest.mark.parametrize("where", ["gen = 'x'; DROP TABLE documents", "gen = 'x' -- hi", "read_csv('/etc/passwd') = 1"])
def test_hostile_where_is_one_line_error(capsys, monkeypatch, planted_store, where):
    code, out, err = run(capsys, monkeypatch, "diff", "A", "--where", where, "-s", planted_store)
    assert code == 1 and "filter" in err and "Traceback" not in err
    with Store(planted_store, read_only=True) as st:
        assert st.corpus("A").n_docs == 150


def test_correlate_json_and_with_column(capsys, monkeypatch, planted_store):
    code, out, err = run(capsys, monkeypatch, "correlate", "B", "-s", planted_store, "--json", "--top", "3")
    assert code == 0, err
    rows = json.loads(out)
    assert (rows[0]["feature_a"], rows[0]["feature_b"]) == (2, 9) and rows[0]["list"] == "strongest"
    assert -1 <= rows[-1]["npmi"] <= 1
    code, out, err = run(capsys, monkeypatch, "correlate", "A", "--with-column", "gen", "-s", planted_store, "--json")
    assert code == 0, err
    assert {r["category"] for r in json.loads(out)} == {"x", "y", "z"}
    code, _, err = run(capsys, monkeypatch, "correlate", "A", "--with-column", "nope", "-s", planted_store)
    assert code == 1 and "no column 'nope'" in err


def test_diff_summarize_offline_on_corpora_slices_and_groups(capsys, monkeypatch, planted_store):
    code, out, err = run(capsys, monkeypatch, "diff", "A", "B", "-s", planted_store, "--summarize", "--top", "5")
    assert code == 0, err
    assert "hypotheses" in out
    code, out, err = run(capsys, monkeypatch, "diff", "A", "--where", "gen = 'x'", "-s", planted_store, "--summarize",
                         "--no-separability")
    assert code == 0, err
    assert "hypotheses" in out and "separability:" not in err
    code, out, err = run(capsys, monkeypatch, "diff", "A", "--by", "gen", "-s", planted_store, "--summarize",
                         "--no-separability")
    assert code == 0, err
    assert "hypotheses" in out and all(g in out for g in ("x", "y", "z"))


def test_diff_summarize_shares_are_counted_on_the_slice(planted_store):
    from saeembed.analysis.diff import DiffConfig, diff_slices
    from saeembed.analysis.diff_summary import summarize
    from saeembed.analysis.selection import embedding_matrix

    with Store(planted_store) as st:
        r = diff_slices(st, "A", "gen = 'x'", "gen = 'y'", config=DiffConfig(separability=False))
        h = summarize(st, {"": r}, max_hypotheses=2)
        assert set(h["group"]) == {""} and set(h["ranking"]) == {"raw"} and h.height == 2
        for row in h.iter_rows(named=True):
            for side, sel in (("share_a", r.a), ("share_b", r.b)):
                x = embedding_matrix(st, sel, binary=True)[:, row["features"]]
                assert row[side] == pytest.approx((x.getnnz(axis=1) > 0).mean())


def _length_store(tmp_path):
    """Corpora where length drives features 9 and 10 and feature 4 differs by itself."""
    path = tmp_path / "len.duckdb"
    rng = np.random.default_rng(5)
    levels, fire = [20, 40, 80, 160, 320], [0.05, 0.2, 0.4, 0.6, 0.85]

    def side(p_level, p4):
        docs, lengths = [], []
        for _ in range(300):
            lv = rng.choice(5, p=p_level)
            feats = [f for f in range(1, 16) if f not in (4, 9, 10) and rng.random() < 0.2]
            feats += [f for f in (9, 10) if rng.random() < fire[lv]] + ([4] if rng.random() < p4 else [])
            docs.append(feats)
            lengths.append(levels[lv])
        return docs, lengths

    with Store(path) as st:
        sae = register_sae(st)
        for name, p_level, p4 in (("L", [0.05, 0.1, 0.15, 0.3, 0.4], 0.5), ("S", [0.4, 0.3, 0.15, 0.1, 0.05], 0.25)):
            docs, lengths = side(p_level, p4)
            write_corpus(st, sae, name, docs, n_tokens=lengths, meta={"prompt": [f"p{i}" for i in range(300)]})
    return path


def test_diff_two_sections_with_ranking_and_separability(capsys, monkeypatch, tmp_path):
    path = _length_store(tmp_path)
    code, out, err = run(capsys, monkeypatch, "diff", "L", "S", "-s", path, "--json", "--top", "6",
                         "--group-column", "prompt")  # 6 in all: 3 per section
    assert code == 0, err
    rows = json.loads(out)
    assert [r["ranking"] for r in rows] == ["raw"] * 3 + ["length_controlled"] * 3
    assert {rows[0]["feature"], rows[1]["feature"]} == {9, 10} and rows[3]["feature"] == 4
    sep = rows[0]["separability"]
    assert sep["top"] == 3 and sep["fold_kind"] == "grouped by prompt" and sep["folds"] == 5
    assert 0.5 < sep["auroc_length"] <= 1 and rows[3]["separability"]["auroc_all"] == sep["auroc_all"]
    assert sep["share_of_all"] == pytest.approx(sep["auroc_top"] / sep["auroc_all"])
    assert sep["auroc_listed"] is not None and rows[3]["separability"]["auroc_listed"] == sep["auroc_listed"]
    code, out, err = run(capsys, monkeypatch, "diff", "L", "S", "-s", path, "--csv", "--top", "2")
    assert code == 0, err
    head = out.splitlines()[0].split(",")
    assert head[0] == "ranking" and "separability_auroc_top" in head and "separability_auroc_length" in head
    code, out, err = run(capsys, monkeypatch, "diff", "L", "S", "-s", path, "--top", "6")
    assert code == 0, err
    flat = " ".join(err.split())
    assert "finding: A's documents are" in flat and "separability: cross-validated AUROC" in flat
    assert flat.index("finding:") < flat.index("separability:")
    assert out.index("features that differ (raw") < out.index("features that differ beyond length")
    code, out, err = run(capsys, monkeypatch, "diff", "L", "S", "-s", path, "--json", "--length-control", "off",
                         "--no-separability")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["ranking"] for r in rows} == {"raw"} and all(r["separability"] is None for r in rows)


def test_label_top_diff_on_slices_and_groups(capsys, monkeypatch, planted_store):
    from saeembed.analysis.diff import top_diff_features

    with Store(planted_store) as st:
        whole = top_diff_features(st, "A", "B", top=3)
        sliced = top_diff_features(st, "A", where="gen = 'x'", vs="gen = 'y'", top=3)
        grouped = top_diff_features(st, "A", by="gen", top=2)
    assert whole[0] == 3 and len(whole) == 3 and len(sliced) == 3 and 2 <= len(grouped) <= 6
    code, out, err = run(capsys, monkeypatch, "label", "--top-diff", "A", "--where", "gen = 'x'", "--limit", "2",
                         "-s", planted_store, "--json")
    assert code == 0, err
    assert [r["feature"] for r in json.loads(out)] == top_diff_features_cached(planted_store, where="gen = 'x'")
    code, out, err = run(capsys, monkeypatch, "label", "--top-diff", "A", "--by", "gen", "--limit", "1",
                         "-s", planted_store, "--json")
    assert code == 0, err
    assert 1 <= len(json.loads(out)) <= 3
    code, _, err = run(capsys, monkeypatch, "label", "--top-diff", "A", "-s", planted_store)
    assert code == 1 and "--top-diff needs two corpora" in err


def top_diff_features_cached(path, **kw):
    from saeembed.analysis.diff import top_diff_features

    with Store(path, read_only=True) as st:
        return top_diff_features(st, "A", top=2, **kw)

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

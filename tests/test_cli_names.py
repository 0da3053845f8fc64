"""Every CLI table names its features (`#3 · currency amounts`) from hand-set labels, and `features`
leaves generic features out unless --keep-generic."""

import json

import pytest

from saeembed.store import Store
from tests.llm_server import llm_server  # noqa: F401
from tests.synthetic import register_sae, write_corpus
from tests.test_cli import run

LABELS = {0: "always on", 3: "currency amounts", 7: "order delays", 9: "late shipping"}


def build_named_store(path):
    """A: 3 on 63 of 100 documents, 7 on 10, 9 with 3 on the first 40; B: 3 on 4, 7 on 50. 0 fires on all
    (generic). A's metadata column `money` is true exactly where 3 fires. Labels set by hand."""
    with Store(path) as st:
        sae = register_sae(st)
        a = [[0] + ([3] if i < 63 else []) + ([7] if i < 10 else []) + ([9] if i < 40 else []) + ([1] if i % 2 else [])
             for i in range(100)]
        b = [[0] + ([3] if i < 4 else []) + ([7] if i < 50 else []) + ([1] if i % 2 else []) for i in range(100)]
        write_corpus(st, sae, "A", a, meta={"money": [i < 63 for i in range(100)]})
        write_corpus(st, sae, "B", b)
        st.save_labels(sae.sae_key, "hand", [(f, lab, "manual", None, {}) for f, lab in LABELS.items()])
    return path


@pytest.fixture
def named_store(tmp_path):
    return build_named_store(tmp_path / "names.duckdb")


def test_diff_table_and_offline_summary_use_labels(capsys, monkeypatch, named_store):
    code, out, err = run(capsys, monkeypatch, "diff", "A", "B", "-s", named_store, "--summarize", "--no-separability")
    assert code == 0, err
    assert "#3 · currency amounts" in out and "#7 · order delays" in out
    assert "A mentions currency amounts far more often (63% vs 4%)" in out
    assert "B mentions order delays far more often (50% vs 10%)" in out
    code, out, _ = run(capsys, monkeypatch, "diff", "A", "B", "-s", named_store, "--json", "--no-separability")
    rows = json.loads(out)  # JSON keeps id and label apart
    assert rows[0]["feature"] == 3 and rows[0]["label"] == "currency amounts"


def test_features_hides_generic_with_a_note(capsys, monkeypatch, named_store):
    code, out, err = run(capsys, monkeypatch, "features", "-s", named_store)
    assert code == 0, err
    table = {line.split()[1]: line for line in out.splitlines()[2:] if line.strip()}  # feature -> its row
    assert set(table) == {"1", "3", "7", "9"} and "currency amounts" in table["3"] and "always on" not in out
    assert "1 generic features left out" in err and "--keep-generic" in err
    code, out, _ = run(capsys, monkeypatch, "features", "-s", named_store, "--json")
    rows = json.loads(out)
    assert [r["feature"] for r in rows] == [1, 3, 7, 9] and not any(r["generic"] for r in rows)
    assert rows[1]["label"] == "currency amounts" and rows[1]["docs"] == 67
    code, out, err = run(capsys, monkeypatch, "features", "-s", named_store, "--json", "--keep-generic")
    rows = json.loads(out)
    assert rows[0]["feature"] == 0 and rows[0]["generic"] and rows[0]["label"] == "always on"
    code, out, err = run(capsys, monkeypatch, "features", "-s", named_store, "--keep-generic")
    row = next(line for line in out.splitlines()[2:] if line.split()[1] == "0")
    assert "always on" in row and "fires on ≥90% of documents" in row and "generic features left out" not in err


def test_correlate_pairs_read_as_names(capsys, monkeypatch, named_store):
    code, out, err = run(capsys, monkeypatch, "correlate", "A", "-s", named_store, "--min-docs", 5)
    assert code == 0, err
    assert "#3 · currency amounts" in out and "#9 · late shipping" in out  # 9 only ever fires with 3
    code, out, err = run(capsys, monkeypatch, "correlate", "A", "-s", named_store, "--with-column", "money")
    assert code == 0, err
    first_true = next(line for line in out.splitlines() if line.startswith("true"))
    assert first_true.split()[:5] == ["true", "#3", "·", "currency", "amounts"]  # rises with money = true


def test_cluster_table_and_json_carry_a_name(capsys, monkeypatch, named_store):
    code, out, err = run(capsys, monkeypatch, "cluster", "A", "-f", 3, "-f", 9, "-f", 7, "--k", 2, "--no-save",
                         "-s", named_store, "--json")
    assert code == 0, err
    # documents 0-39 (3 and 9; 9 nowhere else, so it comes first), 40-62 (3 only), the rest none (noise)
    names = {c["size"]: c["name"] for c in json.loads(out)["clusters"]}
    assert names == {40: "late shipping · currency amounts", 23: "currency amounts", 37: "noise"}
    code, out, err = run(capsys, monkeypatch, "cluster", "A", "-f", 3, "-f", 9, "-f", 7, "--k", 2, "--no-save",
                         "-s", named_store)
    assert code == 0 and "late shipping · currency amounts" in out


def test_classify_weights_and_filter_reasons_name_features(capsys, monkeypatch, named_store):
    code, out, err = run(capsys, monkeypatch, "classify", "train", "A", "--label-column", "money", "--name", "m",
                         "-s", named_store)
    assert code == 0, err
    assert "#3 · currency amounts" in out  # the feature that decides it
    code, out, err = run(capsys, monkeypatch, "filter", "A", "--drop-feature", 3, "--dry-run", "-s", named_store)
    assert code == 0, err
    rule = next(line for line in out.splitlines() if line.startswith("drop-feature: 3"))
    assert "#3 · currency amounts" in rule


def test_cluster_llm_names(capsys, monkeypatch, named_store, llm_server):  # noqa: F811
    monkeypatch.setenv("SAEEMBED_LLM_KEY", "k")
    llm_server.responder = lambda body: {"name": "Price talk", "description": "money"}
    code, out, err = run(capsys, monkeypatch, "cluster", "A", "-f", 3, "-f", 9, "-f", 7, "--k", 2, "--no-save",
                         "-s", named_store, "--json", "--llm", "helper", "--base-url", llm_server.url)
    assert code == 0, err
    clusters = [c for c in json.loads(out)["clusters"] if c["cluster"] >= 0]
    assert [(c["name"], c["name_source"]) for c in clusters] == [("Price talk", "llm:helper")] * 2

"""`saeembed search` / `saeembed similar` as a user runs them, on a store with planted embeddings."""

import json

import pytest

from saeembed.store import Store
from tests.synthetic import register_sae, write_corpus
from tests.test_cli import run

TEXTS = ["On 3 May 2020 we met.", "Bake the bread at 200 degrees.", "The striker scored on 4 June.",
         "Knead the dough.", "Nothing here."]
DOCS = [{3: 2.0}, {5: 1.0}, {3: 1.0, 7: 1.0}, {5: 2.0}, {9: 1.0}]


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "s.duckdb"
    with Store(p) as st:
        sae = register_sae(st, 16)
        write_corpus(st, sae, "c", DOCS, texts=TEXTS, meta={"src": ["x", "y", "y", "x", "y"]})
        st.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES "
                       "(?, 3, 'calendar dates', 't'), (?, 5, 'baking bread', 't'), (?, 7, 'football', 't'), "
                       "(?, 9, 'emptiness', 't')", [sae.sae_key] * 4)
    return p


def test_search_json_rows(capsys, monkeypatch, path):
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "-f", "7:0.5", "--store", path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["doc_id"] for r in rows] == ["c0", "c2"]  # c0 3: 2/2 = 1.0; c2: 1/2 + 0.5 = 1.0 -> tie by order
    assert rows[0]["score"] == pytest.approx(1.0) and rows[1]["score"] == pytest.approx(1.0)
    assert rows[1]["features"] == [3, 7] and rows[1]["matched"][0]["label"] == "calendar dates"
    assert "«" in rows[0]["snippet"]


def test_search_query_explain_not_feature_where(capsys, monkeypatch, path):
    code, out, err = run(capsys, monkeypatch, "search", "calendar date", "-c", "c", "--n-features", "1",
                         "--match", "describe", "--explain", "--sae-only", "--store", path, "--json")
    assert code == 0, err
    assert [r["doc_id"] for r in json.loads(out)] == ["c0", "c2"]
    assert "features searched for" in err and "calendar dates" in err
    # a query text defaults to hybrid: the SAE hits lead (their ranking counts twice), dense fills the rest
    code, out, err = run(capsys, monkeypatch, "search", "calendar date", "-c", "c", "--n-features", "1",
                         "--match", "describe", "--store", path, "--json")
    assert code == 0, err
    hybrid = [r["doc_id"] for r in json.loads(out)]
    assert set(hybrid[:2]) == {"c0", "c2"} and len(hybrid) >= 2
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--not-feature", "7", "--store", path,
                         "--json")
    assert [r["doc_id"] for r in json.loads(out)] == ["c0"]
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--where", "src = 'y'", "--store", path,
                         "--csv")
    assert code == 0 and out.splitlines()[0].startswith("rank,doc_id,score") and "c2" in out and "c0" not in out


def test_search_errors_and_empty(capsys, monkeypatch, path):
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--where", "src = 'x' --; DROP TABLE documents",
                         "--store", path)
    assert code == 1 and "filter" in err and "Traceback" not in err
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--where", "src = 'zzz'", "--store", path)
    assert code == 0 and "no documents found" in err
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "99", "--store", path)
    assert code == 1 and "feature 99 does not exist" in err
    code, out, err = run(capsys, monkeypatch, "search", "-c", "nope", "-f", "1", "--store", path)
    assert code == 1 and "unknown corpus" in err
    with Store(path) as st:
        assert st.query("SELECT count(*) AS n FROM documents")["n"][0] == 5


def test_similar_cli(capsys, monkeypatch, path):
    code, out, err = run(capsys, monkeypatch, "similar", "c0", "-c", "c", "--store", path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["doc_id"] == "c2" and rows[0]["features"] == [3] and len(rows) == 1
    code, out, err = run(capsys, monkeypatch, "similar", "c4", "-c", "c", "--store", path)
    assert code == 0 and "no document" in err


def test_cluster_cli(capsys, monkeypatch, path):
    code, out, err = run(capsys, monkeypatch, "cluster", "c", "-f", "3", "-f", "5", "--k", "2", "--name", "bytopic",
                         "--store", path, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["name"] == "bytopic" and res["n_clusters"] == 2 and res["n_empty"] == 1  # c4 fires neither
    by_doc = {}
    code, out, err = run(capsys, monkeypatch, "cluster", "c", "-f", "3", "-f", "5", "--k", "2", "--name", "bytopic", "--replace",
                         "--store", path, "--csv")
    for line in out.splitlines()[1:]:
        cells = line.split(",")
        by_doc[cells[1]] = int(cells[2])
    assert by_doc["c0"] == by_doc["c2"] != by_doc["c1"] == by_doc["c3"] and by_doc["c4"] == -1
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "5", "--where",
                         f"cluster.bytopic = {by_doc['c1']}", "--store", path, "--json")
    assert sorted(r["doc_id"] for r in json.loads(out)) == ["c1", "c3"]
    code, out, err = run(capsys, monkeypatch, "clusterings", "--store", path, "--json")
    assert json.loads(out)[0]["name"] == "bytopic"
    code, out, err = run(capsys, monkeypatch, "cluster", "c", "--k", "1", "--store", path)
    assert code == 1 and "k" in err


def test_cluster_features_take_ids_repeated_or_comma_separated(capsys, monkeypatch, path):
    runs = []
    for flags in (["-f", "3", "-f", "5"], ["--features", "3,5"]):
        code, out, err = run(capsys, monkeypatch, "cluster", "c", *flags, "--k", "2", "--no-save", "--store", path, "--json")
        assert code == 0, err
        runs.append(json.loads(out))
    assert [r["feature"] for r in runs[0]["features"]] == [r["feature"] for r in runs[1]["features"]] == [3, 5]
    assert runs[0]["clusters"] == runs[1]["clusters"]


def test_search_controls_for_length_by_default(capsys, monkeypatch, tmp_path):
    """Feature 1 fires on every long document anyway and on five short relevant ones: the CLI ranks the
    short ones first (the raw score, kept as raw_score, would put the long ones first)."""
    p = tmp_path / "len.duckdb"
    with Store(p) as st:
        sae = register_sae(st, 16)
        docs = [{1: 1.0}] * 5 + [{1: 1.2 + 0.005 * i} for i in range(60)] + [{2: 1.0}] * 60
        ids = [f"rel{i}" for i in range(5)] + [f"long{i}" for i in range(60)] + [f"short{i}" for i in range(60)]
        write_corpus(st, sae, "len", docs, n_tokens=[10] * 5 + [2000] * 60 + [10] * 60, ids=ids)
    code, out, err = run(capsys, monkeypatch, "search", "-c", "len", "-f", "1", "--top", "6", "--store", p, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["doc_id"] for r in rows[:5]] == [f"rel{i}" for i in range(5)] and rows[5]["doc_id"].startswith("long")
    assert rows[5]["raw_score"] > rows[0]["raw_score"] and rows[5]["score"] < rows[0]["score"]

"""`saeembed label` and `saeembed features --search/--top --json` as a user runs them."""

import json

import pytest

from saeembed.store import Store
from tests.interp.planted import planted_store
from tests.interp.test_explain import smart_judge
from tests.synthetic import register_sae, write_corpus
from tests.test_cli import run


@pytest.fixture
def planted_path(tmp_path):
    path = tmp_path / "p.duckdb"
    with Store(path) as st:
        planted_store(st)
    return path


def test_label_offline_then_features_show_and_find_it(capsys, monkeypatch, planted_path):
    code, out, err = run(capsys, monkeypatch, "label", "--features", "3,5", "--store", planted_path, "--json")
    assert code == 0, err
    rows = {r["feature"]: r for r in json.loads(out)}
    assert "covid" in rows[3]["label"] or "pandemic" in rows[3]["label"]
    assert rows[3]["label_source"] == "offline" and rows[3]["score"] > 0.7 and rows[5]["label"].startswith("years (")
    code, out, _ = run(capsys, monkeypatch, "features", "--top", "20", "--keep-generic", "--store", planted_path, "--json")
    feats = {r["feature"]: r for r in json.loads(out)}
    assert {"feature", "label", "label_source", "score"} <= set(feats[3])
    # store-wide listings show the phrase; the labelled corpus's metadata context stays with that corpus
    assert rows[3]["label"] == feats[3]["label"] + " (topic=health 100% vs 25%)"
    assert feats[3]["score"] == pytest.approx(rows[3]["score"])
    assert feats[0]["label"] is None
    code, out, err = run(capsys, monkeypatch, "features", "--search", "covid", "--store", planted_path, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["feature"] == 3 and json.loads(out)[0]["match"] == "text"
    code, out, err = run(capsys, monkeypatch, "label", "-f", "3", "-f", "5", "--store", planted_path, "--json")
    assert code == 0, err
    assert {r["feature"]: r["label"] for r in json.loads(out)} == {f: r["label"] for f, r in rows.items()}


def test_label_with_llm_cache_and_budget(capsys, monkeypatch, planted_path, llm_server):
    llm_server.responder = smart_judge
    monkeypatch.setenv("SAEEMBED_LLM_KEY", "sk-cli-secret")
    args = ["label", "--features", "3", "--llm", "judge", "--base-url", llm_server.url, "--store", planted_path]
    code, out, err = run(capsys, monkeypatch, *args, "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["label"] == "covid pandemic" and row["score"] == 1.0 and row["detection"] == 1.0
    n = len(llm_server.requests)
    code, out, err = run(capsys, monkeypatch, *args)
    assert code == 0 and len(llm_server.requests) == n and "LLM 0 calls" in err.replace("\n", " ")
    code, out, err = run(capsys, monkeypatch, "label", "--features", "5", "--llm", "judge", "--base-url",
                         llm_server.url, "--max-calls", "1", "--store", planted_path)
    assert code == 0 and "budget reached" in err and len(llm_server.requests) == n + 1
    assert b"sk-cli-secret" not in planted_path.read_bytes()


def test_label_top_diff_and_all_live(capsys, monkeypatch, tmp_path, llm_server):
    path = tmp_path / "d.duckdb"
    with Store(path) as st:
        sae = register_sae(st, d_sae=16)
        write_corpus(st, sae, "a", [[1, 3]] * 8 + [[2, 3]] * 2)
        write_corpus(st, sae, "b", [[1, 3]] + [[2, 3]] * 7 + [[3]] * 2)
    llm_server.responder = smart_judge
    base = ["--llm", "m", "--base-url", llm_server.url, "--store", path, "--json"]
    code, out, err = run(capsys, monkeypatch, "label", "--top-diff", "a", "b", "--limit", "2", *base)
    assert code == 0, err
    assert sorted(r["feature"] for r in json.loads(out)) == [1, 2]
    code, out, err = run(capsys, monkeypatch, "label", "--all-live", "--limit", "2", *base)
    assert code == 0, err
    assert [r["feature"] for r in json.loads(out)] == [3, 1]  # most frequent first


@pytest.mark.parametrize("args, message", [
    ([], "say which features"),
    (["--features", "3,x"], "comma-separated"),
    (["--features", "99"], "does not exist"),
    (["--features", "3", "--all-live"], "say which features"),
    (["--features", "3", "--llm", "m", "--timeout", "0"], "--timeout must be a positive number"),
])
def test_label_errors_are_one_line(capsys, monkeypatch, planted_path, args, message):
    code, out, err = run(capsys, monkeypatch, "label", *args, "--store", planted_path)
    assert code == 1 and message in err and "Traceback" not in err


def test_label_timeout_bounds_a_hanging_server(capsys, monkeypatch, planted_path, llm_server):
    """`--timeout 1` against a server that never answers in time: the feature fails with a timeout status
    after the call and one retry, instead of six tries of a minute each."""
    import time

    def slow(request):
        time.sleep(3)
        return smart_judge(request)

    llm_server.responder = slow
    monkeypatch.setenv("SAEEMBED_LLM_KEY", "k")
    code, out, err = run(capsys, monkeypatch, "label", "--features", "3", "--llm", "judge", "--base-url",
                         llm_server.url, "--timeout", "1", "--store", planted_path, "--json")
    assert code == 0 and "Traceback" not in err, err
    row = json.loads(out)[0]
    assert row["status"].startswith("failed") and "time" in row["status"].lower()
    assert len(llm_server.requests) == 2  # the call and one retry, not six tries of the default

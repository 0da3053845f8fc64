"""`saeembed report cluster | search | classify | filter` end to end on the planted store: exit code, the
JSON summary's counts, and the written page in a real headless chromium (no console errors, no network
requests, the expected marks, labels and shaded tokens, hostile text shown as text)."""

import json

import pytest

from saeembed.store import Store
from tests.report.conftest import HOSTILE, LABELS
from tests.report.test_pages_browser import open_report, run
from tests.synthetic import write_corpus


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


# --- cluster --------------------------------------------------------------------------------------------

def test_report_cluster_cli(capsys, monkeypatch, planted_file, tmp_path, load):
    out = tmp_path / "cluster.html"
    # On features 3 and 4 of alpha: docs 0-4 have both, doc 5 only 4, docs 6-9 neither (-> noise).
    code, stdout, err = run(capsys, monkeypatch, "report", "cluster", "alpha", "-f", 3, "-f", 4, "--k", 2,
                            "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert (summary["documents"], summary["clusters"], summary["noise"]) == (10, 2, 4)
    assert summary["report"] == "cluster" and summary["bytes"] == out.stat().st_size
    with Store(planted_file, read_only=True) as st:  # no --name: nothing stored
        assert st.query("SELECT count(*) AS n FROM clusterings")["n"][0] == 0
    page = open_report(load, out, tmp_path)
    assert page.count("svg.scatter circle.pt") == 10  # one point per document
    assert page.count("circle.pt[data-group='-1']") == 4
    legend = page.page.inner_text(".legend")
    assert "noise (4)" in legend and "(5): " + HOSTILE in legend and "(1): #4" in legend  # named by label, else id
    assert "40.0%" in page.page.inner_text("#summary")
    # The 5-document cluster is described by features 3 (all of it, none outside) and 4.
    big = page.page.locator("#clusters .feature-block").first
    assert "(5)" in big.inner_text() and big.locator("tbody tr").count() == 2
    assert HOSTILE in page.page.inner_text("#clusters")  # label 3 shown as text
    # Each feature's exemplar: the member where it is strongest (doc 0 for both; their spans cover the
    # whole text), the activating span shaded, the <script> in it shown as text.
    assert big.locator("mark.act").all_text_contents() == [f"alpha 0: {HOSTILE} refund please"] * 2
    small = page.page.locator("#clusters .feature-block").nth(1)
    assert "(1)" in small.inner_text() and small.locator("mark.act").all_text_contents() == ["alpha 5: I want a refund now"]
    assert "«" not in page.page.inner_text("#clusters") and page.page.locator("#clusters script").count() == 0
    tips = page.texts("circle.pt title")
    assert any(HOSTILE in t and t.startswith("alpha0") for t in tips)
    assert page.dialogs == [] and "synthetic-model" in page.page.inner_text("footer")

    # Saved with --name, then reported back from the store with --saved: the same map.
    code, _, err = run(capsys, monkeypatch, "report", "cluster", "alpha", "-f", 3, "-f", 4, "--k", 2, "--name", "ab",
                       "--store", planted_file, "--out", out)
    assert code == 0 and "wrote cluster report (10 documents, 2 clusters, 4 noise" in err, err
    out2 = tmp_path / "saved.html"
    code, stdout, err = run(capsys, monkeypatch, "report", "cluster", "--saved", "ab", "--store", planted_file,
                            "--out", out2, "--json")
    assert code == 0, err
    assert {k: json.loads(stdout)[k] for k in ("documents", "clusters", "noise")} == {"documents": 10, "clusters": 2,
                                                                                   "noise": 4}
    page = open_report(load, out2, tmp_path)
    assert page.count("svg.scatter circle.pt") == 10 and page.count("circle.pt[data-group='-1']") == 4
    assert "(5): " + HOSTILE in page.page.inner_text(".legend")
    assert "without any chosen feature (noise)" in page.page.inner_text("#summary")


def test_report_cluster_cli_errors(capsys, monkeypatch, planted_file, tmp_path):
    out = tmp_path / "x.html"
    code, _, err = run(capsys, monkeypatch, "report", "cluster", "--saved", "nope", "--store", planted_file, "--out", out)
    assert code == 1 and "no saved clustering named 'nope'" in one_error_line(err)
    code, _, err = run(capsys, monkeypatch, "report", "cluster", "gamma", "--k", 2, "--store", planted_file, "--out", out)
    assert code == 1 and "unknown corpus 'gamma'" in one_error_line(err)
    code, _, err = run(capsys, monkeypatch, "report", "cluster", "--saved", "x", "--k", 2, "--store", planted_file,
                       "--out", out)
    assert code == 1 and "--k" in one_error_line(err)
    code, _, err = run(capsys, monkeypatch, "report", "cluster", "--store", planted_file, "--out", out)
    assert code == 1 and "--saved" in one_error_line(err)
    assert not out.exists()


# --- search ---------------------------------------------------------------------------------------------

def test_report_search_cli(capsys, monkeypatch, planted_file, tmp_path, load):
    out = tmp_path / "search.html"
    # Feature 1 fires in all of alpha (value 1.0 + 0.1 i); feature 4 in docs 0-5, which --not-feature drops.
    code, stdout, err = run(capsys, monkeypatch, "report", "search", "-c", "alpha", "-f", 1, "--not-feature", 4,
                            "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["results"] == 4 and summary["with_matched_features"] == 4
    page = open_report(load, out, tmp_path)
    assert page.count("#scores rect.bar") == 4
    assert page.texts("#scores text.bar-label") == ["alpha9", "alpha8", "alpha7", "alpha6"]  # strongest first
    assert page.count("#results tbody tr") == 4
    assert page.texts("#results mark.act") == ["refund"] * 4  # feature 1's span
    assert page.texts("#results tbody tr td:nth-child(4)") == [f"#1 · {LABELS[1]}"] * 4  # matched feature, label as text

    code, stdout, err = run(capsys, monkeypatch, "report", "search", "-c", "alpha", "-f", 1, "--top", 10,
                            "--store", planted_file, "--out", out, "--json")
    assert code == 0 and json.loads(stdout)["results"] == 10, err
    page = open_report(load, out, tmp_path)
    assert page.count("#scores rect.bar") == 10 and HOSTILE in page.page.inner_text("#results")
    assert page.page.locator("#results script").count() == 0 and page.dialogs == []


def test_report_search_cli_errors(capsys, monkeypatch, planted_file, tmp_path):
    out = tmp_path / "x.html"
    code, _, err = run(capsys, monkeypatch, "report", "search", "-c", "alpha", "-f", 1, "--not-feature", 1,
                       "--store", planted_file, "--out", out)
    assert code == 1 and "no documents found in 'alpha'" in one_error_line(err) and not out.exists()
    code, _, err = run(capsys, monkeypatch, "report", "search", "-c", "gamma", "-f", 1, "--store", planted_file,
                       "--out", out)
    assert code == 1 and "unknown corpus 'gamma'" in one_error_line(err)
    code, _, err = run(capsys, monkeypatch, "report", "search", "-c", "alpha", "-f", 99, "--store", planted_file,
                       "--out", out)
    assert code == 1 and "feature 99 does not exist" in one_error_line(err) and not out.exists()


# --- classify -------------------------------------------------------------------------------------------

@pytest.fixture
def classified_file(planted_file):
    """The planted store plus corpus `lab` (40 docs, `toxic` on the even ones): feature 1 fires on the
    toxic documents and 2 on the others (each leaks onto 4 of the other class, weakly), 3 at random;
    a probe `tox` trained on it."""
    from saeembed.analysis.classify import train_classifier

    with Store(planted_file) as st:
        sae = st.encoded_sae("alpha")
        docs = []
        for i in range(40):
            pos = i % 2 == 0
            d = {1 if pos else 2: 1.0 + 0.01 * i}
            if i % 10 in (0, 5):
                d[2 if pos else 1] = 0.3
            if i % 3 == 0:
                d[3] = 0.5
            docs.append(d)
        write_corpus(st, sae, "lab", docs, texts=[f"doc {i}: refund or praise" for i in range(40)],
                     meta={"toxic": [i % 2 == 0 for i in range(40)]})
        train_classifier(st, "lab", "toxic", "tox")
    return planted_file


def test_report_classify_cli(capsys, monkeypatch, classified_file, tmp_path, load):
    out = tmp_path / "classify.html"
    code, stdout, err = run(capsys, monkeypatch, "report", "classify", "tox", "--store", classified_file,
                            "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    # The saved held-out split: 20 % of 40; the curve has a point per distinct held-out score (at most 8).
    with Store(classified_file, read_only=True) as st:
        saved = json.loads(st.query("SELECT metrics FROM classifiers WHERE name = 'tox'")["metrics"][0])
    assert (summary["documents"], summary["features"]) == (8, 2)
    assert 2 <= summary["curve_points"] == len(saved["pr_curve"]) <= 8
    page = open_report(load, out, tmp_path)
    assert page.count("svg.line-chart path.curve") == 1
    assert "held-out split of lab" in page.page.inner_text("#metrics")
    assert page.count("#weights rect.bar") == 2 and page.count("#weights rect.bar-b") == 1
    labels = page.texts("#weights text.bar-label")
    assert sorted(labels) == [f"#1 · {LABELS[1]}", "#2 · praise"]  # "<b>" of label 1 shown as text
    neg = page.page.locator("#weights rect.bar-b title").text_content()
    assert neg.startswith("#2 · praise") and "-" in neg  # feature 2 pushes away from toxic
    assert page.page.locator("#weights b").count() == 0 and page.dialogs == []

    code, stdout, err = run(capsys, monkeypatch, "report", "classify", "tox", "--corpus", "lab", "--label-column",
                            "toxic", "--store", classified_file, "--out", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["documents"] == 40
    page = open_report(load, out, tmp_path)
    metrics = page.page.inner_text("#metrics")
    assert "rows_seen_in_training" in metrics and "32" in metrics  # the 80 % it was trained on
    assert page.count("svg.line-chart path.curve") == 1


def test_report_classify_cli_errors(capsys, monkeypatch, planted_file, tmp_path):
    out = tmp_path / "x.html"
    code, _, err = run(capsys, monkeypatch, "report", "classify", "nope", "--store", planted_file, "--out", out)
    assert code == 1 and "no classifier named 'nope'" in one_error_line(err) and not out.exists()
    code, _, err = run(capsys, monkeypatch, "report", "classify", "nope", "--corpus", "alpha", "--store", planted_file,
                       "--out", out)
    assert code == 1 and "--label-column" in one_error_line(err) and not out.exists()


# --- filter ---------------------------------------------------------------------------------------------

def test_report_filter_cli(capsys, monkeypatch, planted_file, tmp_path, load):
    out = tmp_path / "filter.html"
    # f1 = 1.0 + 0.1 i: > 1.75 drops docs 8, 9; feature 4 fires in docs 0-5; of the rest (6, 7, both only
    # feature 1) dedupe drops 7 as a copy of 6.
    code, stdout, err = run(capsys, monkeypatch, "report", "filter", "alpha", "--drop", "f1 > 1.75",
                            "--drop-feature", 4, "--dedupe", 1.0, "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert {k: summary[k] for k in ("documents", "kept", "dropped", "rules", "samples")} == {
        "documents": 10, "kept": 1, "dropped": 9, "rules": 3, "samples": 6}  # 2 + 3 + 1 samples
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".duckdb" and ".duckdb" not in p.name) == \
        ["filter.html"]  # a dry run: nothing else written
    page = open_report(load, out, tmp_path)
    assert page.texts("#rules text.bar-label") == ["drop: f1 > 1.75", "drop-feature: 4", "dedupe 1"]
    assert [t.split()[-1] for t in page.texts("#rules rect.bar title")] == ["2", "6", "1"]
    # Over-represented among dropped rows: 4 (6 of 9 dropped, not the kept one), 3 (5 of 9), 2 (1 of 9).
    assert page.count("#common g.bar-row") == 3 and page.count("#common rect.bar") == 6
    assert [t.split(" ·")[0] for t in page.texts("#common text.bar-label")] == ["#4", "#3", "#2"]
    assert HOSTILE in page.page.inner_text("#common")  # label 3
    # The exemplar column: each feature's strongest alpha document, its span shaded (no «» markers left);
    # feature 2 fires in alpha doc 9 only.
    assert page.count("#common tbody mark.act") == 3 and "«" not in page.page.inner_text("#common")
    assert page.texts("#common tbody tr:nth-child(3) mark.act") == ["alpha 9: I want a refund now"]
    assert page.page.locator("#common script").count() == 0
    assert page.count("#samples tbody tr") == 6
    marks = page.texts("#samples mark.act")
    assert marks and any(HOSTILE in m for m in marks)  # shaded spans of the common features, as text
    assert page.page.locator("#samples script").count() == 0 and page.dialogs == []


def test_report_filter_cli_errors(capsys, monkeypatch, planted_file, tmp_path):
    out = tmp_path / "x.html"
    code, _, err = run(capsys, monkeypatch, "report", "filter", "alpha", "--store", planted_file, "--out", out)
    assert code == 1 and "at least one rule" in one_error_line(err)
    code, _, err = run(capsys, monkeypatch, "report", "filter", "gamma", "--drop-feature", 4, "--store", planted_file,
                       "--out", out)
    assert code == 1 and "unknown corpus 'gamma'" in one_error_line(err)
    code, _, err = run(capsys, monkeypatch, "report", "filter", "alpha", "--drop", "nosuch > 1", "--store",
                       planted_file, "--out", out)
    assert code == 1 and "nosuch" in one_error_line(err)
    assert not out.exists()

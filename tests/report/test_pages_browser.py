"""Every report page in a real headless chromium: loads with no console errors and no network
requests, draws the expected marks, shows labels and highlighted tokens, writes a screenshot."""

import json
import sys

import polars as pl
import pytest

from saeembed.cli.app import main
from saeembed.report import (classify_page, cluster_page, correlate_page, diff_page, filter_page, search_page,
                             write_report)
from tests.report.conftest import HOSTILE, LABELS


def run(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["saeembed", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def open_report(load, path, tmp_path):
    shot = tmp_path / (path.stem + ".png")
    page = load(path.as_uri(), screenshot=shot)
    assert shot.exists() and shot.stat().st_size > 1000
    assert page.errors() == []
    assert page.requests == [path.as_uri()]  # the file itself, nothing else
    return page


def test_report_features_cli(capsys, monkeypatch, planted_file, tmp_path, load):
    out = tmp_path / "features.html"
    # feature 1 fires on all of alpha: generic, so left out by default (see tests/report/test_report_names.py)
    code, stdout, err = run(capsys, monkeypatch, "report", "features", "--corpus", "alpha", "--top", "3",
                            "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["generic_excluded"] == 1
    code, stdout, err = run(capsys, monkeypatch, "report", "features", "--corpus", "alpha", "--top", "3",
                            "--keep-generic", "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["out"] == str(out.resolve()) and summary["features"] == 3 and summary["bytes"] == out.stat().st_size
    page = open_report(load, out, tmp_path)
    assert page.count("svg.bar-chart rect.bar") == 3
    # alpha's top 3 by documents: feature 1 (10), 4 (6), 3 (5).
    assert [t.split(" ·")[0] for t in page.texts("svg.bar-chart text.bar-label")] == ["#1", "#4", "#3"]
    body = page.page.inner_text("body")
    assert LABELS[1] in body and HOSTILE in body and page.dialogs == []  # hostile label shown as text, never run
    marks = page.texts(".feature-block[data-feature='1'] mark.act")
    assert marks and set(marks) == {"refund"}
    assert "synthetic-model" in page.page.inner_text("footer")


def test_report_diff_cli(capsys, monkeypatch, planted_file, tmp_path, load):
    out = tmp_path / "diff.html"
    code, _, err = run(capsys, monkeypatch, "report", "diff", "alpha", "beta", "--top", "5",
                       "--store", planted_file, "--out", out)
    assert code == 0, err
    assert "wrote diff report" in err and str(out.resolve()) in err.replace("\n", "")
    page = open_report(load, out, tmp_path)
    # More in alpha: features 1 and 4; more in beta: feature 2 → 3 rows of 2 bars.
    assert page.count("#more-a g.bar-row") == 2 and page.count("#more-b g.bar-row") == 1
    assert page.count("#more-a rect.bar-a") == 2 and page.count("#more-a rect.bar-b") == 2
    titles = page.texts("#more-a rect.bar-a title")
    assert any("100.0%" in t for t in titles) and any("60.0%" in t for t in titles)
    assert "refund" in page.texts("#exemplars mark.act") and HOSTILE in page.page.inner_text("#exemplars")
    assert page.dialogs == []


def test_report_cli_errors(capsys, monkeypatch, planted_file, tmp_path):
    code, _, err = run(capsys, monkeypatch, "report", "diff", "alpha", "nope", "--store", planted_file,
                       "--out", tmp_path / "x.html")
    assert code == 1 and "unknown corpus 'nope'" in err and not (tmp_path / "x.html").exists()
    code, _, err = run(capsys, monkeypatch, "report", "features", "--store", planted_file, "--out", tmp_path / "x.pdf")
    assert code == 1 and ".html" in err


def test_correlate_page(tmp_path, load):
    pairs = pl.DataFrame({
        "feature_a": [1, 1, 2, 5], "feature_b": [4, 2, 3, 6], "npmi": [0.9, -0.4, 0.3, 0.5],
        "support": [6, 1, 3, 2], "label_a": ["refund", "refund", "praise", HOSTILE], "label_b": ["money", "praise", None, "x"],
        "unexpected": [False, False, False, True], "decoder_cosine": [0.8, 0.1, 0.2, 0.01]})
    out = write_report(correlate_page(pairs, {"analysis": "correlate"}), tmp_path / "correlate.html")
    page = open_report(load, out, tmp_path)
    # 6 features in the heatmap; 4 pairs, each drawn twice (symmetric).
    assert page.count("svg.heatmap rect.cell") == 8
    assert page.count("#unexpected tbody tr") == 1 and page.count("#strongest tbody tr") == 4
    assert HOSTILE in page.page.inner_text("#unexpected") and page.dialogs == []


def test_cluster_page(tmp_path, load):
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(30)], "cluster": [0] * 12 + [1] * 10 + [-1] * 8,
                         "x": [float(i) for i in range(30)], "y": [float(i % 7) for i in range(30)]})
    desc = pl.DataFrame({"cluster": [0, 0, 1], "size": [12, 12, 10], "feature": [1, 4, 2],
                         "label": ["refunds", None, "praise"], "freq_in": [0.9, 0.5, 0.8], "freq_out": [0.1, 0.2, 0.05]})
    out = write_report(cluster_page(docs, desc, {"analysis": "cluster"}), tmp_path / "cluster.html")
    page = open_report(load, out, tmp_path)
    assert page.count("svg.scatter circle.pt") == 30
    assert page.count("circle.pt[data-group='-1']") == 8
    legend = page.page.inner_text(".legend")
    assert "cluster 0 (12): refunds" in legend and "noise (8)" in legend  # named from its labelled features
    assert "cluster 1 (10): praise" in legend
    assert "26.7%" in page.page.inner_text("#summary")  # 8 of 30 are noise


def test_cluster_page_samples_large_maps(tmp_path):
    docs = pl.DataFrame({"doc_id": [str(i) for i in range(200)], "cluster": [i % 3 for i in range(200)],
                         "x": [float(i) for i in range(200)], "y": [0.0] * 200})
    html = cluster_page(docs, None, None, max_points=50)
    assert html.count('class="pt"') == 50 and "random 50 of 200" in html


def test_classify_page(tmp_path, load):
    curve = pl.DataFrame({"model": ["sae"] * 4 + ["dense"] * 3, "recall": [0.0, 0.5, 0.9, 1.0, 0.0, 0.5, 1.0],
                          "precision": [1.0, 0.9, 0.7, 0.5, 1.0, 0.6, 0.5]})
    weights = pl.DataFrame({"feature": [1, 2, 3], "weight": [1.5, -2.0, 0.1], "label": ["refund", "praise", HOSTILE]})
    out = write_report(classify_page(curve, {"auroc": 0.91, "f1": 0.8, "positive_rate": 0.5}, weights, {"analysis": "classify"}),
                       tmp_path / "classify.html")
    page = open_report(load, out, tmp_path)
    assert page.count("svg.line-chart path.curve") == 2
    assert page.count("#weights rect.bar") == 3 and page.count("#weights rect.bar-b") == 1
    assert page.texts("#weights text.bar-label")[0].startswith("#2")  # largest |weight| first
    assert "0.91" in page.page.inner_text("#metrics") and page.dialogs == []


def test_filter_and_search_pages(tmp_path, load):
    rules = pl.DataFrame({"rule": ["toxic", "too short", "dupe"], "count": [12, 5, 0]})
    over = pl.DataFrame({"feature": [7], "label": ["insult"], "freq_dropped": [0.8], "freq_kept": [0.05]})
    samples = pl.DataFrame({"doc_id": ["x1"], "rule": ["toxic"], "snippet": [f"you «idiot» {HOSTILE}"]})
    out = write_report(filter_page(rules, over, samples, {"analysis": "filter"}), tmp_path / "filter.html")
    page = open_report(load, out, tmp_path)
    assert page.count("#rules rect.bar") == 3 and page.count("#common rect.bar") == 2
    assert page.texts("#samples mark.act") == ["idiot"] and HOSTILE in page.page.inner_text("#samples")
    results = pl.DataFrame({"doc_id": ["a", "b"], "score": [0.9, 0.4], "matched_features": [[1, 4], [1]],
                            "snippet": ["I want a «refund» now", "no «refund»?"]})
    out = write_report(search_page(results, {"analysis": "search"}, query="refund <x>"), tmp_path / "search.html")
    page = open_report(load, out, tmp_path)
    assert page.count("#scores rect.bar") == 2 and page.texts("#results mark.act") == ["refund", "refund"]
    assert page.page.title() == "Search: refund <x>"


def test_diff_page_accepts_the_full_diff_frame(tmp_path, load):
    """The statistical diff's columns (p/q values, means, «marked» exemplars, no exemplar windows)."""
    frame = pl.DataFrame({
        "feature": [1, 2, 3], "label": ["refund", "praise", None], "freq_a": [0.9, 0.1, 0.4], "freq_b": [0.2, 0.7, 0.3],
        "diff": [0.7, -0.6, 0.1], "ratio": [4.5, 0.14, 1.3], "mean_a": [1.0, 0.2, 0.5], "mean_b": [0.3, 1.1, 0.4],
        "p_value": [1e-6, 1e-4, 0.3], "q_value": [3e-6, 1.5e-4, 0.3],
        "exemplar_a": ["a «refund» here", None, "x «y»"], "exemplar_b": ["b «refund»", "so «lovely»", None]})
    summary = {"a": "tickets", "b": "reviews", "n_a": 80, "n_b": 80, "length_difference": 12.9}
    out = write_report(diff_page(frame, summary, {"analysis": "diff"}), tmp_path / "diff_full.html")
    page = open_report(load, out, tmp_path)
    assert page.count("#more-a g.bar-row") == 2 and page.count("#more-b g.bar-row") == 1
    assert "2 of 3 features differ at q < 0.05" in page.page.inner_text("#more-a")
    assert page.texts("#exemplars mark.act") == ["refund", "refund", "y", "lovely"]
    assert page.page.title() == "Diff: tickets vs reviews"


def test_report_correlate_cli(capsys, monkeypatch, planted_file, tmp_path, load):
    out = tmp_path / "correlate.html"
    code, stdout, err = run(capsys, monkeypatch, "report", "correlate", "alpha", "--min-docs", "3", "--min-pair-docs", "3",
                            "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    # feature 1 fires in every alpha document: generic, left out by default -> only the pair 3-4
    assert json.loads(stdout)["pairs"] == 1
    code, stdout, err = run(capsys, monkeypatch, "report", "correlate", "alpha", "--min-docs", "3", "--min-pair-docs", "3", "--keep-generic",
                            "--store", planted_file, "--out", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    # In alpha, features 1, 3, 4 fire in >= 3 docs, and every pair of them co-occurs in >= 3 docs (1-4: 6, 1-3: 5, 3-4: 5).
    assert summary["pairs"] == 3
    page = open_report(load, out, tmp_path)
    assert page.count("svg.heatmap rect.cell") == 6 and page.count("#strongest tbody tr") == 3
    assert LABELS[1] in page.page.inner_text("#strongest") and page.dialogs == []


def _curve_points(page, name):
    """The (recall, precision) points of a drawn PR curve, in drawing order (line_chart's default axes)."""
    d = page.page.locator(f"svg.line-chart path.curve[data-name='{name}']").get_attribute("d")
    pts = [tuple(map(float, p.split(","))) for p in d[1:].split(" L")]
    return [(round((x - 50) / 496, 2), round((360 - y) / 346, 2)) for x, y in pts]


def test_classify_page_draws_points_in_threshold_order(tmp_path, load):
    """Equal-recall points, given out of order: drawn highest threshold first (recall rising, then at equal
    recall precision falling), so the line never doubles back."""
    curve = pl.DataFrame({"model": ["sae"] * 5 + ["dense"] * 3,
                          "threshold": [0.2, 0.7, 0.5, 0.9, 0.6, 0.3, 0.8, 0.5],
                          "recall": [1.0, 0.5, 0.5, 0.25, 0.5, 1.0, 0.4, 0.4],
                          "precision": [0.5, 0.8, 0.6, 1.0, 0.7, 0.5, 0.9, 0.7]})
    out = write_report(classify_page(curve, {"auroc": 0.9}), tmp_path / "classify_order.html")
    page = open_report(load, out, tmp_path)
    assert _curve_points(page, "sae") == [(0.25, 1.0), (0.5, 0.8), (0.5, 0.7), (0.5, 0.6), (1.0, 0.5)]
    assert _curve_points(page, "dense") == [(0.4, 0.9), (0.4, 0.7), (1.0, 0.5)]
    # without a threshold column: by recall, then precision falling
    bare = curve.filter(pl.col("model") == "sae").drop("model", "threshold").reverse()
    out = write_report(classify_page(bare), tmp_path / "classify_bare.html")
    page = open_report(load, out, tmp_path)
    assert _curve_points(page, "classifier") == [(0.25, 1.0), (0.5, 0.8), (0.5, 0.7), (0.5, 0.6), (1.0, 0.5)]


def test_cluster_page_shows_highlighted_exemplars(tmp_path, load):
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(6)], "cluster": [0, 0, 0, 1, 1, -1],
                         "x": [float(i) for i in range(6)], "y": [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]})
    desc = pl.DataFrame({"cluster": [0, 0, 1], "rank": [1, 2, 1], "feature": [1, 4, 2],
                         "label": ["refunds", HOSTILE, "praise"], "freq_in": [1.0, 0.67, 1.0],
                         "freq_out": [0.0, 0.33, 0.0],
                         "exemplar": [f"I want a «refund» {HOSTILE}", None, "…so «lovely» <b>x</b>"]})
    out = write_report(cluster_page(docs, desc, {"analysis": "cluster"}), tmp_path / "cluster_ex.html")
    page = open_report(load, out, tmp_path)
    assert page.texts(".feature-block[data-cluster='0'] mark.act") == ["refund"]
    assert page.texts(".feature-block[data-cluster='1'] mark.act") == ["lovely"]
    rows = page.texts(".feature-block[data-cluster='0'] tbody tr td:last-child")
    assert rows == [f"I want a refund {HOSTILE}", ""]  # the marker characters are gone, the text stays text
    assert page.texts(".feature-block[data-cluster='1'] tbody td:last-child") == ["…so lovely <b>x</b>"]
    clusters = page.page.locator("#clusters")
    assert clusters.locator("script").count() == 0 and clusters.locator("b").count() == 0
    assert "«" not in clusters.inner_text() and page.dialogs == []


def test_filter_page_highlights_common_exemplars(tmp_path, load):
    rules = pl.DataFrame({"rule": ["toxic"], "count": [3]})
    over = pl.DataFrame({"feature": [7, 8], "label": ["insult", None], "freq_dropped": [0.8, 0.5],
                         "freq_kept": [0.05, 0.1], "exemplar": [f"you «idiot» {HOSTILE}", "no marks here"]})
    out = write_report(filter_page(rules, over, None, {"analysis": "filter"}), tmp_path / "filter_ex.html")
    page = open_report(load, out, tmp_path)
    assert page.texts("#common mark.act") == ["idiot"]
    assert page.texts("#common tbody td:last-child") == [f"you idiot {HOSTILE}", "no marks here"]
    common = page.page.locator("#common")
    assert "«" not in common.inner_text() and common.locator("script").count() == 0 and page.dialogs == []

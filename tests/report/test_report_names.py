"""Reports name features and clusters from hand-set labels, and the features report leaves generic
features out unless asked."""

from saeembed.report.build import build_diff_report, build_features_report
from saeembed.report.pages import cluster_page, feature_name
import polars as pl
import pytest

from tests.test_cli_names import build_named_store


@pytest.fixture
def named_store(tmp_path):
    return build_named_store(tmp_path / "names.duckdb")


def test_features_report_leaves_generic_out(named_store):
    r = build_features_report(named_store, top=10)
    assert r.counts["generic_excluded"] == 1 and r.counts["features"] == 4
    assert "#3 · currency amounts" in r.html and "always on" not in r.html
    assert "1 generic features (firing on nearly every document" in r.html
    kept = build_features_report(named_store, top=10, keep_generic=True)
    assert kept.counts["generic_excluded"] == 0 and "#0 · always on" in kept.html
    assert "fires on ≥90% of documents" in kept.html  # the reason shown beside it


def test_diff_report_bars_read_as_names(named_store):
    html = build_diff_report(named_store, "A", "B", top=4, separability=False).html
    assert "#3 · currency amounts" in html and "#7 · order delays" in html


def test_names_in_bars_drop_the_atlas_note_and_clusters_are_named():
    atlas = '"$", "USD" (strongest; fires on 40% of texts)'
    assert feature_name(7, atlas) == '#7 · "$", "USD"'
    docs = pl.DataFrame({"doc_id": ["a", "b", "c"], "cluster": [0, 0, 1], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.0]})
    desc = pl.DataFrame({"cluster": [0, 0, 1], "feature": [3, 9, 5], "label": ["currency amounts", "late shipping", None],
                         "freq_in": [1.0, 1.0, 1.0], "freq_out": [0.0, 0.0, 0.0]})
    html = cluster_page(docs, desc)
    assert "cluster 0 (2): currency amounts · late shipping" in html and "cluster 1 (1): #5" in html

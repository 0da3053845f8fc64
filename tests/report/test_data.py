"""Store reads behind the reports, on the planted store whose answers are known by construction."""

import polars as pl

from saeembed.report.data import exemplar_windows, provenance, selection_windows


def test_exemplar_windows_locate_the_span_and_scale_by_the_feature_max(planted):
    store, sae = planted
    ex = exemplar_windows(store, sae.sae_key, [1, 2], corpus="alpha", per_feature=3)
    one = ex.filter(pl.col("feature") == 1)
    # Strongest alpha docs of feature 1 are 9, 8, 7 (value 1.0 + 0.1 i); alpha's max is also the feature's max.
    assert one["doc_id"].to_list() == ["alpha9", "alpha8", "alpha7"]
    assert one["rel"].round(4).to_list() == [1.0, round(1.8 / 1.9, 4), round(1.7 / 1.9, 4)]
    assert all(t[s:e] == "refund" for t, s, e in one.select("text", "span_start", "span_end").iter_rows())
    # Feature 2 in alpha: only doc 9 (0.2), scaled by its max over both corpora (1.5 in beta).
    two = ex.filter(pl.col("feature") == 2)
    assert two["doc_id"].to_list() == ["alpha9"] and abs(two["rel"][0] - 0.2 / 1.5) < 1e-6
    assert exemplar_windows(store, sae.sae_key, []).is_empty()


def test_selection_windows_stay_inside_the_slice(planted):
    from saeembed.analysis.selection import select

    store, sae = planted
    sel = select(store, "alpha", where="doc_id IN ('alpha1', 'alpha2')")
    ex = selection_windows(store, sel, [1, 4], per_feature=5)
    # Corpus-wide, feature 1's top is alpha9; inside the slice only alpha2 (1.2) and alpha1 (1.1).
    assert ex.filter(pl.col("feature") == 1)["doc_id"].to_list() == ["alpha2", "alpha1"]
    assert ex.filter(pl.col("feature") == 1)["rel"].round(6).to_list() == [round(1.2 / 1.9, 6), round(1.1 / 1.9, 6)]
    assert all(t[s:e] == "refund" for t, s, e in ex.filter(pl.col("feature") == 1).select("text", "span_start", "span_end").iter_rows())
    assert ex.filter(pl.col("feature") == 4)["doc_id"].to_list() == ["alpha1", "alpha2"]  # equal values: by doc order


def test_provenance_names_sae_model_corpora_and_version(planted):
    store, sae = planted
    p = provenance(store, sae, analysis="diff", params={"top": 5}, corpora=["alpha", "beta"])
    from saeembed import __version__

    assert p["sae"]["hash"] == sae.sae_hash and p["sae"]["d_sae"] == 16 and p["model"] == "synthetic-model"
    assert p["corpora"]["alpha"]["documents"] == 10 and p["corpora"]["beta"]["hook"] == "layers.1"
    assert p["parameters"] == {"top": 5} and p["saeembed_version"] == __version__

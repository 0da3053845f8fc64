"""Store reads behind the reports, on the planted store whose answers are known by construction."""

import polars as pl

from saeembed.report.data import exemplar_windows, frequency_diff, provenance


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


def test_frequency_diff_has_the_diff_columns_and_known_values(planted):
    store, sae = planted
    frame, summary, ex, info = frequency_diff(store, "alpha", "beta", top=5)
    got = {r["feature"]: (r["freq_a"], r["freq_b"], round(r["diff"], 6)) for r in frame.iter_rows(named=True)}
    assert got == {1: (1.0, 0.2, 0.8), 4: (0.6, 0.0, 0.6), 2: (0.1, 0.8, -0.7)}  # feature 3: no difference, left out
    assert frame["feature"].to_list() == [1, 4, 2]
    assert frame.filter(pl.col("feature") == 1)["label"][0] == "asks for a refund <b>"
    assert summary["n_a"] == 10 and summary["n_b"] == 10 and info.sae_key == sae.sae_key
    assert summary["length_difference"] == round(summary["mean_chars_a"] - summary["mean_chars_b"], 1)
    assert set(ex["side"]) == {"a", "b"} and ex.filter((pl.col("side") == "b") & (pl.col("feature") == 4)).is_empty()


def test_provenance_names_sae_model_corpora_and_version(planted):
    store, sae = planted
    p = provenance(store, sae, analysis="diff", params={"top": 5}, corpora=["alpha", "beta"])
    from saeembed import __version__

    assert p["sae"]["hash"] == sae.sae_hash and p["sae"]["d_sae"] == 16 and p["model"] == "synthetic-model"
    assert p["corpora"]["alpha"]["documents"] == 10 and p["corpora"]["beta"]["hook"] == "layers.1"
    assert p["parameters"] == {"top": 5} and p["saeembed_version"] == __version__

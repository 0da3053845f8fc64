"""The local hint beside a label: the token a feature's strongest rows peak on here, when most agree."""

import polars as pl

from saeembed.analysis.diff import DiffConfig, diff_corpora
from saeembed.analysis.local_tokens import local_hint, peak_token
from tests.synthetic import register_sae, write_corpus


def test_hint_names_the_token_most_rows_peak_on():
    assert local_hint(["CV"] * 9 + ["CVE"], label='"debt"') == "«CV» 9/10"
    assert local_hint(["Re", "re", "re", "re", "are", "are", "x"]) == "«re» 4/7, «are» 2/7"  # commonest spelling
    assert local_hint(["a", "b", "c", "d", "a", "b"]) is None  # no token takes half the rows
    assert local_hint(["CV"] * 4) is None  # too few rows to say
    assert local_hint(["CV", None, None, "CV", "CV", "CV", "CV"]) == "«CV» 5/5"  # rows without a span say nothing


def test_no_hint_when_the_label_already_names_the_token():
    assert local_hint(["2021"] * 6, label='years ("2021", "2023")') is None
    assert local_hint(["202"] * 6, label='years ("2021", "2023")') is None  # a piece of a named word
    assert local_hint(["@"] * 6, label="@-mentions of users") is None
    assert local_hint(["request"] * 5 + ["requests"] * 3, label='"request", "route"') is None  # a form of a named word
    assert local_hint(["re"] * 6, label='"are"') == "«re» 6/6"  # a short token must be a whole word
    assert local_hint(["idiot"] * 6, label='"bitch", "cunt" near "ass"') == "«idiot» 6/6"


def test_peak_token_is_one_line_and_bounded():
    assert peak_token("a CVE line", 2, 4) == "CV"
    assert peak_token("x\n\ty z", 0, 5) == "x y"
    assert peak_token("text", None, None) is None and peak_token("text", 2, 2) is None
    assert len(peak_token("w" * 100, 0, 100)) == 24


def test_diff_rows_carry_the_hint_from_the_side_the_feature_is_more_frequent_on(store):
    sae = register_sae(store)
    # feature 3 fires on most of A, whose documents are one word each (spans cover the whole text): "CV"
    # for the strongest ones; feature 7 fires on most of B, whose documents are all different words
    a_docs = [{3: 2.0 + i / 100} if i < 30 else {3: 0.5} if i < 40 else {} for i in range(60)]
    a_texts = ["CV" if i < 30 else f"alpha{i}" for i in range(60)]
    b_docs = [{7: 1.0 + i / 100} if i < 40 else {3: 0.1} if i < 45 else {} for i in range(60)]
    write_corpus(store, sae, "A", a_docs, texts=a_texts)
    write_corpus(store, sae, "B", b_docs, texts=[f"beta{i}" for i in range(60)])
    store.save_labels(sae.sae_key, "hand", [(3, "money owed", "manual", None, {})])
    f = diff_corpora(store, "A", "B", config=DiffConfig(top=None)).frame
    rows = {r["feature"]: r for r in f.iter_rows(named=True)}
    assert rows[3]["more_in"] == "A" and rows[3]["here"] == "«CV» 10/10"
    assert rows[7]["more_in"] == "B" and rows[7]["here"] is None  # its rows peak on ten different words
    assert f.columns.index("here") == f.columns.index("generic_reason") + 1
    store.save_labels(sae.sae_key, "hand", [(3, "the CV of CVE ids", "manual", None, {})])
    again = diff_corpora(store, "A", "B", config=DiffConfig(top=None)).frame
    assert again.filter(pl.col("feature") == 3)["here"].to_list() == [None]  # the label says it already
    none = diff_corpora(store, "A", "B", config=DiffConfig(top=None, exemplars=0)).frame
    assert none["here"].null_count() == none.height  # no text read, no hint


def test_features_listing_and_report_carry_the_hint_escaped(store, tmp_path):
    from saeembed.analysis.feature_list import list_features
    from saeembed.config import FeaturesConfig
    from saeembed.report.build import build_features_report

    sae = register_sae(store)
    docs = [{3: 2.0 + i / 100} if i < 30 else {5: 1.0} if i < 50 else {} for i in range(60)]
    texts = ["<b>x</b>" if i < 30 else f"gamma{i}" for i in range(60)]
    write_corpus(store, sae, "A", docs, texts=texts)
    frame = list_features(store, "A", config=FeaturesConfig(top=5)).frame
    rows = {r["feature"]: r for r in frame.iter_rows(named=True)}
    assert rows[3]["here"] == "«<b>x</b>» 10/10" and rows[5]["here"] is None  # 5 peaks on ten different words
    assert frame.columns.index("here") == frame.columns.index("label") + 1 and "peak_tokens" not in frame.columns
    html = build_features_report(store, "A", top=5).html
    assert "«&lt;b&gt;x&lt;/b&gt;» 10/10" in html and "<b>x</b>" not in html


def test_cluster_descriptions_carry_the_hint_of_their_own_members(store):
    import numpy as np

    from saeembed.analysis.cluster_describe import cluster_table, describe_clusters
    from saeembed.analysis.selection import select

    sae = register_sae(store)
    # feature 3 fires on all of cluster 0 (the first 30 documents, reading "CV") and on a third of cluster 1
    # (reading "DE"), more strongly there: only a read inside cluster 0 gets its peak token right
    docs = [{3: 1.0 + i / 100} for i in range(30)] + [{3: 5.0 + i / 100, 5: 1.0} if i < 10 else {5: 1.0}
                                                      for i in range(30)]
    write_corpus(store, sae, "A", docs, texts=["CV"] * 30 + ["DE"] * 30)
    labels = np.array([0] * 30 + [1] * 30)
    d = describe_clusters(store, select(store, "A"), labels, top=3)
    rows = {(r["cluster"], r["feature"]): r for r in d.iter_rows(named=True)}
    assert rows[(0, 3)]["here"] == "«CV» 10/10" and rows[(1, 5)]["here"] == "«DE» 10/10"
    table = cluster_table(labels, d)
    assert "#5 · here «DE» 100% vs 0%" in table.filter(pl.col("cluster") == 1)["description"][0]


def test_only_the_rows_a_table_shows_get_the_hint():
    from saeembed.analysis.diff_exemplars import HINTED, _hinted

    n = HINTED + 5
    frame = pl.DataFrame({"ranking": ["raw"] * (2 * n) + ["length_controlled"] * 2,
                          "feature": list(range(n)) + list(range(100, 100 + n)) + [7, 200],
                          "more_in": ["A"] * n + ["B"] * n + ["B", "A"]})
    got = _hinted(frame)
    assert (HINTED - 1, "a") in got and (HINTED, "a") not in got  # the first HINTED of A's rows
    assert (100, "b") in got and (100 + HINTED, "b") not in got
    assert (7, "b") in got and (200, "a") in got  # each ranking on its own
    assert len(got) == 2 * HINTED + 2


def test_offline_hypotheses_say_the_token_a_feature_peaks_on_there():
    from saeembed.analysis.diff_summary import hypothesis_text
    from saeembed.analysis.local_tokens import hint_tokens

    assert hint_tokens("«re» 6/10, «are» 2/10") == "«re», «are»" and hint_tokens(None) is None
    text = hypothesis_text("security", '"debt"', 2758, 1.0, 0.03, "«CV» 10/10")
    assert text == 'security mentions "debt" (here «CV») far more often (100% vs 3%)'
    assert hypothesis_text("a", '"debt"', 2758, 0.5, 0.4) == 'a mentions "debt" somewhat more often (50% vs 40%)'


def test_correlate_pairs_carry_each_side_s_hint_on_a_whole_corpus(store):
    from saeembed.analysis.correlate import correlate
    from saeembed.config import CorrelateConfig

    sae = register_sae(store)
    # features 3 and 5 fire together on the first 40 documents (reading "CV"), 7 and 9 on the next 40
    # (all different words); the last 40 fire nothing of these
    docs = [{3: 2.0 + i / 100, 5: 1.0} if i < 40 else {7: 1.0, 9: 1.0} if i < 80 else {11: 1.0} for i in range(120)]
    texts = ["CV" if i < 40 else f"delta{i}" for i in range(120)]
    write_corpus(store, sae, "A", docs, texts=texts, meta={"half": ["x" if i % 2 else "y" for i in range(120)]})
    cfg = CorrelateConfig(top=10, min_docs=5, min_pair_docs=5)
    pairs = correlate(store, "A", config=cfg).pairs
    rows = {(r["feature_a"], r["feature_b"]): r for r in pairs.iter_rows(named=True)}
    assert rows[(3, 5)]["here_a"] == "«CV» 10/10" and rows[(3, 5)]["here_b"] == "«CV» 10/10"
    assert rows[(7, 9)]["here_a"] is None  # ten different words
    assert pairs.columns[:6] == ["feature_a", "label_a", "here_a", "feature_b", "label_b", "here_b"]
    sliced = correlate(store, "A", where="half = 'x'", config=cfg).pairs
    assert sliced["here_a"].null_count() == sliced.height  # a slice's strongest documents are not stored


def test_pairs_peaking_on_the_same_token_are_not_unexpected(store):
    from saeembed.analysis.correlate import correlate
    from saeembed.analysis.local_tokens import dominant
    from saeembed.config import CorrelateConfig

    assert dominant(["CV", "cv", "CV", "x", "y"]) == "cv" and dominant(["a", "b", "c", "d", "e"]) is None
    assert dominant(["CV"] * 4) is None
    sae = register_sae(store)
    # 11 and 13 fire together on 60 documents (the strongest pair); 3 and 5 together on 30 "CV" documents,
    # 7 and 9 on 30 documents of all-different words. Both of those pairs are labelled far apart, so without
    # the token check both would be unexpected.
    docs = [{11: 1.0, 13: 1.0} if i < 60 else {3: 2.0 + i / 100, 5: 1.0} if i < 90 else {7: 1.0, 9: 1.0} if i < 120
            else {} for i in range(180)]
    write_corpus(store, sae, "A", docs, texts=["CV" if 60 <= i < 90 else f"delta{i}" for i in range(180)])
    store.save_labels(sae.sae_key, "hand", [(f, lab, "manual", None, {}) for f, lab in
                                            ((3, "money owed"), (5, "rivers and lakes"), (7, "kitchens"), (9, "tax law"),
                                             (11, "cats"), (13, "dogs"))])
    r = correlate(store, "A", config=CorrelateConfig(top=1, min_docs=5, min_pair_docs=5, unexpected_npmi=0.0))
    assert list(zip(r.pairs["feature_a"], r.pairs["feature_b"])) == [(11, 13)]
    unexpected = set(zip(r.unexpected["feature_a"], r.unexpected["feature_b"]))
    assert (7, 9) in unexpected and (3, 5) not in unexpected and r.summary["unexpected_same_token"] == 1


def test_distinctive_features_of_the_demo_carry_the_hint(store):
    from saeembed.analysis.frequency import distinctive_features

    sae = register_sae(store)
    write_corpus(store, sae, "A", [{3: 2.0 + i / 100} for i in range(20)], texts=["CV"] * 20)
    write_corpus(store, sae, "B", [{5: 1.0} for _ in range(20)], texts=[f"w{i}" for i in range(20)])
    d = distinctive_features(store, "A", ["B"], top=1)
    assert d["feature"].to_list() == [3] and d["here"].to_list() == ["«CV» 10/10"]
    assert d.columns == ["feature", "freq", "freq_other", "diff", "label", "here", "exemplar"]

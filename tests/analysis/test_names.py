"""Names everywhere: hand-set labels reach the features listing (generic features left out), cluster names,
the offline diff summary, filter rules; and the naming helpers themselves."""

import polars as pl
import pytest

from saeembed.analysis.cluster import cluster
from saeembed.analysis.diff import DiffConfig, diff_corpora
from saeembed.analysis.diff_summary import summarize
from saeembed.analysis.feature_list import list_features
from saeembed.analysis.filter import FilterSpec, filter_corpus
from saeembed.analysis.names import feature_name, group_name, named_columns, short_label
from saeembed.config import FeaturesConfig
from saeembed.interp.llm import LLMClient, LLMConfig
from tests.llm_server import llm_server  # noqa: F401
from tests.synthetic import register_sae, write_corpus

LABELS = {0: "always on", 3: "currency amounts", 5: "refunds", 7: "order delays", 9: "late shipping",
          11: "praise", 12: "five stars"}


def _hand_labels(store, sae):
    store.save_labels(sae.sae_key, "hand", [(f, lab, "manual", None, {}) for f, lab in LABELS.items()])


@pytest.fixture
def planted(store):
    """A: feature 3 on 63 of 100 documents, 7 on 10; B: 3 on 4 of 100, 7 on 50. Feature 0 fires on every
    document of both (generic); feature 1 on every other one."""
    sae = register_sae(store)
    a = [[0] + ([3] if i < 63 else []) + ([7] if i < 10 else []) + ([1] if i % 2 else []) for i in range(100)]
    b = [[0] + ([3] if i < 4 else []) + ([7] if i < 50 else []) + ([1] if i % 2 else []) for i in range(100)]
    write_corpus(store, sae, "A", a)
    write_corpus(store, sae, "B", b)
    _hand_labels(store, sae)
    return store, sae


def test_naming_helpers():
    atlas = '"angles", "angle" (strongest; fires on 76% of texts)'
    assert short_label(atlas) == '"angles", "angle"'
    assert short_label("a  very\nlong label indeed", 10) == "a very lo…"
    assert feature_name(12, "refunds") == "#12 · refunds" and feature_name(12, None) == "#12"
    assert feature_name(12, atlas) == f"#12 · {atlas}"  # in full unless asked to shorten
    assert feature_name(12, atlas, short=True) == '#12 · "angles", "angle"'
    assert group_name([None, "refunds", "Refunds", "order delays", "praise"]) == "refunds · order delays"
    assert group_name([None, ""]) is None
    f = pl.DataFrame({"feature_a": [1, 2], "label_a": ["x", None], "npmi": [0.5, 0.4]})
    assert named_columns(f, (("feature_a", "label_a"),)).to_dict(as_series=False) == {
        "feature_a": ["#1 · x", "#2"], "npmi": [0.5, 0.4]}


def test_features_listing_leaves_generic_out_and_carries_labels(planted):
    store, _ = planted
    r = list_features(store, config=FeaturesConfig(top=5))
    assert 0 not in r.frame["feature"].to_list()  # fires on all 200 documents
    assert r.summary["generic_excluded"] == 1
    # what is left, by documents: 1 (100 of 200), 3 (67), 7 (60)
    assert r.frame["feature"].to_list() == [1, 3, 7]
    assert dict(zip(r.frame["feature"], r.frame["label"])) == {1: None, 3: "currency amounts", 7: "order delays"}
    kept = list_features(store, config=FeaturesConfig(top=5, keep_generic=True))
    assert kept.frame["feature"].to_list() == [0, 1, 3, 7] and kept.summary["generic_excluded"] == 0
    row = kept.frame.row(0, named=True)
    assert row["generic"] and "documents" in row["generic_reason"] and row["label"] == "always on"
    assert not kept.frame["generic"][1:].any()
    # per corpus: in B alone feature 7 fires on half the documents, 3 on 4
    b = list_features(store, "B", config=FeaturesConfig(top=5))
    assert b.frame.select("feature", "freq").rows() == [(1, 0.5), (7, 0.5), (3, 0.04)]


def test_offline_summary_speaks_in_labels_with_direction_and_shares(planted):
    store, _ = planted
    r = diff_corpora(store, "A", "B", config=DiffConfig(top=None, separability=False))
    h = summarize(store, {"": r})
    texts = h["hypothesis"].to_list()
    assert "A mentions currency amounts far more often (63% vs 4%)" in texts
    assert "B mentions order delays far more often (50% vs 10%)" in texts
    row = h.filter(pl.col("hypothesis").str.contains("currency")).row(0, named=True)
    assert row["direction"] == "A" and row["features"] == [3] and row["source"] == "offline"
    assert (row["share_a"], row["share_b"]) == pytest.approx((0.63, 0.04))
    assert not any("#" in t or "feature " in t for t in texts[:2])  # words, not bare ids


def test_cluster_names_come_from_the_clusters_labels(store):
    """Two planted groups: documents 0-29 fire 5 and 9, documents 30-59 fire 11 and 12."""
    sae = register_sae(store)
    docs = [[5, 9] if i < 30 else [11, 12] for i in range(60)]
    write_corpus(store, sae, "C", docs)
    _hand_labels(store, sae)
    r = cluster(store, "C", features=[5, 9, 11, 12], save=False, k=2)
    assert sorted(r.clusters["name"].to_list()) == ["praise · five stars", "refunds · late shipping"]
    assert r.clusters.columns[:2] == ["cluster", "name"]
    assert "#5 · refunds 100% vs 0%" in " ".join(r.clusters["description"].to_list())


def test_cluster_names_from_an_llm_where_usable(store, llm_server):  # noqa: F811
    sae = register_sae(store)
    write_corpus(store, sae, "C", [[5, 9] if i < 30 else [11, 12] for i in range(60)])
    _hand_labels(store, sae)
    # the refunds cluster gets a usable answer, the other one garbage: it keeps its offline name
    llm_server.responder = lambda body: ({"name": "Refund requests", "description": "x"}
                                         if "refunds" in body["messages"][-1]["content"] else "garbage")
    client = LLMClient(store, LLMConfig(model="helper", base_url=llm_server.url, api_key="k", backoff=0.01))
    r = cluster(store, "C", features=[5, 9, 11, 12], save=False, k=2, llm=client)
    got = sorted(r.clusters.select("name", "name_source").rows())
    assert got == [("Refund requests", "llm:helper"), ("praise · five stars", "offline")]


def test_cluster_name_falls_back_to_ids(store):
    sae = register_sae(store)
    write_corpus(store, sae, "C", [[2, 4] if i < 20 else [6, 8] for i in range(40)])
    r = cluster(store, "C", features=[2, 4, 6, 8], save=False, k=2)
    assert sorted(r.clusters["name"].to_list()) == ["#2, #4", "#6, #8"]


def test_filter_rules_name_their_features(planted):
    store, _ = planted
    res = filter_corpus(store, "A", FilterSpec(drop=["f7 > 0"], drop_features=[3], keep=["doc_id != 'x'"]))
    rules = {r["rule"]: r["features"] for r in res.rules.iter_rows(named=True)}
    assert rules == {"keep: doc_id != 'x'": [], "drop: f7 > 0": ["#7 · order delays"],
                     "drop-feature: 3": ["#3 · currency amounts"]}
    assert res.features is not None
    top = res.features.row(0, named=True)  # dropped rows all have 3 or 7; 3 is on 63 of them
    assert (top["feature"], top["label"]) == (3, "currency amounts")

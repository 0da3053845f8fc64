"""summarize_diff, choose_features, name_clusters: offline results, and LLM results checked against the
scripted server (invented feature ids dropped, unusable answers fall back to offline)."""

import re

import polars as pl

from saeembed.interp.assist import choose_features, name_clusters, summarize_diff
from saeembed.interp.labels import label_features
from saeembed.interp.llm import LLMClient, LLMConfig
from saeembed.interp.scoring import EmbeddingScorer
from tests.interp.planted import bag_of_words_embed, planted_store
from tests.synthetic import register_sae, write_corpus


def _client(store, server):
    return LLMClient(store, LLMConfig(model="helper", base_url=server.url, api_key="k", backoff=0.01))


def _two_corpora(store):
    sae = register_sae(store, d_sae=16)
    # feature 1: 8/10 of a vs 1/10 of b; feature 2: 2/10 vs 7/10; feature 3: same in both
    write_corpus(store, sae, "a", [[1, 3]] * 8 + [[2, 3]] * 2)
    write_corpus(store, sae, "b", [[1, 3]] + [[2, 3]] * 7 + [[3]] * 2)
    store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES "
                      "(1, 1, 'apologies', 'offline'), (1, 2, 'bullet lists', 'offline')")
    return pl.DataFrame({"feature": [1, 2, 3], "freq": [0.8, 0.2, 1.0], "freq_other": [0.1, 0.7, 1.0]})


def test_summarize_diff_offline(store):
    diff = _two_corpora(store)
    out = summarize_diff(store, diff, corpus_a="a", corpus_b="b", max_hypotheses=2)
    assert out["features"].to_list() == [[1], [2]] and out["direction"].to_list() == ["a", "b"]
    assert "apologies" in out["hypothesis"][0] and out["source"][0] == "offline"
    assert out["share_a"].to_list() == [0.8, 0.2] and out["share_b"].to_list() == [0.1, 0.7]
    assert "80% of a vs 10% of b" in out["evidence"][0][0]


def test_summarize_diff_llm_checks_its_answer(store, llm_server):
    diff = _two_corpora(store)
    llm_server.push('{"hypotheses": [{"statement": "A apologises and uses lists", "direction": "A", '
                    '"features": [1, 2, 999]}, {"statement": "invented", "direction": "A", "features": [42]}]}')
    out = summarize_diff(store, diff, corpus_a="a", corpus_b="b", llm=_client(store, llm_server))
    assert out.height == 1 and out["features"][0].to_list() == [1, 2] and out["source"][0] == "llm:helper"
    assert out["share_a"][0] == 1.0 and out["share_b"][0] == 0.8  # docs firing 1 or 2, computed from the store
    prompt = llm_server.requests[0]["messages"][-1]["content"]
    assert "apologies" in prompt and "A 80% vs B 10%" in prompt
    llm_server.push("no idea")
    out = summarize_diff(store, diff.head(2), corpus_a="a", corpus_b="b", llm=_client(store, llm_server))
    assert out.height == 2 and out["source"][0].startswith("offline (LLM answer unusable")


def test_choose_features(store, llm_server):
    planted_store(store)
    label_features(store, [3, 5, 0], scorer=EmbeddingScorer(bag_of_words_embed))
    off = choose_features(store, "covid", top=2, embed=bag_of_words_embed)
    assert off["feature"][0] == 3 and off["source"][0] == "offline"
    llm_server.push('{"features": [{"id": 5, "reason": "years"}, {"id": 77}, {"id": "3"}]}')
    out = choose_features(store, "when things happened", llm=_client(store, llm_server), embed=bag_of_words_embed)
    assert out["feature"].to_list() == [5, 3] and out["reason"][0] == "years"
    assert re.search(r"- 5: ", llm_server.requests[0]["messages"][-1]["content"])


def test_name_clusters(store, llm_server):
    planted_store(store)
    label_features(store, [3, 5], scorer=EmbeddingScorer(bag_of_words_embed))
    # cluster 0 = the covid documents (every 4th), cluster 1 = the rest, one noise doc
    assign = pl.DataFrame({"doc_idx": list(range(160)),
                           "cluster": [0 if i % 4 == 0 else (-1 if i == 1 else 1) for i in range(160)]})
    off = name_clusters(store, "planted", assign)
    rows = {r["cluster"]: r for r in off.to_dicts()}
    assert rows[0]["top_features"][0] == 3 and "covid" in rows[0]["name"] + "pandemic" and rows[0]["size"] == 40
    assert rows[-1]["name"] == "(noise)" and rows[1]["top_features"][0] == 5
    llm_server.responder = lambda body: {"name": "Pandemic news", "description": "covid"} \
        if "40 documents" in body["messages"][-1]["content"] else "garbage"
    out = {r["cluster"]: r for r in name_clusters(store, "planted", assign, llm=_client(store, llm_server)).to_dicts()}
    assert out[0]["name"] == "Pandemic news" and out[0]["source"] == "llm:helper"
    assert out[1]["source"].startswith("offline (LLM answer unusable") and out[1]["name"] == rows[1]["name"]


def test_llm_matcher_for_search_and_axes(store, llm_server, monkeypatch):
    import pytest

    from saeembed.errors import InputError
    from saeembed.interp.match import match_features

    _two_corpora(store)
    sae = store.encoded_sae("a")
    monkeypatch.delenv("SAEEMBED_LLM_MODEL", raising=False)
    with pytest.raises(InputError, match="SAEEMBED_LLM_MODEL"):
        match_features(store, sae, "sorry", method="llm")
    monkeypatch.setenv("SAEEMBED_LLM_MODEL", "helper")
    monkeypatch.setenv("SAEEMBED_LLM_BASE_URL", llm_server.url)
    monkeypatch.setenv("SAEEMBED_LLM_KEY", "k")
    llm_server.push('{"features": [{"id": 1, "reason": "apologising"}, {"id": 99}]}')
    out = match_features(store, sae, "saying sorry", method="llm", top=3)
    assert out["feature"].to_list() == [1] and out["evidence"][0] == "apologising"
    assert out["label"][0] == "apologies"

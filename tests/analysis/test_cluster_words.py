"""Cluster names in words: the words a cluster's documents use far more often than the rest."""

from saeembed.analysis.cluster import cluster
from saeembed.analysis.cluster_words import distinctive, doc_words
from tests.synthetic import register_sae, write_corpus


def test_distinctive_words_need_share_and_lift():
    words = {i: doc_words(t) for i, t in enumerate([
        "My password reset link never arrives", "Cannot log in: password rejected", "The password page loops",
        "Refund for my order please", "Where is my order?", "The order arrived broken, refund it",
    ])}
    assert doc_words("It's the Password, isn't it? 42") == {"password"}  # lower case, no stop words or numbers
    assert distinctive([0, 1, 2], [3, 4, 5], words, n=3, min_share=0.2, min_lift=2.0) == ["password"]
    assert distinctive([3, 4, 5], [0, 1, 2], words, n=3, min_share=0.2, min_lift=2.0) == ["order", "refund"]
    # a word in one document of the cluster does not name it, however rare it is outside
    assert "link" not in distinctive([0, 1, 2], [3, 4, 5], words, n=5, min_share=0.2, min_lift=2.0)
    # a word as common outside as inside does not name it
    words[3] |= {"password"}
    words[4] |= {"password"}
    assert distinctive([0, 1, 2], [3, 4, 5], words, n=3, min_share=0.2, min_lift=2.0) == []


def test_cluster_is_named_by_its_documents_words(store):
    """Two planted groups whose documents speak of logins and of refunds; the features carry no labels."""
    sae = register_sae(store)
    login = ["password reset fails at login", "login password rejected", "account locked after password change"]
    refund = ["refund for the broken order", "order arrived late, refund please", "still waiting for my refund"]
    texts = [login[i % 3] + f" case {i}" if i < 30 else refund[i % 3] + f" case {i}" for i in range(60)]
    write_corpus(store, sae, "C", [[5, 9] if i < 30 else [11, 12] for i in range(60)], texts=texts)
    r = cluster(store, "C", features=[5, 9, 11, 12], save=False, k=2)
    names = sorted(r.clusters["name"].to_list())
    # in every document of its group, then in two of three; the third word is one of several tied ones
    assert [n.split(" · ")[:2] for n in names] == [["password", "login"], ["refund", "order"]]
    assert all(len(n.split(" · ")) == 3 for n in names)


def test_atlas_labels_do_not_stand_in_for_written_ones():
    """An axis name ("topic") is matched to labels only when people or an LLM wrote them: the atlas's
    labels are offline phrases (a feature's own words), so `--axis topic` must still find the axis."""
    import polars as pl

    from saeembed.analysis.cluster import _mostly_labelled

    class Labels:
        def __init__(self, source):
            self.source = source

        def labels(self, sae_key, features):
            return pl.DataFrame({"feature": features, "label": [f"label {f}" for f in features],
                                 "label_source": [self.source] * len(features)})

    class Sel:
        class sae:
            sae_key = 1

    assert not _mostly_labelled(Labels("atlas"), Sel, [1, 2, 3])
    assert not _mostly_labelled(Labels("offline"), Sel, [1, 2, 3])
    assert _mostly_labelled(Labels("llm"), Sel, [1, 2, 3])

import polars as pl
import pytest

from saeembed.analysis.frequency import distinctive_features, feature_frequencies
from saeembed.errors import StoreError
from saeembed.documents import Documents
from tests.conftest import make_sae


def _store_with_rows(store, rows_by_corpus: dict[str, list[list[int]]], sae_seed=0):
    """Corpora whose documents fire exactly the listed features (value 1.0), written as an encode would."""
    sae = store.register_sae(make_sae(8, 16, seed=sae_seed))
    for name, docs in rows_by_corpus.items():
        frame = pl.DataFrame({"doc_id": [f"{name}{i}" for i in range(len(docs))], "text": ["x"] * len(docs)})
        info = store.add_corpus(name, Documents(frame, "text", "id", [], "mem", 0))
        store.begin_encoding(info, sae, "m", "layers.1", {})
        acts = pl.DataFrame(
            [(i, f, 1.0, 1, 0, 1) for i, feats in enumerate(docs) for f in feats],
            schema={"doc_idx": pl.Int32, "feature": pl.Int32, "value": pl.Float32, "active_tokens": pl.Int32,
                    "span_start": pl.Int32, "span_end": pl.Int32}, orient="row",
        )
        stats = pl.DataFrame({"doc_idx": list(range(len(docs))), "n_tokens": [1] * len(docs), "n_windows": [1] * len(docs)})
        store.write_encoded(info, sae, acts, stats)
        store.finish_encoding(info, sae)
    return sae


def test_frequencies_and_distinctive_features(store):
    # feature 3 is planted in A (4 of 4 docs) and rare in B (1 of 5); feature 1 is everywhere
    _store_with_rows(store, {"A": [[1, 3], [1, 3], [1, 3, 5], [1, 3]], "B": [[1], [1, 3], [1, 5], [1], [1, 5]]})
    f = feature_frequencies(store, ["A", "B"])
    got = {(r["corpus"], r["feature"]): (r["docs"], r["freq"]) for r in f.iter_rows(named=True)}
    assert got[("A", 3)] == (4, 1.0) and got[("B", 3)] == (1, 0.2) and got[("B", 5)] == (2, 0.4)
    assert ("A", 7) not in got
    d = distinctive_features(store, "A", ["B"], top=2)
    assert d["feature"].to_list() == [3, 1]  # 3: 1.0 - 0.2; then 1: 1.0 - 1.0 ties 5 (0.25 - 0.4 < 0)
    assert d["diff"][0] == pytest.approx(0.8)
    assert d["freq_other"][0] == pytest.approx(0.2)


def test_comparing_corpora_encoded_with_different_saes_is_refused(store):
    _store_with_rows(store, {"A": [[1]]}, sae_seed=0)
    _store_with_rows(store, {"B": [[1]]}, sae_seed=1)
    with pytest.raises(StoreError, match="different SAEs"):
        feature_frequencies(store, ["A", "B"])

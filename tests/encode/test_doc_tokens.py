"""Token activations recomputed for one document agree with what its encode stored: per feature the
number of tokens where it fires, the peak value and the peak token's span, also when the document is
split into several windows."""

import polars as pl
import pytest

from saeembed.documents import Documents
from saeembed.encode.doc_tokens import DocTokens
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.errors import InputError
from saeembed.sae.formats import load_sae, save_sae
from saeembed.store import Store
from tests.conftest import make_sae

TEXTS = ["the quick brown fox jumps over the lazy dog and the cat sat on the mat with my refund",
         "hello world, please help with my account password"]


def test_tokens_match_the_stored_pooling_across_windows(tmp_path, tiny_bert_dir):
    save_sae(make_sae(32, 64, architecture="topk", k=8, hook="layers.1"), tmp_path / "sae")
    sae = load_sae(tmp_path / "sae")
    with Store(tmp_path / "s.duckdb") as st:
        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": ["a", "b"], "text": TEXTS}), "text", "id", [], "mem", 0))
        # window 8: the first document spans several windows
        encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=EncodeConfig(device="cpu", window=8))
        info = st.corpus("c")
        setup = st.encoding_setup(info.corpus_id, 1)
        stored = st.query("SELECT doc_idx, feature, value::DOUBLE AS value, active_tokens, span_start, span_end "
                          "FROM activations")
        split = st.query("SELECT n_windows FROM encoded_docs ORDER BY doc_idx")["n_windows"].to_list()
    assert split[0] > 1 and setup["sae_source"] and setup["params"]["window"] == 8
    scorer = DocTokens(setup["model"], setup["sae_source"], setup["hook"], setup["params"])
    for row in stored.iter_rows(named=True):
        toks = scorer.feature_tokens(TEXTS[row["doc_idx"]], row["feature"])
        assert len(toks) == row["active_tokens"]
        peak = max(toks, key=lambda t: t.value)
        assert peak.value == pytest.approx(row["value"], rel=1e-4)
        assert (peak.start, peak.end) == (row["span_start"], row["span_end"]) or \
            sum(t.value == peak.value for t in toks) > 1  # ties: the store keeps the first
    silent = set(range(64)) - set(stored.filter(pl.col("doc_idx") == 1)["feature"].to_list())
    assert scorer.feature_tokens(TEXTS[1], min(silent)) == []
    with pytest.raises(InputError, match="does not exist"):
        scorer.feature_tokens(TEXTS[1], 64)

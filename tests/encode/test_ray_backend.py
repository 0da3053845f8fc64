"""`encode --backend ray`: a local Ray cluster with 2 actors gives exactly the rows of a local encode,
and resumes an encode that a local run left half done. Skipped when ray is not installed."""

import sys

import pytest

from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.errors import InputError
from saeembed.store import Store
from tests.conftest import make_sae
from tests.encode.test_pipeline import _corpus
from tests.faultkit import snapshot

SAE = make_sae(32, 64, architecture="topk", k=6, hook="layers.1")


def _cfg(**kw):
    return EncodeConfig(chunk_docs=8, batch_size=4, device="cpu", **kw)


def test_ray_with_two_workers_equals_local_and_resumes(tmp_path, tiny_bert_dir):
    ray = pytest.importorskip("ray")
    with Store(tmp_path / "local.duckdb") as st:
        st.add_corpus("c", _corpus(40))
        encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg())

    def stop(done, tokens, total):
        if done >= 16:
            raise KeyboardInterrupt

    path = tmp_path / "ray.duckdb"
    with Store(path) as st:
        st.add_corpus("c", _corpus(40))
        with pytest.raises(KeyboardInterrupt):  # a local run stopped after 16 documents
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg(), progress=stop)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            r = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg(backend="ray", workers=2))
        finally:
            ray.shutdown()
        assert (r.docs_already, r.docs_encoded) == (16, 24)
        shards = st.shards("c")
        assert shards.height == 3 and shards["n_docs"].to_list() == [8, 8, 8] and shards["ok"].all()
    expected, got = snapshot(tmp_path / "local.duckdb", "c"), snapshot(path, "c")
    for key in ("activations", "encoded_docs", "exemplars", "encoding"):
        assert expected[key].equals(got[key]), key


def test_ray_missing_is_a_clear_error(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with Store(tmp_path / "s.duckdb") as st:
        st.add_corpus("c", _corpus(8))
        with pytest.raises(InputError, match=r"saeembed\[ray\]"):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg(backend="ray"))
        assert st.info()["encodings"] == 0  # nothing started

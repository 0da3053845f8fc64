"""`encode --backend ray --keep-tokens`: Ray actors write the token shards a local encode writes, so a
Ray-encoded store (here one that Ray resumed after a local run stopped halfway) holds exactly the local
token rows, and export --tokens, --pool, show and triggers read the same from it. Skipped without ray."""

import pyarrow.parquet as pq
import pytest

from saeembed.analysis.doc_view import show_document
from saeembed.analysis.pooling import pooled_rows
from saeembed.analysis.triggers import triggers
from saeembed.config import TriggersConfig
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.store import Store
from tests.conftest import make_sae
from tests.encode.test_pipeline import _corpus
from tests.faultkit import snapshot

SAE = make_sae(32, 64, architecture="topk", k=6, hook="layers.1")


def _cfg(**kw):  # window 8: most documents span several windows, so token_index runs across windows
    return EncodeConfig(chunk_docs=8, batch_size=4, device="cpu", window=8, keep_tokens=True, **kw)


def _tokens(st):
    info = st.corpus("c")
    return st.token_rows(info, st.encoded_sae(info))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_bert_dir):
    ray = pytest.importorskip("ray")
    base = tmp_path_factory.mktemp("ray_tokens")
    with Store(base / "local.duckdb") as st:
        st.add_corpus("c", _corpus(40))
        local = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg())

    def stop(done, tokens, total):
        if done >= 16:
            raise KeyboardInterrupt

    with Store(base / "ray.duckdb") as st:
        st.add_corpus("c", _corpus(40))
        with pytest.raises(KeyboardInterrupt):  # a local run stopped after 16 documents, resumed on Ray
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg(), progress=stop)
        before = _tokens(st).height
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            on_ray = encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=_cfg(backend="ray", workers=2))
        finally:
            ray.shutdown()
    return {"local": base / "local.duckdb", "ray": base / "ray.duckdb", "base": base,
            "local_result": local, "ray_result": on_ray, "before": before}


def test_ray_token_rows_equal_the_local_encode(stores):
    r = stores["ray_result"]
    assert (r.docs_already, r.docs_encoded) == (16, 24)
    with Store(stores["local"], read_only=True) as a, Store(stores["ray"], read_only=True) as b:
        expected, got = _tokens(a), _tokens(b)
        info = b.corpus("c")
        s = b.encoded_sae(info)
        assert b.has_token_rows(info, s)
        ray_files = b.token_files(info, s)[-3:]  # the three chunks Ray encoded, one token shard each
        local_file = a.token_files(a.corpus("c"), a.encoded_sae(a.corpus("c")))[0]
    assert expected.height > 0 and expected.equals(got)  # every row, value for value
    assert r.token_rows == got.height - stores["before"] > 0
    assert stores["local_result"].token_rows == expected.height
    assert all(pq.read_schema(f).equals(pq.read_schema(local_file), check_metadata=True) for f in ray_files)
    assert (got["token_index"] > 8).any()  # token_index counts across windows
    want, have = snapshot(stores["local"], "c"), snapshot(stores["ray"], "c")
    for key in ("activations", "encoded_docs", "exemplars", "encoding"):
        assert want[key].equals(have[key]), key


def test_export_pool_show_and_triggers_read_the_ray_rows(stores):
    out = {}
    for name in ("local", "ray"):
        with Store(stores[name]) as st:
            path = stores["base"] / f"{name}.parquet"
            n = st.export_tokens("c", path)
            frame = pq.read_table(path).to_pandas()
            pools = {p: pooled_rows(st, "c", p) for p in ("mean", "sum", "count")}
            st.set_pool("max", [])
            tokens = _tokens(st)
            feature = int(tokens["feature"].value_counts(sort=True)["feature"][0])
            doc = int(tokens.filter(tokens["feature"] == feature)["doc_idx"].max())  # one Ray encoded
            view = show_document(st, "c", f"t{doc}", [feature])
            trig = triggers(st, "c", [feature], config=TriggersConfig(n=2))
            out[name] = (n, frame, pools, feature, view, trig)
    (n_a, fa, pa_, fe_a, va, ta), (n_b, fb, pb, fe_b, vb, tb) = out["local"], out["ray"]
    assert n_a == n_b > 0 and fa.equals(fb)
    for p in pa_:
        assert pa_[p].equals(pb[p]), p
    assert fe_a == fe_b and va.source == vb.source == "token rows" and va.spans and va.spans == vb.spans
    assert ta.source == tb.source == "token rows" and ta.frame.height > 0 and ta.frame.equals(tb.frame)

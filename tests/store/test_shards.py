"""Parquet shards: transparent to every reader of `activations`, checked on open, compacted, dropped."""

import shutil

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.selection import embedding_matrix, select
from saeembed.encode.pipeline import EncodeConfig, encode_corpus
from saeembed.errors import StoreError
from saeembed.store import Store
from tests.encode.test_pipeline import _corpus
from tests.conftest import make_sae

SAE = make_sae(32, 64, architecture="topk", k=6, hook="layers.1")


def _encode(path, tiny_bert_dir, *, shards, n=40, corpus="c", sae=SAE, shard_docs=16):
    cfg = EncodeConfig(chunk_docs=8, batch_size=4, device="cpu", shards=shards, shard_docs=shard_docs)
    with Store(path) as st:
        if not st.has_corpus(corpus):
            st.add_corpus(corpus, _corpus(n))
        return encode_corpus(st, corpus, model=str(tiny_bert_dir), sae=sae, config=cfg)


def _everything(st, corpus="c"):
    """What analyses read: the activations relation by name, the export rows, exemplars, summary."""
    info = st.corpus(corpus)
    raw = st.query(
        "SELECT doc_idx, feature, value, active_tokens, span_start, span_end FROM activations "
        "WHERE corpus_id = ? ORDER BY doc_idx, feature", [info.corpus_id])
    ex = st.query("SELECT feature, rank, doc_idx, value FROM exemplars WHERE corpus_id = ? ORDER BY feature, rank",
                  [info.corpus_id])
    summary = st.feature_summary(corpus, top=10).drop("top_exemplar")
    sel = select(st, corpus, where="src = 'a'")
    mat = embedding_matrix(st, sel)
    return raw, ex, summary, mat


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_bert_dir):
    """The same corpus encoded into the store's table and into shards (3 shards of 16/16/8 docs)."""
    base = tmp_path_factory.mktemp("shards")
    _encode(base / "table.duckdb", tiny_bert_dir, shards="off")
    r = _encode(base / "sharded.duckdb", tiny_bert_dir, shards="on")
    assert r.docs_encoded == 40
    return base


@pytest.fixture
def pair(built, tmp_path):
    """A fresh copy of both stores for each test (shard paths are relative, so copies work)."""
    for item in built.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp_path / item.name)
    return tmp_path / "table.duckdb", tmp_path / "sharded.duckdb"


def test_sharded_rows_read_exactly_like_stored_rows(pair):
    table_path, shard_path = pair
    with Store(table_path, read_only=True) as a, Store(shard_path, read_only=True) as b:
        assert b.shards()["n_docs"].to_list() == [16, 16, 8]
        assert a.shards().is_empty() or a.shards().height == 0
        # nothing went into the sharded store's own table; the view shows the shard rows
        assert b.query(f"SELECT count(*) AS n FROM {b.activations_table}")["n"][0] == 0
        ra, ea, sa, ma = _everything(a)
        rb, eb, sb, mb = _everything(b)
        assert ra.height > 100
        assert ra.equals(rb) and ea.equals(eb) and sa.equals(sb)
        assert (ma != mb).nnz == 0 and ma.shape == mb.shape
        assert a.activations("c").equals(b.activations("c"))
        assert b.info()["activation_rows"] == ra.height and b.info()["activation_shards"] == 3


def test_export_and_writable_reopen_see_shards(pair, tmp_path):
    _, shard_path = pair
    with Store(shard_path) as st:
        n = st.export("c", tmp_path / "out.parquet")
        assert n == pl.read_parquet(tmp_path / "out.parquet").height == st.activations("c").height


def test_missing_shard_names_file_and_leaves_other_corpora_usable(pair, tiny_bert_dir):
    _, path = pair
    _encode(path, tiny_bert_dir, shards="off", corpus="other")
    with Store(path) as st:
        victim = st.shard_root / st.shards("c")["path"][1]
        before_other = st.activations("other")
    victim.unlink()
    with Store(path, read_only=True) as st:
        with pytest.raises(StoreError, match=str(victim.name)) as e:
            st.activations("c")
        assert "missing" in str(e.value)
        with pytest.raises(StoreError, match="missing"):
            select(st, "c")
        assert st.activations("other").equals(before_other)  # other corpora stay usable
        assert st.feature_summary("other", top=3).height == 3
        listing = st.shards("c")
        assert listing["ok"].to_list() == [False] * 3 and victim.name in listing["error"][1]
    # and re-encoding with --replace repairs it
    cfg = EncodeConfig(chunk_docs=8, batch_size=4, device="cpu", shards="on", shard_docs=16, replace=True)
    with Store(path) as st:
        with pytest.raises(StoreError, match="missing"):  # a plain resume would leave a silent gap
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE,
                          config=EncodeConfig(chunk_docs=8, batch_size=4, device="cpu"))
        encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, config=cfg)
        assert st.shards("c")["ok"].all() and st.activations("c").height > 100


def test_shard_from_another_sae_is_refused_by_name(tmp_path, tiny_bert_dir):
    other = make_sae(32, 64, architecture="topk", k=6, hook="layers.1", seed=5)
    _encode(tmp_path / "a.duckdb", tiny_bert_dir, shards="on", n=16)
    _encode(tmp_path / "b.duckdb", tiny_bert_dir, shards="on", n=16, sae=other)
    with Store(tmp_path / "a.duckdb") as a, Store(tmp_path / "b.duckdb") as b:
        mine = a.shard_root / a.shards()["path"][0]
        theirs = b.shard_root / b.shards()["path"][0]
    shutil.copy(theirs, mine)
    with Store(tmp_path / "a.duckdb", read_only=True) as st:
        with pytest.raises(StoreError, match="holds activations of SAE") as e:
            st.activations("c")
        assert str(mine) in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_ours"])
def test_damaged_shard_is_named(pair, damage):
    _, path = pair
    with Store(path) as st:
        victim = st.shard_root / st.shards()["path"][0]
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        victim.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:
        pl.DataFrame({"doc_idx": [1]}).write_parquet(victim)
    with Store(path, read_only=True) as st:
        with pytest.raises(StoreError, match=victim.name):
            st.activations("c")


@pytest.mark.parametrize("into", ["shard", "table"])
def test_compact_keeps_every_row(pair, into):
    table_path, path = pair
    with Store(table_path, read_only=True) as a:
        expected = _everything(a)
    orphan = None
    with Store(path) as st:
        orphan = st.shard_root / st.shards()["path"][0]
        orphan = orphan.with_name("deadbeef.parquet")
        orphan.write_bytes(b"left by a crashed run")
        old = [st.shard_root / p for p in st.shards()["path"]]
        report = st.compact(into=into)
        assert report.row(0, named=True)["shards_before"] == 3
        assert len(st.shards()) == (1 if into == "shard" else 0)
        assert not any(p.exists() for p in old) and not orphan.exists()
        got = _everything(st)
    with Store(path, read_only=True) as st:  # and after reopening
        again = _everything(st)
    for e, g, r in zip(expected[:3], got[:3], again[:3]):
        assert e.equals(g) and e.equals(r)


def test_drop_and_replace_remove_shard_files(pair, tiny_bert_dir):
    _, path = pair
    with Store(path) as st:
        files = [st.shard_root / p for p in st.shards()["path"]]
        assert all(f.exists() for f in files)
        st.drop_corpus("c")
        assert not any(f.exists() for f in files) and len(st.shards()) == 0
        assert st.info()["activation_rows"] == 0


def test_failed_transaction_keeps_shards(pair):
    _, path = pair
    with Store(path) as st:
        files = [st.shard_root / p for p in st.shards()["path"]]
        with pytest.raises(RuntimeError):
            with st.transaction():
                st._drop_corpus(st.corpus("c"))
                raise RuntimeError("boom")
        assert all(f.exists() for f in files) and st.shards()["ok"].all()
        assert st.activations("c").height > 100


def test_store_path_with_quotes(tmp_path, tiny_bert_dir):
    folder = tmp_path / "it's; DROP TABLE x; --"
    folder.mkdir()
    _encode(folder / "o'k.duckdb", tiny_bert_dir, shards="on", n=16)
    with Store(folder / "o'k.duckdb", read_only=True) as st:
        assert st.activations("c").height > 30


def test_resume_mixes_table_and_shards(tmp_path, tiny_bert_dir, pair):
    """Interrupted after 16 documents written into the table, resumed into shards: one encoding."""
    table_path, _ = pair
    path = tmp_path / "mixed.duckdb"

    def stop(done, tokens, total):
        if done >= 16:
            raise KeyboardInterrupt

    with Store(path) as st:
        st.add_corpus("c", _corpus(40))
        with pytest.raises(KeyboardInterrupt):
            encode_corpus(st, "c", model=str(tiny_bert_dir), sae=SAE, progress=stop,
                          config=EncodeConfig(chunk_docs=8, batch_size=4, device="cpu", shards="off"))
        assert st.query(f"SELECT count(DISTINCT doc_idx) AS n FROM {st.activations_table}")["n"][0] == 16
    r = _encode(path, tiny_bert_dir, shards="on")
    assert r.docs_already == 16 and r.docs_encoded == 24
    with Store(table_path, read_only=True) as a, Store(path, read_only=True) as b:
        for x, y in zip(_everything(a)[:3], _everything(b)[:3]):
            assert x.equals(y)


def _point_shard_at(path, target: str):
    """Tamper with the store as an attacker would: make its first shard row name another file."""
    import duckdb

    con = duckdb.connect(str(path))
    con.execute("UPDATE activation_shards SET path = ? WHERE shard_id = (SELECT min(shard_id) FROM activation_shards)",
                [target])
    con.close()


@pytest.mark.parametrize("where", ["relative", "absolute", "symlink"])
def test_crafted_shard_path_is_never_read_or_deleted(pair, tmp_path, where):
    """A store whose shard row points outside <store>.shards/ names the row, and neither reading nor
    `--replace` (drop) touches the file it points at."""
    _, path = pair
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    if where == "relative":
        target = "../victim.txt"
    elif where == "absolute":
        target = str(victim)
    else:
        link = Store(path, read_only=True)
        target_dir = link.shard_root
        link.close()
        (target_dir / "link.parquet").symlink_to(victim)
        target = "link.parquet"
    _point_shard_at(path, target)
    with Store(path) as st:
        with pytest.raises(StoreError, match="outside its shard folder"):
            st.activations("c")
        assert st.shards()["ok"].to_list().count(False) >= 1
        st.drop_corpus("c")  # what `ingest --replace` does
    assert victim.read_text() == "precious"


def test_zeroed_block_inside_shard_is_a_clear_error(pair):
    """4 KB of zeros in the middle of a shard (its footer intact) is a StoreError naming the shard, from
    reads and from compact; nothing is changed."""
    _, path = pair
    with Store(path) as st:
        victim = st.shard_root / st.shards()["path"][0]
    import pyarrow.parquet as pq

    col = pq.ParquetFile(victim).metadata.row_group(0).column(2)  # `value`: compressed page data
    start = col.data_page_offset + col.total_compressed_size // 2
    data = bytearray(victim.read_bytes())
    data[start: start + 4096] = bytes(len(data[start: start + 4096]))
    assert len(data) == victim.stat().st_size
    victim.write_bytes(bytes(data))
    with Store(path) as st:
        before = st.shards()
        assert before["ok"].all()  # the footer is intact: only reading the pages finds the damage
        with pytest.raises(StoreError, match="damaged|cannot read"):
            st.activations("c")
        with pytest.raises(StoreError, match="damaged|cannot read"):
            st.feature_summary("c")
        with pytest.raises(StoreError, match="damaged|cannot read"):
            st.compact("c")
        assert st.shards()["path"].to_list() == before["path"].to_list()

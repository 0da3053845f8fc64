"""Token shards in the store: migration of a version-2 store, drop with --replace, sweep keeps them."""

import duckdb
import polars as pl
import pytest

from saeembed.documents import Documents
from saeembed.errors import SchemaVersionError
from saeembed.store import Store
from saeembed.store import schema as schema_mod
from tests.conftest import make_sae


def _docs():
    return Documents(pl.DataFrame({"doc_id": ["a", "b"], "text": ["one two", "three"]}), "text", "id", [], "mem", 0)


def _encode_by_hand(st):
    info = st.corpus("c")
    s = st.register_sae(make_sae(8, 16))
    st.begin_encoding(info, s, "m", "layers.1", {})
    st.begin_token_rows(info, s, True, 0)
    tokens = pl.DataFrame({"doc_idx": [0, 0, 1], "token_index": [0, 1, 0], "start": [0, 4, 0], "end": [3, 7, 5],
                           "feature": [3, 3, 5], "value": [1.0, 2.0, 0.5]})
    path, n = st.write_token_shard(info, s, tokens)
    acts = pl.DataFrame({"doc_idx": [0, 1], "feature": [3, 5], "value": [2.0, 0.5], "active_tokens": [2, 1],
                         "span_start": [4, 0], "span_end": [7, 5]})
    docs = pl.DataFrame({"doc_idx": [0, 1], "n_tokens": [2, 1], "n_windows": [1, 1]})
    st.write_encoded_tokens(info, s, acts, docs, [(path, n, 2, 0, 1)])
    return info, s, path


def test_version_2_store_is_migrated_to_3(tmp_path):
    path = tmp_path / "v2.duckdb"
    with Store(path) as st:
        st.add_corpus("c", _docs())
        info = st.corpus("c")
        s = st.register_sae(make_sae(8, 16))
        st.begin_encoding(info, s, "m", "layers.1", {})
    con = duckdb.connect(str(path))  # make it look exactly like a version-2 store
    con.execute("ALTER TABLE encodings DROP COLUMN keep_tokens")
    con.execute("DROP TABLE token_shards")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaVersionError, match="needs a migration"):
        Store(path, read_only=True)
    with Store(path) as st:
        assert st.schema_version == schema_mod.SCHEMA_VERSION == 3
        info = st.corpus("c")
        s = st.encoded_sae(info)
        assert not st.has_token_rows(info, s)  # older encodings kept no token rows
        assert "token_shards" in st._tables()


def test_token_shards_survive_sweep_and_go_with_replace(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        st.add_corpus("c", _docs())
        info, s, path = _encode_by_hand(st)
        stray = path.with_name("t-stray.parquet")
        stray.write_bytes(b"x")
        assert st.sweep_orphan_shards() == 1 and path.exists() and not stray.exists()
        assert st.token_rows(info, s)["value"].to_list() == [1.0, 2.0, 0.5]
        st.drop_encoding(info, s)
        assert not path.exists()


def test_damaged_token_shard_is_named(tmp_path):
    from saeembed.errors import StoreError

    with Store(tmp_path / "s.duckdb") as st:
        st.add_corpus("c", _docs())
        _, _, path = _encode_by_hand(st)
    path.write_bytes(b"garbage")
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        info = st.corpus("c")
        with pytest.raises(StoreError, match=str(path.name)):
            st.token_rows(info, st.encoded_sae(info))

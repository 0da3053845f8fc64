import datetime as dt

import duckdb
import polars as pl
import pytest

from saeembed.errors import InputError, SchemaVersionError, StoreError, UnknownCorpusError
from saeembed.documents import Documents
from saeembed.store import Store
from saeembed.store import schema as schema_mod


def docs(ids, texts, **meta):
    frame = pl.DataFrame({"doc_id": ids, "text": texts, **meta})
    return Documents(frame, "text", "id", [c for c in frame.columns if c not in ("doc_id", "text")], "mem", 0)


def test_new_store_has_schema_version(tmp_path):
    with Store(tmp_path / "s.duckdb") as st:
        assert st.schema_version == schema_mod.SCHEMA_VERSION
        assert st.info()["corpora"] == 0


def _store_at_version(path, version: int):
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    con.close()
    return path


def test_newer_store_is_refused_and_left_untouched(tmp_path):
    path = _store_at_version(tmp_path / "s.duckdb", 99)
    before = path.read_bytes()
    with pytest.raises(SchemaVersionError, match="schema version 99, newer"):
        Store(path)
    assert path.read_bytes() == before


def test_older_store_without_migration_is_refused(tmp_path):
    path = _store_at_version(tmp_path / "s.duckdb", 0)
    with pytest.raises(SchemaVersionError, match="cannot migrate it.*no migration from version 0"):
        Store(path)


def test_older_store_is_migrated_keeping_data(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        st.add_corpus("c", docs(["a", "b"], ["one", "two"]))
    import saeembed.store.base as store_mod

    v = schema_mod.SCHEMA_VERSION
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", v + 1)
    monkeypatch.setattr(store_mod, "MIGRATIONS", {v: ["ALTER TABLE corpora ADD COLUMN note VARCHAR"]})
    with Store(path) as st:
        assert st.schema_version == v + 1
        assert st.corpus("c").n_docs == 2
        assert "note" in st.query("SELECT * FROM corpora").columns
    with pytest.raises(SchemaVersionError):  # read-only cannot migrate: says so
        monkeypatch.setattr(store_mod, "SCHEMA_VERSION", v + 2)
        monkeypatch.setattr(store_mod, "MIGRATIONS", {v + 1: ["SELECT 1"]})
        Store(path, read_only=True)


V2_TABLES = ("dense_embeddings", "feature_embeddings", "feature_stats", "sae_probes", "clusterings", "cluster_assignments",
             "classifiers", "doc_scores")


def test_version_1_store_is_migrated_to_2(tmp_path):
    path = tmp_path / "v1.duckdb"
    with Store(path) as st:
        st.add_corpus("c", docs(["a"], ["one"]))
    con = duckdb.connect(str(path))  # make it look exactly like a version-1 store
    for t in V2_TABLES:
        con.execute(f"DROP TABLE {t}")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaVersionError, match="needs a migration"):
        Store(path, read_only=True)
    with Store(path) as st:
        assert st.schema_version >= 2
        assert set(V2_TABLES) <= st._tables()
        assert st.corpus("c").n_docs == 1


def test_not_a_store(tmp_path):
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE users (id INT)")
    con.close()
    with pytest.raises(StoreError, match="not a saeembed store"):
        Store(other)
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="garbage.duckdb"):
        Store(garbage)
    with pytest.raises(StoreError, match="no store at"):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_corpus_modes_and_metadata_types(store):
    d = docs(["a", "b"], ["first text", "second text"], n=[1, 2], when=[dt.date(2024, 1, 2), dt.date(2025, 3, 4)])
    info = store.add_corpus("c", d)
    assert (info.n_docs, sorted(info.metadata_columns)) == (2, ["n", "when"])
    frame = store.documents("c")
    assert frame["doc_id"].to_list() == ["a", "b"] and frame["doc_idx"].to_list() == [0, 1]
    assert frame["when"].dtype == pl.Date and frame["n"].to_list() == [1, 2]
    with pytest.raises(StoreError, match="already exists.*--append.*--replace"):
        store.add_corpus("c", d)
    # append: known ids with the same text are skipped, new ones get the next doc_idx
    info = store.add_corpus("c", docs(["b", "c"], ["second text", "third"], n=[2, 3],
                                      when=[dt.date(2025, 3, 4), None]), mode="append")
    assert info.n_docs == 3
    assert store.documents("c")["doc_idx"].to_list() == [0, 1, 2]
    # append with a clashing id changes nothing at all
    with pytest.raises(InputError, match="'a'"):
        store.add_corpus("c", docs(["a", "z"], ["different", "new"], n=[9, 9], when=[None, None]), mode="append")
    assert store.corpus("c").n_docs == 3 and store.documents("c")["doc_id"].to_list() == ["a", "b", "c"]
    info = store.add_corpus("c", docs(["x"], ["only"], n=[5], when=[None]), mode="replace")
    assert info.n_docs == 1 and store.documents("c")["doc_id"].to_list() == ["x"]


def test_hostile_names_are_data(store):
    name = "x'; DROP TABLE documents; --"
    col = 'evil"); DROP TABLE corpora; --'
    store.add_corpus(name, docs(["1"], ["hello"], **{col: ["v"]}))
    assert store.corpus(name).n_docs == 1
    assert store.documents(name)[col].to_list() == ["v"]
    assert {"documents", "corpora"} <= set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])


def test_unknown_corpus_lists_known(store):
    store.add_corpus("alpha", docs(["1"], ["hello"]))
    with pytest.raises(UnknownCorpusError, match="unknown corpus 'beta'.*alpha"):
        store.corpus("beta")


def test_snippet_marks_the_span():
    from saeembed.textwindow import snippet

    text = "The refund for order 1234 never arrived."
    assert snippet(text, 21, 25, width=8) == "…r order «1234» never a…"
    assert snippet(text, None, None) == text


def test_internal_column_names_are_refused(store):
    with pytest.raises(InputError, match="'n_chars' is a name saeembed uses internally"):
        store.add_corpus("c", docs(["1"], ["xyz"], n_chars=[99]))
    assert not store.has_corpus("c")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "has no documents"),
        (b'{"text": "ok"}\n{"text": "bad\n', "line 2"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2"),
        (b'{"body": "no text column"}\n', "body"),
        (b'{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "repeated id"),
    ],
)
def test_bad_files_leave_the_store_untouched(store, tmp_path, content, message):
    import saeembed

    store.add_corpus("existing", docs(["a"], ["kept"]))
    before = store.info() | {"size_bytes": None}
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    id_column = "id" if b'"id"' in content else None
    with pytest.raises(InputError, match=message):
        saeembed.ingest(store, bad, corpus="existing", mode="append", id_column=id_column)
    with pytest.raises(InputError, match=message):
        saeembed.ingest(store, bad, corpus="new", id_column=id_column)
    assert store.info() | {"size_bytes": None} == before
    assert store.documents("existing")["text"].to_list() == ["kept"] and not store.has_corpus("new")


def test_top_level_api_is_lazy_and_complete():
    import subprocess
    import sys

    code = "import sys, saeembed; assert 'torch' not in sys.modules; saeembed.Store; saeembed.encode_corpus; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
    import saeembed

    for name in saeembed.__all__:
        assert getattr(saeembed, name) is not None


def test_labels_and_documents_filters(store):
    store.add_corpus("c", docs(["a", "b", "c"], ["one", "two", "three"]))
    assert store.documents("c", doc_idx=[0, 2])["doc_id"].to_list() == ["a", "c"]
    assert store.documents("c")["doc_id"].to_list() == ["a", "b", "c"]
    store.con.execute("INSERT INTO feature_labels (sae_key, feature, label, source) VALUES (1, 5, 'dates', 'test'), "
                      "(1, 9, 'money', 'test')")
    assert sorted(store.labels(1)["label"].to_list()) == ["dates", "money"]  # None = every feature
    assert store.labels(1, [9])["label"].to_list() == ["money"]

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


@pytest.mark.parametrize("table", ["feature_labels", "documents", "clusterings"])
def test_store_missing_a_table_is_named_on_open(tmp_path, table):
    """A store whose table was dropped by hand is refused at open with the table named, not a traceback
    from the first command that needs it; nothing is changed."""
    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        st.add_corpus("c", docs(["a"], ["one"]))
    con = duckdb.connect(str(path))
    con.execute(f"DROP TABLE {table}")
    con.close()
    before = path.read_bytes()
    for read_only in (True, False):
        with pytest.raises(StoreError, match=f"lacks the table.*{table}"):
            Store(path, read_only=read_only)
    assert path.read_bytes() == before


def test_corrupt_block_in_store_file_is_a_clear_error(tmp_path):
    """Garbage written over one block of a store file, at offsets across the file: opening and reading
    it either works (a free block) or is one StoreError, never another exception."""
    import shutil

    base = tmp_path / "base.duckdb"
    with Store(base) as st:
        st.add_corpus("c", docs([str(i) for i in range(3000)], [f"document number {i} " * 20 for i in range(3000)]))
    size = base.stat().st_size
    refused = 0
    for k in range(1, 10):
        path = tmp_path / f"s{k}.duckdb"
        shutil.copy(base, path)
        data = bytearray(path.read_bytes())
        start = (size * k // 10) // 4096 * 4096 + 100
        data[start: start + 4096] = bytes(range(256)) * 16
        path.write_bytes(bytes(data))
        try:
            with Store(path, read_only=True) as st:
                st.documents("c"), st.info(), st.corpora()
        except StoreError as e:
            assert "damaged" in str(e) or "cannot" in str(e) or "Corrupt" in str(e)
            refused += 1
    assert refused >= 2


# ------------------------------------------------------------------ issue 19: append types, reserved names


def _meta_types(store, name="c"):
    info = store.corpus(name)
    return info.metadata_columns, store.query(f"SELECT * FROM {info.meta_table} LIMIT 0").schema


def test_append_widens_an_int_column_instead_of_rounding(store):
    store.add_corpus("c", docs(["a"], ["x"], n=[1]))
    store.add_corpus("c", docs(["b", "c", "d"], ["y", "z", "w"], n=[0.5, 1.5, 2.5]), mode="append")
    frame = store.documents("c")
    assert frame["n"].to_list() == [1.0, 0.5, 1.5, 2.5]  # was 1, 0, 2, 2
    declared, actual = _meta_types(store)
    assert declared["n"] == "Float64" and actual["n"] == pl.Float64
    # values that fit the stored type exactly go in as that type; text that parses exactly too
    store.add_corpus("c", docs(["e"], ["v"], n=[7]), mode="append")
    assert store.documents("c")["n"].to_list()[-1] == 7.0
    store.add_corpus("c", docs(["f"], ["u"], n=["8"], extra=[None]), mode="append")
    assert store.documents("c")["n"].to_list()[-1] == 8.0
    assert _meta_types(store)[0]["extra"] == "String"  # a new all-null column gets a real type, not "?"


def test_append_refuses_values_that_would_change_and_stores_nothing(store):
    store.add_corpus("c", docs(["a"], ["x"], n=[1], m=[2], flag=[True], big=[2**53 + 1]))
    before = (store.documents("c"), _meta_types(store), store.corpus("c").n_docs)
    attacks = [
        # n would be widened to Float64, but m's text does not fit: the widening must roll back too
        ({"n": [0.5], "m": ["abc"], "flag": [True], "big": [1]}, "'m'.*Int64.*String.*'abc'"),
        ({"n": [1], "m": [2], "flag": [1], "big": [1]}, "'flag'.*Boolean.*Int64"),
        ({"n": [1], "m": ["+3"], "flag": [True], "big": [1]}, "'m'.*'\\+3'"),
        # Int64 -> Float64 would round 2**53 + 1: refused, not widened
        ({"n": [1], "m": [2], "flag": [True], "big": [0.5]}, "'big'.*Int64.*Float64.*0.5"),
        ({"n": [1], "m": [2], "flag": [True], "big": [dt.date(2024, 1, 1)]}, "'big'.*Date"),
    ]
    for meta, message in attacks:
        with pytest.raises(InputError, match=message):
            store.add_corpus("c", docs(["new"], ["new text"], **meta), mode="append")
        after = (store.documents("c"), _meta_types(store), store.corpus("c").n_docs)
        assert after[0].equals(before[0]) and after[1:] == before[1:]


def test_append_into_a_text_column_keeps_text(store):
    store.add_corpus("c", docs(["a"], ["x"], zip=["007"]))
    store.add_corpus("c", docs(["b"], ["y"], zip=[12345]), mode="append")
    assert store.documents("c")["zip"].to_list() == ["007", "12345"]


@pytest.mark.parametrize("column", ["n_tokens", "doc_idx", "corpus_id", "f12", "cluster.topic"])
def test_reserved_metadata_names_are_refused_by_the_store(store, column):
    with pytest.raises(InputError, match=f"'{column}'.*--rename.*--drop-column"):
        store.add_corpus("c", docs(["1"], ["xyz"], **{column: [1]}))
    assert not store.has_corpus("c")


def test_ingest_csv_append_rename_and_sep(store, tmp_path):
    import saeembed

    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("id;text;score;n_tokens\n1.10;1.50;1;5\n2.00;1e3;2;6\n")
    with pytest.raises(InputError, match="'n_tokens'.*--rename"):
        saeembed.ingest(store, first, corpus="c", id_column="id")
    out = saeembed.ingest(store, first, corpus="c", id_column="id", separator=";", rename={"n_tokens": "tokens"})
    assert out["metadata_columns"] == ["score", "tokens"]
    second.write_text("id,text,score,n_tokens\n3.0,x,0.5,1\n")
    saeembed.ingest(store, second, corpus="c", id_column="id", mode="append", drop_columns=["n_tokens"])
    frame = store.documents("c")
    assert frame["doc_id"].to_list() == ["1.10", "2.00", "3.0"] and frame["text"].to_list() == ["1.50", "1e3", "x"]
    assert frame["score"].to_list() == [1.0, 2.0, 0.5] and frame["tokens"].to_list() == [5, 6, None]

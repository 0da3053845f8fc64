"""A read-only command on a store from an older saeembed migrates it once (DESIGN decision 2: opening an
older store migrates it or says exactly why not), through the real CLI entry point."""

import json
import subprocess
import sys

import duckdb

from saeembed.store import Store
from saeembed.store import schema as schema_mod
from tests.conftest import make_sae
from tests.test_cli import run


def _version_2_store(path):
    import polars as pl

    from saeembed.documents import Documents

    with Store(path) as st:
        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": ["a", "b"], "text": ["one", "two"]}), "text", "id", [],
                                     "mem", 0))
        st.begin_encoding(st.corpus("c"), st.register_sae(make_sae(8, 16)), "m", "layers.1", {})
    con = duckdb.connect(str(path))  # exactly what version 2 looked like (see test_tokens_store)
    con.execute("ALTER TABLE encodings DROP COLUMN keep_tokens")
    con.execute("DROP TABLE token_shards")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()


def _version(path) -> str:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    finally:
        con.close()


def test_a_read_command_migrates_an_older_store_once(tmp_path, capsys, monkeypatch):
    path = tmp_path / "old.duckdb"
    _version_2_store(path)
    code, out, err = run(capsys, monkeypatch, "info", "--store", path, "--json")
    assert code == 0, err
    assert f"migrated to schema version {schema_mod.SCHEMA_VERSION}" in err
    data = json.loads(out)
    assert data["corpora"] == 1 and data["documents"] == 2
    assert _version(path) == str(schema_mod.SCHEMA_VERSION)
    code, out, err = run(capsys, monkeypatch, "info", "--store", path, "--json")  # only the first time
    assert code == 0 and "migrated" not in err


def test_a_store_that_cannot_be_opened_for_writing_says_why_and_is_left_as_it_was(tmp_path, capsys, monkeypatch):
    path = tmp_path / "old.duckdb"
    _version_2_store(path)
    # another process reads it: readers may share it, a writer may not
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], "
                               "read_only=True); print('open', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        code, out, err = run(capsys, monkeypatch, "info", "--store", path)
    finally:
        holder.kill()
        holder.wait()
    assert code != 0
    text = " ".join(err.split())
    assert "schema version 2 and needs a migration to" in text and "could not be opened for writing" in text
    assert "Traceback" not in err
    assert _version(path) == "2"


def test_commands_that_open_the_store_themselves_migrate_it_first(tmp_path):
    from saeembed.cli.options import migrated

    path = tmp_path / "old.duckdb"
    _version_2_store(path)
    assert migrated(str(path)) == str(path)  # what report, browse and serve pass on
    assert _version(path) == str(schema_mod.SCHEMA_VERSION)
    with Store(path, read_only=True) as st:  # so their own read-only opens work
        assert st.corpus("c").n_docs == 2

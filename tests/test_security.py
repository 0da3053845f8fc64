"""Hostile strings are data. Corpus names, column names, metadata values, filter expressions and CLI
arguments full of SQL (quotes, `;`, `--`, ATTACH, COPY … TO, read_csv('/etc/passwd'), Unicode tricks)
must come back unchanged, run no other statement, and touch no file outside the store.

Proof, three ways: DuckDB's own query log shows every statement the store ran, and no hostile text
appears in any of them except inside a correctly quoted identifier; the store's tables and attached
databases are unchanged; a canary folder and /tmp stay free of the files the payloads try to write.
And as a backstop, the store's connection cannot read or write files outside the store at all.
"""

import json
import os
import re
from pathlib import Path

import polars as pl
import pytest
import torch

from saeembed.analysis.selection import embedding_matrix, select
from saeembed.documents import Documents, ingest
from saeembed.errors import FilterError, InputError, SAEError, SaeembedError
from saeembed.store.filters import parse_filter
from saeembed.store import Store, quote_ident
from tests.synthetic import register_sae, write_corpus

CANARY = "/tmp/saeembed-EVIL-canary"
HOSTILE = [
    "x'; DROP TABLE documents; --",
    'x"; DROP TABLE documents; --',
    "EVIL') ; ATTACH '" + CANARY + ".db' AS evil; --",
    "EVIL'; COPY (SELECT * FROM documents) TO '" + CANARY + ".csv'; --",
    "EVIL' || (SELECT string_agg(text, ',') FROM read_csv('/etc/passwd')) || '",
    "read_csv('/etc/passwd')",
    "EVIL\"; INSTALL httpfs; LOAD httpfs; --",
    "EVIL /* comment */ OR 1=1 --",
    "EVIL' OR '1'='1",
    "EVIL\\'; SELECT 1; --",
    "EVIL $1 ? ?1 :name",
    "EVIL\u202e; DROP TABLE corpora",  # right-to-left override
    "ＥＶＩＬ＇；ＤＲＯＰ",  # full-width quote and semicolon (NFKC-normalise to ' and ;)
    "EVIL\u200b'\u200b; --",  # zero-width spaces around a quote
    "EVIL e\u0301\u0301 ǅ ﬁ",  # combining marks, titlecase digraph, ligature
    "EVIL 🙂\U0010ffff",
]


def _canaries():
    return [p for p in Path("/tmp").glob("saeembed-EVIL-canary*")]


@pytest.fixture(autouse=True)
def no_canaries():
    for p in _canaries():
        p.unlink()
    yield
    assert _canaries() == [], "a hostile string wrote a file"


def _log_on(store):
    store.con.execute("CALL enable_logging('QueryLog')").fetchall()


def _statements(store) -> list[str]:
    return [r[0] for r in store.con.execute("SELECT message FROM duckdb_logs WHERE type = 'QueryLog'").fetchall()]


def _assert_only_quoted(statements, payloads):
    """No payload appears in any executed SQL except as a correctly quoted identifier."""
    for sql in statements:
        stripped = sql
        for p in payloads:
            stripped = stripped.replace(quote_ident(p), "<ident>")
        for p in payloads:
            assert p not in stripped, f"hostile text reached SQL: {sql[:200]}"
        assert "EVIL" not in stripped.upper().replace("ＥＶＩＬ", "EVIL") or "<ident>" in stripped, sql[:200]


def _state(store):
    tables = sorted(store._tables())
    dbs = sorted(r[0] for r in store.con.execute("SELECT database_name FROM duckdb_databases()").fetchall())
    return tables, dbs


def test_hostile_corpus_names_round_trip(store):
    before = _state(store)
    _log_on(store)
    sae = register_sae(store, 8)
    stored = []
    for i, name in enumerate(HOSTILE):
        info = write_corpus(store, sae, name, [[1], [2, i % 8]])
        stored.append(name)
        assert info.name == name.strip()
        assert store.corpus(name).n_docs == 2
        assert store.activations(name).height == 3
        assert store.feature_summary(name, top=2).height == 2
    assert sorted(store.corpora()["corpus"].to_list()) == sorted(n.strip() for n in HOSTILE)
    for name in HOSTILE[::2]:
        store.drop_corpus(name)
    assert store.corpora().height == len(HOSTILE) - len(HOSTILE[::2])
    _assert_only_quoted(_statements(store), HOSTILE)
    assert _state(store)[1] == before[1]  # nothing attached
    assert set(before[0]) <= set(_state(store)[0])


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "a\nb", "x" * 201])
def test_unprintable_corpus_names_are_refused_clearly(store, bad):
    sae = register_sae(store, 8)
    with pytest.raises(InputError, match="corpus name"):
        write_corpus(store, sae, bad, [[1]])
    assert store.corpora().height == 0


def _hostile_file(tmp_path) -> Path:
    rows = []
    for i, value in enumerate(HOSTILE):
        row = {"text": f"document {i}: {value}", "source": value, "n": i}
        for j, col in enumerate(HOSTILE[:6]):
            row[col] = f"{value}-{j}"
        rows.append(row)
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_hostile_column_names_and_values_are_data(store, tmp_path):
    path = _hostile_file(tmp_path)
    before = _state(store)
    _log_on(store)
    result = ingest(store, path, corpus=HOSTILE[0])
    assert result["metadata_columns"] == ["source", "n", *HOSTILE[:6]]
    docs = store.documents(HOSTILE[0])
    assert docs.columns == ["doc_idx", "doc_id", "text", "source", "n", *HOSTILE[:6]]
    assert docs["source"].to_list() == HOSTILE
    for j, col in enumerate(HOSTILE[:6]):
        assert docs[col].to_list() == [f"{v}-{j}" for v in HOSTILE]
    # append a file with one more hostile column (ALTER TABLE path)
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"text": "one more", HOSTILE[7]: HOSTILE[8]}) + "\n")
    ingest(store, extra, corpus=HOSTILE[0], mode="append")
    assert store.documents(HOSTILE[0])[HOSTILE[7]].to_list()[-1] == HOSTILE[8]
    _assert_only_quoted(_statements(store), HOSTILE)
    assert _state(store)[1] == before[1]


def _sharded_hostile_store(store, tmp_path):
    sae = register_sae(store, 8)
    meta = {"source": HOSTILE, HOSTILE[1]: [f"v{i}" for i in range(len(HOSTILE))]}
    write_corpus(store, sae, "h", [[i % 8] for i in range(len(HOSTILE))], meta=meta)
    return sae


@pytest.mark.parametrize("payload", HOSTILE)
def test_filters_with_hostile_values_match_exactly(store, tmp_path, payload):
    _sharded_hostile_store(store, tmp_path)
    _log_on(store)
    quoted = "'" + payload.replace("'", "''") + "'"
    sel = select(store, "h", where=f"source = {quoted}")
    assert sel.n_docs == 1 and int(sel.doc_idx[0]) == HOSTILE.index(payload)
    col = '"' + HOSTILE[1].replace('"', '""') + '"'
    sel = select(store, "h", where=f"{col} in ('v3', 'v5') or source like {quoted}")
    assert sorted(sel.doc_idx.tolist()) == sorted({3, 5, HOSTILE.index(payload)})
    assert embedding_matrix(store, sel).shape[0] == sel.n_docs
    # the SQL form binds the value as a parameter
    table = store.doc_table("h")
    flt = parse_filter(f"source = {quoted}", table.columns)
    sql, params = flt.to_sql(quote_ident)
    assert payload not in sql and params == [payload]
    info = store.corpus("h")
    n = store.query(f"SELECT count(*) AS n FROM {info.meta_table} WHERE {sql}", params)["n"][0]
    assert n == 1
    _assert_only_quoted(_statements(store), HOSTILE)


@pytest.mark.parametrize("text", [
    "source = 'a'; DROP TABLE documents",
    "source = 'a' -- comment",
    "source = 'a' /* x */",
    "read_csv('/etc/passwd') = 1",
    "source = (SELECT 1)",
    "source = 'a' UNION SELECT * FROM documents",
    "1 = 1",
    "source = $1",
    "source = ?",
    "source ＝ 'a'",
    "source = 'unterminated",
    "\"unterminated = 1",
    "source = 'a' or",
    "(" * 5000 + "source = 'a'" + ")" * 5000,
    "not " * 5000 + "source = 'a'",
])
def test_malformed_or_injected_filters_are_refused(store, tmp_path, text):
    _sharded_hostile_store(store, tmp_path)
    before = _state(store)
    _log_on(store)
    with pytest.raises(FilterError):
        select(store, "h", where=text)
    assert _state(store) == before
    # nothing but our own reads ran
    assert all(not re.search(r"\b(DROP|ATTACH|COPY|INSTALL|LOAD)\b", s) for s in _statements(store))


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    f"COPY (SELECT 1) TO '{CANARY}.csv'",
    f"ATTACH '{CANARY}.db' AS evil",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "SELECT * FROM read_text('{shards}/../../../../etc/passwd')",
])
def test_store_connection_cannot_touch_other_files(store, sql):
    """The backstop: even SQL we never write is refused by DuckDB itself."""
    import duckdb

    with pytest.raises(duckdb.Error):
        store.con.execute(sql.replace("{shards}", str(store.shard_root))).fetchall()
    assert not os.path.exists(CANARY + ".db")


def test_lock_down_still_lets_the_store_use_its_own_shard_folder(store):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store.shard_root.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), store.shard_root / "x.parquet")
    assert store.con.execute("SELECT sum(a) FROM read_parquet(?)", [str(store.shard_root / "x.parquet")]).fetchall() == [(3,)]


def test_cli_with_hostile_arguments(tmp_path, capsys, monkeypatch):
    from tests.test_cli import run

    path = _hostile_file(tmp_path)
    st = tmp_path / "cli.duckdb"
    for name in HOSTILE[:4]:
        code, out, err = run(capsys, monkeypatch, "ingest", path, "--corpus", name, "--store", st, "--json")
        assert code == 0, err
        assert json.loads(out)["corpus"] == name
    code, out, err = run(capsys, monkeypatch, "corpora", "--store", st, "--json")
    assert sorted(r["corpus"] for r in json.loads(out)) == sorted(HOSTILE[:4])
    code, _, err = run(capsys, monkeypatch, "features", "--corpus", HOSTILE[5], "--store", st)
    assert code == 1 and "unknown corpus" in err and "Traceback" not in err
    code, _, err = run(capsys, monkeypatch, "ingest", path, "--corpus", "z", "--text-column", HOSTILE[7], "--store", st)
    assert code == 1 and "has no column" in err
    code, _, err = run(capsys, monkeypatch, "encode", HOSTILE[2], "--sae", f"{CANARY}.sae", "--store", st)
    assert code == 1 and "Traceback" not in err
    with Store(st, read_only=True) as s:
        assert s.corpora().height == 4 and s.info()["documents"] == 4 * len(HOSTILE)


def test_pickled_sae_is_never_unpickled(tmp_path):
    """A Goodfire-style .pth whose pickle would run code: refused, and the code never runs."""
    from saeembed.sae.formats import load_sae

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {CANARY}.pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"encoder_linear.weight": torch.zeros(4, 2), "x": Exploit()}, path)
    with pytest.raises(SaeembedError):
        load_sae(str(path))
    assert not os.path.exists(f"{CANARY}.pwned")


def test_remote_code_is_off_by_default():
    import inspect

    from saeembed.encode.models import load_model
    from saeembed.encode.pipeline import EncodeConfig

    assert EncodeConfig().trust_remote_code is False
    assert inspect.signature(load_model).parameters["trust_remote_code"].default is False


# --- issue 19: filter language limits, and the kept / dropped pair's recovery marker ------------------


@pytest.mark.parametrize("rule", ["(" * 330 + "n_chars > 1" + ")" * 330, "not " * 495 + "n_chars > 1",
                                  "n_chars in (50, 60.5)", "source in ('curated', 1)"])
def test_cli_filter_attacks_give_one_line_not_a_traceback(tmp_path, capsys, monkeypatch, rule):
    from tests.test_cli import run

    st = tmp_path / "f.duckdb"
    data = Path(__file__).resolve().parents[1] / "sample_data" / "instructions.jsonl"
    code, _, err = run(capsys, monkeypatch, "ingest", data, "--corpus", "inst", "--id-column", "id", "--store", st)
    assert code == 0, err
    out = tmp_path / "kept.jsonl"
    code, _, err = run(capsys, monkeypatch, "filter", "inst", "--drop", rule, "--out", out, "--store", st)
    assert "Traceback" not in err and "RecursionError" not in err and "TypeError" not in err
    if "60.5" in rule:  # ints and floats together are numbers: it runs
        assert code == 0 and out.exists(), err
    else:
        assert code == 1 and not out.exists()
        assert ("64 levels" in err) or ("mixes text ('curated') with numbers (1)" in err), err


def test_crafted_recovery_marker_moves_nothing(tmp_path):
    """A `kept.jsonl.saeembed-pending` planted beside the output may not make the next run rename files
    it names elsewhere (or files that are not outputs)."""
    from saeembed.analysis.filter_output import recover_outputs, write_files

    out, elsewhere = tmp_path / "out", tmp_path / "home"
    out.mkdir(), elsewhere.mkdir()
    victims = [elsewhere / "notes.txt", elsewhere / "data.jsonl"]
    for v in victims:
        v.write_text("precious")
        v.with_name(v.name + ".saeembed-new").write_text("attacker")
    marker = out / "kept.jsonl.saeembed-pending"
    for listed in ([str(victims[1])], [str(victims[0]), str(out / "kept.jsonl")], "nonsense", [str(out / "..")]):
        marker.write_text(json.dumps({"files": listed}))
        with pytest.raises(InputError, match="marker"):
            recover_outputs(out / "kept.jsonl")
        with pytest.raises(InputError, match="marker"):
            write_files({out / "kept.jsonl": pl.DataFrame({"a": [1]}), out / "dropped.jsonl": pl.DataFrame({"a": [2]})})
        assert all(v.read_text() == "precious" for v in victims)
        assert not (out / "kept.jsonl").exists()

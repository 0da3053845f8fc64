"""Fuzzed ingest: random bytes, giant lines, odd encodings, deeply nested JSON, in every format.

Each input ends in exactly one of two ways: a clear InputError (one line, names the file) and an
unchanged store, or a correct ingest (every document stored, texts exactly as read). Never another
exception, never a partial corpus.
"""

import csv
import io
import json

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from saeembed.documents import ingest, read_documents
from saeembed.errors import InputError
from saeembed.store import Store

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SUFFIXES = [".csv", ".tsv", ".jsonl", ".json", ".parquet"]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    st_ = Store(tmp_path_factory.mktemp("fuzz") / "f.duckdb")
    yield st_
    st_.close()


_counter = [0]


def check(store, path, **kw):
    """Ingest `path`; assert it either fails cleanly leaving the store as it was, or stores it all."""
    _counter[0] += 1
    name = f"c{_counter[0]}"
    before = store.info()
    try:
        result = ingest(store, path, corpus=name, **kw)
    except InputError as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip() and "Traceback" not in msg
        after = store.info()
        assert {k: v for k, v in after.items() if k != "size_bytes"} == \
            {k: v for k, v in before.items() if k != "size_bytes"}
        assert not store.has_corpus(name)
        return None
    docs = read_documents(path, **kw)  # reading again gives what was stored, all of it
    stored = store.documents(name)
    assert result["n_docs"] == stored.height == docs.frame.height > 0
    assert stored["text"].to_list() == docs.frame["text"].to_list()
    assert stored["doc_id"].to_list() == docs.frame["doc_id"].to_list()
    assert all(t.strip() for t in stored["text"].to_list())
    return stored


@SETTINGS
@given(data=st.binary(max_size=2000), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(shared_store, tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("b") / f"x{suffix}"
    path.write_bytes(data)
    check(shared_store, path)


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text)
_json = st.recursive(_json_scalar, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(_text, c, max_size=4)),
                     max_leaves=20)


@SETTINGS
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "id", "meta", "x y", "ü", ""]), _json, max_size=5),
                     min_size=1, max_size=20),
       as_array=st.booleans())
def test_random_json_documents(shared_store, tmp_path_factory, rows, as_array):
    folder = tmp_path_factory.mktemp("j")
    if as_array:
        path = folder / "x.json"
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        path = folder / "x.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    stored = check(shared_store, path)
    if stored is not None:  # string texts come back exactly
        texts = [r.get("text") for r in rows]
        kept = [t for t in texts if isinstance(t, str) and t.strip()]
        if all(isinstance(t, str) or t is None for t in texts):
            assert stored["text"].to_list() == kept


@SETTINGS
@given(rows=st.lists(st.lists(_text, min_size=2, max_size=2), min_size=1, max_size=20),
       sep=st.sampled_from([",", "\t"]))
def test_random_csv_cells(shared_store, tmp_path_factory, rows, sep):
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep)
    w.writerow(["text", "meta"])
    w.writerows(rows)
    path = tmp_path_factory.mktemp("c") / ("x.csv" if sep == "," else "x.tsv")
    path.write_text(buf.getvalue(), encoding="utf-8")
    check(shared_store, path)


@pytest.mark.parametrize("depth", [10, 500, 5000, 100_000])
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_deeply_nested_json(store, tmp_path, depth, fmt):
    nested = "[" * depth + "]" * depth
    if fmt == "jsonl":
        path = tmp_path / "x.jsonl"
        path.write_text(json.dumps({"text": "ok"}) + "\n" + '{"text": "deep", "meta": ' + nested + "}\n")
    else:
        path = tmp_path / "x.json"
        path.write_text('[{"text": "ok"}, {"text": "deep", "meta": ' + nested + "}]")
    stored = check(store, path)
    if depth <= 500:
        assert stored is not None and stored.height == 2


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "txt"])
def test_giant_lines(store, tmp_path, fmt):
    big = "word " * 2_000_000  # a 10 MB document on one line
    if fmt == "jsonl":
        path = tmp_path / "x.jsonl"
        path.write_text(json.dumps({"text": big}) + "\n" + json.dumps({"text": "small"}) + "\n")
    elif fmt == "csv":
        path = tmp_path / "x.csv"
        path.write_text('text\n"' + big + '"\nsmall\n')
    else:
        path = tmp_path / "docs"
        path.mkdir()
        (path / "a.txt").write_text(big)
        (path / "b.txt").write_text("small")
    stored = check(store, path)
    assert stored is not None and sorted(stored["text"].str.len_chars().to_list()) == [5, len(big)]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis", "utf-8-sig"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "txt"])
def test_odd_encodings(store, tmp_path, encoding, fmt):
    texts = ["café crème", "naïve façade", "plain"]
    if encoding == "shift_jis":
        texts = ["ｶﾀｶﾅ", "日本語のテキスト", "plain"]
    elif encoding.startswith("utf"):
        texts[2] = "ｶﾀｶﾅ and 日本語 🙂"
    if fmt == "jsonl":
        path = tmp_path / "x.jsonl"
        raw = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    elif fmt == "csv":
        path = tmp_path / "x.csv"
        raw = "text\n" + "".join(t + "\n" for t in texts)
    else:
        path = tmp_path / "docs"
        path.mkdir()
        for i, t in enumerate(texts):
            (path / f"{i}.txt").write_bytes(t.encode(encoding))
        raw = None
    if raw is not None:
        path.write_bytes(raw.encode(encoding))
    stored = check(store, path)
    if encoding == "utf-8-sig":  # a BOM is fine
        assert stored is not None and sorted(stored["text"].to_list()) == sorted(texts)
    if stored is not None:  # anything read must be exactly the texts written, never mojibake
        assert sorted(stored["text"].to_list()) == sorted(texts)
    if stored is None:
        with pytest.raises(InputError, match="UTF-8"):
            read_documents(path)


@SETTINGS
@given(data=st.binary(min_size=1, max_size=400))
def test_corrupted_parquet(shared_store, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("p")
    path = folder / "x.parquet"
    pl.DataFrame({"text": ["a b", "c d", "e f"], "n": [1, 2, 3]}).write_parquet(path)
    good = path.read_bytes()
    cut = len(data) % len(good)
    path.write_bytes(good[:cut] + data + good[cut + len(data):])  # overwrite a stretch of the file
    check(shared_store, path)


def test_null_bytes_and_control_characters(store, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "a\x00b\x1b[31mred\x07", "id": "x\x00"}) + "\n")
    stored = check(store, path, id_column="id")
    assert stored is None or stored["text"].to_list() == ["a\x00b\x1b[31mred\x07"]


# Numbers as people write them: signs, leading zeros, trailing zeros, exponents (issue 19: ids "1.10" and
# texts "1e3" came back as "1.1" and "1000.0").
_number_text = st.from_regex(r"[+-]?[0-9]{1,5}(\.[0-9]{0,4})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
_json_number = st.from_regex(r"-?(0|[1-9][0-9]{0,5})(\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)


@SETTINGS
@given(cells=st.lists(st.tuples(_number_text, _number_text), min_size=1, max_size=20, unique_by=lambda c: c[0]),
       sep=st.sampled_from([",", "\t", ";"]))
def test_number_like_csv_ids_and_texts_kept_as_written(shared_store, tmp_path_factory, cells, sep):
    path = tmp_path_factory.mktemp("n") / ("x.tsv" if sep == "\t" else "x.csv")
    path.write_text(sep.join(["id", "text"]) + "\n" + "".join(f"{i}{sep}{t}\n" for i, t in cells), encoding="utf-8")
    stored = check(shared_store, path, id_column="id")  # ";" is found from the header
    assert stored is not None
    assert stored["doc_id"].to_list() == [i for i, _ in cells] and stored["text"].to_list() == [t for _, t in cells]


@SETTINGS
@given(cells=st.lists(st.tuples(_json_number, _json_number), min_size=1, max_size=20, unique_by=lambda c: c[0]),
       as_array=st.booleans())
def test_json_number_ids_and_texts_kept_as_written(shared_store, tmp_path_factory, cells, as_array):
    assume(all(i != "-0" for i, _ in cells) and all(t != "-0" for _, t in cells))  # a JSON integer -0 reads as 0
    rows = [f'{{"id": {i}, "text": {t}, "meta": {t}}}' for i, t in cells]
    path = tmp_path_factory.mktemp("n") / ("x.json" if as_array else "x.jsonl")
    path.write_text("[" + ",".join(rows) + "]" if as_array else "\n".join(rows) + "\n", encoding="utf-8")
    stored = check(shared_store, path, id_column="id")
    assert stored is not None
    assert stored["doc_id"].to_list() == [i for i, _ in cells] and stored["text"].to_list() == [t for _, t in cells]

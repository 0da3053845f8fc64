import datetime
import hashlib
import json

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saeembed.errors import InputError, SaeembedError
from saeembed.documents import Documents, iter_text_files, read_documents


def gen_id(text: str) -> str:
    return "d" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def error(path, **kw) -> str:
    with pytest.raises(InputError) as info:
        read_documents(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg  # one line for the CLI
    return msg


# ------------------------------------------------------------------------------------------- formats


def test_csv_ids_texts_and_typed_metadata(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,text,n,score,flag,zip,note,word\n7,hello,1,0.5,true,007,x,nan\n8,world,2,1.5,False,010,,inf\n")
    docs = read_documents(p, id_column="id")
    assert isinstance(docs, Documents)
    f = docs.frame
    assert f.columns == ["doc_id", "text", "n", "score", "flag", "zip", "note", "word"]
    assert f["doc_id"].to_list() == ["7", "8"]  # ids stay text, never re-typed
    assert f["text"].to_list() == ["hello", "world"]
    assert f.schema["n"] == pl.Int64 and f["n"].to_list() == [1, 2]
    assert f.schema["score"] == pl.Float64 and f["score"].to_list() == [0.5, 1.5]
    assert f.schema["flag"] == pl.Boolean and f["flag"].to_list() == [True, False]
    assert f.schema["zip"] == pl.String and f["zip"].to_list() == ["007", "010"]  # leading zeros kept
    assert f["note"].to_list() == ["x", None]
    assert f.schema["word"] == pl.String and f["word"].to_list() == ["nan", "inf"]  # words, not floats
    assert docs.metadata_columns == ["n", "score", "flag", "zip", "note", "word"]
    assert (docs.text_column, docs.id_column, docs.source, docs.skipped_empty) == ("text", "id", str(p), 0)


def test_csv_quoted_multiline_fields_and_crlf(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b'text,k\r\n"line one\nline two, with comma",1\r\n"say ""hi""",2\r\n')
    f = read_documents(p).frame
    assert f["text"].to_list() == ["line one\nline two, with comma", 'say "hi"']
    assert f["k"].to_list() == [1, 2]


def test_tsv(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("body\tlang\nhello there\ten\nbonjour\tfr\n")
    docs = read_documents(p, text_column="body")
    assert docs.frame["text"].to_list() == ["hello there", "bonjour"]
    assert docs.frame["lang"].to_list() == ["en", "fr"]
    assert docs.text_column == "body" and docs.metadata_columns == ["lang"]


def test_jsonl_types_and_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(
        '{"id": 1, "text": "a", "n": 1, "x": 1.5, "ok": true, "tag": "u"}\n\n'
        '{"id": 2, "text": "b", "n": null, "x": 2, "ok": false}\n   \n'
    )
    docs = read_documents(p, id_column="id")
    f = docs.frame
    assert f["doc_id"].to_list() == ["1", "2"]
    assert f["text"].to_list() == ["a", "b"]
    assert f.schema["n"] == pl.Int64 and f["n"].to_list() == [1, None]
    assert f.schema["x"] == pl.Float64 and f["x"].to_list() == [1.5, 2.0]
    assert f.schema["ok"] == pl.Boolean and f["ok"].to_list() == [True, False]
    assert f["tag"].to_list() == ["u", None]  # a key missing from a row is null there


def test_ndjson_suffix_and_format_override(tmp_path):
    p = write_jsonl(tmp_path / "a.ndjson", [{"text": "x"}])
    assert read_documents(p).frame["text"].to_list() == ["x"]
    q = write_jsonl(tmp_path / "data.dat", [{"text": "y"}])
    assert read_documents(q, format="jsonl").frame["text"].to_list() == ["y"]
    r = tmp_path / "data.txt"
    r.write_text("text\nz\n")
    assert read_documents(r, format="csv").frame["text"].to_list() == ["z"]


def test_json_array_and_json_named_jsonl(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"text": "one", "k": 1}, {"text": "two", "k": 2}], indent=2))
    docs = read_documents(p)
    assert docs.frame["text"].to_list() == ["one", "two"]
    assert docs.frame["k"].to_list() == [1, 2]
    q = write_jsonl(tmp_path / "b.json", [{"text": "p"}, {"text": "q"}])
    assert read_documents(q).frame["text"].to_list() == ["p", "q"]


def test_parquet_numeric_text_column(tmp_path):
    p = tmp_path / "a.parquet"
    pl.DataFrame({"n": [12, 3]}).write_parquet(p)
    assert read_documents(p, text_column="n").frame["text"].to_list() == ["12", "3"]


def test_parquet_keeps_dtypes(tmp_path):
    p = tmp_path / "a.parquet"
    pl.DataFrame(
        {
            "text": ["alpha", "beta"],
            "uid": [10, 11],
            "count": pl.Series([3, 4], dtype=pl.Int32),
            "score": [0.25, 0.75],
            "day": [datetime.date(2024, 1, 2), datetime.date(2024, 3, 4)],
            "at": [datetime.datetime(2024, 1, 2, 3, 4, 5), None],
            "cat": pl.Series(["a", "b"], dtype=pl.Categorical),
            "tags": [["x", "y"], []],
        }
    ).write_parquet(p)
    docs = read_documents(p, id_column="uid")
    f = docs.frame
    assert f["doc_id"].to_list() == ["10", "11"]
    assert f.schema["count"] == pl.Int32 and f["count"].to_list() == [3, 4]
    assert f.schema["score"] == pl.Float64
    assert f.schema["day"] == pl.Date and f["day"].to_list() == [datetime.date(2024, 1, 2), datetime.date(2024, 3, 4)]
    assert f.schema["at"] == pl.Datetime("us") and f["at"][0] == datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert f.schema["cat"] == pl.String and f["cat"].to_list() == ["a", "b"]
    assert f["tags"].to_list() == ['["x", "y"]', "[]"]  # nested → JSON text, as for JSONL
    assert docs.metadata_columns == ["count", "score", "day", "at", "cat", "tags"]


def test_txt_folder_ids_order_and_filename(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay\nsecond line\n")
    (tmp_path / "sub" / "c.TXT").write_text("see")
    (tmp_path / "sub" / "deeper" / "d.txt").write_text("dee")
    (tmp_path / "notes.md").write_text("not a txt")
    (tmp_path / "._a.txt").write_bytes(b"\x00\x05\xff")  # macOS resource fork: hidden, skipped
    (tmp_path / "empty.txt").write_text("  \n")
    docs = read_documents(tmp_path)
    f = docs.frame
    assert f["doc_id"].to_list() == ["a.txt", "b.txt", "sub/c.TXT", "sub/deeper/d.txt"]
    assert f["text"].to_list() == ["ay\nsecond line\n", "bee", "see", "dee"]
    assert f["filename"].to_list() == f["doc_id"].to_list()
    assert docs.metadata_columns == ["filename"] and docs.skipped_empty == 1
    assert [p.name for p in iter_text_files(tmp_path)] == ["a.txt", "b.txt", "empty.txt", "c.TXT", "d.txt"]


# ------------------------------------------------------------------------------------------ ids / text


def test_generated_ids_stable_and_unique_with_duplicate_texts(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in ["same", "other", "same", "same"]])
    first, second = read_documents(p), read_documents(p)
    ids = first.frame["doc_id"].to_list()
    assert ids == second.frame["doc_id"].to_list()
    base = gen_id("same")
    assert ids == [base, gen_id("other"), base + "-2", base + "-3"]
    assert first.id_column is None


def test_non_string_text_and_null_text(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": 42}, {"text": 1.5}, {"text": None}, {"text": "s"}])
    docs = read_documents(p)
    assert docs.frame["text"].to_list() == ["42", "1.5", "s"]
    assert docs.skipped_empty == 1


def test_empty_texts_skipped_and_counted_or_refused(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('text,k\nkeep,1\n"   ",2\n,3\n"\t\n",4\nalso,5\n')
    docs = read_documents(p)
    assert docs.frame["text"].to_list() == ["keep", "also"]
    assert docs.frame["k"].to_list() == [1, 5]  # metadata rows follow their text
    assert docs.skipped_empty == 3
    msg = error(p, skip_empty=False)
    assert "3 documents with empty text" in msg and "row 2" in msg


def test_all_empty_texts_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": ""}, {"text": " "}])
    assert "all 2 texts are empty" in error(p)


def test_bom_is_stripped(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"\xef\xbb\xbftext,k\nhi,1\n")
    docs = read_documents(p)
    assert docs.frame.columns == ["doc_id", "text", "k"] and docs.frame["text"].to_list() == ["hi"]
    q = tmp_path / "b.jsonl"
    q.write_bytes(b'\xef\xbb\xbf{"text": "yo"}\n')
    assert read_documents(q).frame["text"].to_list() == ["yo"]
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.txt").write_bytes(b"\xef\xbb\xbfbody")
    assert read_documents(tmp_path / "dir").frame["text"].to_list() == ["body"]


def test_large_document_read_intact(tmp_path):
    big = ("word " * 20 + "é\n") * 6000  # ~640 KB, ~100k tokens
    assert len(big.encode()) > 600_000
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": big}, {"text": "small"}])
    assert read_documents(p).frame["text"][0] == big
    q = tmp_path / "a.csv"
    pl.DataFrame({"text": [big, "small"]}).write_csv(q)
    assert read_documents(q).frame["text"][0] == big


def test_nested_metadata_stored_as_json_text(tmp_path):
    deep = {"a": [1, {"b": [2, 3]}]}
    for _ in range(200):
        deep = {"x": deep}
    rows = [{"text": "t1", "meta": {"k": [1, 2], "s": "é"}, "mixed": 1}, {"text": "t2", "meta": deep, "mixed": "one"}]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    f = read_documents(p).frame
    assert f.schema["meta"] == pl.String
    assert json.loads(f["meta"][0]) == {"k": [1, 2], "s": "é"}
    assert json.loads(f["meta"][1]) == deep
    assert f["mixed"].to_list() == ["1", "one"]  # mixed types → text


def test_huge_ints_kept_as_text(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "big": 2**70}, {"text": "b", "big": 1}])
    f = read_documents(p).frame
    assert f.schema["big"] == pl.String and f["big"].to_list() == [str(2**70), "1"]


# -------------------------------------------------------------------------------------- bad inputs


def test_missing_text_column_lists_columns(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("body,lang\nhi,en\n")
    msg = error(p)
    assert "'text'" in msg and "'body', 'lang'" in msg and "--text-column" in msg


def test_missing_id_column_lists_columns(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "key": 1}])
    msg = error(p, id_column="uid")
    assert "'uid'" in msg and "'text', 'key'" in msg and "--id-column" in msg


@pytest.mark.parametrize("name", ["a.csv", "a.tsv", "a.jsonl", "a.json"])
def test_zero_byte_file(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")
    assert "has no documents" in error(p)


def test_header_only_and_no_rows(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("text,k\n")
    assert "has no documents" in error(p)
    q = tmp_path / "b.jsonl"
    q.write_text("\n\n  \n")
    assert "has no documents" in error(q)
    r = tmp_path / "c.json"
    r.write_text("[]")
    assert "has no documents" in error(r)
    s = tmp_path / "d.parquet"
    pl.DataFrame({"text": []}, schema={"text": pl.String}).write_parquet(s)
    assert "has no documents" in error(s)


def test_folder_without_txt_files(tmp_path):
    (tmp_path / "x.md").write_text("hi")
    assert "no .txt files" in error(tmp_path)


def test_invalid_utf8_names_line(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"text\nfine\nalso fine\nbad \xff here\n")
    assert "line 4" in error(p)
    q = tmp_path / "a.jsonl"
    q.write_bytes(b'{"text": "ok"}\n{"text": "\xc3\x28"}\n')
    assert "line 2" in error(q)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "good.txt").write_text("ok")
    (d / "bad.txt").write_bytes(b"one\ntwo \xe9\n")
    msg = error(d)
    assert "bad.txt" in msg and "line 2" in msg


def test_utf16_gets_a_hint(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes("text\nhi\n".encode("utf-16"))
    assert "UTF-16" in error(p)


def test_malformed_jsonl_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok"}\n\n{"text": "broken",}\n')
    msg = error(p)
    assert "line 3" in msg and "not valid JSON" in msg


def test_jsonl_row_not_an_object(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok"}\n["text", "x"]\n')
    msg = error(p)
    assert "line 2" in msg and "array, not an object" in msg


def test_json_array_item_not_an_object(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[{"text": "ok"}, "bare"]')
    assert "item 2" in error(p)


def test_single_json_object_file(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{\n  "data": [{"text": "x"}]\n}\n')
    assert "single JSON object" in error(p)


def test_deeply_nested_json_is_a_clean_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok"}\n{"text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    msg = error(p)
    assert "line 2" in msg and "nested too deeply" in msg


def test_lone_surrogate_escape(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "bad \\ud800"}\n')
    msg = error(p)
    assert "line 2" in msg and "surrogate" in msg


def test_duplicate_ids_named_and_counted(tmp_path):
    rows = [{"id": i, "text": f"t{n}"} for n, i in enumerate(["a", "b", "a", "c", "b", "a"])]
    p = write_jsonl(tmp_path / "a.jsonl", rows)
    msg = error(p, id_column="id")
    assert "2 repeated ids" in msg and "'a'" in msg and "'b'" in msg and "'c'" not in msg


def test_duplicate_int_ids(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id,text\n5,x\n5,y\n")
    assert "'5'" in error(p, id_column="id")


def test_null_ids(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "a", "text": "x"}\n\n{"id": null, "text": "y"}\n{"text": "z"}\n')
    msg = error(p, id_column="id")
    assert "2 documents without an id" in msg and "line 3" in msg and "line 4" in msg


def test_reserved_column_names(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"doc_id": "x", "text": "t"}])
    msg = error(p)
    assert "'doc_id'" in msg and "--id-column doc_id" in msg
    assert read_documents(p, id_column="doc_id").frame["doc_id"].to_list() == ["x"]
    q = write_jsonl(tmp_path / "b.jsonl", [{"body": "b", "text": "t"}])
    assert "'text'" in error(q, text_column="body")


def test_ragged_csv(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("text,k\na,1\nb,2,extra\n")
    msg = error(p)
    assert "line 3" in msg and "more fields" in msg


def test_unclosed_quote_csv(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text('text,k\n"never closed,1\nb,2\n')
    msg = error(p)
    assert "could not be read as CSV" in msg and "not properly escaped" in msg and "line" not in msg


def test_repeated_header_name(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("text,k,k\na,1,2\n")
    assert "'k' more than once" in error(p)


def test_unnamed_index_column(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(",text\n0,a\n1,b\n")
    f = read_documents(p).frame
    assert f.columns == ["doc_id", "text", "column_1"] and f["column_1"].to_list() == [0, 1]


def test_bad_parquet(tmp_path):
    p = tmp_path / "a.parquet"
    p.write_text("not parquet")
    assert "could not be read as Parquet" in error(p)


def test_paths_and_formats(tmp_path):
    assert "does not exist" in error(tmp_path / "nope.csv")
    p = tmp_path / "a.xlsx"
    p.write_text("x")
    assert "--format" in error(p)
    assert "unknown format" in error(p, format="excel")
    assert "is a folder" in error(tmp_path, format="csv")
    assert "is a file" in error(p, format="txt")
    assert issubclass(InputError, SaeembedError)


# --------------------------------------------------------------------------------------- property


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=12))
def test_jsonl_roundtrip_property(tmp_path, texts):
    p = tmp_path / "prop.jsonl"
    # ensure_ascii=False writes raw U+2028, \x85, etc.: the reader must split lines on "\n" only.
    p.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    kept = [t for t in texts if t.strip()]
    if not kept:
        with pytest.raises(InputError):
            read_documents(p)
        return
    docs = read_documents(p)
    assert docs.frame["text"].to_list() == kept
    assert docs.skipped_empty == len(texts) - len(kept)
    assert docs.frame["doc_id"].n_unique() == len(kept)


# --------------------------------------------------------------------- issue 19: exact values, names, sep


@pytest.mark.parametrize("sep, name", [(",", "a.csv"), ("\t", "a.tsv")])
def test_csv_id_and_text_kept_exactly_as_written(tmp_path, sep, name):
    p = tmp_path / name
    p.write_text(sep.join(["id", "text", "score"]) + "\n" + "\n".join(
        sep.join(row) for row in [("1.10", "1.50", "0.5"), ("2.00", "1e3", "1"), ("007", "+5", "2")]) + "\n")
    f = read_documents(p, id_column="id").frame
    assert f["doc_id"].to_list() == ["1.10", "2.00", "007"]
    assert f["text"].to_list() == ["1.50", "1e3", "+5"]
    assert f.schema["score"] == pl.Float64 and f["score"].to_list() == [0.5, 1.0, 2.0]  # metadata still typed
    # the same when the columns come by --rename
    p.write_text(sep.join(["key", "body"]) + "\n" + sep.join(["1.10", "1e3"]) + "\n")
    f = read_documents(p, id_column="id", rename={"key": "id", "body": "text"}).frame
    assert (f["doc_id"].to_list(), f["text"].to_list()) == (["1.10"], ["1e3"])


def test_json_number_ids_and_texts_keep_their_written_form(tmp_path):
    lines = ['{"id": 1.10, "text": 1e3, "score": 0.50, "mixed": 1.10}',
             '{"id": 2, "text": "two", "score": 1, "mixed": "a"}']
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(lines) + "\n")
    f = read_documents(p, id_column="id").frame
    assert f["doc_id"].to_list() == ["1.10", "2"] and f["text"].to_list() == ["1e3", "two"]
    assert f.schema["score"] == pl.Float64 and f["score"].to_list() == [0.5, 1.0]
    assert f["mixed"].to_list() == ["1.10", "a"]
    q = tmp_path / "a.json"
    q.write_text("[" + ",".join(lines) + "]")
    assert read_documents(q, id_column="id").frame["doc_id"].to_list() == ["1.10", "2"]


@pytest.mark.parametrize("column", ["n_tokens", "n_chars", "doc_idx", "corpus_id", "f12", "f0", "cluster.topic"])
def test_reserved_metadata_names_refused_and_renamable(tmp_path, column):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "hello", column: 3}, {"text": "world", column: 4}])
    msg = error(p)
    assert repr(column) in msg and "--rename" in msg and "--drop-column" in msg and "rename=" in msg
    f = read_documents(p, rename={column: "mine"}).frame
    assert f.columns == ["doc_id", "text", "mine"] and f["mine"].to_list() == [3, 4]
    assert read_documents(p, drop_columns=[column]).frame.columns == ["doc_id", "text"]


def test_reserved_names_allowed_as_text_or_id_and_feature_like_names_elsewhere(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"f12": "hello", "n_tokens": "a", "f12x": 1, "ff": 2, "F1": 3}])
    f = read_documents(p, text_column="f12", id_column="n_tokens").frame
    assert f.columns == ["doc_id", "text", "f12x", "ff", "F1"]
    # "text" is refused as metadata when another column is the text, and can be renamed away
    q = write_jsonl(tmp_path / "b.jsonl", [{"body": "b", "text": "t"}])
    assert read_documents(q, text_column="body", rename={"text": "orig"}).frame["orig"].to_list() == ["t"]


def test_rename_and_drop_mistakes_are_clear(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "a": 1, "b": 2}])
    assert "no column 'zz' to rename" in error(p, rename={"zz": "y"})
    assert "no column 'zz' to drop-column" in error(p, drop_columns=["zz"])
    assert "both renamed and dropped" in error(p, rename={"a": "c"}, drop_columns=["a"])
    assert "two columns are named 'b'" in error(p, rename={"a": "b"})
    assert "new name" in error(p, rename={"a": ""})
    swapped = read_documents(p, rename={"a": "b", "b": "a"}).frame
    assert swapped["a"].to_list() == [2] and swapped["b"].to_list() == [1]
    assert "do not apply" in error(tmp_path, rename={"a": "b"})


def test_semicolon_csv_is_read_or_named(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("id;text;lang\n1.10;hello, world;en\n2;bye;fr\n")
    f = read_documents(p, id_column="id").frame  # the header only has id and text with ";"
    assert f["doc_id"].to_list() == ["1.10", "2"] and f["text"].to_list() == ["hello, world", "bye"]
    assert f["lang"].to_list() == ["en", "fr"]
    assert read_documents(p, separator=";").frame["text"].to_list() == ["hello, world", "bye"]
    for sep in ("|", "\t"):
        q = tmp_path / "b.csv"
        q.write_text(f"text{sep}k\na,b{sep}1\n")
        assert read_documents(q).frame["text"].to_list() == ["a,b"]
    q.write_text("id;body;lang\n1;hello;en\n")  # no text column under any separator: say which one it looks like
    msg = error(q)
    assert "'id;body;lang'" in msg and "--sep ';'" in msg
    assert read_documents(q, separator=";", text_column="body").frame["text"].to_list() == ["hello"]
    assert "one character" in error(q, separator=";;")
    assert "--sep applies to csv and tsv" in error(write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}]), separator=";")

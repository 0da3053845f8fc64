"""filter: every row ends in exactly one of kept / dropped, with the rule that dropped it."""

import json

import numpy as np
import polars as pl
import pytest

from saeembed.analysis.classify import train_classifier
from saeembed.analysis.filter import FilterSpec, filter_corpus, write_outputs
from saeembed.errors import FilterError, InputError, StoreError, UnknownFeatureError
from tests.synthetic import register_sae, write_corpus


def corpus(store, n=60):
    """Feature 5 marks 'toxic' rows (every 6th), feature 9 'junk' (every 10th); rows 40-44 copy rows 0-4's
    features exactly except one extra feature (near-duplicates, Jaccard 10/11)."""
    rng = np.random.default_rng(0)
    sae = register_sae(store, 64)
    docs = []
    for i in range(n):
        feats = {int(f): 1.0 for f in rng.choice(np.arange(20, 64), 10, replace=False)}
        if i % 6 == 0:
            feats[5] = 2.0
        if i % 10 == 0:
            feats[9] = 0.7
        docs.append(feats)
    for k in range(5):
        docs[40 + k] = dict(docs[k]) | {19: 1.0}
    meta = {"source": ["curated" if i % 3 else "scraped" for i in range(n)],
            "toxic": [5 in d for d in docs],
            "stars": [i % 5 for i in range(n)]}
    texts = [f"text number {i} 'quoted' \"dq\"" for i in range(n)]
    write_corpus(store, sae, "c", docs, meta=meta, texts=texts, ids=[f"id{i}" for i in range(n)])
    return docs


def ids(docs, feature):
    return {f"id{i}" for i, d in enumerate(docs) if feature in d}


def partition_ok(res, n):
    kept = set(res.kept.tolist())
    dropped = set(res.dropped["doc_idx"].to_list())
    return not kept & dropped and len(kept | dropped) == n and res.check["ok"]


def test_rules_and_reasons(store):
    docs = corpus(store)
    res = filter_corpus(store, "c", FilterSpec(keep=["source = 'curated'"], drop=["f9 > 0.5"], drop_features=[5]))
    assert partition_ok(res, 60)
    reason = dict(zip(res.dropped["doc_id"], res.dropped["drop_rule"]))
    assert reason["id3"] == "keep: source = 'curated'"  # scraped: dropped by the keep rule first
    assert reason["id10"] == "drop: f9 > 0.5"  # curated, junk
    kept_ids = set(store.documents("c", text=False, doc_idx=res.kept.tolist())["doc_id"])
    expected = {f"id{i}" for i in range(60) if i % 3} - ids(docs, 9) - ids(docs, 5)
    assert kept_ids == expected
    rules = {r["rule"]: r for r in res.rules.to_dicts()}
    assert rules["drop-feature: 5"]["matched"] == len(ids(docs, 5))
    assert rules["drop-feature: 5"]["dropped"] == len(ids(docs, 5) - {f"id{i}" for i in range(0, 60, 3)} - ids(docs, 9))
    multi = res.dropped.filter(pl.col("doc_id") == "id0")["drop_rules"][0].to_list()
    assert multi == ["keep: source = 'curated'", "drop: f9 > 0.5", "drop-feature: 5"]
    # feature 5 fires only in dropped rows, so it tops the dropped-vs-kept diff
    assert 5 in res.features["feature"].head(3).to_list()


def test_dedupe_planted_pairs(store):
    corpus(store)
    res = filter_corpus(store, "c", FilterSpec(dedupe=0.85))
    assert partition_ok(res, 60)
    d = dict(zip(res.dropped["doc_id"], res.dropped["drop_rule"]))
    assert set(d) == {f"id{40 + k}" for k in range(5)}
    assert d["id41"].startswith("dedupe 0.85: near-duplicate of id1 (jaccard 0.909")


def test_classifier_score_column_and_outputs(store, tmp_path):
    docs = corpus(store)
    train_classifier(store, "c", "toxic", "toxicity")
    res = filter_corpus(store, "c", FilterSpec(drop=["toxicity > 0.8"]))
    assert partition_ok(res, 60)
    assert set(res.dropped["doc_id"]) == ids(docs, 5)
    out, dropped = tmp_path / "kept.jsonl", tmp_path / "dropped.parquet"
    written = write_outputs(store, res, out, dropped)
    kept_rows = [json.loads(l) for l in out.read_text().splitlines()]
    drop_rows = pl.read_parquet(dropped)
    assert written == {"kept_rows": 60 - len(ids(docs, 5)), "dropped_rows": len(ids(docs, 5))}
    # the original rows, under the user's own column names, values unchanged
    assert kept_rows[0] == {"id": "id1", "text": "text number 1 'quoted' \"dq\"", "source": "curated", "toxic": False, "stars": 1}
    assert set(drop_rows.columns) == {"id", "text", "source", "toxic", "stars", "drop_rule", "drop_rules"}
    assert drop_rows["drop_rule"].unique().to_list() == ["drop: toxicity > 0.8"]
    assert set(drop_rows["id"]) | {r["id"] for r in kept_rows} == {f"id{i}" for i in range(60)}


def test_quality_model_from_labelled_sample(store):
    docs = corpus(store)
    # only 40 rows labelled (the rest null): a small sample; "good" = not toxic
    store.con.execute("ALTER TABLE docmeta_1 ADD COLUMN good BOOLEAN")
    store.con.execute("UPDATE docmeta_1 SET good = NOT toxic WHERE doc_idx < 40")
    store.con.execute("UPDATE corpora SET metadata_columns = json_merge_patch(metadata_columns, '{\"good\": \"Boolean\"}')")
    bad = ids(docs, 5)
    res = filter_corpus(store, "c", FilterSpec(quality_label="good", quality_drop=len(bad) / 60))
    assert partition_ok(res, 60) and res.quality["n_train"] == 32
    assert set(res.dropped["doc_id"]) == bad  # incl. the unlabelled toxic rows 40-59


@pytest.mark.parametrize("rule", [
    "source = 'x'; DROP TABLE documents; --",
    "toxic = true) or (1 = 1",
    "nope > 1",
    "\"doc_id\" = 'a' union select",
])
def test_hostile_rules_rejected_or_data(store, rule):
    corpus(store)
    try:
        res = filter_corpus(store, "c", FilterSpec(drop=[rule]))
    except FilterError:
        pass
    else:  # parsed as a plain comparison with a string value: matches nothing
        assert res.dropped.height == 0 and partition_ok(res, 60)
    assert store.query("SELECT count(*) AS n FROM documents")["n"][0] == 60


def test_user_errors(store):
    corpus(store)
    with pytest.raises(UnknownFeatureError):
        filter_corpus(store, "c", FilterSpec(drop=["f999 > 0"]))
    with pytest.raises(InputError, match="Jaccard"):
        filter_corpus(store, "c", FilterSpec(dedupe=1.5))
    with pytest.raises(InputError, match="quality model"):
        filter_corpus(store, "c", FilterSpec(quality_drop=0.5))


def test_metadata_only_filter_needs_no_encoding(store, tmp_path):
    from saeembed.documents import Documents

    frame = pl.DataFrame({"doc_id": ["a", "b", "c"], "text": ["x", "y", "z"], "lang": ["en", "de", "en"]})
    store.add_corpus("raw", Documents(frame, "body", None, ["lang"], "t", 0))
    res = filter_corpus(store, "raw", FilterSpec(keep=["lang = 'en'"]))
    assert partition_ok(res, 3) and res.features is None
    write_outputs(store, res, tmp_path / "k.csv", tmp_path / "d.csv")
    k = pl.read_csv(tmp_path / "k.csv")
    assert k.columns == ["body", "lang"] and k["body"].to_list() == ["x", "z"]  # generated ids are not user columns
    with pytest.raises(StoreError, match="not encoded"):
        filter_corpus(store, "raw", FilterSpec(dedupe=0.9))


# --- issue 19 ---------------------------------------------------------------------------------------


def short_and_long(store):
    """Six docs; n_tokens 4, 12, 5, 20, 7, 9 (the encoding's counts, not the text's)."""
    from tests.synthetic import register_sae

    sae = register_sae(store, 16)
    write_corpus(store, sae, "s", [[1], [2], [1, 2], [3], [1], [2]], n_tokens=[4, 12, 5, 20, 7, 9],
                 meta={"src": ["a", "b", "a", "b", "a", "b"]}, ids=[f"s{i}" for i in range(6)])


def dropped_ids(res):
    return sorted(res.dropped["doc_id"].to_list())


def test_n_tokens_rule_alone_uses_the_encoding(store):
    """`--drop "n_tokens < 8"` said "unknown column" unless another rule needed the SAE."""
    short_and_long(store)
    alone = filter_corpus(store, "s", FilterSpec(drop=["n_tokens < 8"]))
    assert dropped_ids(alone) == ["s0", "s2", "s4"] and partition_ok(alone, 6)
    with_feature = filter_corpus(store, "s", FilterSpec(drop=["n_tokens < 8", "f3 > 5"]))
    assert dropped_ids(with_feature) == dropped_ids(alone)  # same columns whatever the other rules
    kept = filter_corpus(store, "s", FilterSpec(keep=["n_tokens between 9 and 12 or src = 'a'"]))
    assert dropped_ids(kept) == ["s3"]


def test_n_tokens_on_an_unencoded_corpus_says_why(store):
    from saeembed.documents import Documents

    frame = pl.DataFrame({"doc_id": ["a", "b"], "text": ["x", "y"], "lang": ["en", "de"]})
    store.add_corpus("raw", Documents(frame, "text", None, ["lang"], "t", 0))
    with pytest.raises(StoreError, match="not encoded"):  # not "unknown column"
        filter_corpus(store, "raw", FilterSpec(drop=["n_tokens < 8"]))
    # a feature name inside a quoted value is a value, not a feature rule: no encoding needed
    res = filter_corpus(store, "raw", FilterSpec(drop=["lang = 'f12'", "lang = 'de'"]))
    assert dropped_ids(res) == ["b"]


def _old_store_metadata_column(store, name, values):
    """A metadata column with a name ingest now refuses, as a store written before that holds it."""
    info = store.corpus("c")
    store.con.execute(f'ALTER TABLE {info.meta_table} ADD COLUMN "{name}" DOUBLE')
    for i, v in enumerate(values):
        store.con.execute(f'UPDATE {info.meta_table} SET "{name}" = ? WHERE doc_idx = ?', [v, i])
    store.con.execute("UPDATE corpora SET metadata_columns = json_merge_patch(metadata_columns, ?) WHERE name = 'c'",
                      [json.dumps({name: "Float64"})])
    assert name in store.corpus("c").metadata_columns


def test_metadata_column_named_like_a_feature_is_never_silently_picked(store):
    """A user column `f5` used to shadow feature 5 silently; now naming it is an error with both meanings."""
    docs = corpus(store)
    _old_store_metadata_column(store, "f5", [0.0] * 60)  # feature 5 fires on every 6th row; the column never
    with pytest.raises(InputError, match=r"'f5'.*two meanings, your metadata column 'f5' and SAE feature 5.*--rename f5=f5_meta"):
        filter_corpus(store, "c", FilterSpec(drop=["f5 > 0.5"]))
    with pytest.raises(InputError, match="two meanings"):
        filter_corpus(store, "c", FilterSpec(keep=['"f5" = 0']))
    # rules that do not name it still run, and feature rules work as before
    res = filter_corpus(store, "c", FilterSpec(drop=["f9 > 0.5"], drop_features=[5]))
    assert set(res.dropped["doc_id"]) == ids(docs, 9) | ids(docs, 5)


def test_metadata_column_named_like_a_builtin_is_never_silently_picked(store):
    corpus(store)
    _old_store_metadata_column(store, "n_tokens", [100.0] * 60)
    with pytest.raises(InputError, match="two meanings, your metadata column 'n_tokens' and the built-in column n_tokens"):
        filter_corpus(store, "c", FilterSpec(drop=["n_tokens < 8"]))
    res = filter_corpus(store, "c", FilterSpec(drop=["stars > 3"]))  # other rules still run
    assert res.dropped.height == 12 and partition_ok(res, 60)


def test_where_on_a_metadata_column_named_like_a_builtin_is_refused(store):
    """--where (search, analyze...) reads the same columns: an old store's `n_tokens` column is not silently lost."""
    corpus(store)
    _old_store_metadata_column(store, "n_tokens", [100.0] * 60)
    info = store.corpus("c")
    sae = store.encoded_sae(info)
    with pytest.raises(FilterError, match="two meanings, your metadata column 'n_tokens' and the built-in"):
        store.select_documents(info, sae, ["n_tokens > 50"])
    assert store.select_documents(info, sae, ["stars > 3"])[0].height == 12


def test_feature_column_as_written(store):
    docs = corpus(store)
    res = filter_corpus(store, "c", FilterSpec(drop=["f09 > 0.5"]))  # f09 is feature 9
    assert set(res.dropped["doc_id"]) == ids(docs, 9)


_CRASHING_WRITER = """
import os, pathlib, sys
import polars as pl
from saeembed.analysis import filter_output

crash_at, folder = int(sys.argv[1]), pathlib.Path(sys.argv[2])
steps = [0]

def step(fn):  # every file-system step of the pair write counts; the process dies (as by kill -9) before step crash_at
    def wrapped(*a, **kw):
        steps[0] += 1
        if steps[0] == crash_at:
            os._exit(137)
        return fn(*a, **kw)
    return wrapped

os.replace = step(os.replace)
pathlib.Path.unlink = step(pathlib.Path.unlink)
pl.DataFrame.write_ndjson = step(pl.DataFrame.write_ndjson)
filter_output.write_files({folder / "kept.jsonl": pl.DataFrame({"id": ["b", "c"]}),
                           folder / "dropped.jsonl": pl.DataFrame({"id": ["a", "d"], "drop_rule": ["new", "new"]})})
print("steps", steps[0])
"""
OLD = (["a", "b", "c"], ["d"])
NEW = (["b", "c"], ["a", "d"])


def _pair(folder):
    return tuple(pl.read_ndjson(folder / f)["id"].to_list() for f in ("kept.jsonl", "dropped.jsonl"))


def _crash_writing_new_pair(folder, crash_at):
    import subprocess
    import sys

    from saeembed.analysis.filter_output import write_files

    for p in folder.iterdir():
        p.unlink()
    write_files({folder / "kept.jsonl": pl.DataFrame({"id": OLD[0]}),
                 folder / "dropped.jsonl": pl.DataFrame({"id": OLD[1], "drop_rule": ["old"]})})
    script = folder.parent / "crash.py"
    script.write_text(_CRASHING_WRITER)
    return subprocess.run([sys.executable, str(script), str(crash_at), str(folder)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("crash_at", range(1, 10))
def test_kept_and_dropped_are_never_one_new_beside_one_old(tmp_path, crash_at):
    """kill -9 at every step of writing a kept / dropped pair (2 temp writes, 2 markers, 2 renames, 2
    marker removals; 9 = no crash): whoever reads next (after recover_outputs, which every write runs
    first) sees the old pair or the new pair, never a mix."""
    from saeembed.analysis.filter_output import recover_outputs

    folder = tmp_path / "out"
    folder.mkdir()
    proc = _crash_writing_new_pair(folder, crash_at)
    assert proc.returncode == (0 if crash_at == 9 else 137), proc.stderr
    if crash_at == 9:
        assert proc.stdout.split() == ["steps", "8"]  # the crash points above cover every step
    if crash_at == 6:  # killed between the two renames: on disk, a new kept beside an old dropped...
        assert _pair(folder) == (NEW[0], OLD[1])
    # a reader of either file finishes the pair first; the dropped file's marker is the second one written
    recovered = recover_outputs(folder / "dropped.jsonl")
    assert _pair(folder) == (OLD if crash_at <= 4 else NEW)
    recovered += recover_outputs(folder / "kept.jsonl")
    assert _pair(folder) == (OLD if crash_at <= 3 else NEW)  # a marker exists from step 4 on: the new pair wins
    assert bool(recovered) == (4 <= crash_at <= 8)
    assert not any(p.name.endswith(".saeembed-pending") for p in folder.iterdir())


def test_next_filter_run_finishes_a_killed_pair_first_and_says_so(store, tmp_path):
    docs = corpus(store)
    folder = tmp_path / "out"
    folder.mkdir()
    assert _crash_writing_new_pair(folder, 6).returncode == 137  # new kept beside old dropped, markers left
    res = filter_corpus(store, "c", FilterSpec(drop=["f9 > 0.5"]))
    written = write_outputs(store, res, folder / "kept.jsonl", folder / "dropped.jsonl")
    assert len(written["recovered"]) == 1 and "killed" in written["recovered"][0]
    kept, dropped = _pair(folder)
    assert set(dropped) == ids(docs, 9) and len(kept) + len(dropped) == 60
    assert sorted(p.name for p in folder.iterdir()) == ["dropped.jsonl", "kept.jsonl"]
    again = write_outputs(store, res, folder / "kept.jsonl", folder / "dropped.jsonl")
    assert "recovered" not in again

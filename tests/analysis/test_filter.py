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

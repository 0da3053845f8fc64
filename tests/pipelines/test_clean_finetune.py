"""The fine-tuning cleanup pipeline on a tiny model + SAE: raw file in, cleaned file + report out."""

import json

from saeembed.analysis.filter import FilterSpec
from saeembed.pipelines.clean_finetune import clean_file
from saeembed.sae.formats import save_sae
from tests.conftest import make_sae


def test_clean_file(tmp_path, tiny_bert_dir):
    rows = [{"uid": f"r{i}", "body": t, "src": s} for i, (t, s) in enumerate([
        ("the quick brown fox jumps over the lazy dog", "curated"),
        ("please help with my login password", "curated"),
        ("the quick brown fox jumps over the lazy dog", "scraped"),  # exact copy of r0
        ("great sound and battery, five stars", "scraped"),
        ("thanks for the quick help with billing", "curated"),
    ])]
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sae = save_sae(make_sae(32, 64, hook="layers.1", model=str(tiny_bert_dir)), tmp_path / "sae")
    res = clean_file(raw, tmp_path / "clean.jsonl", dropped=tmp_path / "dropped.jsonl", report=tmp_path / "r.md",
                     store=tmp_path / "s.duckdb", text_column="body", id_column="uid",
                     spec=FilterSpec(dedupe=1.0, drop=["src = 'scraped' and n_chars < 40"]), model=str(tiny_bert_dir),
                     sae=str(sae))
    kept = [json.loads(l) for l in (tmp_path / "clean.jsonl").read_text().splitlines()]
    dropped = [json.loads(l) for l in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert [r["uid"] for r in kept] == ["r0", "r1", "r4"] and kept[0] == rows[0]
    reasons = {r["uid"]: r["drop_rule"] for r in dropped}
    assert reasons["r3"] == "drop: src = 'scraped' and n_chars < 40"
    assert reasons["r2"].startswith("dedupe 1: near-duplicate of r0 (jaccard 1.000)")
    report = (tmp_path / "r.md").read_text()
    assert "input rows: 5" in report and "exactly one of kept / dropped: yes" in report

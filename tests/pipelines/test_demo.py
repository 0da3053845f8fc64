"""The README's main job, end to end, with the embedded model and the shipped SAE (offline, ~15 s)."""

from saeembed.pipelines.demo import SAMPLE_CORPORA, run_demo


def test_demo_runs_offline_and_finds_known_differences(tmp_path):
    store = tmp_path / "demo.duckdb"
    result = run_demo(store, top=5)
    assert {r.corpus: r.docs_encoded for r in result.encodes} == {
        "support_tickets": 80, "product_reviews": 80, "toxicity": 120, "instructions": 100,
    }
    assert all(r.hook == "layers.4" and r.model == "sentence-transformers/all-MiniLM-L6-v2" for r in result.encodes)
    for corpus in SAMPLE_CORPORA:
        top = result.top_features[corpus]
        assert top.height == 5 and top["diff"].is_sorted(descending=True)
        assert top["diff"][0] > 0.3  # each sample corpus has something clearly its own
        assert all("«" in e for e in top["exemplar"])
    # The instruction set's texts are built as "Instruction: …\nResponse: …": its distinctive features show it.
    exemplars = " ".join(result.top_features["instructions"]["exemplar"]).lower()
    assert "instruction" in exemplars or "response" in exemplars
    # Running it again is idempotent: nothing is re-ingested or re-encoded.
    again = run_demo(store, top=5)
    assert all(r.docs_encoded == 0 for r in again.encodes)
    assert again.top_features["toxicity"].equals(result.top_features["toxicity"])

"""Trigger phrases and `show` on a store with planted token rows: feature 5 fires on "price" only right
after "refund"; feature 9 fires weakly on every token (so every token has a row)."""

import re

import polars as pl
import pytest

from saeembed.analysis.doc_view import mark_spans, show_document
from saeembed.analysis.triggers import triggers
from saeembed.config import TriggersConfig
from saeembed.documents import Documents
from saeembed.store import Store
from tests.conftest import make_sae

TEXTS = (["my refund price is late"] * 6 + ["refund price and refund price"] + ["the price is good"] * 5
         + ["refund is late"] * 5)


def _planted(path):
    tokens = []
    for d, text in enumerate(TEXTS):
        words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
        for i, (s, e, w) in enumerate(words):
            tokens.append((d, i, s, e, 9, 0.1))
            if w == "price" and i and words[i - 1][2] == "refund":
                tokens.append((d, i, s, e, 5, 2.0 + 0.1 * d))
    rows = pl.DataFrame(tokens, schema=["doc_idx", "token_index", "start", "end", "feature", "value"], orient="row")
    acts = (rows.sort("doc_idx", "token_index").group_by("doc_idx", "feature", maintain_order=True)
            .agg(value=pl.col("value").max(), active_tokens=pl.len(), span_start=pl.col("start").first(),
                 span_end=pl.col("end").first()))
    docs = rows.group_by("doc_idx").agg(n_tokens=pl.col("token_index").n_unique()).with_columns(n_windows=pl.lit(1))
    st = Store(path)
    st.add_corpus("c", Documents(pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS}),
                                 "text", "id", [], "mem", 0))
    info = st.corpus("c")
    s = st.register_sae(make_sae(8, 16))
    st.begin_encoding(info, s, "m", "layers.1", {})
    st.begin_token_rows(info, s, True, 0)
    path_, n = st.write_token_shard(info, s, rows)
    st.write_encoded_tokens(info, s, acts, docs.sort("doc_idx"), [(path_, n, len(TEXTS), 0, len(TEXTS) - 1)])
    st.finish_encoding(info, s)
    return st


@pytest.fixture
def planted(tmp_path):
    st = _planted(tmp_path / "s.duckdb")
    yield st
    st.close()


def test_triggers_find_the_planted_bigram_with_its_counts(planted):
    n_tokens = sum(len(t.split()) for t in TEXTS)
    r = triggers(planted, "c", [5], config=TriggersConfig(n=2, top=5, min_count=1))
    assert r.source == "token rows"
    first = r.frame.row(0, named=True)
    assert first["ngram"] == "refund price"
    assert (first["activations"], first["documents"], first["share"]) == (8, 7, 1.0)
    # 8 occurrences of the bigram cover 16 tokens of the corpus
    assert first["background"] == pytest.approx(16 / n_tokens)
    assert first["lift"] == pytest.approx(1.0 / (16 / n_tokens))
    second = r.frame.row(1, named=True)
    assert (second["ngram"], second["activations"], second["documents"]) == ("price is", 6, 6)
    uni = triggers(planted, "c", [5], config=TriggersConfig(n=1, top=5, min_count=1)).frame
    assert uni["ngram"].to_list() == ["price"] and uni["activations"][0] == 8
    assert uni["background"][0] == pytest.approx(13 / n_tokens)  # every "price", firing or not


def test_show_marks_exactly_the_firing_tokens(planted):
    view = show_document(planted, "c", "d6", [5])
    assert view.source == "token rows"
    assert [(s["start"], s["end"], s["token"]) for s in view.spans] == [(7, 12, "price"), (24, 29, "price")]
    assert mark_spans(view.text, view.spans) == "refund «price»(2.6) and refund «price»(2.6)"
    quiet = show_document(planted, "c", "d7", [5])
    assert quiet.spans == [] and "does not fire" in quiet.notes[0]
    top = show_document(planted, "c", "d0").top
    assert top["feature"].to_list() == [5, 9]


def test_cli_show_and_triggers_json(planted, tmp_path):
    import json

    from typer.testing import CliRunner

    from saeembed.cli.app import app

    planted.close()
    store = str(tmp_path / "s.duckdb")
    res = CliRunner().invoke(app, ["show", "d6", "-c", "c", "-f", "5", "--json", "--store", store])
    assert res.exit_code == 0, res.output
    spans = json.loads(res.stdout)["spans"]
    assert [s["token"] for s in spans] == ["price", "price"] and spans[0]["token_index"] == 1
    res = CliRunner().invoke(app, ["triggers", "c", "-f", "5", "--json", "--store", store])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["ngram"] == "refund price"

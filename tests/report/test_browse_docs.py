"""The browser's document page: one feature's tokens highlighted (recomputed on demand and checked here
against the tiny model and SAE run by hand), addresses by the user's doc id (old numeric ones redirect),
clear 404/400 pages, and generic features hidden from the listings unless asked for."""

import html
import http.client
import json
import re
import threading
from urllib.parse import quote, urlsplit

import polars as pl
import pytest
import torch

from saeembed.documents import Documents
from saeembed.report.browse import make_server
from saeembed.report.browse_urls import split_doc_path
from saeembed.store import Store
from tests.conftest import make_sae
from tests.report.conftest import HOSTILE, build_store

WEIRD_ID = "a/b c/ünïcödé 'q\" <script>x</script>"
TEXTS = [
    f"hello world {HOSTILE} the quick brown fox jumps over the lazy dog and i want a refund",
    "my order was late and the battery is bad, please help with my account",
    "great sound and good price, thanks for the review stars",
    "the cat sat on the mat with a dog and a fox",
]
IDS = [WEIRD_ID, "plain-1", "ünï/2", "d 3"]
MARK = re.compile(r'<mark class="act"[^>]*?data-v="([^"]+)" data-feature="(\d+)"[^>]*>(.*?)</mark>', re.S)


def q(text: str) -> str:
    return quote(text, safe="")


def serve(path):
    srv = make_server(path, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, dict(r.getheaders()), body


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, tiny_bert_dir):
    """A real encode (tiny BERT, a TopK SAE saved to disk so the store records its source) of a corpus whose
    doc ids hold '/', spaces, unicode, quotes and a <script> tag."""
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus
    from saeembed.sae.formats import load_sae, save_sae

    tmp = tmp_path_factory.mktemp("browse_docs")
    save_sae(make_sae(32, 64, architecture="topk", k=8, hook="layers.1"), tmp / "sae")
    sae = load_sae(tmp / "sae")
    path = tmp / "enc.duckdb"
    with Store(path) as st:
        st.add_corpus("c/ü", Documents(pl.DataFrame({"doc_id": IDS, "text": TEXTS}), "text", "id", [], "mem", 0))
        encode_corpus(st, "c/ü", model=str(tiny_bert_dir), sae=sae, config=EncodeConfig(device="cpu"))
        stored = st.query("SELECT doc_idx, feature, value::DOUBLE AS value FROM activations")
        probe = st.probe(st.sae_info(1), "random")  # share of random-token texts each feature fires on
    noisy = set(probe.filter(pl.col("value") >= 0.9)["feature"].to_list())
    srv, thread = serve(path)
    yield {"port": srv.server_address[1], "sae": sae, "stored": stored, "path": path, "noisy": noisy}
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def token_activations(model_dir, sae, text):
    """Per content token (start, end) and its dense latents, computed without saeembed's encode code."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       output_hidden_states=True).hidden_states[2][0]  # layers.1 = output of block 1
        pre = hidden @ sae.W_enc + sae.b_enc
        vals, idx = pre.topk(8, dim=-1)
        lat = torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))
    # content tokens: not special (encode's rule: [UNK] counts as special too), not zero-width
    special = torch.isin(enc["input_ids"][0], torch.tensor(sorted(tok.all_special_ids)))
    keep = ~special & (enc["offset_mapping"][0, :, 1] > enc["offset_mapping"][0, :, 0])
    return [tuple(o) for o in enc["offset_mapping"][0][keep].tolist()], lat[keep]


def test_only_the_chosen_features_tokens_are_marked(encoded, tiny_bert_dir):
    port, text = encoded["port"], TEXTS[0]
    spans, lat = token_activations(tiny_bert_dir, encoded["sae"], text)
    fired = (lat > 0).sum(0)
    # a feature active on some tokens of the document, not on all of them
    candidates = [f for f in range(lat.shape[1]) if 2 <= fired[f] < len(spans)]
    assert candidates
    feature = max(candidates, key=lambda f: (float(lat[:, f].max()), -f))
    expected = [(s, e, float(v)) for (s, e), v in zip(spans, lat[:, feature].tolist()) if v > 0]
    stored = encoded["stored"].filter((pl.col("doc_idx") == 0) & (pl.col("feature") == feature))["value"][0]
    assert max(v for *_, v in expected) == pytest.approx(stored, rel=1e-4)  # the hand computation matches encode

    status, _, body = get(port, f"/doc/{q('c/ü')}/{q(WEIRD_ID)}?feature={feature}")
    assert status == 200
    text_section = body.split('id="text"')[1].split("</section>")[0]
    marks = MARK.findall(text_section)
    assert {int(f) for _, f, _ in marks} == {feature}
    assert [html.unescape(t) for *_, t in marks] == [text[s:e] for s, e, _ in expected]
    assert [float(v) for v, *_ in marks] == pytest.approx([v for *_, v in expected], rel=1e-3)
    assert "<script>x</script>" not in body and "<script>alert" not in body  # doc id and text escaped
    assert html.escape(WEIRD_ID, quote=True) in body
    assert text in html.unescape(re.sub(r"<[^>]+>", "", text_section))  # the whole text, as text

    _, _, api = get(port, f"/api/doc/{q('c/ü')}/{q(WEIRD_ID)}?feature={feature}")
    api = json.loads(api)
    assert api["spans_from"] == "tokens" and api["note"] is None and api["doc"]["doc_id"] == WEIRD_ID
    assert [(sp["start"], sp["end"]) for sp in api["spans"]] == [(s, e) for s, e, _ in expected]

    # without ?feature= nothing is shaded; the features listed each link to their own highlight
    status, _, plain = get(port, f"/doc/{q('c/ü')}/{q(WEIRD_ID)}")
    assert status == 200 and MARK.findall(plain.split('id="text"')[1].split("</section>")[0]) == []
    base = f"/doc/{q('c/ü')}/{q(WEIRD_ID)}"
    links = {html.unescape(h) for h in re.findall(r'href="(/doc/[^"]+)"', plain)}
    stored = encoded["stored"]
    docs_per_feature = dict(stored.group_by("feature").len().iter_rows())
    in_doc = stored.filter(pl.col("doc_idx") == 0)["feature"].to_list()
    # generic (diff's rule) = fires on >= 90 % of the 4 documents (all of them) or of the random-token texts
    generic = {f for f in in_doc if docs_per_feature[f] == 4 or f in encoded["noisy"]}
    assert 0 < len(generic) < len(in_doc)
    assert {f"{base}?feature={f}" for f in set(in_doc) - generic} == links - {f"{base}?generic=1"}
    every = {html.unescape(h) for h in re.findall(r'href="(/doc/[^"]+)"', get(port, f"{base}?generic=1")[2])}
    assert {f"{base}?feature={f}&generic=1" for f in in_doc} == every - {base}
    assert f"{base}?feature={feature}&generic=1" in every


def test_exemplar_links_round_trip_odd_doc_ids(encoded):
    port, stored = encoded["port"], encoded["stored"]
    counts = stored.group_by("feature").len()
    in_first = set(stored.filter(pl.col("doc_idx") == 0)["feature"].to_list())
    # a feature of the document with the odd id that also fires elsewhere (all its documents are exemplars)
    feature = int(counts.filter(pl.col("feature").is_in(in_first) & (pl.col("len") >= 2))
                  .sort(["len", "feature"], descending=[True, False])["feature"][0])
    status, _, body = get(port, f"/feature/{feature}")
    assert status == 200
    hrefs = [html.unescape(h) for h in re.findall(r'class="note doc-link" href="([^"]+)"', body)]
    want = {IDS[i] for i in stored.filter(pl.col("feature") == feature)["doc_idx"].to_list()}
    got = [split_doc_path(urlsplit(h).path.removeprefix("/doc/")) for h in hrefs]
    assert {d for _, d in got} == want and WEIRD_ID in want and {c for c, _ in got} == {"c/ü"}
    for h in hrefs:
        assert urlsplit(h).query == f"feature={feature}"
        status, _, page = get(port, h)
        assert status == 200 and f'data-feature="{feature}"' in page


def test_old_numeric_addresses_redirect(encoded):
    port = encoded["port"]
    with Store(encoded["path"], read_only=True) as st:
        cid = st.corpus("c/ü").corpus_id
    status, headers, _ = get(port, f"/doc/{cid}/2?feature=5")
    assert status == 302 and headers["Location"] == f"/doc/{q('c/ü')}/{q('ünï/2')}?feature=5"
    status, headers, _ = get(port, f"/api/doc/{cid}/3")
    assert status == 302 and headers["Location"] == f"/api/doc/{q('c/ü')}/d%203"
    assert json.loads(get(port, headers["Location"])[2])["doc"]["doc_id"] == "d 3"
    assert get(port, f"/doc/{cid}/99")[0] == 404


def test_unknown_documents_and_features_are_clear_errors(encoded):
    port = encoded["port"]
    for path, code, words in [
        (f"/doc/{q('c/ü')}/nope", 404, "no document 'nope'"),
        (f"/doc/nocorpus/{q(WEIRD_ID)}", 404, "no encoded corpus"),
        (f"/doc/{q('c/ü')}/plain-1?feature=64", 404, "feature 64 does not exist"),
        (f"/doc/{q('c/ü')}/plain-1?feature=abc", 400, "feature must be a non-negative integer"),
        ("/doc/%FF/x", 400, "percent-encoded"),
        ("/doc/only-one-part", 404, "/doc/<corpus>/<doc id>"),
    ]:
        status, headers, body = get(port, path)
        assert status == code and words in html.unescape(body) and "Traceback" not in body, path
        assert headers["Content-Type"].startswith("text/html")
    status, _, body = get(port, f"/api/doc/{q('c/ü')}/nope")
    assert status == 404 and "no document" in json.loads(body)["error"]


def test_feature_that_does_not_fire_in_the_document(encoded):
    port, stored = encoded["port"], encoded["stored"]
    silent = sorted(set(range(64)) - set(stored.filter(pl.col("doc_idx") == 1)["feature"].to_list()))[0]
    status, _, body = get(port, f"/doc/{q('c/ü')}/plain-1?feature={silent}")
    assert status == 200 and f"feature {silent} does not fire in this document" in body and "<mark" not in body


# --- generic features ---------------------------------------------------------------------------------

ALWAYS = 5


@pytest.fixture
def with_generic(tmp_path):
    """The planted store plus feature 5 firing on all 20 documents (generic by diff's rule: ≥ 90 %)."""
    path = tmp_path / "generic.duckdb"
    with Store(path) as st:
        sae, a, b = build_store(st)
        for info in (a, b):
            st.con.execute("INSERT INTO activations (corpus_id, sae_key, doc_idx, feature, value, active_tokens, "
                           "span_start, span_end) SELECT corpus_id, ?, doc_idx, ?, 0.7, 3, 0, 5 FROM documents "
                           "WHERE corpus_id = ?", [sae.sae_key, ALWAYS, info.corpus_id])
    srv, thread = serve(path)
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_generic_features_hidden_with_a_toggle(with_generic):
    port = with_generic
    listing = json.loads(get(port, "/api/features?order=feature")[2])
    assert [f["feature"] for f in listing["features"]] == [1, 2, 3, 4] and listing["generic_hidden"] == 1
    shown = json.loads(get(port, "/api/features?order=feature&generic=1")[2])
    assert [f["feature"] for f in shown["features"]] == [1, 2, 3, 4, 5] and shown["generic_hidden"] == 0
    row = shown["features"][-1]
    assert row["generic"] is True and row["density"] == 1.0 and "90%" in row["generic_reason"]
    assert {f["feature"]: f["label_source"] for f in listing["features"]} == {1: "test", 2: "test", 3: "test", 4: None}

    _, _, index = get(port, "/")
    assert "1 generic feature hidden" in index and 'href="/feature/5"' not in index
    toggle = html.unescape(re.search(r'generic feature hidden[^<]*<a href="([^"]+)">show them', index).group(1))
    _, _, index2 = get(port, toggle)
    assert 'href="/feature/5"' in index2 and "hide them" in index2

    # the document page hides it too, unless asked for or chosen
    _, _, doc = get(port, "/doc/alpha/alpha1")
    assert 'href="/feature/5"' not in doc and "1 generic feature hidden" in doc and 'href="/feature/1"' in doc
    assert 'href="/feature/5"' in get(port, "/doc/alpha/alpha1?generic=1")[2]
    chosen = get(port, "/doc/alpha/alpha1?feature=5")[2]
    assert 'href="/feature/5"' in chosen and 'data-feature="5"' in chosen


def test_stored_span_fallback_says_so(with_generic):
    """The planted store records no SAE source: the page shades the stored strongest token and says why."""
    port = with_generic
    d = json.loads(get(port, "/api/doc/alpha/alpha3?feature=1")[2])
    assert d["spans_from"] == "strongest token" and "unavailable" in d["note"]
    text = d["doc"]["text"]
    assert [text[sp["start"]:sp["end"]] for sp in d["spans"]] == ["refund"]
    body = get(port, "/doc/alpha/alpha3?feature=1")[2]
    assert [m[2] for m in MARK.findall(body)] == ["refund"] and "unavailable" in body


def test_stored_token_rows_are_shown_without_recomputing(tmp_path, tiny_bert_dir, monkeypatch):
    """An encoding made with --keep-tokens: the page highlights from its token rows and never loads the model."""
    from saeembed.encode import doc_tokens
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus
    from saeembed.sae.formats import load_sae, save_sae

    save_sae(make_sae(32, 64, architecture="topk", k=8, hook="layers.1"), tmp_path / "sae")
    sae = load_sae(tmp_path / "sae")
    path = tmp_path / "tok.duckdb"
    with Store(path) as st:
        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": IDS, "text": TEXTS}), "text", "id", [], "mem", 0))
        encode_corpus(st, "c", model=str(tiny_bert_dir), sae=sae, config=EncodeConfig(device="cpu", keep_tokens=True))
    spans, lat = token_activations(tiny_bert_dir, sae, TEXTS[1])
    fired = (lat > 0).sum(0)
    feature = max((f for f in range(lat.shape[1]) if fired[f] >= 2), key=lambda f: (int(fired[f]), -f))
    expected = [(s, e, float(v)) for (s, e), v in zip(spans, lat[:, feature].tolist()) if v > 0]

    def no_model(*a, **k):
        raise AssertionError("the model was loaded although token rows are stored")

    monkeypatch.setattr(doc_tokens.DocTokens, "__init__", no_model)
    srv, thread = serve(path)
    try:
        api = json.loads(get(srv.server_address[1], f"/api/doc/c/plain-1?feature={feature}")[2])
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    assert api["spans_from"] == "stored tokens" and api["note"] is None
    assert [(sp["start"], sp["end"]) for sp in api["spans"]] == [(s, e) for s, e, _ in expected]
    assert [sp["value"] for sp in api["spans"]] == pytest.approx([v for *_, v in expected], rel=1e-3)

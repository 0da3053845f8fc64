"""What `sae eval` reports for document-level analyses: generic latents (per document and per run of
64 tokens) and latents whose strongest activations are function tokens or word pieces. Checked against
a plain reference computed from the same tokens by other means (sets and sorting), on hand-made codes
and on a tiny BERT with a random SAE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saeembed.encode.token_kinds import CONTENT, FUNCTION, PIECE, token_kinds
from saeembed.sae.doc_measures import RUN, TOP, DocMeasures

from tests.conftest import make_sae


def reference(z: np.ndarray, doc: np.ndarray, pos: np.ndarray, kind: np.ndarray) -> dict:
    """The measures straight from their definitions, one latent at a time."""
    d_sae = z.shape[1]
    docs = sorted(set(doc.tolist()))
    runs = sorted(set(zip(doc.tolist(), (pos // RUN).tolist())))
    live = [f for f in range(d_sae) if (z[:, f] > 0).any()]
    out = {"documents": len(docs), "runs": len(runs), "live": len(live), "generic_docs": 0, "generic_runs": 0,
           "function": 0, "piece": 0, "either": 0}
    for f in live:
        on = z[:, f] > 0
        if len({d for d, o in zip(doc, on) if o}) > 0.5 * len(docs):
            out["generic_docs"] += 1
        if len({(d, p // RUN) for d, p, o in zip(doc, pos, on) if o}) > 0.5 * len(runs):
            out["generic_runs"] += 1
        idx = np.flatnonzero(on)
        strongest = idx[np.argsort(-z[idx, f], kind="stable")][:TOP]
        k = kind[strongest]
        out["function"] += int((k == FUNCTION).sum() > len(k) / 2)
        out["piece"] += int((k == PIECE).sum() > len(k) / 2)
        out["either"] += int(((k == FUNCTION) | (k == PIECE)).sum() > len(k) / 2)
    for key in ("generic_docs", "generic_runs", "function", "piece", "either"):
        out[key] /= len(live)
    return out


def as_dict(q) -> dict:
    return {"documents": q.documents, "runs": q.runs, "live": q.live, "generic_docs": q.generic_docs,
            "generic_runs": q.generic_runs, "function": q.function, "piece": q.piece, "either": q.function_or_piece}


def test_measures_match_their_definitions_on_hand_made_codes():
    rng = np.random.default_rng(0)
    d_sae = 40
    # 3 chunks of documents of 5 to 300 tokens; each chunk's tokens arrive in shuffled batches (as
    # windows of one chunk are batched by length), cut into slices as evaluate_sae cuts them
    metas, zs = [], []
    first = 0
    for chunk in range(3):
        lengths = rng.integers(5, 300, size=6)
        doc = np.concatenate([np.full(n, first + i) for i, n in enumerate(lengths)])
        pos = np.concatenate([np.arange(n) for n in lengths])
        first += len(lengths)
        order = rng.permutation(len(doc))
        doc, pos = doc[order], pos[order]
        kind = rng.choice([CONTENT, FUNCTION, PIECE], size=len(doc), p=[0.5, 0.3, 0.2]).astype(np.int8)
        # latent f fires with probability rising in f: some fire almost everywhere, some rarely
        p_fire = np.geomspace(0.001, 0.3, d_sae)
        z = (rng.random((len(doc), d_sae)) < p_fire) * rng.gamma(2.0, 1.0, size=(len(doc), d_sae))
        z[kind == FUNCTION, -10:-5] *= 3  # five latents strongest on function tokens
        z[kind == PIECE, -5:] *= 3  # five on pieces
        for cut in np.array_split(np.arange(len(doc)), 4):
            metas.append((doc[cut], pos[cut], kind[cut], chunk))
            zs.append(z[cut].astype(np.float32))
    m = DocMeasures(d_sae)
    for (doc, pos, kind, chunk), z in zip(metas, zs):
        m.expect(doc, pos, kind, chunk)
        for part in np.array_split(np.arange(len(doc)), 3):  # several observe calls per batch
            m.observe(torch.from_numpy(z[part]))
    got = as_dict(m.result())
    want = reference(np.concatenate(zs), *(np.concatenate([x[i] for x in metas]) for i in range(3)))
    assert got["documents"] == want["documents"] == 18
    assert got == pytest.approx(want)
    # the planted kinds are found, and the measures are not trivially 0 or 1
    assert 0 < got["generic_runs"] < 1 and 0 < got["function"] < 1 and 0 < got["piece"] < 1
    assert got["generic_runs"] != got["generic_docs"]


def test_token_kinds_judge_the_characters_of_the_text():
    text = "The dehydration, said Bob. It's theory!"
    spans = [(0, 3), (4, 6), (6, 8), (8, 15), (15, 16), (17, 21), (22, 25), (25, 26), (27, 29), (29, 30),
             (30, 31), (32, 38), (38, 39)]
    kinds = token_kinds(text, np.array(spans))
    got = {text[s:e]: int(k) for (s, e), k in zip(spans, kinds)}
    assert got == {"The": FUNCTION, "de": PIECE, "hy": PIECE, "dration": PIECE, ",": FUNCTION, "said": CONTENT,
                   "Bob": CONTENT, ".": FUNCTION, "It": FUNCTION, "'": FUNCTION, "s": CONTENT, "theory": CONTENT,
                   "!": FUNCTION}


def test_eval_on_a_tiny_model_reports_what_its_tokens_give(tiny_bert_dir):
    from saeembed.encode.activations import iter_activations, iter_token_batches
    from saeembed.encode.models import load_model
    from saeembed.sae.recipe import evaluate_on_texts

    loaded = load_model(str(tiny_bert_dir), device="cpu")
    words = "the cat sat on my mat and the dog was not very good but this price is great".split()
    rng = np.random.default_rng(1)
    # long documents cross the tiny model's 64-token windows and the 64-token runs
    texts = [" ".join(rng.choice(words, size=int(n))) + "." for n in rng.integers(3, 150, size=40)]
    sae = make_sae(32, 48, k=6)
    kw = dict(window=16, docs_per_chunk=7)
    tb = list(iter_token_batches(loaded, "layers.1", texts, **kw))
    # the plain stream is the same tokens
    plain = torch.cat(list(iter_activations(loaded, "layers.1", texts, **kw)))
    assert torch.equal(plain, torch.cat([b.x for b in tb]))
    doc, pos, kind = (np.concatenate([getattr(b, a) for b in tb]) for a in ("doc", "pos", "kind"))
    # every document's tokens are numbered 0..n-1 once, and their kinds are those of its own text
    for d in range(len(texts)):
        p = np.sort(pos[doc == d])
        assert p.tolist() == list(range(len(p))) and len(p) > 0
    enc = loaded.tokenizer(texts[5], return_offsets_mapping=True, add_special_tokens=False)
    assert kind[doc == 5][np.argsort(pos[doc == 5])].tolist() == token_kinds(
        texts[5], np.array(enc["offset_mapping"])).tolist()
    assert {int(k) for k in kind} == {CONTENT, FUNCTION}  # "the", "." … and whole words; no pieces here

    q = evaluate_on_texts(sae, loaded, "layers.1", texts, max_tokens=None)
    full = list(iter_token_batches(loaded, "layers.1", texts))  # the model's own window, as eval reads
    with torch.inference_mode():
        z = torch.cat([sae.encode(b.x) for b in full]).numpy()
    want = reference(z, *(np.concatenate([getattr(b, a) for b in full]) for a in ("doc", "pos", "kind")))
    assert as_dict(q.documents) == pytest.approx(want)
    assert want["runs"] > want["documents"] == len(texts)
    assert q.to_dict()["documents"]["generic_share_runs"] == pytest.approx(want["generic_runs"])

"""kill -9 during an `encode --keep-tokens`, then a re-run: the same document rows and token rows as an
uninterrupted encode (token shards are registered with their documents, so none is half counted)."""

import json
import random

import pytest

from saeembed.sae.formats import save_sae
from saeembed.store import Store
from tests.conftest import CORPUS_WORDS, make_sae
from tests.faultkit import differences, pause_at, run_and_kill, snapshot

N_DOCS = 160


def _ingest(data, store):
    from saeembed.documents import ingest

    with Store(store) as st:
        ingest(st, data, corpus="c")


def _args(p, store, shards):
    return ["encode", "c", "--model", p["model"], "--sae", p["sae"], "--store", store, "--device", "cpu",
            "--chunk-docs", "8", "--shards", shards, "--shard-docs", "24", "--keep-tokens", "--quiet"]


def _encode_here(p, store, shards):
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus

    cfg = EncodeConfig(device="cpu", chunk_docs=8, shards=shards, shard_docs=24, keep_tokens=True)
    with Store(store) as st:
        encode_corpus(st, "c", model=str(p["model"]), sae=str(p["sae"]), config=cfg)


def _tokens(store):
    with Store(store, read_only=True) as st:
        info = st.corpus("c")
        return st.token_rows(info, st.encoded_sae(info))


@pytest.mark.parametrize("shards", ["off", "on"])
def test_kill_9_during_keep_tokens_encode_resumes_exactly(tmp_path, tiny_bert_dir, shards):
    rng = random.Random(11)
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(rng.choices(CORPUS_WORDS, k=rng.randint(5, 60)))}) + "\n"
                            for _ in range(N_DOCS)))
    p = {"model": tiny_bert_dir, "sae": save_sae(make_sae(32, 64, hook="layers.1", model=str(tiny_bert_dir)),
                                                 tmp_path / "sae")}
    ref = tmp_path / "ref.duckdb"
    _ingest(data, ref)
    _encode_here(p, ref, shards)
    store = tmp_path / "s.duckdb"
    _ingest(data, store)
    # killed at a named point, whatever the machine's speed: as the 5th chunk's token rows are about to be
    # written (4 chunks of 8 documents done; with shards on, one shard of 24 registered, 8 pending)
    mark = tmp_path / "mark"
    killed, _ = run_and_kill(_args(p, store, shards), 0.0, armed=mark.exists,
                             pause=pause_at("saeembed.encode.token_rows:save_token_rows", 5, mark))
    with Store(store) as st:
        done = st.query("SELECT count(*) AS n FROM encoded_docs")["n"][0]
    assert killed and mark.exists() and 0 < done < N_DOCS, done
    _encode_here(p, store, shards)
    assert differences(snapshot(ref, "c"), snapshot(store, "c")) == []
    assert _tokens(ref).equals(_tokens(store))

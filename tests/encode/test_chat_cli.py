"""`saeembed encode --messages-column/--roles` as a user runs it: one clear line for bad input, nothing written."""

import json

import polars as pl

from saeembed.sae.formats import save_sae
from saeembed.store import Store
from tests.conftest import make_sae
from tests.encode import test_chat
from tests.encode.test_chat import CONVERSATIONS, _transcript
from tests.test_cli import run

chat_model_dir = test_chat.chat_model_dir  # the tiny chat model fixture, shared


def _setup(tmp_path, chat_model_dir, bad=None):
    rows = [{"id": k, "text": _transcript(v), "messages": v} for k, v in CONVERSATIONS.items()]
    if bad is not None:
        rows.append({"id": "broken", "text": "user: hi", "messages": bad})
    data = tmp_path / "chats.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    sae = save_sae(make_sae(32, 48, architecture="relu", seed=5, hook="layers.1", model=str(chat_model_dir)),
                   tmp_path / "sae")
    return data, sae, tmp_path / "p.duckdb"


def test_encode_messages_from_the_command_line(capsys, monkeypatch, tmp_path, chat_model_dir):
    data, sae, store = _setup(tmp_path, chat_model_dir)
    assert run(capsys, monkeypatch, "ingest", data, "--corpus", "chats", "--id-column", "id", "--store", store)[0] == 0
    code, out, err = run(capsys, monkeypatch, "encode", "chats", "--sae", sae, "--messages-column", "messages",
                         "--roles", "user", "--roles", "system", "--store", store, "--json", "--device", "cpu")
    assert code == 0, err
    res = json.loads(out)
    users = [t["content"] for v in CONVERSATIONS.values() for t in v if t["role"] in ("user", "system")]
    assert res["docs_encoded"] == 3 and 0 < res["tokens"] <= sum(len(u.split()) * 3 for u in users)
    with Store(store, read_only=True) as st:
        rows = st.documents("chats", metadata=False).join(
            st.query("SELECT doc_idx, span_start, span_end FROM activations"), on="doc_idx")
    for text, s, e in rows.select("text", "span_start", "span_end").iter_rows():
        assert any(text[s:e] in u for u in users)  # highlights fall on user/system words only
    # resuming with other roles is refused rather than mixing rows pooled two ways
    code, _, err = run(capsys, monkeypatch, "encode", "chats", "--sae", sae, "--messages-column", "messages",
                       "--store", store, "--device", "cpu")
    assert code != 0 and "roles" in err and len(err.strip().splitlines()) == 1


def test_bad_input_is_one_line_and_writes_nothing(capsys, monkeypatch, tmp_path, chat_model_dir, tiny_bert_dir):
    data, sae, store = _setup(tmp_path, chat_model_dir, bad=[{"role": "user", "text": "no content key"}])
    assert run(capsys, monkeypatch, "ingest", data, "--corpus", "chats", "--id-column", "id", "--store", store)[0] == 0
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(data.read_text().splitlines()[:3]) + "\n")
    assert run(capsys, monkeypatch, "ingest", good, "--corpus", "good", "--id-column", "id", "--store", store)[0] == 0
    cases = [("chats", ["--roles", "assistant"], "document 'broken': column 'messages': turn 1 is not an object"),
             ("good", ["--roles", "assistant,tool"], "--roles tool: no turn of corpus 'good' has that role"),
             ("good", ["--roles", "system"], "document 'b' has no turn with role system"),
             ("good", ["--messages-column", "text"], "document 'a': column 'text' is not JSON"),
             ("good", ["--model", tiny_bert_dir], "tokenizer has no chat template")]
    for corpus, extra, words in cases:
        code, _, err = run(capsys, monkeypatch, "encode", corpus, "--sae", sae, "--messages-column", "messages",
                           *extra, "--store", store, "--device", "cpu")
        assert code != 0 and words in err and len(err.strip().splitlines()) == 1, err
    with Store(store, read_only=True) as st:
        for table in ("encodings", "encoded_docs", "activations"):
            assert st.query(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0, table
    assert pl.read_ndjson(data).height == 4


def test_conversation_ingested_as_the_text(capsys, monkeypatch, tmp_path, chat_model_dir):
    """The README's path: ingest the conversation as the text; highlights land on assistant words in its JSON."""
    data, sae, store = _setup(tmp_path, chat_model_dir)
    code, _, err = run(capsys, monkeypatch, "ingest", data, "--corpus", "chats", "--id-column", "id",
                       "--text-column", "messages", "--drop-column", "text", "--store", store)
    assert code == 0, err
    code, out, err = run(capsys, monkeypatch, "encode", "chats", "--sae", sae, "--messages-column", "messages",
                         "--store", store, "--json", "--device", "cpu")
    assert code == 0, err
    answers = [t["content"] for v in CONVERSATIONS.values() for t in v if t["role"] == "assistant"]
    with Store(store, read_only=True) as st:
        rows = st.documents("chats", metadata=False).join(
            st.query("SELECT doc_idx, span_start, span_end FROM activations"), on="doc_idx")
    assert rows.height > 10
    for text, s, e in rows.select("text", "span_start", "span_end").iter_rows():
        assert any(json.loads('"' + text[s:e] + '"') in a for a in answers)

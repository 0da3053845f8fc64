"""Multi-turn chat encoding (--messages-column, --roles) on a tiny Llama whose tokenizer is given a chat
template in the test; every pooled number is checked against an independent forward pass + SAE."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from saeembed.config import EncodeConfig
from saeembed.documents import ingest
from saeembed.encode.capture import ActivationCapture
from saeembed.encode.chat import check_messages, chats_of, make_chat, render
from saeembed.encode.chunk import chat_inputs, encode_chunk
from saeembed.encode.models import load_model
from saeembed.errors import InputError, ModelError
from tests.conftest import CORPUS_WORDS, make_sae

TEMPLATE = "{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|end|>\n{% endfor %}"

CONVERSATIONS = {
    "a": [{"role": "system", "content": "be good"},
          {"role": "user", "content": "my order was late"},
          {"role": "assistant", "content": "please help with the refund"},
          {"role": "user", "content": "thanks"},
          {"role": "assistant", "content": "the price was not bad and the battery was great"}],
    "b": [{"role": "user", "content": "hello world"},
          {"role": "assistant", "content": "the quick brown fox\njumps over the lazy dog"}],
    "c": [{"role": "user", "content": 'caf\u00e9 "quoted" text'},
          {"role": "assistant", "content": "  great sound \u00e9t\u00e9, five stars \U0001F600  "}],
}


def _transcript(turns):
    return "\n\n".join(f"{t['role']}: {t['content'].strip()}" for t in turns)


def _rendered(tok, turns):
    """The template rendered by hand, with each turn's content range."""
    text, ranges = tok.bos_token, []
    for t in turns:
        text += f"<|start|>{t['role']}\n"
        body = t["content"].strip()
        ranges.append((t["role"], len(text), len(text) + len(body)))
        text += body + "<|end|>\n"
    return text, ranges


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|start|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(CORPUS_WORDS + ["system", "user", "assistant"])] * 20, trainer)
    t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                additional_special_tokens=["<|start|>", "<|end|>"], model_max_length=128)
    t.chat_template = TEMPLATE
    cfg = LlamaConfig(vocab_size=len(t), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=t.bos_token_id, eos_token_id=t.eos_token_id)
    path = tmp_path_factory.mktemp("tiny_chat")
    LlamaModel(cfg).save_pretrained(path)
    t.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def loaded(chat_model_dir):
    return load_model(chat_model_dir, device="cpu")


@pytest.fixture(scope="module")
def sae():
    return make_sae(32, 48, architecture="relu", seed=5)


def _ingest(store, tmp_path, name, *, fmt="parquet", text_column="text", messages_as="struct"):
    rows = [{"id": k, "text": _transcript(v),
             "messages": json.dumps(v, ensure_ascii=False) if messages_as == "json" else v, "tag": k}
            for k, v in CONVERSATIONS.items()]
    if text_column != "text":  # the conversation is the text: no other text column
        rows = [{k: v for k, v in r.items() if k != "text"} for r in rows]
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "parquet":
        pl.DataFrame(rows).write_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    ingest(store, path, corpus=name, text_column=text_column, id_column="id")
    return store.corpus(name)


def _encode(store, info, loaded, sae, cfg, window=128):
    idx = list(range(info.n_docs))
    texts = store.documents(info, metadata=False)["text"].to_list()
    check_messages(store, info, cfg)
    with ActivationCapture(loaded, "layers.1") as cap:
        rows, docs = encode_chunk(loaded, cap, sae, texts, cfg, window, chat_inputs(store, info, cfg, idx))
    ids = store.documents(info, metadata=False)["doc_id"].to_list()
    return rows.with_columns(pl.Series("doc_id", [ids[i] for i in rows["doc_idx"]])), docs


@torch.no_grad()
def _manual(loaded, sae, turns, roles, window=128):
    """Independent: render by hand, run plain HF windows, keep the chosen turns' tokens, ReLU SAE, max-pool."""
    from transformers import AutoModel

    tok = loaded.tokenizer
    model = _manual.models.setdefault(id(loaded), AutoModel.from_pretrained(loaded.name).eval())
    text, ranges = _rendered(tok, turns)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = enc["input_ids"], enc["offset_mapping"]
    chosen = [(s, e) for r, s, e in ranges if "all" in roles or r in roles]
    keep = [any(s <= a and b <= e and b > a for s, e in chosen) and i not in tok.all_special_ids
            for i, (a, b) in zip(ids, offs)]
    zs = []
    for w in range(0, len(ids), window):
        h = model(torch.tensor([ids[w: w + window]]), output_hidden_states=True).hidden_states[2][0]
        sel = torch.tensor(keep[w: w + window])
        zs.append(torch.relu(h[sel] @ sae.W_enc + sae.b_enc))
    z = torch.cat(zs)
    return z.max(0).values, (z > 0).sum(0), int(sum(keep))


_manual.models = {}


def _check_against_manual(rows, docs, loaded, sae, roles, window=128):
    for i, (doc, turns) in enumerate(CONVERSATIONS.items()):
        expect_max, expect_count, n = _manual(loaded, sae, turns, roles, window)
        mine = rows.filter(pl.col("doc_id") == doc).sort("feature")
        feats = mine["feature"].to_numpy()
        assert set(feats) == set(torch.nonzero(expect_count).flatten().tolist())
        np.testing.assert_allclose(mine["value"].to_numpy(), expect_max[feats.copy()].numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(mine["active_tokens"].to_numpy(), expect_count[feats.copy()].numpy())
        assert docs["n_tokens"][i] == n


@pytest.mark.parametrize("roles", [("assistant",), ("all",), ("user",)])
def test_pooled_features_equal_manual_computation(store, tmp_path, loaded, sae, roles):
    info = _ingest(store, tmp_path, "chats")
    cfg = EncodeConfig(messages_column="messages", roles=roles)
    rows, docs = _encode(store, info, loaded, sae, cfg)
    _check_against_manual(rows, docs, loaded, sae, roles)
    # spans point into the stored text (the transcript), inside a chosen turn's content
    texts = dict(zip(*store.documents(info, metadata=False).select("doc_id", "text").to_dict().values()))
    for doc, s, e in rows.select("doc_id", "span_start", "span_end").iter_rows():
        text, turns = texts[doc], CONVERSATIONS[doc]
        bodies = [t["content"].strip() for t in turns if roles == ("all",) or t["role"] in roles]
        inside = [(text.index(b), text.index(b) + len(b)) for b in bodies]
        assert e > s and any(a <= s and e <= b for a, b in inside), (doc, text[s:e])


def test_roles_all_against_assistant(store, tmp_path, loaded, sae):
    info = _ingest(store, tmp_path, "chats")
    out = {r: _encode(store, info, loaded, sae, EncodeConfig(messages_column="messages", roles=(r,)))
           for r in ("assistant", "user", "system,user", "all")}
    n = {r: out[r][1]["n_tokens"].to_numpy() for r in out}
    np.testing.assert_array_equal(n["all"], n["assistant"] + n["system,user"])  # no template token anywhere
    assert (n["assistant"] > 0).all() and n["system,user"][0] > n["user"][0]
    both = out["all"][0].join(out["assistant"][0], on=["doc_id", "feature"], how="left", suffix="_a")
    assert (both["value"] >= both["value_a"].fill_null(0) - 1e-6).all()  # all ⊇ assistant: max can only grow
    assert both["value_a"].null_count() > 0  # features only the user/system turns bring
    assert not out["all"][0].sort("doc_id", "feature").equals(out["assistant"][0].sort("doc_id", "feature"))


def test_template_tokens_never_pooled(store, tmp_path, loaded, sae):
    info = _ingest(store, tmp_path, "chats")
    cfg = EncodeConfig(messages_column="messages", roles=("all",), exclude_special=False)  # even with --keep-special
    _, docs = _encode(store, info, loaded, sae, cfg)
    tok = loaded.tokenizer
    for i, turns in enumerate(CONVERSATIONS.values()):
        bodies = sum(len(tok(t["content"].strip(), add_special_tokens=False)["input_ids"]) for t in turns)
        assert docs["n_tokens"][i] == bodies  # only content tokens: no <s>, <|start|>, role names, newlines


def test_long_conversation_split_across_windows(store, tmp_path, loaded, sae):
    info = _ingest(store, tmp_path, "chats")
    cfg = EncodeConfig(messages_column="messages", roles=("assistant",))
    rows, docs = _encode(store, info, loaded, sae, cfg, window=8)
    assert docs["n_windows"][0] > 3  # turns are cut across windows and each part pooled
    _check_against_manual(rows, docs, loaded, sae, ("assistant",), window=8)


def test_json_text_and_list_of_struct_columns_give_the_same_rows(store, tmp_path, loaded, sae):
    cfg = EncodeConfig(messages_column="messages", roles=("all",))
    struct = _encode(store, _ingest(store, tmp_path, "s", fmt="parquet"), loaded, sae, cfg)[0]
    as_json = _encode(store, _ingest(store, tmp_path, "j", fmt="jsonl", messages_as="json"), loaded, sae, cfg)[0]
    as_list = _encode(store, _ingest(store, tmp_path, "l", fmt="jsonl"), loaded, sae, cfg)[0]
    key = ["doc_id", "feature"]
    assert struct.height > 30
    assert struct.drop("doc_idx").sort(key).equals(as_json.drop("doc_idx").sort(key))
    assert struct.drop("doc_idx").sort(key).equals(as_list.drop("doc_idx").sort(key))


def test_conversation_as_the_text_column_maps_spans_into_its_json(store, tmp_path, loaded, sae):
    cfg = EncodeConfig(messages_column="messages", roles=("assistant",))
    meta = _encode(store, _ingest(store, tmp_path, "m"), loaded, sae, cfg)[0]
    info = _ingest(store, tmp_path, "t", text_column="messages")
    rows = _encode(store, info, loaded, sae, cfg)[0]
    key = ["doc_id", "feature"]
    cols = ["doc_id", "feature", "value", "active_tokens"]
    assert rows.select(cols).sort(key).equals(meta.select(cols).sort(key))
    texts = dict(zip(*store.documents(info, metadata=False).select("doc_id", "text").to_dict().values()))
    meta_texts = {d: _transcript(v) for d, v in CONVERSATIONS.items()}
    for (doc, s, e), (_, ms, me) in zip(rows.sort(key).select("doc_id", "span_start", "span_end").iter_rows(),
                                        meta.sort(key).select("doc_id", "span_start", "span_end").iter_rows()):
        shown = json.loads('"' + texts[doc][s:e] + '"')  # the characters of the JSON string, escapes and all
        assert shown == meta_texts[doc][ms:me] and shown


def test_json_spans_cover_escapes_exactly():
    turns = [{"role": "user", "content": "x"}, {"role": "assistant", "content": ' a"b\\c\n\u00e9\U0001F600 '}]
    text = json.dumps(turns)  # ASCII escapes, surrogate pair included
    chat = make_chat("d1", text, text, column="text", roles=("assistant",), in_text=True)
    places = chat.places[1]
    body = turns[1]["content"].strip()
    assert len(places) == len(body)
    assert [json.loads('"' + text[s:e] + '"') for s, e in places] == list(body)


def test_bad_conversations_name_the_document(store, tmp_path):
    def corpus(name, value, text="user: hi\n\nassistant: yo"):
        path = tmp_path / f"{name}.jsonl"
        rows = [{"id": "ok", "text": text, "messages": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "yo"}]},
                {"id": "bad1", "text": text, "messages": value}]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        ingest(store, path, corpus=name, id_column="id")
        return store.corpus(name)

    def error(info, **kw):
        with pytest.raises(InputError) as e:
            check_messages(store, info, EncodeConfig(messages_column="messages", **kw))
        return str(e.value)

    assert "'bad1': column 'messages' is a JSON object, not a list" in error(corpus("c1", {"role": "user"})) and "not JSON" in error(corpus("c1b", "hello"))
    assert "'bad1'" in error(corpus("c2", [{"role": "user"}])) and "turn 1" in error(corpus("c2b", [{"content": "x"}]))
    assert "'bad1'" in error(corpus("c3", [{"role": "user", "content": "hi"}]))  # nothing of the chosen roles
    assert "'bad1'" in error(corpus("c4", [{"role": "assistant", "content": "not in the text"}]))
    ok = corpus("c5", [{"role": "assistant", "content": "yo"}])
    assert "--roles tool" in error(ok, roles=("assistant", "tool"))
    assert "--prompt-column" in error(ok, prompt_column="tag")
    with pytest.raises(InputError, match="not a column"):
        check_messages(store, ok, EncodeConfig(messages_column="convo"))
    check_messages(store, ok, EncodeConfig(messages_column="messages"))  # a good corpus passes


def test_tokenizer_without_chat_template_is_a_clear_error(loaded):
    import copy

    tok = copy.deepcopy(loaded.tokenizer)
    tok.chat_template = None
    chat = make_chat("d", [{"role": "assistant", "content": "hi"}], "hi", column="m", roles=("assistant",),
                     in_text=False)
    with pytest.raises(ModelError, match="no chat template"):
        render(tok, chat)
    assert render(loaded.tokenizer, chat).text == "<s><|start|>assistant\nhi<|end|>\n"


def test_roles_are_parsed_from_repeats_and_commas():
    from saeembed.config import parse_roles

    assert parse_roles(["user,assistant", " system "]) == ("assistant", "system", "user")
    assert parse_roles(["assistant", "all"]) == ("all",)
    with pytest.raises(InputError):
        parse_roles([","])
    params = EncodeConfig(messages_column="m", roles=("user", "assistant")).pooling_params(64)
    assert params["chat_template"] and params["roles"] == ["assistant", "user"] and params["messages_column"] == "m"


def test_chats_of_reads_the_metadata_column(store, tmp_path):
    info = _ingest(store, tmp_path, "chats")
    chats = chats_of(store, info, EncodeConfig(messages_column="messages"), [2, 0])
    assert [c.doc_id for c in chats] == ["c", "a"] and chats[1].roles[0] == "system"

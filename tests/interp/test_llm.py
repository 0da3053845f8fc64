"""The LLM client against a real HTTP server on 127.0.0.1 speaking the OpenAI chat API."""

import json

import pytest

from saeembed.interp.llm import LLMClient, LLMConfig, LLMError, MalformedAnswer, parse_json_answer
from tests.llm_server import Reply

KEY = "sk-test-SECRET-4242"


def _client(store, server, **kw):
    cfg = LLMConfig(model="test-model", base_url=server.url, api_key=KEY, backoff=0.01, max_backoff=0.05, **kw)
    return LLMClient(store, cfg)


def _msg(text):
    return [{"role": "user", "content": text}]


def test_answers_arrive_in_order_and_are_cached(store, llm_server):
    llm_server.responder = lambda body: {"echo": body["messages"][0]["content"]}
    client = _client(store, llm_server, concurrency=3)
    res = client.chat_many([_msg(f"q{i}") for i in range(7)])
    assert [r.json()["echo"] for r in res] == [f"q{i}" for i in range(7)]
    assert client.usage.calls == 7 and client.usage.prompt_tokens > 0 and client.usage.cost > 0
    assert llm_server.requests[0]["_headers"]["authorization"] == f"Bearer {KEY}"
    assert llm_server.requests[0]["response_format"] == {"type": "json_object"}
    # a second client (a re-run) makes no calls at all
    again = _client(store, llm_server)
    res2 = again.chat_many([_msg(f"q{i}") for i in range(7)])
    assert [r.json()["echo"] for r in res2] == [f"q{i}" for i in range(7)]
    assert len(llm_server.requests) == 7 and again.usage.calls == 0 and again.usage.cached == 7
    assert all(r.cached for r in res2)
    # another model is another request
    other = LLMClient(store, LLMConfig(model="other", base_url=llm_server.url, api_key=KEY))
    other.chat(_msg("q0"))
    assert len(llm_server.requests) == 8


def test_retries_429_500_and_timeout(store, llm_server):
    llm_server.push(Reply(status=429, headers={"retry-after": "0"}), Reply(status=500), Reply(status=503),
                    Reply(content='{"ok": 1}', delay=1.5), Reply(content='{"ok": 2}'))
    client = _client(store, llm_server, timeout=0.5, concurrency=1)
    res = client.chat(_msg("hello"))
    assert res.ok and res.json() == {"ok": 2}
    assert res.retries == 4 and client.usage.retries == 4 and client.usage.calls == 1
    assert len(llm_server.requests) == 5


def test_gives_up_after_max_retries_without_raising(store, llm_server):
    llm_server.push(*[Reply(status=500)] * 3)
    client = _client(store, llm_server, max_retries=2)
    res = client.chat(_msg("x"))
    assert not res.ok and "500" in res.error and res.retries == 2 and client.usage.failed == 1
    # a failure is not cached: the next run asks again
    llm_server.push(Reply(content='{"fine": true}'))
    assert _client(store, llm_server).chat(_msg("x")).json() == {"fine": True}


def test_malformed_answers_are_failed_items_not_crashes(store, llm_server):
    llm_server.push(Reply(content="Sure! Here is the label: dates"),
                    Reply(content='```json\n{"label": "dates"}\n```'),
                    Reply(raw=b"this is not a chat completion"))
    client = _client(store, llm_server, concurrency=1, max_retries=0)
    res = client.chat_many([_msg("a"), _msg("b"), _msg("c")])
    with pytest.raises(MalformedAnswer):
        res[0].json()
    assert res[1].json() == {"label": "dates"}
    assert not res[2].ok and "unreadable" in res[2].error and client.usage.failed == 1
    with pytest.raises(MalformedAnswer):
        res[2].json()


def test_budget_max_calls_stops_cleanly(store, llm_server):
    llm_server.responder = lambda body: {"n": 1}
    client = _client(store, llm_server, max_calls=3, concurrency=2)
    res = client.chat_many([_msg(f"q{i}") for i in range(6)])
    assert sum(r.ok for r in res) == 3 and sum(r.budget for r in res) == 3
    assert len(llm_server.requests) == 3 and client.stopped and client.usage.budget_stopped
    assert all(r.budget for r in client.chat_many([_msg("later")]))


def test_budget_max_cost(store, llm_server):
    llm_server.responder = lambda body: Reply(content='{"n": 1}', usage=(1_000_000, 0))
    client = _client(store, llm_server, max_cost=2.5, price_in=1.0, price_out=1.0, concurrency=1)
    res = client.chat_many([_msg(f"q{i}") for i in range(5)])
    # each call costs $1: the third would be allowed at $2 spent only if its estimate fits ($2 + small)
    assert sum(r.ok for r in res) == 3 and client.usage.cost == pytest.approx(3.0)
    assert len(llm_server.requests) == 3


def test_key_never_in_store_file(tmp_path, llm_server):
    from saeembed.store import Store

    llm_server.responder = lambda body: {"a": 1}
    path = tmp_path / "k.duckdb"
    with Store(path) as st:
        _client(st, llm_server).chat_many([_msg("q1"), _msg("q2")])
        assert st.query("SELECT count(*) AS n FROM llm_cache")["n"][0] == 2
    assert KEY.encode() not in path.read_bytes()


def test_key_from_environment_and_refused_key(store, llm_server, monkeypatch):
    monkeypatch.setenv("SAEEMBED_LLM_KEY", "sk-env-key")
    llm_server.push(Reply(status=401))
    client = LLMClient(store, LLMConfig(model="m", base_url=llm_server.url))
    with pytest.raises(LLMError, match="401"):
        client.chat(_msg("x"))
    assert llm_server.requests[0]["_headers"]["authorization"] == "Bearer sk-env-key"


def test_key_from_the_os_keyring_when_the_environment_has_none(store, llm_server, monkeypatch):
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend

    class MemoryKeyring(KeyringBackend):  # a real keyring backend, kept in memory for the test
        priority = 1
        secrets = {("saeembed", "llm"): "sk-from-keyring"}

        def get_password(self, service, username):
            return self.secrets.get((service, username))

        def set_password(self, service, username, password):
            self.secrets[(service, username)] = password

        def delete_password(self, service, username):
            self.secrets.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        for name in ("SAEEMBED_LLM_KEY", "OPENAI_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        llm_server.responder = lambda body: {"a": 1}
        LLMClient(store, LLMConfig(model="m", base_url=llm_server.url)).chat(_msg("x"))
        assert llm_server.requests[0]["_headers"]["authorization"] == "Bearer sk-from-keyring"
        monkeypatch.setenv("SAEEMBED_LLM_KEY", "sk-env-wins")  # the environment comes first
        LLMClient(store, LLMConfig(model="m", base_url=llm_server.url)).chat(_msg("y"))
        assert llm_server.requests[1]["_headers"]["authorization"] == "Bearer sk-env-wins"
    finally:
        keyring.set_keyring(previous)


def test_server_without_json_mode(store, llm_server):
    llm_server.push(Reply(status=400, raw=json.dumps({"error": {"message": "response_format is not supported"}}).encode()),
                    Reply(content='{"x": 1}'))
    res = _client(store, llm_server).chat(_msg("x"))
    assert res.json() == {"x": 1} and "response_format" not in llm_server.requests[1]


def test_parse_json_answer():
    assert parse_json_answer('Answer: {"a": [1, 2]} done') == {"a": [1, 2]}
    with pytest.raises(MalformedAnswer):
        parse_json_answer("[1, 2]")
    with pytest.raises(MalformedAnswer):
        parse_json_answer("{broken")

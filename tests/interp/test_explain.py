"""The LLM labeller end to end against the scripted OpenAI-compatible server on 127.0.0.1."""

import json
import re


from saeembed.interp.labels import LabelConfig, label_features
from saeembed.interp.llm import LLMClient, LLMConfig
from tests.interp.planted import planted_store
from tests.llm_server import Reply

KEY = "sk-live-DO-NOT-STORE-777"
PLANTED = ("covid", "pandemic")


def smart_judge(body):
    """Answers like a judge that knows feature 3 is about covid: explain -> a label; detection -> 1 for
    excerpts mentioning covid; fuzzing -> 1 when the marked span is a covid word."""
    text = body["messages"][-1]["content"]
    if '{"answers"' not in text:
        return {"label": "covid pandemic", "description": "mentions of covid or the pandemic"}
    lines = re.findall(r"^\d+\. (.*)$", text, re.M)
    if "marked <<like this>>" in text:
        marked = [re.search(r"<<(.*?)>>", ln).group(1).lower() for ln in lines]
        return {"answers": [int(m in PLANTED) for m in marked]}
    return {"answers": [int(any(w in ln.lower() for w in PLANTED)) for ln in lines]}


def _client(store, server, **kw):
    return LLMClient(store, LLMConfig(model="judge", base_url=server.url, api_key=KEY, backoff=0.01,
                                      max_backoff=0.02, **kw))


def test_llm_labels_scored_by_detection_and_fuzzing(store, llm_server):
    planted_store(store)
    llm_server.responder = smart_judge
    client = _client(store, llm_server)
    run = label_features(store, [3], llm=client)
    row = run.frame.row(0, named=True)
    assert row["status"] == "ok" and row["label"] == "covid pandemic" and row["label_source"] == "llm"
    assert row["detection"] == 1.0 and row["fuzzing"] == 1.0 and row["score"] == 1.0
    explain = [r for r in llm_server.requests if '{"answers"' not in r["messages"][-1]["content"]]
    assert len(explain) == 1
    system, prompt = explain[0]["messages"][0], explain[0]["messages"][-1]["content"]
    assert system["role"] == "system" and "never follow them" in system["content"]
    assert prompt.count("<<") >= 10 and "does NOT fire" in prompt and "<examples>" in prompt
    # held-out scoring texts never appear in the explain prompt
    details = json.loads(store.query("SELECT details FROM feature_labels")["details"][0])
    assert not {tuple(k) for k in details["explain_examples"]} & {tuple(k) for k in details["score_examples"]}
    texts = store.documents("planted", doc_idx=[d for _, d in details["score_examples"]])["text"].to_list()
    n_calls = len(llm_server.requests)
    assert n_calls == client.usage.calls and run.usage["prompt_tokens"] > 0
    # re-run: everything comes from the cache
    again = _client(store, llm_server)
    run2 = label_features(store, [3], llm=again)
    assert len(llm_server.requests) == n_calls and again.usage.calls == 0 and run2.frame["score"][0] == 1.0
    assert texts  # (the score docs exist)


def test_a_judge_that_says_yes_to_everything_scores_chance(store, llm_server):
    planted_store(store)

    def yes(body):
        text = body["messages"][-1]["content"]
        if '{"answers"' not in text:
            return {"label": "anything", "description": "anything"}
        return {"answers": [1] * int(re.search(r"list of (\d+) integers", text).group(1))}

    llm_server.responder = yes
    run = label_features(store, [3], llm=_client(store, llm_server))
    assert run.frame["detection"][0] == 0.5 and run.frame["fuzzing"][0] == 0.5


def test_malformed_answer_fails_one_feature_not_the_run(store, llm_server):
    planted_store(store)

    def judge(body):
        text = body["messages"][-1]["content"]
        if '{"answers"' not in text and re.search(r"<<\d{4}>>", text):  # feature 5's explain prompt
            return "I think this feature is about years."  # not JSON
        return smart_judge(body)

    llm_server.responder = judge
    run = label_features(store, [3, 5], llm=_client(store, llm_server))
    rows = {r["feature"]: r for r in run.frame.to_dicts()}
    assert rows[3]["status"] == "ok" and rows[5]["status"].startswith("failed") and rows[5]["label"] is None
    assert store.labels(1)["feature"].to_list() == [3]


def test_retries_then_labels(store, llm_server):
    planted_store(store)
    llm_server.push(Reply(status=429), Reply(status=500))
    llm_server.responder = smart_judge
    client = _client(store, llm_server, concurrency=1)
    run = label_features(store, [3], llm=client)
    assert run.frame["status"][0] == "ok" and client.usage.retries == 2


def test_budget_stops_cleanly(store, llm_server):
    planted_store(store)
    llm_server.responder = smart_judge
    client = _client(store, llm_server, max_calls=3)
    run = label_features(store, [3, 5], llm=client, config=LabelConfig(chunk=1))
    statuses = run.frame["status"].to_list()
    assert run.budget_stopped and all(s.startswith("skipped") for s in statuses)
    assert len(llm_server.requests) == 3 and store.labels(1).is_empty()


def test_relabel_below_threshold_keeps_the_better_label(store, llm_server):
    planted_store(store)
    state = {"explains": 0}

    def judge(body):
        text = body["messages"][-1]["content"]
        if '{"answers"' not in text:
            state["explains"] += 1
            if state["explains"] == 1:
                return {"label": "vague", "description": "vague"}
            return {"label": "covid pandemic", "description": "mentions of covid or the pandemic"}
        if "vague" in text:
            n = int(re.search(r"list of (\d+) integers", text).group(1))
            return {"answers": [1] * n}
        return smart_judge(body)

    llm_server.responder = judge
    run = label_features(store, [3], llm=_client(store, llm_server), config=LabelConfig(relabel_below=0.8))
    assert state["explains"] == 2 and run.frame["label"][0] == "covid pandemic" and run.frame["score"][0] == 1.0
    second = [r for r in llm_server.requests if len(r["messages"]) == 4]  # system, user, assistant, user
    assert second and "scored 0.50" in second[0]["messages"][-1]["content"]


def test_key_absent_from_store_file(tmp_path, llm_server):
    from saeembed.store import Store

    path = tmp_path / "s.duckdb"
    with Store(path) as st:
        planted_store(st)
        llm_server.responder = smart_judge
        label_features(st, [3], llm=_client(st, llm_server))
        assert st.query("SELECT count(*) AS n FROM llm_cache")["n"][0] > 0
    assert KEY.encode() not in path.read_bytes()
    assert all(r["_headers"]["authorization"] == f"Bearer {KEY}" for r in llm_server.requests)

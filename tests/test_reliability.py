"""Faults: kill -9 at random moments (encode, sharded encode, SAE training, ingest) and at named points
(mid cross-validation of `classify train`, between two SAE checkpoints), a reader during a write, damaged
store files. The store must always open, a re-run must finish, and the result must
equal an uninterrupted run. (benchmarks/faults.py runs the same checks over many more trials.)"""

import json
import random
import shutil
import subprocess
import time

import pytest

from saeembed.errors import StoreError
from saeembed.sae.formats import save_sae
from saeembed.store import Store
from tests.conftest import CORPUS_WORDS, make_sae
from tests.llm_server import llm_server  # noqa: F401  (fixture)
from tests.faultkit import cli, cli_env, differences, pause_at, run, run_and_kill, snapshot, writing

N_DOCS = 240


def ingest(data, store):
    from saeembed.documents import ingest as do_ingest

    with Store(store) as st:
        do_ingest(st, data, corpus="c")


def encode_in_process(p, store, shards):
    """The same encode as encode_args, in this process (cheaper than a CLI subprocess)."""
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus

    cfg = EncodeConfig(device="cpu", chunk_docs=8, shards=shards, shard_docs=24)
    with Store(store) as st:
        return encode_corpus(st, "c", model=str(p["model"]), sae=str(p["sae"]), config=cfg)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_bert_dir):
    base = tmp_path_factory.mktemp("faults")
    rng = random.Random(1)
    data = base / "docs.jsonl"
    data.write_text("".join(
        json.dumps({"text": " ".join(rng.choices(CORPUS_WORDS, k=rng.randint(5, 60))), "n": i}) + "\n"
        for i in range(N_DOCS)
    ))
    sae = save_sae(make_sae(32, 64, hook="layers.1", model=str(tiny_bert_dir)), base / "sae")
    p = {"data": data, "sae": sae, "model": tiny_bert_dir, "base": base}
    for mode in ("off", "on"):  # the uninterrupted reference runs (one in the table, one in shards)
        ref = base / f"ref-{mode}.duckdb"
        ingest(data, ref)
        encode_in_process(p, ref, mode)
        p[f"ref-{mode}"] = snapshot(ref, "c")
    return p


def encode_args(p, store, shards="off"):
    return ["encode", "c", "--model", p["model"], "--sae", p["sae"], "--store", store, "--device", "cpu",
            "--chunk-docs", "8", "--shards", shards, "--shard-docs", "24", "--quiet"]


@pytest.mark.parametrize("shards", ["off", "on"])
def test_kill_9_during_encode_then_rerun_equals_uninterrupted(project, tmp_path, shards):
    rng = random.Random(7 if shards == "off" else 8)
    store = tmp_path / "s.duckdb"
    ingest(project["data"], store)
    killed_mid_run, delay, trials = 0, rng.uniform(0.0, 0.3), []
    # Kill the same encode at random moments once it writes. How fast it runs depends on the machine
    # and its load, so the delay adapts: a kill that landed before any row was kept waits longer next
    # time; an encode that finished first starts over with a shorter wait.
    for trial in range(8):
        killed, _ = run_and_kill(encode_args(project, store, shards), delay, armed=writing(store, rows=True))
        with Store(store) as st:  # always opens
            done = st.query("SELECT count(*) AS n FROM encoded_docs")["n"][0]
            assert done == st.query("SELECT count(DISTINCT doc_idx) AS n FROM encoded_docs")["n"][0]
        killed_mid_run += killed and 0 < done < N_DOCS
        trials.append((round(delay, 2), killed, done))
        if killed_mid_run >= 2 or (killed_mid_run and done == N_DOCS):
            break
        if done == N_DOCS:  # it finished before the kill: start over, and kill sooner
            for leftover in tmp_path.glob("s.duckdb*"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            ingest(project["data"], store)
            delay = rng.uniform(0.0, delay / 2)
        else:  # killed before any row was kept: wait longer; otherwise a fresh random moment
            delay = delay * 2 + 0.05 if done == 0 else rng.uniform(0.0, 0.3)
    encode_in_process(project, store, shards)  # the re-run finishes
    assert differences(project[f"ref-{shards}"], snapshot(store, "c")) == []
    if shards == "on":  # compaction also removes any file a kill left unregistered
        with Store(store) as st:
            st.compact()
            files = [f for f in st.shard_root.rglob("*") if f.is_file()]
            assert len(files) == 1 and len(st.shards()) == 1
        assert differences(project["ref-on"], snapshot(store, "c")) == []
    assert killed_mid_run >= 1, trials  # at least one kill landed while rows were being written


def test_kill_9_during_ingest_leaves_no_partial_corpus(tmp_path):
    store = tmp_path / "i.duckdb"
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(60_000)))
    for delay in (0.0, 0.3):
        run_and_kill(["ingest", big, "--corpus", "big", "--store", store], delay, armed=writing(store))
        if store.exists():
            with Store(store) as st:
                if st.has_corpus("big"):  # all or nothing
                    assert st.corpus("big").n_docs == 60_000
                    assert st.query("SELECT count(*) AS n FROM documents")["n"][0] == 60_000
                else:
                    assert st.query("SELECT count(*) AS n FROM documents")["n"][0] == 0
    from saeembed.documents import ingest as do_ingest

    with Store(store) as st:
        do_ingest(st, big, corpus="big", mode="replace")
        assert st.corpus("big").n_docs == 60_000


def test_kill_9_during_sae_training_resumes_to_the_same_weights(project, tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    from tests.test_cli import run as run_cli

    def args(out, ckpt):
        return ["sae", "train", "--model", project["model"], "--hook", "layers.1", "--data", project["data"],
                "--out", out, "--latents", "64", "--k", "4", "--batch-size", "64", "--max-tokens", "12000",
                "--checkpoint-dir", ckpt, "--checkpoint-every", "5", "--device", "cpu", "--json"]

    assert run_cli(capsys, monkeypatch, *args(tmp_path / "ref", tmp_path / "ref-ckpt"))[0] == 0
    ckpt = tmp_path / "ckpt" / "checkpoint.pt"
    killed, _ = run_and_kill(args(tmp_path / "out", tmp_path / "ckpt"), 0.3, armed=ckpt.exists)
    assert ckpt.exists()  # killed after at least one checkpoint
    code, out, err = run_cli(capsys, monkeypatch, *args(tmp_path / "out", tmp_path / "ckpt"))
    assert code == 0, err
    if killed:
        assert json.loads(out)["train_stats"]["resumed_from_step"] > 0
    ref = load_file(tmp_path / "ref" / "sae_weights.safetensors")
    got = load_file(tmp_path / "out" / "sae_weights.safetensors")
    assert ref.keys() == got.keys()
    assert all((ref[k] == got[k]).all() for k in ref)


def test_reader_during_write_gets_a_clear_busy_message_or_reads(project, tmp_path, capsys, monkeypatch):
    from tests.test_cli import run as run_cli

    store = tmp_path / "busy.duckdb"
    ingest(project["data"], store)
    writer = subprocess.Popen(cli(*encode_args(project, store)), env=cli_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        outcomes = []
        armed = writing(store)
        deadline = time.time() + 300
        while writer.poll() is None and not armed() and time.time() < deadline:
            time.sleep(0.005)  # let it take the store first (a writer that starts second is told "busy" too)
        while writer.poll() is None and time.time() < deadline:
            try:
                with Store(store, read_only=True) as st:
                    st.corpora()
                outcomes.append("read")
            except StoreError as e:
                assert "is busy" in str(e) and str(store) in str(e)
                outcomes.append("busy")
            code, _, err = run_cli(capsys, monkeypatch, "features", "--corpus", "c", "--store", store)
            assert code in (0, 1) and "Traceback" not in err
            if code == 1:
                assert "is busy" in err or "not encoded" in err
            if "busy" in outcomes:
                break
        assert "busy" in outcomes  # the reader met the writer and was told so
    finally:
        writer.wait(timeout=300)
    assert writer.returncode == 0
    assert differences(project["ref-off"], snapshot(store, "c")) == []


@pytest.mark.parametrize("damage", ["truncate", "header", "zero", "text"])
def test_damaged_store_file_is_named(project, tmp_path, damage, capsys, monkeypatch):
    from tests.test_cli import run as run_cli

    store = tmp_path / "d.duckdb"
    ingest(project["data"], store)
    data = store.read_bytes()
    if damage == "truncate":
        store.write_bytes(data[: len(data) // 3])
    elif damage == "header":
        store.write_bytes(data[:8] + bytes(4096) + data[8 + 4096:])
    elif damage == "zero":
        store.write_bytes(b"")
    else:
        store.write_text("id,text\n1,hello\n")
    damaged = store.read_bytes()
    with pytest.raises(StoreError, match="d.duckdb"):
        Store(store).close()
    code, _, err = run_cli(capsys, monkeypatch, "ingest", project["data"], "--corpus", "x", "--store", store)
    assert code == 1 and "d.duckdb" in err and "Traceback" not in err
    assert store.read_bytes() == damaged  # not "repaired" into a new, empty store


def test_kill_9_during_llm_labelling_then_rerun_equals_uninterrupted(tmp_path, llm_server, monkeypatch):
    """A labelling run killed mid-way: the store opens, answers received before the kill are reused from
    the cache (not asked again), and the re-run's labels equal an uninterrupted run's."""
    from tests.interp.planted import planted_store
    from tests.interp.test_explain import smart_judge
    from tests.llm_server import Reply

    llm_server.responder = lambda body: Reply(content=json.dumps(smart_judge(body)), delay=0.03)
    monkeypatch.setenv("SAEEMBED_LLM_KEY", "sk-kill-test")  # the CLI subprocess inherits it
    paths = {name: tmp_path / f"{name}.duckdb" for name in ("ref", "killed")}
    for path in paths.values():
        with Store(path) as st:
            planted_store(st)

    def args(path):
        return ["label", "--all-live", "--llm", "judge", "--base-url", llm_server.url, "--concurrency", "2",
                "--store", path, "--json"]

    assert run(*args(paths["ref"])).returncode == 0
    total = len(llm_server.requests)
    assert total >= 20  # enough calls for a kill to land among them
    llm_server.requests.clear()
    killed, _ = run_and_kill(args(paths["killed"]), random.Random(3).uniform(0.0, 0.3),
                             armed=lambda: len(llm_server.requests) >= total // 3)
    assert killed
    asked_before = len(llm_server.requests)
    with Store(paths["killed"]) as st:  # always opens; the answers it got are cached
        cached = st.query("SELECT count(*) AS n FROM llm_cache")["n"][0]
    assert 0 < cached <= asked_before < total
    llm_server.requests.clear()
    done = run(*args(paths["killed"]))
    assert done.returncode == 0, done.stderr
    assert len(llm_server.requests) == total - cached  # nothing answered before the kill is asked again

    def labels(path):
        with Store(path, read_only=True) as st:
            return st.labels(st.sae_info(1).sae_key).sort("feature")

    ref, got = labels(paths["ref"]), labels(paths["killed"])
    assert ref.height > 5 and ref.equals(got)
    assert b"sk-kill-test" not in paths["killed"].read_bytes()


# --- kills at named points: mid-fit, between checkpoints -------------------------------------------

CLASSIFY = ["classify", "train", "tox", "--label-column", "toxic", "--name", "toxicity", "--json"]


def classifier_state(path) -> tuple:
    """The saved classifier 'toxicity' (weights, seed) and the scores it gave the corpus."""
    with Store(path, read_only=True) as st:
        clf = st.load_classifier("toxicity")
        scores = st.doc_scores(st.corpus("tox"), ["toxicity"])
    return json.dumps(clf.model, sort_keys=True), clf.params["config"]["seed"], scores


def same_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2].equals(b[2])


@pytest.fixture
def classified(tmp_path, capsys, monkeypatch):
    """A store holding classifier 'toxicity' trained with --seed 0 (the previous one), its state, and the
    state a --seed 1 re-training gives (made on a copy)."""
    from tests.analysis.test_classify import planted
    from tests.synthetic import register_sae, write_corpus
    from tests.test_cli import run as run_cli

    path = tmp_path / "clf.duckdb"
    with Store(path) as st:
        docs, labels = planted(300, 0)
        write_corpus(st, register_sae(st, 40), "tox", docs, meta={"toxic": labels})
    assert run_cli(capsys, monkeypatch, *CLASSIFY, "--seed", "0", "--store", path)[0] == 0
    old = classifier_state(path)
    shutil.copy(path, tmp_path / "ref.duckdb")
    assert run_cli(capsys, monkeypatch, *CLASSIFY, "--seed", "1", "--store", tmp_path / "ref.duckdb")[0] == 0
    new = classifier_state(tmp_path / "ref.duckdb")
    assert not same_state(old, new) and old[2]["toxicity"].null_count() == 0
    return path, old, new


def test_kill_9_mid_classify_fit_keeps_the_previous_classifier(classified, tmp_path, capsys, monkeypatch):
    """Killed inside the cross-validation (the 12th of 7 Cs x 5 folds + 1 fits): the previous classifier and
    its scores are untouched, and the re-run saves exactly what an uninterrupted run saves."""
    from tests.test_cli import run as run_cli

    path, old, new = classified
    mark = tmp_path / "mark"
    killed, _ = run_and_kill([*CLASSIFY, "--seed", "1", "--store", path], 0.0, armed=mark.exists,
                             pause=pause_at("sklearn.linear_model:LogisticRegression.fit", 12, mark))
    assert killed and mark.exists()  # it was inside LogisticRegression.fit #12 when killed
    assert same_state(classifier_state(path), old)  # store opens; previous classifier and scores intact
    code, _, err = run_cli(capsys, monkeypatch, *CLASSIFY, "--seed", "1", "--store", path)
    assert code == 0, err
    assert same_state(classifier_state(path), new)


def test_kill_9_between_classifier_save_and_scores_is_all_or_nothing(classified, tmp_path, capsys, monkeypatch):
    """Killed after the weights are written and before the corpus is scored: the store holds the previous
    classifier with its scores, or the new one with its scores, never the new weights beside old scores."""
    from tests.test_cli import run as run_cli

    path, old, new = classified
    mark = tmp_path / "mark"
    killed, _ = run_and_kill([*CLASSIFY, "--seed", "1", "--store", path], 0.0, armed=mark.exists,
                             pause=pause_at("saeembed.store:Store.write_doc_scores", 1, mark))
    assert killed and mark.exists()
    after = classifier_state(path)
    assert same_state(after, old) or same_state(after, new), (after[1], old[1], new[1])
    assert run_cli(capsys, monkeypatch, *CLASSIFY, "--seed", "1", "--store", path)[0] == 0
    assert same_state(classifier_state(path), new)


def test_kill_9_between_sae_checkpoints_resumes_from_the_last_complete_one(project, tmp_path, capsys, monkeypatch):
    """Killed at step 13 with checkpoints every 5 steps (after the one at step 10, before the one at 15, long
    before the last of ~190): the checkpoint on disk is the complete step-10 one and no output is written;
    a damaged checkpoint is refused in one line; the re-run resumes from step 10 and ends with the
    weights of an uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    from tests.test_cli import run as run_cli

    def args(out, ckpt):
        return ["sae", "train", "--model", project["model"], "--hook", "layers.1", "--data", project["data"],
                "--out", out, "--latents", "64", "--k", "4", "--batch-size", "64", "--max-tokens", "12000",
                "--checkpoint-dir", ckpt, "--checkpoint-every", "5", "--device", "cpu", "--json"]

    code, out, err = run_cli(capsys, monkeypatch, *args(tmp_path / "ref", tmp_path / "ref-ckpt"))
    assert code == 0, err
    steps = json.loads(out)["train_stats"]["steps"]
    assert steps > 30
    mark, ckpt_dir, out_dir = tmp_path / "mark", tmp_path / "ckpt", tmp_path / "out"
    killed, _ = run_and_kill(args(out_dir, ckpt_dir), 0.0, armed=mark.exists,
                             pause=pause_at("saeembed.sae.train:_Trainer.train_step", 13, mark))
    assert killed and mark.exists()
    ckpt = ckpt_dir / "checkpoint.pt"
    assert [f.name for f in ckpt_dir.iterdir()] == ["checkpoint.pt"]  # no half-written temp file
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["step"] == 10
    assert not (out_dir / "sae_weights.safetensors").exists()  # no half-trained SAE saved as the result

    good = ckpt.read_bytes()  # a damaged checkpoint is refused clearly, and left as it is
    ckpt.write_bytes(good[: len(good) // 2])
    code, _, err = run_cli(capsys, monkeypatch, *args(out_dir, ckpt_dir))
    assert code == 1 and "cannot read training checkpoint" in err and "Traceback" not in err
    assert ckpt.read_bytes() == good[: len(good) // 2]
    ckpt.write_bytes(good)

    code, out, err = run_cli(capsys, monkeypatch, *args(out_dir, ckpt_dir))
    assert code == 0, err
    stats = json.loads(out)["train_stats"]
    assert stats["resumed_from_step"] == 10 and stats["steps"] == steps
    ref = load_file(tmp_path / "ref" / "sae_weights.safetensors")
    got = load_file(out_dir / "sae_weights.safetensors")
    assert ref.keys() == got.keys()
    assert all((ref[k] == got[k]).all() for k in ref)

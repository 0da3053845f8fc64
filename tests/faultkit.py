"""Fault injection shared by tests/test_reliability.py and benchmarks/faults.py: run the real CLI in a
subprocess, SIGKILL it at a chosen moment, and compare what the store holds with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    return env


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "saeembed.cli.app", *map(str, args)]


def run(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout)


def pause_at(target: str, call: int, mark, *, hold: float = 120) -> dict:
    """For run_and_kill(pause=...): run the CLI through this module, which wraps `target`
    ("module:function" or "module:Class.method") so that its `call`-th call (1-based) first writes the
    file `mark` and then sleeps `hold` seconds before doing its work. With armed=mark.exists the kill
    lands at that named point (e.g. the 12th LogisticRegression.fit of a cross-validation, or the 13th
    SAE training step, between two checkpoints) whatever the machine's speed. Library code is untouched."""
    return {"SAEEMBED_FAULT_AT": f"{target}@{int(call)}", "SAEEMBED_FAULT_MARK": str(mark),
            "SAEEMBED_FAULT_HOLD": str(hold)}


def _install_pause() -> None:
    import importlib

    target, call = os.environ["SAEEMBED_FAULT_AT"].rsplit("@", 1)
    mark, hold = Path(os.environ["SAEEMBED_FAULT_MARK"]), float(os.environ.get("SAEEMBED_FAULT_HOLD", "120"))
    module, attr = target.split(":")
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    real, calls = getattr(owner, name), [0]

    def paused(*a, **kw):
        calls[0] += 1
        if calls[0] == int(call):
            mark.write_text(f"{os.getpid()} {target} call {calls[0]}\n")
            time.sleep(hold)
        return real(*a, **kw)

    setattr(owner, name, paused)


def run_and_kill(args, delay: float, *, armed=None, arm_timeout: float = 300, pause: dict | None = None,
                 output=None) -> tuple[bool, float]:
    """Start the CLI and SIGKILL it `delay` seconds after `armed()` first returns true (polled every
    5 ms; e.g. "the store's WAL exists", i.e. it is writing), or after start when armed is None.
    pause: env from pause_at (the run goes through this module's hook). output: a file for the CLI's
    stdout and stderr. Returns (killed while running, seconds it ran)."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "tests.faultkit", *map(str, args)] if pause else cli(*args)
    env = {**cli_env(), **(pause or {})}
    sink = open(output, "wb") if output else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT if output else sink)
    finally:
        if output:
            sink.close()
    try:
        if armed is not None:
            deadline = time.perf_counter() + arm_timeout
            while proc.poll() is None and not armed() and time.perf_counter() < deadline:
                time.sleep(0.005)
        proc.wait(timeout=delay)
        return False, time.perf_counter() - started
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True, time.perf_counter() - started


def writing(store_path, *, rows: bool = False):
    """A trigger for run_and_kill: the encode has begun writing (WAL or a new shard file exists). With
    rows=True: it has written rows (a shard file that was not there when the trigger was made, or the
    WAL grew past the smallest size seen). Files left by an earlier killed run never arm it: else a
    re-run would be killed while still starting up."""
    store_path = Path(store_path)
    wal = store_path.with_name(store_path.name + ".wal")
    shards = store_path.with_name(store_path.name + ".shards")
    before = set(shards.rglob("*.parquet")) if shards.exists() else set()
    low = []

    def armed() -> bool:
        if shards.exists() and any(f not in before for f in shards.rglob("*.parquet")):
            return True
        if not wal.exists():
            return False
        if not rows:
            return True
        size = wal.stat().st_size
        low.append(min(size, low[-1]) if low else size)
        return size > low[-1]

    return armed


def snapshot(store_path, corpus: str) -> dict:
    """Everything an encode writes for `corpus`, in a canonical order (opens the store read-only)."""
    from saeembed.store import Store

    with Store(store_path, read_only=True) as st:
        cid = st.corpus(corpus).corpus_id
        q = lambda sql: st.query(sql, [cid])  # noqa: E731
        return {
            "activations": q("SELECT doc_idx, feature, value, active_tokens, span_start, span_end FROM activations "
                             "WHERE corpus_id = ? ORDER BY doc_idx, feature"),
            "encoded_docs": q("SELECT doc_idx, n_tokens, n_windows FROM encoded_docs WHERE corpus_id = ? ORDER BY doc_idx"),
            "exemplars": q("SELECT feature, rank, doc_idx, value FROM exemplars WHERE corpus_id = ? ORDER BY feature, rank"),
            "encoding": q("SELECT status, n_docs, n_tokens, n_split_docs FROM encodings WHERE corpus_id = ?"),
            "n_docs": st.corpus(corpus).n_docs,
        }


def differences(expected: dict, got: dict) -> list[str]:
    """What differs between two snapshots, plus duplicate checks on `got` (empty list: identical)."""
    out = []
    acts, docs = got["activations"], got["encoded_docs"]
    if acts.select(["doc_idx", "feature"]).is_duplicated().any():
        out.append("duplicate (doc_idx, feature) rows")
    if docs["doc_idx"].is_duplicated().any():
        out.append("duplicate encoded_docs rows")
    if docs.height != got["n_docs"]:
        out.append(f"{docs.height} of {got['n_docs']} documents encoded")
    for key in ("activations", "encoded_docs", "exemplars", "encoding"):
        if not expected[key].equals(got[key]):
            out.append(f"{key} differ ({expected[key].height} vs {got[key].height} rows)")
    return out


if __name__ == "__main__":  # python -m tests.faultkit ARGS: the CLI with the pause of pause_at installed
    if os.environ.get("SAEEMBED_FAULT_AT"):
        _install_pause()
    from saeembed.cli.app import main

    sys.argv = ["saeembed", *sys.argv[1:]]
    main()

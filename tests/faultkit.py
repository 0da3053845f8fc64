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


def run_and_kill(args, delay: float, *, armed=None, arm_timeout: float = 300) -> tuple[bool, float]:
    """Start the CLI and SIGKILL it `delay` seconds after `armed()` first returns true (polled every
    5 ms; e.g. "the store's WAL exists", i.e. it is writing), or after start when armed is None.
    Returns (killed while running, seconds it ran)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cli(*args), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

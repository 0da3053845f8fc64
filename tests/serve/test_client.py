"""Finding the server: the rendezvous file (private, removed on exit) and every way of not finding it
(stale pid, nothing listening, someone else's file, another store), each ending in a local run."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

from saeembed.serve import rendezvous
from tests.serve.conftest import Running
from tests.test_cli import run


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plant(path, **changes) -> rendezvous.Rendezvous:
    rv = rendezvous.Rendezvous("127.0.0.1", _free_port(), os.getpid(), "t" * 43, os.path.realpath(path))
    rv = rendezvous.Rendezvous(**{**rv.__dict__, **changes})
    os.replace(rendezvous.write(rv), rendezvous.path_for(path))  # beside this store, whatever it names
    return rv


def test_rendezvous_is_private_and_removed_on_stop(path):
    running = Running(path)
    file = rendezvous.path_for(path)
    try:
        assert file == path.with_name("s.duckdb.serve.json")
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        data = json.loads(file.read_text())
        assert data["pid"] == os.getpid() and data["port"] == running.server.port
        assert data["store"] == os.path.realpath(path) and len(data["token"]) >= 32
        found, _ = rendezvous.find(path)
        assert found == running.server.rendezvous
    finally:
        running.stop()
    assert not file.exists()


def _local_fallback(capsys, monkeypatch, path, reason: str):
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--store", path, "--json", "--verbose")
    assert code == 0, err
    assert reason in err and "running locally" in err and "answered by" not in err, err
    assert [r["doc_id"] for r in json.loads(out)] == ["c0", "c2", "c5"]
    code, out2, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--store", path, "--json")
    assert code == 0 and out2 == out and err == ""  # without --verbose: silent


def test_stale_rendezvous_dead_pid_runs_locally(capsys, monkeypatch, path):
    _plant(path, pid=_dead_pid())
    _local_fallback(capsys, monkeypatch, path, "is gone")


def test_live_pid_but_nothing_listening_runs_locally(capsys, monkeypatch, path):
    _plant(path)  # our own pid, a port nobody listens on
    _local_fallback(capsys, monkeypatch, path, "did not answer")


def test_wrong_token_runs_locally(capsys, monkeypatch, path, served):
    rv = served.rendezvous
    rendezvous.write(rendezvous.Rendezvous(rv.host, rv.port, rv.pid, "not-the-token", rv.store))
    _local_fallback(capsys, monkeypatch, path, "answered 403")


def test_untrusted_or_foreign_files_are_ignored(capsys, monkeypatch, path, tmp_path):
    _plant(path, store=str(tmp_path / "other.duckdb"))
    _local_fallback(capsys, monkeypatch, path, "it is for")
    file = rendezvous.path_for(path)
    _plant(path)
    os.chmod(file, 0o666)  # anyone could have written it: not trusted
    _local_fallback(capsys, monkeypatch, path, "not a private file")
    file.write_text("{broken")
    os.chmod(file, 0o600)
    _local_fallback(capsys, monkeypatch, path, "unreadable")


def test_no_server_flag_skips_a_live_server(capsys, monkeypatch, path, served):
    code, _, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--store", path, "--no-server", "--verbose")
    assert code == 0 and "answered by" not in err


def test_serve_command_end_to_end(path):
    """`saeembed serve` in its own process: it publishes the file, answers, and `kill` removes the file."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "saeembed.cli.app", "serve", "--store", str(path), "--quiet"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        while line and "serving" not in line:
            line = proc.stderr.readline()
        assert "serving" in line, line
        found, _ = rendezvous.find(path)
        assert found is not None and found.pid == proc.pid
        client = subprocess.run([sys.executable, "-m", "saeembed.cli.app", "search", "-c", "c", "-f", "3", "--store",
                                 str(path), "--json", "--verbose"], capture_output=True, text=True, timeout=300, env=env)
        assert client.returncode == 0 and "answered by saeembed serve" in client.stderr, client.stderr
        assert [r["doc_id"] for r in json.loads(client.stdout)] == ["c0", "c2", "c5"]
    finally:
        proc.terminate()
        proc.wait(60)
    assert not rendezvous.path_for(path).exists()

"""The search server: output through it is the local output, byte for byte; only the token and a Host
naming the server are answered; bad requests and library errors come back as 400 with their message;
the store stays free for other processes between requests."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from saeembed.errors import InputError
from saeembed.serve.server import SearchServer, TOKEN_HEADER
from tests.test_cli import run

SEARCHES = [
    ["-c", "c", "-f", "3", "-f", "7:0.5"],
    ["-c", "c", "-f", "3", "--not-feature", "7", "--where", "src = 'x'"],
    ["-c", "c", "-f", "3", "-f", "11:-0.5", "--length-control", "off", "--top", "2"],
    # a query: features matched from labels (describe), then hybrid fusion with dense (NaN columns)
    ["calendar date", "-c", "c", "--n-features", "2", "--match", "describe", "--explain"],
    ["bread", "-c", "c", "--dense"],
]


def _both(capsys, monkeypatch, path, *args):
    """(served: code, out, err), (local: code, out, err) for one CLI call."""
    served = run(capsys, monkeypatch, *args, "--store", path, "--verbose")
    local = run(capsys, monkeypatch, *args, "--store", path, "--no-server")
    return served, local


def _same_stderr(served_err: str, local_err: str) -> bool:
    """stderr alike but for the --verbose line and the blank line a local run's (transient) progress bar leaves."""
    kept = [line for line in served_err.splitlines() if "answered by saeembed serve" not in line]
    return "\n".join(kept).strip() == local_err.strip()


@pytest.mark.parametrize("fmt", ["--json", "--csv", None])
@pytest.mark.parametrize("args", SEARCHES)
def test_search_through_server_is_identical(capsys, monkeypatch, path, served, args, fmt):
    extra = [fmt] if fmt else []
    (code, out, err), (lcode, lout, lerr) = _both(capsys, monkeypatch, path, "search", *args, *extra)
    assert "answered by saeembed serve" in err, err  # really served
    assert code == lcode == 0, (err, lerr)
    assert out == lout and out.strip()
    assert _same_stderr(err, lerr), (err, lerr)
    if fmt == "--json":
        rows = json.loads(out)
        assert rows and rows[0]["rank"] == 1
        if args[0] == "calendar date":  # hybrid: the dated documents lead; the plan was shown on stderr
            assert {rows[0]["doc_id"], rows[1]["doc_id"]} == {"c0", "c2"}
            assert "calendar dates" in err


def test_similar_through_server_is_identical(capsys, monkeypatch, path, served):
    for fmt in ("--json", "--csv"):
        (code, out, err), (lcode, lout, _) = _both(capsys, monkeypatch, path, "similar", "c0", "-c", "c", fmt)
        assert "answered by saeembed serve" in err and code == lcode == 0 and out == lout
    code, out, _ = run(capsys, monkeypatch, "similar", "c0", "-c", "c", "--json", "--store", path)
    assert [r["doc_id"] for r in json.loads(out)][:1] == ["c2"]  # shares feature 3 with c0


def test_library_error_is_shown_as_locally(capsys, monkeypatch, path, served):
    for args in (["search", "-c", "nosuch", "-f", "3"], ["search", "-c", "c", "-f", "3", "--where", "colour = 'red'"],
                 ["search", "-c", "c", "-f", "99"], ["similar", "nope", "-c", "c"]):
        (code, out, err), (lcode, lout, lerr) = _both(capsys, monkeypatch, path, *args)
        assert code == lcode == 1 and out == lout == ""
        assert _same_stderr(err, lerr) and err.startswith("error:"), (err, lerr)


def _request(server, method="POST", endpoint="/search", body=b"{}", token=None, host=None):
    conn = http.client.HTTPConnection(server.rendezvous.host, server.port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers[TOKEN_HEADER] = token
    if host is not None:
        conn.putrequest(method, endpoint, skip_host=True)
        conn.putheader("Host", host)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
    else:
        conn.request(method, endpoint, body=body, headers=headers)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def test_token_and_host_are_required(served):
    good = json.dumps({"corpus": "c", "feature": [3]}).encode()
    assert _request(served, body=good)[0] == 403  # no token
    assert _request(served, body=good, token="x" * 43)[0] == 403
    assert _request(served, body=good, token=served.token[:-1])[0] == 403
    status, reply = _request(served, body=good, token=served.token, host="evil.example")  # DNS rebinding
    assert status == 403 and "Host" in reply["error"]
    assert _request(served, method="GET", endpoint="/health", token="wrong")[0] == 403
    status, reply = _request(served, body=good, token=served.token)
    assert status == 200 and [r["doc_id"] for r in reply["frame"]["rows"]] == ["c0", "c2", "c5"]
    assert reply["plan"]["rows"][0]["feature"] == 3 and reply["seconds"] >= 0
    status, reply = _request(served, body=good, token=served.token, host=f"localhost:{served.port}")
    assert status == 200
    status, reply = _request(served, method="GET", endpoint="/health", token=served.token)
    assert status == 200 and reply["ok"] and reply["store"] == served.store


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"feature": [3]}).encode(), "missing argument 'corpus'"),
    (json.dumps({"corpus": "c", "feature": [3], "colour": 1}).encode(), "unknown argument 'colour'"),
    (json.dumps({"corpus": "c", "top": "ten"}).encode(), "argument 'top' has the wrong type"),
    (json.dumps({"corpus": "c", "feature": [{"x": 1}]}).encode(), "list of feature ids"),
    (json.dumps({"corpus": "c", "feature": [3], "top": 0}).encode(), "--top must be at least 1"),  # library InputError
    (json.dumps({"corpus": "nosuch", "feature": [3]}).encode(), "unknown corpus 'nosuch'"),
])
def test_bad_requests_get_400_with_the_reason(served, body, message):
    status, reply = _request(served, body=body, token=served.token)
    assert status == 400 and message in reply["error"], reply


def test_unknown_endpoint_is_404(served):
    assert _request(served, endpoint="/drop", token=served.token)[0] == 404


def test_store_is_free_for_writers_while_serving(capsys, monkeypatch, path, served):
    code, _, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--store", path, "--verbose")
    assert code == 0 and "answered by saeembed serve" in err
    # another process opens the store for writing (DuckDB locks the file per process) and changes it
    script = ("import sys; from saeembed.store import Store\n"
              "with Store(sys.argv[1], create=False) as st:\n"
              "    st.save_labels(st.encoded_sae(st.corpus('c'), None).sae_key, 't', [(3, 'dates and days', 'manual', None, {})])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "3", "--store", path, "--json", "--verbose")
    assert "answered by saeembed serve" in err
    assert json.loads(out)[0]["matched"][0]["label"] == "dates and days"  # the server sees the new label


def test_refuses_remote_bind_and_a_second_server(path, served):
    with pytest.raises(InputError, match="--allow-remote"):
        SearchServer(str(path), host="0.0.0.0")
    with pytest.raises(InputError, match="already runs"):
        SearchServer(str(path))


def test_server_sees_a_corpus_rewritten_by_another_process(capsys, monkeypatch, path, served):
    """The FAISS index a dense search builds is cached in the server; another process replacing the
    corpus (same id, same size, other texts) must not leave the server answering from the old one."""
    args = ["search", "bread", "-c", "d", "--dense", "--json"]
    code, out, err = run(capsys, monkeypatch, *args, "--store", path, "--verbose")
    assert code == 0 and "answered by" in err and json.loads(out)[0]["doc_id"] == "d1"  # "Bread."
    script = ("import sys; from saeembed.store import Store; from tests.synthetic import write_corpus\n"
              "with Store(sys.argv[1], create=False) as st:\n"
              "    sae = st.encoded_sae(st.corpus('d'), None); st.drop_corpus('d')\n"
              "    write_corpus(st, sae, 'd', [{3: 1.0}, {5: 1.0}, {5: 2.0}],\n"
              "                 texts=['Bread and butter.', 'May 2021.', 'The striker scored.'])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (code, out, err), (lcode, lout, _) = _both(capsys, monkeypatch, path, *args)
    assert code == lcode == 0 and "answered by" in err
    assert json.loads(out)[0]["doc_id"] == "d0" and out == lout

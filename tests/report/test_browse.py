"""The feature browser: answers on loopback, read-only (writes refused, store opened read-only), search
and co-occurrence values by construction, document text escaped, pages clean in a real browser."""

import http.client
import json
import socketserver
import threading
import urllib.request

import pytest

from saeembed.errors import StoreError
from saeembed.report.browse import FeatureBrowser, make_server
from tests.report.conftest import HOSTILE, LABELS


@pytest.fixture
def server(planted_file):
    srv = make_server(planted_file, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}", port, planted_file
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def request(port, method, path="/", host=None, addr="127.0.0.1"):
    conn = http.client.HTTPConnection(addr, port, timeout=10)
    conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None,
                 headers={"Host": host} if host else {})
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, dict(r.getheaders()), body


def test_binds_loopback_and_refuses_writes(server):
    base, port, path = server
    assert base.startswith("http://127.0.0.1:")
    before = path.read_bytes()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = request(port, method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = request(port, "GET")
    assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
    assert request(port, "GET", host="evil.example:80")[0] == 421  # DNS rebinding
    assert request(port, "GET", "/nope")[0] == 404 and request(port, "GET", "/?min_density=abc")[0] == 400
    assert path.read_bytes() == before


def test_store_is_opened_read_only(planted_file, monkeypatch):
    from saeembed.report import browse

    modes = []
    real = browse.Store
    monkeypatch.setattr(browse, "Store", lambda p, **kw: modes.append(kw) or real(p, **kw))
    b = FeatureBrowser(planted_file)
    b.search("refund")
    b.feature(1)
    assert modes and all(m == {"read_only": True} for m in modes)


def test_search_by_label_id_density_and_corpus(server):
    base, *_ = server
    hit = get_json(f"{base}/api/features?q=REFUND")
    assert hit["total"] == 1 and hit["features"][0]["feature"] == 1 and hit["features"][0]["label"] == LABELS[1]
    assert get_json(f"{base}/api/features?q=%234")["features"][0]["feature"] == 4
    dense = get_json(f"{base}/api/features?min_density=0.5")
    # Over 20 docs: f1 12/20, f2 9/20, f3 10/20, f4 6/20.
    assert sorted(f["feature"] for f in dense["features"]) == [1, 3]
    assert [f["density"] for f in dense["features"]] == pytest.approx([0.6, 0.5])
    only_beta = get_json(f"{base}/api/features?corpus=beta&order=feature")
    assert [f["feature"] for f in only_beta["features"]] == [1, 2, 3]


def test_feature_detail_corpora_and_cooccurrence(server):
    base, *_ = server
    d = get_json(f"{base}/api/feature/4")
    assert [(c["corpus"], c["docs"], c["density"]) for c in d["corpora"]] == [("alpha", 6, 0.6)]
    co = {c["feature"]: c for c in d["correlated"]}
    # Feature 4 (alpha 0-5) always fires with feature 1 (12 of 20 docs): p11 = 0.3, p1 = 0.3, p2 = 0.6.
    import math
    expected = math.log(0.3 / (0.3 * 0.6)) / -math.log(0.3)
    assert abs(co[1]["npmi"] - expected) < 1e-9 and co[1]["support"] == 6
    # with feature 3 (alpha 0-4 + beta 5-9): together 5 of 20
    assert co[3]["support"] == 5
    assert len(d["exemplars"]) == 4 and {e["corpus"] for e in d["exemplars"]} == {"alpha"}
    assert request(server[1], "GET", "/api/feature/99")[0] == 404


def test_pages_in_browser_escape_document_text(server, load, tmp_path):
    base, *_ = server
    index = load(base + "/", screenshot=tmp_path / "browse_index.png")
    assert index.errors() == [] and all(u.startswith(base) for u in index.requests)
    assert index.count("#features tbody tr") == 4 and HOSTILE in index.page.inner_text("#features")
    feat = load(base + "/feature/1", screenshot=tmp_path / "browse_feature.png")
    assert feat.errors() == [] and feat.dialogs == []
    assert feat.count("#corpora rect.bar") == 2
    # 4 alpha exemplars (span on "refund") + beta's 2 (spans cover the whole text).
    marks = feat.texts("#exemplars mark.act")
    assert marks.count("refund") == 4 and len(marks) == 6
    doc = load(base + "/doc/1/0", screenshot=tmp_path / "browse_doc.png")  # alpha 0 holds a <script> tag
    assert doc.page.url == base + "/doc/alpha/alpha0"  # the old internal address redirects to the doc id
    assert doc.errors() == [] and doc.dialogs == []
    assert HOSTILE in doc.page.inner_text("#text") and doc.count("#text script") == 0
    assert doc.count("#text mark") == 0  # nothing shaded until a feature is picked
    # alpha 0 fires features 1 (1.0), 4 (0.5), 3 (0.3): strongest first.
    assert doc.texts("#features tbody td:first-child a") == ["#1", "#4", "#3"]
    doc.page.click("#features tbody td:first-child a >> text=#4")
    doc.page.wait_for_load_state("load")
    assert doc.page.url == base + "/doc/alpha/alpha0?feature=4"
    # the planted store keeps only each feature's strongest span (the whole text for feature 4)
    assert doc.page.locator("#text mark.act").evaluate_all("ms => ms.map(m => m.dataset.feature)") == ["4"]
    assert "unavailable" in doc.page.inner_text("#text")


def test_clear_errors(tmp_path):
    from saeembed.store import Store

    with pytest.raises(StoreError, match="no store"):
        FeatureBrowser(tmp_path / "missing.duckdb")
    Store(tmp_path / "empty.duckdb").close()
    with pytest.raises(StoreError, match="no encoded corpus"):
        FeatureBrowser(tmp_path / "empty.duckdb")


# --- where it listens ------------------------------------------------------------------------------

REAL_SERVE_FOREVER = socketserver.BaseServer.serve_forever  # no_serving patches the attribute


def serving(srv):
    thread = threading.Thread(target=REAL_SERVE_FOREVER, args=(srv,), daemon=True)
    thread.start()
    return thread


def stop(srv, thread):
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def no_serving(monkeypatch):
    """Record every socket the CLI binds, and make serve_forever return at once (so a CLI that wrongly
    starts a server fails the test instead of hanging it)."""
    bound = []
    real_bind = socketserver.TCPServer.server_bind
    monkeypatch.setattr(socketserver.TCPServer, "server_bind", lambda self: bound.append(self) or real_bind(self))
    monkeypatch.setattr(socketserver.BaseServer, "serve_forever", lambda self, poll_interval=0.5: None)
    return bound


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.1"])
def test_cli_refuses_non_loopback_host(planted_file, capsys, monkeypatch, no_serving, host):
    from tests.test_cli import run as run_cli

    code, out, err = run_cli(capsys, monkeypatch, "browse", "--host", host, "--port", "0", "--store", planted_file)
    assert code == 1 and no_serving == []  # nothing bound, no server started
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen" in lines[0] and "--allow-remote" in lines[0]
    assert "Traceback" not in err


def test_non_loopback_library_call_refused_before_the_store_is_opened(tmp_path):
    from saeembed.errors import InputError

    with pytest.raises(InputError, match="--allow-remote"):
        make_server(tmp_path / "missing.duckdb", host="0.0.0.0", port=0)  # not "no store": refused first


def test_allow_remote_warns_and_keeps_the_host_check(planted_file, capsys, monkeypatch, no_serving):
    from tests.test_cli import run as run_cli

    code, _, err = run_cli(capsys, monkeypatch, "browse", "--host", "0.0.0.0", "--allow-remote", "--port", "0",
                           "--store", planted_file)
    assert code == 0 and len(no_serving) == 1 and "WARNING" in err and "no authentication" in err
    srv = make_server(planted_file, host="0.0.0.0", port=0, allow_remote=True)
    thread = serving(srv)
    try:
        port = srv.server_address[1]
        assert request(port, "GET", host="evil.example")[0] == 421  # DNS rebinding, remote bind
        assert request(port, "GET", host=f"evil.example:{port}")[0] == 421
        assert request(port, "GET", host=f"127.0.0.1:{port}")[0] == 200
        assert request(port, "GET", host=f"localhost:{port}")[0] == 200
        import socket

        assert request(port, "GET", host=f"{socket.gethostname()}:{port}")[0] == 200  # the machine's own name
    finally:
        stop(srv, thread)


def test_loopback_host_variants_and_missing_host_header(planted_file):
    srv = make_server(planted_file, host="localhost", port=0)
    thread = serving(srv)
    try:
        port = srv.server_address[1]
        assert srv.server_address[0] == "127.0.0.1"
        assert request(port, "GET", host=f"localhost:{port}")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("GET", "/", skip_host=True)  # no Host header at all
        conn.endheaders()
        assert conn.getresponse().status == 421
        conn.close()
    finally:
        stop(srv, thread)


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6_loopback_serves(planted_file, host, capsys, monkeypatch, no_serving):
    srv = make_server(planted_file, host=host, port=0)
    thread = serving(srv)
    try:
        addr, port = srv.server_address[:2]
        assert addr == "::1"
        status, _, body = request(port, "GET", "/api/features?q=refund", addr="::1")  # Host: [::1]:port
        assert status == 200 and json.loads(body)["total"] == 1
        assert request(port, "GET", addr="::1", host="evil.example")[0] == 421
    finally:
        stop(srv, thread)
    from tests.test_cli import run as run_cli

    code, _, err = run_cli(capsys, monkeypatch, "browse", "--host", host, "--port", "0", "--store", planted_file)
    assert code == 0 and "http://[::1]:" in err and "WARNING" not in err

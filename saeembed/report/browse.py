"""`saeembed browse`: a local, read-only feature browser served on the loopback interface.

Pages: search features by label / id / density / corpus, generic features (on nearly every document,
the rule diff uses) hidden unless asked for; one feature (label and its source, density per corpus,
exemplars with the activating token shaded, co-occurring features by NPMI); one document, addressed
by the user's doc id, listing its strongest features, each a link that shades every token where that
one feature fires (recomputed on demand; see browse_tokens). JSON twins under /api/ for scripts.

Read-only by construction: the store is opened read_only for each request (so other saeembed
commands can write between requests), only GET/HEAD are answered (other methods get 405), requests
whose Host header is not this server's are refused (DNS-rebinding), and all text is escaped.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import polars as pl

from saeembed.config import DiffConfig
from saeembed.encode.probe import random_share
from saeembed.errors import InputError, SaeembedError
from saeembed.report import browse_pages as pages
from saeembed.report.browse_tokens import TokenHighlighter, stored_spans
from saeembed.report.browse_urls import (BadRequest, NotFound, doc_url, flag_param, float_param, int_param,
                                         legacy_doc, split_doc_path)
from saeembed.report.data import exemplar_windows
from saeembed.report.html import CSP, Section, esc, page
from saeembed.report.listen import allowed_hosts as _allowed_hosts, check_remote, host_ok, resolve
from saeembed.stats import generic_rule
from saeembed.store import SAEInfo, Store

PAGE_SIZE = pages.PAGE_SIZE
__all__ = ["BadRequest", "FeatureBrowser", "NotFound", "make_server"]


@dataclass
class Stats:
    """Per-(corpus, feature) counts for one SAE, computed once and reused until the store changes."""

    key: tuple
    sae: SAEInfo
    corpora: pl.DataFrame   # corpus_id, corpus, n_docs (encoded)
    per_corpus: pl.DataFrame  # corpus_id, feature, docs, max_value, mean_value
    features: pl.DataFrame  # feature, label, docs, density, max_value, mean_value, n_corpora, label_source, score,
    #                         generic (bool), generic_reason
    n_docs: int

    @property
    def n_generic(self) -> int:
        return int(self.features["generic"].sum())


class FeatureBrowser:
    """The data behind the browser; each call opens the store read-only and closes it again."""

    def __init__(self, store_path, sae: str | None = None, *, device: str = "cpu"):
        self.store_path = store_path
        self.sae_prefix = sae
        self._lock = threading.Lock()
        self._stats: Stats | None = None
        self.tokens = TokenHighlighter(device)
        with self.open() as st:  # fail at start, not on the first request, if the store is unusable
            self._load(st)

    @contextmanager
    def open(self):
        with self._lock:
            store = Store(self.store_path, read_only=True)
            try:
                yield store
            finally:
                store.close()

    # --- cached statistics ------------------------------------------------------------------------

    def _load(self, st: Store) -> Stats:
        sae = st.browsed_sae(self.sae_prefix)
        key = st.sae_data_version(sae.sae_key)
        if self._stats is not None and self._stats.key == key:
            return self._stats
        corpora = st.encoded_corpus_sizes(sae.sae_key)
        per_corpus = st.feature_stats_by_corpus(sae.sae_key)
        n_docs = int(corpora["n_docs"].sum() or 0)
        features = (
            per_corpus.group_by("feature").agg(
                docs=pl.col("docs").sum(), max_value=pl.col("max_value").max(),
                mean_value=(pl.col("mean_value") * pl.col("docs")).sum() / pl.col("docs").sum(),
                n_corpora=pl.len())
            .with_columns(density=pl.col("docs") / max(n_docs, 1))
            .join(st.labels(sae.sae_key), on="feature", how="left")
            .select("feature", "label", "docs", "density", "max_value", "mean_value", "n_corpora", "label_source", "score")
        )
        features = _mark_generic(st, sae, features.sort("feature"))
        self._stats = Stats(key, sae, corpora, per_corpus, features, n_docs)
        return self._stats

    def stats(self) -> Stats:
        with self.open() as st:
            return self._load(st)

    # --- queries ----------------------------------------------------------------------------------

    def search(self, q: str = "", *, min_density: float | None = None, max_density: float | None = None,
               corpus: str | None = None, order: str = "density", offset: int = 0, limit: int = PAGE_SIZE,
               generic: bool = False) -> tuple[pl.DataFrame, int, int]:
        """Features whose label contains `q` (case-insensitive) or whose id is `q` / `#q`; filtered by density
        (share of all encoded documents) and by a corpus they fire in; generic features left out unless
        `generic`. Returns (page of rows, total matches, generic matches left out)."""
        s = self.stats()
        f = s.features
        q = (q or "").strip()
        if q:
            m = re.fullmatch(r"#?(\d+)", q)
            cond = pl.col("label").fill_null("").str.to_lowercase().str.contains(q.lower(), literal=True)
            f = f.filter(cond | (pl.col("feature") == int(m.group(1)))) if m else f.filter(cond)
        if min_density is not None:
            f = f.filter(pl.col("density") >= min_density)
        if max_density is not None:
            f = f.filter(pl.col("density") <= max_density)
        if corpus:
            cid = s.corpora.filter(pl.col("corpus") == corpus)["corpus_id"]
            if cid.is_empty():
                raise BadRequest(f"unknown or unencoded corpus {corpus!r}")
            f = f.filter(pl.col("feature").is_in(s.per_corpus.filter(pl.col("corpus_id") == cid[0])["feature"].implode()))
        orders = {"density": ("density", True), "rare": ("density", False), "max": ("max_value", True),
                  "feature": ("feature", False)}
        if order not in orders:
            raise BadRequest(f"unknown order {order!r}; use {', '.join(orders)}")
        col, desc = orders[order]
        f = f.sort([col, "feature"], descending=[desc, False])
        hidden = 0
        if not generic:
            hidden = int(f["generic"].sum())
            f = f.filter(~pl.col("generic"))
        return f.slice(offset, limit), f.height, hidden

    def feature(self, feature: int, *, exemplars: int = 4, correlated: int = 20, min_support: int = 3) -> dict:
        """Everything about one feature: its row, density per corpus, exemplars per corpus, co-occurring features."""
        # One connection for every read below, so the statistics and the rows agree.
        with self.open() as st:
            s = self._load(st)
            row = s.features.filter(pl.col("feature") == feature)
            if not 0 <= feature < s.sae.d_sae:
                raise NotFound(f"feature {feature} is out of range (this SAE has {s.sae.d_sae} latents)")
            per = (s.per_corpus.filter(pl.col("feature") == feature).join(s.corpora, on="corpus_id")
                   .with_columns(density=pl.col("docs") / pl.col("n_docs"))
                   .select("corpus", "docs", "n_docs", "density", "max_value", "mean_value").sort("corpus"))
            ex = pl.concat([exemplar_windows(st, s.sae.sae_key, [feature], corpus=c, per_feature=exemplars)
                            for c in per["corpus"].to_list()]) if per.height else None
            co = self._correlated(st, s, feature, top=correlated, min_support=min_support) if row.height else None
        info = row.to_dicts()[0] if row.height else {"feature": feature, "docs": 0, "density": 0.0, "label": None,
                                                     "generic": False}
        return {"feature": info, "corpora": per, "exemplars": ex, "correlated": co}

    def _correlated(self, st: Store, s: Stats, feature: int, *, top: int, min_support: int) -> pl.DataFrame:
        """Features that fire in the same documents, by NPMI of binary presence over all encoded documents."""
        co = st.cooccurring_features(s.sae.sae_key, feature, min_support=min_support)
        n = max(s.n_docs, 1)
        n1 = int(s.features.filter(pl.col("feature") == feature)["docs"][0])
        co = co.join(s.features.select("feature", "label", "generic", docs_other="docs"), on="feature", how="left")
        p11 = pl.col("together") / n
        pmi = (p11 / ((n1 / n) * (pl.col("docs_other") / n))).log()
        npmi = pl.when(p11 >= 1.0).then(1.0).otherwise(pmi / -(p11.log()))
        return (co.with_columns(npmi=npmi, support=pl.col("together"))
                .sort(["npmi", "feature"], descending=[True, False]).head(top)
                .select("feature", "label", "npmi", "support", "docs_other", "generic"))

    def document(self, corpus: str, doc_id: str, feature: int | None = None) -> dict:
        """One document by the user's doc id: its active features (value, rel to the feature's max, label,
        generic) and, with `feature`, the spans of every token where that feature fires."""
        # One connection for every read below, so the statistics and the rows agree.
        with self.open() as st:
            s = self._load(st)
            doc = st.document_by_id(corpus, doc_id)
            if doc.is_empty():
                known = s.corpora["corpus"].to_list()
                raise NotFound(f"no document {doc_id!r} in corpus {corpus!r}" if corpus in known else
                               f"no encoded corpus {corpus!r} (corpora: {', '.join(known) or 'none'})")
            d = doc.to_dicts()[0]
            acts = st.document_activations(s.sae.sae_key, d["corpus_id"], d["doc_idx"])
            setup = st.encoding_setup(d["corpus_id"], s.sae.sae_key) if feature is not None else None
            if setup is not None:  # stored token rows (encode --keep-tokens) spare recomputing the document
                setup["token_spans"] = stored_spans(st, corpus, s.sae, d["doc_idx"], feature)
        if feature is not None and not 0 <= feature < s.sae.d_sae:
            raise NotFound(f"feature {feature} does not exist (this SAE has features 0..{s.sae.d_sae - 1})")
        acts = (acts.join(s.features.select("feature", "label", "label_source", "max_value", "density", "generic"),
                          on="feature", how="left")
                .with_columns(rel=pl.col("value") / pl.col("max_value"), generic=pl.col("generic").fill_null(False))
                .sort(["value", "feature"], descending=[True, False]))
        out = {"doc": {k: d[k] for k in ("corpus", "doc_id", "text")}, "activations": acts, "feature": feature,
               "spans": [], "spans_from": None, "note": None}
        if feature is not None:
            row = acts.filter(pl.col("feature") == feature)
            if row.is_empty():
                out["note"] = f"feature {feature} does not fire in this document"
            else:
                out["spans"], out["spans_from"], out["note"] = self.tokens.spans(setup, d["text"], feature,
                                                                                 row.to_dicts()[0])
        return out

    def legacy_document(self, corpus_id: int, doc_idx: int) -> tuple[str, str]:
        """(corpus name, doc id) of an old internal-number address."""
        # the numbers are corpus_id and doc_idx, which the new addresses never show
        with self.open() as st:
            doc = st.document_at(corpus_id, doc_idx)
        if doc.is_empty():
            raise NotFound(f"no document {doc_idx} in corpus {corpus_id}")
        d = doc.to_dicts()[0]
        return d["corpus"], d["doc_id"]


def _mark_generic(st: Store, sae: SAEInfo, features: pl.DataFrame) -> pl.DataFrame:
    """Adds generic / generic_reason by diff's rule (saeembed.stats.generic_rule with DiffConfig's thresholds)."""
    cfg = DiffConfig()
    ids = features["feature"].to_numpy().astype(np.int64)
    share = random_share(st, sae, ids) if len(ids) else None
    generic, reasons = generic_rule(features["density"].to_numpy(), share, cfg.generic_freq, cfg.random_freq)
    return features.with_columns(pl.Series("generic", generic, pl.Boolean),
                                 pl.Series("generic_reason", reasons.tolist(), pl.Utf8))


def _json_frame(frame: pl.DataFrame | None) -> list:
    if frame is None:
        return []
    return json.loads(frame.write_json())


# --- HTTP ------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    browser: FeatureBrowser  # set on the subclass made by make_server
    allowed_hosts: frozenset[str]  # always checked (DNS rebinding), loopback or not
    server_version = "saeembed-browse"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: the CLI prints one line at start
        pass

    def _send(self, status: int, body: str, ctype: str = "text/html; charset=utf-8", extra: dict | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "read-only browser: only GET and HEAD are allowed\n",
                   "text/plain; charset=utf-8", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not host_ok(self.headers.get("Host"), self.allowed_hosts):
            self._send(HTTPStatus.MISDIRECTED_REQUEST, "unexpected Host header\n", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = url.path.rstrip("/") or "/"
        try:
            self._route(path, params)
        except BadRequest as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e), path)
        except NotFound as e:
            self._error(HTTPStatus.NOT_FOUND, str(e), path)
        except SaeembedError as e:  # e.g. the store is being written by another command right now
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(e), path)
        except Exception as e:  # a page must never answer with a traceback or a dropped connection
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"unexpected error ({type(e).__name__}: {e})", path)

    def _error(self, status, message: str, path: str) -> None:
        if path.startswith("/api/"):
            self._send(status, json.dumps({"error": message}) + "\n", "application/json")
        else:
            self._send(status, page("Error", [Section(f"{int(status)} {HTTPStatus(status).phrase}",
                                                      f'<p>{esc(message)}</p><p><a href="/">back to the feature list</a></p>')]))

    def _route(self, path: str, params: dict) -> None:
        b = self.browser
        if path == "/":
            self._send(HTTPStatus.OK, pages.index_html(b, params))
        elif m := re.fullmatch(r"/feature/(\d{1,9})", path):
            self._send(HTTPStatus.OK, pages.feature_html(b, int(m.group(1))))
        elif path.startswith("/doc/") or path.startswith("/api/doc/"):
            self._document(path, params)
        elif path == "/api/features":
            rows, total, hidden = b.search(
                params.get("q", ""), min_density=float_param(params, "min_density"),
                max_density=float_param(params, "max_density"), corpus=params.get("corpus") or None,
                order=params.get("order", "density"), offset=int_param(params, "offset", 0),
                limit=min(int_param(params, "limit", PAGE_SIZE), 1000), generic=flag_param(params, "generic"))
            body = {"total": total, "generic_hidden": hidden, "features": _json_frame(rows)}
            self._send(HTTPStatus.OK, json.dumps(body), "application/json")
        elif m := re.fullmatch(r"/api/feature/(\d{1,9})", path):
            d = b.feature(int(m.group(1)))
            body = {"feature": d["feature"], "corpora": _json_frame(d["corpora"]),
                    "exemplars": _json_frame(d["exemplars"]), "correlated": _json_frame(d["correlated"])}
            self._send(HTTPStatus.OK, json.dumps(body, default=str), "application/json")
        else:
            raise NotFound(f"no page at {path}")

    def _document(self, path: str, params: dict) -> None:
        """/doc/<corpus>/<doc_id> (and its /api twin); the old /doc/<corpus_id>/<doc_idx> redirects there."""
        api = path.startswith("/api/")
        rest = path.removeprefix("/api").removeprefix("/doc/")
        feature = int_param(params, "feature", None)
        generic = flag_param(params, "generic")
        named = split_doc_path(rest)
        if named is None:
            raise NotFound(f"no page at {path}: a document's address is /doc/<corpus>/<doc id>")
        try:
            d = self.browser.document(*named, feature)
        except NotFound:
            old = legacy_doc(rest)
            if old is None:
                raise
            corpus, doc_id = self.browser.legacy_document(*old)  # a corpus really named "3" was tried first
            self._send(HTTPStatus.FOUND, "", "text/plain; charset=utf-8",
                       {"Location": doc_url(corpus, doc_id, feature, api=api, generic=generic)})
            return
        if api:
            spans = [{"start": sp.start, "end": sp.end, "value": sp.value} for sp in d["spans"]]
            body = {"doc": d["doc"], "feature": feature, "spans": spans, "spans_from": d["spans_from"],
                    "note": d["note"], "activations": _json_frame(d["activations"])}
            self._send(HTTPStatus.OK, json.dumps(body), "application/json")
        else:
            self._send(HTTPStatus.OK, pages.document_html(b=self.browser, d=d, generic=generic))


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(store_path, *, host: str = "127.0.0.1", port: int = 8765, sae: str | None = None,
                allow_remote: bool = False) -> ThreadingHTTPServer:
    """A ready (not yet serving) browser server; port 0 picks a free port (see server.server_address).
    Loopback only (127.0.0.1, ::1, localhost) unless allow_remote; the Host header is checked either way."""
    listen = resolve(host)
    check_remote(listen, allow_remote)  # before the store is opened or anything is bound
    browser = FeatureBrowser(store_path, sae)
    handler = type("BoundHandler", (Handler,), {"browser": browser, "allowed_hosts": frozenset()})
    cls = _Server6 if listen.family == socket.AF_INET6 else ThreadingHTTPServer
    try:
        server = cls((listen.address, port), handler)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port or --host") from None
    server.daemon_threads = True
    server.loopback = listen.loopback
    handler.allowed_hosts = _allowed_hosts(listen, server.server_address[1])
    return server

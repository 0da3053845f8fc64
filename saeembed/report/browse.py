"""`saeembed browse`: a local, read-only feature browser served on the loopback interface.

Pages: search features by label / id / density / corpus; one feature (label, density per corpus,
exemplars with the activating token shaded, co-occurring features by NPMI); one document (its text
with every active feature's strongest token shaded). JSON twins under /api/ for scripts.

Read-only by construction: the store is opened read_only for each request (so other saeembed
commands can write between requests), only GET/HEAD are answered (other methods get 405), requests
whose Host header is not this server's are refused (DNS-rebinding), and all text is escaped.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import polars as pl

from saeembed.errors import InputError, SaeembedError
from saeembed.report import charts
from saeembed.report.data import exemplar_windows
from saeembed.report.highlight import Span, exemplar_block, highlight
from saeembed.report.html import CSP, Section, cards, esc, fmt, page, pct, table
from saeembed.report.listen import allowed_hosts as _allowed_hosts, check_remote, host_ok, resolve
from saeembed.store import SAEInfo, Store

PAGE_SIZE = 100


class BadRequest(InputError):
    """A malformed query parameter (answered 400)."""


class NotFound(InputError):
    """No such feature / document (answered 404)."""


@dataclass
class Stats:
    """Per-(corpus, feature) counts for one SAE, computed once and reused until the store changes."""

    key: tuple
    sae: SAEInfo
    corpora: pl.DataFrame   # corpus_id, corpus, n_docs (encoded)
    per_corpus: pl.DataFrame  # corpus_id, feature, docs, max_value, mean_value
    features: pl.DataFrame  # feature, docs, density, max_value, mean_value, n_corpora, label, label_source, score
    n_docs: int


class FeatureBrowser:
    """The data behind the browser; each call opens the store read-only and closes it again."""

    def __init__(self, store_path, sae: str | None = None):
        self.store_path = store_path
        self.sae_prefix = sae
        self._lock = threading.Lock()
        self._stats: Stats | None = None
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
        self._stats = Stats(key, sae, corpora, per_corpus, features, n_docs)
        return self._stats

    def stats(self) -> Stats:
        with self.open() as st:
            return self._load(st)

    # --- queries ----------------------------------------------------------------------------------

    def search(self, q: str = "", *, min_density: float | None = None, max_density: float | None = None,
               corpus: str | None = None, order: str = "density", offset: int = 0, limit: int = PAGE_SIZE
               ) -> tuple[pl.DataFrame, int]:
        """Features whose label contains `q` (case-insensitive) or whose id is `q` / `#q`; filtered by density
        (share of all encoded documents) and by a corpus they fire in. Returns (page of rows, total matches)."""
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
        return f.slice(offset, limit), f.height

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
        info = row.to_dicts()[0] if row.height else {"feature": feature, "docs": 0, "density": 0.0, "label": None}
        return {"feature": info, "corpora": per, "exemplars": ex, "correlated": co}

    def _correlated(self, st: Store, s: Stats, feature: int, *, top: int, min_support: int) -> pl.DataFrame:
        """Features that fire in the same documents, by NPMI of binary presence over all encoded documents."""
        co = st.cooccurring_features(s.sae.sae_key, feature, min_support=min_support)
        n = max(s.n_docs, 1)
        n1 = int(s.features.filter(pl.col("feature") == feature)["docs"][0])
        co = co.join(s.features.select("feature", "label", docs_other="docs"), on="feature", how="left")
        p11 = pl.col("together") / n
        pmi = (p11 / ((n1 / n) * (pl.col("docs_other") / n))).log()
        npmi = pl.when(p11 >= 1.0).then(1.0).otherwise(pmi / -(p11.log()))
        return (co.with_columns(npmi=npmi, support=pl.col("together"))
                .sort(["npmi", "feature"], descending=[True, False]).head(top)
                .select("feature", "label", "npmi", "support", "docs_other"))

    def document(self, corpus_id: int, doc_idx: int) -> dict:
        """One document with its active features (value, rel to the feature's max, span)."""
        # One connection for every read below, so the statistics and the rows agree.
        with self.open() as st:
            s = self._load(st)
            doc = st.document_at(corpus_id, doc_idx)
            if doc.is_empty():
                raise NotFound(f"no document {doc_idx} in corpus {corpus_id}")
            acts = st.document_activations(s.sae.sae_key, corpus_id, doc_idx)
        acts = (acts.join(s.features.select("feature", "label", "max_value", "density"), on="feature", how="left")
                .with_columns(rel=pl.col("value") / pl.col("max_value")))
        return {"doc": doc.to_dicts()[0], "activations": acts}


# --- HTML ------------------------------------------------------------------------------------------

def _nav(q: str = "") -> str:
    return (f'<form class="search" method="get" action="/"><input type="search" name="q" value="{esc(q)}" '
            f'placeholder="label words or feature id" size="32"><button type="submit">search</button></form>')


def _flink(feature, label=None) -> str:
    return f'<a href="/feature/{int(feature)}">#{int(feature)}</a>' + (f" {esc(label)}" if label else "")


def index_html(b: FeatureBrowser, params: dict) -> str:
    s = b.stats()
    q = params.get("q", "")
    min_d = _float(params, "min_density")
    max_d = _float(params, "max_density")
    corpus = params.get("corpus") or None
    order = params.get("order", "density")
    offset = _int(params, "offset", 0)
    rows, total = b.search(q, min_density=min_d, max_density=max_d, corpus=corpus, order=order, offset=offset)
    opts = "".join(f'<option value="{esc(c)}"{" selected" if c == corpus else ""}>{esc(c)}</option>'
                   for c in s.corpora["corpus"].to_list())
    order_opts = "".join(f'<option value="{o}"{" selected" if o == order else ""}>{o}</option>'
                         for o in ("density", "rare", "max", "feature"))
    form = (
        '<form class="search" method="get" action="/">'
        f'<input type="search" name="q" value="{esc(q)}" placeholder="label words or feature id" size="30">'
        f'<input type="number" step="any" min="0" max="1" name="min_density" value="{esc(params.get("min_density", ""))}" placeholder="min density">'
        f'<input type="number" step="any" min="0" max="1" name="max_density" value="{esc(params.get("max_density", ""))}" placeholder="max density">'
        f'<select name="corpus"><option value="">all corpora</option>{opts}</select>'
        f'<select name="order">{order_opts}</select><button type="submit">search</button></form>'
    )
    out = []
    for r in rows.to_dicts():
        r["feature"] = _flink(r["feature"])
        r["density"] = pct(r["density"])
        out.append(r)
    pager = ""
    if total > offset + PAGE_SIZE:
        nxt = dict(params, offset=str(offset + PAGE_SIZE))
        pager = f'<p><a href="/?{esc(urlencode(nxt))}">next {PAGE_SIZE} →</a></p>'
    corpora_rows = s.corpora.select("corpus", "n_docs").to_dicts()
    summary = {"SAE": s.sae.sae_hash, "model": s.sae.model, "hook": s.sae.hook, "latents": s.sae.d_sae,
               "documents": s.n_docs, "features that fire": s.features.height,
               "labelled": s.features.filter(pl.col("label").is_not_null()).height}
    sections = [
        Section("Store", cards(summary) + table(corpora_rows), id="store"),
        Section(f"Features ({total:,} match)", form + table(out, ["feature", "label", "docs", "density", "max_value",
                                                                  "mean_value", "n_corpora"],
                                                             raw={"feature"}, table_id="features") + pager,
                note="density = share of all encoded documents where the feature fires.", id="features"),
    ]
    return page("saeembed feature browser", sections, None, subtitle=str(b.store_path))


def feature_html(b: FeatureBrowser, feature: int) -> str:
    d = b.feature(feature)
    info = d["feature"]
    per = d["corpora"]
    figures = {"documents": info.get("docs", 0), "density": pct(info.get("density")),
               "max activation": info.get("max_value"), "label source": info.get("label_source"),
               "label score": info.get("score")}
    sections = [Section("Summary", _nav() + cards({k: v for k, v in figures.items() if v is not None}), id="summary")]
    if per.height:
        sections.append(Section("Corpora", charts.bar_chart(per["corpus"].to_list(), per["density"].to_list(),
                                                            value_label="share of the corpus's documents", percent=True)
                                 + table(per.to_dicts()), id="corpora"))
    ex = d["exemplars"]
    if ex is not None and ex.height:
        blocks = []
        for (corpus,), part in ex.group_by("corpus", maintain_order=True):
            items = "".join(
                exemplar_block(highlight(r["text"], [Span(r["span_start"], r["span_end"], r["rel"], feature)]
                                         if r["span_end"] > r["span_start"] else [], vmax=1.0),
                               f"doc {r['doc_id']} · activation {fmt(r['value'])}")
                + f'<a class="note" href="/doc/{int(r["corpus_id"])}/{int(r["doc_idx"])}">whole document →</a>'
                for r in part.iter_rows(named=True))
            blocks.append(f"<h3>{esc(corpus)}</h3>{items}")
        sections.append(Section("Exemplars", "".join(blocks), id="exemplars",
                                note="Strongest stored documents; the shaded token is where the feature peaks."))
    co = d["correlated"]
    if co is not None:
        rows = co.to_dicts()
        for r in rows:
            r["feature"] = _flink(r["feature"])
        sections.append(Section("Co-occurring features", table(rows, raw={"feature"}), id="correlated",
                                note="NPMI of presence in the same documents (1 = always together, 0 = independent); "
                                     "support = documents where both fire."))
    title = f"Feature #{feature}" + (f": {info['label']}" if info.get("label") else "")
    return page(title, sections, None, subtitle=str(b.store_path))


def document_html(b: FeatureBrowser, corpus_id: int, doc_idx: int) -> str:
    d = b.document(corpus_id, doc_idx)
    doc, acts = d["doc"], d["activations"]
    spans = [Span(r["span_start"], r["span_end"], r["rel"] or 0.0, r["feature"])
             for r in acts.iter_rows(named=True) if r["span_start"] is not None and r["span_end"] is not None]
    rows = acts.to_dicts()
    for r in rows:
        r["feature"] = _flink(r["feature"])
    sections = [
        Section("Text", exemplar_block(highlight(doc["text"], spans, vmax=1.0), f"{doc['corpus']} · doc {doc['doc_id']}"),
                note="Each active feature's strongest token is shaded by its activation relative to the feature's max.",
                id="text"),
        Section("Active features", table(rows, ["feature", "label", "value", "rel", "active_tokens", "density"],
                                         raw={"feature"}), id="features"),
    ]
    return page(f"Document {doc['doc_id']}", sections, None, subtitle=str(b.store_path))


def _float(params: dict, name: str) -> float | None:
    v = params.get(name)
    if v in (None, ""):
        return None
    try:
        out = float(v)
    except ValueError:
        raise BadRequest(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(out):
        raise BadRequest(f"{name} must be finite")
    return out


def _int(params: dict, name: str, default: int) -> int:
    v = params.get(name)
    if v in (None, ""):
        return default
    if not re.fullmatch(r"\d{1,9}", v):
        raise BadRequest(f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


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

    def _error(self, status, message: str, path: str) -> None:
        if path.startswith("/api/"):
            self._send(status, json.dumps({"error": message}) + "\n", "application/json")
        else:
            self._send(status, page("Error", [Section(f"{int(status)} {HTTPStatus(status).phrase}",
                                                      f'<p>{esc(message)}</p><p><a href="/">back to the feature list</a></p>')]))

    def _route(self, path: str, params: dict) -> None:
        b = self.browser
        if path == "/":
            self._send(HTTPStatus.OK, index_html(b, params))
        elif m := re.fullmatch(r"/feature/(\d{1,9})", path):
            self._send(HTTPStatus.OK, feature_html(b, int(m.group(1))))
        elif m := re.fullmatch(r"/doc/(\d{1,9})/(\d{1,9})", path):
            self._send(HTTPStatus.OK, document_html(b, int(m.group(1)), int(m.group(2))))
        elif path == "/api/features":
            rows, total = b.search(params.get("q", ""), min_density=_float(params, "min_density"),
                                   max_density=_float(params, "max_density"), corpus=params.get("corpus") or None,
                                   order=params.get("order", "density"), offset=_int(params, "offset", 0),
                                   limit=min(_int(params, "limit", PAGE_SIZE), 1000))
            self._send(HTTPStatus.OK, json.dumps({"total": total, "features": _json_frame(rows)}), "application/json")
        elif m := re.fullmatch(r"/api/feature/(\d{1,9})", path):
            d = b.feature(int(m.group(1)))
            body = {"feature": d["feature"], "corpora": _json_frame(d["corpora"]),
                    "exemplars": _json_frame(d["exemplars"]), "correlated": _json_frame(d["correlated"])}
            self._send(HTTPStatus.OK, json.dumps(body, default=str), "application/json")
        elif m := re.fullmatch(r"/api/doc/(\d{1,9})/(\d{1,9})", path):
            d = b.document(int(m.group(1)), int(m.group(2)))
            self._send(HTTPStatus.OK, json.dumps({"doc": d["doc"], "activations": _json_frame(d["activations"])}),
                       "application/json")
        else:
            raise NotFound(f"no page at {path}")


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

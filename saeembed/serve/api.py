"""What the server answers: the arguments each endpoint takes (checked, with the CLI's defaults), the
library call behind it, and keeping the in-process caches true to the store file.

search takes exactly the arguments of analysis.search_plan.planned_search; similar those of
analysis.retrieve.similar. Both return (results frame, plan frame or None)."""

from __future__ import annotations

import os

from saeembed.errors import InputError

_STR, _INT, _LIST = (str, type(None)), (int,), (list, type(None))
# name: (accepted types, default); the default ... means required
SEARCH_ARGS = {"corpus": ((str,), ...), "query": (_STR, None), "mode": (_STR, None), "feature": (_LIST, []),
               "not_feature": (_LIST, []), "where": (_STR, None), "top": (_INT, 20), "n_features": (_INT, 30),
               "match": ((str,), "auto"), "sae": (_STR, None), "length_control": ((str,), "residual")}
SIMILAR_ARGS = {"corpus": ((str,), ...), "doc_id": ((str,), ...), "features": (_LIST, None), "where": (_STR, None),
                "top": (_INT, 10), "sae": (_STR, None)}


def checked(spec: dict, given: dict) -> dict:
    """given with defaults filled in; InputError naming the first unknown, missing or mistyped argument."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise InputError(f"unknown argument {unknown[0]!r}; this endpoint takes {', '.join(spec)}")
    out = {}
    for name, (types, default) in spec.items():
        if name not in given:
            if default is ...:
                raise InputError(f"missing argument {name!r}")
            out[name] = list(default) if isinstance(default, list) else default
            continue
        value = given[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise InputError(f"argument {name!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, list) and not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise InputError(f"argument {name!r} must be a list of feature ids")
        out[name] = value
    return out


def search(store_path: str, given: dict):
    from saeembed.analysis.search_plan import planned_search

    args = checked(SEARCH_ARGS, given)
    with _open(store_path, read_only=False) as st:  # writable: feature and dense embeddings are cached on first use
        return planned_search(st, args.pop("corpus"), args.pop("query"), **args)


def similar(store_path: str, given: dict):
    from saeembed.analysis.retrieve import similar as nearest

    args = checked(SIMILAR_ARGS, given)
    with _open(store_path, read_only=True) as st:
        return nearest(st, args.pop("corpus"), args.pop("doc_id"), **args), None


ENDPOINTS = {"search": search, "similar": similar}


def warm(store_path: str) -> None:
    """Load the sentence model the query side of search uses (query embedding, dense and hybrid search)
    and run it once, so the first request does not pay for it."""
    from saeembed.encode.dense import get_embedder

    get_embedder(None).embed(["warm up"])
    _SEEN[store_path] = _signature(store_path)


# --- caches vs. the file ----------------------------------------------------------------------------
# The search modules cache FAISS indexes per process, keyed by corpus id and size. A short CLI run never
# sees the store change under it; a server does (another process re-ingests or re-encodes), so when the
# file changed since our last request those caches are dropped.

_SEEN: dict[str, tuple] = {}


def _signature(path: str) -> tuple:
    out = []
    for p in (path, path + ".wal"):
        try:
            s = os.stat(p)
            out.append((s.st_mtime_ns, s.st_size))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


class _open:
    """The store for one request, opened here and closed after it; caches dropped first when another
    process wrote to the file since our last request."""

    def __init__(self, path: str, *, read_only: bool):
        self.path, self.read_only = path, read_only

    def __enter__(self):
        from saeembed.store import Store

        if self.path in _SEEN and _SEEN[self.path] != _signature(self.path):
            forget_caches()
        self.st = Store(self.path, read_only=self.read_only, create=False)
        return self.st

    def __exit__(self, *exc):
        self.st.close()
        _SEEN[self.path] = _signature(self.path)


def forget_caches() -> None:
    """Forget what the process keeps from a store file that another process has changed."""
    from saeembed.analysis.retrieve import forget_indexes
    from saeembed.interp.match_lexical import forget_words

    forget_indexes()  # rebuilt from the store's cached embeddings on the next dense search
    forget_words()

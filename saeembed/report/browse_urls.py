"""The feature browser's URLs and query parameters: built and parsed in one place.

Documents are addressed by the user's own ids: /doc/<corpus>/<doc_id>, each part percent-quoted with
nothing left safe (ids hold '/', spaces, quotes, any unicode), so a path splits on '/' before unquoting.
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote, unquote, urlencode

from saeembed.errors import InputError


class BadRequest(InputError):
    """A malformed query parameter (answered 400)."""


class NotFound(InputError):
    """No such feature / document (answered 404)."""


def part(text) -> str:
    return quote(str(text), safe="")


def doc_url(corpus: str, doc_id: str, feature: int | None = None, *, api: bool = False, generic: bool = False) -> str:
    """/doc/<corpus>/<doc_id>, with ?feature=N to highlight one feature and generic=1 to list generic ones."""
    query = {k: v for k, v in (("feature", feature), ("generic", 1 if generic else None)) if v is not None}
    tail = f"?{urlencode(query)}" if query else ""
    return f"{'/api' if api else ''}/doc/{part(corpus)}/{part(doc_id)}{tail}"


def feature_url(feature: int) -> str:
    return f"/feature/{int(feature)}"


def split_doc_path(rest: str) -> tuple[str, str] | None:
    """'<quoted corpus>/<quoted doc_id>' (the path after /doc/) → (corpus, doc_id); None when it is not two parts."""
    parts = rest.split("/")
    if len(parts) != 2 or not all(parts):
        return None
    try:
        return unquote(parts[0], errors="strict"), unquote(parts[1], errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the document address is not valid percent-encoded UTF-8") from None


def legacy_doc(rest: str) -> tuple[int, int] | None:
    """The old internal form '<corpus_id>/<doc_idx>' → numbers; None when `rest` is not that."""
    m = re.fullmatch(r"(\d{1,9})/(\d{1,9})", rest)
    return (int(m.group(1)), int(m.group(2))) if m else None


def float_param(params: dict, name: str) -> float | None:
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


def int_param(params: dict, name: str, default: int | None) -> int | None:
    v = params.get(name)
    if v in (None, ""):
        return default
    if not re.fullmatch(r"#?\d{1,9}", v):
        raise BadRequest(f"{name} must be a non-negative integer, got {v!r}")
    return int(v.lstrip("#"))


def flag_param(params: dict, name: str) -> bool:
    v = (params.get(name) or "").strip().lower()
    if v in ("", "0", "no", "false", "off"):
        return False
    if v in ("1", "yes", "true", "on"):
        return True
    raise BadRequest(f"{name} must be 1 or 0, got {params.get(name)!r}")

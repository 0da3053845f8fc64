"""The names a user gives to what the store keeps (corpora, saved clusterings, classifiers), checked in one place."""

from __future__ import annotations

import re

from saeembed.errors import InputError

# kind -> (allowed names, strip surrounding spaces first, the error after "<kind> name '<name>'")
_RULES = {
    "corpus": (re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,200}"), True, None),  # no control characters (C0, DEL, C1)
    "clustering": (re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}"), False,
                   ": use letters, digits and _ (not starting with a digit), ≤ 64 chars"),
    "classifier": (re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}"), True,
                   " is not usable: use 1-100 letters, digits, '_' or '-', starting with a letter"),
}


def check_name(name: str, kind: str) -> str:
    """A corpus, clustering or classifier name (kind), checked; clustering and classifier names become
    filter columns, a corpus name is shown everywhere."""
    pattern, strip, rule = _RULES[kind]
    name = str(name).strip() if strip else name
    if not pattern.fullmatch(name or ""):
        if rule is None:
            raise InputError(f"a {kind} name must be 1-200 printable characters")
        raise InputError(f"{kind} name {name!r}{rule}")
    return name

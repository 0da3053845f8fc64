"""Names a corpus's metadata columns may not take, because saeembed gives them another meaning.

A metadata column named like a built-in filter column (n_tokens, n_chars, doc_id) could never be
filtered on, and one named like a feature reference (f12) or a saved clustering (cluster.NAME) would
silently shadow it; the columns the store keeps beside the metadata (doc_idx, corpus_id) would clash
in its tables. Such names are refused at ingest, with the fix (rename or drop the column) in the message.
"""

from __future__ import annotations

import re
import shlex

from saeembed.errors import InputError

DOCUMENT_COLUMNS = ("doc_id", "text")  # every Documents frame starts with these
INTERNAL_COLUMNS = ("doc_idx", "n_chars", "corpus_id", "n_tokens")  # stored or computed beside the metadata
FEATURE_NAME = re.compile(r"f\d+")  # a filter names feature 12 as f12
CLUSTER_PREFIX = "cluster."  # a filter names a saved clustering NAME as cluster.NAME


def reserved_reason(name: str) -> str | None:
    """Why a metadata column may not be called `name`, or None when it may."""
    if name in INTERNAL_COLUMNS or name in DOCUMENT_COLUMNS:
        return "is a name saeembed uses internally (a built-in column of every corpus)"
    if FEATURE_NAME.fullmatch(name):
        return f"is a name saeembed reserves: filters read {name} as feature {int(name[1:])}"
    if name.startswith(CLUSTER_PREFIX):
        clustering = name[len(CLUSTER_PREFIX):]
        return f"is a name saeembed reserves: filters read {name} as the saved clustering {clustering!r}"
    return None


def reserved_error(name: str, where: str = "") -> InputError | None:
    """The InputError for a metadata column with a reserved name (None when the name is allowed);
    `where` (e.g. the file) prefixes the message."""
    reason = reserved_reason(name)
    if reason is None:
        return None
    new = f"{name}_meta" if not name.startswith(CLUSTER_PREFIX) else name.replace(".", "_", 1)
    return InputError(
        f"{where + ': ' if where else ''}metadata column {name!r} {reason}; rename it "
        f"(--rename {shlex.quote(f'{name}={new}')}, or rename={{{name!r}: {new!r}}} in Python) "
        f"or drop it (--drop-column {shlex.quote(name)})"
    )

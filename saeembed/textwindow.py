"""Text windows around an activating span (the one helper every module cuts windows with)."""

from __future__ import annotations


def snippet(text: str, start: int | None, end: int | None, width: int = 60) -> str:
    """A one-line window of `text` around [start, end) with the span marked «…»."""
    if start is None or end is None or start < 0 or end > len(text) or start >= end:
        body = text[: 2 * width]
        return " ".join(body.split()) + ("…" if len(text) > 2 * width else "")
    left = max(0, start - width)
    right = min(len(text), end + width)
    out = ("…" if left else "") + text[left:start] + "«" + text[start:end] + "»" + text[end:right]
    out += "…" if right < len(text) else ""
    return " ".join(out.split())

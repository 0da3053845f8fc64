"""Text windows around an activating span (the one helper every module cuts windows with)."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s")  # the characters str.isspace() accepts


def word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow a token's character span to whole words (a WordPiece '##ing' becomes its word)."""
    start, end = max(0, start), min(len(text), end)
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end


def window(
    text: str, start: int | None, end: int | None, width: int = 60, *,
    words: bool = False, fold: bool = False, ellipsis: bool = True, mark: tuple[str, str] | None = None,
) -> tuple[str, tuple[int, int] | None]:
    """About `width` characters each side of [start, end) → (window, the span's offsets inside it).

    words: grow the span to whole words and cut the window at spaces. ellipsis: "…" where the text was
    cut. mark: (left, right) strings put around the span; the offsets are then None. fold: whitespace
    becomes spaces; where no offsets are returned (marked, or no span) runs of it become one space,
    otherwise each character is replaced so the offsets hold. Without a valid span: the first
    2·width characters and None."""
    text = text or ""
    dots = "…" if ellipsis else ""
    if start is None or end is None or not 0 <= start < end <= len(text):
        head = text[: 2 * width]
        return (" ".join(head.split()) if fold else head) + (dots if len(text) > 2 * width else ""), None
    if fold and not mark:
        text = _SPACE.sub(" ", text)
    if words:
        start, end = word_bounds(text, start, end)
    left, right = max(0, start - width), min(len(text), end + width)
    if words:
        cut = text.find(" ", left, start) if left > 0 else -1
        left = cut + 1 if cut >= 0 else left
        cut = text.rfind(" ", end, right) if right < len(text) else -1
        right = cut if cut > end else right
    prefix = dots if left else ""
    suffix = dots if right < len(text) else ""
    if mark:
        body = prefix + text[left:start] + mark[0] + text[start:end] + mark[1] + text[end:right] + suffix
        return (" ".join(body.split()) if fold else body), None
    return prefix + text[left:right] + suffix, (len(prefix) + start - left, len(prefix) + end - left)


def snippet(text: str, start: int | None, end: int | None, width: int = 60) -> str:
    """A one-line window of `text` around [start, end) with the span marked «…»."""
    return window(text, start, end, width, fold=True, mark=("«", "»"))[0]

"""Document text with the activating tokens highlighted, shaded by activation strength.

Input is the raw text and character spans with values (what the store keeps per document and feature:
the span of the strongest token). Output is escaped HTML: the text can hold anything, `<script>`
included, and renders as text.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

from saeembed.report.html import esc, fmt
from saeembed.textwindow import window as text_window


class Span(NamedTuple):
    start: int
    end: int
    value: float
    feature: int | None = None


def highlight(text: str, spans: Iterable[Span | tuple], *, vmax: float | None = None) -> str:
    """Escaped `text` with each span wrapped in <mark class="act"> whose shade is value / vmax.

    Overlapping spans are split at their edges; a character covered by several spans takes the strongest.
    Spans outside the text are clipped; empty ones ignored."""
    text = text or ""
    spans = [Span(*s) for s in spans]
    spans = [Span(max(0, s.start), min(len(text), s.end), float(s.value), s.feature)
             for s in spans if s.start is not None and s.end is not None]
    spans = [s for s in spans if s.end > s.start]
    if not spans:
        return esc(text)
    vmax = vmax if vmax and vmax > 0 else max(s.value for s in spans) or 1.0
    cuts = sorted({0, len(text), *(s.start for s in spans), *(s.end for s in spans)})
    out = []
    for lo, hi in zip(cuts, cuts[1:]):
        piece = text[lo:hi]
        cover = [s for s in spans if s.start <= lo and s.end >= hi]
        if not cover:
            out.append(esc(piece))
            continue
        best = max(cover, key=lambda s: s.value)
        shade = max(0.0, min(1.0, best.value / vmax))
        tip = "; ".join(
            (f"feature {s.feature}: " if s.feature is not None else "activation ") + fmt(s.value)
            for s in sorted(cover, key=lambda s: -s.value)
        )
        feat = f' data-feature="{best.feature}"' if best.feature is not None else ""
        out.append(f'<mark class="act" style="--i:{shade:.2f}" data-v="{best.value:.4g}"{feat} title="{esc(tip)}">'
                   f"{esc(piece)}</mark>")
    return "".join(out)


def window(text: str, start: int | None, end: int | None, width: int = 80) -> tuple[str, int, int]:
    """A window of about `width` characters each side of [start, end), ellipses where cut, with the span's
    position inside the window. Without a span, the start of the text and (0, 0)."""
    body, span = text_window(text, start, end, width)
    return (body, *(span or (0, 0)))


def marked(snippet: str, *, value: float | None = None, vmax: float | None = None) -> str:
    """A snippet whose spans are marked «like this» (the analyses' text form) → escaped HTML with highlights.

    Without values every marked span is shaded fully (or by value / vmax when both are given)."""
    snippet = snippet or ""
    text, spans, pos, i = [], [], 0, 0
    shade = value if value is not None else 1.0
    while i < len(snippet):
        ch = snippet[i]
        if ch == "«":
            close = snippet.find("»", i + 1)
            if close < 0:  # unbalanced: keep the character as text
                text.append(ch)
                pos += 1
                i += 1
                continue
            inner = snippet[i + 1:close]
            spans.append(Span(pos, pos + len(inner), shade))
            text.append(inner)
            pos += len(inner)
            i = close + 1
            continue
        text.append(ch)
        pos += 1
        i += 1
    return highlight("".join(text), spans, vmax=vmax if value is not None else 1.0)


def exemplar_block(html_text: str, meta: str | None = None) -> str:
    """One exemplar: highlighted text with a small caption (document id, value…)."""
    caption = f'<span class="meta">{esc(meta)}</span>' if meta else ""
    return f'<div class="ex">{caption}{html_text}</div>'

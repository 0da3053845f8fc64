"""Plots as inline SVG strings, drawn in Python (no JS library, nothing fetched).

Every mark carries a class the tests count (`rect.bar`, `circle.pt`, `path.curve`, `rect.cell`) and a
<title> so hovering shows the exact numbers. All text is escaped.
"""

from __future__ import annotations

import math
from typing import Sequence

from saeembed.report.html import esc, fmt

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#2f4b7c", "#a05195", "#66a61e", "#d45087", "#1b9e77", "#7570b3", "#e6ab02"]
NOISE = "#b8bec9"
A_COLOR, B_COLOR = "#3b6fd8", "#e0762b"


def color_for(group, *, noise_value=-1) -> str:
    if group is None or group == noise_value:
        return NOISE
    return PALETTE[hash_group(group) % len(PALETTE)]


def hash_group(group) -> int:
    """Stable colour index: ints map to themselves, strings by a fixed checksum (not Python's salted hash)."""
    if isinstance(group, int):
        return group
    return sum(ord(c) * (i + 1) for i, c in enumerate(str(group)))


def trunc(text, n: int) -> str:
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _label(text, n: int) -> str:
    """Escaped label text, shortened to n characters with the full text as a tooltip when cut."""
    short = trunc(text, n)
    full = "" if text is None else str(text)
    return esc(short) + (f"<title>{esc(full)}</title>" if short != " ".join(full.split()) else "")


def _svg(width: float, height: float, body: str, cls: str, label: str) -> str:
    return (f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{esc(label)}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}">{body}</svg>')


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = _nice_max((hi - lo) / n)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-12:
        out.append(round(v, 10))
        v += step
    return out


def bar_chart(labels: Sequence[str], values: Sequence[float], *, value_label: str = "value", percent: bool = False,
              width: int = 760, label_width: int = 300, row: int = 22, color: str = A_COLOR) -> str:
    """Horizontal ranked bars, one per item, largest scale at the top item's value."""
    n = len(values)
    if n == 0:
        return '<p class="empty">(nothing to plot)</p>'
    top, vmax = 34, _nice_max(max(max(values), 0))
    plot_w = width - label_width - 70
    height = top + n * row + 10
    parts = [_x_axis(label_width, plot_w, top, height - 10, 0, vmax, percent, value_label)]
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = top + i * row
        w = max(0.0, v) / vmax * plot_w
        shown = f"{100 * v:.1f}%" if percent else fmt(v)
        parts.append(
            f'<g class="bar-row"><text class="bar-label" x="{label_width - 6}" y="{y + row * 0.68:.1f}" text-anchor="end">'
            f'{_label(lab, 46)}</text>'
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{color}">'
            f'<title>{esc(lab)}: {esc(value_label)} {esc(shown)}</title></rect>'
            f'<text class="muted" x="{label_width + w + 4:.1f}" y="{y + row * 0.68:.1f}">{esc(shown)}</text></g>'
        )
    return _svg(width, height, "".join(parts), "bar-chart", f"bar chart of {value_label}")


def paired_bar_chart(labels: Sequence[str], a: Sequence[float], b: Sequence[float], *, a_name: str, b_name: str,
                     percent: bool = True, width: int = 760, label_width: int = 300, row: int = 30,
                     value_label: str = "share of documents") -> str:
    """Two bars per item (side A above side B) on one scale: e.g. a feature's frequency in each corpus."""
    n = len(labels)
    if n == 0:
        return '<p class="empty">(nothing to plot)</p>'
    top = 34
    vmax = _nice_max(max([0.0, *a, *b]))
    plot_w = width - label_width - 70
    height = top + n * row + 10
    half = (row - 6) / 2
    parts = [_x_axis(label_width, plot_w, top, height - 10, 0, vmax, percent, value_label)]
    for i, lab in enumerate(labels):
        y = top + i * row
        row_parts = [f'<text class="bar-label" x="{label_width - 6}" y="{y + row * 0.6:.1f}" text-anchor="end">'
                     f'{_label(lab, 46)}</text>']
        for j, (v, name, cls) in enumerate(((a[i], a_name, "bar-a"), (b[i], b_name, "bar-b"))):
            v = 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v
            w = max(0.0, v) / vmax * plot_w
            shown = f"{100 * v:.1f}%" if percent else fmt(v)
            yy = y + 3 + j * half
            row_parts.append(
                f'<rect class="bar {cls}" x="{label_width}" y="{yy:.1f}" width="{w:.1f}" height="{half - 1:.1f}">'
                f'<title>{esc(lab)} — {esc(name)}: {esc(shown)}</title></rect>'
                f'<text class="muted" font-size="10" x="{label_width + w + 4:.1f}" y="{yy + half - 3:.1f}">{esc(shown)}</text>'
            )
        parts.append('<g class="bar-row">' + "".join(row_parts) + "</g>")
    legend = (f'<div class="legend"><span><i style="background:{A_COLOR}"></i>{esc(a_name)}</span>'
              f'<span><i style="background:{B_COLOR}"></i>{esc(b_name)}</span></div>')
    return legend + _svg(width, height, "".join(parts), "bar-chart paired", f"{a_name} vs {b_name}")


def diverging_bar_chart(labels: Sequence[str], values: Sequence[float], *, value_label: str = "weight",
                        width: int = 760, label_width: int = 300, row: int = 22) -> str:
    """Signed bars from a centre line (positive right in A's colour, negative left in B's): classifier weights."""
    n = len(values)
    if n == 0:
        return '<p class="empty">(nothing to plot)</p>'
    top = 34
    vmax = _nice_max(max(abs(v) for v in values) or 1.0)
    plot_w = width - label_width - 60
    mid = label_width + plot_w / 2
    height = top + n * row + 10
    parts = [f'<line class="axis" x1="{mid:.1f}" x2="{mid:.1f}" y1="{top - 4}" y2="{height - 10}"/>',
             f'<text class="muted" x="{mid:.1f}" y="14" text-anchor="middle">{esc(value_label)} (±{fmt(vmax)})</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = top + i * row
        w = abs(v) / vmax * plot_w / 2
        x = mid if v >= 0 else mid - w
        cls = "bar bar-a" if v >= 0 else "bar bar-b"
        parts.append(
            f'<g class="bar-row"><text class="bar-label" x="{label_width - 6}" y="{y + row * 0.68:.1f}" text-anchor="end">'
            f'{_label(lab, 46)}</text>'
            f'<rect class="{cls}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}">'
            f'<title>{esc(lab)}: {esc(value_label)} {esc(fmt(v))}</title></rect></g>'
        )
    return _svg(width, height, "".join(parts), "bar-chart diverging", f"{value_label} per item")


def _x_axis(x0: float, w: float, top: float, bottom: float, lo: float, hi: float, percent: bool, label: str) -> str:
    out = [f'<text class="muted" x="{x0}" y="12">{esc(label)}</text>']
    for t in _ticks(lo, hi, 4):
        x = x0 + (t - lo) / (hi - lo) * w
        shown = f"{100 * t:.0f}%" if percent else fmt(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top - 2}" y2="{bottom}"/>'
                   f'<text class="muted" font-size="10" x="{x:.1f}" y="{top - 5}" text-anchor="middle">{esc(shown)}</text>')
    return "".join(out)


def scatter(xs: Sequence[float], ys: Sequence[float], groups: Sequence, *, titles: Sequence[str] | None = None,
            group_names: dict | None = None, width: int = 720, height: int = 520, noise_value=-1) -> str:
    """2-D map of points coloured by group (noise in grey), with a legend."""
    n = len(xs)
    if n == 0:
        return '<p class="empty">(nothing to plot)</p>'
    pad = 16
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    xr = (x_hi - x_lo) or 1.0
    yr = (y_hi - y_lo) or 1.0
    parts = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fbfcfd" stroke="#dfe3ea"/>']
    # Noise first so the clusters are drawn on top of it.
    order = sorted(range(n), key=lambda i: groups[i] != noise_value)
    for i in order:
        x = pad + (xs[i] - x_lo) / xr * (width - 2 * pad)
        y = height - pad - (ys[i] - y_lo) / yr * (height - 2 * pad)
        g = groups[i]
        tip = titles[i] if titles is not None else f"group {g}"
        parts.append(f'<circle class="pt" data-group="{esc(g)}" cx="{x:.1f}" cy="{y:.1f}" r="3.2" '
                     f'fill="{color_for(g, noise_value=noise_value)}" fill-opacity="0.8"><title>{esc(tip)}</title></circle>')
    names = group_names or {}
    seen = sorted(set(groups), key=lambda g: (g == noise_value, hash_group(g) if not isinstance(g, int) else g))
    legend = "".join(
        f'<span><i style="background:{color_for(g, noise_value=noise_value)}"></i>'
        f'{esc(names.get(g, "noise" if g == noise_value else f"cluster {g}"))}</span>' for g in seen
    )
    return f'<div class="legend">{legend}</div>' + _svg(width, height, "".join(parts), "scatter", "2-D map of documents")


def line_chart(curves: dict[str, tuple[Sequence[float], Sequence[float]]], *, x_label: str, y_label: str,
               width: int = 560, height: int = 400, x_range=(0.0, 1.0), y_range=(0.0, 1.0),
               points: dict[str, tuple[float, float]] | None = None, baseline: float | None = None) -> str:
    """Curves on fixed axes (PR curves: recall on x, precision on y), a legend, optional marked points."""
    ml, mr, mt, mb = 50, 14, 14, 40
    pw, ph = width - ml - mr, height - mt - mb
    (x0, x1), (y0, y1) = x_range, y_range

    def sx(v): return ml + (v - x0) / ((x1 - x0) or 1) * pw
    def sy(v): return mt + ph - (v - y0) / ((y1 - y0) or 1) * ph

    parts = []
    for t in _ticks(x0, x1, 5):
        parts.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{mt}" y2="{mt + ph}"/>'
                     f'<text class="muted" font-size="10" x="{sx(t):.1f}" y="{mt + ph + 14}" text-anchor="middle">{fmt(t)}</text>')
    for t in _ticks(y0, y1, 5):
        parts.append(f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>'
                     f'<text class="muted" font-size="10" x="{ml - 6}" y="{sy(t) + 3:.1f}" text-anchor="end">{fmt(t)}</text>')
    parts.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" class="axis"/>'
                 f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">{esc(x_label)}</text>'
                 f'<text transform="translate(12 {mt + ph / 2}) rotate(-90)" text-anchor="middle">{esc(y_label)}</text>')
    if baseline is not None:
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(baseline):.1f}" y2="{sy(baseline):.1f}" stroke="#9aa3b2" '
                     f'stroke-dasharray="4 3"><title>chance level {fmt(baseline)}</title></line>')
    legend = []
    for k, (name, (xs, ys)) in enumerate(curves.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [(sx(x), sy(y)) for x, y in zip(xs, ys) if x is not None and y is not None]
        if not pts:
            continue
        d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        parts.append(f'<path class="curve" data-name="{esc(name)}" d="{d}" fill="none" stroke="{color}" stroke-width="2">'
                     f'<title>{esc(name)}</title></path>')
        legend.append(f'<span><i style="background:{color}"></i>{esc(name)}</span>')
    for k, (name, (x, y)) in enumerate((points or {}).items()):
        parts.append(f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="none" stroke="#1d2330" stroke-width="1.5">'
                     f'<title>{esc(name)}: {esc(x_label)} {fmt(x)}, {esc(y_label)} {fmt(y)}</title></circle>')
    return f'<div class="legend">{"".join(legend)}</div>' + _svg(width, height, "".join(parts), "line-chart", f"{y_label} vs {x_label}")


def heatmap(row_labels: Sequence[str], col_labels: Sequence[str], matrix: Sequence[Sequence[float | None]], *,
            vmin: float = -1.0, vmax: float = 1.0, value_label: str = "value", cell: int = 22,
            label_width: int = 240, flagged: set[tuple[int, int]] | None = None) -> str:
    """A matrix of coloured cells (blue negative, white 0, red positive); empty cells for missing values.
    `flagged` cells get an outline (e.g. unexpected pairs)."""
    nr, nc = len(row_labels), len(col_labels)
    if nr == 0 or nc == 0:
        return '<p class="empty">(nothing to plot)</p>'
    top = 150
    width = label_width + nc * cell + 10
    height = top + nr * cell + 10
    flagged = flagged or set()
    parts = []
    for j, lab in enumerate(col_labels):
        x = label_width + j * cell + cell * 0.65
        parts.append(f'<text transform="translate({x:.1f} {top - 6}) rotate(-55)" font-size="11">{_label(lab, 24)}</text>')
    for i, lab in enumerate(row_labels):
        y = top + i * cell
        parts.append(f'<text x="{label_width - 6}" y="{y + cell * 0.7:.1f}" text-anchor="end" font-size="11">'
                     f'{_label(lab, 36)}</text>')
        for j in range(nc):
            v = matrix[i][j]
            x = label_width + j * cell
            if v is None or (isinstance(v, float) and math.isnan(v)):
                parts.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="#f3f4f6"/>')
                continue
            stroke = ' stroke="#1d2330" stroke-width="2"' if (i, j) in flagged else ""
            parts.append(f'<rect class="cell" x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="{_diverging(v, vmin, vmax)}"{stroke}><title>{esc(row_labels[i])} × {esc(col_labels[j])}: '
                         f'{esc(value_label)} {fmt(v)}</title></rect>')
    return _svg(width, height, "".join(parts), "heatmap", f"heatmap of {value_label}")


def _diverging(v: float, vmin: float, vmax: float) -> str:
    """White at 0, blue towards vmin, red towards vmax."""
    if v >= 0:
        t = min(1.0, v / vmax) if vmax > 0 else 0.0
        r, g, b = 255, int(255 - t * (255 - 90)), int(255 - t * (255 - 70))
        r = int(255 - t * (255 - 200))
    else:
        t = min(1.0, v / vmin) if vmin < 0 else 0.0
        r, g, b = int(255 - t * (255 - 60)), int(255 - t * (255 - 110)), int(255 - t * (255 - 200))
    return f"rgb({r},{g},{b})"

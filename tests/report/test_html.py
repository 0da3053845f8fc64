"""Page pieces without a browser: escaping, highlighting, number formats, charts' marks, atomic writes."""

import re

import polars as pl
import pytest

from saeembed.errors import InputError
from saeembed.report import charts
from saeembed.report.highlight import Span, highlight, marked, window
from saeembed.report.html import Section, fmt, page, table, write_report


def test_highlight_escapes_and_shades_by_value():
    text = "say <script>x</script> hello world"
    html = highlight(text, [Span(23, 28, 2.0, 7), Span(29, 34, 1.0, 9)], vmax=2.0)
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    marks = re.findall(r'<mark class="act" style="--i:([0-9.]+)"[^>]*data-feature="(\d+)"[^>]*>([^<]*)</mark>', html)
    assert marks == [("1.00", "7", "hello"), ("0.50", "9", "world")]


def test_highlight_overlaps_take_the_strongest_and_clip():
    html = highlight("abcdef", [Span(0, 4, 1.0, 1), Span(2, 99, 3.0, 2), Span(5, 5, 9.0, 3)])
    # "ab" only by feature 1, "cd" by both (2 wins), "ef" by 2 (clipped at the end); the empty span is dropped.
    marks = re.findall(r'data-feature="(\d+)"[^>]*>([^<]*)</mark>', html)
    assert marks == [("1", "ab"), ("2", "cd"), ("2", "ef")]
    assert 'style="--i:0.33"' in html  # 1.0 / vmax 3.0


def test_marked_snippet_and_window():
    html = marked("…the «<b>» and «x» end «open")
    assert html.count('<mark class="act"') == 2 and "&lt;b&gt;" in html and "«open" in html
    text = "0123456789" * 3
    body, s, e = window(text, 12, 14, width=5)
    assert body[s:e] == "23" and body.startswith("…") and body.endswith("…")
    assert window("short", None, None) == ("short", 0, 0)


def test_fmt_and_table_ids():
    assert fmt(1234567) == "1,234,567" and fmt(0.12345) == "0.123" and fmt(None) == "" and fmt(float("nan")) == ""
    assert fmt(2.5e-5) == "2.50e-05" and fmt(True) == "yes"
    html = table([{"feature": 2530, "docs": 2530, "label": "<i>x</i>"}])
    assert ">2530<" in html and ">2,530<" in html and "&lt;i&gt;x&lt;/i&gt;" in html


def test_page_is_self_contained_and_escapes_titles():
    html = page("<t>", [Section("s<1>", "<p>ok</p>", note="n<2>", id="a")], {"parameters": {"q": "<script>"}})
    assert "<t>" not in html and "&lt;t&gt;" in html and "s&lt;1&gt;" in html
    assert html.count("<script>") == 1 and "&lt;script&gt;" in html  # only our own script block
    urls = re.findall(r"(?:src|href)=\"(?!#)([^\"]+)\"", html)
    assert urls == []  # no external (or any non-anchor) resources
    assert "Content-Security-Policy" in html and "saeembed_version" in html


def test_charts_draw_one_mark_per_item():
    bars = charts.bar_chart(["a", "b<", "c"], [0.5, 0.25, 0.0], percent=True)
    assert bars.count('class="bar"') == 3 and "b&lt;" in bars and "50.0%" in bars
    paired = charts.paired_bar_chart(["x", "y"], [0.1, 0.2], [0.3, float("nan")], a_name="A", b_name="B")
    assert paired.count('class="bar bar-a"') == 2 and paired.count('class="bar bar-b"') == 2
    sc = charts.scatter([0, 1, 2, 3], [0, 1, 0, 1], [0, 0, 1, -1])
    assert sc.count('class="pt"') == 4 and "noise" in sc and charts.NOISE in sc
    lc = charts.line_chart({"sae": ([0, 0.5, 1], [1, 0.8, 0.5]), "dense": ([0, 1], [1, 0.4])}, x_label="recall", y_label="precision")
    assert lc.count('class="curve"') == 2
    hm = charts.heatmap(["a", "b"], ["a", "b"], [[None, 0.5], [0.5, None]], flagged={(0, 1)})
    assert hm.count('class="cell"') == 2 and 'stroke-width="2"' in hm
    assert "nothing to plot" in charts.bar_chart([], [])


def test_write_report_atomic_and_checks_name(tmp_path):
    out = write_report("<html></html>", tmp_path / "r.html")
    assert out.read_text() == "<html></html>" and not list(tmp_path.glob("*.partial"))
    with pytest.raises(InputError, match=r"\.html"):
        write_report("x", tmp_path / "r.txt")
    with pytest.raises(InputError, match="does not exist"):
        write_report("x", tmp_path / "nope" / "r.html")


def test_diff_report_shows_both_rankings_the_length_finding_and_separability(store):
    from saeembed.report.build import build_diff_report
    from tests.analysis.test_diff import _length_planted

    _length_planted(store)
    html = build_diff_report(store, "A", "B", top=3, group_column="prompt").html
    text = re.sub(r"<[^>]+>", " ", html)
    assert "What differs (length included): more frequent in A" in text
    assert "What differs beyond length: more frequent in A" in text
    assert "Finding: A&#x27;s documents are" in text or "Finding: A's documents are" in text
    assert "Separability" in text and "grouped by prompt" in text and "length alone" in text
    assert text.index("Separability") < text.index("What differs (length included)")

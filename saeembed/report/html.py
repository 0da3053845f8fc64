"""The page shell of every report: one self-contained HTML document (inline CSS, JS and SVG).

Nothing in a page may reach the network: there are no external URLs at all, and a Content-Security-
Policy meta tag forbids fetches so a stray one fails loudly instead of leaking. Every string that came
from data goes through `esc`.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from saeembed import __version__
from saeembed.errors import InputError

# No network: only inline styles/scripts and data: images may load.
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'"


def esc(value) -> str:
    """Text (anything) → safe HTML text or attribute value."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """Numbers for people: ints with separators, floats to a few significant digits, blanks for None/NaN."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) >= 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value)


def pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * value:.1f}%"


@dataclass
class Section:
    """One block of a page: a heading, optional one-line explanation, and HTML body."""

    title: str
    body: str
    note: str | None = None
    id: str | None = None

    def render(self) -> str:
        anchor = f' id="{esc(self.id)}"' if self.id else ""
        note = f'<p class="note">{esc(self.note)}</p>' if self.note else ""
        return f'<section{anchor}><h2>{esc(self.title)}</h2>{note}{self.body}</section>'


# Identifiers print as they are (no thousands separators: "feature 2530", not "2,530").
ID_COLUMNS = frozenset({"feature", "feature_a", "feature_b", "cluster", "doc_idx", "doc_id", "rank", "run_id"})


def table(rows: list[dict], columns: list[str] | None = None, *, cls: str = "data", raw: set[str] = frozenset(),
          headers: dict[str, str] | None = None, max_rows: int | None = None, table_id: str | None = None,
          filter_box: bool = False) -> str:
    """A sortable HTML table. Cells are escaped unless their column is in `raw` (already-safe HTML)."""
    if not rows:
        return '<p class="empty">(no rows)</p>'
    columns = columns or list(rows[0])
    headers = headers or {}
    head = "".join(f'<th data-col="{esc(c)}">{esc(headers.get(c, c))}</th>' for c in columns)
    body = []
    for row in rows[: max_rows or len(rows)]:
        cells = []
        for c in columns:
            v = row.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            sort = f' data-v="{esc(v)}"' if num else ""
            text = v if c in raw else esc(str(v) if c in ID_COLUMNS and v is not None else fmt(v))
            cells.append(f'<td class="{"num" if num else "txt"}"{sort}>{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = ""
    if max_rows and len(rows) > max_rows:
        more = f'<p class="note">showing {max_rows} of {len(rows):,} rows</p>'
    tid = f' id="{esc(table_id)}"' if table_id else ""
    box = ""
    if filter_box and table_id:
        box = f'<input class="filter" type="search" placeholder="filter rows…" data-table="{esc(table_id)}">'
    return f'{box}<table{tid} class="{esc(cls)} sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{more}'


def cards(summary: dict) -> str:
    """Key figures as a row of small cards (scalars only; nested values are shown as JSON)."""
    items = []
    for k, v in summary.items():
        shown = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v, default=str)
        items.append(f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(fmt(shown))}</div></div>')
    return f'<div class="cards">{"".join(items)}</div>'


def provenance_footer(provenance: dict | None) -> str:
    """Parameters, SAE and model identity, saeembed version: what is needed to reproduce the page."""
    prov = dict(provenance or {})
    prov.setdefault("saeembed_version", __version__)
    prov.setdefault("generated_at", _dt.datetime.now().isoformat(timespec="seconds"))
    rows = []
    for k, v in prov.items():
        if isinstance(v, dict):
            inner = "".join(f"<dt>{esc(ik)}</dt><dd>{esc(fmt(iv) if not isinstance(iv, (dict, list)) else json.dumps(iv, default=str))}</dd>"
                            for ik, iv in v.items())
            rows.append(f"<dt>{esc(k)}</dt><dd><dl class=\"inner\">{inner}</dl></dd>")
        else:
            shown = json.dumps(v, default=str) if isinstance(v, list) else fmt(v)
            rows.append(f"<dt>{esc(k)}</dt><dd>{esc(shown)}</dd>")
    return f'<footer><h2>Provenance</h2><dl class="prov">{"".join(rows)}</dl></footer>'


def page(title: str, sections: list[Section], provenance: dict | None = None, *, subtitle: str | None = None) -> str:
    """The whole self-contained document."""
    sub = f'<p class="subtitle">{esc(subtitle)}</p>' if subtitle else ""
    toc = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections if s.id)
    nav = f'<nav class="toc">{toc}</nav>' if toc else ""
    body = "".join(s.render() for s in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="saeembed {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f'<body><header><h1>{esc(title)}</h1>{sub}{nav}</header><main>{body}</main>'
        f"{provenance_footer(provenance)}<script>{SCRIPT}</script></body></html>\n"
    )


def write_report(html_text: str, out: str | os.PathLike) -> Path:
    """Write a page atomically (a half-written report never sits under the final name); returns the path."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"report file {out.name!r} should end in .html")
    if out.parent and not out.parent.exists():
        raise InputError(f"folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.write_text(html_text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out.resolve()


STYLE = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#dfe3ea;--bg:#fff;--soft:#f5f7fa;--a:#3b6fd8;--b:#e0762b;--hl:255,153,0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:20px 32px 8px;border-bottom:1px solid var(--line);background:var(--soft)}
h1{margin:0 0 4px;font-size:22px}h2{font-size:17px;margin:0 0 6px}h3{font-size:14px;margin:14px 0 4px}
.subtitle{margin:0 0 8px;color:var(--muted)}
.toc a{margin-right:14px;color:var(--a);text-decoration:none;font-size:13px}
main{padding:8px 32px;max-width:1280px}
section{margin:22px 0;padding-bottom:10px;border-bottom:1px solid var(--line)}
.note{color:var(--muted);margin:0 0 10px;font-size:13px}
.empty{color:var(--muted);font-style:italic}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 12px;min-width:120px;background:var(--soft)}
.card .k{font-size:12px;color:var(--muted)}.card .v{font-size:18px;font-weight:600}
table.data{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
table.data th,table.data td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
table.data th{cursor:pointer;background:var(--soft);position:sticky;top:0;user-select:none}
table.data th.asc::after{content:" \\25B2"}table.data th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
input.filter{padding:4px 8px;border:1px solid var(--line);border-radius:4px;margin:4px 0;width:280px}
svg.chart{display:block;max-width:100%;height:auto;font:12px system-ui,sans-serif}
svg.chart text{fill:var(--fg)}svg.chart .axis{stroke:#9aa3b2;stroke-width:1}svg.chart .grid{stroke:#eceff4}
svg.chart .bar-a{fill:var(--a)}svg.chart .bar-b{fill:var(--b)}svg.chart .bar{opacity:.9}svg.chart .bar:hover{opacity:1}
svg.chart .muted{fill:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin:4px 0}.legend span i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:middle}
.ex{margin:4px 0 8px;padding:6px 10px;border-left:3px solid var(--line);background:var(--soft);font-size:13px;white-space:pre-wrap;word-break:break-word}
.ex .meta{display:block;color:var(--muted);font-size:11px;white-space:normal}
mark.act{background:rgba(var(--hl),calc(.18 + .82*var(--i,1)));border-radius:3px;padding:0 1px;color:inherit;box-shadow:inset 0 -2px rgba(var(--hl),1)}
.feature-block{margin:10px 0 16px}
.feature-block h3 .lbl{font-weight:400;color:var(--muted)}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:18px}@media(max-width:900px){.grid2{grid-template-columns:1fr}}
footer{padding:12px 32px 32px;background:var(--soft);border-top:1px solid var(--line);font-size:12px}
dl.prov{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dl.prov dt{font-weight:600}dl.prov dd{margin:0;word-break:break-all}
dl.inner{display:grid;grid-template-columns:max-content 1fr;gap:0 10px;margin:0}dl.inner dt{font-weight:400;color:var(--muted)}dl.inner dd{margin:0}
a{color:var(--a)}
form.search input,form.search select{padding:4px 8px;margin-right:6px;border:1px solid var(--line);border-radius:4px}
"""

# Sortable tables and a row filter; nothing else. Must never throw (the tests watch the console).
SCRIPT = """
(function(){
  function val(td){var v=td.getAttribute('data-v');return v===null?td.textContent.toLowerCase():parseFloat(v);}
  document.querySelectorAll('table.sortable').forEach(function(t){
    t.querySelectorAll('th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var asc=!th.classList.contains('asc');
        t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
        th.classList.add(asc?'asc':'desc');
        var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=val(a.cells[i]),y=val(b.cells[i]);return (x<y?-1:x>y?1:0)*(asc?1:-1);});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  document.querySelectorAll('input.filter').forEach(function(inp){
    var t=document.getElementById(inp.getAttribute('data-table'));
    if(!t)return;
    inp.addEventListener('input',function(){
      var q=inp.value.toLowerCase();
      Array.prototype.forEach.call(t.tBodies[0].rows,function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});
    });
  });
})();
"""

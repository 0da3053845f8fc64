"""User and data text on the console (issue 19): corpus names, documents, filters and error messages are shown
literally. Rich markup in them is not interpreted (no crash on `[/bold]`, no hyperlink from `[link=…]`) and
control characters are made visible (no ESC from data reaches the terminal); JSON and CSV stay exact."""

import json
import re
import sys

import pytest
from rich.console import Console

from saeembed.cli import render
from saeembed.sae.formats import save_sae
from tests.conftest import make_sae
from tests.test_cli import run

OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
INST = "[INST] hi there [/INST] sure"
LINK = "[link=https://evil.example/]click me[/link]"
DOCS = [
    f"{INST} the order was late",
    f"terminal {OSC_TITLE} title and {CLEAR} clear screen in a review",
    "my order was late and the refund never came",
    "great sound and battery, five stars",
    "[bold red]markup[/] in a [/x] document :thumbs_up:",
    "line one\nline two\r\nline three \x9b31m c1 csi \x7f del",
]


@pytest.fixture
def attack(tmp_path, tiny_bert_dir):
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t, "[/meta]": "[/v]"}) for i, t in enumerate(DOCS))
                    + "\n")
    sae_dir = save_sae(make_sae(32, 64, hook="layers.1", model=str(tiny_bert_dir)), tmp_path / "sae")
    return {"data": data, "sae": sae_dir, "store": tmp_path / "s.duckdb", "model": tiny_bert_dir}


def _ingest_encode(capsys, monkeypatch, a, corpus):
    code, out, err = run(capsys, monkeypatch, "ingest", a["data"], "--corpus", corpus, "--id-column", "id",
                         "--store", a["store"])
    assert code == 0, err
    code, out2, err2 = run(capsys, monkeypatch, "encode", corpus, "--model", a["model"], "--sae", a["sae"],
                           "--store", a["store"])
    assert code == 0, err2
    return out + err + out2 + err2


class _Std:
    """The current sys.stdout/sys.stderr (capsys swaps them), as rich's Console does by default."""

    def __init__(self, name):
        self.name = name

    def __getattr__(self, attr):
        return getattr(getattr(sys, self.name), attr)


def _consoles(monkeypatch, terminal: bool):
    """Wide consoles (no folded cells); with `terminal`, ones that believe they drive a colour terminal (where
    links and styles are emitted)."""
    kw = dict(force_terminal=True, color_system="truecolor") if terminal else {}
    for name, std in (("console", "stdout"), ("err_console", "stderr")):
        monkeypatch.setattr(render, name, Console(file=_Std(std), width=1000, emoji=False, **kw))


def _terminal(monkeypatch):
    _consoles(monkeypatch, True)


def _strip_sgr(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _no_data_escapes(text: str) -> None:
    assert "\x1b]" not in text  # no OSC (window title, OSC-8 hyperlink)
    assert "\x07" not in text and "\x9b" not in text
    assert "\x1b[2J" not in text  # rich's own output draws bars (cursor moves), never clears the screen


def test_markup_corpus_name_lists_and_commits(capsys, monkeypatch, attack):
    name = "[/bold]"
    log = _ingest_encode(capsys, monkeypatch, attack, name)
    assert name in log and "\x1b" not in log
    code, out, err = run(capsys, monkeypatch, "corpora", "--store", attack["store"])
    assert code == 0, err
    assert "[/bold]" in out and "[/meta]" in out
    code, out, err = run(capsys, monkeypatch, "corpora", "--store", attack["store"], "--json")
    assert code == 0 and json.loads(out)[0]["corpus"] == name  # JSON is exact
    code, out, err = run(capsys, monkeypatch, "features", "--corpus", name, "--store", attack["store"])
    assert code == 0, err


def test_link_markup_makes_no_hyperlink(capsys, monkeypatch, attack):
    run(capsys, monkeypatch, "ingest", attack["data"], "--corpus", LINK, "--id-column", "id", "--store", attack["store"])
    _terminal(monkeypatch)
    code, out, err = run(capsys, monkeypatch, "corpora", "--store", attack["store"])
    assert code == 0, err
    _no_data_escapes(out + err)
    assert "\x1b]8;" not in out + err and LINK in _strip_sgr(out)
    code, out, err = run(capsys, monkeypatch, "ingest", attack["data"], "--corpus", LINK, "--id-column", "id",
                         "--append", "--store", attack["store"])
    assert code == 0, err
    assert "\x1b]8;" not in out + err and LINK in _strip_sgr(err)


def test_documents_with_markup_and_escapes_show_literally(capsys, monkeypatch, attack):
    _ingest_encode(capsys, monkeypatch, attack, "c")
    for terminal in (False, True):
        _consoles(monkeypatch, terminal)
        code, out, err = run(capsys, monkeypatch, "features", "--corpus", "c", "--top", "64", "--store", attack["store"])
        assert code == 0, err
        _no_data_escapes(out + err)
        if not terminal:
            assert "\x1b" not in out + err
        code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "0", "-f", "1", "-f", "2", "-f", "3",
                             "--top", "10", "--store", attack["store"])
        assert code == 0, err
        _no_data_escapes(out + err)
        shown = re.sub("[«»]", "", _strip_sgr(out))  # « » mark the matched spans
        assert "[INST] hi there [/INST]" in shown
        assert "\\x1b]0;pwned\\x07 title" in shown and "\\x1b[2J clear" in shown
        assert "[bold red]markup[/] in a [/x] document :thumbs_up:" in shown
        assert "\\x9b31m c1 csi \\x7f del" in shown
        if not terminal:
            assert "\x1b" not in out + err


def test_json_and_csv_stay_exact(capsys, monkeypatch, attack):
    _ingest_encode(capsys, monkeypatch, attack, "c")
    code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "0", "-f", "1", "-f", "2", "-f", "3",
                         "--top", "10", "--store", attack["store"], "--json")
    assert code == 0, err
    snippets = " ".join(r["snippet"] for r in json.loads(out)).replace("«", "").replace("»", "")
    assert "[INST] hi there [/INST]" in snippets and OSC_TITLE in snippets and CLEAR in snippets
    assert "\x9b31m c1 csi \x7f del" in snippets
    assert "\x1b" not in out and "\x9b" not in out and "\x7f" not in out  # written as JSON escapes: same data
    code, out, err = run(capsys, monkeypatch, "corpora", "--store", attack["store"], "--csv")
    assert code == 0 and "[/meta]" in out


def test_where_with_markup_is_one_clear_line(capsys, monkeypatch, attack):
    _ingest_encode(capsys, monkeypatch, attack, "c")
    for where in ("[/x]", "text = '\x1b]0;t\x07'  [/bold] ["):
        code, out, err = run(capsys, monkeypatch, "search", "-c", "c", "-f", "0", "--where", where,
                             "--store", attack["store"])
        assert code == 1
        assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1 and "\x1b" not in err
    assert "[/bold] [" in err and "\\x1b]0;t\\x07" in err


def test_tool_hints_keep_brackets(capsys, monkeypatch, attack):
    _ingest_encode(capsys, monkeypatch, attack, "c")
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    code, out, err = run(capsys, monkeypatch, "encode", "c", "--replace", "--backend", "ray", "--model",
                         attack["model"], "--sae", attack["sae"], "--store", attack["store"])
    assert code == 1 and "pip install 'saeembed[ray]'" in err


def test_safe_text():
    assert render.safe("[/bold]") == "\\[/bold]"
    assert render.safe("a\x1b[2Jb\x07\x9b\x7f\u202e") == "a\\x1b[2Jb\\x07\\x9b\\x7f\\u202e"
    assert render.safe("one\ntwo\tthree") == "one⏎two\tthree"
    assert render.safe("one\ntwo", newlines=True) == "one\ntwo"
    assert render.safe(None) == ""


def test_error_line_and_note_guard(capsys):
    render.error("cannot read filter '[/x] \x1b]0;t\x07'\n  hint: pip install 'saeembed[ray]'")
    render.note(f"[green]ok[/green] plain \x1b[2J {render.safe('[link=https://evil.example/]x[/link]')}")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert err.splitlines() == ["error: cannot read filter '[/x] \\x1b]0;t\\x07'",
                                "  hint: pip install 'saeembed[ray]'",
                                "ok plain \\x1b[2J [link=https://evil.example/]x[/link]"]

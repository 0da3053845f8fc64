"""A command that needs no model loads none: `info`, `features` and `diff` never import torch, and a
search answered by `saeembed serve` imports neither torch nor DuckDB nor the analysis code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.serve.conftest import Running

# Runs one CLI command, then reports which heavy modules it imported (on the last line of stderr).
PROBE = """
import json, sys
from saeembed.cli.app import main
sys.argv = ["saeembed", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code or 0
else:
    code = 0
heavy = ("torch", "transformers", "duckdb", "faiss", "sklearn", "saeembed.store", "saeembed.analysis",
         "saeembed.encode", "saeembed.interp")
sys.stderr.write("\\n" + json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}) + "\\n")
"""


def _probe(*args) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, proc.stderr
    return proc.stdout, report


@pytest.mark.parametrize("args", [["info"], ["features", "--top", "5"], ["diff", "c", "d"],
                                  ["features", "-c", "c", "--json"]])
def test_read_commands_do_not_import_torch(path, args):
    out, report = _probe(*args, "--store", path)
    assert out.strip()
    assert "torch" not in report["loaded"] and "transformers" not in report["loaded"], report


def test_served_search_imports_no_model_store_or_analysis(path):
    running = Running(path)
    try:
        out, report = _probe("search", "-c", "c", "-f", "3", "--store", path, "--json")
    finally:
        running.stop()
    assert [r["doc_id"] for r in json.loads(out)] == ["c0", "c2", "c5"]
    assert report["loaded"] == [], report

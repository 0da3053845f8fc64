"""CLI wall times as a user sees them: read commands, a cached local search, and the same search
answered by a warm `saeembed serve`.

    python benchmarks/cli_speed.py [--store PATH] [--runs 5] [--out benchmarks/results/cli_speed.md]

Each command runs as a subprocess (`saeembed …`, stdout to /dev/null: the plain table a pipe gets), --runs
times after one untimed warm-up run; the table gives median, min and max. The local search is "cached":
the warm-up run already stored the feature-description and document embeddings it needs, so what is left
is imports, model load and the search itself. For the served search the server's own time per request
(from `--verbose`) is given beside the CLI wall time. The store is the demo (`saeembed demo`), built in the
scratch folder when absent.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SCRATCH  # noqa: E402

QUERY = "refund for a double charge"
COMMANDS = [
    ("info", ["info"]),
    ("features --top 20", ["features", "--top", "20"]),
    ("diff support_tickets product_reviews", ["diff", "support_tickets", "product_reviews"]),
    (f'search "{QUERY}" -c support_tickets (local, cached)', ["search", QUERY, "-c", "support_tickets", "--no-server"]),
]
SERVED = (f'search "{QUERY}" -c support_tickets (through serve)', ["search", QUERY, "-c", "support_tickets", "--verbose"])


def saeembed() -> list[str]:
    exe = shutil.which("saeembed")
    return [exe] if exe else [sys.executable, "-m", "saeembed.cli.app"]


def timed(args: list[str], store: Path) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run([*saeembed(), *args, "--store", str(store)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{proc.stderr}")
    return wall, proc.stderr


def series(args, store, runs) -> tuple[list[float], list[str]]:
    timed(args, store)  # warm-up: OS file cache, stored embeddings, the server's per-corpus caches
    out = [timed(args, store) for _ in range(runs)]
    return [w for w, _ in out], [e for _, e in out]


def start_server(store: Path) -> tuple[subprocess.Popen, float]:
    from saeembed.serve import rendezvous

    t = time.perf_counter()
    proc = subprocess.Popen([*saeembed(), "serve", "--store", str(store), "--quiet"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "serving" in line:
            break
    if rendezvous.find(store)[0] is None:
        proc.kill()
        sys.exit("saeembed serve did not start")
    return proc, time.perf_counter() - t


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def row(name: str, walls: list[float], extra: str = "") -> str:
    return (f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f} | {max(walls):.2f} | {extra} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=SCRATCH / "cli_speed" / "demo.duckdb")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cli_speed.md")
    a = ap.parse_args()
    if not a.store.exists():
        a.store.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*saeembed(), "demo", "--store", str(a.store), "--json"], check=True, stdout=subprocess.DEVNULL)
    load0 = os.getloadavg()
    lines = []
    for name, args in COMMANDS:
        walls, _ = series(args, a.store, a.runs)
        lines.append(row(f"`{name}`", walls))
        print(lines[-1], flush=True)
    server, startup = start_server(a.store)
    try:
        first_wall, first_err = timed(SERVED[1], a.store)
        walls, errs = series(SERVED[1], a.store, a.runs)
    finally:
        server.terminate()
        server.wait(60)
    served = [float(m.group(1)) for e in errs for m in [re.search(r"serve at \S+ \(pid \d+\) in ([0-9.]+) s", e)] if m]
    if len(served) != len(errs):
        sys.exit("the served search ran locally:\n" + "\n".join(errs))
    first = re.search(r"in ([0-9.]+) s", first_err)
    lines.append(row(f"`{SERVED[0]}`", walls, f"server {statistics.median(served):.3f} s per request "
                                              f"(min {min(served):.3f}, max {max(served):.3f})"))
    print(lines[-1], flush=True)
    load1 = os.getloadavg()
    cmd = "python benchmarks/cli_speed.py" + ("" if a.runs == 5 else f" --runs {a.runs}") + (
        "" if a.store == ap.get_default("store") else f" --store {a.store}")
    text = "\n".join([
        "# CLI speed: read commands, a cached search, and the same search through `saeembed serve`",
        "",
        f"Command: `{cmd}` (store: the demo, `saeembed demo`: its 4 sample corpora).",
        f"Machine: {cpu_model()}, `nproc` {os.cpu_count()}, python {platform.python_version()}; load average "
        f"{load0[0]:.2f} at the start, {load1[0]:.2f} at the end (shared with other jobs: absolute numbers move "
        "with the load, the ratios less).",
        "",
        f"Each command ran as a subprocess {a.runs} times after one untimed warm-up run (stdout to /dev/null); "
        "seconds of wall time.",
        "",
        "| command | median s | min s | max s | note |",
        "|---|---|---|---|---|",
        *lines,
        "",
        f"`saeembed serve` took {startup:.1f} s from start to answering (imports and the sentence model); its first "
        f"request {first.group(1) if first else '?'} s on the server ({first_wall:.2f} s CLI wall: it also builds the "
        "per-corpus feature-description and FAISS caches); the rows above are the requests after that.",
        "",
        "What the times are made of: a CLI run that answers from the server pays for Python, typer, rich and polars "
        "(the client imports no torch, transformers, DuckDB or analysis code; see tests/serve/test_cli_imports.py) "
        "plus one loopback round trip; the rest is the server's time, most of it the query-to-feature matching. "
        "A local search also imports torch and transformers and loads the sentence model every time.",
        "",
    ])
    a.out.write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

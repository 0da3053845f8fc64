"""Fault benchmark: SIGKILL `saeembed encode` (the real CLI, in a subprocess) at random moments while it
writes, many times, and check after each kill that the store opens, that a re-run finishes, and that
the final rows equal an uninterrupted run (no duplicates, none missing). Half the trials write into
the store's table, half into Parquet shards.

    python benchmarks/faults.py --trials 20 --out benchmarks/results/faults.md

--kind classify / --kind sae kill at named points instead (tests/faultkit.pause_at): `classify train`
inside a random fit of its cross-validation or between saving the weights and scoring the corpus;
`sae train` at a random training step between two checkpoints. Each kind keeps its own section of
the --out file.

    python benchmarks/faults.py --kind classify --trials 12 --out benchmarks/results/faults.md
    python benchmarks/faults.py --kind sae --trials 6 --out benchmarks/results/faults.md

Uses the embedded model (all-MiniLM-L6-v2) and SAE on the bundled sample_data; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = ("instructions.jsonl", "toxicity.jsonl", "product_reviews.jsonl", "support_tickets.jsonl")
sys.path.insert(0, str(REPO))

from tests.faultkit import differences, run_and_kill, snapshot, writing  # noqa: E402
from benchmarks.faults_named import named_trials, write_section  # noqa: E402


def encode_args(store, shards):
    return ["encode", "c", "--store", store, "--device", "cpu", "--chunk-docs", "16", "--shards", shards,
            "--shard-docs", "64", "--quiet"]


def encode_here(store, shards, loaded):
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus
    from saeembed.store import Store

    with Store(store) as st:
        return encode_corpus(st, "c", model=loaded, config=EncodeConfig(device="cpu", chunk_docs=16, shards=shards,
                                                                       shard_docs=64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write a markdown report here")
    ap.add_argument("--kind", choices=("encode", "classify", "sae"), default="encode",
                    help="what to kill: encode at random moments, or classify train / sae train at named points")
    args = ap.parse_args()
    if args.kind != "encode":
        named_trials(args)
        return

    from saeembed.documents import ingest
    from saeembed.encode.models import load_model
    from saeembed.store import Store

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="saeembed-faults-"))
    loaded = load_model(None, device="cpu")
    try:
        base = work / "base.duckdb"
        data = work / "all.jsonl"
        with open(data, "w") as f:  # every text of the four sample corpora, as one corpus
            for name in SAMPLES:
                for line in (REPO / "sample_data" / name).read_text().splitlines():
                    row = json.loads(line)
                    f.write(json.dumps({"text": row.get("text") or row["response"]}) + "\n")
        with Store(base) as st:
            ingest(st, data, corpus="c")
            n_docs = st.corpus("c").n_docs
        refs, write_seconds = {}, {}
        for mode in ("off", "on"):
            ref = work / f"ref-{mode}.duckdb"
            shutil.copy(base, ref)
            # the CLI run's write phase (first write to exit) sets the range of kill moments
            started = [None]
            armed = writing(ref)

            def trigger():
                if armed():
                    started[0] = started[0] or time.perf_counter()
                    return True
                return False

            killed, _ = run_and_kill(encode_args(ref, mode), 3600, armed=trigger)
            assert not killed
            write_seconds[mode] = time.perf_counter() - started[0]
            refs[mode] = snapshot(ref, "c")
        rows = []
        for t in range(args.trials):
            mode = "off" if t % 2 == 0 else "on"
            store = work / f"t{t}.duckdb"
            shutil.copy(base, store)
            delay = rng.uniform(0, write_seconds[mode])
            killed, ran = run_and_kill(encode_args(store, mode), delay, armed=writing(store))
            opened, done = True, None
            try:
                with Store(store) as st:
                    done = st.query("SELECT count(*) AS n FROM encoded_docs")["n"][0]
            except Exception as e:  # noqa: BLE001 - the benchmark records any failure to open
                opened, done = False, repr(e)
            t0 = time.perf_counter()
            rerun_ok, problems = True, []
            try:
                encode_here(store, mode, loaded)
                problems = differences(refs[mode], snapshot(store, "c"))
            except Exception as e:  # noqa: BLE001
                rerun_ok, problems = False, [repr(e)]
            rows.append(dict(trial=t, storage="shards" if mode == "on" else "table", delay=delay, killed=killed,
                             done_at_kill=done, opened=opened, rerun_ok=rerun_ok, rerun_s=time.perf_counter() - t0,
                             identical=not problems, problems="; ".join(problems)))
            print(f"trial {t:2d} {rows[-1]['storage']:6s} kill after {delay:5.2f}s of writing: killed={killed} "
                  f"docs stored={done}/{n_docs} opened={opened} rerun={rerun_ok} identical={not problems} "
                  f"{'; '.join(problems)}", flush=True)
        report(rows, args, n_docs, write_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(rows, args, n_docs, write_seconds) -> None:
    killed = [r for r in rows if r["killed"]]
    mid = [r for r in killed if isinstance(r["done_at_kill"], int) and 0 < r["done_at_kill"] < n_docs]
    ok = all(r["opened"] and r["rerun_ok"] and r["identical"] for r in rows)
    lines = [
        "# Fault benchmark: kill -9 during encode",
        "",
        f"Command: `python benchmarks/faults.py --trials {args.trials} --seed {args.seed}`",
        f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"CPU only (2 cores shared with other jobs)",
        f"Corpus: every text of the four sample_data corpora ({n_docs} documents), embedded all-MiniLM-L6-v2 + default SAE, "
        "chunk 16 docs, shards of 64 docs",
        f"Uninterrupted write phase: {write_seconds['off']:.1f}s (table), {write_seconds['on']:.1f}s (shards); "
        "each kill comes at a uniform random moment of it, counted from the first write (WAL or shard file seen). "
        "The reference rows come from that uninterrupted CLI run; re-runs after a kill run in-process with the same settings.",
        "",
        f"**{len(rows)} trials, {len(killed)} killed while running, {len(mid)} with some but not all documents "
        f"stored at the kill; store opened after every kill: {all(r['opened'] for r in rows)}; re-run finished: "
        f"{all(r['rerun_ok'] for r in rows)}; final rows identical to the uninterrupted run: "
        f"{all(r['identical'] for r in rows)}. Result: {'PASS' if ok else 'FAIL'}.**",
        "",
        "| trial | storage | kill after (s) | killed | docs stored at kill | store opens | re-run | identical |",
        "|---:|---|---:|---|---:|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['trial']} | {r['storage']} | {r['delay']:.2f} | {r['killed']} | {r['done_at_kill']} | "
                     f"{r['opened']} | {r['rerun_ok']} | {r['identical']}{' — ' + r['problems'] if r['problems'] else ''} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_section(Path(args.out), "encode", text)


if __name__ == "__main__":
    main()

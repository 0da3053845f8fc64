"""Build the persona retrieval store used by search_persona.py (ingest + encode + dense embeddings).

    python benchmarks/prep_persona.py [--properties 16] [--per-property 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, build_store, need, read_jsonl  # noqa: E402


def persona_rows(n_props: int, per_prop: int, seed: int) -> list[dict]:
    folder = need(DATA / "eval" / "retrieval" / "persona")
    files = sorted(folder.glob("*.jsonl"))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(files, min(n_props, len(files))))
    rows = []
    for f in chosen:
        data = read_jsonl(f)
        pos = [r for r in data if r["matches"]]
        neg = [r for r in data if not r["matches"]]
        take = rng.sample(pos, min(per_prop // 2, len(pos))) + rng.sample(neg, min(per_prop - per_prop // 2, len(neg)))
        for i, r in enumerate(take):
            rows.append({"doc_id": f"{f.stem}#{i}", "text": r["text"], "property": r["property"],
                         "matches": bool(r["matches"])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--properties", type=int, default=16)
    ap.add_argument("--per-property", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows = persona_rows(a.properties, a.per_property, a.seed)
    name = f"persona_p{a.properties}_n{a.per_property}_s{a.seed}"
    store, t = build_store(name, rows, corpus="persona")
    print(name, len(rows), "docs", t)
    store.close()


if __name__ == "__main__":
    main()

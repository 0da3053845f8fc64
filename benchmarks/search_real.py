"""Property search against ground truth the corpora give themselves: SAE vs dense vs hybrid, P@20 and AP.

    python benchmarks/search_real_prep.py                 # docstrings + Debian changelogs, ~1,500 docs each
    python benchmarks/prep_persona.py --properties 16 --per-property 300
    python benchmarks/search_real.py [--sets docstrings,debchangelog,persona] [--methods ...] [--out rows.json]

docstrings / debchangelog: each query is ranked over the whole corpus (depth = corpus size); relevant =
the documents whose ground-truth column (a regex over the text, see search_real_prep.py) is true.
persona: as search_persona.py (query = property name; pool = its statements + 2,000 others, seeded;
relevant = its statements with matches = true). AP counts unranked relevant documents as missed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, machine  # noqa: E402
from search_persona import average_precision, p_at  # noqa: E402

QUERIES = {
    "docstrings": [
        ("raises an exception", "raises"),
        ("raises ValueError if the input is invalid", "raises_valueerror"),
        ("mentions a deprecated parameter", "deprecated"),
        ("returns a boolean", "returns_bool"),
        ("includes a usage example", "has_example"),
        ("reads or writes a file", "mentions_file"),
    ],
    "debchangelog": [
        ("fixes a security vulnerability", "cve"),
        ("non-maintainer upload", "nmu"),
        ("new upstream release", "new_upstream"),
        ("fixes a build failure", "ftbfs"),
        ("team upload", "team_upload"),
        ("high urgency upload", "high_urgency"),
        ("upload to experimental", "experimental"),
    ],
}

# name -> search() keyword arguments. "v0" rows reproduce search as it was before length control and
# the lexical matcher (match auto = describe + prf; no length control; hybrid = RRF, equal weights).
METHODS = {
    "dense": dict(mode="dense"),
    "sae v0": dict(mode="sae", match="auto", length_control="off", lexical_weight=0.0),
    "hybrid v0": dict(mode="hybrid", match="auto", length_control="off", lexical_weight=0.0, sae_weight=1.0,
                      word_weight=0.0),
    "sae": dict(mode="sae"),
    "hybrid": dict(mode="hybrid"),  # the default for a query text
    "hybrid w1": dict(mode="hybrid", sae_weight=1.0),
    "hybrid -words": dict(mode="hybrid", word_weight=0.0),  # as before the literal-word ranking joined
    "hybrid words0.5": dict(mode="hybrid", word_weight=0.5),
    "hybrid words2": dict(mode="hybrid", word_weight=2.0),
    # ablations: one change at a time
    "sae +length": dict(mode="sae", match="auto", length_control="residual", lexical_weight=0.0),
    "sae +lexical": dict(mode="sae", match="auto", length_control="off"),
    "sae zscore": dict(mode="sae", length_control="zscore"),
    "sae lexical only": dict(mode="sae", match="lexical"),
}


def evaluate(store, corpus, query, relevant, pool, method, n_features):
    from saeembed.analysis.retrieve import search

    t = time.perf_counter()
    kw = dict(METHODS[method])
    got = search(store, corpus, query, top=len(pool), depth=len(pool), n_features=n_features,
                 doc_idx=None if pool is None else pool, **kw)
    ranked = got["doc_idx"].to_list()
    return {"ap": average_precision(ranked, relevant), "p20": p_at(ranked, relevant, 20),
            "seconds": time.perf_counter() - t, "ranked": ranked, "relevant_idx": sorted(relevant)}


def real_cases(name: str, max_docs: int, seed: int):
    from saeembed.store import Store

    path = SCRATCH / f"real_{name}_{max_docs}_s{seed}.duckdb"
    if not path.exists():
        sys.exit(f"run benchmarks/search_real_prep.py --max-docs {max_docs} first ({path} is missing)")
    store = Store(path)
    docs = store.documents(name, text=False)
    for query, col in QUERIES[name]:
        relevant = set(docs.filter(pl.col(col))["doc_idx"].to_list())
        yield store, name, query, col, relevant, np.arange(docs.height)


def persona_cases(props: int, per: int, seed: int, pool_others: int = 2000):
    from saeembed.store import Store

    path = SCRATCH / f"persona_p{props}_n{per}_s{seed}.duckdb"
    if not path.exists():
        sys.exit(f"run benchmarks/prep_persona.py --properties {props} --per-property {per} first")
    store = Store(path)
    docs = store.documents("persona", text=False)
    rng = np.random.default_rng(seed)
    for prop in sorted(docs["property"].unique().to_list()):
        mine = docs.filter(pl.col("property") == prop)
        others = docs.filter(pl.col("property") != prop)["doc_idx"].to_numpy()
        pool = np.concatenate([mine["doc_idx"].to_numpy(),
                               rng.choice(others, min(pool_others, len(others)), replace=False)])
        yield store, "persona", prop.replace("-", " "), prop, set(mine.filter(pl.col("matches"))["doc_idx"].to_list()), pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="docstrings,debchangelog,persona")
    ap.add_argument("--methods", default="dense,sae v0,hybrid v0,sae,hybrid")
    ap.add_argument("--max-docs", type=int, default=1500)
    ap.add_argument("--persona", default="16,300", help="properties,per-property of the persona store")
    ap.add_argument("--n-features", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write per-query rows as JSON here")
    a = ap.parse_args()
    methods = [m.strip() for m in a.methods.split(",")]
    rows = []
    t0 = time.perf_counter()
    for name in a.sets.split(","):
        if name == "persona":
            props, per = (int(x) for x in a.persona.split(","))
            cases = persona_cases(props, per, a.seed)
        else:
            cases = real_cases(name, a.max_docs, a.seed)
        for store, corpus, query, col, relevant, pool in cases:
            for m in methods:
                r = evaluate(store, corpus, query, relevant, pool, m, a.n_features)
                rows.append({"set": name, "query": query, "truth": col, "relevant": len(relevant), "method": m, **r})
            print(name, f"{query!r} ({len(relevant)} relevant)",
                  {r["method"]: (round(r["p20"], 2), round(r["ap"], 3)) for r in rows[-len(methods):]}, flush=True)
    frame = pl.DataFrame(rows).drop("ranked", "relevant_idx")
    print(f"\n{time.perf_counter() - t0:.0f}s; {machine()}")
    per_query = frame.pivot(on="method", index=["set", "query", "relevant"], values=["p20", "ap"])
    summary = frame.group_by("set", "method", maintain_order=True).agg(P20=pl.col("p20").mean(), MAP=pl.col("ap").mean(),
                                                                        median_s=pl.col("seconds").median())
    with pl.Config(tbl_rows=200, tbl_cols=40, tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True,
                   float_precision=3, tbl_hide_column_data_types=True, tbl_width_chars=400, fmt_str_lengths=60):
        print(summary)
        print(per_query)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

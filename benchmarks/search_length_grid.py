"""Length-control variants of the SAE score, on the same query plans: MAP and P@20 per set.

    python benchmarks/search_length_grid.py        # needs the stores of search_real_prep.py and prep_persona.py

off: raw score; residual xS: raw - S * expected(length); firing-only: expected fitted on documents where a
planned feature fires; ratio: raw / expected. Plans: the default matcher (auto with lexical).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_persona import average_precision, p_at  # noqa: E402
from search_real import persona_cases, real_cases  # noqa: E402


def variants(store, t, plan, pool):
    from saeembed.analysis.retrieve import _sae_scores
    from saeembed.analysis.search_length import expected_by_length

    doc, _, raw = _sae_scores(store, t, plan, [], "off")
    pd_, plen = store.token_counts(t.corpus.corpus_id, t.sae.sae_key)
    keep = np.isin(pd_, pool)
    pd_, plen = pd_[keep], np.asarray(plen)[keep]
    order = np.argsort(pd_)
    pd_, plen = pd_[order], plen[order]
    full = np.zeros(len(pd_))
    pos = np.searchsorted(pd_, doc)
    full[pos] = raw
    mean, _ = expected_by_length(plen, full)
    fire = full > 0
    mean_f = np.zeros(len(pd_))
    mean_f[fire] = expected_by_length(plen[fire], full[fire])[0]
    scores = {"off": raw, "residual x1": raw - mean[pos], "residual x0.5": raw - 0.5 * mean[pos],
              "firing-only": raw - mean_f[pos], "ratio": raw / np.maximum(mean[pos], 1e-3)}
    return {k: doc[np.lexsort((doc, -s))].tolist() for k, s in scores.items()}


def main() -> None:
    from saeembed.analysis.retrieve import plan_query, target

    res = []
    for name in ["docstrings", "debchangelog", "persona"]:
        cases = persona_cases(16, 300, 0) if name == "persona" else real_cases(name, 1500, 0)
        for store, corpus, query, _col, rel, pool in cases:
            t = target(store, corpus, doc_idx=pool if name == "persona" else None)
            plan = plan_query(store, t, query, n_features=30)
            for k, ranked in variants(store, t, plan, pool).items():
                res.append({"set": name, "query": query, "variant": k, "ap": average_precision(ranked, rel),
                            "p20": p_at(ranked, rel, 20)})
            print(name, query, flush=True)
    with pl.Config(tbl_rows=100, tbl_formatting="MARKDOWN", float_precision=3, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(pl.DataFrame(res).group_by("set", "variant", maintain_order=True)
              .agg(MAP=pl.col("ap").mean(), P20=pl.col("p20").mean()))


if __name__ == "__main__":
    main()

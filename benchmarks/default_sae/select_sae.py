"""Score candidate default SAEs on what the analyses need, on text none of them was trained on.

    python benchmarks/default_sae/eval_sets.py --out /tmp/sae_select/acts           # once: MiniLM activations
    python benchmarks/default_sae/select_sae.py --acts /tmp/sae_select/acts \
        --candidate today=saeembed/default_sae --candidate l5_4k_k32=/tmp/sae_select/candidates/l5_4k_k32 ... \
        [--skip-store] [--skip-tokens function] [--out benchmarks/results/default_sae_selection]

Scoring a candidate is only SAE forward passes over cached activations (plus the analyses). Measures:
  ev / dead          token level, content tokens, on every held-out set (eval_sets.HELDOUT_SETS) pooled;
                     ev = 1 - SSE / total squares about the per-dimension mean of those tokens; dead = share
                     of latents that fire on none of those tokens. Per group too (social, answers, persona,
                     syngoalex).
  generic            per set: share of live features (fire in >= 1 document, max-pooled as encode pools)
                     that fire in > 50 % of its documents; the worst set is reported. "per 64 tokens": the
                     same with every document cut into runs of 64 content tokens (length-matched).
  function           share of live features whose 20 strongest token activations (over all held-out sets)
                     are mostly (> 10 of 20) function tokens: an English stop word (sklearn's list), a token
                     without letters or digits, or a piece of a word WordPiece split (##-continuation, or a
                     token followed by one). Also the stop-only and piece-only shares.
  probe transfer     toxicity; SAE probe (L1 logistic regression on max-pooled values, max-abs scaled, C by
                     5-fold CV, balanced: as `classify train`) vs dense probe (L2, same CV) on the MiniLM
                     sentence embedding; davidson -> tweeteval offensive test, tweeteval offensive train
                     sample -> davidson. AUROC and the gap SAE - dense.
  diff / search / ARI  through saeembed's analyses on a scratch store per candidate (store_measures.py);
                     --persona-match prf compares candidates without feature labels (see persona_map).
Writes OUT.json and OUT.md (one table: every candidate x every measure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measures as M  # noqa: E402
from eval_sets import HELDOUT_SETS, PAIRS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"social": ["davidson", "tw_off_test"], "answers": [f"{p}_{s}" for p in PAIRS for s in "ab"],
          "persona": ["persona"], "syngoalex": ["syngoalex"]}


def load(path: str):
    from saeembed.sae.formats import load_sae

    return load_sae(path)


def score(name: str, path: str, acts: Path, loaded, store_dir: Path | None, persona_match: str = "auto",
          skip: str = "none") -> dict:
    sae = load(path).eval()
    layer = int(sae.cfg.hook.split(".")[1])
    hook = f"layers.{layer}"
    t0 = time.perf_counter()
    sets = ["tw_off_train"] + HELDOUT_SETS
    data = {s: M.load_set(acts, s, layer) for s in sets}
    codes = {s: M.encode_set(sae, data[s], s, M.pooled_tokens(data[s], skip)) for s in sets}
    held = [codes[s] for s in HELDOUT_SETS]
    fires = M.fire_counts(held, sae.d_sae)
    res: dict = {
        "candidate": name, "path": path, "hook": hook, "d_sae": sae.d_sae, "k": sae.cfg.k,
        "architecture": sae.cfg.architecture, "skip_tokens": skip,
        "card": _card(path),
        "heldout_tokens": int(sum(c.sums["n"] for c in held)),
        "ev": M.explained_variance(held),
        "ev_by_group": {g: M.explained_variance([codes[s] for s in ss]) for g, ss in GROUPS.items()},
        "dead": float((fires == 0).mean()),
        "l0": float(sum(len(c.entries[1]) for c in held) / sum(c.sums["n"] for c in held)),
    }
    gen = {s: M.generic_share(codes[s], sae.d_sae) for s in ["davidson", "tw_off_test", "persona", "syngoalex"]}
    answers = M.SetCodes("answers", 0, None, None, None)  # all six answer sides as one set of documents
    import polars as pl

    parts, off = [], 0
    for s in GROUPS["answers"]:
        parts.append(codes[s].pooled.with_columns(pl.col("doc_idx") + off))
        off += codes[s].n_docs
    answers.pooled, answers.n_docs = pl.concat(parts), off
    gen["answers"] = M.generic_share(answers, sae.d_sae)
    res["generic_by_set"] = gen
    res["generic_worst"] = max(g["share"] for g in gen.values())
    gw = {s: M.generic_share_windows(codes[s], data[s], sae.d_sae, pooled_mask=M.pooled_tokens(data[s], skip))
          for s in ["davidson", "tw_off_test", "persona", "syngoalex"] + GROUPS["answers"]}
    res["generic_64_by_set"] = gw
    res["generic_64_worst"] = max(g["share"] for g in gw.values())
    flags = [M.function_tokens(loaded.tokenizer, data[s]) for s in HELDOUT_SETS]
    res["function"] = M.function_feature_share(held, flags, sae.d_sae)
    res["seconds_token_measures"] = round(time.perf_counter() - t0, 1)

    def xy(s):
        y = np.array([bool(r["toxic"]) for r in data[s]["rows"]], dtype=int)
        return M.pooled_matrix(codes[s], sae.d_sae), data[s]["dense"], y

    t1 = time.perf_counter()
    res["probe"] = {"davidson->tw_off_test": M.probe_transfer(xy("davidson"), xy("tw_off_test")),
                    "tw_off_train->davidson": M.probe_transfer(xy("tw_off_train"), xy("davidson"))}
    res["probe_worst_gap"] = min(p["gap"] for p in res["probe"].values())
    res["seconds_probe"] = round(time.perf_counter() - t1, 1)
    print(f"[{name}] ev {res['ev']:.3f} dead {res['dead']:.3%} generic {res['generic_worst']:.3%} "
          f"function {res['function']['function_share']:.3f} probe gap {res['probe_worst_gap']:+.3f}", flush=True)
    if store_dir is not None:
        import store_measures as S

        t2 = time.perf_counter()
        keep = {s: codes[s] for s in ["persona", "syngoalex"] + GROUPS["answers"]}
        store = S.build_store(store_dir / f"{name}.duckdb", sae, loaded, hook, keep, acts, skip)
        try:
            res["diff"] = S.diff_separability(store, PAIRS)
            res["diff_worst_share"] = min(d["share"] for d in res["diff"].values())
            res["persona"] = S.persona_map(store, match=persona_match)
            res["axis_ari"] = S.axis_ari(store)
        finally:
            store.close()
        res["seconds_store_measures"] = round(time.perf_counter() - t2, 1)
        print(f"[{name}] diff worst {res['diff_worst_share']:.3f} MAP {res['persona']['MAP']:.3f} "
              f"ARI {res['axis_ari']}", flush=True)
    return res


def _card(path: str) -> dict:
    p = Path(path) / "MODEL_CARD.json"
    if not p.exists():
        return {}
    card = json.loads(p.read_text())
    return {"tokens_seen": card.get("tokens_seen"), "epochs": card.get("epochs"), "data": card.get("data"),
            "lr": (card.get("train_config") or {}).get("lr"), "k": card.get("k")}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    import torch

    return {"platform": platform.platform(), "cpu": cpu, "nproc": os.cpu_count(),
            "loadavg": open("/proc/loadavg").read().split()[:3], "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def table(results: list[dict]) -> str:
    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    head = ["candidate", "hook", "latents", "k", "train tokens", "EV held-out", "EV social", "EV answers",
            "EV persona", "EV syngoalex", "dead", "generic (worst set)", "generic per 64 tokens (worst set)", "function feats", "stop", "piece",
            "probe dv→tw (SAE/dense)", "probe tw→dv (SAE/dense)", "worst probe gap", "diff top-10/all worst",
            "diff per pair", "persona MAP", "ARI topic / style"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        p = r["probe"]
        a, b = p["davidson->tw_off_test"], p["tw_off_train->davidson"]
        diff = r.get("diff")
        lines.append("| " + " | ".join([
            r["candidate"] + (f" (pool skips {r['skip_tokens']} tokens)" if r.get("skip_tokens", "none") != "none" else ""),
            r["hook"], str(r["d_sae"]), str(r["k"] or (r["card"].get("k") and f"{r['card']['k']} (batch)")),
            f"{r['card'].get('tokens_seen'):,}" if r["card"].get("tokens_seen") else "?",
            f(r["ev"]), *(f(r["ev_by_group"][g]) for g in GROUPS),
            f(r["dead"], "{:.1%}"), f(r["generic_worst"], "{:.1%}"), f(r.get("generic_64_worst"), "{:.1%}"),
            f(r["function"]["function_share"], "{:.1%}"), f(r["function"]["stop_share"], "{:.1%}"),
            f(r["function"]["piece_share"], "{:.1%}"),
            f"{a['sae']:.3f} / {a['dense']:.3f}", f"{b['sae']:.3f} / {b['dense']:.3f}", f"{r['probe_worst_gap']:+.3f}",
            f(r.get("diff_worst_share")),
            " / ".join(f"{d['share']:.2f}" for d in diff.values()) if diff else "n/a",
            f"{r['persona']['MAP']:.3f} ({r['persona'].get('match', 'auto')})" if "persona" in r else "n/a",
            f"{r['axis_ari']['topic']:.3f} / {r['axis_ari']['style']:.3f}" if "axis_ari" in r else "n/a",
        ]) + " |")
    return "\n".join(lines)


def write_md(path: Path, text: str) -> None:
    """Put the table between the markers of an existing results file (keeping its prose), else start one."""
    start, end = "<!-- selection table -->", "<!-- /selection table -->"
    block = f"{start}\n{text}\n{end}"
    md = path.read_text() if path.exists() else f"# Default-SAE selection\n\n{start}\n{end}\n"
    if start not in md:
        md += f"\n{start}\n{end}\n"
    i, j = md.index(start), md.index(end) + len(end)
    path.write_text(md[:i] + block + md[j:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", default="/tmp/sae_select/acts")
    ap.add_argument("--candidate", action="append", default=[], help="NAME=PATH (an SAELens folder)")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="other results JSONs (runs written to another --out in parallel) to fold into OUT")
    ap.add_argument("--stores", default="/tmp/sae_select/stores")
    ap.add_argument("--skip-store", action="store_true", help="only the numpy measures (no diff / search / ARI)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default_sae_selection"),
                    help="OUT.json and OUT.md; results of candidates already in OUT.json are kept")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--persona-match", default="auto", help="feature matcher of the persona search (auto, prf, ...)")
    ap.add_argument("--skip-tokens", default="none", choices=["none", "function"],
                    help="pool documents as `saeembed encode --skip-tokens` would (EV still counts every token)")
    args = ap.parse_args()
    import torch

    from saeembed.encode.models import load_model

    torch.set_num_threads(args.threads)
    loaded = load_model(None, device="cpu")
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    results = {r["candidate"]: r for r in old.get("candidates", [])}
    for other in args.merge:
        results.update({r["candidate"]: r for r in json.loads(Path(other).read_text())["candidates"]})
    if args.merge:
        _write(out, results, args)
    for spec in args.candidate:
        name, path = spec.split("=", 1)
        results[name] = score(name, path, Path(args.acts), loaded, None if args.skip_store else Path(args.stores),
                              args.persona_match, args.skip_tokens)
        _write(out, results, args)
    print(table(list(results.values())))


def _write(out: Path, results: dict, args) -> None:
    doc = {"machine": machine(), "acts": args.acts, "acts_stats": json.loads((Path(args.acts) / "stats.json").read_text()),
           "candidates": list(results.values())}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str))
    write_md(out.with_suffix(".md"), table(list(results.values())))


if __name__ == "__main__":
    main()

"""Quality of an SAE's atlas: coverage of live features, label scores (AUROC against random and against
similar non-activating windows, separately), the 30 most frequent features' labels, size and build record.

    python3 benchmarks/atlas.py [ATLAS.npz]        # default: the atlas shipped with the default SAE
    # re-run only the label pass on an atlas build's work store (a COPY: the pass writes its checkpoint
    # into --out), with the static scorer, and report from its records:
    python3 benchmarks/atlas.py --relabel /tmp/labels/atlas_work.duckdb --out /tmp/labels/after
    # the 30 most frequent features' labels of two label passes side by side:
    python3 benchmarks/atlas.py --compare OLD_DIR_OR_NPZ NEW_DIR_OR_NPZ

Prints a markdown report (paste into benchmarks/results/atlas.md with the build command and machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from saeembed.atlas_format import read_atlas
from saeembed.sae.default import default_atlas_path


def _records(path: Path) -> tuple[list[dict], dict]:
    """Feature records from an atlas.npz or a label pass's folder (its checkpoint)."""
    from saeembed.interp.atlas_build import CHECKPOINT

    if path.is_dir():
        lines = (path / CHECKPOINT).read_text(encoding="utf-8").splitlines()
        import json

        return [json.loads(x) for x in lines[1:] if x.strip()], {}
    a = read_atlas(path)
    recs = [{"feature": int(a.features[i]), "label": a.labels[i], "score": float(a.score[i]),
             "score_hard": float(a.score_hard[i]), "weak": bool(a.weak[i]), "density": float(a.density[i]),
             "exemplars": a.exemplars[i]} for i in range(len(a))]
    return recs, dict(a.meta, sae_hash=a.sae_hash, d_sae=a.d_sae, size=path.stat().st_size)


def _num(recs, key) -> np.ndarray:
    v = np.asarray([np.nan if r.get(key) is None else r[key] for r in recs], dtype=float)
    return v[np.isfinite(v)]


def _exemplar(rec: dict) -> str:
    ex = rec["exemplars"][0] if rec.get("exemplars") else None
    if not ex or ex.get("start") is None:
        return ""
    t = ex["text"]
    shown = t[max(0, ex["start"] - 25):ex["start"]] + "«" + t[ex["start"]:ex["end"]] + "»" + t[ex["end"]:ex["end"] + 25]
    return " ".join(shown.replace("|", "\\|").split())


def _cell(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.2f}"


def summary(recs: list[dict], live: int | None = None) -> None:
    live = live or len(recs)
    labelled = sum(1 for r in recs if r["label"] and r["label"] != "(no clear pattern)")
    s, h = _num(recs, "score"), _num(recs, "score_hard")
    weak = sum(bool(r.get("weak")) for r in recs)
    print("| measure | value |\n|---|---|")
    print(f"| live features (fire on ≥ 1 sampled document) | {live} |")
    print(f"| live features with a label | {labelled} ({labelled / max(live, 1):.1%}) |")
    print(f"| median AUROC vs random windows | {np.median(s):.3f} (n={len(s)}; IQR {np.percentile(s, 25):.3f}–{np.percentile(s, 75):.3f}) |")
    print(f"| median AUROC vs similar non-activating windows | {np.median(h):.3f} (n={len(h)}; IQR {np.percentile(h, 25):.3f}–{np.percentile(h, 75):.3f}) |")
    print(f"| share ≥ 0.75 (random / similar) | {np.mean(s >= 0.75):.1%} / {np.mean(h >= 0.75):.1%} |")
    print(f"| weak labels (AUROC vs random < 0.6) | {weak} ({weak / max(len(recs), 1):.1%}) |")


def frequent(recs: list[dict], n: int = 30) -> list[dict]:
    return sorted(recs, key=lambda r: (-(r.get("density") or 0), r["feature"]))[:n]


def report(path: Path) -> None:
    recs, meta = _records(path)
    if meta:
        print(f"atlas {path} ({meta['size'] / 2**20:.2f} MiB) for SAE {meta['sae_hash']}, d_sae {meta['d_sae']}")
        print(f"built from {meta.get('documents')} documents of {', '.join(meta.get('built_from', []))} "
              f"(sample {meta.get('sample')}, seed {meta.get('seed')}) in {meta.get('built_seconds')} s\n")
    summary(recs, int(meta.get("live_features", len(recs))) if meta else None)
    print("\n30 most frequent features (share of documents they fire on), label, AUROC random/similar, top exemplar span:\n")
    print("| feature | density | label | AUROC r / s | top exemplar |\n|---|---|---|---|---|")
    for r in frequent(recs):
        print(f"| {r['feature']} | {r['density']:.1%} | {r['label'].replace('|', '/')} | "
              f"{_cell(r['score'])} / {_cell(r['score_hard'])} | {_exemplar(r)} |")


def compare(old: Path, new: Path) -> None:
    a, _ = _records(old)
    b, _ = _records(new)
    by_f = {r["feature"]: r for r in a}
    for name, recs in (("before", a), ("after", b)):
        print(f"\n{name} ({len(recs)} features):\n")
        summary(recs)
    print("\n30 most frequent features: label before → after (AUROC random / similar), top exemplar:\n")
    print("| feature | density | before | r / s | after | r / s | top exemplar |\n|---|---|---|---|---|---|---|")
    for r in frequent(b):
        o = by_f.get(r["feature"], {"label": "", "score": None, "score_hard": None})
        print(f"| {r['feature']} | {r['density']:.1%} | {o['label'].replace('|', '/')} | {_cell(o['score'])} / "
              f"{_cell(o['score_hard'])} | {r['label'].replace('|', '/')} | {_cell(r['score'])} / "
              f"{_cell(r['score_hard'])} | {_exemplar(r)} |")


def relabel(work: Path, out: Path, limit: int | None) -> None:
    """The label pass of `saeembed sae atlas` alone, on an encoded work store, into `out` (resumable)."""
    from saeembed.config import AtlasConfig
    from saeembed.interp.atlas_build import label_pass
    from saeembed.interp.scoring import EmbeddingScorer, static_embedder
    from saeembed.store import Store

    cfg = AtlasConfig()
    t0 = time.perf_counter()
    with Store(work) as store:  # a copy: opening it may migrate its schema
        info = store.browsed_sae()
        lp = label_pass(store, info, out, chunk=cfg.chunk, background=cfg.background, exemplars=cfg.exemplars,
                        scorer=EmbeddingScorer(static_embedder()), stop_after=limit)
    print(f"label pass: {lp.done} of {lp.total} features in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    report(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("atlas", nargs="?")
    ap.add_argument("--relabel", metavar="WORK_STORE")
    ap.add_argument("--out", metavar="DIR")
    ap.add_argument("--limit", type=int, help="label at most this many features (a quick look)")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    args = ap.parse_args(argv)
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    if args.relabel:
        if not args.out:
            sys.exit("--relabel needs --out DIR")
        return relabel(Path(args.relabel), Path(args.out), args.limit)
    path = Path(args.atlas) if args.atlas else default_atlas_path()
    if path is None:
        sys.exit("no atlas: build one with `saeembed sae atlas`")
    report(path)


if __name__ == "__main__":
    main()

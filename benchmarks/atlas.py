"""Quality of an SAE's atlas: coverage of live features, label scores (AUROC against random and against
similar non-activating windows, separately), the 30 most frequent features' labels, size and build record.

    python3 benchmarks/atlas.py [ATLAS.npz]        # default: the atlas shipped with the default SAE

Prints a markdown report (paste into benchmarks/results/atlas.md with the build command and machine).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from saeembed.atlas_format import read_atlas
from saeembed.sae.default import default_atlas_path


def main(path: str | None = None) -> None:
    path = Path(path) if path else default_atlas_path()
    if path is None:
        sys.exit("no atlas: build one with `saeembed sae atlas`")
    a = read_atlas(path)
    live = int(a.meta.get("live_features", len(a)))
    labelled = sum(1 for lab in a.labels if lab and lab != "(no clear pattern)")
    s, h = a.score[np.isfinite(a.score)], a.score_hard[np.isfinite(a.score_hard)]
    print(f"atlas {path} ({path.stat().st_size / 2**20:.2f} MiB) for SAE {a.sae_hash}, d_sae {a.d_sae}")
    print(f"built from {a.meta.get('documents')} documents of {', '.join(a.meta.get('built_from', []))} "
          f"(sample {a.meta.get('sample')}, seed {a.meta.get('seed')}) in {a.meta.get('built_seconds')} s\n")
    print("| measure | value |\n|---|---|")
    print(f"| live features (fire on ≥ 1 sampled document) | {live} of {a.d_sae} |")
    print(f"| live features with an atlas label | {labelled} ({labelled / max(live, 1):.1%}) |")
    print(f"| median AUROC vs random windows | {np.median(s):.3f} (n={len(s)}; IQR {np.percentile(s, 25):.3f}–{np.percentile(s, 75):.3f}) |")
    print(f"| median AUROC vs similar non-activating windows | {np.median(h):.3f} (n={len(h)}; IQR {np.percentile(h, 25):.3f}–{np.percentile(h, 75):.3f}) |")
    print(f"| share ≥ 0.75 (random / similar) | {np.mean(s >= 0.75):.1%} / {np.mean(h >= 0.75):.1%} |")
    print(f"| weak labels (AUROC vs random < 0.6) | {int(a.weak.sum())} ({a.weak.mean():.1%}) |")
    order = np.argsort(-np.nan_to_num(a.density, nan=-1))[:30]
    print("\n30 most frequent features (share of documents they fire on), label, AUROC random/similar, top exemplar span:\n")
    print("| feature | density | label | AUROC r / s | top exemplar |\n|---|---|---|---|---|")
    for i in order:
        ex = a.exemplars[i][0] if a.exemplars[i] else None
        shown = ""
        if ex and ex.get("start") is not None:
            t = ex["text"]
            shown = (t[max(0, ex["start"] - 25):ex["start"]] + "«" + t[ex["start"]:ex["end"]] + "»"
                     + t[ex["end"]:ex["end"] + 25]).replace("|", "\\|")
        print(f"| {a.features[i]} | {a.density[i]:.1%} | {a.labels[i].replace('|', '/')} | "
              f"{a.score[i]:.2f} / {a.score_hard[i]:.2f} | {' '.join(shown.split())} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

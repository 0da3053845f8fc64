"""Why "generic features <= 1 % of live ones" is out of reach on long documents (issue 18), numpy only.

    python benchmarks/default_sae/generic_bound.py --acts /tmp/sae_select/acts \
        --sae today=saeembed/default_sae --sae 8k=/tmp/sae_select/candidates/l4_8k_k32_full

Documents are max-pooled, so a feature firing on a share p of tokens, independently, fires in
1 - (1 - p)^L of L-token documents: above half once p > p* = 1 - 0.5^(1/L). A TopK SAE spends k
activations on every token, so its features' densities sum to k. Per SAE and set this prints p*, the
generic share measured (features in > 50 % of documents, of the live ones), the share independent tokens
would give, and how much of all activations the generic features carry. Then the generic share when a
document keeps a feature only where its pooled value reaches q x the feature's own 99th-percentile token
activation (pooling that ignores weak activations), and how many token activations survive that cut.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measures as M  # noqa: E402

SETS = ["davidson", "tw_off_test", "persona", "syngoalex", "gpt4_concise_vs_verbose_b", "friendly_vs_cold_a"]
CUTS = [0.0, 0.2, 0.3, 0.4, 0.5]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", default="/tmp/sae_select/acts")
    ap.add_argument("--sae", action="append", default=None, help="NAME=PATH (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from saeembed.sae.formats import load_sae

    torch.set_num_threads(args.threads)
    for spec in args.sae or ["today=saeembed/default_sae"]:
        name, path = spec.split("=", 1)
        sae = load_sae(path).eval()
        layer = int(sae.cfg.hook.split(".")[1])
        codes = {s: M.encode_set(sae, M.load_set(Path(args.acts), s, layer), s) for s in SETS}
        print(f"\n{name} ({sae.d_sae} latents)\n")
        print("| set | median tokens | p* | generic measured | if tokens were independent | activations in generic features |")
        print("|---|---|---|---|---|---|")
        for s, c in codes.items():
            length = float(np.median(c.n_tokens))
            p = np.bincount(c.entries[1], minlength=sae.d_sae) / c.n_tokens.sum()
            df = np.bincount(c.pooled["feature"].to_numpy(), minlength=sae.d_sae) / c.n_docs
            live, generic = df > 0, df > M.GENERIC_DF
            independent = 1 - (1 - p) ** length > M.GENERIC_DF
            print(f"| {s} | {length:.0f} | {1 - 0.5 ** (1 / length):.4f} | {generic[live].mean():.1%} | "
                  f"{independent[live].mean():.1%} | {p[generic].sum() / p.sum():.0%} |")
        feats = np.concatenate([c.entries[1] for c in codes.values()])
        vals = np.concatenate([c.entries[2] for c in codes.values()])
        order = np.argsort(feats, kind="stable")
        by_feature = vals[order]
        bounds = np.searchsorted(feats[order], np.arange(sae.d_sae + 1))
        ref = np.array([np.quantile(by_feature[a:b], 0.99) if b > a else np.inf for a, b in zip(bounds, bounds[1:])])
        print("\n| cut q | token activations kept | " + " | ".join(SETS) + " |")
        print("|---" * (len(SETS) + 2) + "|")
        for q in CUTS:
            cells = []
            for c in codes.values():
                f, v = c.pooled["feature"].to_numpy(), c.pooled["value"].to_numpy()
                df = np.bincount(f[v >= q * ref[f]], minlength=sae.d_sae) / c.n_docs
                cells.append(f"{(df > M.GENERIC_DF).sum() / max((df > 0).sum(), 1):.1%}")
            print(f"| {q} | {(vals >= q * ref[feats]).mean():.0%} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Would pooling that skips stop-word tokens remove the generic features? (a pooling candidate, numpy only)

    python benchmarks/default_sae/pool_variants.py --acts /tmp/sae_select/acts --sae saeembed/default_sae

Same SAE, same cached tokens; documents max-pooled (saeembed's pool_max) over (a) every content token, as
`saeembed encode` does today, (b) content tokens that are not stop words / symbol-only tokens, (c) also
without word pieces (measures.function_tokens). Prints the generic share (features firing in > 50 % of a
set's documents, of those live on it) per set and the share of documents left with no token at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measures as M  # noqa: E402

SETS = ["davidson", "tw_off_test", "persona", "syngoalex", "gpt4_concise_vs_verbose_b", "mixtral_concise_vs_verbose_b"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acts", default="/tmp/sae_select/acts")
    ap.add_argument("--sae", default="saeembed/default_sae")
    args = ap.parse_args()
    import torch

    from saeembed.encode.models import load_model
    from saeembed.sae.formats import load_sae

    torch.set_num_threads(1)
    sae = load_sae(args.sae).eval()
    layer = int(sae.cfg.hook.split(".")[1])
    tok = load_model(None, device="cpu").tokenizer
    out = {}
    for s in SETS:
        data = M.load_set(Path(args.acts), s, layer)
        flags = M.function_tokens(tok, data)
        n_docs = len(data["rows"])
        row = {}
        for name, drop in (("all tokens", None), ("no stop words", flags["stop"]),
                           ("no stop words or pieces", flags["stop"] | flags["piece"])):
            keep = np.ones(len(data["doc"]), bool) if drop is None else ~drop
            sub = {**data, "x": np.asarray(data["x"])[keep], "doc": data["doc"][keep], "span": data["span"][keep]}
            c = M.encode_set(sae, sub, s)
            c.n_docs = n_docs
            g = M.generic_share(c, sae.d_sae)
            row[name] = {"generic_share": g["share"], "generic": g["generic"], "live": g["live"],
                         "empty_docs": float((np.bincount(sub["doc"], minlength=n_docs) == 0).mean())}
        out[s] = row
        print(s, json.dumps({k: (round(v["generic_share"], 4), round(v["empty_docs"], 3)) for k, v in row.items()}),
              flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""`saeembed encode --skip-tokens function` through the real encode path, with the default SAE: the generic
share (features in > 50 % of a set's documents, of those live on it) and encode speed, against --skip-tokens none.

    python benchmarks/default_sae/skip_tokens_encode.py [--sets davidson persona gpt4_concise_vs_verbose_b]

Sets as eval_sets.build_sets samples them (../shared/data/eval). Stores go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_sets import build_sets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=["davidson", "persona", "gpt4_concise_vs_verbose_b"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from saeembed.documents import Documents
    from saeembed.encode.models import load_model
    from saeembed.encode.pipeline import EncodeConfig, encode_corpus
    from saeembed.sae.default import load_default_sae
    from saeembed.store import Store

    torch.set_num_threads(args.threads)
    sets = build_sets()
    sae, model = load_default_sae(), load_model(None, device="cpu")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            texts = [r["text"] for r in sets[name]]
            row = {"docs": len(texts)}
            for skip in ("none", "function", "none"):  # none twice: the speed of the first run is warm-up
                with Store(Path(tmp) / f"{name}-{skip}.duckdb", create=True) as st:
                    if not st.has_corpus("c"):
                        st.add_corpus("c", Documents(pl.DataFrame({"doc_id": [str(i) for i in range(len(texts))],
                                                                   "text": texts}), "text", "id", [], "mem", 0))
                    r = encode_corpus(st, "c", model=model, sae=sae,
                                      config=EncodeConfig(device="cpu", skip_tokens=skip, replace=True))
                    info = st.corpus("c")
                    acts = st.activation_rows(info, st.encoded_sae(info))
                df = np.bincount(acts["feature"], minlength=sae.d_sae) / len(texts)
                live, generic = int((df > 0).sum()), int((df > 0.5).sum())
                row[skip] = {"generic_share": round(generic / live, 4), "generic": generic, "live": live,
                             "rows_per_doc": round(len(acts["feature"]) / len(texts), 1),
                             "tokens_per_s": round(r.tokens_per_s)}
            out[name] = row
            print(name, json.dumps(row), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

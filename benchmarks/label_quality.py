"""Offline label quality on the default SAE over a subsample of ../shared/data/sae-train.

    python benchmarks/label_quality.py [--per-file 400] [--features 100] [--store /tmp/label_bench.duckdb]

Builds (once) a store with --per-file documents from each sae-train file (seeded sample; the file name
is the `source` metadata column), encodes it with the embedded model + default SAE, then labels
--features live features offline twice: a uniform random sample of live features (seeded) and the most
frequent live features. Prints the embedding-scorer AUROC distribution (median, share >= 0.7, vs random
and vs hard negatives), the time per feature, and example labels with their top exemplar so a person
can judge them. Also measures the LLM path's prompt sizes per feature against a local scripted server
(--llm-sizes N features; every answer is canned, so only token counts are meaningful).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sae-train"
sys.path.insert(0, str(ROOT))


def build_store(path: Path, per_file: int) -> None:
    from saeembed.documents import ingest
    from saeembed.encode.pipeline import encode_corpus
    from saeembed.store import Store

    rows = []
    for f in sorted(DATA.glob("*.jsonl")):
        lines = f.read_text(encoding="utf-8").splitlines()
        for line in random.Random(0).sample(lines, min(per_file, len(lines))):
            rows.append({"text": json.loads(line)["text"], "source": f.stem})
    tmp = path.with_suffix(".jsonl")
    tmp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with Store(path) as st:
        ingest(st, tmp, corpus="sae_train_sample")
        t = time.time()
        res = encode_corpus(st, "sae_train_sample")
        print(f"encoded {res.docs_encoded} docs, {res.tokens} tokens in {time.time() - t:.0f}s", flush=True)
    tmp.unlink()


def summarize(frame: pl.DataFrame, name: str) -> dict:
    s = frame["score"].drop_nulls().to_numpy()
    h = frame["auroc_hard"].drop_nulls().to_numpy()
    return {
        "set": name, "features": frame.height, "scored": len(s),
        "median_auroc": round(float(np.median(s)), 3) if len(s) else None,
        "share_ge_0.7": round(float((s >= 0.7).mean()), 3) if len(s) else None,
        "p25": round(float(np.percentile(s, 25)), 3) if len(s) else None,
        "p75": round(float(np.percentile(s, 75)), 3) if len(s) else None,
        "median_auroc_hard": round(float(np.median(h)), 3) if len(h) else None,
    }


def llm_sizes(store, features: list[int]) -> dict:
    """Prompt tokens and calls per feature on the LLM path, against the scripted local server."""
    from saeembed.interp.labels import label_features, LabelConfig
    from saeembed.interp.llm import LLMClient, LLMConfig
    from tests.llm_server import ScriptedLLMServer

    def answer(body):
        text = body["messages"][-1]["content"]
        if "Answer with JSON only: {\"answers\"" in text:
            n = int(text.split("list of ")[1].split(" ")[0])
            return {"answers": [1] * n}
        return {"label": "placeholder", "description": "placeholder description"}

    server = ScriptedLLMServer(answer).start()
    try:
        client = LLMClient(None, LLMConfig(model="size-probe", base_url=server.url, api_key="x", price_in=0, price_out=0))
        run = label_features(store, features, llm=client, config=LabelConfig(save=False))
        u = client.usage
        return {"features": len(features), "calls_per_feature": u.calls / len(features),
                "prompt_tokens_per_feature": u.prompt_tokens / len(features),
                "completion_tokens_per_feature": u.completion_tokens / len(features),
                "ok": int((run.frame["status"] == "ok").sum()),
                "note": "server counts ~4 chars/token + 4 per message"}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-file", type=int, default=400)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--store", default="/tmp/label_bench.duckdb")
    ap.add_argument("--llm-sizes", type=int, default=10)
    ap.add_argument("--examples", type=int, default=15)
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found")
        return
    from saeembed.interp.labels import LabelConfig, label_features, live_features, resolve_scope
    from saeembed.store import Store

    path = Path(args.store)
    if not path.exists():
        build_store(path, args.per_file)
    pl.Config.set_tbl_rows(200), pl.Config.set_fmt_str_lengths(90), pl.Config.set_tbl_width_chars(250)
    with Store(path, read_only=True) as st:
        sae, cids = resolve_scope(st)
        live = live_features(st, sae, cids)
        n_docs = st.query("SELECT count(*) AS n FROM encoded_docs")["n"][0]
        print(f"{n_docs} docs, {len(live)} live features of {sae.d_sae}", flush=True)
        sets = {"random live": sorted(random.Random(0).sample(live, min(args.features, len(live)))),
                "most frequent": live[: args.features]}
        out = []
        for name, feats in sets.items():
            from saeembed.encode.dense import get_embedder

            get_embedder(None)  # load once, outside the timing
            t = time.time()
            run = label_features(st, feats, config=LabelConfig(save=False))
            secs = time.time() - t
            summ = summarize(run.frame, name) | {"seconds_per_feature": round(secs / len(feats), 2)}
            print(json.dumps(summ), flush=True)
            out.append(summ)
            top1 = st.exemplar_snippets(sae.sae_key, feats[: args.examples], per_feature=1, width=50)
            shown = run.frame.head(args.examples).join(top1.select("feature", "snippet").cast({"feature": pl.Int64}),
                                                       on="feature", how="left")
            print(shown.select("feature", "n_active", "score", "auroc_hard", "label", "snippet"))
        if args.llm_sizes:
            sizes = llm_sizes(st, sets["random live"][: args.llm_sizes])
            print(json.dumps({"llm_path": sizes}), flush=True)
    print(json.dumps({"machine": platform.platform(), "python": platform.python_version()}))


if __name__ == "__main__":
    main()

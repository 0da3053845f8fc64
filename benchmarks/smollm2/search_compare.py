"""Property search: SmolLM2 + its SAE against the embedded MiniLM default, same corpus, same queries.

    python benchmarks/smollm2/search_compare.py --sae /tmp/smolsearch/sae_smol [--properties 6] [--per-property 240]
        [--out-dir /tmp/smolsearch] [--skip-tokens function] [--only minilm|smol|search]

Data: ../shared/data/eval/retrieval/persona, the properties and statements benchmarks/prep_persona.py draws
(seeded: properties sampled from the sorted files, per property half matches = true, half false), pooled
into ONE corpus, encoded as plain text by both (the SmolLM2 SAE was trained on plain-text windows).
Per property: query = its name in words ("desire for acquiring wealth"), as benchmarks/search_persona.py
asks; relevant = its statements with matches = true (its matches = false ones are hard negatives on the
same topic); every method ranks the whole corpus. Methods: saeembed's search with mode "sae" and match
"prf" per model (pseudo-relevance feedback needs no feature labels), match "auto" per model where the SAE
has an atlas (MiniLM: the shipped one; SmolLM2: an atlas.npz beside --sae, e.g. from `saeembed sae atlas`),
and the dense baseline once (the same MiniLM sentence model for both stores).
Writes OUT_DIR/search_compare.json; stores OUT_DIR/search_{minilm,smol}.duckdb.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from prep_persona import persona_rows  # noqa: E402
from search_persona import average_precision, p_at  # noqa: E402

CORPUS = "persona"


def encode(store_path: Path, frame: pl.DataFrame, model, sae, skip_tokens: str | None = None) -> dict:
    """Ingest (once) and encode the corpus; dense embeddings cached too (prf and dense read them).
    Empty when the store was already encoded (a rerun keeps the recorded times)."""
    import saeembed
    from saeembed.config import EncodeConfig
    from saeembed.documents import Documents
    from saeembed.encode.dense import corpus_embeddings

    with saeembed.Store(store_path) as st:
        if not st.has_corpus(CORPUS):
            st.add_corpus(CORPUS, Documents(frame, "text", "doc_id", ["property", "matches"], "eval", 0))
        t0 = time.perf_counter()
        r = saeembed.encode_corpus(st, CORPUS, model=model, sae=sae, config=EncodeConfig(device="cpu", batch_size=16, skip_tokens=skip_tokens))
        if not r.docs_encoded:
            return {}
        out = {"encode_seconds": round(time.perf_counter() - t0, 1), "docs_encoded": r.docs_encoded,
               "tokens": r.tokens, "skip_tokens": r.skip_tokens}
        t0 = time.perf_counter()
        corpus_embeddings(st, CORPUS)
        out["dense_seconds"] = round(time.perf_counter() - t0, 1)
    print(store_path.name, out, flush=True)
    return out


def has_atlas(store) -> bool:
    sae = store.encoded_sae(store.corpus(CORPUS), None)
    return store.sae_atlas(sae.sae_key) is not None


def evaluate(store_path: Path, label: str, methods: dict[str, dict], n_features: int) -> list[dict]:
    import saeembed
    from saeembed.analysis.retrieve import search

    rows = []
    with saeembed.Store(store_path) as st:
        docs = st.documents(CORPUS, text=False)
        n = docs.height
        for prop in sorted(docs["property"].unique().to_list()):
            relevant = set(docs.filter((pl.col("property") == prop) & pl.col("matches"))["doc_idx"].to_list())
            for name, kw in methods.items():
                t = time.perf_counter()
                got = search(st, CORPUS, prop.replace("-", " "), top=n, depth=n, n_features=n_features, **kw)
                ranked = got["doc_idx"].to_list()
                rows.append({"model": label, "method": name, "property": prop,
                             "ap": average_precision(ranked, relevant), "p20": p_at(ranked, relevant, 20),
                             "ranked": len(ranked), "relevant": len(relevant),
                             "seconds": round(time.perf_counter() - t, 2)})
            print(label, prop, {r["method"]: round(r["ap"], 3) for r in rows[-len(methods):]}, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", required=True, help="the SmolLM2 SAE folder (an atlas.npz beside it adds `auto`)")
    ap.add_argument("--properties", type=int, default=6)
    ap.add_argument("--per-property", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-features", type=int, default=30)
    ap.add_argument("--out-dir", default="/tmp/smolsearch")
    ap.add_argument("--only", choices=["minilm", "smol", "search"], default=None,
                    help="encode only this model's stores (search: encode nothing, search the stores there are)")
    ap.add_argument("--skip-tokens", choices=["none", "function"], default=None,
                    help="also a store per model pooled this way (default: only each SAE's own recommendation)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    import saeembed
    from saeembed.encode.models import load_model

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(persona_rows(args.properties, args.per_property, args.seed))
    result_path = out / "search_compare.json"
    results = json.loads(result_path.read_text()) if result_path.exists() else {}
    results.update({"machine": platform.platform(), "docs": frame.height,
                    "properties": sorted(frame["property"].unique().to_list()),
                    "relevant": frame.group_by("property").agg(pl.col("matches").sum()).sort("property").rows()})
    skip = args.skip_tokens
    variants = (("", None), (f" skip {skip}", skip))[: 2 if skip else 1]
    stores = {}
    for m in ("minilm", "smol"):
        stores[m] = out / f"search_{m}.duckdb"
        if skip:
            stores[f"{m} skip {skip}"] = out / f"search_{m}_skip_{skip}.duckdb"
    if args.only in (None, "minilm"):
        for tag, how in variants:
            results["minilm" + tag] = results.get("minilm" + tag, {}) | encode(stores["minilm" + tag], frame, None, None, how)
    if args.only in (None, "smol"):
        t0 = time.perf_counter()
        model = load_model("smollm2", device="cpu")
        results["smol_load_seconds"] = round(time.perf_counter() - t0, 1)
        for tag, how in variants:
            got = encode(stores["smol" + tag], frame, model, str(Path(args.sae).resolve()), how)
            results["smol" + tag] = results.get("smol" + tag, {}) | got
        del model
    result_path.write_text(json.dumps(results, indent=1, default=str))
    rows = []
    for label, path in stores.items():
        if not path.exists():
            continue
        methods = {"sae prf": dict(mode="sae", match="prf")}
        with saeembed.Store(path) as st:
            atlas = has_atlas(st)
        results.setdefault(label, {})["atlas"] = atlas
        if atlas:
            methods["sae auto"] = dict(mode="sae", match="auto")
        if label == "minilm":  # the same sentence model in every store
            methods["dense"] = dict(mode="dense")
        rows += evaluate(path, label, methods, args.n_features)
    table = pl.DataFrame(rows)
    summary = (table.group_by("model", "method", maintain_order=True)
               .agg(MAP=pl.col("ap").mean(), P20=pl.col("p20").mean(), median_s=pl.col("seconds").median()))
    with pl.Config(tbl_rows=40, tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True, float_precision=3,
                   tbl_hide_column_data_types=True, tbl_width_chars=200):
        wide = table.with_columns(run=pl.col("model") + " " + pl.col("method"), property=pl.col("property").str.slice(0, 40))
        print(wide.pivot(on="run", index="property", values="ap"))
        print(summary)
    results["rows"] = rows
    results["summary"] = summary.to_dicts()
    result_path.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {result_path}")


if __name__ == "__main__":
    main()

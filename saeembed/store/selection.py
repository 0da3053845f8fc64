"""Which documents an analysis reads and their activations: filtered document tables, sparse rows for
CSR matrices, and the per-feature reads behind search."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from saeembed.errors import FilterError
from saeembed.store.filters import parse_filter
from saeembed.store.records import CorpusInfo, SAEInfo


class SelectionMixin:
    """Store methods that pick documents and read their activations."""

    def select_documents(self, info: CorpusInfo, sae: SAEInfo, wheres: list[str | None], *, columns=(),
                         encoded_only: bool = True) -> list[pl.DataFrame]:
        """Per entry of `wheres` (a filter, or None for every document), the matching documents in doc_idx
        order: doc_idx plus the columns read. The document table is read once, with only the columns the
        filters and `columns` name; encoded_only leaves out documents not encoded with `sae`."""
        allowed = self.filter_columns(info) if any(wheres) else None
        flts = [parse_filter(w, allowed) if w else None for w in wheres]
        clash = sorted({c for f in flts if f is not None for c in f.columns} & {"doc_id", "text", "n_chars", "n_tokens"}
                       & set(info.metadata_columns))
        if clash:  # a store from before ingest refused such names: never pick one meaning silently
            raise FilterError(f"filter column {clash[0]!r} of corpus {info.name!r} has two meanings, your metadata "
                              f"column {clash[0]!r} and the built-in column {clash[0]}; saeembed will not guess which: "
                              f"re-ingest the corpus with the column renamed (--rename {clash[0]}={clash[0]}_meta)")
        needed = set().union(*(f.columns for f in flts if f is not None)) | {c for c in columns if c != "doc_idx"}
        table = self.doc_table(info, sae, columns=sorted(needed | ({"n_tokens"} if encoded_only else set())))
        if encoded_only:
            table = table.filter(pl.col("n_tokens").is_not_null())
        out = [table if flt is None else flt.apply(table) for flt in flts]
        # the text, read only for a filter that tests it, is not kept unless asked for
        return out if "text" in columns else [t.drop("text", strict=False) for t in out]

    def activation_rows(self, info: CorpusInfo, sae: SAEInfo, features: list[int] | None = None,
                        docs=None) -> dict:
        """Arrays doc_idx, feature, value of the stored activations (only `features` when given, only the
        documents `docs` when given), in no particular order: the inputs of a sparse documents × features
        matrix."""
        return self.con.sql(
            "SELECT doc_idx, feature, value FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND (? OR feature IN (SELECT unnest(?))) AND (? OR doc_idx IN (SELECT unnest(?)))",
            params=[info.corpus_id, sae.sae_key, features is None, list(features or []),
                    docs is None, [] if docs is None else [int(d) for d in docs]],
        ).fetchnumpy()

    def n_encoded_docs(self, info: CorpusInfo, sae: SAEInfo) -> int:
        """How many documents of the corpus are stored encoded with `sae`."""
        return self._one("SELECT count(*) FROM encoded_docs WHERE corpus_id = ? AND sae_key = ?",
                         [info.corpus_id, sae.sae_key])

    def classifier_score_columns(self) -> dict[str, str]:
        """Score column -> classifier name, for every saved classifier (multi-class: one column per class,
        `name.class`)."""
        out = {}
        for name, model in self._all("SELECT name, model FROM classifiers"):
            m = json.loads(model)
            classes = m.get("classes") or []
            if m.get("type") == "linear_probe" and len(m.get("weights", [])) > 1:
                out.update({f"{name}.{c}": name for c in classes})
            else:
                out[name] = name
        return out

    def doc_idx_of(self, info: CorpusInfo, doc_id: str) -> int | None:
        """The doc_idx of the document with this id, None when the corpus has none."""
        return self._one("SELECT doc_idx FROM documents WHERE corpus_id = ? AND doc_id = ?",
                         [info.corpus_id, str(doc_id)])

    # --- search -------------------------------------------------------------------------------------

    def feature_scales(self, info: CorpusInfo, sae: SAEInfo, features: list[int]) -> pl.DataFrame:
        """feature, scale: each feature's largest value in the corpus (its rank-1 exemplar); features that
        never fire have no row."""
        return self.query(
            "SELECT feature, max(value) AS scale FROM exemplars WHERE corpus_id = ? AND sae_key = ? AND rank = 1 "
            "AND feature IN (SELECT unnest(?)) GROUP BY feature",
            [info.corpus_id, sae.sae_key, list(features)],
        )

    def weighted_scores(self, info: CorpusInfo, sae: SAEInfo, scales: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(doc_idx, score) of every document where a feature of `scales` (feature, weight, scale) fires,
        score = sum of weight * value / scale over those features; in no particular order."""
        res = self.con.sql(
            """
            WITH w AS (SELECT unnest(?::INTEGER[]) AS feature, unnest(?::DOUBLE[]) AS weight, unnest(?::DOUBLE[]) AS scale)
            SELECT a.doc_idx, sum(w.weight * a.value / w.scale) AS score
            FROM activations a JOIN w USING (feature)
            WHERE a.corpus_id = ? AND a.sae_key = ?
            GROUP BY a.doc_idx
            """,
            params=[scales["feature"].to_list(), scales["weight"].to_list(), scales["scale"].to_list(),
                    info.corpus_id, sae.sae_key],
        ).fetchnumpy()
        return np.asarray(res["doc_idx"], np.int64), np.asarray(res["score"], np.float64)

    def docs_with_features(self, info: CorpusInfo, sae: SAEInfo, features: list[int]) -> np.ndarray:
        """doc_idx of the documents where any of `features` fires."""
        res = self.con.sql(
            "SELECT DISTINCT doc_idx FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND feature IN (SELECT unnest(?))",
            params=[info.corpus_id, sae.sae_key, list(features)],
        ).fetchnumpy()["doc_idx"]
        return np.asarray(res, np.int64)

    def activation_spans(self, info: CorpusInfo, sae: SAEInfo, doc_idx: list[int], features: list[int]) -> pl.DataFrame:
        """doc_idx, feature, value, span_start, span_end (the strongest token) of `features` in `doc_idx`."""
        return self.query(
            "SELECT doc_idx, feature, value, span_start, span_end FROM activations WHERE corpus_id = ? AND sae_key = ? "
            "AND doc_idx IN (SELECT unnest(?)) AND feature IN (SELECT unnest(?))",
            [info.corpus_id, sae.sae_key, list(doc_idx), list(features)],
        )

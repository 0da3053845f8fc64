"""Per-document tables a filter reads: built-in columns, the user's metadata and saved clusterings."""

from __future__ import annotations

import polars as pl

from saeembed.errors import InputError
from saeembed.store.records import CorpusInfo, SAEInfo
from saeembed.store.sql import quote_ident

COLUMN_PREFIX = "cluster."  # a saved clustering NAME is the filter column cluster.NAME


class TablesMixin:
    """Store methods that build document tables for filters and analyses."""

    def filter_columns(self, info: CorpusInfo) -> list[str]:
        """Columns a filter may name: doc_id, text, n_chars, n_tokens, the user's metadata, and (given the
        store) `cluster.NAME` for each clustering of the corpus saved by `saeembed cluster`."""
        return ["doc_id", "text", "n_chars", "n_tokens", *info.metadata_columns, *self.cluster_names(info)]

    def doc_table(self, corpus: str | CorpusInfo, sae: SAEInfo | None = None,
                  columns: list[str] | None = None, *, text: bool = False) -> pl.DataFrame:
        """One row per document, in doc_idx order: doc_idx plus `columns` (default: doc_id, n_chars,
        n_tokens when encoded with `sae`, and every metadata column) — what a filter can name. The text,
        the one large column, comes only when `columns` names it or `text` is set."""
        info = corpus if isinstance(corpus, CorpusInfo) else self.corpus(corpus)
        if columns is None:
            wanted = [c for c in self.filter_columns(info) if c != "text" or text]
        else:
            wanted = [c for c in columns if c != "doc_idx"] + (["text"] if text and "text" not in columns else [])
        if sae is None:
            wanted = [c for c in wanted if c != "n_tokens"]
        clusters = [c for c in wanted if c.startswith("cluster.") and c not in info.metadata_columns]
        wanted = [c for c in wanted if c not in clusters]
        cols, joins, params = ["d.doc_idx"], [], []
        for c in wanted:
            if c in ("doc_id", "n_chars", "text"):
                cols.append(f"d.{c}")
            elif c == "n_tokens":
                cols.append("e.n_tokens")
            elif c in info.metadata_columns:
                cols.append(f"m.{quote_ident(c)}")
            else:
                raise InputError(f"corpus {info.name!r} has no column {c!r}; columns: {', '.join(self.filter_columns(info))}")
        if any(c in info.metadata_columns for c in wanted):
            joins.append(f"LEFT JOIN {info.meta_table} m ON m.doc_idx = d.doc_idx")
        if "n_tokens" in wanted:
            joins.append("LEFT JOIN encoded_docs e ON e.corpus_id = d.corpus_id AND e.doc_idx = d.doc_idx AND e.sae_key = ?")
            params.append(sae.sae_key)
        sql = f"SELECT {', '.join(cols)} FROM documents d {' '.join(joins)} WHERE d.corpus_id = ? ORDER BY d.doc_idx"
        frame = self.query(sql, params + [info.corpus_id])
        if clusters:  # saved clusterings (`saeembed cluster --name NAME`) as columns cluster.NAME
            saved = self.cluster_columns(info)
            missing = [c for c in clusters if saved is None or c not in saved.columns]
            if missing:
                raise InputError(f"corpus {info.name!r} has no saved clustering {missing[0][len('cluster.'):]!r}; "
                                 "see `saeembed clusterings`")
            frame = frame.join(saved.select("doc_idx", *clusters), on="doc_idx", how="left")
        return frame

    def cluster_names(self, info: CorpusInfo) -> list[str]:
        """The filter columns `cluster.NAME` of the corpus's saved clusterings."""
        saved = self.query("SELECT name FROM clusterings WHERE corpus_id = ? ORDER BY clustering_id", [info.corpus_id])
        return [COLUMN_PREFIX + n for n in saved["name"].to_list()]

    def cluster_columns(self, info: CorpusInfo) -> pl.DataFrame | None:
        """doc_idx plus one column `cluster.NAME` per saved clustering of the corpus (null for documents a
        clustering did not cover): what makes clusters usable in --where filters."""
        saved = self.query("SELECT clustering_id, name FROM clusterings WHERE corpus_id = ? ORDER BY clustering_id",
                            [info.corpus_id])
        if saved.is_empty():
            return None
        rows = self.query(
            "SELECT a.clustering_id, a.doc_idx, a.cluster FROM cluster_assignments a "
            "JOIN clusterings c USING (clustering_id) WHERE c.corpus_id = ?", [info.corpus_id],
        )
        names = dict(saved.iter_rows())
        wide = rows.pivot(on="clustering_id", index="doc_idx", values="cluster")
        return wide.rename({str(k): COLUMN_PREFIX + v for k, v in names.items() if str(k) in wide.columns})

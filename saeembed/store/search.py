"""Reads behind text search that no other analysis needs: the words a feature's exemplars fire on."""

from __future__ import annotations

import polars as pl

# characters of context read on each side of an exemplar's span, enough to widen it to whole words
_EXEMPLAR_PAD = 24


class SearchMixin:
    """Store methods for search."""

    def exemplar_spans_text(self, corpus_id: int, sae_key: int, per_feature: int) -> pl.DataFrame:
        """feature, rank, piece, start, end: for each feature's `per_feature` strongest exemplars in the
        corpus, a piece of the document around the span and the span's offsets within that piece (rows
        without a span are left out)."""
        return self.query(
            """
            SELECT x.feature, x.rank,
                   substr(d.text, greatest(x.span_start - ?, 0) + 1, x.span_end - greatest(x.span_start - ?, 0) + ?) AS piece,
                   x.span_start - greatest(x.span_start - ?, 0) AS start,
                   x.span_end - greatest(x.span_start - ?, 0) AS "end"
            FROM exemplars x JOIN documents d ON d.corpus_id = x.corpus_id AND d.doc_idx = x.doc_idx
            WHERE x.corpus_id = ? AND x.sae_key = ? AND x.rank <= ? AND x.span_start IS NOT NULL
              AND x.span_end > x.span_start
            ORDER BY x.feature, x.rank
            """,
            [_EXEMPLAR_PAD] * 5 + [corpus_id, sae_key, per_feature],
        )

    def docs_with_word(self, corpus_id: int, pattern: str, doc_idx: list[int] | None = None) -> pl.DataFrame:
        """doc_idx, n_chars of the corpus's documents whose lower-cased text matches the regular expression
        `pattern` (built by the caller from query words, never from raw user text), optionally among
        `doc_idx` only."""
        return self.query(
            """
            SELECT doc_idx, length(text) AS n_chars FROM documents
            WHERE corpus_id = ? AND (? OR doc_idx IN (SELECT unnest(?))) AND regexp_matches(lower(text), ?)
            ORDER BY doc_idx
            """,
            [corpus_id, doc_idx is None, doc_idx or [], pattern],
        )


"""What the store hands out about its corpora and SAEs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CorpusInfo:
    corpus_id: int
    name: str
    n_docs: int
    source: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    metadata_columns: dict[str, str] = field(default_factory=dict)  # name -> polars dtype

    @property
    def meta_table(self) -> str:
        return f"docmeta_{self.corpus_id}"


@dataclass(frozen=True)
class SAEInfo:
    sae_key: int
    sae_hash: str
    model: str | None
    hook: str | None
    architecture: str
    k: int | None
    d_in: int
    d_sae: int
    source: str | None

    def check_features(self, features) -> list[int]:
        """Feature ids a user typed, checked against the SAE's width."""
        from saeembed.errors import UnknownFeatureError

        bad = [f for f in features if not 0 <= int(f) < self.d_sae]
        if bad:
            raise UnknownFeatureError(
                f"feature {bad[0]} does not exist: SAE {self.sae_hash} has features 0..{self.d_sae - 1}")
        return [int(f) for f in features]

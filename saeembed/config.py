"""The settings of encoding, training, diffing and clustering: each default and its help written once.

The CLI builds its options from these fields (default and help text), so a default is never typed
twice. This module imports nothing heavy: the command line reads it at start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from saeembed.errors import InputError

SHARD_AUTO_DOCS = 100_000  # encodes at least this large write Parquet shards by default


def setting(default, help: str):
    """A dataclass field with its help text (shown by the CLI option built from it)."""
    return field(default=default, metadata={"help": help})


@dataclass
class EncodeConfig:
    """How documents are encoded."""

    batch_size: int = setting(64, "Windows per forward pass.")
    max_batch_tokens: int = setting(16384, "Padded tokens per forward pass at most.")
    chunk_docs: int = setting(256, "Documents per write (local) or per Ray batch; a crash loses at most one.")
    window: int | None = setting(
        None, "Tokens per window (long documents are split, never truncated). Default: the model's limit, at most 512.")
    exclude_special: bool = setting(True, "Leave BOS/CLS/SEP/padding tokens out of pooling.")
    chat_template: bool = setting(
        False, "Wrap each document as an assistant turn of the model's chat template; template tokens are not pooled.")
    prompt_column: str | None = setting(None, "Metadata column holding the user turn (for --chat-template).")
    messages_column: str | None = setting(
        None, "Column holding each document's conversation, a list of {role, content} turns (JSON text or a list of "
              "structs), rendered with the model's chat template; only the --roles turns are pooled.")
    roles: tuple[str, ...] = setting(
        ("assistant",), "Roles whose turns are pooled with --messages-column (repeatable or a comma list; 'all': every turn).")
    exemplars_per_feature: int = setting(20, "Top documents kept per feature.")
    device: str | None = setting("auto", "cpu, cuda, cuda:N, mps or auto.")
    replace: bool = setting(False, "Re-encode from scratch: a stored encoding of this corpus with this SAE is dropped first.")
    trust_remote_code: bool = setting(False, "Allow the model repo's own Python code to run.")
    shards: str = setting(
        "auto", "Write activations as Parquet shards beside the store: on, off, auto (100k+ documents; always with Ray).")
    shard_docs: int = setting(16384, "Documents per shard (what a crash can lose when sharding).")
    backend: str = setting("local", "local, or ray (pip install 'saeembed[ray]'): an actor pool, one model+SAE per actor.")
    ray_address: str | None = setting(
        None, "Ray cluster address for --backend ray ('auto' joins the running cluster; default starts a local one).")
    workers: int = setting(2, "Ray actors (for --backend ray).")
    gpus_per_worker: float = setting(0.0, "GPUs each Ray actor reserves (for --backend ray; 0: CPU).")
    keep_tokens: bool = setting(
        False, "Also store every content token's active features (Parquet shards beside the store): export "
               "--tokens, --pool mean/sum, show and triggers then read them instead of re-running the model.")
    skip_tokens: str | None = setting(
        None, "Pool without function tokens: 'function' leaves whole-word English stop words and punctuation/symbol-only "
              "tokens out of each document's max-pool (pieces of longer words always count; a document with nothing "
              "else keeps every token); 'none' pools every content token. Default: what the SAE recommends, else none.")

    def use_shards(self, to_do: int) -> bool:
        if self.shards not in ("on", "off", "auto"):
            raise InputError(f"--shards must be on, off or auto, not {self.shards!r}")
        return self.backend == "ray" or self.shards == "on" or (self.shards == "auto" and to_do >= SHARD_AUTO_DOCS)

    def pooling_params(self, window: int) -> dict:
        # skip_tokens is written only when tokens are skipped: absent reads as "none", so stores encoded
        # before it existed resume unchanged
        skip = {"skip_tokens": self.skip_tokens} if self.skip_tokens not in (None, "none") else {}
        return {
            "pooling": "max",
            "exclude_special": self.exclude_special,
            "chat_template": self.chat_template,
            "window": window,
            "prompt_column": self.prompt_column,
        } | skip | ({"chat_template": True, "messages_column": self.messages_column, "roles": list(parse_roles(self.roles))}
                    if self.messages_column else {})


def parse_roles(roles) -> tuple[str, ...]:
    """--roles values (repeatable, or comma lists) as a sorted tuple; ('all',) for every role."""
    values = [roles] if isinstance(roles, str) else list(roles or [])
    names = sorted({r.strip() for v in values for r in str(v).split(",") if r.strip()})
    if not names:
        raise InputError("--roles names no role; give e.g. --roles assistant, --roles user,assistant or --roles all")
    return ("all",) if "all" in names else tuple(names)


@dataclass
class TrainConfig:
    """How to train a TopK SAE. The defaults are sparsify's, scaled to a small model."""

    d_sae: int = setting(8192, "Number of SAE latents (d_sae); ignored when expansion_factor is set.")
    expansion_factor: int | None = setting(None, "If set, d_sae = expansion_factor * d_in.")
    k: int = setting(32, "Latents kept per token (TopK), or on average per token (BatchTopK).")
    architecture: str = setting(
        "topk", "topk (k latents on every token) or batchtopk (the batch's k x tokens largest, so a token can take "
                "more or fewer than k; saved as JumpReLU with the learned threshold).")
    lr: float | None = setting(None, "Learning rate (default: 2e-4 / sqrt(d_sae / 16384), sparsify's rule).")
    # A short run (max_tokens) scales the two schedule lengths below to itself when they are left at None:
    # otherwise warm-up and the dead-latent rule would never finish within the run.
    warmup_steps: int | None = setting(
        None, "Steps of linear lr warm-up from 0 (default: 1000, or a tenth of a shorter max_tokens run).")
    batch_size: int = setting(4096, "Tokens per optimizer step.")
    auxk_alpha: float = setting(1 / 32, "AuxK loss coefficient (OpenAI); 0 disables AuxK.")
    # None -> d_in // 2: the OpenAI paper's rule of thumb ("a power of two close to d_model / 2",
    # appendix B.1), which sparsify uses literally; the residual it reconstructs lives in d_in dimensions.
    auxk_k: int | None = setting(None, "Dead latents AuxK uses per token (default: d_in // 2).")
    dead_tokens_threshold: int | None = setting(
        None, "A latent is dead once silent for this many tokens (default: 10M as sparsify, or max_tokens / 20 "
              "when smaller, at least one batch).")
    shuffle_buffer: int = setting(262_144, "Tokens held for shuffling (memory: shuffle_buffer * d_in * itemsize).")
    max_tokens: int | None = setting(None, "Stop after this many training tokens (default: the whole stream).")
    seed: int = setting(0, "Seed of the initialisation and the shuffle.")
    device: str = setting("cpu", "Device to train on.")
    checkpoint_dir: str | None = setting(None, "Save checkpoints here; re-running resumes.")
    checkpoint_every: int = setting(1000, "Steps between checkpoints.")
    log_every: int = setting(50, "Steps between progress reports.")

    def __post_init__(self):
        steps = max(1, self.max_tokens // max(1, self.batch_size)) if self.max_tokens else None
        if self.warmup_steps is None:
            self.warmup_steps = 1000 if steps is None else min(1000, max(1, steps // 10))
        if self.dead_tokens_threshold is None:
            self.dead_tokens_threshold = 10_000_000 if not self.max_tokens else min(
                10_000_000, max(self.batch_size, self.max_tokens // 20))

    def resolved(self, d_in: int) -> TrainConfig:
        """A copy with d_sae, lr and auxk_k filled in for this input width, after validation."""
        if d_in < 1:
            raise InputError(f"d_in must be >= 1, got {d_in}")
        d_sae = self.expansion_factor * d_in if self.expansion_factor is not None else self.d_sae
        cfg = replace(
            self,
            d_sae=d_sae,
            lr=self.lr if self.lr is not None else 2e-4 / math.sqrt(d_sae / 16384),
            auxk_k=self.auxk_k if self.auxk_k is not None else max(1, d_in // 2),
        )
        checks = [
            (cfg.d_sae >= 1, f"d_sae must be >= 1, got {cfg.d_sae}"),
            (1 <= cfg.k <= cfg.d_sae, f"k must be between 1 and d_sae={cfg.d_sae}, got {cfg.k}"),
            (cfg.architecture in ("topk", "batchtopk"), f"architecture must be topk or batchtopk, not {cfg.architecture!r}"),
            (cfg.lr > 0, f"lr must be > 0, got {cfg.lr}"),
            (cfg.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (cfg.batch_size >= 2, f"batch_size must be >= 2, got {cfg.batch_size}"),
            (cfg.auxk_alpha >= 0, "auxk_alpha must be >= 0"),
            (cfg.auxk_k >= 1, "auxk_k must be >= 1"),
            (cfg.dead_tokens_threshold >= 1, "dead_tokens_threshold must be >= 1"),
            (cfg.max_tokens is None or cfg.max_tokens >= 1, "max_tokens must be >= 1"),
            (cfg.checkpoint_every >= 1 and cfg.log_every >= 1, "checkpoint_every and log_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"bad training config: {msg}")
        return cfg


@dataclass
class DiffConfig:
    """How a diff is computed."""

    length_control: str = setting(
        "auto", "on, off or auto: rank within token-length strata (CMH) so longer documents do not win by firing "
                "more features (auto: on when the sides' lengths differ clearly).")
    length_bins: int = setting(5, "Token-length strata for the length-controlled ranking.")
    keep_generic: bool = setting(False, "Keep features that fire on nearly everything or on random tokens.")
    generic_freq: float = setting(0.9, "A feature firing on at least this share of all documents is generic.")
    random_freq: float = setting(0.9, "A feature firing on at least this share of random-token texts is generic.")
    min_docs: int = setting(1, "A feature must fire in at least this many documents (both sides together).")
    exemplars: int = setting(1, "Exemplar snippets per side.")
    snippet_width: int = setting(50, "Characters of context on each side of an exemplar's span.")
    # The library returns the 50 best rows of each ranking; what a person reads is DiffView.top of each,
    # after its filters.
    top: int | None = setting(50, "Rows returned per ranking, best first (None: all).")
    separability: bool = setting(
        True, "Measure how well the listed features separate the sides (cross-validated AUROC, beside all "
              "features and length alone).")
    # 20 in all (10 per section when there are two): on every benchmark pair the listed features kept
    # >= 0.9 of the all-feature AUROC; 10 in all missed on 3 of 13 (benchmarks/results/diff_separability.md).
    separability_top: int = setting(
        20, "Features the separability figure uses in all: the shown top (split evenly between the sections when "
            "there are two).")
    group_column: str | None = setting(
        None, "Metadata column whose documents stay in one cross-validation fold (e.g. the prompt, when both sides "
              "answer the same prompts). Default: the --paired-on column, else stratified folds.")
    separability_folds: int = setting(5, "Cross-validation folds of the separability figure.")
    separability_max_docs: int = setting(20_000, "The separability figure samples (seeded) at most this many documents per side.")
    seed: int = setting(0, "Seed of the separability folds and sample.")


@dataclass
class DiffView:
    """Which rows of a diff to show: a filter on its frame, then the first `top` (per --by group)."""

    direction: str = setting("both", "both, a (more in A) or b (more in B).")
    max_q: float = setting(1.0, "Only features with a BH q-value at most this.")
    min_freq: float = setting(0.0, "Only features firing on at least this share of one side.")
    top: int = setting(
        20, "Rows to show in all, split evenly between the sections when there are two (per group with --by); the "
            "separability figure uses the same features.")

    def __post_init__(self):
        if self.direction not in ("both", "a", "b"):
            raise InputError(f"--direction must be both, a or b, not {self.direction!r}")

    def apply(self, frame):
        """The rows of a diff frame (diff's columns more_in, q_value, freq_a, freq_b) this view shows."""
        import polars as pl

        sections = frame["ranking"].n_unique() if "ranking" in frame.columns else 1
        if self.direction != "both":
            frame = frame.filter(pl.col("more_in") == self.direction.upper())
        if self.max_q < 1.0:
            frame = frame.filter(pl.col("q_value") <= self.max_q)
        if self.min_freq > 0:
            frame = frame.filter(pl.max_horizontal("freq_a", "freq_b") >= self.min_freq)
        if "ranking" in frame.columns:  # the first rows of each ranking, in the diff's order, `top` in all
            sizes = section_sizes(self.top, sections)
            parts = frame.partition_by("ranking", maintain_order=True)
            return pl.concat([p.head(n) for p, n in zip(parts, sizes)]) if parts else frame
        return frame.head(self.top)


def section_sizes(top: int, sections: int) -> list[int]:
    """`top` rows split over a diff's sections, the first ones taking the remainder (7 over 2: 4 + 3);
    every section shows at least one."""
    sections = max(1, sections)
    return [max(1, top // sections + (1 if i < top % sections else 0)) for i in range(sections)]


@dataclass
class FeaturesConfig:
    """Which features a listing (`saeembed features`, the features report) shows."""

    top: int = setting(20, "How many features.")
    order_by: str = setting("docs", "Rank by docs (how many documents fire), max or mean activation.")
    keep_generic: bool = setting(
        False, "Keep features that fire on nearly every document or on random tokens (left out by default, as in diff).")
    generic_freq: float = setting(0.9, "A feature firing on at least this share of the documents listed is generic.")
    random_freq: float = setting(0.9, "A feature firing on at least this share of random-token texts is generic.")


@dataclass
class ClusterConfig:
    """How to cluster."""

    method: str = setting("hdbscan", "hdbscan or kmeans (a given k means kmeans).")
    k: int | None = setting(None, "k-means with k clusters (default: HDBSCAN, which finds the number and marks noise).")
    n_features: int | None = setting(
        None, "How many features an axis selects (default: a found axis's 200 strongest for k-means, which "
              "separates its values better with more of them; 50 for HDBSCAN and for features matched by label).")
    match: str = setting(
        "auto", "How an axis picks features: auto (labelled features whose label is close to the name, once most "
                "features have LLM or hand-written labels; else axes), axes (the corpus's own axis of that kind, see "
                "`saeembed axes`), describe (labels/exemplar text), prf, llm.")
    min_df: float = setting(0.01, "An axis picks among features firing in at least this share of the documents...")
    max_df: float = setting(0.7, "...and at most this share.")
    min_cluster_size: int | None = setting(None, "HDBSCAN: smallest cluster (default max(10, docs/50)).")
    min_samples: int | None = setting(5, "HDBSCAN: lower means less noise.")
    max_dims: int = setting(10, "HDBSCAN runs on at most this many PCA dimensions (it slows sharply with more).")
    max_fit: int = setting(20_000, "HDBSCAN fits on a seeded sample this large; the rest join their nearest sampled document.")
    svd_dims: int = setting(50, "TruncatedSVD dimensions when clustering on all features.")
    binary: bool = setting(False, "Cluster on feature presence instead of scaled values.")
    seed: int = setting(0, "Seed for k-means, SVD and the layout.")
    describe_top: int = setting(5, "Features per cluster description.")


@dataclass
class CorrelateConfig:
    """How feature pairs are counted, ranked and called unexpected."""

    min_support: float = setting(0.005, "A feature, and a listed pair, must fire in at least this share of documents...")
    min_docs: int = setting(10, "...and a feature in at least this many documents.")
    min_pair_docs: int = setting(10, "A listed pair must co-occur in at least this many documents (and the share above).")
    shrink_docs: int = setting(
        20, "Ranking: npmi x docs/(docs + this); a pair seen on this many documents counts half its NPMI.")
    top: int = setting(50, "Pairs to show in each list.")
    unexpected_npmi: float = setting(0.3, "Unexpected pairs: shrunk NPMI at least this...")
    unexpected_cosine: float = setting(0.2, "...between features whose decoder directions have |cosine| below this...")
    unexpected_label_similarity: float = setting(0.5, "...and labels (when both exist) less similar than this.")
    keep_generic: bool = setting(False, "Keep features that fire on nearly every document (they co-occur with everything).")
    generic_freq: float = setting(0.9, "A feature on at least this share of documents is generic.")
    random_freq: float = setting(0.9, "A feature on at least this share of random-token texts is generic.")

    def pair_min_docs(self, n_docs: int) -> int:
        """Joint documents a listed pair needs in a selection of n_docs documents."""
        return max(self.min_pair_docs, math.ceil(self.min_support * n_docs), 1)


@dataclass
class AtlasConfig:
    """How an atlas is built."""

    docs: int | None = setting(6000, "Documents to sample, mixed evenly across the --data files (seeded); 0: all.")
    seed: int = setting(0, "Seed of the document sample and the example sampling.")
    exemplars: int = setting(5, "Top exemplars kept per feature.")
    chunk: int = setting(64, "Features labelled per step; a checkpoint is written after each.")
    background: int = setting(400, "Background windows the label statistics are contrasted with.")
    device: str = setting("auto", "Where the model and SAE run while encoding: cpu, cuda, mps or auto.")
    text_column: str = setting("text", "Text column of the --data files.")
    scorer: str = setting("static", "How labels are scored: static (the sentence model's word-piece embeddings averaged; "
                          "fast on CPU) or sentence (the full sentence model; slow without a GPU).")


POOLS = ("max", "mean", "sum", "count", "binary")
POOL_HELP = ("Document values pooled over tokens: max (as stored), mean (sum over the document's content tokens "
             "divided by their number, zeros included), sum, count (tokens where the feature fires) or binary "
             "(1 where it fires). mean and sum need `encode --keep-tokens`.")


@dataclass
class PoolConfig:
    """How the analyses pool a document's token activations into one value per feature."""

    pool: str = setting("max", POOL_HELP)


@dataclass
class TriggersConfig:
    """Trigger phrases: the token n-grams that carry a feature's activations."""

    n: int = setting(2, "Tokens per n-gram (1..3): the activating token with its neighbours.")
    top: int = setting(20, "N-grams listed per feature.")
    min_count: int = setting(2, "Leave out n-grams seen on fewer activating tokens.")
    recompute_docs: int = setting(
        200, "Without token rows: recompute the feature's tokens in its top documents (at most this many).")

"""The store's tables, its schema version, and migrations from older versions.

This module and store.py are the only places that write SQL DDL.
"""

from __future__ import annotations

SCHEMA_VERSION = 3

# Each statement is idempotent so that creating a fresh store and completing a migration share it.
# A table of Parquet shards beside the store, one row per file (activation and token shards alike).
_SHARD_TABLE = """CREATE TABLE IF NOT EXISTS {} (
        shard_id INTEGER PRIMARY KEY,
        corpus_id INTEGER NOT NULL,
        sae_key INTEGER NOT NULL,
        path VARCHAR UNIQUE NOT NULL,
        n_rows BIGINT NOT NULL,
        n_docs INTEGER NOT NULL,
        doc_min INTEGER,
        doc_max INTEGER,
        created_at TIMESTAMP DEFAULT current_timestamp)"""

TABLES = [
    """CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    # One row per corpus; its documents' user metadata lives in docmeta_<corpus_id>, typed.
    """CREATE TABLE IF NOT EXISTS corpora (
        corpus_id INTEGER PRIMARY KEY,
        name VARCHAR UNIQUE NOT NULL,
        source VARCHAR,
        text_column VARCHAR,
        id_column VARCHAR,
        metadata_columns JSON,
        n_docs INTEGER NOT NULL,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    # doc_idx is dense per corpus (0..n-1) so sparse rows can index arrays; doc_id is the user's id.
    """CREATE TABLE IF NOT EXISTS documents (
        corpus_id INTEGER NOT NULL,
        doc_idx INTEGER NOT NULL,
        doc_id VARCHAR NOT NULL,
        text VARCHAR NOT NULL,
        n_chars INTEGER NOT NULL)""",
    # An SAE's identity is the content hash of its weights and activation rule.
    """CREATE TABLE IF NOT EXISTS saes (
        sae_key INTEGER PRIMARY KEY,
        sae_hash VARCHAR UNIQUE NOT NULL,
        model VARCHAR,
        hook VARCHAR,
        architecture VARCHAR NOT NULL,
        k INTEGER,
        d_in INTEGER NOT NULL,
        d_sae INTEGER NOT NULL,
        source VARCHAR,
        config JSON,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    # One encoding = one corpus seen through one (model, hook, SAE); params fix how it was pooled.
    """CREATE TABLE IF NOT EXISTS encodings (
        corpus_id INTEGER NOT NULL,
        sae_key INTEGER NOT NULL,
        model VARCHAR NOT NULL,
        hook VARCHAR NOT NULL,
        params JSON,
        status VARCHAR NOT NULL,
        n_docs INTEGER DEFAULT 0,
        n_tokens BIGINT DEFAULT 0,
        n_split_docs INTEGER DEFAULT 0,
        started_at TIMESTAMP DEFAULT current_timestamp,
        keep_tokens BOOLEAN DEFAULT false,
        finished_at TIMESTAMP,
        PRIMARY KEY (corpus_id, sae_key))""",
    # Which documents an encoding has stored: written in the same transaction as their activations,
    # so a resumed encode skips exactly these.
    """CREATE TABLE IF NOT EXISTS encoded_docs (
        corpus_id INTEGER NOT NULL,
        sae_key INTEGER NOT NULL,
        doc_idx INTEGER NOT NULL,
        n_tokens INTEGER NOT NULL,
        n_windows INTEGER NOT NULL)""",
    # The SAE embedding, sparse: per document and active feature, the max over its content tokens,
    # the number of tokens where it fired, and the character span of the strongest token.
    """CREATE TABLE IF NOT EXISTS activations (
        corpus_id INTEGER NOT NULL,
        sae_key INTEGER NOT NULL,
        doc_idx INTEGER NOT NULL,
        feature INTEGER NOT NULL,
        value REAL NOT NULL,
        active_tokens INTEGER NOT NULL,
        span_start INTEGER,
        span_end INTEGER)""",
    """CREATE TABLE IF NOT EXISTS exemplars (
        corpus_id INTEGER NOT NULL,
        sae_key INTEGER NOT NULL,
        feature INTEGER NOT NULL,
        rank INTEGER NOT NULL,
        doc_idx INTEGER NOT NULL,
        value REAL NOT NULL,
        span_start INTEGER,
        span_end INTEGER)""",
    """CREATE TABLE IF NOT EXISTS feature_labels (
        sae_key INTEGER NOT NULL,
        feature INTEGER NOT NULL,
        label VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        score DOUBLE,
        model VARCHAR,
        details JSON,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    """CREATE TABLE IF NOT EXISTS llm_cache (
        request_hash VARCHAR PRIMARY KEY,
        model VARCHAR,
        request JSON,
        response JSON,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id INTEGER PRIMARY KEY,
        kind VARCHAR NOT NULL,
        params JSON,
        provenance JSON,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    # --- added in version 2: what the analyses keep -------------------------------------------
    # Sentence embeddings (dense baseline, query matching), cached per (corpus, model); L2-normalised.
    """CREATE TABLE IF NOT EXISTS dense_embeddings (
        corpus_id INTEGER NOT NULL,
        model VARCHAR NOT NULL,
        doc_idx INTEGER NOT NULL,
        vector FLOAT[] NOT NULL)""",
    # Sentence embeddings of what describes a feature (its label, its exemplar spans), cached per
    # (SAE, model, source) for matching free-text queries to features.
    """CREATE TABLE IF NOT EXISTS feature_embeddings (
        sae_key INTEGER NOT NULL,
        model VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        feature INTEGER NOT NULL,
        text_hash VARCHAR,
        vector FLOAT[] NOT NULL)""",
    # Per-SAE feature statistics from probes (e.g. probe='random': share of random-token texts where
    # the feature fires), computed once per SAE; used to flag generic features.
    """CREATE TABLE IF NOT EXISTS feature_stats (
        sae_key INTEGER NOT NULL,
        probe VARCHAR NOT NULL,
        feature INTEGER NOT NULL,
        value DOUBLE NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sae_probes (
        sae_key INTEGER NOT NULL,
        probe VARCHAR NOT NULL,
        n_docs INTEGER NOT NULL,
        details JSON,
        created_at TIMESTAMP DEFAULT current_timestamp,
        PRIMARY KEY (sae_key, probe))""",
    # A saved clustering of one corpus and its per-document assignments (cluster -1 = noise) + 2-D layout.
    """CREATE TABLE IF NOT EXISTS clusterings (
        clustering_id INTEGER PRIMARY KEY,
        name VARCHAR UNIQUE NOT NULL,
        corpus_id INTEGER NOT NULL,
        sae_key INTEGER NOT NULL,
        params JSON,
        features JSON,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    """CREATE TABLE IF NOT EXISTS cluster_assignments (
        clustering_id INTEGER NOT NULL,
        doc_idx INTEGER NOT NULL,
        cluster INTEGER NOT NULL,
        probability DOUBLE,
        x REAL,
        y REAL)""",
    # Trained probes (classifiers, quality models): weights as JSON, SAE identity, metrics, provenance.
    """CREATE TABLE IF NOT EXISTS classifiers (
        name VARCHAR PRIMARY KEY,
        sae_key INTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        model JSON NOT NULL,
        params JSON,
        metrics JSON,
        provenance JSON,
        created_at TIMESTAMP DEFAULT current_timestamp)""",
    # Scores a named classifier gave each document of a corpus.
    """CREATE TABLE IF NOT EXISTS doc_scores (
        corpus_id INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        doc_idx INTEGER NOT NULL,
        score DOUBLE NOT NULL)""",
    # Parquet shards of `activations` (see store/shards.py), added within version 2 (see LAZY_TABLES);
    # path is relative to `<store>.shards/`.
    _SHARD_TABLE.format("activation_shards"),
    # --- added in version 3: token-level rows ---------------------------------------------------
    # Parquet shards of per-token activations (doc_idx, token_index, start, end, feature, value, pooled) of an
    # encoding made with keep_tokens (encodings.keep_tokens); registered with their documents' rows.
    _SHARD_TABLE.format("token_shards"),
]

# Tables every saeembed store has; used to tell a saeembed store from any other DuckDB file.
REQUIRED_TABLES = {"meta", "corpora", "documents", "saes", "activations"}
TABLE_NAMES = [ddl.split("EXISTS", 1)[1].split("(", 1)[0].strip() for ddl in TABLES]
LAZY_TABLES = ("activation_shards",)  # added without a version bump: created on the first writable open

# MIGRATIONS[v] upgrades a store at version v to v + 1 (a list of SQL statements run in one
# transaction); TABLES then runs so that new tables exist.
MIGRATIONS: dict[int, list[str]] = {
    1: [],  # version 2 only adds tables (created by TABLES after the steps run)
    # version 3: encodings say whether they kept token rows (older ones did not); token_shards via TABLES
    2: ["ALTER TABLE encodings ADD COLUMN IF NOT EXISTS keep_tokens BOOLEAN DEFAULT false"],
}

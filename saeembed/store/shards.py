"""Parquet shards of the activations table, for encodes too large (or too parallel) for one file.

A shard is a Parquet file of sparse rows (doc_idx, feature, value, active_tokens, span_start, span_end)
of one (corpus, SAE) encoding, kept in the store's shard folder (`<store>.shards/`, beside the store)
and registered in the `activation_shards` table. The Parquet footer records the SAE hash and corpus
it belongs to, so a shard copied from elsewhere is caught before it is read.

Analyses never see the difference: when a store has shards, `activations` is a temporary view
(per connection) over the store's own table plus every valid shard, so `SELECT … FROM activations`
reads both. Writes go to the base table by its full name (`Store.activations_table`).

A shard file is written under a temporary name, flushed, and renamed before it is registered in the
same transaction as its documents' `encoded_docs` rows: a crash leaves either a registered complete
shard or an unregistered file (swept by `compact`), never half a shard that counts.

Object storage (s3://, gs://) is an extension point: paths are resolved by `shard_root` and read by
DuckDB's read_parquet, so a root URI plus the httpfs extension in `allowed_directories` is the place
to add it. Only local (or shared-filesystem) folders are supported today.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from saeembed.errors import StoreError

FORMAT_VERSION = "1"
COLUMNS = ("doc_idx", "feature", "value", "active_tokens", "span_start", "span_end")
SCHEMA = pa.schema([
    ("doc_idx", pa.int32()), ("feature", pa.int32()), ("value", pa.float32()),
    ("active_tokens", pa.int32()), ("span_start", pa.int32()), ("span_end", pa.int32()),
])
_KEY = b"saeembed"  # footer key-value metadata prefix

# Token shards (encode --keep-tokens): one row per (document, content token, active feature). token_index
# is the token's position among its document's content tokens; start/end its character span; pooled
# whether the document's max-pool took the token (encode --skip-tokens; shards written before lack it).
TOKEN_COLUMNS = ("doc_idx", "token_index", "start", "end", "feature", "value", "pooled")
TOKEN_SCHEMA = pa.schema([
    ("doc_idx", pa.int32()), ("token_index", pa.int32()), ("start", pa.int32()), ("end", pa.int32()),
    ("feature", pa.int32()), ("value", pa.float32()), ("pooled", pa.bool_()),
])
_KINDS = {"activations": (COLUMNS, SCHEMA), "tokens": (TOKEN_COLUMNS, TOKEN_SCHEMA)}


@dataclass(frozen=True)
class ShardMeta:
    """What a shard's footer says about itself."""

    sae_hash: str
    corpus: str
    n_rows: int


def shard_root(store_path: str | os.PathLike) -> Path:
    """The folder holding a store's shards: `<store file>.shards` beside it."""
    p = Path(store_path).absolute()
    return p.with_name(p.name + ".shards")


def encoding_dir(root: Path, corpus_id: int, sae_key: int) -> Path:
    return root / f"c{int(corpus_id)}-s{int(sae_key)}"


def _schema_with_meta(sae_hash: str, corpus: str, kind: str = "activations") -> pa.Schema:
    extra = {_KEY + b".kind": kind.encode()} if kind != "activations" else {}
    return _KINDS[kind][1].with_metadata(extra | {
        _KEY + b".format": FORMAT_VERSION.encode(),
        _KEY + b".sae_hash": sae_hash.encode(),
        _KEY + b".corpus": corpus.encode("utf-8"),
    })


def write_shard(folder: Path, table, *, sae_hash: str, corpus: str, kind: str = "activations") -> tuple[Path, int]:
    """Write sparse rows (arrow/polars table with COLUMNS) as a new shard file in `folder`, atomically.

    Returns (final path, row count). The file appears under its final name only once complete.
    """
    if hasattr(table, "to_arrow"):
        table = table.to_arrow()
    columns, schema = _KINDS[kind]
    table = table.select(list(columns)).cast(schema)
    return write_shard_batches(folder, table.to_batches(), sae_hash=sae_hash, corpus=corpus, kind=kind)


def write_shard_batches(folder: Path, batches, *, sae_hash: str, corpus: str,
                        kind: str = "activations") -> tuple[Path, int]:
    """Stream record batches (COLUMNS, in order) into a new shard file; atomic like write_shard."""
    columns, plain = _KINDS[kind]
    schema = _schema_with_meta(sae_hash, corpus, kind)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{'t-' if kind == 'tokens' else ''}{uuid.uuid4().hex}.parquet"
    tmp = folder / f".{final.name}.tmp"
    n = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for batch in batches:
                batch = pa.Table.from_batches([batch]).select(list(columns)).cast(plain)
                w.write_table(batch, row_group_size=1 << 20)
                n += batch.num_rows
        with open(tmp, "rb+") as f:  # on disk before it is registered
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final, n


def read_meta(path: Path, kind: str = "activations") -> ShardMeta:
    """The footer of a shard; StoreError naming the file when it is missing, truncated or foreign."""
    what = "token shard" if kind == "tokens" else "activation shard"
    if not path.exists():
        raise StoreError(f"{what} {path} is missing")
    try:
        md = pq.read_metadata(path)
    except Exception as e:  # pyarrow raises several types for a damaged footer
        raise StoreError(f"{what} {path} is damaged or truncated ({_short(e)})") from None
    kv = md.metadata or {}
    if kv.get(_KEY + b".format") is None:
        raise StoreError(f"{path} is a Parquet file but not a saeembed activation shard")
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    found = kv.get(_KEY + b".kind", b"activations").decode()
    if found != kind or tuple(names) != _KINDS[kind][0]:
        raise StoreError(f"{kind} shard {path} has columns {names} ({found}), expected {list(_KINDS[kind][0])}")
    return ShardMeta(kv[_KEY + b".sae_hash"].decode(), kv[_KEY + b".corpus"].decode("utf-8"), md.num_rows)


def check_shard(path: Path, *, sae_hash: str, n_rows: int, corpus: str, kind: str = "activations") -> None:
    """Raise StoreError (naming the file) unless the shard is readable and belongs to this encoding."""
    meta = read_meta(path, kind)
    if meta.sae_hash != sae_hash:
        raise StoreError(
            f"activation shard {path} holds activations of SAE {meta.sae_hash[:12]} (corpus {meta.corpus!r}), "
            f"but the store registered it for SAE {sae_hash[:12]} of corpus {corpus!r}; restore the right file "
            "or re-encode with --replace"
        )
    if meta.n_rows != n_rows:
        raise StoreError(
            f"activation shard {path} has {meta.n_rows} rows, the store registered {n_rows}; the file was "
            "replaced or damaged; re-encode with --replace"
        )


def sql_literal(text: str) -> str:
    """A SQL string literal for one of our own file paths (quotes doubled; DuckDB has no backslash escapes)."""
    return "'" + str(text).replace("'", "''") + "'"


def _short(e: Exception) -> str:
    msg = " ".join(str(e).split())
    return msg if len(msg) <= 160 else msg[:157] + "..."

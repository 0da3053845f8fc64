"""Write a filter's kept / dropped rows: the user's original rows, as a pair that is never half new.

Each file is written under a temporary name (`<file>.saeembed-new`) first. With two files, a marker
`<file>.saeembed-pending` listing both is then written (atomically) beside each, the temporary files
are renamed over the final names, and the markers are removed. A run killed at any point leaves
either both old files (no marker; a stray temporary file is overwritten by the next run) or markers
whose temporary files are complete: `recover_outputs` (called first by every write, and by anyone
about to read either file) then finishes the renames, so the pair is both new, and says so.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import polars as pl

from saeembed.errors import InputError
from saeembed.store import CorpusInfo, Store

OUTPUT_FORMATS = ("jsonl", "ndjson", "parquet", "csv")
NEW_SUFFIX = ".saeembed-new"
PENDING_SUFFIX = ".saeembed-pending"
log = logging.getLogger("saeembed.filter")


def original_rows(store: Store, info: CorpusInfo) -> pl.DataFrame:
    """The corpus as the user gave it: their id column (if they named one) and text column under their
    own names, then the metadata columns; plus doc_idx to join on."""
    docs = store.documents(info)
    meta = [c for c in docs.columns if c not in ("doc_idx", "doc_id", "text")]
    text_col = info.text_column or "text"
    cols = [pl.col("doc_idx")]
    if info.id_column and info.id_column not in meta:
        cols.append(pl.col("doc_id").alias(info.id_column))
    cols.append(pl.col("text").alias(text_col))
    cols += [pl.col(c) for c in meta]
    return docs.select(cols)


def _format(path: Path) -> str:
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"cannot write {path.name}: use a .jsonl, .parquet or .csv file name")
    return fmt


def _fsync(path: Path, *, folder: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:  # e.g. folders cannot be opened on some systems: nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_new(frame: pl.DataFrame, path: Path) -> Path:
    """`frame` written completely (and synced) to `<path>.saeembed-new`; returns that name."""
    fmt = _format(path)
    tmp = path.with_name(path.name + NEW_SUFFIX)
    if fmt == "parquet":
        frame.write_parquet(tmp)
    elif fmt == "csv":
        flat = frame.with_columns([pl.col(c).list.join("; ") for c, t in frame.schema.items()
                                   if isinstance(t, pl.List)])
        flat.write_csv(tmp)
    else:
        frame.write_ndjson(tmp)
    _fsync(tmp)
    return tmp


def _marker(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def _read_marker(marker: Path) -> list[Path]:
    """The final names a marker lists. A marker lists itself (as `<one of them>.saeembed-pending`) and
    only output files (.jsonl, .parquet, .csv); recovery only ever renames `<name>.saeembed-new` over
    `<name>` for these, so a crafted marker cannot move anything else."""
    try:
        names = json.loads(marker.read_text(encoding="utf-8"))["files"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError("no list of files")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{marker} is not a saeembed marker of an unfinished write ({e}); check the files "
                         "beside it and delete the marker") from None
    finals = [Path(n) for n in names]
    mine = marker.resolve()
    if not any(_marker(f).resolve() == mine for f in finals) or any(
            f.suffix.lower().lstrip(".") not in OUTPUT_FORMATS for f in finals):
        raise InputError(f"{marker} does not look like a marker saeembed wrote (it lists {names!r}); check "
                         "the files it names and delete the marker")
    return finals


def recover_outputs(*paths: str | os.PathLike | None) -> list[str]:
    """Finish a kept / dropped pair that a killed run left half renamed, before anything else reads or
    writes `paths` (either file of the pair finds it). Returns, and logs, one line per pair finished;
    [] when there was nothing to do."""
    done = []
    for p in paths:
        if not p or not _marker(Path(p)).exists():
            continue
        finals = _read_marker(_marker(Path(p)))
        renamed = 0
        for final in finals:
            tmp = final.with_name(final.name + NEW_SUFFIX)
            if tmp.exists():  # complete: markers are written only once every temporary file is
                os.replace(tmp, final)
                renamed += 1
        for final in finals:
            _fsync(final.parent, folder=True)
        for final in finals:
            _marker(final).unlink(missing_ok=True)
        msg = (f"an earlier run was killed while replacing {' and '.join(map(str, finals))}; finished it "
               f"({renamed} of {len(finals)} renames were left), so these files are again one run's output")
        log.warning(msg)
        done.append(msg)
    return done


def write_files(frames: dict[Path, pl.DataFrame]) -> list[str]:
    """Write each frame to its path (format from the suffix) so that a reader sees either every file old
    or every file new, even if the process is killed at any point. Returns recover_outputs' lines."""
    paths = [Path(p) for p in frames]
    for p in paths:
        _format(p)
    recovered = recover_outputs(*paths)
    temps: list[Path] = []
    try:
        for p in paths:
            temps.append(_write_new(frames[p], p))
    except BaseException:
        for p in paths:
            p.with_name(p.name + NEW_SUFFIX).unlink(missing_ok=True)
        raise
    if len(paths) == 1:
        os.replace(temps[0], paths[0])  # one file: the rename alone is atomic
        return recovered
    listing = json.dumps({"files": [str(p.resolve()) for p in paths]})
    for p in paths:  # a marker beside every file, so a reader of either one finds it
        staged = _marker(p).with_name(_marker(p).name + NEW_SUFFIX)
        staged.write_text(listing, encoding="utf-8")
        _fsync(staged)
        os.replace(staged, _marker(p))
        _fsync(p.parent, folder=True)
    # from here on the new files win: a run killed below is finished by recover_outputs
    for tmp, final in zip(temps, paths):
        os.replace(tmp, final)
    for p in paths:
        _fsync(p.parent, folder=True)
    for p in paths:
        _marker(p).unlink()
    return recovered


def write_outputs(store: Store, result, out: str | os.PathLike | None,
                  dropped_out: str | os.PathLike | None = None) -> dict:
    """Write kept rows (unchanged) of a FilterResult to `out` and dropped rows plus drop_rule / drop_rules
    to `dropped_out` (both, or one); re-count what was written against the input. A pair is written
    with write_files (never one new file beside an old one); "recovered" lists what an earlier killed
    run left and this one finished first."""
    info = store.corpus(result.corpus)
    paths = [Path(p) for p in (out, dropped_out) if p]
    for p in paths:
        _format(p)
        if not p.parent.exists():
            raise InputError(f"folder {p.parent} does not exist")
    if out and dropped_out and Path(out).resolve() == Path(dropped_out).resolve():
        raise InputError("--out and --dropped must be different files")
    rows = original_rows(store, info)
    user_cols = [c for c in rows.columns if c != "doc_idx"]
    rule_col, rules_col = "drop_rule", "drop_rules"
    while rule_col in user_cols or rules_col in user_cols:  # never overwrite a user's column
        rule_col, rules_col = "_" + rule_col, "_" + rules_col
    frames: dict[Path, pl.DataFrame] = {}
    written = {}
    if out:
        kept = rows.filter(pl.col("doc_idx").is_in(result.kept.tolist())).sort("doc_idx").select(user_cols)
        frames[Path(out)] = kept
        written["kept_rows"] = kept.height
    if dropped_out:
        reasons = result.dropped.select("doc_idx", pl.col("drop_rule").alias(rule_col),
                                        pl.col("drop_rules").alias(rules_col))
        dropped = rows.join(reasons, on="doc_idx", how="inner").sort("doc_idx").select(user_cols + [rule_col, rules_col])
        frames[Path(dropped_out)] = dropped
        written["dropped_rows"] = dropped.height
    if out and dropped_out and written["kept_rows"] + written["dropped_rows"] != result.n_docs:
        raise RuntimeError("rows written do not add up to the input")  # pragma: no cover - guarded by _check
    recovered = write_files(frames)
    if recovered:
        written["recovered"] = recovered
    return written

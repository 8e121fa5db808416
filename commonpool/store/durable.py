"""Durable file writes: a file is in place, whole and on disk, or it is not there.

A rename alone is atomic for readers but not durable: after a power cut or a
full disk the new name can point at a file whose data never reached the disk.
So every file the store publishes is written under a temporary name, fsynced,
renamed, and its folder fsynced (the rename itself lives in the folder).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# zstd: several times smaller than snappy on these text-heavy tables at a similar write speed.
COMPRESSION = "zstd"

_sync = True


def set_sync(on: bool) -> None:
    """Whether this process fsyncs what it writes (on by default).

    A sweep's workers turn it off: a run is ~28 fsyncs (~4 ms each here), a
    third of a small run's time, and a sweep's runs are made durable anyway
    when the driver packs them (every 500 runs and at the end). Renames stay
    atomic, so readers and killed processes see exactly what they did before;
    only a power cut or OS crash can now damage a sweep run not yet packed,
    and `sweep resume` runs a damaged run again.
    """
    global _sync
    _sync = on


def fsync_file(path: Path) -> None:
    """Flush path's data to disk (an O_RDONLY descriptor may be fsynced on Linux)."""
    if not _sync:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the renames and new names inside folder path durable."""
    if not _sync:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    # Unique per process and thread, so two writers of one file never share a temporary.
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace path with data as JSON, durably: readers see the old or the new file, whole.

    The replace is the commit point of whatever the file describes (a run's
    manifest, a sweep's progress). On any error the old file is left as it was.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(json.dumps(data, indent=2, sort_keys=True))
            out.flush()
            if _sync:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_parquet_tmp(table: pa.Table, tmp: Path) -> int:
    """Write table to tmp and fsync it; its size in bytes. A failed write leaves no tmp behind."""
    try:
        pq.write_table(table, tmp, compression=COMPRESSION)
        fsync_file(tmp)
        return tmp.stat().st_size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

"""A run's manifest: which of its files are committed, the only truth readers use.

run.json's "manifest" says, per table, which files hold the table's committed rows:

    "manifest": {"tables": {"exchanges": {
        "base": "data-000007.parquet" or null,   # a compacted file, if any
        "base_bytes": 1234,
        "first_part": 8, "parts": 2,             # part-000008 and part-000009 follow it
        "parts_bytes": 567,                      # their sizes, summed
        "rows": 1000}}}

or, for a packed run, {"pack": "<pack_id>", "tables": {"exchanges": {"rows": 1000}}}:
its rows are in <store>/packs/<pack_id>/, whose pack.json lists those files.

Part numbers only grow over a run's life, so a file name is never reused and a
published file is never rewritten. Sizes are summed rather than listed per part
so run.json stays small for a run of thousands of flushes; a missing file or a
changed total still shows. Runs written before manifests existed ("legacy":
run.json with "committed_parts", data.parquet or part-*.parquet) are read by
listing their folders.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from commonpool.store.schema import TABLES

_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.parquet")
_LEGACY_PART = re.compile(r"part-(\d+)\.parquet")
# Run and pack ids become folder names and appear inside SQL string literals: keep
# them to a set of characters that cannot escape either.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ENTRY_INTS = ("base_bytes", "first_part", "parts", "parts_bytes", "rows")


def part_name(number: int) -> str:
    return f"part-{number:06d}.parquet"


def data_name(number: int) -> str:
    return f"data-{number:06d}.parquet"


class ManifestError(ValueError):
    """run.json's manifest is malformed, or its files are not as it records; the message says how."""


class TableFiles(NamedTuple):
    """The committed files of one table of one run (a tuple: 100,000 are made to list 10,000 runs)."""

    files: tuple[str, ...]  # paths as text: listing 10,000 runs' files builds no Path objects
    bytes: int | None  # their expected total size; None for legacy runs, which never recorded it
    rows: int | None


@dataclass(frozen=True)
class Committed:
    """What a run's run.json commits: its own files per table, or a pack it points at."""

    tables: dict[str, TableFiles]  # tables with committed rows in the run's own files
    pack: str | None  # the pack holding every table's rows, for a packed run
    pack_rows: dict[str, int]  # rows per table of a packed run (from its manifest)
    legacy: bool


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is not a count (type(), not isinstance)


def entry_files(folder: str, entry: dict[str, Any]) -> list[str]:
    """The files of a validated table entry, in row order: the base, then the parts."""
    # f-strings, not os.path.join or Path: this runs for every file of every run at connect.
    files = [f"{folder}/{entry['base']}"] if entry["base"] else []
    first = entry["first_part"]
    return files + [f"{folder}/part-{n:06d}.parquet" for n in range(first, first + entry["parts"])]


def check_entry(table: str, entry: Any) -> None:
    """Raise ManifestError unless entry is a well-formed table entry of a run's own files."""
    if not isinstance(entry, dict):
        raise ManifestError(f"manifest entry of {table!r} is not an object")
    for key in _ENTRY_INTS:
        if not _is_count(entry.get(key)):
            raise ManifestError(f"manifest entry of {table!r}: {key} must be a whole number >= 0")
    base = entry.get("base")
    if base is not None and not (isinstance(base, str) and _FILE_NAME.fullmatch(base)):
        raise ManifestError(f"manifest entry of {table!r}: base must be a Parquet file name or null")


def committed(run_dir: str | Path, meta: dict[str, Any]) -> Committed:
    """The committed files run.json (meta) records; ManifestError if it is malformed."""
    manifest = meta.get("manifest")
    if manifest is None:
        return _legacy(run_dir, meta)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), dict):
        raise ManifestError("manifest is not an object with a 'tables' object")
    tables = manifest["tables"]
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ManifestError(f"manifest names unknown tables {unknown}")
    pack = manifest.get("pack")
    if pack is not None:
        if not isinstance(pack, str) or not SAFE_ID.fullmatch(pack):
            raise ManifestError("manifest: pack must be a pack id")
        rows = {}
        for table, entry in tables.items():
            if not isinstance(entry, dict) or not _is_count(entry.get("rows")):
                raise ManifestError(f"manifest entry of {table!r}: rows must be a whole number >= 0")
            rows[table] = entry["rows"]
        return Committed({}, pack, rows, legacy=False)
    own: dict[str, TableFiles] = {}
    folder = str(run_dir)
    # This loop runs for every table of every run whenever a reader lists the store,
    # so the well-formed case is one expression (check_entry only names what is
    # wrong) and the usual files of an ended run, one compacted file or a single
    # part, are named without the general listing.
    for table, entry in tables.items():
        try:
            base, first, parts, rows = entry["base"], entry["first_part"], entry["parts"], entry["rows"]
            size = entry["base_bytes"] + entry["parts_bytes"]
            well_formed = (
                type(first) is int and type(parts) is int and type(size) is int and type(rows) is int
                and min(first, parts, size, rows) >= 0
                and (base is None or (type(base) is str and _FILE_NAME.fullmatch(base) is not None))
            )
        except (TypeError, KeyError):
            well_formed = False
        if not well_formed:
            check_entry(table, entry)
            raise ManifestError(f"manifest entry of {table!r} is malformed")
        if parts == 0:
            if base is None:
                continue
            files: tuple[str, ...] = (f"{folder}/{table}/{base}",)
        elif parts == 1 and base is None:
            files = (f"{folder}/{table}/part-{first:06d}.parquet",)
        else:
            files = tuple(entry_files(f"{folder}/{table}", entry))
        own[table] = TableFiles(files, size, rows)
    return Committed(own, None, {}, legacy=False)


def legacy_parts(folder: Path) -> dict[int, Path]:
    """The part-*.parquet files in a folder, by number."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {int(m.group(1)): folder / name for name in names if (m := _LEGACY_PART.fullmatch(name))}


def _legacy(run_dir: str | Path, meta: dict[str, Any]) -> Committed:
    """A run written before manifests: data.parquet once compacted, else its committed parts.

    The old writer committed a flush by counting each table's parts in
    "committed_parts"; parts at or above the count were written after the last
    commit, so they are left out (a run killed mid-flush shows whole flushes only).
    """
    counts = meta.get("committed_parts")
    if counts is not None and not isinstance(counts, dict):
        raise ManifestError("committed_parts is not an object")
    own: dict[str, TableFiles] = {}
    for table in TABLES:
        folder = Path(run_dir) / table
        data = folder / "data.parquet"
        if data.exists():
            own[table] = TableFiles((str(data),), None, None)
            continue
        parts = legacy_parts(folder)
        if counts is not None:
            keep = counts.get(table, 0)
            if not _is_count(keep):
                raise ManifestError(f"committed_parts of {table!r} is not a whole number")
            parts = {n: p for n, p in parts.items() if n < keep}
        if parts:
            own[table] = TableFiles(tuple(str(parts[n]) for n in sorted(parts)), None, None)
    return Committed(own, None, {}, legacy=True)


def damage(table: str, files: TableFiles) -> str | None:
    """Why a table's committed files are not as recorded (missing, truncated), or None.

    Cheap enough to run over every run at connect: one stat per file. Legacy
    files have no recorded size, so their Parquet footer magic is checked instead.
    """
    total = 0
    for path in files.files:
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return f"{table}/{os.path.basename(path)} is missing"
        except OSError as exc:
            return f"{table}/{os.path.basename(path)} cannot be read ({exc.strerror})"
        if files.bytes is None and not _has_parquet_footer(path, size):
            return f"{table}/{os.path.basename(path)} is truncated or not Parquet"
        total += size
    if files.bytes is not None and total != files.bytes:
        return f"{table} files hold {total} bytes, run.json recorded {files.bytes} (truncated or replaced)"
    return None


def _has_parquet_footer(path: str, size: int) -> bool:
    if size < 12:  # magic, footer length, magic
        return False
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return f.read(4) == b"PAR1"
    except OSError:
        return False

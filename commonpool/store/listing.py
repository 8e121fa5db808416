"""The run list (`commonpool runs list`): a few fields of every run, fast at 10,000 runs.

Listing reads every run's run.json, a few kilobytes of JSON each (the config is
most of it), which alone takes ~0.4 s at 10,000 runs. A packed run never
changes again, so the list keeps what it showed of each packed run in
<store>/.cache/run-list.json, keyed by its run.json's inode, modification time
and size: run.json is only ever replaced by a rename (a new inode), so a run
whose key still matches is the run the entry describes, and anything else is
read afresh. Its pack is still checked on every listing, so a damaged pack
shows its runs as damaged. Runs not in a pack (running ones, whose status
depends on a live process, included) are always read afresh.

The cache is only ever a copy: deleting it costs one slower listing, a corrupt
one is ignored, and a store that cannot be written (a read-only mount) is
listed without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commonpool.store import reader

CACHE = Path(".cache") / "run-list.json"
_VERSION = 1
FIELDS = ("seed", "started_at", "finished_at", "exchanges_recorded", "accepted", "engine", "sweep_id", "error")
_FINAL = ("completed", "failed", "cancelled")  # statuses that never change once packed


@dataclass(frozen=True)
class RunSummary:
    """What the run list shows of a run: its id, its status as the store reads it, and FIELDS of run.json."""

    run_id: str
    status: str
    fields: dict[str, Any]

    @property
    def started_at(self) -> str | None:
        return self.fields.get("started_at")


def _key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("version") == _VERSION and isinstance(data.get("runs"), dict):
            return data["runs"]
    except (OSError, ValueError):
        pass
    return {}


def _save(path: Path, runs: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(json.dumps({"version": _VERSION, "runs": runs}, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)  # a copy, not a commit point: no fsync
    except OSError:
        tmp.unlink(missing_ok=True)


def _cached(entry: Any, key: list[int], pack: reader._Pack | None) -> RunSummary | None:
    """The entry's summary if it still describes the run: same run.json, its pack sound and holding it."""
    try:
        if entry["key"] != key or pack is None or pack.problem or entry["recorded"] not in pack.runs:
            return None
        fields = entry["fields"]
        if entry["status"] not in _FINAL or not isinstance(fields, dict):
            return None
        return RunSummary(entry["run_id"], entry["status"], fields)
    except (KeyError, TypeError):
        return None


def run_list(store: reader.Store, prefix: str = "") -> list[RunSummary]:
    """Every run (or those whose id starts with prefix), newest first, as Store.runs() reads them."""
    cache_path = store.root / CACHE
    cache = _load(cache_path)
    kept = {name: entry for name, entry in cache.items() if not name.startswith(prefix)}
    packs: dict[str, reader._Pack] = {}

    def pack(pack_id: Any) -> reader._Pack | None:
        if not isinstance(pack_id, str):
            return None
        if pack_id not in packs:
            packs[pack_id] = reader._scan_pack(store.root / "packs" / pack_id)
        return packs[pack_id]

    found: list[RunSummary] = []
    for run_dir in store._child_dirs("runs", prefix=prefix):
        name = run_dir.name
        run_json = f"{run_dir}/run.json"
        key = _key(run_json)
        if key is None:
            continue  # its writer has not yet written run.json
        entry = cache.get(name)
        summary = _cached(entry, key, pack(entry.get("pack"))) if isinstance(entry, dict) else None
        if summary is None:
            run = reader._scan_run(run_dir, pack)  # type: ignore[arg-type]
            if run is None:
                continue
            info = run.info
            summary = RunSummary(info.run_id, info.status, {f: info.meta.get(f) for f in FIELDS})
            done = run.committed
            if done is not None and done.pack is not None and info.status in _FINAL and _key(run_json) == key:
                entry = {"key": key, "run_id": info.run_id, "status": info.status, "fields": summary.fields,
                         "pack": done.pack, "recorded": run.recorded_id}
        if summary.status in _FINAL and isinstance(entry, dict) and entry.get("key") == key:
            kept[name] = entry
        found.append(summary)
    if kept != cache:
        _save(cache_path, kept)
    return reader._newest_first(found, lambda s: (s.started_at or "", s.run_id))


def table_rows(runs: Sequence[RunSummary]) -> list[tuple[str, ...]]:
    """The rows `runs list` prints: run_id, status, exchanges, accepted, engine, started."""
    return [
        (r.run_id, r.status, _text(r.fields.get("exchanges_recorded")), _text(r.fields.get("accepted")),
         _text(r.fields.get("engine")), _text(r.started_at)[:19])
        for r in runs
    ]


def _text(value: Any) -> str:
    return "" if value is None else str(value)

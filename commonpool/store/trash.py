"""Garbage of the store: files no manifest commits any more, deleted after a grace period.

A reader's connection lists the files it reads when it is made, so a file a
manifest stops pointing at (parts compacted into one file, a run's files moved
into a pack) may still be read for a while. Such files are not deleted at once:
they are listed in a tombstone, <store>/.trash/<time_ns>-<pid>-<random>.json,
and deleted once GRACE_SECONDS have passed, by whichever writer opens or closes
a run next, by RunWriter.reopen, or by Store.collect_garbage(). A connection
held longer than the grace period may therefore find a file gone: reconnect.

A tombstone may be written just before the manifest change that makes its files
garbage (so a crash in between cannot leave garbage nobody knows of); the sweeper
therefore deletes a file only if its run's current manifest does not commit it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from commonpool.store import manifest
from commonpool.store.durable import write_json_atomic

GRACE_SECONDS = 600.0
TRASH = ".trash"


def put_in_trash(root: Path, files: Iterable[Path]) -> None:
    """Record files (inside root/runs) as garbage from now on."""
    relative = sorted({str(Path(f).relative_to(root)) for f in files})
    if not relative:
        return
    folder = root / TRASH
    folder.mkdir(exist_ok=True)
    name = f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}.json"
    write_json_atomic(folder / name, {"files": relative})


def collect_garbage(root: Path, now: float | None = None) -> int:
    """Delete the garbage whose grace period is over; the number of files deleted.

    Safe to run from several processes at once: deleting a file that is already
    gone is fine, and every decision is re-checked against the current manifest.
    """
    folder = Path(root) / TRASH
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    now = time.time() if now is None else now
    manifests: dict[str, set[str] | None] = {}
    deleted = 0
    for name in names:
        try:
            created = int(name.split("-", 1)[0].lstrip(".")) / 1e9
        except ValueError:
            created = 0.0  # not ours: old enough to go
        if now - created < GRACE_SECONDS:
            continue
        tombstone = folder / name
        if name.endswith(".json"):
            try:
                files = json.loads(tombstone.read_text())["files"]
            except (OSError, ValueError, KeyError, TypeError):
                files = []  # unreadable: nothing we can act on safely
            for relative in files if isinstance(files, list) else []:
                deleted += _delete_if_garbage(Path(root), relative, manifests)
        tombstone.unlink(missing_ok=True)
    return deleted


def _delete_if_garbage(root: Path, relative: object, manifests: dict[str, set[str] | None]) -> int:
    if not isinstance(relative, str):
        return 0
    parts = Path(relative).parts
    # Only files of a run (runs/<run_id>/<table>/<file>) are ever put in the trash.
    if len(parts) != 4 or parts[0] != "runs" or ".." in parts or Path(relative).is_absolute():
        return 0
    run_id = parts[1]
    if run_id not in manifests:
        manifests[run_id] = _committed_names(root / "runs" / run_id)
    live = manifests[run_id]
    if live is None or relative in live:
        return 0  # still committed, or the run's run.json cannot tell: keep the file
    path = root / relative
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError:
        return 0  # e.g. a read-only store: try again another time is not worth a failure
    try:
        path.parent.rmdir()  # a packed run's table folder, now empty
    except OSError:
        pass
    return 1


def _committed_names(run_dir: Path) -> set[str] | None:
    """Paths (relative to the store) the run's run.json commits; None if it cannot be read."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError:
        return set()  # the run is gone: nothing of it is committed
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    try:
        done = manifest.committed(run_dir, meta)
    except manifest.ManifestError:
        return None
    root = run_dir.parent.parent
    return {os.path.relpath(f, root) for t in done.tables.values() for f in t.files}

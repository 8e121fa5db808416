"""The run list (`runs list`): what Store.runs() says of every run, packed runs read from a cache that cannot go stale."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_store_fixtures import write_sample_run

from commonpool.store import Store, write_json_atomic
from commonpool.store.listing import CACHE, FIELDS


def listed(store: Store) -> dict[str, tuple[str, dict]]:
    return {s.run_id: (s.status, s.fields) for s in store.run_list()}


def from_runs(store: Store) -> dict[str, tuple[str, dict]]:
    return {r.run_id: (r.status, {f: r.meta.get(f) for f in FIELDS}) for r in store.runs()}


def make_store(root: Path) -> Store:
    for k, run_id in enumerate(("a", "b", "c", "d")):
        write_sample_run(root, run_id, n_exchanges=10 + k)
    store = Store(root)
    store.pack(["a", "b", "c"], "p1")
    return store


def cached_runs(root: Path) -> set[str]:
    return set(json.loads((root / CACHE).read_text())["runs"])


def test_the_list_says_what_store_runs_says_and_caches_only_packed_runs(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = listed(store)
    assert first == from_runs(store)
    assert set(first) == {"a", "b", "c", "d"} and first["b"][1]["exchanges_recorded"] == 11
    assert cached_runs(tmp_path) == {"a", "b", "c"}  # d has its own files: always read afresh
    assert listed(store) == first  # from the cache this time
    assert [s.run_id for s in store.run_list()] == [r.run_id for r in store.runs()]  # same order, newest first


def test_a_replaced_run_json_is_read_afresh(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    listed(store)
    path = tmp_path / "runs" / "b" / "run.json"
    meta = json.loads(path.read_text())
    write_json_atomic(path, {**meta, "accepted": 99})  # as every writer replaces it: a rename
    assert listed(store)["b"][1]["accepted"] == 99
    assert listed(store) == from_runs(store)


def test_a_damaged_pack_shows_its_runs_damaged_even_when_cached(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    listed(store)
    pack_file = tmp_path / "packs" / "p1" / "exchanges.parquet"
    pack_file.write_bytes(pack_file.read_bytes()[:-10])
    now = listed(store)
    assert {now[r][0] for r in ("a", "b", "c")} == {"damaged"} and now["d"][0] == "completed"
    assert now == from_runs(store)
    assert cached_runs(tmp_path) == set()  # damaged runs are not kept


def test_a_deleted_run_leaves_the_list_and_the_cache(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    listed(store)
    os.rename(tmp_path / "runs" / "a", tmp_path / "a-elsewhere")
    assert set(listed(store)) == {"b", "c", "d"}
    assert cached_runs(tmp_path) == {"b", "c"}


def test_a_corrupt_or_unwritable_cache_only_slows_the_list(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    truth = from_runs(store)
    (tmp_path / CACHE).parent.mkdir()
    (tmp_path / CACHE).write_text('{"version": 1, "runs": {"a": {"key": 3}, "b": []}}')
    assert listed(store) == truth
    (tmp_path / CACHE).unlink()
    (tmp_path / CACHE).mkdir()  # a folder where the file should be: the cache cannot be written
    assert listed(store) == truth


def test_a_prefix_lists_its_runs_and_keeps_the_others_cached(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    listed(store)
    assert {s.run_id for s in store.run_list(prefix="b")} == {"b"}
    assert cached_runs(tmp_path) == {"a", "b", "c"}

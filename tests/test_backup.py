"""m1lite.storage.backup in-process, on real LMDB environments in tmp dirs: what a
manifest counts, a round trip through backup and restore, the map-growth case (a
server process growing the map under an open backup reader), refusals of malformed
manifests, and the summary's byte units. The commands themselves run against real
servers in tests/integration/test_backup.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lmdb
import pytest

from m1lite.backup import human_bytes
from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.storage.backup import (
    BackupError,
    backup,
    open_readonly,
    read_contents,
    read_manifest,
    restore,
    snapshot,
)


def open_env(data: Path) -> Environment:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M1LITE_ADMIN_PASSWORD", "unit-test-admin")
        env = Environment(Config(data=data))
    env.start()
    return env


def write(env: Environment, items: list[dict[str, Any]], *, published: bool = True) -> list[int]:
    async def submit() -> list[int]:
        future = env.submit(items, "127.0.0.1", published=published, durable=True)
        assert future is not None
        return await asyncio.wait_for(future, 60)

    return asyncio.run(submit())


def test_round_trip_counts_published_and_archived_events_and_the_watermark(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = open_env(data)
    write(env, [{"type": "view", "n": n} for n in range(20)])
    write(env, [{"type": "hidden"} for _ in range(5)], published=False)
    env.close()  # checkpoints the index: watermark = every key

    manifest = backup(data, tmp_path / "backup")
    contents = manifest.contents
    assert (contents.events, contents.published) == (25, 20)
    assert (contents.first_key, contents.last_key, contents.next_key) == (0, 24, 25)
    assert contents.index_watermark == 25
    assert (contents.users, contents.data_stores, contents.session_stores) == (1, ["index"], {})
    assert manifest.bytes == (tmp_path / "backup" / "lake" / "data.mdb").stat().st_size
    on_disk = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert on_disk["contents"]["events"] == 25 and on_disk["format"] == "m1lite-backup"

    restored = restore(tmp_path / "backup", tmp_path / "restored", force=False)
    assert (restored.events, restored.published, restored.next_key) == (25, 20, 25)
    assert not restored.replaced
    env = open_env(tmp_path / "restored")
    try:
        assert len(env.index.published()) == 20
        assert write(env, [{"type": "view"}]) == [25]
    finally:
        env.close()


def test_an_empty_environment_backs_up_and_restores(tmp_path: Path) -> None:
    open_env(tmp_path / "data").close()
    manifest = backup(tmp_path / "data", tmp_path / "backup")
    assert manifest.contents.events == 0 and manifest.contents.last_key is None
    assert manifest.contents.next_key == 0
    assert restore(tmp_path / "backup", tmp_path / "restored", force=False).events == 0


def test_a_damaged_source_fails_and_leaves_no_partial_backup(tmp_path: Path) -> None:
    lake = tmp_path / "data" / "lake"
    lake.mkdir(parents=True)
    (lake / "data.mdb").write_bytes(b"not an LMDB file" * 1024)
    with pytest.raises(lmdb.Error):
        backup(tmp_path / "data", tmp_path / "backup")
    assert not (tmp_path / "backup").exists()


GROW = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import lmdb
    from m1lite.storage.env import LakeEnv

    # As the server's writer does: a full map doubles, then the commit is retried.
    lake = LakeEnv(Path(sys.argv[1]), map_size_mb=1, max_map_size_mb=64)
    first, count = int(sys.argv[2]), int(sys.argv[3])
    while True:
        seen = lake.map_size
        try:
            with lake.write() as txn:
                for key in range(first, first + count):
                    txn.put(key.to_bytes(8, "big"), b"p" + bytes(1000), db=lake.dbs["log"])
            break
        except lmdb.MapFullError:
            assert lake.grow(seen)
    print(lake.map_size)
    lake.close()
    """
)


def grow(lake: Path, first: int, count: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", GROW, str(lake), str(first), str(count)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_a_snapshot_follows_a_map_another_process_grew(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    assert grow(lake, 0, 10) == 1024 * 1024
    with open_readonly(lake) as env:
        with snapshot(env) as txn:
            before = read_contents(env, txn)
        # The "server" grows the map to several times what this reader mapped, and
        # writes past it: LMDB answers the next begin with MDB_MAP_RESIZED.
        assert grow(lake, 10, 5_000) > 4 * env.info()["map_size"]
        with snapshot(env) as txn:
            after = read_contents(env, txn)
    assert (before.events, after.events) == (10, 5_010)
    assert after.last_key == 5_009 and after.published == 5_010


def good_manifest(tmp_path: Path) -> Path:
    open_env(tmp_path / "data").close()
    backup(tmp_path / "data", tmp_path / "backup")
    return tmp_path / "backup"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "is not an m1lite backup manifest of format 1"),
        ({"format_version": 2}, "found 'm1lite-backup' version 2"),
        ({"files": {}}, "must list exactly lake/data.mdb"),
        ({"contents": None}, "manifest.json is unreadable"),
        ({"seconds": "fast"}, "manifest.json is unreadable"),
    ],
)
def test_read_manifest_refuses_a_malformed_manifest(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    src = good_manifest(tmp_path)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.update(change)
    (src / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=message):
        read_manifest(src)
    with pytest.raises(BackupError, match=message):
        restore(src, tmp_path / "restored", force=False)
    assert not (tmp_path / "restored").exists()


def test_restore_into_an_existing_empty_directory_needs_no_force(tmp_path: Path) -> None:
    src = good_manifest(tmp_path)
    target = tmp_path / "mount-point"
    target.mkdir()
    restored = restore(src, target, force=False)
    assert not restored.replaced
    assert sorted(p.name for p in target.iterdir()) == ["lake", "m1lite.lock"]


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 bytes"),
        (1023, "1,023 bytes"),
        (1536, "1.5 KiB"),
        (738_000_000, "703.8 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert human_bytes(count) == text

"""`m1lite reindex`: a lost or damaged index is rebuilt from the log, and queries give the
answers they gave before. The command runs as a user runs it, in its own process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.query.execute import QueryContext, execute
from m1lite.query.parser import parse
from m1lite.query.results import page_keys
from m1lite.storage.env import LakeEnv
from m1lite.storage.index import CODES, DICTIONARY

QUERIES = [
    "*",
    "type:view",
    "type:click AND n:[2 TO 5]",
    "tags:b",
    "-tags:*",
    "body:hello",
    "when:[2024-01-01T00:00:00Z TO 2024-01-01T00:00:10Z]",
    "name:u1*",
    "flag:true",
]


HIDDEN = range(300, 305)  # written with publish=false


def open_env(data: Path) -> Environment:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M1LITE_ADMIN_PASSWORD", "unit-test-admin")
        env = Environment(Config(data=data))
    env.start()
    return env


def write(env: Environment, items: list[dict[str, Any]], *, published: bool = True) -> None:
    async def submit() -> None:
        future = env.submit(items, "127.0.0.1", published=published, durable=True)
        assert future is not None
        await asyncio.wait_for(future, 60)

    asyncio.run(submit())


def answers(env: Environment) -> dict[str, Any]:
    ctx = QueryContext.snapshot(
        env.index, env.schema, env.field_kinds(), upto=None, now_ms=0, parse=parse
    )
    found: dict[str, Any] = {q: list(execute(parse(q), ctx)) for q in QUERIES}
    everything = execute(parse("*"), ctx)
    found["sorted"] = page_keys(everything, [("name", True), ("n", False)], 0, 50, ctx)
    return found


def reindex(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m1lite", "reindex", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def event(i: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": ("view", "click", "heartbeat")[i % 3],
        "n": i % 7,
        "name": f"u{i % 13}",
        "when": 1_704_067_200_000 + i * 1000,
        "body": ("Hello world", "goodbye", "hello again")[i % 3],
        "flag": i % 2 == 0,
    }
    if i % 4:
        item["tags"] = ["a", "b"] if i % 4 == 1 else ["c"]
    return item


def _drop(lake: LakeEnv) -> None:
    with lake.write() as txn:
        txn.drop(lake.dbs["index"], delete=False)


def _scribble(lake: LakeEnv) -> None:
    """Wrong codes and a wrong dictionary for `type`: loads fine, answers wrongly."""
    with lake.write() as txn:
        cursor = txn.cursor(db=lake.dbs["index"])
        for kind in (CODES, DICTIONARY):
            prefix = kind + b"type\x00"
            found = cursor.set_range(prefix)
            while found and bytes(cursor.key()).startswith(prefix):
                size = len(cursor.value())
                if kind == CODES:
                    cursor.put(cursor.key(), b"\x01\x00\x00\x00" * (size // 4))
                found = cursor.next()


@pytest.mark.parametrize("damage", [_drop, _scribble], ids=["dropped", "scribbled"])
def test_reindex_restores_the_answers(tmp_path: Path, damage: Callable[[LakeEnv], None]) -> None:
    data = tmp_path / "data"
    env = open_env(data)
    env.schema.add([{"name": "when", "type": "date"}, {"name": "body", "type": "text"}])
    env.save_schema()
    write(env, [event(i) for i in range(300)])
    write(env, [event(i) for i in HIDDEN], published=False)  # in the log, never in a query
    write(env, [event(i) for i in range(305, 25_000)])  # more than one reindex batch
    before = answers(env)
    assert before["type:view"] and before["tags:b"] and before["body:hello"]
    assert not set(HIDDEN) & set(before["*"])
    env.close()

    lake = LakeEnv(data / "lake", map_size_mb=64, max_map_size_mb=4096)
    damage(lake)
    lake.close()
    env = open_env(data)
    if damage is _drop:
        # No index checkpoint at all: opening replays the whole log (the publish=false
        # flag is in the log, so hidden events stay hidden).
        assert answers(env) == before
    else:
        assert answers(env) != before  # the damage is visible
    env.close()

    done = reindex(data)
    assert done.returncode == 0, done.stderr
    assert "reindexed 25,000 events" in done.stderr

    env = open_env(data)
    try:
        assert answers(env) == before
        write(env, [{"type": "view", "name": "after"}])  # and the index keeps growing
        assert 25_000 in answers(env)["type:view"]
    finally:
        env.close()


def test_reindex_refuses_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = open_env(data)
    try:
        write(env, [event(0)])
        done = reindex(data)
        assert done.returncode == 3
        assert "stop the server first" in done.stderr
    finally:
        env.close()


def test_reindex_needs_a_data_directory(tmp_path: Path) -> None:
    done = reindex(tmp_path / "nothing-here")
    assert done.returncode == 2
    assert "no m1lite data" in done.stderr

"""Rebuilding the in-memory index from the log: the tail after the last checkpoint
at start-up, or everything for `m1lite reindex`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lmdb

from m1lite.storage import log as event_log
from m1lite.storage.env import LakeEnv
from m1lite.storage.index import Index, Part

logger = logging.getLogger("m1lite.replay")
REPLAY_BATCH = 10_000


def replay(
    lake: LakeEnv,
    index: Index,
    *,
    start: int,
    field_kinds: tuple[frozenset[str], frozenset[str]],
    date_ms: Callable[[Any], int | None],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Index every log record from key `start` on; returns how many were replayed."""
    date_fields, text_fields = field_kinds
    done = 0
    parts: list[Part] = []
    first_key = expected = start
    batch_size = 0

    def flush() -> None:
        nonlocal parts, batch_size
        if parts:
            index.add(
                first_key, parts, date_fields=date_fields, text_fields=text_fields, date_ms=date_ms
            )
        parts, batch_size = [], 0

    for key, published, record in event_log.scan(lake, start):
        if key != expected or batch_size >= REPLAY_BATCH:
            flush()
            first_key = key
        if parts and parts[-1][2] == published:
            parts[-1][0].append(record)
        else:
            parts.append(([record], {}, published))
        expected = key + 1
        batch_size += 1
        done += 1
        if progress is not None and done % REPLAY_BATCH == 0:
            progress(done)
    flush()
    return done


def checkpoint(lake: LakeEnv, index: Index) -> None:
    """Persist the index now (growing the map if it must)."""
    while index.dirty:
        seen = lake.map_size
        try:
            with lake.write() as txn:
                index.checkpoint(txn, lake.dbs["index"])
        except lmdb.MapFullError:
            index.checkpoint_failed()
            if not lake.grow(seen):
                raise
            continue
        index.checkpoint_done()

"""Reading the append-only event log (the writer is the only one appending)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from m1lite.storage.env import LakeEnv
from m1lite.storage.writer import KEY

_decode = msgspec.msgpack.Decoder().decode


def next_key(lake: LakeEnv) -> int:
    """The `_m1key` the next event gets: one past the last in the log (keys are never reused)."""
    with lake.read() as txn:
        cursor = txn.cursor(db=lake.dbs["log"])
        if not cursor.last():
            return 0
        return int(KEY.unpack(cursor.key())[0]) + 1


def get_records(lake: LakeEnv, keys: Iterable[int]) -> list[dict[str, Any]]:
    """Flat records for the keys, in the order asked; unknown keys are left out."""
    found = []
    with lake.read() as txn:
        db = lake.dbs["log"]
        for key in keys:
            if key < 0 or key >= 1 << 64:
                continue
            raw = txn.get(KEY.pack(key), db=db)
            if raw is not None:
                found.append(_decode(raw))
    return found


def scan(
    lake: LakeEnv, start: int = 0, batch: int = 10_000
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every (key, record) from start on, read in short transactions."""
    position = start
    while True:
        rows: list[tuple[int, dict[str, Any]]] = []
        with lake.read() as txn:
            cursor = txn.cursor(db=lake.dbs["log"])
            found = cursor.set_range(KEY.pack(position))
            while found and len(rows) < batch:
                rows.append((KEY.unpack(cursor.key())[0], _decode(cursor.value())))
                found = cursor.next()
        if not rows:
            return
        yield from rows
        position = rows[-1][0] + 1

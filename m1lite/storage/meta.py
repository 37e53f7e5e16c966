"""Small durable key/value records: users, token hashes, system properties,
schema and store definitions. Values are msgpack; writes commit at once (durable)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lmdb
import msgspec

from m1lite.errors import StorageFull
from m1lite.storage.env import LakeEnv

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class MetaStore:
    def __init__(self, lake: LakeEnv, db: str = "meta") -> None:
        self._lake = lake
        self._db = lake.dbs[db]

    def get(self, key: str, default: Any = None) -> Any:
        with self._lake.read() as txn:
            raw = txn.get(key.encode(), db=self._db)
        return default if raw is None else _decode(raw)

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def put_many(self, values: dict[str, Any], deletes: tuple[str, ...] = ()) -> None:
        # A full map grows here as in the writer; past the cap the caller gets a 507
        # (not a 500), and nothing of this change was stored.
        while True:
            seen = self._lake.map_size
            try:
                with self._lake.write() as txn:
                    for key, value in values.items():
                        txn.put(key.encode(), _encode(value), db=self._db)
                    for key in deletes:
                        txn.delete(key.encode(), db=self._db)
                return
            except lmdb.MapFullError:
                if not self._lake.grow(seen):
                    raise StorageFull("storage is full: nothing was stored") from None

    def delete(self, key: str) -> None:
        self.put_many({}, deletes=(key,))

    def items(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """Every (key, value) whose key starts with prefix, in key order."""
        start = prefix.encode()
        with self._lake.read() as txn:
            cursor = txn.cursor(db=self._db)
            found = cursor.set_range(start)
            rows = []
            while found:
                key = bytes(cursor.key())
                if not key.startswith(start):
                    break
                rows.append((key.decode(), _decode(cursor.value())))
                found = cursor.next()
        yield from rows

    def keys(self, prefix: str, *, below: str | None = None, limit: int | None = None) -> list[str]:
        """The keys that start with prefix (and sort before `below`), in key order, at
        most `limit` of them; values are not decoded."""
        start = prefix.encode()
        stop = below.encode() if below is not None else None
        found_keys: list[str] = []
        with self._lake.read() as txn:
            cursor = txn.cursor(db=self._db)
            found = cursor.set_range(start)
            while found and (limit is None or len(found_keys) < limit):
                key = bytes(cursor.key())
                if not key.startswith(start) or (stop is not None and key >= stop):
                    break
                found_keys.append(key.decode())
                found = cursor.next()
        return found_keys

"""The append-only event log: one record per `_m1key`, the source of truth.

A value is one flag byte (published or archive-only) and the msgpack of the flat
record. The writer is the only one appending; everything else reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from m1lite.storage.env import LakeEnv

KEY = struct.Struct(">Q")
PUBLISHED, ARCHIVE_ONLY = b"p", b"a"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def encode_record(record: dict[str, Any]) -> bytes:
    """msgpack of a record without its key; OverflowError for integers msgpack cannot
    hold (the request handler encodes, so such an event fails only its own request)."""
    return _encode(record)


def log_value(encoded: bytes, key: int, published: bool) -> bytes:
    """The stored value: the flag byte, then the encoded map with `_m1key` appended (the
    key is only known to the writer, so it patches the map header instead of
    re-encoding the record)."""
    head = encoded[0]
    if head & 0xF0 == 0x80:
        count, body = head & 0x0F, encoded[1:]
    elif head == 0xDE:
        count, body = int.from_bytes(encoded[1:3], "big"), encoded[3:]
    elif head == 0xDF:
        count, body = int.from_bytes(encoded[1:5], "big"), encoded[5:]
    else:
        raise ValueError("an encoded record must be a msgpack map")
    count += 1
    if count < 16:
        header = bytes((0x80 | count,))
    elif count < 1 << 16:
        header = b"\xde" + count.to_bytes(2, "big")
    else:
        header = b"\xdf" + count.to_bytes(4, "big")
    flag = PUBLISHED if published else ARCHIVE_ONLY
    return flag + header + body + b"\xa6_m1key\xcf" + key.to_bytes(8, "big")


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
                found.append(_decode(memoryview(raw)[1:]))
    return found


def scan(
    lake: LakeEnv, start: int = 0, batch: int = 10_000
) -> Iterator[tuple[int, bool, dict[str, Any]]]:
    """Every (key, published, record) from start on, read in short transactions."""
    position = start
    while True:
        rows: list[tuple[int, bool, dict[str, Any]]] = []
        with lake.read() as txn:
            cursor = txn.cursor(db=lake.dbs["log"])
            found = cursor.set_range(KEY.pack(position))
            while found and len(rows) < batch:
                raw = cursor.value()
                rows.append((KEY.unpack(cursor.key())[0], raw[:1] == PUBLISHED, _decode(raw[1:])))
                found = cursor.next()
        if not rows:
            return
        yield from rows
        position = rows[-1][0] + 1

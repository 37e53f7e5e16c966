"""Derived indexes over the event log: roaring-bitmap postings and numeric columns.

Postings: one BitMap of `_m1key`s per term. A term is (field, value) encoded as
`field NUL tag value-bytes` (tags: `s` string, `n` number, `b` boolean, `t` text
token), so LMDB's key order is a sorted term dictionary per field. Persisted in
chunks of 65,536 keys (one roaring container) so a commit rewrites only the
chunks it touched, never a whole large bitmap.

Columns: one float64 value per `_m1key` for numeric and date fields (NaN when the
event has none), for ranges, sorts and stats. Persisted in chunks of 4,096 keys.

A commit is staged first (`stage`), written inside the writer's transaction
(`persist`) and applied to memory only after the commit succeeded (`apply`), so a
failed commit (map full) leaves memory and disk agreeing. Readers see events up
to `visible_upto`, which moves after `apply`.
"""

from __future__ import annotations

import functools
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np
from pyroaring import BitMap

POSTING_CHUNK_BITS = 16
COLUMN_CHUNK = 4096
MAX_TERM_KEY_BYTES = 480  # LMDB keys are at most 511 bytes, and the chunk suffix needs 4
ALL_EVENTS = b"\x00all"  # every published event
ARCHIVED = b"\x00archived"  # written with publish=false: in the log, not in the stores

# Server fields whose values are unique per event: a posting per value would be one
# bitmap per event, so they live only in columns (or, for _m1key, in the key itself).
COLUMN_ONLY_FIELDS = frozenset({"_m1key", "_m1rand", "_m1.receivedUTC"})

_TOKEN = re.compile(r"\w+", re.UNICODE)
_U32 = struct.Struct(">I")


def _sortable_number(value: float) -> bytes:
    """8 bytes whose byte order is the numeric order of the float."""
    bits = struct.unpack(">Q", struct.pack(">d", float(value)))[0]
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits & (1 << 63) else bits | (1 << 63)
    return bits.to_bytes(8, "big")


def number_from_term(encoded: bytes) -> float:
    bits = int.from_bytes(encoded, "big")
    bits = bits & ~(1 << 63) if bits & (1 << 63) else bits ^ 0xFFFFFFFFFFFFFFFF
    return float(struct.unpack(">d", struct.pack(">Q", bits))[0])


def term_key(field_name: str, value: Any) -> bytes | None:
    """The posting key of one scalar value, or None when it is not indexed as a term."""
    key: bytes
    if isinstance(value, str):
        key = field_name.encode() + b"\x00s" + value.encode()
    elif value is True or value is False:
        key = field_name.encode() + (b"\x00b1" if value else b"\x00b0")
    elif isinstance(value, int | float):
        key = field_name.encode() + b"\x00n" + _sortable_number(value)
    else:
        return None
    return key if len(key) <= MAX_TERM_KEY_BYTES else None


@functools.lru_cache(maxsize=64)
def _chunk_range(chunk: int) -> BitMap:
    """All keys of one posting chunk; ANDed with a bitmap it cuts out that chunk."""
    keys = BitMap()
    keys.add_range(chunk << POSTING_CHUNK_BITS, (chunk + 1) << POSTING_CHUNK_BITS)
    return keys


def text_terms(field_name: str, value: str) -> set[bytes]:
    prefix = field_name.encode() + b"\x00t"
    return {
        prefix + token.encode()
        for token in _TOKEN.findall(value.lower())
        if len(prefix) + len(token) <= MAX_TERM_KEY_BYTES
    }


@dataclass
class StagedBatch:
    """What one commit adds to the indexes, before it is applied to memory."""

    postings: dict[bytes, list[int]] = field(default_factory=lambda: defaultdict(list))
    columns: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    last_key: int = -1


class Index:
    def __init__(self) -> None:
        self.postings: dict[bytes, BitMap] = {}
        self.columns: dict[str, np.ndarray] = {}
        self.visible_upto = 0  # keys below this are committed and applied

    # -- building -------------------------------------------------------------

    def stage(
        self,
        first_key: int,
        records: Iterable[Mapping[str, Any]],
        *,
        published: bool,
        field_kind: Callable[[str], str | None],
        date_ms: Callable[[Any], int | None],
    ) -> StagedBatch:
        staged = StagedBatch()
        postings = staged.postings
        columns = staged.columns
        key = first_key
        membership = postings[ALL_EVENTS if published else ARCHIVED]
        for record in records:
            membership.append(key)
            if published:
                for name, value in record.items():
                    kind = field_kind(name)
                    if kind == "date" or name == "_m1.receivedUTC":
                        ms = date_ms(value)
                        if ms is not None:
                            columns[name].append((key, float(ms)))
                        continue
                    if name in COLUMN_ONLY_FIELDS:
                        columns[name].append((key, float(value)))
                        continue
                    values = value if isinstance(value, list) else (value,)
                    for v in values:
                        if kind == "text" and isinstance(v, str):
                            for term in text_terms(name, v):
                                postings[term].append(key)
                            continue
                        if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool)):
                            if not isinstance(value, list):
                                columns[name].append((key, float(v)))
                            if isinstance(v, float) and not v.is_integer():
                                continue  # doubles: column only, terms would be unique
                        term = term_key(name, v)
                        if term is not None:
                            postings[term].append(key)
            key += 1
        staged.last_key = key - 1
        return staged

    def persist(
        self, txn: lmdb.Transaction, postings_db: Any, columns_db: Any, staged: StagedBatch
    ) -> None:
        """Write every chunk the batch touched: old chunk contents plus the new keys."""
        for term, keys in staged.postings.items():
            existing = self.postings.get(term)
            by_chunk: dict[int, list[int]] = defaultdict(list)
            for k in keys:
                by_chunk[k >> POSTING_CHUNK_BITS].append(k)
            for chunk, chunk_keys in by_chunk.items():
                bitmap = BitMap(chunk_keys)
                if existing is not None:
                    bitmap |= existing & _chunk_range(chunk)
                txn.put(term + _U32.pack(chunk), bitmap.serialize(), db=postings_db)
        for name, pairs in staged.columns.items():
            current = self.columns.get(name)
            by_chunk_values: dict[int, list[tuple[int, float]]] = defaultdict(list)
            for k, v in pairs:
                by_chunk_values[k // COLUMN_CHUNK].append((k, v))
            for chunk, chunk_pairs in by_chunk_values.items():
                lo = chunk * COLUMN_CHUNK
                hi = max(k for k, _ in chunk_pairs) + 1
                values = np.full(hi - lo, np.nan)
                if current is not None and len(current) > lo:
                    old = current[lo : min(hi, len(current))]
                    values[: len(old)] = old
                for k, v in chunk_pairs:
                    values[k - lo] = v
                txn.put(name.encode() + b"\x00" + _U32.pack(chunk), values.tobytes(), db=columns_db)

    def apply(self, staged: StagedBatch) -> None:
        """Make a committed batch part of the in-memory indexes, then visible."""
        for term, keys in staged.postings.items():
            bitmap = self.postings.get(term)
            if bitmap is None:
                self.postings[term] = BitMap(keys)
            else:
                bitmap.update(keys)
        for name, pairs in staged.columns.items():
            column = self._column_for(name, pairs[-1][0] + 1)
            positions = np.fromiter((k for k, _ in pairs), dtype=np.int64, count=len(pairs))
            column[positions] = np.fromiter(
                (v for _, v in pairs), dtype=np.float64, count=len(pairs)
            )
        if staged.last_key >= self.visible_upto:
            self.visible_upto = staged.last_key + 1

    def _column_for(self, name: str, size: int) -> np.ndarray:
        column = self.columns.get(name)
        if column is None or len(column) < size:
            grown = np.full(max(size, 2 * (0 if column is None else len(column)), 1024), np.nan)
            if column is not None:
                grown[: len(column)] = column
            self.columns[name] = column = grown
        return column

    # -- loading --------------------------------------------------------------

    def load(self, txn: lmdb.Transaction, postings_db: Any, columns_db: Any, next_key: int) -> None:
        """Read the persisted indexes (no log replay)."""
        chunks: dict[bytes, list[BitMap]] = defaultdict(list)
        for raw_key, raw_value in txn.cursor(db=postings_db):
            chunks[bytes(raw_key[:-4])].append(BitMap.deserialize(bytes(raw_value)))
        self.postings = {term: BitMap.union(*parts) for term, parts in chunks.items()}
        columns: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        for raw_key, raw_value in txn.cursor(db=columns_db):
            raw_key = bytes(raw_key)
            name = raw_key[:-5].decode()
            columns[name].append((_U32.unpack(raw_key[-4:])[0], bytes(raw_value)))
        self.columns = {}
        for name, parts in columns.items():
            column = self._column_for(name, max(next_key, 1))
            for chunk, raw in parts:
                values = np.frombuffer(raw, dtype=np.float64)
                lo = chunk * COLUMN_CHUNK
                column[lo : lo + len(values)] = values
        self.visible_upto = next_key

    # -- reading --------------------------------------------------------------

    def bitmap(self, term: bytes) -> BitMap:
        return self.postings.get(term) or BitMap()

    def all_events(self) -> BitMap:
        return self.bitmap(ALL_EVENTS)

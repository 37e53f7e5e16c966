"""Derived indexes over the event log, kept in memory and persisted with each commit.

Per field, two structures a query can pick from:

- string and boolean values: a dictionary (value id per distinct value) and a
  forward column of codes, one uint32 per `_m1key` (0 = absent, else id + 1).
  Roaring-bitmap postings (one BitMap of keys per value id) are built from the
  codes the first time a query asks for them and then kept up to date, so a field
  nobody queries by term costs no bitmaps, and a unique-per-event field (event.id)
  never costs one bitmap per event.
- numbers and dates (dates as epoch ms): a float64 column, NaN = absent.

Multi-valued fields keep their first value in the column and the rest in `extras`.

Persistence, in the writer's transaction: each commit writes one segment per field
it touched (codes or numbers for its key range, plus the dictionary values it
added); when a 65,536-key chunk closes, its segments are merged into one record.
Opening a store reads those records; it never replays the log.

Readers must clamp to `visible_upto`: the writer adds a batch to memory before its
commit and moves `visible_upto` only after the commit succeeded (a failed commit is
rolled back with `rollback`).
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lmdb
import msgspec
import numpy as np
from pyroaring import BitMap

CHUNK_KEYS = 65_536
MAX_FIELD_NAME_BYTES = 400  # LMDB keys are at most 511 bytes
_NUM = struct.Struct(">Q")
_TOKEN = re.compile(r"\w+", re.UNICODE)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
# Record kinds in the `index` database (lower case: per-commit segment; upper: merged chunk).
CODES, NUMBERS, DICTIONARY, EXTRAS, NUMBER_EXTRAS, ARCHIVED = b"c", b"n", b"d", b"x", b"y", b"a"
SKIPPED_FIELDS = frozenset({"_m1key"})  # the key itself; no column needed


def _bool_key(value: bool) -> tuple[str, bool]:
    """Dictionary key of a boolean; distinct from 1/0 and from the strings 'true'/'false'."""
    return ("bool", value)


def indexable_name(name: str) -> bool:
    """Whether a field can be indexed: its name must fit in an LMDB key. Checked for every
    kind of field, since one unfit key fails the whole group commit, and with it other
    clients' events that were already acknowledged. The event keeps it in the log."""
    return "\x00" not in name and len(name.encode()) <= MAX_FIELD_NAME_BYTES


def _number_slot(
    numbers: dict[str, tuple[list[int], list[float]]], name: str
) -> tuple[list[int], list[float]] | None:
    """A batch's (keys, values) lists of a numeric field; None when it cannot be indexed."""
    return numbers.setdefault(name, ([], [])) if indexable_name(name) else None


def tokens(text: str) -> list[str]:
    """Terms of a `text` property: lower-cased word characters."""
    return _TOKEN.findall(text.lower())


class FieldIndex:
    """Dictionary-encoded codes (and lazily, postings) of one string/boolean field."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: list[Any] = []  # id -> value (str or bool)
        self.ids: dict[Any, int] = {}  # value (or _bool_key) -> id
        self.codes = np.zeros(0, dtype=np.uint32)
        self.extras: dict[int, list[int]] = {}  # key -> further value ids (multi-valued)
        self.postings: list[BitMap] | None = None  # id -> keys, built on demand
        self.persisted_values = 0  # dictionary entries already written
        self.merged_values = 0  # dictionary entries below this are in merged records
        self.lock = threading.Lock()  # postings: built by a reader, extended by the writer

    def value_id(self, value: Any) -> int | None:
        key = _bool_key(value) if isinstance(value, bool) else value
        return self.ids.get(key)

    def intern(self, value: Any) -> int:
        key = _bool_key(value) if isinstance(value, bool) else value
        found = self.ids.get(key)
        if found is not None:
            return found
        # Under the lock: a reader building the postings must see values and postings
        # change together (else one bitmap too few, and an IndexError in the writer).
        with self.lock:
            new_id = len(self.values)
            self.values.append(value)
            self.ids[key] = new_id
            if self.postings is not None:
                self.postings.append(BitMap())
        return new_id

    def ensure_size(self, size: int) -> None:
        if len(self.codes) < size:
            grown = np.zeros(max(size, 2 * len(self.codes), 1024), dtype=np.uint32)
            grown[: len(self.codes)] = self.codes
            self.codes = grown

    def bitmaps(self, visible_upto: int) -> list[BitMap]:
        """Postings per value id; built from the codes on first use. They may hold keys
        at or past `visible_upto` (a commit in flight): callers clamp."""
        with self.lock:
            if self.postings is None:
                self.postings = self._build_postings()
            return self.postings

    def _build_postings(self) -> list[BitMap]:
        # Every code, not only the visible ones: a batch the writer has added but not yet
        # committed skipped these postings (they did not exist yet), and its keys must be
        # in them when its commit makes them visible (`rollback` takes them out again).
        codes = self.codes
        order = np.argsort(codes, kind="stable")  # stable: keys stay ascending per value
        bounds = np.searchsorted(codes[order], np.arange(1, len(self.values) + 2))
        postings = [BitMap(order[bounds[i] : bounds[i + 1]]) for i in range(len(self.values))]
        for key, more in self.extras.items():
            for value_id in more:
                postings[value_id].add(key)
        return postings


@dataclass
class _Batch:
    """One commit's additions, grouped per field."""

    first_key: int
    last_key: int = -1
    strings: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    numbers: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    string_extras: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    number_extras: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    archived: list[int] = field(default_factory=list)
    dictionary_marks: dict[str, int] = field(default_factory=dict)


class Index:
    def __init__(self) -> None:
        self.fields: dict[str, FieldIndex] = {}
        self.numbers: dict[str, np.ndarray] = {}
        self.number_extras: dict[str, dict[int, list[float]]] = {}
        self.archived = BitMap()  # written with publish=false: in the log, not in the stores
        self.visible_upto = 0  # keys below this are committed
        self._pending: _Batch | None = None

    # -- reading ------------------------------------------------------------------

    def published(self) -> BitMap:
        """Every visible published event."""
        keys = BitMap()
        keys.add_range(0, self.visible_upto)
        return keys - self.archived

    def term_keys(self, field_name: str, value: Any) -> BitMap:
        """Keys of visible events whose field holds value (string or boolean)."""
        index = self.fields.get(field_name)
        value_id = None if index is None else index.value_id(value)
        if index is None or value_id is None:
            return BitMap()
        upto = self.visible_upto
        bitmaps = index.bitmaps(upto)
        if value_id >= len(bitmaps):
            return BitMap()  # a value of a commit that failed and was rolled back meanwhile
        keys = bitmaps[value_id]
        if keys and keys.max() >= upto:
            keys = keys.copy()
            keys.remove_range(upto, 1 << 32)
        return keys

    # -- the writer's side ----------------------------------------------------------

    def add(
        self,
        first_key: int,
        parts: Iterable[tuple[list[dict[str, Any]], Mapping[str, Any], bool]],
        *,
        date_fields: frozenset[str],
        text_fields: frozenset[str],
        date_ms: Callable[[Any], int | None],
    ) -> None:
        """Add one commit's (records, shared, published) parts to memory, not yet visible;
        `persist`, then `commit` or `rollback` follow. `shared` names fields every record
        of the part holds with the same value: they are indexed once, by key range."""
        batch = self._pending = _Batch(first_key)
        strings = batch.strings
        numbers = batch.numbers
        fields = self.fields
        key = first_key
        for records, shared, published in parts:
            if not published:
                batch.archived.extend(range(key, key + len(records)))
                key += len(records)
                continue
            if shared:
                self._add_shared(batch, key, key + len(records), shared, date_fields, date_ms)
            for record in records:
                for name, value in record.items():
                    if name in shared:
                        continue
                    kind = type(value)
                    if kind is str:
                        if name in date_fields:
                            ms = date_ms(value)
                            if ms is not None:
                                slot = numbers.get(name) or _number_slot(numbers, name)
                                if slot is not None:
                                    slot[0].append(key)
                                    slot[1].append(float(ms))
                            continue
                        if name in text_fields:
                            self._add_multi(batch, name, key, tokens(value))
                            continue
                        index = fields.get(name) or self._new_field(name)
                        if index is None:
                            continue
                        value_id = index.ids.get(value)
                        if value_id is None:
                            value_id = self._intern(batch, index, value)
                        pair = strings.get(name) or strings.setdefault(name, ([], []))
                        pair[0].append(key)
                        pair[1].append(value_id)
                    elif kind is float or kind is int:
                        if name in SKIPPED_FIELDS:
                            continue
                        if name in date_fields:
                            ms = date_ms(value)
                            if ms is None:
                                continue
                            value = ms
                        slot = numbers.get(name) or _number_slot(numbers, name)
                        if slot is None:
                            continue
                        slot[0].append(key)
                        slot[1].append(float(value))
                    elif kind is bool:
                        self._add_multi(batch, name, key, [value])
                    elif kind is list:
                        values = value
                        if name in text_fields:
                            values = [t for v in value if isinstance(v, str) for t in tokens(v)]
                        self._add_multi(batch, name, key, values)
                key += 1
        batch.last_key = key - 1
        self._apply_to_memory(batch)

    def _add_shared(
        self,
        batch: _Batch,
        start: int,
        stop: int,
        shared: Mapping[str, Any],
        date_fields: frozenset[str],
        date_ms: Callable[[Any], int | None],
    ) -> None:
        keys = range(start, stop)
        for name, value in shared.items():
            if isinstance(value, str) and name in date_fields:
                ms = date_ms(value)
                if ms is None:
                    continue
                value = float(ms)
            if isinstance(value, str | bool):
                index = self.fields.get(name) or self._new_field(name)
                if index is None:
                    continue
                value_id = index.value_id(value)
                if value_id is None:
                    value_id = self._intern(batch, index, value)
                pair = batch.strings.setdefault(name, ([], []))
                pair[0].extend(keys)
                pair[1].extend([value_id] * len(keys))
            elif isinstance(value, int | float):
                slot = _number_slot(batch.numbers, name)
                if slot is None:
                    continue
                slot[0].extend(keys)
                slot[1].extend([float(value)] * len(keys))

    def _new_field(self, name: str) -> FieldIndex | None:
        if not indexable_name(name):
            return None  # kept in the log, not indexable as a field name
        index = self.fields[name] = FieldIndex(name)
        return index

    def _intern(self, batch: _Batch, index: FieldIndex, value: Any) -> int:
        batch.dictionary_marks.setdefault(index.name, len(index.values))
        return index.intern(value)

    def _add_multi(self, batch: _Batch, name: str, key: int, values: list[Any]) -> None:
        """Slow path: booleans and arrays. First value in the column, the rest in extras."""
        if not indexable_name(name):
            return
        first_string = True
        first_number = True
        for value in values:
            if isinstance(value, str | bool):
                index = self.fields.get(name) or self._new_field(name)
                if index is None:
                    return
                value_id = index.ids.get(_bool_key(value) if isinstance(value, bool) else value)
                if value_id is None:
                    value_id = self._intern(batch, index, value)
                if first_string:
                    pair = batch.strings.setdefault(name, ([], []))
                    pair[0].append(key)
                    pair[1].append(value_id)
                    first_string = False
                else:
                    batch.string_extras.setdefault(name, {}).setdefault(key, []).append(value_id)
            elif isinstance(value, int | float):
                if first_number:
                    slot = batch.numbers.setdefault(name, ([], []))
                    slot[0].append(key)
                    slot[1].append(float(value))
                    first_number = False
                else:
                    batch.number_extras.setdefault(name, {}).setdefault(key, []).append(
                        float(value)
                    )

    def _apply_to_memory(self, batch: _Batch) -> None:
        size = batch.last_key + 1
        for name, (keys, ids) in batch.strings.items():
            index = self.fields[name]
            index.ensure_size(size)
            index.codes[np.array(keys, dtype=np.int64)] = np.array(ids, dtype=np.uint32) + 1
            with index.lock:
                if index.postings is not None:
                    for key, value_id in zip(keys, ids, strict=True):
                        index.postings[value_id].add(key)
        for name, extras in batch.string_extras.items():
            index = self.fields[name]
            # Under the lock: a reader building the postings iterates the extras.
            with index.lock:
                index.extras.update(extras)
                if index.postings is not None:
                    for key, more in extras.items():
                        for value_id in more:
                            index.postings[value_id].add(key)
        for name, (keys, values) in batch.numbers.items():
            column = self._number_column(name, size)
            column[np.array(keys, dtype=np.int64)] = np.array(values)
        for name, number_extras in batch.number_extras.items():
            self.number_extras.setdefault(name, {}).update(number_extras)
        self.archived.update(batch.archived)

    def _number_column(self, name: str, size: int) -> np.ndarray:
        column = self.numbers.get(name)
        if column is None or len(column) < size:
            old = 0 if column is None else len(column)
            grown = np.full(max(size, 2 * old, 1024), np.nan)
            if column is not None:
                grown[:old] = column
            self.numbers[name] = column = grown
        return column

    def persist(self, txn: lmdb.Transaction, db: Any) -> None:
        """Write the pending batch's segments (and merged chunks it closed)."""
        batch = self._pending
        if batch is None or batch.last_key < batch.first_key:
            return
        first, last = batch.first_key, batch.last_key
        start = _NUM.pack(first)
        for name in batch.strings:
            index = self.fields[name]
            prefix = name.encode() + b"\x00"
            txn.put(CODES + prefix + start, index.codes[first : last + 1].tobytes(), db=db)
            if index.persisted_values < len(index.values):
                new_values = index.values[index.persisted_values :]
                txn.put(
                    DICTIONARY + prefix + _NUM.pack(index.persisted_values),
                    _encode(new_values),
                    db=db,
                )
        for name, extras in batch.string_extras.items():
            txn.put(EXTRAS + name.encode() + b"\x00" + start, _encode(extras), db=db)
        for name, number_extras in batch.number_extras.items():
            txn.put(NUMBER_EXTRAS + name.encode() + b"\x00" + start, _encode(number_extras), db=db)
        for name in batch.numbers:
            column = self.numbers[name]
            txn.put(
                NUMBERS + name.encode() + b"\x00" + start,
                column[first : last + 1].tobytes(),
                db=db,
            )
        if batch.archived:
            txn.put(ARCHIVED + start, BitMap(batch.archived).serialize(), db=db)
        if (last + 1) // CHUNK_KEYS > first // CHUNK_KEYS:
            for chunk in range(first // CHUNK_KEYS, (last + 1) // CHUNK_KEYS):
                self._merge_chunk(txn, db, chunk)

    def _merge_chunk(self, txn: lmdb.Transaction, db: Any, chunk: int) -> None:
        """Replace a closed chunk's per-commit segments by one record per field."""
        lo, hi = chunk * CHUNK_KEYS, (chunk + 1) * CHUNK_KEYS
        for kind, names, itemsize in (
            (CODES, list(self.fields), 4),
            (NUMBERS, list(self.numbers), 8),
        ):
            for name in names:
                prefix = kind + name.encode() + b"\x00"
                cursor = txn.cursor(db=db)
                segments = []
                found = cursor.set_range(prefix + _NUM.pack(lo))
                while found:
                    raw_key = bytes(cursor.key())
                    if not raw_key.startswith(prefix):
                        break
                    seg_start = _NUM.unpack(raw_key[len(prefix) :])[0]
                    seg_end = seg_start + len(cursor.value()) // itemsize
                    if seg_start >= hi or seg_end > hi:
                        break
                    segments.append(raw_key)
                    found = cursor.next()
                if len(segments) <= 1:
                    continue
                merged_start = _NUM.unpack(segments[0][len(prefix) :])[0]
                source = self.fields[name].codes if kind == CODES else self.numbers[name]
                for raw_key in segments:
                    txn.delete(raw_key, db=db)
                txn.put(prefix + _NUM.pack(merged_start), source[merged_start:hi].tobytes(), db=db)
        for index in self.fields.values():
            self._merge_dictionary(txn, db, index)

    def _merge_dictionary(self, txn: lmdb.Transaction, db: Any, index: FieldIndex) -> None:
        """One record for the dictionary values added since the last merge."""
        prefix = DICTIONARY + index.name.encode() + b"\x00"
        cursor = txn.cursor(db=db)
        found = cursor.set_range(prefix + _NUM.pack(index.merged_values))
        segments = []
        while found:
            raw_key = bytes(cursor.key())
            if not raw_key.startswith(prefix):
                break
            segments.append(raw_key)
            found = cursor.next()
        if len(segments) > 1:
            first_id = _NUM.unpack(segments[0][len(prefix) :])[0]
            for raw_key in segments:
                txn.delete(raw_key, db=db)
            txn.put(segments[0], _encode(index.values[first_id:]), db=db)
        index.merged_values = len(index.values)

    def commit(self) -> None:
        """The pending batch is durable: make it visible."""
        batch = self._pending
        if batch is None:
            return
        for name in batch.strings:
            index = self.fields[name]
            index.persisted_values = len(index.values)
        self.visible_upto = max(self.visible_upto, batch.last_key + 1)
        self._pending = None

    def rollback(self) -> None:
        """The pending batch's commit failed: forget it (it will be retried)."""
        batch = self._pending
        if batch is None:
            return
        first = batch.first_key
        for name, mark in batch.dictionary_marks.items():
            index = self.fields[name]
            with index.lock:  # see `intern`
                for value in index.values[mark:]:
                    index.ids.pop(_bool_key(value) if isinstance(value, bool) else value, None)
                del index.values[mark:]
                index.postings = None  # rebuilt from the codes on next use
        for name in batch.strings:
            index = self.fields[name]
            index.codes[first:] = 0
            for key in [k for k in index.extras if k >= first]:
                del index.extras[key]
            with index.lock:
                if index.postings is not None:
                    for keys in index.postings:
                        keys.remove_range(first, 1 << 32)
        for name in batch.numbers:
            self.numbers[name][first:] = np.nan
        for extras in self.number_extras.values():
            for key in [k for k in extras if k >= first]:
                del extras[key]
        self.archived.remove_range(first, 1 << 32)
        self._pending = None

    # -- opening ------------------------------------------------------------------------

    def load(self, txn: lmdb.Transaction, db: Any, next_key: int) -> None:
        """Read the persisted indexes for keys below next_key."""
        dictionaries: dict[str, list[tuple[int, list[Any]]]] = {}
        for raw_key, raw_value in txn.cursor(db=db):
            raw_key = bytes(raw_key)
            kind = raw_key[:1]
            if kind == ARCHIVED:
                self.archived |= BitMap.deserialize(bytes(raw_value))
                continue
            name = raw_key[1:-9].decode()
            number = _NUM.unpack(raw_key[-8:])[0]
            if kind == CODES:
                index = self.fields.get(name) or self.fields.setdefault(name, FieldIndex(name))
                index.ensure_size(next_key)
                codes = np.frombuffer(raw_value, dtype=np.uint32)
                index.codes[number : number + len(codes)] = codes
            elif kind == NUMBERS:
                column = self._number_column(name, next_key)
                values = np.frombuffer(raw_value, dtype=np.float64)
                column[number : number + len(values)] = values
            elif kind == DICTIONARY:
                dictionaries.setdefault(name, []).append((number, _decode(raw_value)))
            elif kind == EXTRAS:
                index = self.fields.get(name) or self.fields.setdefault(name, FieldIndex(name))
                for key, more in _decode(raw_value).items():
                    index.extras[int(key)] = more
            elif kind == NUMBER_EXTRAS:
                extras = self.number_extras.setdefault(name, {})
                for key, more in _decode(raw_value).items():
                    extras[int(key)] = more
        for name, parts in dictionaries.items():
            index = self.fields.get(name) or self.fields.setdefault(name, FieldIndex(name))
            for first_id, added in sorted(parts, key=lambda part: part[0]):
                del index.values[first_id:]
                index.values.extend(added)
            index.ids = {
                (_bool_key(v) if isinstance(v, bool) else v): i for i, v in enumerate(index.values)
            }
            index.persisted_values = len(index.values)
            index.merged_values = max(first for first, _ in parts)
        self.visible_upto = next_key

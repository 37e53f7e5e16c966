"""Derived indexes over the event log, kept in memory and checkpointed to LMDB.

Per field, two structures a query can pick from:

- string and boolean values: a dictionary (value id per distinct value) and a
  forward column of codes, one uint32 per `_m1key` (0 = absent, else id + 1).
  Roaring-bitmap postings (one BitMap of keys per value id) are built from the
  codes the first time a query asks for them and then kept up to date, so a field
  nobody queries by term costs no bitmaps, and a unique-per-event field (event.id)
  never costs one bitmap per event.
- numbers and dates (dates as epoch ms): a float64 column, NaN = absent.

Multi-valued fields keep their first value in the column and the rest in `extras`.

The writer adds each batch right after its log commit and only then moves
`visible_upto` and acknowledges, so an acknowledged event is queryable. Readers
must clamp to `visible_upto`.

Persistence: `checkpoint` writes, per field touched since the last checkpoint, the
chunks of 65,536 keys it touched (whole chunk arrays, so a chunk's record is
simply replaced), the dictionary values added, and a watermark: every key below it
is in the records. The writer checkpoints when a chunk closes, every few seconds
while events arrive, and at shutdown. Opening a store loads the records and
replays only the log after the watermark (seconds of traffic, never history), and
a crash between checkpoints loses nothing: the log is the source of truth.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable, Container, Iterable, Mapping
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
# Record kinds in the `index` database.
CODES, NUMBERS, DICTIONARY, EXTRAS, NUMBER_EXTRAS, ARCHIVED = b"c", b"n", b"d", b"x", b"y", b"a"
WATERMARK = b"w"
SKIPPED_FIELDS = frozenset({"_m1key"})  # the key itself; no column needed

Part = tuple[list[dict[str, Any]], Mapping[str, Any], bool]  # records, shared, published


def _bool_key(value: bool) -> tuple[str, bool]:
    """Dictionary key of a boolean; distinct from 1/0 and from the strings 'true'/'false'."""
    return ("bool", value)


def indexable_name(name: str) -> bool:
    """Whether a field can be indexed: its name must fit in an LMDB key (the event keeps
    the field in the log either way)."""
    return "\x00" not in name and len(name.encode()) <= MAX_FIELD_NAME_BYTES


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
        self.persisted_values = 0  # dictionary entries already checkpointed
        self.merged_values = 0  # dictionary entries below this are in merged records
        self.lock = threading.Lock()  # postings: built by a reader, extended by the writer

    def value_id(self, value: Any) -> int | None:
        key = _bool_key(value) if isinstance(value, bool) else value
        return self.ids.get(key)

    def intern_many(self, new_values: Iterable[Any]) -> None:
        """Add values not yet in the dictionary (the caller filtered them)."""
        # Under the lock: a reader building the postings must see values and postings
        # change together.
        with self.lock:
            for value in new_values:
                key = _bool_key(value) if isinstance(value, bool) else value
                if key in self.ids:
                    continue
                self.ids[key] = len(self.values)
                self.values.append(value)
                if self.postings is not None:
                    self.postings.append(BitMap())

    def intern(self, value: Any) -> int:
        found = self.value_id(value)
        if found is None:
            self.intern_many((value,))
            found = self.value_id(value)
            assert found is not None
        return found

    def ensure_size(self, size: int) -> None:
        if len(self.codes) < size:
            grown = np.zeros(max(size, 2 * len(self.codes), 1024), dtype=np.uint32)
            grown[: len(self.codes)] = self.codes
            self.codes = grown

    def bitmaps(self, visible_upto: int) -> list[BitMap]:
        """Postings per value id; built from the codes on first use. Callers clamp to
        `visible_upto` (the writer may be adding a batch)."""
        with self.lock:
            if self.postings is None:
                self.postings = self._build_postings()
            return self.postings

    def _build_postings(self) -> list[BitMap]:
        codes = self.codes
        order = np.argsort(codes, kind="stable")  # stable: keys stay ascending per value
        bounds = np.searchsorted(codes[order], np.arange(1, len(self.values) + 2))
        postings = [BitMap(order[bounds[i] : bounds[i + 1]]) for i in range(len(self.values))]
        for key, more in self.extras.items():
            for value_id in more:
                postings[value_id].add(key)
        return postings

    def set_codes(self, keys: list[int], ids: np.ndarray) -> None:
        self.codes[np.array(keys, dtype=np.int64)] = ids + 1
        with self.lock:
            if self.postings is not None:
                postings = self.postings
                for key, value_id in zip(keys, ids.tolist(), strict=True):
                    postings[value_id].add(key)

    def set_extras(self, extras: dict[int, list[int]]) -> None:
        with self.lock:
            self.extras.update(extras)
            if self.postings is not None:
                for key, more in extras.items():
                    for value_id in more:
                        self.postings[value_id].add(key)


class FieldValues:
    """A batch of events' values grouped by field, as `Index.add_values` takes them:
    strings and numbers as (keys, values) per field, booleans and arrays as
    (key, field, value) in `slow`. Grouping first keeps the per-event loop to sorting
    values; the per-field work then runs over whole lists."""

    __slots__ = ("numbers", "slow", "strings")

    def __init__(self) -> None:
        self.strings: dict[str, tuple[list[int], list[str]]] = {}
        self.numbers: dict[str, tuple[list[int], list[float]]] = {}
        self.slow: list[tuple[int, str, Any]] = []

    def collect(
        self, keyed: Iterable[tuple[int, Mapping[str, Any]]], skip: Container[str] = ()
    ) -> None:
        """Every field of every (key, record) but those in `skip`. The writer's hot loop."""
        strings, numbers, slow = self.strings, self.numbers, self.slow
        for key, record in keyed:
            for name, value in record.items():
                if name in skip:
                    continue
                kind = type(value)
                if kind is str:
                    string_slot = strings.get(name)
                    if string_slot is None:
                        string_slot = strings[name] = ([], [])
                    string_slot[0].append(key)
                    string_slot[1].append(value)
                elif kind is int or kind is float:
                    number_slot = numbers.get(name)
                    if number_slot is None:
                        number_slot = numbers[name] = ([], [])
                    number_slot[0].append(key)
                    number_slot[1].append(value)
                else:
                    slow.append((key, name, value))

    def extend(self, name: str, keys: list[int], value: Any) -> None:
        """One value every one of `keys` holds (a server stamp, a place's geo field)."""
        kind = type(value)
        slot: tuple[list[int], list[Any]]
        if kind is str:
            slot = self.strings.setdefault(name, ([], []))
        elif kind is int or kind is float:
            slot = self.numbers.setdefault(name, ([], []))
        else:
            self.slow.extend((key, name, value) for key in keys)
            return
        slot[0].extend(keys)
        slot[1].extend([value] * len(keys))


class Index:
    def __init__(self) -> None:
        self.fields: dict[str, FieldIndex] = {}
        self.numbers: dict[str, np.ndarray] = {}
        self.number_extras: dict[str, dict[int, list[float]]] = {}
        self.archived = BitMap()  # written with publish=false: in the log, not in the stores
        self.visible_upto = 0  # keys below this are committed and indexed
        self.checkpointed_upto = 0  # keys below this are in the persisted records
        self._dirty_fields: set[str] = set()
        self._dirty_numbers: set[str] = set()
        self._dirty_archived = False
        self._saved_dictionaries: dict[str, tuple[int, int]] = {}

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
        postings = index.bitmaps(upto)
        if value_id >= len(postings):
            return BitMap()
        keys = postings[value_id]
        if keys and keys.max() >= upto:
            keys = keys.copy()
            keys.remove_range(upto, 1 << 32)
        return keys

    # -- adding (the writer, after each log commit) ----------------------------------

    def add(
        self,
        first_key: int,
        parts: Iterable[Part],
        *,
        date_fields: frozenset[str],
        text_fields: frozenset[str],
        date_ms: Callable[[Any], int | None],
    ) -> None:
        """Index committed events with keys first_key.. in part order, then make them
        visible. `shared` names fields every record of a part holds with one value
        (the server's stamp): those are indexed once, by key range."""
        values = FieldValues()
        key = first_key
        for records, shared, published in parts:
            count = len(records)
            if not published:
                self.archived.add_range(key, key + count)
                self._dirty_archived = True
            else:
                if shared:
                    keys = list(range(key, key + count))
                    for name, value in shared.items():
                        values.extend(name, keys, value)
                values.collect(enumerate(records, key), skip=shared)
            key += count
        self.add_values(
            values, key, date_fields=date_fields, text_fields=text_fields, date_ms=date_ms
        )
        if key > self.visible_upto:
            self.visible_upto = key

    def add_values(
        self,
        values: FieldValues,
        size: int,
        *,
        date_fields: frozenset[str],
        text_fields: frozenset[str],
        date_ms: Callable[[Any], int | None],
    ) -> None:
        """Write grouped values into the columns (grown to hold `size` keys); dates
        become epoch ms, text fields tokens. Does not move `visible_upto`."""
        slow = values.slow
        for name, (keys, strings) in values.strings.items():
            if name in date_fields:
                self._add_dates(name, keys, strings, date_ms, size)
            elif name in text_fields:
                slow.extend((k, name, [text]) for k, text in zip(keys, strings, strict=True))
            elif indexable_name(name):
                self._add_strings(name, keys, strings, size)
        for name, (keys, numbers) in values.numbers.items():
            if name in SKIPPED_FIELDS or not indexable_name(name):
                continue
            if name in date_fields:
                self._add_dates(name, keys, numbers, date_ms, size)
            else:
                self.number_column(name, size)[np.array(keys, dtype=np.int64)] = numbers
                self._dirty_numbers.add(name)
        if slow:
            self._add_slow(slow, date_fields, text_fields, date_ms, size)

    def _add_strings(self, name: str, keys: list[int], values: list[str], size: int) -> None:
        index = self.fields.get(name)
        if index is None:
            index = self.fields[name] = FieldIndex(name)
        ids = index.ids
        new = [v for v in dict.fromkeys(values) if v not in ids]
        if new:
            index.intern_many(new)
        index.ensure_size(size)
        codes = np.fromiter(map(ids.__getitem__, values), dtype=np.uint32, count=len(values))
        index.set_codes(keys, codes)
        self._dirty_fields.add(name)

    def _add_dates(
        self,
        name: str,
        keys: list[int],
        values: list[Any],
        date_ms: Callable[[Any], int | None],
        size: int,
    ) -> None:
        parsed: dict[Any, int | None] = {}  # one request's events share a receive time
        kept_keys, kept = [], []
        for k, value in zip(keys, values, strict=True):
            ms = parsed.get(value, -1)
            if ms == -1:
                ms = parsed[value] = date_ms(value)
            if ms is not None:
                kept_keys.append(k)
                kept.append(float(ms))
        if kept and indexable_name(name):
            self.number_column(name, size)[np.array(kept_keys, dtype=np.int64)] = kept
            self._dirty_numbers.add(name)

    def _add_slow(
        self,
        slow: list[tuple[int, str, Any]],
        date_fields: frozenset[str],
        text_fields: frozenset[str],
        date_ms: Callable[[Any], int | None],
        size: int,
    ) -> None:
        """Booleans and arrays: the first string/boolean value of an event goes in the
        column and the rest in extras; the same for numbers."""
        first_codes: dict[str, tuple[list[int], list[int]]] = {}
        extras: dict[str, dict[int, list[int]]] = {}
        for key, name, value in slow:
            if not indexable_name(name):
                continue
            values = value if isinstance(value, list) else [value]
            if name in text_fields:
                values = [t for v in values if isinstance(v, str) for t in tokens(v)]
            elif name in date_fields:
                # A multi-valued date property arrives as a list of ISO strings: index them
                # as epoch ms like single dates, or date queries and stats would miss them.
                stamps = (date_ms(v) for v in values if not isinstance(v, bool))
                values = [float(ms) for ms in stamps if ms is not None]
            first_string = first_number = True
            for item in values:
                if isinstance(item, str | bool):
                    index = self.fields.get(name)
                    if index is None:
                        index = self.fields[name] = FieldIndex(name)
                    value_id = index.intern(item)
                    if first_string:
                        pair = first_codes.setdefault(name, ([], []))
                        pair[0].append(key)
                        pair[1].append(value_id)
                        first_string = False
                    else:
                        extras.setdefault(name, {}).setdefault(key, []).append(value_id)
                elif isinstance(item, int | float):
                    if first_number:
                        self.number_column(name, size)[key] = float(item)
                        first_number = False
                    else:
                        self.number_extras.setdefault(name, {}).setdefault(key, []).append(
                            float(item)
                        )
                    self._dirty_numbers.add(name)
        for name, (keys, value_ids) in first_codes.items():
            index = self.fields[name]
            index.ensure_size(size)
            index.set_codes(keys, np.array(value_ids, dtype=np.uint32))
            self._dirty_fields.add(name)
        for name, more in extras.items():
            self.fields[name].set_extras(more)

    def number_column(self, name: str, size: int) -> np.ndarray:
        """The field's float64 column, grown (NaN-filled) to hold at least `size` keys."""
        column = self.numbers.get(name)
        if column is None or len(column) < size:
            old = 0 if column is None else len(column)
            grown = np.full(max(size, 2 * old, 1024), np.nan)
            if column is not None:
                grown[:old] = column
            self.numbers[name] = column = grown
        return column

    # -- checkpoints ----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return self.checkpointed_upto < self.visible_upto

    def checkpoint(self, txn: lmdb.Transaction, db: Any) -> None:
        """Persist everything below `visible_upto` (see the module docstring)."""
        upto = self.visible_upto
        if upto <= self.checkpointed_upto:
            return
        self._saved_dictionaries = {
            name: (self.fields[name].persisted_values, self.fields[name].merged_values)
            for name in self._dirty_fields
        }
        chunks = range(self.checkpointed_upto // CHUNK_KEYS, (upto - 1) // CHUNK_KEYS + 1)
        for name in self._dirty_fields:
            index = self.fields[name]
            prefix = name.encode() + b"\x00"
            for chunk in chunks:
                lo, hi = chunk * CHUNK_KEYS, min((chunk + 1) * CHUNK_KEYS, upto)
                txn.put(CODES + prefix + _NUM.pack(lo), index.codes[lo:hi].tobytes(), db=db)
                in_chunk = {k: v for k, v in index.extras.items() if lo <= k < hi}
                if in_chunk:
                    txn.put(EXTRAS + prefix + _NUM.pack(lo), _encode(in_chunk), db=db)
            if index.persisted_values < len(index.values):
                txn.put(
                    DICTIONARY + prefix + _NUM.pack(index.persisted_values),
                    _encode(index.values[index.persisted_values :]),
                    db=db,
                )
                index.persisted_values = len(index.values)
            if len(chunks) > 1:  # a chunk closed: fold its dictionary segments into one
                self._merge_dictionary(txn, db, index)
        for name in self._dirty_numbers:
            column = self.numbers[name]
            prefix = name.encode() + b"\x00"
            extras = self.number_extras.get(name, {})
            for chunk in chunks:
                lo, hi = chunk * CHUNK_KEYS, min((chunk + 1) * CHUNK_KEYS, upto)
                txn.put(NUMBERS + prefix + _NUM.pack(lo), column[lo:hi].tobytes(), db=db)
                more = {k: v for k, v in extras.items() if lo <= k < hi}
                if more:
                    txn.put(NUMBER_EXTRAS + prefix + _NUM.pack(lo), _encode(more), db=db)
        if self._dirty_archived:
            for chunk in chunks:
                lo = chunk * CHUNK_KEYS
                part = BitMap()
                part.add_range(lo, lo + CHUNK_KEYS)
                txn.put(ARCHIVED + _NUM.pack(lo), (self.archived & part).serialize(), db=db)
        txn.put(WATERMARK, _NUM.pack(upto), db=db)

    def checkpoint_done(self) -> None:
        """The checkpoint's transaction committed."""
        self.checkpointed_upto = self.visible_upto
        self._dirty_fields.clear()
        self._dirty_numbers.clear()
        self._dirty_archived = False

    def checkpoint_failed(self) -> None:
        """The checkpoint's transaction did not commit: its dictionary writes are undone."""
        for name, (persisted, merged) in self._saved_dictionaries.items():
            self.fields[name].persisted_values = persisted
            self.fields[name].merged_values = merged

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

    # -- opening ------------------------------------------------------------------------

    def load(self, txn: lmdb.Transaction, db: Any) -> int:
        """Read the persisted records; returns the watermark (the caller replays the log
        from there with `add`)."""
        raw_watermark = txn.get(WATERMARK, db=db)
        upto = 0 if raw_watermark is None else _NUM.unpack(raw_watermark)[0]
        dictionaries: dict[str, list[tuple[int, list[Any]]]] = {}
        for raw_key, raw_value in txn.cursor(db=db):
            raw_key = bytes(raw_key)
            kind = raw_key[:1]
            if kind == WATERMARK:
                continue
            if kind == ARCHIVED:
                self.archived |= BitMap.deserialize(bytes(raw_value))
                continue
            name = raw_key[1:-9].decode()
            number = _NUM.unpack(raw_key[-8:])[0]
            if kind == CODES:
                index = self.fields.get(name) or self.fields.setdefault(name, FieldIndex(name))
                index.ensure_size(upto)
                codes = np.frombuffer(raw_value, dtype=np.uint32)[: max(0, upto - number)]
                index.codes[number : number + len(codes)] = codes
            elif kind == NUMBERS:
                column = self.number_column(name, upto)
                values = np.frombuffer(raw_value, dtype=np.float64)[: max(0, upto - number)]
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
        self.archived.remove_range(upto, 1 << 32)
        self.visible_upto = self.checkpointed_upto = upto
        return upto

"""One session store in memory: its live documents, their order of last update, and
what goes to LMDB for each change.

Layout, chosen for memory (100,000 live sessions should cost well under 2 KiB each):

- a session lives in a *slot*; per slot the client's document as msgpack bytes (without
  the server's `_m1` part), the client IP, lastUpdated / created (epoch ms), a geo
  entry shared by every session from the same place (`GeoTable`), and a generation;
- `_ids` maps session id -> slot and is kept in order of last update (an OrderedDict:
  each upsert moves its session to the end), so the sessions whose deadline passed are
  always at the front: the flusher pops them without looking at the others, and a tick
  with none due costs one comparison per store;
- freed slots are reused, so the query index (index.py) keeps one row per slot and never
  grows with the number of updates.

Durability: each live session is one LMDB record in the `sessions` database, keyed by
store name and generation (a number given to each new incarnation of a session id), so
the flusher's delete of a lapsed incarnation can never remove a newer one with the same
id. The record holds everything `load` needs to rebuild the store after a restart.
Every change is applied here first (on the event loop, in request order) and handed to
the writer as ops, which commit in the same order, in group commits with the events.

Only the event loop mutates a store. The query side reads it from a worker thread:
the slots changed since its last refresh are in `_dirty` (a set swapped under a lock).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lmdb
import msgspec
import numpy as np

from m1lite.errors import BadRequest, PayloadTooLarge
from m1lite.flatten import flatten
from m1lite.sessions.documents import Delete, Op, deep_merge, get_path, id_text
from m1lite.storage.writer import Op as WriterOp
from m1lite.stores import SessionStoreDef

log = logging.getLogger("m1lite.sessions")

SESSIONS_DB = "sessions"
GEO_PREFIX = "_m1.geo."
_GEN = struct.Struct(">Q")
_FORMAT = 1  # first element of every stored record
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
# Addresses whose packed geo is remembered: enough for the busiest networks; bounded, as
# each entry keeps a flat geo dict alive (the enricher caches those for its own use).
_GEO_CACHE_MAX = 4_096


def record_key(store: str, generation: int) -> bytes:
    return store.encode() + b"\x00" + _GEN.pack(generation)


class GeoTable:
    """`_m1.geo` objects, interned and reference-counted: the sessions from one network
    share one entry (id 0 = no geo), and an entry no live session uses is freed.

    An entry is kept only as msgpack (about 500 bytes for GeoLite2's 23 fields) and
    decoded when a document or the query index needs it. `lookup` is the enricher's
    `geo_fields(ip)` (flat `_m1.geo.*`, cached per IP, empty while geo is off); the dict it
    returns for an IP is remembered by identity for the most frequent addresses, so the
    common case costs two dict lookups (otherwise a few microseconds of encoding)."""

    def __init__(self, lookup: Callable[[str], dict[str, Any]]) -> None:
        self._lookup = lookup
        self._packed: list[bytes | None] = [None]  # id -> the entry
        self._refs: list[int] = [0]  # id -> live sessions using it
        self._ids: dict[bytes, int] = {}
        self._free: list[int] = []
        self._seen: dict[int, tuple[dict[str, Any], bytes]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def for_ip(self, ip: str) -> bytes | None:
        """The packed `_m1.geo` of an address (not yet referenced: see `acquire`)."""
        flat = self._lookup(ip)
        if not flat:
            return None
        seen = self._seen.get(id(flat))
        if seen is not None and seen[0] is flat:
            return seen[1]
        packed = _encode({name[len(GEO_PREFIX) :]: value for name, value in flat.items()})
        if len(self._seen) >= _GEO_CACHE_MAX:
            self._seen.clear()
        self._seen[id(flat)] = (flat, packed)  # holding `flat` keeps its id from reuse
        return packed

    def acquire(self, packed: bytes | None) -> int:
        """The id of an entry, counting one more session that uses it."""
        if packed is None:
            return 0
        geo_id = self._ids.get(packed)
        if geo_id is None:
            if self._free:
                geo_id = self._free.pop()
                self._packed[geo_id] = packed
            else:
                geo_id = len(self._packed)
                self._packed.append(packed)
                self._refs.append(0)
            self._ids[packed] = geo_id
        self._refs[geo_id] += 1
        return geo_id

    def release(self, geo_id: int) -> None:
        if geo_id == 0:
            return
        self._refs[geo_id] -= 1
        if self._refs[geo_id] == 0:
            packed = self._packed[geo_id]
            assert packed is not None
            del self._ids[packed]
            self._packed[geo_id] = None
            self._free.append(geo_id)

    def packed(self, geo_id: int) -> bytes | None:
        return self._packed[geo_id]

    def nested(self, geo_id: int) -> dict[str, Any] | None:
        """A fresh decoded copy of an entry."""
        packed = self._packed[geo_id]
        if packed is None:
            return None
        nested: dict[str, Any] = _decode(packed)
        return nested

    def flat(self, geo_id: int) -> dict[str, Any]:
        nested = self.nested(geo_id)
        if not nested:
            return {}
        return {GEO_PREFIX + name: value for name, value in nested.items()}


def stamped(
    doc: dict[str, Any],
    ip: str | None,
    last_ms: int,
    created_ms: int,
    geo: dict[str, Any] | None,
) -> dict[str, Any]:
    """A client document with the server's `_m1` part added (modified and returned)."""
    stamp: dict[str, Any] = {"ip": ip, "receivedUTC": last_ms}
    if geo is not None:
        stamp["geo"] = geo
    stamp["session"] = {"lastUpdated": last_ms, "created": created_ms}
    doc["_m1"] = stamp
    return doc


@dataclass(slots=True)
class Lapsed:
    """A session taken out of the store for flushing."""

    session_id: str
    generation: int
    packed: bytes  # the client document, msgpack
    ip: str | None
    geo: dict[str, Any] | None
    last_ms: int
    created_ms: int

    def document(self) -> dict[str, Any]:
        """A fresh copy of the nested document, with `_m1`."""
        return stamped(_decode(self.packed), self.ip, self.last_ms, self.created_ms, self.geo)


@dataclass(slots=True)
class _Staged:
    doc: dict[str, Any] | None  # None: deleted
    fresh: bool  # deleted earlier in the same request: an upsert starts a new incarnation


class SessionStore:
    def __init__(
        self,
        definition: SessionStoreDef,
        geo: GeoTable,
        *,
        max_depth: int,
        max_properties: int,
    ) -> None:
        self.definition = definition
        self.name = definition.name
        self.key = definition.key
        self._geo = geo
        self.max_depth = max_depth
        self.max_properties = max_properties
        self._ids: OrderedDict[str, int] = OrderedDict()  # least recently updated first
        self._slot_ids: list[str | None] = []
        self._docs: list[bytes | None] = []
        self._ips: list[str | None] = []
        self._last = np.zeros(0, dtype=np.int64)
        self._created = np.zeros(0, dtype=np.int64)
        self._generation = np.zeros(0, dtype=np.int64)
        self._geo_ids = np.zeros(0, dtype=np.int32)
        self._free: list[int] = []
        self._next_generation = 1
        self._orphans: list[Lapsed] = []  # taken out of the order, to flush at once
        self._dirty: set[int] = set()
        self._dirty_lock = threading.Lock()

    # -- reading ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def slots(self) -> int:
        """Slots ever allocated: the query index's row count."""
        return len(self._slot_ids)

    def generation_at(self, slot: int) -> int:
        """The generation living in a slot, 0 when the slot is free."""
        if slot >= len(self._slot_ids) or self._slot_ids[slot] is None:
            return 0
        return int(self._generation[slot])

    def document(self, slot: int) -> dict[str, Any] | None:
        """The nested document of the session in a slot, with its `_m1` stamp."""
        packed = self._docs[slot] if slot < len(self._docs) else None
        if packed is None:
            return None
        return stamped(
            _decode(packed),
            self._ips[slot],
            int(self._last[slot]),
            int(self._created[slot]),
            self._geo.nested(int(self._geo_ids[slot])),
        )

    def flat_row(self, slot: int) -> dict[str, Any] | None:
        """The client's document in a slot, flattened (the query index adds the `_m1`
        stamps in bulk, see `stamps`); None if the slot is free."""
        packed = self._docs[slot] if slot < len(self._docs) else None
        if packed is None:
            return None
        return flatten(_decode(packed), self.max_depth + 8)

    def stamps(
        self, slots: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
        """lastUpdated, created, geo id and IP of slots, as arrays (one read each)."""
        last, created, geo_ids = self._last, self._created, self._geo_ids
        ips = self._ips
        return last[slots], created[slots], geo_ids[slots], [ips[slot] for slot in slots]

    def geo_fields(self, geo_id: int) -> dict[str, Any]:
        """The flat `_m1.geo.*` fields of a geo entry."""
        return self._geo.flat(geo_id)

    def take_dirty(self) -> list[int]:
        """The slots changed since the last call (for the query index)."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        return sorted(dirty)

    def mark_all_dirty(self) -> None:
        with self._dirty_lock:
            self._dirty.update(range(len(self._slot_ids)))

    # -- changing (event loop only) -----------------------------------------------

    def update(self, ops: list[Op], client_ip: str, now_ms: int) -> list[WriterOp]:
        """Apply a request's ops (all or nothing: every merge is computed and checked
        before anything changes) and return the LMDB ops that make them durable."""
        staged: dict[str, _Staged] = {}
        for op in ops:
            current = staged.get(op.session_id)
            if isinstance(op, Delete):
                staged[op.session_id] = _Staged(None, True)
                continue
            if current is None:
                base = self._current(op.session_id)
                current = staged[op.session_id] = _Staged(base, False)
            elif current.doc is None:
                current.doc = {}
            assert current.doc is not None
            deep_merge(current.doc, op.patch)
        packed: dict[str, bytes] = {}
        for session_id, change in staged.items():
            if change.doc is not None:
                packed[session_id] = self._pack(change.doc, session_id)
        geo = self._geo.for_ip(client_ip)
        writes: list[WriterOp] = []
        for session_id, change in staged.items():
            slot = self._ids.get(session_id)
            if slot is not None and (change.doc is None or change.fresh):
                writes.append((SESSIONS_DB, self._key(slot), None))
                self._remove(slot, session_id)
                slot = None
            if change.doc is None:
                continue
            if slot is None:
                slot = self._allocate(session_id, now_ms)
            else:
                self._ids.move_to_end(session_id)
            self._set(slot, packed[session_id], client_ip, now_ms, geo)
            writes.append((SESSIONS_DB, self._key(slot), self._record(slot)))
        return writes

    def _current(self, session_id: str) -> dict[str, Any]:
        slot = self._ids.get(session_id)
        if slot is None:
            return {}
        packed = self._docs[slot]
        assert packed is not None
        doc: dict[str, Any] = _decode(packed)
        return doc

    def _pack(self, doc: dict[str, Any], session_id: str) -> bytes:
        count = len(flatten(doc, self.max_depth))
        if count > self.max_properties:
            raise PayloadTooLarge(
                f"session {session_id} would have {count} properties; at most "
                f"{self.max_properties} are accepted",
                code="too_many_properties",
            )
        try:
            return _encode(doc)
        except OverflowError:
            raise BadRequest(
                f"session {session_id} holds an integer that does not fit in 64 bits "
                "(send it as a string or a float)",
                code="integer_out_of_range",
            ) from None

    def _key(self, slot: int) -> bytes:
        return record_key(self.name, int(self._generation[slot]))

    def _record(self, slot: int) -> bytes:
        """The LMDB value: everything `load` needs, the document as the bytes we hold."""
        return _encode(
            [
                _FORMAT,
                self._ips[slot],
                int(self._last[slot]),
                int(self._created[slot]),
                self._geo.packed(int(self._geo_ids[slot])),
                self._docs[slot],
            ]
        )

    def _allocate(self, session_id: str, now_ms: int, generation: int | None = None) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._slot_ids)
            self._slot_ids.append(None)
            self._docs.append(None)
            self._ips.append(None)
            if slot >= len(self._last):
                self._grow(max(1024, 2 * len(self._last)))
        if generation is None:
            generation = self._next_generation
            self._next_generation += 1
        self._slot_ids[slot] = session_id
        self._generation[slot] = generation
        self._created[slot] = now_ms
        self._ids[session_id] = slot
        return slot

    def _grow(self, size: int) -> None:
        # New arrays are filled, then swapped in: a reader thread sees old or new, whole.
        for name in ("_last", "_created", "_generation", "_geo_ids"):
            old = getattr(self, name)
            grown = np.zeros(size, dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def _remove(self, slot: int, session_id: str) -> None:
        del self._ids[session_id]
        self._slot_ids[slot] = None
        self._docs[slot] = None
        self._ips[slot] = None
        self._geo.release(int(self._geo_ids[slot]))
        self._geo_ids[slot] = 0
        self._free.append(slot)
        self._mark(slot)

    def _mark(self, slot: int) -> None:
        with self._dirty_lock:
            self._dirty.add(slot)

    # -- flushing -------------------------------------------------------------------

    def take_lapsed(self, cutoff_ms: int, limit: int) -> list[Lapsed]:
        """Remove and return up to `limit` sessions last updated before `cutoff_ms`,
        oldest first (after any stale incarnation `load` found or `restore` put aside)."""
        taken = self._orphans[:limit]
        del self._orphans[: len(taken)]
        ids = self._ids
        while ids and len(taken) < limit:
            session_id, slot = next(iter(ids.items()))
            if int(self._last[slot]) >= cutoff_ms:
                break
            packed = self._docs[slot]
            assert packed is not None
            taken.append(
                Lapsed(
                    session_id,
                    int(self._generation[slot]),
                    packed,
                    self._ips[slot],
                    self._geo.nested(int(self._geo_ids[slot])),
                    int(self._last[slot]),
                    int(self._created[slot]),
                )
            )
            self._remove(slot, session_id)
        return taken

    def restore(self, lapsed: Lapsed) -> None:
        """Put back a session whose flush did not commit, to be taken again: live as it
        was, at the front of the order; or, when its id came back meanwhile (a newer
        incarnation), aside, to be flushed on its own."""
        if lapsed.session_id in self._ids or not lapsed.session_id:
            self._orphans.append(lapsed)
            return
        slot = self._allocate(lapsed.session_id, lapsed.created_ms, lapsed.generation)
        geo = None if lapsed.geo is None else _encode(lapsed.geo)
        self._set(slot, lapsed.packed, lapsed.ip, lapsed.last_ms, geo)
        self._ids.move_to_end(lapsed.session_id, last=False)

    def _set(
        self, slot: int, packed: bytes, ip: str | None, last_ms: int, geo: bytes | None
    ) -> None:
        self._docs[slot] = packed
        self._ips[slot] = ip
        self._last[slot] = last_ms
        old = int(self._geo_ids[slot])
        self._geo_ids[slot] = self._geo.acquire(geo)
        self._geo.release(old)  # after: an unchanged place keeps its entry
        self._mark(slot)

    # -- rebuilding after a restart -------------------------------------------------

    def load(self, txn: lmdb.Transaction, db: Any) -> int:
        """Rebuild from this store's LMDB records; returns how many were read.

        An id found twice (an incarnation whose flush had not committed when the server
        stopped, and a newer one) keeps the newest live and flushes the older at once."""
        found: list[tuple[Lapsed, bytes | None]] = []
        for generation, value in self._records(txn, db):
            try:
                _format, ip, last, created, geo_packed, packed = _decode(value)
                session_id = get_path(_decode(packed), self.key)
                geo = None if geo_packed is None else _decode(geo_packed)
            except (msgspec.DecodeError, ValueError, TypeError):
                log.error("session store %s: unreadable record %d skipped", self.name, generation)
                continue
            try:
                text = id_text(session_id, self.key)
            except BadRequest:
                text = ""  # cannot be live without an id; flushed at once
            lapsed = Lapsed(text, generation, packed, ip, geo, last, created)
            found.append((lapsed, geo_packed))
            self._next_generation = max(self._next_generation, generation + 1)
        newest: dict[str, int] = {}
        for lapsed, _geo_packed in found:
            newest[lapsed.session_id] = max(newest.get(lapsed.session_id, 0), lapsed.generation)
        found.sort(key=lambda entry: entry[0].last_ms)  # the flusher's order
        for lapsed, geo_packed in found:
            if not lapsed.session_id or newest[lapsed.session_id] != lapsed.generation:
                self._orphans.append(lapsed)
                continue
            slot = self._allocate(lapsed.session_id, lapsed.created_ms, lapsed.generation)
            self._set(slot, lapsed.packed, lapsed.ip, lapsed.last_ms, geo_packed)
        return len(found)

    def _records(self, txn: lmdb.Transaction, db: Any) -> Iterator[tuple[int, bytes]]:
        prefix = self.name.encode() + b"\x00"
        cursor = txn.cursor(db=db)
        if not cursor.set_range(prefix):
            return
        for raw_key, value in cursor:
            raw_key = bytes(raw_key)
            if not raw_key.startswith(prefix):
                break
            if len(raw_key) != len(prefix) + _GEN.size:
                continue
            yield _GEN.unpack(raw_key[len(prefix) :])[0], bytes(value)

"""The query side of a session store: an m1lite `Index` whose rows are the store's
slots, updated in place, so `/query`'s executor, sorting and facets run unchanged.

Why an index and not a predicate over the documents: `/session/query` must answer
"how many visitors are on the site now" and facet them by page or country at once with
100,000 live sessions; a per-query pass over every document in Python costs a good part
of a second, while the index answers from bitmaps and columns. And by reusing the
`/query` machinery, the session query language and facets are `/query`'s, not a
look-alike.

How it stays current: upserts only mark their slot dirty (the event loop never waits
for the index). A query first re-indexes the dirty slots (`refresh`), under the index's
lock, in a worker thread: each slot's old values are cleared from every column (and
from the postings built so far) and its current flattened document is indexed in
their place. Between queries nothing is spent on indexing, and a session updated many
times between two queries is indexed once. The `live` bitmap (occupied slots) is the
query domain. When a field's dictionary holds far more values than the live rows use
(a unique-per-update field such as `event.id` leaves one dead value per update), it is
rebuilt with only the used values.

One lock per store: queries of one store run one at a time, so nothing reads the
columns while a refresh rewrites rows in place. (The event index's readers rely on rows
below `visible_upto` never changing; here the lock takes that role.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyroaring import BitMap

from m1lite.query.ast import Node
from m1lite.query.execute import QueryContext, execute
from m1lite.query.facets import FacetRequest, run_facets
from m1lite.query.results import SortSpec, page_keys
from m1lite.query.stats import forget_extras
from m1lite.schema import Schema, parse_date_ms
from m1lite.sessions.store import SessionStore
from m1lite.storage.index import FieldIndex, FieldValues, Index, indexable_name

REFRESH_CHUNK = 4_096  # rows flattened and indexed at a time
COMPACT_SLACK = 4_096  # dead dictionary values tolerated beyond twice the live rows
REBUILD_POSTINGS_AT = 2_048  # changed rows above which postings are dropped, not edited
# The server's stamps are epoch ms: declared dates here, so date math works on them.
STAMP_DATES = frozenset({"_m1.receivedUTC", "_m1.session.lastUpdated", "_m1.session.created"})


Kinds = tuple[frozenset[str], frozenset[str]]  # (date fields, text fields)


def with_stamps(kinds: Kinds) -> Kinds:
    return kinds[0] | STAMP_DATES, kinds[1]


@dataclass(slots=True)
class SessionQuery:
    query: Node
    filters: list[Node]
    sort: SortSpec
    start: int
    rows: int
    facet: FacetRequest | None


@dataclass(slots=True)
class SessionAnswer:
    count: int
    page: list[tuple[int, int]]  # (slot, generation) in order
    facets: dict[str, Any] | None


class SessionIndex(Index):
    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.store = store
        self.live = BitMap()
        self.generations = np.zeros(0, dtype=np.int64)  # per row: the incarnation indexed
        self.lock = threading.Lock()
        self.last_used = 0.0  # monotonic time of the last query (the flusher keeps it warm)
        self._kinds: Kinds | None = None

    # -- keeping up with the store (under `lock`) ------------------------------------

    def warm(self, kinds: Kinds) -> None:
        """Refresh unless a query is doing it already."""
        if self.lock.acquire(blocking=False):
            try:
                self.refresh(kinds)
            finally:
                self.lock.release()

    def refresh(self, kinds: Kinds) -> int:
        """Re-index the slots changed since the last refresh; returns how many.
        `kinds`: the schema's (date, text) fields. Hold `lock`."""
        kinds = with_stamps(kinds)
        if kinds != self._kinds:
            # The schema's dates or texts changed: every row is indexed anew.
            if self._kinds is not None:
                self.store.mark_all_dirty()
            self._kinds = kinds
        slots = self.store.take_dirty()
        if not slots:
            return 0
        size = self.store.slots
        if len(self.generations) < size:
            grown = np.zeros(max(size, 2 * len(self.generations), 1024), dtype=np.int64)
            grown[: len(self.generations)] = self.generations
            self.generations = grown
        self.visible_upto = max(self.visible_upto, size)
        if len(slots) > max(REBUILD_POSTINGS_AT, len(self.live) // 16):
            # Many rows change: cheaper to drop the postings (a query that needs them
            # rebuilds them from the codes at numpy speed) than to edit them row by row.
            for index in self.fields.values():
                with index.lock:
                    index.postings = None
        # In chunks: the flattened rows of one chunk at a time are all that is held.
        for first in range(0, len(slots), REFRESH_CHUNK):
            self._refresh_rows(slots[first : first + REFRESH_CHUNK], kinds)
        self._compact_dictionaries()
        forget_extras(self)  # cached extras assume rows never change; here they do
        self._dirty_fields.clear()
        self._dirty_numbers.clear()
        return len(slots)

    def _refresh_rows(self, slots: list[int], kinds: Kinds) -> None:
        store = self.store
        # The generation is read before the row: if the slot changes in between, it is
        # dirty again and the next refresh corrects it.
        rows: list[tuple[int, dict[str, Any]]] = []
        for slot in slots:
            generation = store.generation_at(slot)
            row = store.flat_row(slot) if generation else None
            if row is None:
                self.live.discard(slot)
                self.generations[slot] = 0
            else:
                self.live.add(slot)
                self.generations[slot] = generation
                rows.append((slot, row))
        self._clear(slots)
        if rows:
            self._put(rows, kinds)

    def _clear(self, slots: list[int]) -> None:
        keys = np.asarray(slots, dtype=np.int64)
        for index in self.fields.values():
            inside = keys[keys < len(index.codes)]
            old = index.codes[inside]
            if index.postings is not None or index.extras:
                with index.lock:
                    postings = index.postings
                    if postings is not None:
                        present = old != 0
                        for slot, code in zip(
                            inside[present].tolist(), old[present].tolist(), strict=True
                        ):
                            postings[code - 1].discard(slot)
                    if index.extras:
                        for slot in slots:
                            more = index.extras.pop(slot, None)
                            if more and postings is not None:
                                for value_id in more:
                                    postings[value_id].discard(slot)
            index.codes[inside] = 0
        for name, column in self.numbers.items():
            column[keys[keys < len(column)]] = np.nan
            extras = self.number_extras.get(name)
            if extras:
                for slot in slots:
                    extras.pop(slot, None)

    def _put(self, rows: list[tuple[int, dict[str, Any]]], kinds: Kinds) -> None:
        """Index rows at their slots (cleared before): the client's fields grouped by
        field as `Index.add` does, the server's stamps and geo fields in bulk."""
        date_fields, text_fields = kinds
        size = self.visible_upto
        values = FieldValues()
        values.collect(rows)
        keys = [key for key, _row in rows]
        slots = np.asarray(keys, dtype=np.int64)
        last, created, geo_ids, ips = self.store.stamps(slots)
        for name, column in (
            ("_m1.receivedUTC", last),
            ("_m1.session.lastUpdated", last),
            ("_m1.session.created", created),
        ):
            values.numbers.pop(name, None)  # a client field of that name cannot exist (`_m1*`)
            self.number_column(name, size)[slots] = column
        values.strings["_m1.ip"] = (keys, [ip or "" for ip in ips])
        # Sessions from one place share their geo fields: one list extension per field
        # and place, not one per field and session.
        order = np.argsort(geo_ids, kind="stable")
        grouped = geo_ids[order]
        firsts = np.flatnonzero(np.diff(grouped, prepend=-1))
        for first, stop in zip(firsts.tolist(), [*firsts[1:].tolist(), len(order)], strict=True):
            geo_id = int(grouped[first])
            if geo_id == 0:
                continue
            members = slots[order[first:stop]].tolist()
            for name, value in self.store.geo_fields(geo_id).items():
                if type(value) is bool and indexable_name(name):
                    self._put_shared_bool(name, members, value, size)
                else:
                    values.extend(name, members, value)
        self.add_values(
            values, size, date_fields=date_fields, text_fields=text_fields, date_ms=parse_date_ms
        )

    def _put_shared_bool(self, name: str, keys: list[int], value: bool, size: int) -> None:
        """A boolean every one of `keys` holds (a geo flag), in one column write."""
        index = self.fields.get(name)
        if index is None:
            index = self.fields[name] = FieldIndex(name)
        value_id = index.intern(value)
        index.ensure_size(size)
        index.set_codes(keys, np.full(len(keys), value_id, dtype=np.uint32))

    def _compact_dictionaries(self) -> None:
        limit = 2 * len(self.live) + COMPACT_SLACK
        for name, index in list(self.fields.items()):
            if len(index.values) > limit:
                self.fields[name] = _compacted(index, self.visible_upto)

    # -- answering ----------------------------------------------------------------------

    def run(
        self,
        request: SessionQuery,
        *,
        schema: Schema,
        kinds: Kinds,
        parse: Callable[[str], Node],
        now_ms: int,
    ) -> SessionAnswer:
        with self.lock:
            self.last_used = time.monotonic()
            self.refresh(kinds)
            kinds = with_stamps(kinds)
            ctx = QueryContext(
                self,
                schema,
                kinds[0],
                kinds[1],
                self.visible_upto,
                self.live.copy(),
                now_ms,
                parse,
            )
            keys = execute(request.query, ctx)
            for node in request.filters:
                if not keys:
                    break
                keys &= execute(node, ctx)
            facets = None if request.facet is None else run_facets(request.facet, keys, ctx)
            page = page_keys(keys, request.sort, request.start, request.rows, ctx)
            generations = self.generations
            return SessionAnswer(
                len(keys), [(slot, int(generations[slot])) for slot in page], facets
            )


def _compacted(index: FieldIndex, upto: int) -> FieldIndex:
    """A copy of a field's index holding only the values some row uses, renumbered."""
    used = np.zeros(len(index.values) + 1, dtype=bool)
    used[index.codes[:upto]] = True
    for more in index.extras.values():
        used[np.asarray(more, dtype=np.int64) + 1] = True
    used[0] = False
    kept = np.flatnonzero(used) - 1  # old ids still in use, ascending
    remap = np.zeros(len(index.values) + 1, dtype=np.uint32)
    remap[kept + 1] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    fresh = FieldIndex(index.name)
    values = index.values
    fresh.intern_many([values[i] for i in kept.tolist()])
    fresh.codes = remap[index.codes]
    fresh.extras = {
        key: [int(remap[value_id + 1]) - 1 for value_id in more]
        for key, more in index.extras.items()
    }
    return fresh

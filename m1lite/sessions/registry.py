"""The environment's session stores: created from their definitions, rebuilt from LMDB at
start, updated by `/session/update`, queried by `/session/query`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from m1lite.errors import NotFound
from m1lite.query.ast import MatchAll
from m1lite.query.parser import parse
from m1lite.schema import Schema
from m1lite.sessions.documents import Op
from m1lite.sessions.index import SessionAnswer, SessionIndex, SessionQuery
from m1lite.sessions.store import SESSIONS_DB, GeoTable, SessionStore
from m1lite.storage.env import LakeEnv
from m1lite.storage.writer import Writer
from m1lite.stores import Stores

log = logging.getLogger("m1lite.sessions")


class SessionStores:
    def __init__(
        self,
        stores: Stores,
        lake: LakeEnv,
        writer: Writer,
        schema: Schema,
        *,
        geo_fields: Callable[[str], dict[str, Any]],
        field_kinds: Callable[[], tuple[frozenset[str], frozenset[str]]],
        max_depth: int,
        max_properties: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._definitions = stores
        self._lake = lake
        self.writer = writer
        self.schema = schema
        self.field_kinds = field_kinds
        self.max_depth = max_depth
        self.max_properties = max_properties
        self.clock = clock
        self.geo = GeoTable(geo_fields)
        self._stores: dict[str, SessionStore] = {}
        self._indexes: dict[str, SessionIndex] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def store(self, name: str) -> SessionStore:
        """The named store; stores added by `/orchestrate/addStores` come to life here."""
        found = self._stores.get(name)
        if found is not None:
            return found
        definition = self._definitions.sessions.get(name)
        if definition is None:
            hint = ""
            if name in self._definitions.data:
                hint = f" ({name} is a data store: use /query)"
            raise NotFound(f"no session store named {name}{hint}", code="no_such_store")
        store = SessionStore(
            definition,
            self.geo,
            max_depth=self.max_depth,
            max_properties=self.max_properties,
        )
        self._stores[name] = store
        self._indexes[name] = SessionIndex(store)
        return store

    def index(self, name: str) -> SessionIndex:
        self.store(name)
        return self._indexes[name]

    def __iter__(self) -> Iterator[SessionStore]:
        return iter(list(self._stores.values()))

    def indexes(self) -> list[SessionIndex]:
        return list(self._indexes.values())

    def load(self) -> int:
        """Rebuild every store from LMDB (at start); returns the sessions read."""
        total = 0
        db = self._lake.dbs[SESSIONS_DB]
        with self._lake.read() as txn:
            for name in self._definitions.sessions:
                total += self.store(name).load(txn, db)
        return total

    # -- the endpoints' work -------------------------------------------------------------

    def update(
        self, name: str, ops: list[Op], client_ip: str, *, durable: bool
    ) -> asyncio.Future[list[int]] | None:
        """Apply ops to a store and queue them for LMDB; with durable=True, a future that
        resolves once they are on disk."""
        store = self.store(name)
        # Refused before anything changes (queue full, stopping, storage full): an op
        # makes at most two writes (a new incarnation deletes the old record).
        self.writer.check(2 * len(ops), durable=durable)
        writes = store.update(ops, client_ip, self.now_ms())
        if not writes:
            if not durable:
                return None
            done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return self.writer.submit([], ops=writes, durable=durable)

    def search(self, name: str, request: SessionQuery) -> SessionAnswer:
        """Run a query (in a worker thread: it may re-index and facet)."""
        store = self.store(name)
        if (
            isinstance(request.query, MatchAll)
            and not request.filters
            and not request.rows
            and request.facet is None
        ):
            # "How many visitors are on the site now": the store knows, no index needed.
            return SessionAnswer(len(store), [], None)
        return self.index(name).run(
            request,
            schema=self.schema,
            kinds=self.field_kinds(),
            parse=parse,
            now_ms=self.now_ms(),
        )

    def documents(self, name: str, page: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """The nested documents of a query's page (on the event loop, where the store
        changes, so each is whole); a session gone since the query is left out."""
        store = self.store(name)
        items = []
        for slot, generation in page:
            if store.generation_at(slot) == generation:
                doc = store.document(slot)
                if doc is not None:
                    items.append(doc)
        return items

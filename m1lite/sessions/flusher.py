"""The built-in flusher: every second, lapsed sessions become `sessionTimeout` events.

A session lapses when its `_m1.session.lastUpdated` is more than its store's
`timeoutSeconds` in the past. Each store keeps its sessions in order of last update,
so a tick pops the lapsed ones from the front and stops at the first live one: with
none due, a tick costs one comparison per store, whatever the number of sessions.

Exactly once: a batch of lapsed sessions (at most `FLUSH_BATCH`) is one writer
submission holding their events *and* the deletes of their LMDB records, which the
writer commits in one transaction. Before that commit nothing of the flush exists and
the sessions are still on disk (a restart flushes them again, late); after it, the
events exist and the sessions are gone. If the commit fails, the sessions are put back
and the next tick tries again.

The event is the last session document flattened, with `type` and `event.type` set to
`sessionTimeout`, `session.end` = lastUpdated and `session.durationMs` (see
documents.duration_ms); `_m1.ip` and `_m1.geo.*` are the visitor's (from the last
update), `_m1.receivedUTC` is when the event was written, and `_m1.session.lastUpdated`
and `_m1.session.created` stay as epoch-ms numbers. Schema types are applied
permissively whatever `publish-permissive` says: a session that was accepted must be
flushable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from m1lite.enrich.events import received_utc
from m1lite.flatten import flatten
from m1lite.sessions.documents import to_timeout_event
from m1lite.sessions.registry import SessionStores
from m1lite.sessions.store import SESSIONS_DB, Lapsed, SessionStore, record_key
from m1lite.system import SystemProperties

log = logging.getLogger("m1lite.sessions")

FLUSH_BATCH = 5_000  # sessions per commit
TICK_S = 1.0
WARM_FOR_S = 30.0  # keep a store's query index current this long after its last query


def timeout_record(
    lapsed: Lapsed, received: str, system: SystemProperties, max_depth: int
) -> dict[str, Any]:
    """The flat lake record of a lapsed session's `sessionTimeout` event."""
    doc = to_timeout_event(lapsed.document(), lapsed.last_ms, lapsed.created_ms)
    record = flatten(doc, max_depth + 8)
    record.pop("_m1.receivedUTC", None)  # the session's, in epoch ms; the lake's is ISO
    record[system.property_received] = received
    if lapsed.ip is not None:
        record[system.property_ip] = lapsed.ip
    record["_m1rand"] = random.random()
    return record


class Flusher:
    def __init__(
        self,
        sessions: SessionStores,
        system: SystemProperties,
        *,
        interval_s: float = TICK_S,
        batch: int = FLUSH_BATCH,
    ) -> None:
        self.sessions = sessions
        self.system = system
        self.interval_s = interval_s
        self.batch = batch
        self.flushed = 0
        self._task: asyncio.Task[None] | None = None
        self._warming: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="m1lite-flusher")

    async def stop(self) -> None:
        """Stop ticking. A flush already handed to the writer still commits (the
        writer drains its queue on close)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._warming:
            await asyncio.gather(*self._warming, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:  # a bad tick must not end flushing for good
                log.exception("session flush tick failed")

    # -- one tick ------------------------------------------------------------------

    async def tick(self) -> int:
        """Flush every lapsed session of every store; returns how many were flushed."""
        now_ms = self.sessions.now_ms()
        flushed = 0
        for store in self.sessions:
            cutoff = now_ms - store.definition.timeoutSeconds * 1000
            while True:
                lapsed = store.take_lapsed(cutoff, self.batch)
                if not lapsed:
                    break
                flushed += await self._write(store, lapsed)
                if len(lapsed) < self.batch:
                    break
        self.flushed += flushed
        self._warm()
        return flushed

    async def _write(self, store: SessionStore, lapsed: list[Lapsed]) -> int:
        received = received_utc(self.sessions.clock())
        records = [
            timeout_record(item, received, self.system, self.sessions.max_depth) for item in lapsed
        ]
        schema = self.sessions.schema
        records = [schema.coerce(record, True) for record in records]
        ops = [(SESSIONS_DB, record_key(store.name, item.generation), None) for item in lapsed]
        try:
            future = self.sessions.writer.submit(records, durable=True, ops=ops)
            assert future is not None
            await future
        except Exception as exc:
            log.warning(
                "session store %s: flushing %d sessions failed (%s); retrying",
                store.name,
                len(lapsed),
                exc,
            )
            for item in reversed(lapsed):
                store.restore(item)
            return 0
        return len(lapsed)

    def _warm(self) -> None:
        """Re-index recently queried stores in the background, so the next query finds
        little to do."""
        if self._warming:
            return
        now = time.monotonic()
        kinds = self.sessions.field_kinds()
        for index in self.sessions.indexes():
            if now - index.last_used < WARM_FOR_S:
                task = asyncio.get_running_loop().create_task(asyncio.to_thread(index.warm, kinds))
                self._warming.add(task)
                task.add_done_callback(self._warming.discard)

"""The single writer: group commits of events into the log and its indexes.

Request handlers hand over enriched, flattened records with `submit`. One thread
takes everything queued, assigns `_m1key`s, appends the msgpack records to the
log, stages and persists the index changes in the same LMDB transaction, commits
(fsync), applies the index changes to memory, and only then resolves the futures
of `async=false` requests. So an acknowledged key is durable and visible.

Async batches linger up to `group_commit_s` so that many events share one fsync;
a batch holding a durable waiter commits at once (the fsync in progress is the
natural batching window).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lmdb
import msgspec

from m1lite.errors import StorageFull, Unavailable
from m1lite.storage.env import LakeEnv
from m1lite.storage.index import Index

log = logging.getLogger("m1lite.writer")

KEY = struct.Struct(">Q")
MAX_BATCH_EVENTS = 20_000
_encode = msgspec.msgpack.Encoder().encode


@dataclass(slots=True)
class _Submission:
    records: list[dict[str, Any]]
    published: bool
    future: asyncio.Future[list[int]] | None
    loop: asyncio.AbstractEventLoop | None


class Writer:
    def __init__(
        self,
        lake: LakeEnv,
        index: Index,
        *,
        next_key: int,
        field_kind: Callable[[str], str | None],
        date_ms: Callable[[Any], int | None],
        group_commit_s: float = 0.05,
        max_queue_events: int = 200_000,
    ) -> None:
        self._lake = lake
        self._index = index
        self._field_kind = field_kind
        self._date_ms = date_ms
        self.group_commit_s = group_commit_s
        self.max_queue_events = max_queue_events
        self.next_key = next_key
        self._queue: deque[_Submission] = deque()
        self._queued_events = 0
        self._durable_waiting = 0
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.storage_full = False
        self.commits = 0
        self.committed_events = 0

    # -- the request side ----------------------------------------------------

    def submit(
        self, records: list[dict[str, Any]], *, published: bool = True, durable: bool = False
    ) -> asyncio.Future[list[int]] | None:
        """Queue records; with durable=True, return a future of their `_m1key`s."""
        if self.storage_full:
            raise StorageFull("storage is full: the event log cannot grow; nothing was stored")
        if not self._running:
            raise Unavailable("the server is shutting down; nothing was stored")
        if self._queued_events + len(records) > self.max_queue_events:
            raise Unavailable("the write queue is full; retry shortly", code="queue_full")
        future: asyncio.Future[list[int]] | None = None
        loop = None
        if durable:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
        with self._cond:
            self._queue.append(_Submission(records, published, future, loop))
            self._queued_events += len(records)
            if durable:
                self._durable_waiting += 1
            self._cond.notify()
        return future

    @property
    def queued_events(self) -> int:
        return self._queued_events

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="m1lite-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Refuse new events, commit everything queued, then return."""
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # -- the writer thread ------------------------------------------------------

    def _take_batch(self) -> list[_Submission] | None:
        with self._cond:
            while not self._queue and self._running:
                self._cond.wait()
            if not self._queue:
                return None  # stopped and drained
            deadline = time.monotonic() + self.group_commit_s
            while (
                self._running
                and not self._durable_waiting
                and self._queued_events < MAX_BATCH_EVENTS
                and (remaining := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(remaining)
            batch: list[_Submission] = []
            taken = 0
            while self._queue and taken < MAX_BATCH_EVENTS:
                submission = self._queue.popleft()
                batch.append(submission)
                taken += len(submission.records)
                if submission.future is not None:
                    self._durable_waiting -= 1
            self._queued_events -= taken
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._commit_with_growth(batch)
            except Exception as exc:  # never let the writer thread die silently
                log.exception("commit failed")
                self._fail(batch, exc)

    def _commit_with_growth(self, batch: list[_Submission]) -> None:
        while True:
            try:
                self._commit(batch)
                self.storage_full = False
                return
            except lmdb.MapFullError:
                if self._lake.grow():
                    log.info("LMDB map grown to %d MiB", self._lake.map_size >> 20)
                    continue
                self.storage_full = True
                log.error("storage full at %d MiB; refusing writes", self._lake.map_size >> 20)
                if not self._running:
                    lost = sum(len(s.records) for s in batch if s.future is None)
                    log.error("stopping while full: %d queued async events not stored", lost)
                    self._fail(batch, StorageFull("storage is full"))
                    return
                self._hold_async(batch)
                return

    def _commit(self, batch: list[_Submission]) -> None:
        lake = self._lake
        log_db = lake.dbs["log"]
        key = first_key = self.next_key
        staged = []
        with lake.write() as txn:
            for submission in batch:
                start = key
                for record in submission.records:
                    record["_m1key"] = key
                    txn.put(KEY.pack(key), _encode(record), db=log_db, append=True)
                    key += 1
                staged.append(
                    self._index.stage(
                        start,
                        submission.records,
                        published=submission.published,
                        field_kind=self._field_kind,
                        date_ms=self._date_ms,
                    )
                )
            for part in staged:
                self._index.persist(txn, lake.dbs["postings"], lake.dbs["columns"], part)
        # committed (the context manager commits on a clean exit): now memory, then acks
        for part in staged:
            self._index.apply(part)
        self.next_key = key
        self.commits += 1
        self.committed_events += key - first_key
        key = first_key
        for submission in batch:
            count = len(submission.records)
            if submission.future is not None and submission.loop is not None:
                keys = list(range(key, key + count))
                submission.loop.call_soon_threadsafe(_resolve, submission.future, keys)
            key += count

    def _hold_async(self, batch: list[_Submission]) -> None:
        """Storage is full: durable waiters learn nothing was stored (507); events
        already acknowledged as queued stay queued and are retried."""
        held = []
        for submission in batch:
            if submission.future is not None and submission.loop is not None:
                error = StorageFull("storage is full: nothing of this request was stored")
                submission.loop.call_soon_threadsafe(_reject, submission.future, error)
            else:
                held.append(submission)
        with self._cond:
            self._queue.extendleft(reversed(held))
            self._queued_events += sum(len(s.records) for s in held)
        if held:
            time.sleep(1.0)  # retry later; space may have been freed

    def _fail(self, batch: list[_Submission], exc: Exception) -> None:
        for submission in batch:
            if submission.future is not None and submission.loop is not None:
                error = Unavailable(f"the write could not be committed: {exc}")
                submission.loop.call_soon_threadsafe(_reject, submission.future, error)


def _resolve(future: asyncio.Future[list[int]], keys: list[int]) -> None:
    if not future.done():
        future.set_result(keys)


def _reject(future: asyncio.Future[list[int]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)

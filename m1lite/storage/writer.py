"""The single writer: group commits of events into the log and its indexes.

Request handlers hand over enriched, flattened records with `submit`. One thread
takes everything queued, assigns `_m1key`s, appends the msgpack records to the
log, stages and persists the index changes in the same LMDB transaction, commits
(fsync), applies the index changes to memory, and only then resolves the futures
of `async=false` requests. So an acknowledged key is durable and visible.

Async batches linger up to `group_commit_s` so that many events share one fsync;
a batch holding a durable waiter commits at once (the fsync in progress is the
natural batching window).

A submission may also carry `ops`: puts and deletes in other databases (the session
stores' documents), applied in the same transaction right after the submission's
events, in queue order. So "write these timeout events and remove those sessions"
commits atomically, and a session put queued after a flush of the same session lands
after it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb

from m1lite.errors import ApiError, StorageFull, Unavailable
from m1lite.storage.env import LakeEnv
from m1lite.storage.index import CHUNK_KEYS, Index
from m1lite.storage.log import KEY, encode_record, log_value

log = logging.getLogger("m1lite.writer")

MAX_BATCH_EVENTS = 20_000  # events plus ops per group commit (a bigger submission goes alone)
CHECKPOINT_S = 5.0  # index checkpoints at least this often while events arrive

# (database name, key, value): a put, or with value None a delete (a missing key is fine).
Op = tuple[str, bytes, bytes | None]


@dataclass(slots=True)
class _Submission:
    records: list[dict[str, Any]]
    shared: dict[str, Any]  # fields every record of the submission holds with one value
    encoded: list[bytes]  # the records as msgpack, without `_m1key`
    published: bool
    future: asyncio.Future[list[int]] | None
    loop: asyncio.AbstractEventLoop | None
    ops: Sequence[Op] = ()
    size: int = 0  # events + ops: what the queue and batch bounds count


class Writer:
    def __init__(
        self,
        lake: LakeEnv,
        index: Index,
        *,
        next_key: int,
        field_kinds: Callable[[], tuple[frozenset[str], frozenset[str]]],
        date_ms: Callable[[Any], int | None],
        group_commit_s: float = 0.05,
        max_queue_events: int = 50_000,
    ) -> None:
        self._lake = lake
        self._index = index
        self._field_kinds = field_kinds
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
        self._last_checkpoint = time.monotonic()
        self.commits = 0
        self.committed_events = 0

    # -- the request side ----------------------------------------------------

    def submit(
        self,
        records: list[dict[str, Any]],
        *,
        shared: dict[str, Any] | None = None,
        encoded: list[bytes] | None = None,
        published: bool = True,
        durable: bool = False,
        ops: Sequence[Op] = (),
    ) -> asyncio.Future[list[int]] | None:
        """Queue records (and `ops`, committed with them); with durable=True, return a
        future of their `_m1key`s."""
        if encoded is None:
            encoded = [encode_record(record) for record in records]
        size = len(records) + len(ops)
        future: asyncio.Future[list[int]] | None = None
        loop = None
        if durable:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
        with self._cond:
            # Checked under the lock: `stop` flips `_running` under it too, so a
            # submission either lands before the final drain or is refused; never
            # queued after the writer thread has exited (a lost 204, a hung future).
            refused = self._refusal(size, durable)
            if refused is not None:
                raise refused
            was_empty = not self._queue
            self._queue.append(
                _Submission(records, shared or {}, encoded, published, future, loop, ops, size)
            )
            self._queued_events += size
            if durable:
                self._durable_waiting += 1
            # Wake the writer only when it must act now: a lingering writer woken for
            # every async event takes the GIL just to fall asleep again.
            if was_empty or durable or self._queued_events >= MAX_BATCH_EVENTS:
                self._cond.notify()
        return future

    def check(self, size: int, *, durable: bool) -> None:
        """Raise what `submit` would raise for a submission of `size` events plus ops
        right now (for callers that must know before they change anything)."""
        with self._cond:
            refused = self._refusal(size, durable)
        if refused is not None:
            raise refused

    def _refusal(self, size: int, durable: bool) -> ApiError | None:
        # While full, async events are refused (a 204 would promise what cannot be kept);
        # async=false writes go through and learn the truth, so one can see space return.
        if self.storage_full and not durable:
            return StorageFull("storage is full: the event log cannot grow; nothing was stored")
        if not self._running:
            return Unavailable("the server is shutting down; nothing was stored")
        if self._queued_events + size > self.max_queue_events:
            return Unavailable("the write queue is full; retry shortly", code="queue_full")
        return None

    @property
    def queued_events(self) -> int:
        return self._queued_events

    async def room_for(self, count: int, *, wait_s: float = 2.0) -> None:
        """Back-pressure: wait (up to wait_s) until `count` more events fit in the queue,
        so a burst slows its senders down instead of being refused at once."""
        deadline = time.monotonic() + wait_s
        while self._queued_events + count > self.max_queue_events and self._running:
            if time.monotonic() >= deadline:
                return  # `submit` answers 503
            await asyncio.sleep(0.01)

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
        """The next group to commit; [] when idle and an index checkpoint is due; None
        once stopped and drained."""
        with self._cond:
            while not self._queue and self._running:
                if not self._index.dirty:
                    self._cond.wait()
                    continue
                due = self._last_checkpoint + CHECKPOINT_S - time.monotonic()
                if due <= 0:
                    return []
                self._cond.wait(due)
            if not self._queue:
                return None
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
                taken += submission.size
                if submission.future is not None:
                    self._durable_waiting -= 1
            self._queued_events -= taken
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                self._checkpoint()
                return
            if not batch:
                self._checkpoint()
                continue
            try:
                self._commit_with_growth(batch)
            except Exception as exc:  # never let the writer thread die silently
                if len(batch) == 1:
                    log.exception("commit failed")
                    self._fail(batch, exc)
                    continue
                # Something in one request failed the group commit: commit the requests
                # one by one, so only that one fails, not others' acknowledged events.
                log.exception("group commit failed; retrying its %d requests alone", len(batch))
                for submission in batch:
                    try:
                        self._commit_with_growth([submission])
                    except Exception as alone:
                        log.exception("commit failed")
                        self._fail([submission], alone)

    def _commit_with_growth(self, batch: list[_Submission]) -> None:
        while True:
            seen = self._lake.map_size
            try:
                self._commit(batch)
                self.storage_full = False
                return
            except lmdb.MapFullError:
                if self._lake.grow(seen):
                    log.info("LMDB map grown to %d MiB", self._lake.map_size >> 20)
                    continue
                log.error("storage full at %d MiB; refusing writes", self._lake.map_size >> 20)
                self._storage_exhausted(batch)
                return
            except lmdb.Error as exc:
                if not _is_disk_full(exc):
                    raise
                log.error("disk full (%s); refusing writes", exc)
                self._storage_exhausted(batch)
                return

    def _storage_exhausted(self, batch: list[_Submission]) -> None:
        self.storage_full = True
        if not self._running:
            lost = sum(len(s.records) for s in batch if s.future is None)
            log.error("stopping while full: %d queued async events not stored", lost)
            self._fail(batch, StorageFull("storage is full"))
            return
        self._hold_async(batch)

    def _commit(self, batch: list[_Submission]) -> None:
        lake = self._lake
        log_db = lake.dbs["log"]
        key = first_key = self.next_key
        with lake.write() as txn:
            for submission in batch:
                published = submission.published
                for encoded in submission.encoded:
                    value = log_value(encoded, key, published)
                    txn.put(KEY.pack(key), value, db=log_db, append=True)
                    key += 1
                for name, op_key, op_value in submission.ops:
                    if op_value is None:
                        txn.delete(op_key, db=lake.dbs[name])
                    else:
                        txn.put(op_key, op_value, db=lake.dbs[name])
        # Committed (the context manager commits on a clean exit): index, then acknowledge.
        self.next_key = key
        self.commits += 1
        self.committed_events += key - first_key
        date_fields, text_fields = self._field_kinds()
        try:
            self._index.add(
                first_key,
                [(s.records, s.shared, s.published) for s in batch],
                date_fields=date_fields,
                text_fields=text_fields,
                date_ms=self._date_ms,
            )
        except Exception:  # the events are safe in the log; `m1lite reindex` rebuilds
            log.exception("indexing keys %d..%d failed; run m1lite reindex", first_key, key - 1)
            self._index.visible_upto = max(self._index.visible_upto, key)
        key = first_key
        for submission in batch:
            count = len(submission.records)
            _settle(submission, list(range(key, key + count)))
            key += count
        index = self._index
        chunk_closed = index.checkpointed_upto // CHUNK_KEYS < index.visible_upto // CHUNK_KEYS
        if chunk_closed or time.monotonic() - self._last_checkpoint >= CHECKPOINT_S:
            try:
                self._checkpoint()
            except Exception:
                # Never out of here: `_run` would take it for a failed commit and commit
                # the batch again (its events twice, a session flush twice).
                log.exception("index checkpoint failed (the log has the events)")

    def _checkpoint(self) -> None:
        """Persist the in-memory index up to what is visible (see storage/index.py)."""
        self._last_checkpoint = time.monotonic()
        if not self._index.dirty:
            return
        for _attempt in range(8):
            seen = self._lake.map_size
            try:
                with self._lake.write() as txn:
                    self._index.checkpoint(txn, self._lake.dbs["index"])
            except lmdb.MapFullError:
                self._index.checkpoint_failed()
                if self._lake.grow(seen):
                    continue
                log.error("index checkpoint skipped: storage full (the log has the events)")
                return
            except lmdb.Error:
                self._index.checkpoint_failed()
                log.exception("index checkpoint failed (the log has the events)")
                return
            self._index.checkpoint_done()
            return

    def _hold_async(self, batch: list[_Submission]) -> None:
        """Storage is full: durable waiters learn nothing was stored (507); events
        already acknowledged as queued stay queued and are retried."""
        held = []
        for submission in batch:
            if submission.future is not None:
                _settle(
                    submission, StorageFull("storage is full: nothing of this request was stored")
                )
            else:
                held.append(submission)
        with self._cond:
            self._queue.extendleft(reversed(held))
            self._queued_events += sum(s.size for s in held)
        if held:
            # Retry later (space may have been freed); `stop` wakes this at once.
            with self._cond:
                self._cond.wait_for(lambda: not self._running, timeout=1.0)

    def _fail(self, batch: list[_Submission], exc: Exception) -> None:
        for submission in batch:
            _settle(submission, Unavailable(f"the write could not be committed: {exc}"))


def _is_disk_full(exc: lmdb.Error) -> bool:
    """ENOSPC/EDQUOT (or the EIO a failed flush reports after them) from a commit: the
    disk, not the map, is the problem; hold the events and retry, never drop them."""
    text = str(exc)
    return any(s in text for s in ("No space left", "Disk quota", "Input/output error"))


def _settle(submission: _Submission, outcome: list[int] | Exception) -> None:
    """Hand a durable waiter its keys or its error, on its own event loop.

    The loop may be closed already (its request gone, the server stopping); that
    must not raise here, in the writer thread, or the thread dies with events queued.
    """
    if submission.future is None or submission.loop is None:
        return
    try:
        if isinstance(outcome, Exception):
            submission.loop.call_soon_threadsafe(_reject, submission.future, outcome)
        else:
            submission.loop.call_soon_threadsafe(_resolve, submission.future, outcome)
    except RuntimeError:
        log.warning("a durable writer's event loop closed before its answer")


def _resolve(future: asyncio.Future[list[int]], keys: list[int]) -> None:
    if not future.done():
        future.set_result(keys)


def _reject(future: asyncio.Future[list[int]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)

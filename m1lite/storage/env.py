"""Opening the data directory: the one-server lock and the LMDB environment.

All durable state lives in one LMDB environment (`DATA/lake`), in named databases:
`log` (the append-only event log), `index` (the derived indexes),
`meta` (users, tokens, system properties, schema, stores) and `sessions`.
One environment means one transaction can cover the log and its indexes.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import lmdb

MIB = 1024 * 1024
DB_NAMES = ("log", "index", "meta", "sessions")


class DataDirLocked(RuntimeError):
    """Another m1lite process serves this data directory."""


class DataDirLock:
    """An exclusive flock on DATA/m1lite.lock, held for the life of the server.

    flock is released by the kernel when the process dies, so a crash never
    leaves a stale lock behind.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "m1lite.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the server's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataDirLocked(
                f"data directory {self.path.parent} is in use by {holder}; "
                "one m1lite server per data directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"m1lite pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class LakeEnv:
    """The LMDB environment plus the map-size growth policy.

    LMDB only lets the map grow while no transaction is open in this process, so
    every transaction holds `_resize` shared and growth takes it exclusively.
    """

    def __init__(self, path: Path, *, map_size_mb: int, max_map_size_mb: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.max_map_bytes = max_map_size_mb * MIB
        self.env = lmdb.open(
            str(path),
            map_size=min(map_size_mb, max_map_size_mb) * MIB,
            max_dbs=len(DB_NAMES) + 2,
            # writemap off: measured faster for durable batches here, and a full disk
            # gives an error instead of SIGBUS.
            writemap=False,
            metasync=True,
            sync=True,
            readahead=False,
            max_readers=256,
        )
        self.dbs = {name: self.env.open_db(name.encode()) for name in DB_NAMES}
        self._resize = _SharedExclusiveLock()

    @property
    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self._resize.shared(reader=True), self.env.begin(buffers=False) as txn:
            yield txn

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction: committed on a clean exit, aborted on an exception."""
        with self._resize.shared(reader=False):
            txn = self.env.begin(write=True)
            try:
                yield txn
            except BaseException:
                # py-lmdb aborts a write transaction only at a moment when no other LMDB
                # call is in flight; readers overlapping back to back (each one counted
                # while it waits for the GIL) can put that moment off forever, hanging
                # the writer on a full map. So new readers wait and current ones finish.
                with self._resize.readers_paused():
                    txn.abort()
                raise
            txn.commit()

    def grow(self, seen: int) -> bool:
        """Double the map (up to the cap) after a transaction begun at map size `seen`
        ran out of room; False when it cannot grow any more.

        When another thread grew the map since `seen`, that growth is the answer (the
        caller retries), so two threads hitting the full map together double it once.
        """
        with self._resize.exclusive():
            current = self.map_size
            if current > seen:
                return True
            if current >= self.max_map_bytes:
                return False
            self.env.set_mapsize(min(current * 2, self.max_map_bytes))
        return True

    def event_count(self) -> int:
        """Records in the log (archived ones included)."""
        with self.read() as txn:
            return int(txn.stat(self.dbs["log"])["entries"])

    def disk_bytes(self) -> int:
        data = Path(self.env.path()) / "data.mdb"
        try:
            return data.stat().st_blocks * 512
        except OSError:
            return 0

    def close(self) -> None:
        self.env.close()


class _SharedExclusiveLock:
    """Many holders in shared mode, or one in exclusive mode (for map growth).

    A waiting exclusive holder goes first: new shared holders queue behind it, so a
    steady stream of overlapping readers cannot starve map growth (and with it every
    write). The price: shared mode is not re-entrant; never open a read or write
    transaction while this thread holds one.

    `readers_paused` is the same idea for shared holders that only read: it holds new
    readers back until the current ones are done (writers are not waited for: one may
    be blocked on LMDB's writer lock, held by the thread that is pausing readers).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._readers = 0
        self._exclusive = False
        self._exclusive_waiting = 0
        self._pausing = 0

    @contextmanager
    def shared(self, *, reader: bool) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._exclusive_waiting or (reader and self._pausing):
                self._cond.wait()
            self._shared += 1
            self._readers += reader
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._readers -= reader
                if self._shared == 0 or self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def readers_paused(self) -> Iterator[None]:
        with self._cond:
            self._pausing += 1
            try:
                while self._readers:
                    self._cond.wait()
            except BaseException:
                self._pausing -= 1
                self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                self._pausing -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

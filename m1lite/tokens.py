"""The token table: one durable row per live token in the meta store, a bounded cache in
front of it, and the purge of expired rows.

Why not a dict of every token: a busy site's browser script logs every visitor tab in,
about 125 logins/s at 10,000 concurrent visitors, so a 24-hour token lifetime means some
ten million live rows. They live in LMDB (`token:<sha256 hex>` → Token), where they were
already written for restarts; memory holds only the most recently used ones (an LRU of
`cache_size` digests). A hit costs a dict lookup; a miss one LMDB point read (a few µs).

Expiry: each row has an index key `token-expires:<expires_ms, 19 digits>:<digest>`,
written in the same transaction, so the purge walks expired rows in expiry order and
costs the number of expired rows, not the size of the table.

Durability: `add` returns once its row is committed (a restart keeps the token). Mints
that arrive while another mint's commit is in flight are committed together by the next
one (group commit), so on a slow-fsync disk logins queue for one commit, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec

from m1lite.storage.meta import MetaStore

log = logging.getLogger("m1lite.auth")

TOKEN_PREFIX = "token:"
EXPIRY_PREFIX = "token-expires:"
# Set once every token row has its expiry key (rows written before the index existed get
# theirs at the first start that finds the marker missing).
INDEX_MARKER = "token-expiry-index"
MAX_EXPIRES_MS = 2**63 - 1  # 19 digits: the expiry keys sort like the numbers
PURGE_BATCH = 10_000  # rows deleted per commit: keeps each write transaction short
DEFAULT_CACHE_SIZE = 65_536


class Token(msgspec.Struct):
    digest: str  # sha256 hex of the token
    username: str
    ip: str  # the client IP it is bound to, or "*"
    expires_ms: int
    # The user's generation when it was minted: a user removed and added again under the
    # same name gets a new one, so the old user's rows (purged only at their expiry) are
    # refused at once. Rows from before generations existed have "" (as do their users).
    generation: str = ""


def expiry_key(expires_ms: int, digest: str) -> str:
    return f"{EXPIRY_PREFIX}{expires_ms:019d}:{digest}"


def encode_row(record: Token) -> list[Any]:
    """A row's value: a msgpack array without the digest (the key holds it); about 300 B
    less on disk per token than the map older versions wrote, which `decode_row` reads."""
    return [record.username, record.ip, record.expires_ms, record.generation]


def decode_row(digest: str, value: Any) -> Token:
    if isinstance(value, list):
        username, ip, expires_ms, generation = value
        return Token(digest, username, ip, expires_ms, generation)
    return msgspec.convert(value, Token)


class _PendingRows:
    """One mint's rows, waiting for a commit (its own or a neighbour's)."""

    __slots__ = ("done", "error", "rows")

    def __init__(self, rows: dict[str, Any]) -> None:
        self.rows = rows
        self.done = False
        self.error: BaseException | None = None


class TokenTable:
    def __init__(self, meta: MetaStore, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._meta = meta
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[str, Token] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pending: list[_PendingRows] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        # Counters for /health and the tests (cheap; read without locks).
        self.disk_lookups = 0
        self.purged = 0
        self.commits = 0
        self.minted = 0
        self._build_expiry_index()

    # -- minting -------------------------------------------------------------------

    def add(self, record: Token) -> None:
        """Store a new token durably; returns once its row is committed."""
        expires = min(record.expires_ms, MAX_EXPIRES_MS)
        if expires != record.expires_ms:
            record = msgspec.structs.replace(record, expires_ms=expires)
        rows = {
            TOKEN_PREFIX + record.digest: encode_row(record),
            expiry_key(record.expires_ms, record.digest): None,
        }
        self._commit(rows)
        self._remember(record)

    def _commit(self, rows: dict[str, Any]) -> None:
        entry = _PendingRows(rows)
        with self._pending_lock:
            self._pending.append(entry)
        with self._commit_lock:
            # A neighbour that held the lock before us may have committed our rows.
            if not entry.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                values: dict[str, Any] = {}
                for pending in batch:
                    values.update(pending.rows)
                try:
                    self._meta.put_many(values)
                    self.commits += 1
                    self.minted += len(batch)
                except BaseException as exc:
                    for pending in batch:
                        pending.error = exc
                    raise
                finally:
                    for pending in batch:
                        pending.done = True
        if entry.error is not None:
            # Nothing of that commit was stored: every mint in it fails alike.
            raise entry.error

    # -- lookups -------------------------------------------------------------------

    def find(self, digest: str) -> Token | None:
        """The row of a token digest: from the cache, else from LMDB (then cached)."""
        with self._cache_lock:
            record = self._cache.get(digest)
            if record is not None:
                self._cache.move_to_end(digest)
                return record
        raw = self._meta.get(TOKEN_PREFIX + digest)
        if raw is None:
            return None  # misses are not cached: a later mint of it is impossible anyway
        self.disk_lookups += 1
        record = decode_row(digest, raw)
        self._remember(record)
        return record

    def forget(self, digest: str) -> None:
        """Drop a token from the cache (its row goes with the next purge)."""
        with self._cache_lock:
            self._cache.pop(digest, None)

    def cached(self) -> int:
        return len(self._cache)

    def _remember(self, record: Token) -> None:
        with self._cache_lock:
            self._cache[record.digest] = record
            self._cache.move_to_end(record.digest)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    # -- expiry --------------------------------------------------------------------

    def purge_expired(self, now_ms: int) -> int:
        """Delete every token that expired at or before now_ms, from LMDB and the cache;
        returns how many. Each batch of rows and their expiry keys is one commit."""
        below = f"{EXPIRY_PREFIX}{now_ms + 1:019d}"
        purged = 0
        while True:
            keys = self._meta.keys(EXPIRY_PREFIX, below=below, limit=PURGE_BATCH)
            if not keys:
                break
            digests = [key.rsplit(":", 1)[1] for key in keys]
            self._meta.put_many({}, deletes=(*keys, *(TOKEN_PREFIX + d for d in digests)))
            with self._cache_lock:
                for digest in digests:
                    self._cache.pop(digest, None)
            purged += len(keys)
            if len(keys) < PURGE_BATCH:
                break
        self.purged += purged
        return purged

    def _build_expiry_index(self) -> None:
        """Once per data directory: expiry keys for rows written before they existed."""
        if self._meta.get(INDEX_MARKER) is not None:
            return
        keys = []
        for key, value in self._meta.items(TOKEN_PREFIX):
            digest = key.removeprefix(TOKEN_PREFIX)
            keys.append(expiry_key(decode_row(digest, value).expires_ms, digest))
        for start in range(0, len(keys), PURGE_BATCH):
            self._meta.put_many(dict.fromkeys(keys[start : start + PURGE_BATCH]))
        self._meta.put(INDEX_MARKER, 1)


class TokenPurger:
    """Runs `purge` every `interval_s` in a worker thread (its deletes commit to LMDB)
    while the server runs. `stop` waits for a purge in progress: the environment closes
    LMDB right after."""

    def __init__(self, purge: Callable[[], int], interval_s: float) -> None:
        self._purge = purge
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="m1lite-token-purge"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
                return
            except TimeoutError:
                pass
            try:
                purged = await asyncio.to_thread(self._purge)
            except Exception:  # a failed purge must not end purging for good
                log.exception("purging expired tokens failed")
            else:
                if purged:
                    log.debug("purged %d expired tokens", purged)

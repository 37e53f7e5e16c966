"""Backups of a data directory, taken while a server serves it, and restoring them.

All durable state is in one LMDB environment (`DATA/lake`: the log, the index
checkpoint and its watermark, meta, session documents), so one LMDB read
transaction is one point-in-time snapshot of all of it. `backup` opens the
environment read-only from its own process (LMDB supports readers in other
processes; the server's data-directory flock is not touched), begins one read
transaction, counts what it holds and writes a compacted copy of exactly that
snapshot (`mdb_env_copy3` with the transaction). Whatever a server acknowledged
as durable before the transaction began is in it; events still queued in the
server's memory (`async=true`) are not.

Map growth in the server does not disturb the copy: the snapshot's pages lie
inside the map this process had when the transaction began, and a transaction
begun after the server grew the map past it fails with MDB_MAP_RESIZED, which
`set_mapsize(0)` (adopt the new size) answers.

A backup directory holds `lake/data.mdb` and `manifest.json`, written last: a
directory without a manifest is an incomplete backup. `restore` copies the file
into a staging directory next to its destination while hashing it, opens the
copy and recounts it against the manifest, and only then renames it into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import lmdb
import msgspec

from m1lite import __version__
from m1lite.storage.env import DB_NAMES, DataDirLocked
from m1lite.storage.index import WATERMARK
from m1lite.storage.log import KEY, PUBLISHED

MANIFEST = "manifest.json"
FORMAT = "m1lite-backup"
FORMAT_VERSION = 1
LAKE = "lake"
DATA_FILE = "data.mdb"
LAKE_FILE = f"{LAKE}/{DATA_FILE}"
LOCK_FILE = "m1lite.lock"  # the server's (storage/env.py DataDirLock)
COPY_CHUNK = 8 * 1024 * 1024
_MAX_BEGIN_ATTEMPTS = 8  # each MDB_MAP_RESIZED means the server grew the map meanwhile
_decode = msgspec.msgpack.Decoder().decode


class BackupError(Exception):
    """A refusal or an invalid backup; nothing was changed."""


class Contents(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a snapshot holds: counted when the backup is taken, recounted on restore."""

    events: int  # log records
    published: int  # of those, in the stores (the rest were written with publish=false)
    first_key: int | None
    last_key: int | None
    index_watermark: int  # keys below it are in the index checkpoint; the rest are replayed
    users: int
    tokens: int
    data_stores: list[str]
    session_stores: dict[str, int]  # store -> session documents

    @property
    def next_key(self) -> int:
        return 0 if self.last_key is None else self.last_key + 1


class FileEntry(msgspec.Struct, forbid_unknown_fields=True):
    bytes: int
    sha256: str


class Manifest(msgspec.Struct, kw_only=True):
    format: str
    format_version: int
    m1lite_version: str
    lmdb_version: str
    created_utc: str  # when the snapshot's transaction began
    source: str
    seconds: float
    contents: Contents
    files: dict[str, FileEntry]

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files.values())


class Restored(msgspec.Struct, kw_only=True):
    data: str
    backup: str
    replaced: bool  # an environment that was there before was replaced (--force)
    events: int
    published: int
    next_key: int
    bytes: int
    seconds: float


# -- counting a snapshot ---------------------------------------------------------------


def read_contents(
    env: lmdb.Environment, txn: lmdb.Transaction, *, decode_all: bool = False
) -> Contents:
    """Count what the transaction's snapshot holds. With decode_all, every log record and
    meta value is also decoded (restore's check that they are readable)."""
    dbs = {}
    for name in DB_NAMES:
        try:
            # Opened within the snapshot's own transaction: closed again when it ends.
            dbs[name] = env.open_db(name.encode(), txn=txn, create=False)
        except lmdb.NotFoundError:
            raise BackupError(f"no '{name}' database: not an m1lite environment") from None
    events = published = 0
    first_key = last_key = None
    for raw_key, raw_value in txn.cursor(db=dbs["log"]):
        key = KEY.unpack(raw_key)[0]
        if first_key is None:
            first_key = key
        last_key = key
        events += 1
        published += raw_value[:1] == PUBLISHED
        if decode_all:
            _decode(raw_value[1:])
    users = tokens = 0
    stores: dict[str, Any] = {"data": [], "sessions": []}
    for raw_key, raw_value in txn.cursor(db=dbs["meta"]):
        key = bytes(raw_key)
        if key.startswith(b"user:"):
            users += 1
        elif key.startswith(b"token:"):
            tokens += 1
        if key == b"stores":
            stores = _decode(raw_value)
        elif decode_all:
            _decode(raw_value)
    raw_watermark = txn.get(WATERMARK, db=dbs["index"])
    sessions: dict[str, int] = {s["name"]: 0 for s in stores.get("sessions", [])}
    for raw_key in txn.cursor(db=dbs["sessions"]).iternext(keys=True, values=False):
        store = bytes(raw_key).split(b"\x00", 1)[0].decode(errors="replace")
        sessions[store] = sessions.get(store, 0) + 1
    return Contents(
        events=events,
        published=published,
        first_key=first_key,
        last_key=last_key,
        index_watermark=0 if raw_watermark is None else KEY.unpack(raw_watermark)[0],
        users=users,
        tokens=tokens,
        data_stores=[s["name"] for s in stores.get("data", [])],
        session_stores=sessions,
    )


# -- backup ----------------------------------------------------------------------------


def backup(data_dir: Path, dest: Path) -> Manifest:
    """Copy the data directory's environment into dest (created; must be new or empty).

    Call it from a process that does not have the environment open (LMDB forbids opening
    one environment twice in a process): `m1lite backup` is its own process.
    """
    started = time.monotonic()
    lake_dir = data_dir / LAKE
    if not (lake_dir / DATA_FILE).is_file():
        raise BackupError(f"{data_dir} holds no m1lite data (no {LAKE_FILE})")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not an empty directory")
    made_dest = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        (dest / LAKE).mkdir()
        with open_readonly(lake_dir) as env, snapshot(env) as txn:
            created = _utc_now()
            contents = read_contents(env, txn)
            env.copy(str(dest / LAKE), compact=True, txn=txn)
        copied = dest / LAKE_FILE
        entry = FileEntry(copied.stat().st_size, _sha256(copied))
        _fsync(copied)
        _fsync(dest / LAKE)
        manifest = Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            m1lite_version=__version__,
            lmdb_version=".".join(map(str, lmdb.version())),
            created_utc=created,
            source=str(data_dir.resolve()),
            seconds=0.0,
            contents=contents,
            files={LAKE_FILE: entry},
        )
        manifest.seconds = round(time.monotonic() - started, 3)
        _write_manifest(dest, manifest)
    except BaseException:
        _remove_partial(dest, made_dest)
        raise
    return manifest


@contextlib.contextmanager
def open_readonly(lake_dir: Path) -> Iterator[lmdb.Environment]:
    # map_size=0 adopts the map size the server last committed; max_readers matches the
    # server's, which matters only when this process opens the environment first.
    env = lmdb.open(
        str(lake_dir),
        readonly=True,
        create=False,
        map_size=0,
        max_dbs=len(DB_NAMES) + 2,
        max_readers=256,
    )
    try:
        # A backup killed with -9 leaves its reader slot behind, which would keep the
        # server from reusing pages; clear slots of processes that are gone.
        env.reader_check()
        yield env
    finally:
        env.close()


@contextlib.contextmanager
def snapshot(env: lmdb.Environment) -> Iterator[lmdb.Transaction]:
    for _attempt in range(_MAX_BEGIN_ATTEMPTS):
        try:
            txn = env.begin(buffers=True)
            break
        except lmdb.MapResizedError:
            env.set_mapsize(0)  # the server grew the map; adopt its size
    else:
        raise BackupError("the server kept growing its map; try again")
    try:
        yield txn
    finally:
        txn.abort()


def _write_manifest(dest: Path, manifest: Manifest) -> None:
    """Written last and atomically: its presence marks the backup complete."""
    text = msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
    partial = dest / (MANIFEST + ".partial")
    partial.write_bytes(text)
    _fsync(partial)
    partial.rename(dest / MANIFEST)
    _fsync(dest)


def _remove_partial(dest: Path, made_dest: bool) -> None:
    with contextlib.suppress(OSError):
        if made_dest:
            shutil.rmtree(dest)
        else:
            for child in dest.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()


# -- restore ---------------------------------------------------------------------------


def read_manifest(src: Path) -> Manifest:
    """The backup's manifest, checked for shape; BackupError when missing or malformed."""
    if not src.is_dir():
        raise BackupError(f"{src} is not a backup directory")
    try:
        raw = (src / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise BackupError(
            f"{src} is not a complete backup: no {MANIFEST} (a backup writes it last)"
        ) from None
    try:
        manifest = msgspec.json.decode(raw, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BackupError(f"{src / MANIFEST} is unreadable: {exc}") from None
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise BackupError(
            f"{src / MANIFEST} is not an m1lite backup manifest of format {FORMAT_VERSION} "
            f"(found {manifest.format!r} version {manifest.format_version})"
        )
    if set(manifest.files) != {LAKE_FILE}:
        raise BackupError(f"{src / MANIFEST} must list exactly {LAKE_FILE}")
    return manifest


def restore(src: Path, data_dir: Path, *, force: bool) -> Restored:
    """Verify the backup at src and put it in place as data_dir's environment.

    Refuses (BackupError) a non-empty data_dir without force, and (DataDirLocked) one a
    server holds. Until the final rename nothing in data_dir changes but a staging
    directory, which is removed on failure.
    """
    started = time.monotonic()
    manifest = read_manifest(src)
    entry = manifest.files[LAKE_FILE]
    if data_dir.exists() and not data_dir.is_dir():
        raise BackupError(f"{data_dir} exists and is not a directory")
    existed = data_dir.is_dir()
    with _held_lock(data_dir):
        # The lock file alone (ours, or a stopped server's) leaves a directory empty.
        if existed and not force and any(p.name != LOCK_FILE for p in data_dir.iterdir()):
            raise BackupError(f"{data_dir} is not empty; --force replaces its environment (lake/)")
        staging_parent = data_dir if existed else data_dir.parent
        staging_parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(staging_parent).free
        if free < entry.bytes:
            raise BackupError(
                f"not enough free space in {staging_parent}: the backup needs "
                f"{entry.bytes:,} bytes, {free:,} are free"
            )
        # Next to its destination, so the final step is a rename on one filesystem.
        staging = staging_parent / f".{data_dir.name}.restore-{os.getpid()}"
        staging.mkdir()
        try:
            (staging / LAKE).mkdir()
            _copy_verified(src / LAKE_FILE, staging / LAKE_FILE, entry)
            _check_contents(staging / LAKE, manifest.contents)
            replaced = _put_in_place(staging, data_dir, existed)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    contents = manifest.contents
    return Restored(
        data=str(data_dir),
        backup=str(src),
        replaced=replaced,
        events=contents.events,
        published=contents.published,
        next_key=contents.next_key,
        bytes=entry.bytes,
        seconds=round(time.monotonic() - started, 3),
    )


@contextlib.contextmanager
def _held_lock(data_dir: Path) -> Iterator[None]:
    """Hold data_dir's server lock (so no server starts on it meanwhile); a lock file made
    here goes again if the restore fails. Nothing is held when data_dir does not exist."""
    if not data_dir.is_dir():
        yield
        return
    path = data_dir / LOCK_FILE
    made = not path.exists()
    # Opened for reading: flock needs no write access, and the holder's pid stays.
    handle: IO[bytes] = open(path, "ab+" if made else "rb")  # noqa: SIM115
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().decode(errors="replace").strip() or "another process"
            raise DataDirLocked(
                f"data directory {data_dir} is in use by {holder}; stop the server first"
            ) from None
        try:
            yield
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
    finally:
        handle.close()


def _copy_verified(source: Path, target: Path, entry: FileEntry) -> None:
    """Copy while hashing, so the bytes checked are the bytes restored."""
    digest = hashlib.sha256()
    size = 0
    try:
        reader = open(source, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise BackupError(f"the backup has no {LAKE_FILE}") from None
    with reader, open(target, "xb") as writer:
        while chunk := reader.read(COPY_CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    if size != entry.bytes or digest.hexdigest() != entry.sha256:
        raise BackupError(
            f"the backup is damaged: {LAKE_FILE} has {size:,} bytes and sha256 "
            f"{digest.hexdigest()[:16]}..., the manifest says {entry.bytes:,} bytes and "
            f"{entry.sha256[:16]}..."
        )


def _check_contents(lake_dir: Path, expected: Contents) -> None:
    """Open the staged copy and recount it; every log record and meta value must decode."""
    try:
        env = lmdb.open(
            str(lake_dir),
            readonly=True,
            create=False,
            lock=False,  # a private copy nobody else opens
            map_size=0,
            max_dbs=len(DB_NAMES) + 2,
        )
    except lmdb.Error as exc:
        raise BackupError(f"the backup's {LAKE_FILE} does not open: {exc}") from None
    try:
        with env.begin(buffers=True) as txn:
            found = read_contents(env, txn, decode_all=True)
    except (lmdb.Error, msgspec.DecodeError) as exc:
        raise BackupError(f"the backup's {LAKE_FILE} is unreadable: {exc}") from None
    finally:
        env.close()
    if found != expected:
        differences = [
            f"{field} {getattr(found, field)!r} (manifest: {getattr(expected, field)!r})"
            for field in expected.__struct_fields__
            if getattr(found, field) != getattr(expected, field)
        ]
        raise BackupError("the backup does not match its manifest: " + "; ".join(differences))


def _put_in_place(staging: Path, data_dir: Path, existed: bool) -> bool:
    """Rename the verified environment into place; True when one was replaced."""
    if not existed:
        _fsync(staging)
        staging.rename(data_dir)  # fails if a directory appeared there meanwhile
        _fsync(data_dir.parent)
        return False
    lake = data_dir / LAKE
    replaced = lake.exists()
    if replaced:
        # Within the lock no server can start between the two renames; the old
        # environment leaves with the staging directory.
        lake.rename(staging / "replaced-lake")
    (staging / LAKE).rename(lake)
    _fsync(data_dir)
    shutil.rmtree(staging, ignore_errors=True)
    return replaced


# -- small helpers ---------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc_now() -> str:
    moment = datetime.fromtimestamp(time.time(), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

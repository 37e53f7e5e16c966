"""One environment: everything a data directory holds, opened and closed together."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from typing import Any

from m1lite.auth import RIGHTS, Auth
from m1lite.config import Config
from m1lite.enrich.events import Enricher
from m1lite.enrich.geo import GeoLookup
from m1lite.enrich.ip import TrustedProxies
from m1lite.login_limits import LoginLimits
from m1lite.schema import Schema, parse_date_ms
from m1lite.sessions import Flusher, SessionStores
from m1lite.storage import log as event_log
from m1lite.storage.env import DataDirLock, LakeEnv
from m1lite.storage.index import Index
from m1lite.storage.meta import MetaStore
from m1lite.storage.replay import replay
from m1lite.storage.writer import Writer
from m1lite.stores import Stores, load_template
from m1lite.system import SystemProperties
from m1lite.tokens import TokenPurger

logger = logging.getLogger("m1lite")


class Environment:
    def __init__(self, config: Config) -> None:
        self.config = config
        config.data.mkdir(parents=True, exist_ok=True)
        (config.data / "import").mkdir(exist_ok=True)
        self._lock = DataDirLock(config.data)
        self._lock.acquire()
        try:
            self._open(config)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, config: Config) -> None:
        self.lake = LakeEnv(
            config.data / "lake",
            map_size_mb=config.map_size_mb,
            max_map_size_mb=config.max_map_size_mb,
        )
        # Everything that can fail on a bad flag opens before the template is applied,
        # so a corrected retry still finds a new data directory.
        self.geo: GeoLookup | None = GeoLookup(config.geoip) if config.geoip else None
        self.proxies = TrustedProxies(config.trusted_proxy_list)
        template = load_template(config.template)
        self.meta = MetaStore(self.lake)
        self.stores = Stores(self.meta)
        if self.stores.is_new:
            self.stores.add_from_template(template)
        self.auth = Auth(self.meta, token_cache_size=config.token_cache_size)
        # /auth's scrypt checks wait for a slot here, one per core (see api/users.py).
        self.password_checks = asyncio.Semaphore(os.cpu_count() or 1)
        self.login_limits = LoginLimits(
            config.login_failures_per_address,
            config.login_failures_per_user,
            config.login_failure_window_ms / 1000,
        )
        self.token_purger = TokenPurger(
            self.auth.purge_expired_tokens, max(1, config.token_purge_ms) / 1000
        )
        self.system = SystemProperties(self.meta, initialised=self.auth.has_users())
        self.schema = Schema.from_list(self.meta.get("schema", []))
        self.enricher = Enricher(
            self.system,
            self.schema,
            self.geo,
            max_depth=config.max_json_depth,
            max_properties=config.max_properties_per_event,
        )
        self.index = Index()
        next_key = event_log.next_key(self.lake)
        with self.lake.read() as txn:
            watermark = self.index.load(txn, self.lake.dbs["index"])
        # Events after the last index checkpoint: seconds of traffic, never history.
        replayed = replay(
            self.lake,
            self.index,
            start=watermark,
            field_kinds=self.field_kinds(),
            date_ms=parse_date_ms,
        )
        if replayed:
            logger.info("indexed %d events written after the last checkpoint", replayed)
        self.writer = Writer(
            self.lake,
            self.index,
            next_key=next_key,
            field_kinds=self.field_kinds,
            date_ms=parse_date_ms,
            group_commit_s=config.group_commit_ms / 1000,
            max_queue_events=config.max_queue_events,
        )
        self.sessions = SessionStores(
            self.stores,
            self.lake,
            self.writer,
            self.schema,
            geo_fields=self.enricher.geo_fields,
            field_kinds=self.field_kinds,
            max_depth=config.max_json_depth,
            max_properties=config.max_properties_per_event,
        )
        # Live sessions come back from LMDB; those that lapsed while the server was down
        # are flushed by the first tick.
        live = self.sessions.load()
        if live:
            logger.info("rebuilt %d sessions from disk", live)
        self.flusher = Flusher(self.sessions, self.system)
        self._bootstrap_admin()

    def field_kinds(self) -> tuple[frozenset[str], frozenset[str]]:
        """The date and text properties, which the index treats specially."""
        return self.schema.names_of_type("date") | {self.system.property_received}, (
            self.schema.names_of_type("text")
        )

    def _bootstrap_admin(self) -> None:
        """First start with no users: an `admin` with every right."""
        if self.auth.has_users():
            return
        password = os.environ.get("M1LITE_ADMIN_PASSWORD", "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        self.auth.add_user("admin", password, RIGHTS)
        self.system.set_initialised(True)
        if generated:
            print(
                f"m1lite: created user 'admin' with password {password}\n"
                "m1lite: this is shown once; change it with /user/password",
                file=sys.stderr,
                flush=True,
            )

    def submit(
        self, items: list[Any], client_ip: str, *, published: bool = True, durable: bool = False
    ) -> asyncio.Future[list[int]] | None:
        """Enrich client items and queue them; with durable=True, a future of their keys
        (resolved once they are durable and visible)."""
        batch = self.enricher.records(items, client_ip)
        if not batch.records:
            if not durable:
                return None
            done: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return self.writer.submit(
            batch.records,
            shared=batch.shared,
            encoded=batch.encoded,
            published=published,
            durable=durable,
        )

    def save_schema(self) -> None:
        self.meta.put("schema", self.schema.to_list())

    def start(self) -> None:
        self.writer.start()

    def start_background_tasks(self) -> None:
        """Start the background tasks: the session flusher and the expired-token purge
        (needs the running event loop)."""
        self.flusher.start()
        self.token_purger.start()

    async def stop_background_tasks(self) -> None:
        await self.token_purger.stop()
        await self.flusher.stop()

    def close(self) -> None:
        """Drain queued events and session changes, then release the data directory."""
        self.writer.stop()
        if self.geo is not None:
            self.geo.close()
        self.lake.close()
        self._lock.release()

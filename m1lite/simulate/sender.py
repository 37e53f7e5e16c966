"""Sending the visitors' events and heartbeats over one shared HTTP connection pool.

Addresses: the server reads a client's address from X-Forwarded-For (when it trusts the
simulator), one per request, so a request only carries documents of visitors behind one
address. Tokens are bound to the address that asked for them, so each address logs in
once. A browser logs in once per visit; simulated visitors share a pool of addresses
(and their logins) instead, so the load is events and heartbeats. `--token` (an
any-address token, the browser script's data-token) skips logins altogether.

An `Outbox` holds what is waiting to go from one visitor (with --batch, from one
address): events for /write, and heartbeats for the session store, newest per visitor
(an unsent heartbeat replaced by a newer one is "superseded": the browser script never
queues heartbeats). One request of each kind is in flight per outbox at a time, so when
the server slows down, batches grow instead of requests piling up, as in a browser.

Answers: 2xx acknowledges; 401 logs the address in again, once, and resends; 408, 429,
502, 503, 504, 507 and no answer at all put the batch back and hold the outbox for a
back-off (1 s doubling to 30 s, with jitter); 403, 404 (a missing right, an unknown
session store) and a second 401 stop the run; any other answer drops the batch (counted
as an error).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec

from m1lite.simulate.http import ConnectionFailed, HttpPool, Response
from m1lite.simulate.stats import Stats
from m1lite.simulate.visitor import Visitor

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504, 507})
# 401 is answered by logging in again (once), and stops the run only if that fails too.
FATAL_STATUSES = frozenset({403, 404})
MAX_EVENTS_PER_WRITE = 500
MAX_UPSERTS_PER_UPDATE = 1000
BACKOFF_S, BACKOFF_MAX_S = 1.0, 30.0
TOKEN_HEADER = "m1-auth-token"
FORM = "application/x-www-form-urlencoded"

_encode = msgspec.json.Encoder().encode


class LoginRefused(Exception):
    """The server refused the simulator's username/password."""


class Unreachable(Exception):
    """No HTTP answer at all (connection refused, DNS, timeout)."""


class Address:
    """A client address and the token the server bound to it."""

    __slots__ = ("ip", "lock", "token")

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.token = ""
        self.lock = asyncio.Lock()


class Outbox:
    """What one address (or one visitor) has waiting to be sent."""

    __slots__ = (
        "address",
        "beats",
        "beats_busy",
        "events",
        "events_busy",
        "fails",
        "flush_scheduled",
        "hold_until",
    )

    def __init__(self, address: Address) -> None:
        self.address = address
        self.events: list[dict[str, Any]] = []
        self.beats: dict[Visitor, dict[str, Any]] = {}
        self.events_busy = False
        self.beats_busy = False
        self.hold_until = 0.0  # monotonic time before which nothing is sent (back-off)
        self.fails = 0
        self.flush_scheduled = False  # per visitor: a flush is already on the schedule

    @property
    def pending(self) -> bool:
        return bool(self.events or self.beats)

    @property
    def busy(self) -> bool:
        return self.events_busy or self.beats_busy


class Sender:
    def __init__(
        self,
        client: HttpPool,
        stats: Stats,
        *,
        user: str,
        password: str,
        session: str | None,
        is_async: bool,
        on_fatal: Callable[[str], None],
        on_idle: Callable[[Outbox], None] | None = None,
    ) -> None:
        self.client = client
        self.stats = stats
        self.user = user
        self.password = password
        self.session = session
        self.is_async = is_async
        self.on_fatal = on_fatal
        self.on_idle = on_idle  # called whenever a send finished
        self.tasks: set[asyncio.Task[None]] = set()
        self._jitter = random.Random()

    # -- logins -------------------------------------------------------------------------

    async def login(self, address: Address, stale: str = "") -> None:
        """Log `address` in, unless another task already replaced the `stale` token."""
        async with address.lock:
            if address.token and address.token != stale:
                return
            form = urlencode({"username": self.user, "password": self.password})
            try:
                response = await self.client.post(
                    "/auth",
                    form.encode(),
                    {"Content-Type": FORM, "X-Forwarded-For": address.ip},
                )
            except ConnectionFailed as exc:
                raise Unreachable(str(exc)) from exc
            self.stats.logins += 1
            if response.status != 200:
                raise LoginRefused(
                    f"login as {self.user} refused: {response.status} {_message(response)}"
                )
            address.token = response.text.strip()

    async def proxies_trusted(self, first: Address, second: Address) -> bool:
        """Whether the server takes our X-Forwarded-For: `first`'s token, sent with
        `second`'s address, is refused (token_ip) only if the server believed both."""
        try:
            response = await self.client.post(
                "/write",
                _encode({"items": [], "async": True}),
                self._headers(first.token, second.ip),
            )
        except ConnectionFailed as exc:
            raise Unreachable(str(exc)) from exc
        return response.status == 401

    # -- sending ------------------------------------------------------------------------

    def flush(self, outbox: Outbox, now: float, *, events: bool = True) -> None:
        """Start a request for each kind waiting in `outbox` that has none in flight."""
        if now < outbox.hold_until:
            return
        if events and outbox.events and not outbox.events_busy:
            batch = outbox.events[:MAX_EVENTS_PER_WRITE]
            del outbox.events[:MAX_EVENTS_PER_WRITE]
            outbox.events_busy = True
            self._start(self._send_events(outbox, batch))
        if outbox.beats and not outbox.beats_busy:
            taken = list(outbox.beats.items())[:MAX_UPSERTS_PER_UPDATE]
            for visitor, _ in taken:
                del outbox.beats[visitor]
            outbox.beats_busy = True
            self._start(self._send_beats(outbox, taken))

    def _start(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_events(self, outbox: Outbox, batch: list[dict[str, Any]]) -> None:
        body = _encode({"items": batch, "async": self.is_async})
        heartbeats = sum(1 for doc in batch if doc["type"] == "heartbeat")
        try:
            outcome, ms = await self._post(outbox, "write", body)
        except asyncio.CancelledError:
            self._drop_events(batch)
            raise
        finally:
            outbox.events_busy = False
        if outcome == "ok":
            self.stats.request_done(
                "write",
                ms,
                events=Counter(doc["type"] for doc in batch),
                heartbeats_in_batch=heartbeats,
            )
        elif outcome == "retry":
            outbox.events[:0] = batch
        else:
            self._drop_events(batch)
        self._idle(outbox)

    async def _send_beats(
        self, outbox: Outbox, beats: list[tuple[Visitor, dict[str, Any]]]
    ) -> None:
        body = _encode({"store": self.session, "ops": [{"upsert": [doc for _, doc in beats]}]})
        try:
            outcome, ms = await self._post(outbox, "session/update", body)
        except asyncio.CancelledError:
            self.stats.beats_dropped += len(beats)
            raise
        finally:
            outbox.beats_busy = False
        if outcome == "ok":
            for visitor, _ in beats:
                if not visitor.has_session:
                    visitor.has_session = True
                    self.stats.sessions += 1
            self.stats.request_done(
                "session/update", ms, beats=len(beats), heartbeats_in_batch=len(beats)
            )
        elif outcome == "retry":
            for visitor, doc in beats:
                if visitor in outbox.beats:  # a newer heartbeat came meanwhile
                    self.stats.beats_superseded += 1
                else:
                    outbox.beats[visitor] = doc
        else:
            self.stats.beats_dropped += len(beats)
        self._idle(outbox)

    def _drop_events(self, batch: list[dict[str, Any]]) -> None:
        self.stats.events_dropped.update(doc["type"] for doc in batch)

    def _idle(self, outbox: Outbox) -> None:
        if self.on_idle is not None:
            self.on_idle(outbox)

    def _headers(self, token: str, ip: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            TOKEN_HEADER: token,
            "X-Forwarded-For": ip,
        }

    async def _post(self, outbox: Outbox, path: str, body: bytes) -> tuple[str, float]:
        """POST and classify: ("ok", latency ms), "retry" (put back, back off) or "drop"."""
        address = outbox.address
        for attempt in (1, 2):
            token = address.token
            started = time.monotonic()
            try:
                # Waiting for a free connection counts in the latency, as it would for a
                # browser whose server is slow to answer.
                response = await self.client.post(
                    "/" + path, body, self._headers(token, address.ip)
                )
            except ConnectionFailed as exc:
                self.stats.error("connection", f"{path}: {exc}")
                self._back_off(outbox)
                return "retry", 0.0
            status = response.status
            if 200 <= status < 300:
                outbox.fails = 0
                return "ok", (time.monotonic() - started) * 1000
            if status == 401 and attempt == 1 and self.user:
                try:
                    await self.login(address, stale=token)
                except (LoginRefused, Unreachable) as exc:
                    self.stats.error("401", str(exc))
                    self.on_fatal(str(exc))
                    return "drop", 0.0
                continue
            self.stats.error(str(status), f"{path}: {_message(response)}")
            if status in RETRY_STATUSES:
                self._back_off(outbox)
                return "retry", 0.0
            if status in FATAL_STATUSES or status == 401:  # 401: after a new login
                self.on_fatal(f"{path} refused: {status} {_message(response)}")
            return "drop", 0.0
        return "drop", 0.0  # pragma: no cover - the loop returns on its second pass

    def _back_off(self, outbox: Outbox) -> None:
        outbox.fails += 1
        wait = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (outbox.fails - 1))
        outbox.hold_until = time.monotonic() + wait * (0.8 + 0.4 * self._jitter.random())

    async def drain(self, timeout_s: float) -> None:
        """Wait for the requests in flight; cancel what is left after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=deadline - time.monotonic())
        left = list(self.tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)


def _message(response: Response) -> str:
    """The server's error message: "short_code: message" from the JSON error body."""
    try:
        body = msgspec.json.decode(response.body)
    except msgspec.DecodeError:
        return response.text.strip()[:200] or "(no message)"
    if isinstance(body, dict) and "message" in body:
        return f"{body.get('error', '')}: {body['message']}".strip(": ")
    return response.text.strip()[:200]

"""`m1lite flush`: the guide's standalone session flusher, over the public API.

What the built-in flusher does, for deployments that want it outside the server (or
against a hosted MinusOneDB environment): find the sessions last updated more than
`timeout_s` ago (`/session/query`), write one `sessionTimeout` event each (`/write`,
`async=false`), then delete them (`/session/update`).

Over HTTP this cannot be atomic as the built-in flusher is: if the flusher dies between
the write and the delete, the next run writes those sessions' events again, and a
visitor who comes back between the query and the delete loses that update. The server
also stamps the events with the flusher's own `_m1.ip` and `_m1.geo`, not the
visitor's. Running it next to the built-in flusher is pointless: whichever sees a
session lapse first flushes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from m1lite.client import Client, ClientError
from m1lite.sessions.documents import get_path, to_timeout_event

QUERY_ROWS = 1_000  # sessions per round trip
LAST_UPDATED = "_m1.session.lastUpdated"


def _number(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def flush_once(
    client: Client, store: str, key: str, timeout_s: float, now_ms: int | None = None
) -> int:
    """Flush every session that lapsed before now; returns how many."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - int(timeout_s * 1000)
    flushed = 0
    while True:
        answer = client.call(
            "session/query",
            {
                "store": store,
                "q": f"{LAST_UPDATED}:[* TO {cutoff - 1}]",
                "sort": f"{LAST_UPDATED} asc",
                "rows": QUERY_ROWS,
            },
        ).json()
        items = [item for item in answer.get("items", []) if isinstance(item, dict)]
        if not items:
            return flushed
        events, ids = [], []
        for doc in items:
            session_id = get_path(doc, key)
            last = _number(get_path(doc, LAST_UPDATED))
            if session_id is None or last is None:
                continue
            created = _number(get_path(doc, "_m1.session.created"))
            events.append(to_timeout_event(doc, last, created))
            ids.append(session_id)
        if not ids:
            return flushed
        client.call("write", {"items": events, "async": False, "publish": True})
        client.call("session/update", {"store": store, "ops": [{"delete": ids}]})
        flushed += len(ids)
        if len(items) < QUERY_ROWS:
            return flushed


def run(
    server: str,
    user: str,
    password: str,
    store: str,
    timeout_s: float,
    *,
    key: str = "session.id",
    interval_s: float = 1.0,
    once: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """The flusher loop (one pass with `once`); the exit code."""
    with Client(server) as client:
        client.auth(user, password)
        logged_in = True
        while True:
            try:
                if not logged_in:  # the token expired (a 401): log in again
                    client.auth(user, password)
                    logged_in = True
                flushed = flush_once(client, store, key, timeout_s)
            except ClientError as exc:
                if once:
                    raise
                logged_in = exc.status != 401
                say(f"flush failed: {exc}; retrying in {interval_s:g} s")
            else:
                say(f"flushed {flushed} sessions" if flushed else "nothing to flush")
            if once:
                return 0
            time.sleep(interval_s)

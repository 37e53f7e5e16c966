"""/session/update, /session/query and the built-in flusher against a real server:
statuses and error bodies, rights, the guide's session-store commands, the timeout
acceptance (a store with timeoutSeconds 3), exactly-once flushing across kill -9 and
SIGTERM, and `m1lite flush` over the public API.

Timing: the flusher checks every second, so these tests wait for what they expect
(polling with a generous deadline) and never judge by how long it took; the measured
lateness is printed (`-s`) for the record.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartServer

from integration.server import ADMIN_USER, Server, assert_error
from integration.test_guide_commands import GUIDE, curl

pytestmark = pytest.mark.slow

GEO_DB = Path(__file__).parent.parent / "data" / "GeoIP2-City-Test.mmdb"
LONDON = "81.2.69.142"
WAIT_S = 30.0  # the most any test waits for a flush it expects (normally 1-4 s)

# Copied character for character from the guide (reference/event-capture-guide.txt).
SEE_HEARTBEATS = """curl https://envName-accountName.minusonedb.com/session/query \\
-d "store=stash&q=*" \\
-H "m1-auth-token: $myToken\""""
SEE_TIMEOUTS = """curl https://envName-accountName.minusonedb.com/query \\
-d "store=index&q=type:sessionTimeout" \\
-H "m1-auth-token: $myToken\""""


def start(start_server: StartServer, **kwargs: Any) -> Server:
    return start_server(
        "--template",
        "eventsSessionStore",
        "--geoip",
        str(GEO_DB),
        "--trusted-proxies",
        "127.0.0.1",
        **kwargs,
    )


_ANY_IP_TOKENS: dict[tuple[str, int], str] = {}


def admin(server: Server) -> str:
    """An admin token good from any IP: requests come "from" a London address through
    the trusted proxy header, for the geo stamp."""
    key = (server.url, server.starts)
    if key not in _ANY_IP_TOKENS:
        _ANY_IP_TOKENS[key] = server.login(ADMIN_USER, server.admin_password, ip="*")
    return _ANY_IP_TOKENS[key]


def add_store(server: Server, name: str, timeout_s: int) -> None:
    environment = {"sessionStores": [{"store": name, "timeoutSeconds": timeout_s}]}
    response = server.post(
        "/orchestrate/addStores",
        server.admin_token(),
        data={"environment": json.dumps(environment)},
    )
    assert response.status_code == 200, response.text


def update(
    server: Server, store: str, ops: list[dict[str, Any]], token: str | None = None, **extra: Any
) -> httpx.Response:
    """As the admin from LONDON, or with `token` from 127.0.0.1."""
    return server.post(
        "/session/update",
        token or admin(server),
        data={"store": store, "ops": json.dumps(ops), **extra},
        headers=None if token else {"X-Forwarded-For": LONDON},
    )


def upsert(server: Server, store: str, *items: dict[str, Any]) -> None:
    response = update(server, store, [{"upsert": list(items)}])
    assert response.status_code == 204, response.text


def squery(server: Server, store: str, token: str | None = None, **params: Any) -> Any:
    response = server.post(
        "/session/query", token or server.admin_token(), data={"store": store, **params}
    )
    assert response.status_code == 200, response.text
    return response.json()


def timeouts(server: Server, q: str = "type:sessionTimeout") -> list[dict[str, Any]]:
    response = server.post(
        "/query", server.admin_token(), data={"store": "index", "q": q, "rows": 10_000}
    )
    assert response.status_code == 200, response.text
    docs: list[dict[str, Any]] = response.json()["response"]["docs"]
    return docs


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> float:
    """Poll until check() holds; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"still waiting after {timeout_s} s for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def hb(session_id: str, **more: Any) -> dict[str, Any]:
    return {"session": {"id": session_id}, "event": {"type": "heartbeat"}, **more}


def iso_ms(text: str) -> int:
    from m1lite.schema import parse_date_ms

    ms = parse_date_ms(text)
    assert ms is not None, text
    return ms


# -- the endpoints -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(start_module_server: StartServer) -> Server:
    return start_module_server(
        "--template", "eventsSessionStore", "--geoip", str(GEO_DB), "--trusted-proxies", "127.0.0.1"
    )


def test_update_then_query_as_the_reference_shows(srv: Server) -> None:
    ops = [
        {
            "upsert": [
                {
                    "ip": "65.29.29.190",
                    "session": {"id": "0295aed9-5872", "start": 1612497996184},
                    "user": {"id": "f7661f25"},
                    "event": {"id": "6dd0", "time": 1612497996000, "type": "heartbeat"},
                }
            ]
        },
        {"delete": ["78ba3dac-3e45-4e17-940e-e66584882ce4"]},
    ]
    response = update(srv, "stash", ops)
    assert (response.status_code, response.text) == (204, "")
    body = squery(srv, "stash", q="session.id:0295aed9-5872", sort="session.id asc")
    assert body["count"] == 1 and set(body) == {"count", "items"}
    [item] = body["items"]
    assert item["user"] == {"id": "f7661f25"}
    assert item["_m1"]["ip"] == LONDON
    assert item["_m1"]["geo"]["country_iso_code"] == "GB"
    assert item["_m1"]["receivedUTC"] == item["_m1"]["session"]["lastUpdated"]


def test_json_bodies_async_updates_and_get_queries(srv: Server) -> None:
    ops = [{"upsert": [hb("json-1", page="/a")]}]
    response = srv.post("/session/update", srv.admin_token(), json={"store": "stash", "ops": ops})
    assert response.status_code == 204
    response = update(srv, "stash", [{"upsert": [hb("async-1")]}], **{"async": "true"})
    assert response.status_code == 204
    found = srv.get(
        "/session/query",
        srv.admin_token(),
        params={"store": "stash", "q": "session.id:(json-1 OR async-1)", "rows": 5},
    )
    assert found.status_code == 200 and found.json()["count"] == 2


def test_query_rows_default_facets_and_count_only(srv: Server) -> None:
    upsert(srv, "stash", *[hb(f"f-{n:02d}", page=f"/p{n % 2}", grp="facets") for n in range(12)])
    body = squery(srv, "stash", q="grp:facets")
    assert body["count"] == 12 and len(body["items"]) == 10  # rows defaults to 10
    assert [i["session"]["id"] for i in body["items"]][:2] == ["f-00", "f-01"]
    facet = {"facet": {"pages": {"field": "page", "type": "terms"}}}
    body = squery(srv, "stash", q="grp:facets", rows=0, json=json.dumps(facet))
    assert body["items"] == []
    assert body["facets"] == {
        "count": 12,
        "pages": {"buckets": [{"val": "/p0", "count": 6}, {"val": "/p1", "count": 6}]},
    }


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"ops": "[]"}, 400, "missing_parameter"),
        ({"store": "stash"}, 400, "missing_parameter"),
        ({"store": "stash", "ops": "[{"}, 400, "bad_json"),
        ({"store": "stash", "ops": '[{"upsert":[{"x":1}]}]'}, 400, "bad_ops"),
        ({"store": "nope", "ops": "[]"}, 404, "no_such_store"),
        ({"store": "index", "ops": "[]"}, 404, "no_such_store"),
    ],
)
def test_update_errors(srv: Server, params: dict[str, str], status: int, code: str) -> None:
    body = assert_error(srv.post("/session/update", srv.admin_token(), data=params), status)
    if code != "bad_json":
        assert body["error"] == code
    if code == "bad_ops":
        assert body["message"] == "ops[0].upsert[0] has no session.id (the session store's key)"


def test_query_errors(srv: Server) -> None:
    token = srv.admin_token()
    assert_error(srv.post("/session/query", token, data={"q": "*"}), 400)
    body = assert_error(srv.post("/session/query", token, data={"store": "nope"}), 404)
    assert body["error"] == "no_such_store"
    body = assert_error(srv.post("/session/query", token, data={"store": "stash", "q": "a:("}), 400)
    assert "at character" in body["message"]
    response = srv.post("/query", token, data={"store": "stash", "q": "*"})
    assert "use /session/query" in assert_error(response, 404)["message"]


def test_rights(srv: Server) -> None:
    writer = srv.add_user("sess-writer", "sess-writer-pw", ["sessionUpdate"])
    reader = srv.add_user("sess-reader", "sess-reader-pw", ["sessionQuery"])
    assert update(srv, "stash", [{"upsert": [hb("r-1")]}], writer).status_code == 204
    assert squery(srv, "stash", reader, q="session.id:r-1")["count"] == 1
    body = assert_error(srv.post("/session/query", writer, data={"store": "stash"}), 403)
    assert body["message"] == "User sess-writer does not have requested right in set sessionQuery"
    body = assert_error(update(srv, "stash", [], reader), 403)
    assert body["message"] == "User sess-reader does not have requested right in set sessionUpdate"
    assert_error(srv.post("/session/update", data={"store": "stash", "ops": "[]"}), 401)


def test_the_guides_session_store_command(srv: Server) -> None:
    if GUIDE.is_file():  # next to the project in the team's workspace: still verbatim?
        text = GUIDE.read_text()
        assert SEE_HEARTBEATS in text and SEE_TIMEOUTS in text
    upsert(srv, "stash", hb("guide-1"))
    status, body = curl(srv, SEE_HEARTBEATS, myToken=srv.admin_token())
    assert status == 200
    assert json.loads(body)["count"] >= 1
    status, body = curl(srv, SEE_TIMEOUTS, myToken=srv.admin_token())
    assert status == 200 and "numFound" in body


# -- the flusher (acceptance, timeoutSeconds 3) ------------------------------------------


def test_timeout_3s_kept_alive_flushed_once_and_deleted_never(start_server: StartServer) -> None:
    server = start(start_server)
    add_store(server, "quick", 3)
    upsert(server, "quick", hb("alive"), hb("leaves", page="/bye"), hb("deleted"))
    assert update(server, "quick", [{"delete": ["deleted"]}]).status_code == 204
    acked = time.time()
    for _ in range(7):  # kept alive: an upsert every second, for more than twice the timeout
        time.sleep(1)
        upsert(server, "quick", hb("alive"))
        assert [d["session.id"] for d in timeouts(server)] in ([], ["leaves"])
    [event] = timeouts(server)
    assert event["session.id"] == "leaves" and event["page"] == "/bye"
    assert event["type"] == event["event.type"] == "sessionTimeout"
    assert event["_m1.geo.country_iso_code"] == "GB"
    late = iso_ms(event["_m1.receivedUTC"]) / 1000 - event["session.end"] / 1000 - 3
    print(f"\n'leaves' flushed {late:.2f} s after its deadline (timeoutSeconds 3)")
    assert abs(event["session.end"] / 1000 - acked) < 5
    # the session has left the store; the live one is there
    assert [i["session"]["id"] for i in squery(server, "quick")["items"]] == ["alive"]
    # once the heartbeats stop, the live one goes too, once
    wait_for("alive to flush", lambda: len(timeouts(server)) == 2)
    time.sleep(2)
    assert sorted(d["session.id"] for d in timeouts(server)) == ["alive", "leaves"]
    assert timeouts(server, "session.id:deleted") == []
    assert squery(server, "quick", rows=0)["count"] == 0


# -- exactly once across crashes ---------------------------------------------------------


def _exactly_once(server: Server, expected: set[str]) -> None:
    wait_for(
        "every session to flush",
        lambda: (
            squery(server, "crash", rows=0)["count"] == 0 and len(timeouts(server)) >= len(expected)
        ),
    )
    time.sleep(1.5)  # a duplicate, if any, would be written by now
    ids = [d["session.id"] for d in timeouts(server)]
    duplicated = {i for i in ids if ids.count(i) > 1}
    assert duplicated == set(), f"flushed twice: {sorted(duplicated)}"
    assert set(ids) == expected, f"lost: {sorted(expected - set(ids))}"


def test_kill_9_right_after_acknowledged_upserts_loses_and_duplicates_nothing(
    start_server: StartServer,
) -> None:
    server = start(start_server)
    add_store(server, "crash", 1)
    rng = random.Random(4)
    expected: set[str] = set()
    for round_ in range(4):
        # Earlier rounds' sessions lapse and flush while these arrive: the kill lands
        # before, during or after those flushes.
        for batch in range(5):
            ids = [f"r{round_}-b{batch}-{n}" for n in range(8)]
            upsert(server, "crash", *[hb(i, round=round_) for i in ids])
            expected.update(ids)
            time.sleep(rng.uniform(0, 0.3))
        time.sleep(rng.uniform(0, 0.5))  # the kill comes within 0.5 s of the last ack
        server.kill()
        server.start()
    _exactly_once(server, expected)


def test_sigterm_keeps_live_sessions_and_flushes_each_once(start_server: StartServer) -> None:
    server = start(start_server)
    add_store(server, "crash", 3)
    upsert(server, "crash", *[hb(f"t-{n}", page="/kept") for n in range(20)])
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    # rebuilt, documents whole (unless the flusher was faster than this query)
    body = squery(server, "crash", q='page:"/kept"', rows=0)
    flushed = len(timeouts(server))
    assert body["count"] + flushed == 20
    server.restart(signal.SIGTERM)
    _exactly_once(server, {f"t-{n}" for n in range(20)})


# -- m1lite flush ------------------------------------------------------------------------


def run_flush_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "m1lite", "flush", "--server", server.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_m1lite_flush_does_over_the_api_what_the_flusher_does(start_server: StartServer) -> None:
    server = start(start_server)
    add_store(server, "slow", 3600)  # the built-in flusher will not touch these
    server.add_user("flush", "change this password", ["publish", "sessionUpdate", "sessionQuery"])
    start_ms = int(time.time() * 1000) - 60_000
    upsert(
        server,
        "slow",
        *[hb(f"old-{n}", session={"id": f"old-{n}", "start": start_ms}) for n in range(3)],
    )
    time.sleep(6)
    upsert(server, "slow", hb("fresh"))
    login = ["--user", "flush", "--password", "change this password", "--session", "slow"]
    # 6 s old and fresh: a 4 s timeout tells them apart with seconds to spare
    done = run_flush_cli(server, *login, "--timeout-s", "4", "--once")
    assert done.returncode == 0, done.stderr
    assert "flushed 3 sessions" in done.stdout
    events = timeouts(server)
    assert sorted(e["session.id"] for e in events) == ["old-0", "old-1", "old-2"]
    for event in events:
        assert event["event.type"] == "sessionTimeout"
        assert event["session.durationMs"] == event["session.end"] - start_ms
    assert [i["session"]["id"] for i in squery(server, "slow")["items"]] == ["fresh"]
    again = run_flush_cli(server, *login, "--timeout-s", "600", "--once")
    assert again.returncode == 0 and "nothing to flush" in again.stdout
    wrong = run_flush_cli(server, *login[:-1], "nope", "--timeout-s", "1", "--once")
    assert wrong.returncode == 1 and "no session store named nope" in wrong.stderr

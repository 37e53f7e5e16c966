"""/query against a real server: the guide's query commands run verbatim with the real
`curl` (and the `m1` client), the Solr envelope, paging, fl, CSV, stores, and hostile
parameters that must come back as a fast 400, never a 500 or a hang."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import StartServer

from integration.server import Server, assert_error
from integration.test_guide_commands import GUIDE, curl

GEO_DB = Path(__file__).parent.parent / "data" / "GeoIP2-City-Test.mmdb"
LONDON, MILTON = "81.2.69.142", "216.160.83.56"  # ENG and WA in MaxMind's test database

# Copied character for character from the guide (reference/event-capture-guide.txt).
FIVE_MOST_RECENT = """curl https://envName-accountName.minusonedb.com/query \\
-d "store=index&q=*&sort=_m1.receivedUTC desc&rows=5" \\
-H "m1-auth-token: $myToken\""""
BY_STATE = """curl https://envName-accountName.minusonedb.com/query -d 'store=index&q=*&json={
"facet": {
"by_state": {
"field": "_m1.geo.subdivision_1_iso_code",
"type": "terms"
}
}
}' -H "m1-auth-token: $myToken\""""
HEARTBEATS = """curl https://envName-accountName.minusonedb.com/query \\
-d "store=index&q=event.type:heartbeat&sort=_m1.receivedUTC desc&rows=3" \\
-H "m1-auth-token: $myToken\""""
SESSION_TIMEOUTS = """curl https://envName-accountName.minusonedb.com/query \\
-d "store=index&q=type:sessionTimeout" \\
-H "m1-auth-token: $myToken\""""
M1_SESSION_TIMEOUTS = 'm1 envName-accountName query -store index -q "type:sessionTimeout" -rows 5'
M1_EXE = Path(sys.executable).parent / "m1"

# What the module's server holds, in write order (one write each: distinct receive times).
EVENTS: list[tuple[str | None, dict[str, Any]]] = [
    (LONDON, {"event": {"type": "sessionStart"}, "n": 5}),
    (LONDON, {"event": {"type": "view"}, "n": 1, "tags": ["a", "b"]}),
    (MILTON, {"event": {"type": "heartbeat"}, "n": 3}),
    (LONDON, {"event": {"type": "heartbeat"}, "n": 7}),
    (MILTON, {"event": {"type": "heartbeat"}, "n": 2}),
    (None, {"event": {"type": "heartbeat"}, "n": 2.5}),
    (MILTON, {"type": "sessionTimeout", "session": {"id": "s1"}}),
    (None, {"type": "sessionTimeout", "session": {"id": "s2"}}),
    (None, {"event": {"type": "view"}, "label": 'say "hi", then\nleave', "ok": True}),
]
HEARTBEAT_KEYS = [2, 3, 4, 5]
TIMEOUT_KEYS = [6, 7]


@pytest.fixture(scope="module")
def srv(start_module_server: StartServer) -> Server:
    if not GEO_DB.exists():
        from data.fetch_geoip_test_db import fetch

        fetch(GEO_DB)
    server = start_module_server("--geoip", str(GEO_DB), "--trusted-proxies", "127.0.0.1")
    token = server.login("admin", server.admin_password, ip="*")  # usable behind the proxy
    for expected_key, (ip, item) in enumerate(EVENTS):
        headers = {"X-Forwarded-For": ip} if ip else {}
        response = server.post(
            "/write",
            token,
            data={"items": json.dumps([item]), "async": "false"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        assert response.json() == [expected_key]
        time.sleep(0.003)  # the next event's receivedUTC is a later millisecond
    return server


def query(server: Server, token: str | None = None, **params: Any) -> httpx.Response:
    return server.post("/query", token or server.admin_token(), data=params)


def found(server: Server, **params: Any) -> dict[str, Any]:
    response = query(server, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["responseHeader"]["status"] == 0
    return body["response"]


def assert_copied_from_the_guide() -> None:
    """Where the guide sits next to the project (the team's workspace), the commands must
    still be in it character for character; a checkout without it runs them all the same."""
    if GUIDE.is_file():
        text = GUIDE.read_text()
        for command in (
            FIVE_MOST_RECENT,
            BY_STATE,
            HEARTBEATS,
            SESSION_TIMEOUTS,
            M1_SESSION_TIMEOUTS,
        ):
            assert command in text


# -- the guide ----------------------------------------------------------------------------


def test_guide_five_most_recent_events(srv: Server) -> None:
    assert_copied_from_the_guide()
    status, text = curl(srv, FIVE_MOST_RECENT, myToken=srv.admin_token())
    assert status == 200, text
    body = json.loads(text)
    assert body["response"]["numFound"] == len(EVENTS)
    assert body["response"]["start"] == 0
    docs = body["response"]["docs"]
    assert [doc["_m1key"] for doc in docs] == [8, 7, 6, 5, 4]
    assert docs[0]["label"] == 'say "hi", then\nleave'
    assert docs[2]["_m1.geo.subdivision_1_iso_code"] == "WA"
    received = [doc["_m1.receivedUTC"] for doc in docs]
    assert received == sorted(received, reverse=True)
    assert body["responseHeader"]["params"] == {
        "store": "index",
        "q": "*",
        "sort": "_m1.receivedUTC desc",
        "rows": "5",
    }
    assert isinstance(body["responseHeader"]["QTime"], int)


def test_guide_events_by_state(srv: Server) -> None:
    status, text = curl(srv, BY_STATE, myToken=srv.admin_token())
    assert status == 200, text
    body = json.loads(text)
    assert body["response"] == {"numFound": len(EVENTS), "start": 0, "docs": []}
    assert body["facets"]["count"] == len(EVENTS)
    assert body["facets"]["by_state"]["buckets"] == [
        {"val": "ENG", "count": 3},
        {"val": "WA", "count": 3},
    ]


def test_guide_three_most_recent_heartbeats(srv: Server) -> None:
    status, text = curl(srv, HEARTBEATS, myToken=srv.admin_token())
    assert status == 200, text
    response = json.loads(text)["response"]
    assert response["numFound"] == len(HEARTBEAT_KEYS)
    docs = response["docs"]
    assert [doc["_m1key"] for doc in docs] == HEARTBEAT_KEYS[::-1][:3]
    assert {doc["event.type"] for doc in docs} == {"heartbeat"}


def test_guide_session_timeouts(srv: Server) -> None:
    status, text = curl(srv, SESSION_TIMEOUTS, myToken=srv.admin_token())
    assert status == 200, text
    # The curl form sends no rows: the default 0 answers with the count only.
    assert json.loads(text)["response"] == {"numFound": 2, "start": 0, "docs": []}


def test_guide_session_timeouts_with_the_m1_client(srv: Server, tmp_path: Path) -> None:
    command = M1_SESSION_TIMEOUTS.replace("envName-accountName", srv.url)
    m1 = str(M1_EXE) if M1_EXE.exists() else f"{sys.executable} -m m1lite.m1cli"
    command = f'{m1} --raw --token "$myToken" {command.removeprefix("m1 ")}'
    done = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "myToken": srv.admin_token(), "M1_CONFIG_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)["response"]
    assert response["numFound"] == 2
    assert [doc["_m1key"] for doc in response["docs"]] == TIMEOUT_KEYS
    assert [doc["session.id"] for doc in response["docs"]] == ["s1", "s2"]


def test_get_with_a_query_string(srv: Server) -> None:
    response = srv.get(
        "/query",
        srv.admin_token(),
        params={"store": "index", "q": "type:sessionTimeout", "rows": "1"},
    )
    assert response.status_code == 200, response.text
    assert [doc["_m1key"] for doc in response.json()["response"]["docs"]] == [6]


# -- the envelope and the parameters ----------------------------------------------------------


def test_params_are_echoed_as_strings_without_the_token(srv: Server) -> None:
    response = srv.post(
        "/query",
        data={
            "store": "index",
            "q": "n:[2 TO 5]",
            "fq": ["event.type:heartbeat", "-n:3"],
            "fl": "n",
            "rows": "10",
            "m1-auth-token": srv.admin_token(),
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["responseHeader"]["params"] == {
        "store": "index",
        "q": "n:[2 TO 5]",
        "fq": ["event.type:heartbeat", "-n:3"],
        "fl": "n,_m1key",  # _m1key is always in fl
        "rows": "10",
    }
    assert body["response"]["docs"] == [{"n": 2, "_m1key": 4}, {"n": 2.5, "_m1key": 5}]


def test_a_json_body_and_json_request_keys(srv: Server) -> None:
    response = srv.post(
        "/query",
        srv.admin_token(),
        json={
            "store": "index",
            "rows": 2,
            "json": {"query": "event.type:heartbeat", "filter": ["n:[3 TO *]"], "offset": 0},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"]["numFound"] == 2
    assert [doc["_m1key"] for doc in body["response"]["docs"]] == [2, 3]
    assert body["responseHeader"]["params"]["rows"] == "2"
    assert json.loads(body["responseHeader"]["params"]["json"])["query"] == "event.type:heartbeat"
    listed = srv.post(
        "/query",
        srv.admin_token(),
        json={"store": "index", "q": "_m1key:2", "rows": 1, "fl": ["n", "event.type"]},
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["response"]["docs"] == [{"n": 3, "event.type": "heartbeat", "_m1key": 2}]


def test_paging_sorting_and_fl(srv: Server) -> None:
    everything = found(srv, store="index", q="*", sort="n desc", rows="100", fl="n")
    assert [doc["_m1key"] for doc in everything["docs"]] == [3, 0, 2, 5, 4, 1, 6, 7, 8]
    assert all(set(doc) <= {"n", "_m1key"} for doc in everything["docs"])
    page = found(srv, store="index", q="*", sort="n desc", start="2", rows="3", fl="n")
    assert page["start"] == 2
    assert page["docs"] == everything["docs"][2:5]
    assert found(srv, store="index", q="*", start="100", rows="5")["docs"] == []
    multi = found(srv, store="index", q="tags:b", fl="tags,_m1.geo.*", rows="1")
    assert multi["docs"] == [
        {
            "tags": ["a", "b"],
            **{k: v for k, v in multi["docs"][0].items() if k.startswith("_m1.geo.")},
            "_m1key": 1,
        }
    ]
    assert multi["docs"][0]["_m1.geo.city_name"] == "London"
    default = found(srv, store="index", q="event.type:view", rows="10")
    assert [doc["_m1key"] for doc in default["docs"]] == [1, 8]  # _m1key asc
    assert default["docs"][1]["ok"] is True


def test_csv(srv: Server) -> None:
    response = query(
        srv, store="index", q="event.type:view", fl="label,tags,ok", rows="10", format="csv"
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text == (
        'label,tags,ok,_m1key\r\n,"a,b",,1\r\n"say ""hi"", then\nleave",,true,8\r\n'
    )
    rows = list(csv.reader(io.StringIO(response.text, newline="")))
    assert rows[2] == ['say "hi", then\nleave', "", "true", "8"]
    everything = query(srv, store="index", q="_m1key:0", rows="1", format="csv")
    header = next(csv.reader(io.StringIO(everything.text, newline="")))
    assert header[:2] == ["event.type", "n"]
    assert "_m1.receivedUTC" in header and "_m1key" in header
    # With csv, facets are not computed: the body is the CSV of the docs alone.
    with_facets = query(
        srv,
        store="index",
        q="_m1key:0",
        rows="1",
        fl="n",
        format="csv",
        json='{"facet": {"t": {"type": "terms", "field": "n"}}}',
    )
    assert with_facets.text == "n,_m1key\r\n5,0\r\n"


def test_several_stores_are_the_same_events(srv: Server) -> None:
    response = srv.post(
        "/orchestrate/addStores",
        srv.admin_token(),
        data={"environment": json.dumps({"stores": [{"name": "second"}]})},
    )
    assert response.status_code in (200, 204), response.text
    assert found(srv, store="index,second", q="*")["numFound"] == len(EVENTS)
    assert found(srv, store="second", q="event.type:heartbeat")["numFound"] == 4


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"q": "*"}, 400, "missing_parameter"),
        ({"store": "", "q": "*"}, 400, "missing_parameter"),
        ({"store": "nope", "q": "*"}, 404, "no_such_store"),
        ({"store": "index,nope", "q": "*"}, 404, "no_such_store"),
        ({"store": "index", "q": "a:(b"}, 400, "query_syntax"),
        ({"store": "index", "q": "bare"}, 400, "query_syntax"),
        ({"store": "index", "q": "*", "fq": "x:[1 TO"}, 400, "query_syntax"),
        ({"store": "index", "q": "*", "sort": "n sideways"}, 400, "bad_request"),
        ({"store": "index", "q": "*", "format": "xml"}, 400, "bad_parameter"),
        ({"store": "index", "q": "*", "json": "{nope"}, 400, "invalid_json"),
        ({"store": "index", "q": "*", "json": "[1]"}, 400, "bad_parameter"),
        ({"store": "index", "q": "*", "json": '{"limits": 3}'}, 400, "bad_parameter"),
        ({"store": "index", "q": "_m1.receivedUTC:[yesterday TO *]"}, 400, "bad_date"),
    ],
)
def test_bad_requests(srv: Server, params: dict[str, str], status: int, code: str) -> None:
    body = assert_error(query(srv, **params), status)
    assert body["error"] == code


def test_a_syntax_error_says_where(srv: Server) -> None:
    body = assert_error(query(srv, store="index", q="event.type:view AND (n:1"), 400)
    assert "at character" in body["message"]


def test_rights(srv: Server) -> None:
    assert_error(srv.post("/query", data={"store": "index", "q": "*"}), 401)
    publisher = srv.add_user("query-publisher", "publisher-pw-1", ["publish"])
    assert_error(query(srv, publisher, store="index", q="*"), 403)
    reader = srv.add_user("query-reader", "reader-pw-123", ["get"])
    assert found(srv, store="index", q="*")["numFound"] == len(EVENTS)
    assert query(srv, reader, store="index", q="*").status_code == 200


# -- abuse: a fast 400, never a 500 or a hang ----------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"q": "(" * 10_000 + "a:b" + ")" * 10_000}, "query_too_complex"),
        ({"q": "*", "fq": "(" * 10_000 + "a:b" + ")" * 10_000}, "query_too_complex"),
        ({"q": "*", "rows": "1000000000"}, "bad_parameter"),
        ({"q": "*", "start": "1000000000"}, "bad_parameter"),
        ({"q": "*", "start": "99999", "rows": "2"}, "bad_parameter"),
        ({"q": "*", "rows": "-1"}, "bad_parameter"),
        ({"q": "*", "start": "-1"}, "bad_parameter"),
        ({"q": "*", "rows": "abc"}, "bad_parameter"),
        ({"q": "*", "rows": "1e3"}, "bad_parameter"),
        ({"q": "*", "rows": "99999999999999999999999999"}, "bad_parameter"),
        ({"q": " OR ".join(f"a:{i}" for i in range(2_000))}, "query_too_complex"),
        ({"q": "*", "json": '{"limit": 1000000000}'}, "bad_parameter"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, dict) else value,
)
def test_hostile_parameters(srv: Server, params: dict[str, str], code: str) -> None:
    started = time.monotonic()
    body = assert_error(query(srv, store="index", **params), 400)
    assert body["error"] == code
    assert time.monotonic() - started < 10, "a hostile query must be refused fast"


@pytest.mark.parametrize(
    ("q", "count"),
    [
        ("_m1key:99999999999999999999", 0),
        ("_m1key:[-5 TO 1e30]", len(EVENTS)),
        ("n:1e308", 0),
        ("n:[-1e400 TO 1e400]", 0),
        ("n:[2.5 TO 2.5]", 1),
        ("event.type:" + "x" * 5_000, 0),
        ("label:say*", 1),
        ("label:say*leave", 1),  # `*` spans the line break
    ],
)
def test_extreme_values_are_answered(srv: Server, q: str, count: int) -> None:
    assert found(srv, store="index", q=q)["numFound"] == count


def test_limits_themselves_are_allowed(srv: Server) -> None:
    assert found(srv, store="index", q="*", rows="10000")["numFound"] == len(EVENTS)
    assert found(srv, store="index", q="*", start="90000", rows="10000")["docs"] == []


def test_runaway_wildcard(server: Server) -> None:
    items = [{"code": f"k{i:05d}"} for i in range(3_000)]
    response = server.post(
        "/write", server.admin_token(), data={"items": json.dumps(items), "async": "false"}
    )
    assert response.status_code == 200, response.text
    body = assert_error(query(server, store="index", q="code:k*"), 400)
    assert body["error"] == "too_many_terms"
    assert found(server, store="index", q="code:k001*")["numFound"] == 100
    assert found(server, store="index", q="code:k0?0*")["numFound"] == 300
    assert query(server, store="index", q="code:k?????").status_code == 400
    assert found(server, store="index", q="code:[k00000 TO k02999]")["numFound"] == 3_000


# -- visibility and store state --------------------------------------------------------------


def test_an_acknowledged_write_is_visible_to_the_next_query(server: Server) -> None:
    token = server.admin_token()
    for round_ in range(20):
        response = server.post(
            "/write",
            token,
            data={"items": json.dumps([{"round": round_, "kind": "ack"}]), "async": "false"},
        )
        assert response.status_code == 200
        [key] = response.json()
        docs = found(server, store="index", q=f"round:{round_}", rows="5")["docs"]
        assert [doc["_m1key"] for doc in docs] == [key]
        assert found(server, store="index", q="kind:ack")["numFound"] == round_ + 1


def test_unpublished_events_are_not_found(server: Server) -> None:
    token = server.admin_token()
    for publish in ("false", "true"):
        response = server.post(
            "/write",
            token,
            data={"items": '[{"p": "x"}]', "async": "false", "publish": publish},
        )
        assert response.status_code == 200
    assert [doc["_m1key"] for doc in found(server, store="index", q="p:x", rows="5")["docs"]] == [1]


def test_store_state(server: Server) -> None:
    token = server.admin_token()

    def write(n: int) -> None:
        items = json.dumps([{"kind": "s"}] * n)
        response = server.post("/write", token, data={"items": items, "async": "false"})
        assert response.status_code == 200

    write(2)
    off = server.post("/store/autocommit", token, data={"store": "index", "on": "false"})
    assert off.status_code == 204
    write(3)
    assert found(server, store="index", q="kind:s")["numFound"] == 2  # the frozen view
    on = server.post("/store/autocommit", token, data={"store": "index", "on": "true"})
    assert on.status_code == 204
    assert found(server, store="index", q="kind:s")["numFound"] == 5
    disable = server.post("/store/enable", token, data={"store": "index", "active": "false"})
    assert disable.status_code == 204
    body = assert_error(query(server, store="index", q="*"), 409)
    assert body["error"] == "store_disabled"


def test_session_store_names_are_not_data_stores(start_server: StartServer) -> None:
    server = start_server("--template", "eventsSessionStore")
    body = assert_error(query(server, store="stash", q="*"), 404)
    assert "session store" in body["message"]

"""`m1lite simulate` as a real subprocess against a real server: what it reports arrived.

- the acceptance run: 200 visitors for 20 s with a session store (timeoutSeconds 5,
  heartbeats every second to keep it short): the events it acknowledged are in /query,
  type by type; the sessions it made are in /session/query and, once the visitors are
  gone, each became exactly one sessionTimeout event; geo facets have data
- the guide's form `m1lite simulate config.json N` (installed entry point) with session
  null: heartbeats are events; ended with Ctrl-C (SIGINT)
- tokens that expire during the run: the simulator logs in again and loses nothing
- errors: no server (exit 2), a wrong password, an unknown session store (exit 1), and a
  server that does not trust the simulator's X-Forwarded-For (a warning)

No timing is judged: the tests wait (with generous deadlines) for what they expect.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import StartServer

from integration.server import Server, free_port
from m1lite.simulate.site import TEST_DB_ADDRESSES

pytestmark = pytest.mark.slow

GEO_DB = Path(__file__).parent.parent / "data" / "GeoIP2-City-Test.mmdb"
USER, PASSWORD = "sim", "simulated-visitors"
STORE, TIMEOUT_S = "sim", 5
ENTRY_POINT = Path(sys.executable).parent / "m1lite"
MODULE = [sys.executable, "-m", "m1lite"]
WAIT_S = 40.0


def start(start_server: StartServer, *flags: str) -> Server:
    if not GEO_DB.exists():
        from data.fetch_geoip_test_db import fetch

        fetch(GEO_DB)
    server = start_server(
        "--template", "eventsSessionStore", "--geoip", str(GEO_DB), *flags
    )  # fmt: skip
    server.add_user(USER, PASSWORD, ["publish", "sessionUpdate"])
    environment = {"sessionStores": [{"store": STORE, "timeoutSeconds": TIMEOUT_S}]}
    response = server.post(
        "/orchestrate/addStores",
        server.admin_token(),
        data={"environment": json.dumps(environment)},
    )
    assert response.status_code == 200, response.text
    return server


def simulate(
    server_url: str, *args: str, command: list[str] = MODULE, timeout: float = 90.0
) -> tuple[int, dict[str, Any], str]:
    """Run `m1lite simulate ... --json`; (exit code, summary or {}, stderr)."""
    done = subprocess.run(
        [*command, "simulate", "--server", server_url, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    summary = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, summary, done.stderr


def login_args(*more: str) -> list[str]:
    return ["--user", USER, "--password", PASSWORD, *more]


def facets(server: Server, path: str, facet: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = server.post(
        path,
        server.admin_token(),
        data={"q": "*", "rows": 0, "json": json.dumps({"facet": facet}), **params},
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()["facets"]
    return found


def terms(server: Server, field: str, path: str = "/query", **params: Any) -> dict[str, int]:
    """Counts by value of `field` (every value)."""
    if path == "/query":
        params.setdefault("store", "index")
    found = facets(server, path, {"f": {"type": "terms", "field": field, "limit": -1}}, **params)
    return {b["val"]: b["count"] for b in found.get("f", {"buckets": []})["buckets"]}


def session_count(server: Server) -> int:
    response = server.post("/session/query", server.admin_token(), data={"store": STORE, "rows": 0})
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout_s} s for {what}")
        time.sleep(0.2)


def assert_clean(summary: dict[str, Any]) -> None:
    """Everything sent was acknowledged: no errors, nothing dropped."""
    assert summary["errors"] == {}, summary["error_messages"]
    events = summary["events"]
    assert events["acknowledged"] == events["sent"]
    assert sum(events["dropped"].values()) == 0
    updates = summary["session_updates"]
    assert updates["acknowledged"] + updates["superseded"] == updates["sent"]


# -- the acceptance run ------------------------------------------------------------------------


def test_200_visitors_for_20_seconds_arrive_with_their_sessions(
    start_server: StartServer,
) -> None:
    server = start(start_server, "--trusted-proxies", "127.0.0.1")
    code, summary, stderr = simulate(
        server.url,
        *login_args("--session", STORE, "--users", "200", "--duration", "20"),
        "--heartbeat-ms", "1000", "--addresses", "32", "--seed", "7",
    )  # fmt: skip
    assert code == 0, stderr
    assert summary["stopped_by"] == "duration"
    assert "logged in as sim" in stderr and "X-Forwarded-For" not in stderr
    visitors = summary["visitors"]
    assert visitors["on_site_at_end"] == 200
    assert visitors["started"] == 200 + visitors["left"] and visitors["left"] > 0
    assert_clean(summary)
    acknowledged = summary["events"]["acknowledged"]
    assert acknowledged["sessionStart"] == visitors["started"]
    assert acknowledged["view"] >= visitors["started"]
    assert "heartbeat" not in acknowledged  # they went to the session store
    with_session = visitors["with_session"]
    assert 0 < with_session <= visitors["started"]
    assert summary["session_updates"]["acknowledged"] >= with_session
    assert summary["latency_ms"]["heartbeat"]["count"] > 0

    # The events it reports are in the index, type by type.
    by_type = terms(server, "event.type")
    assert by_type["sessionStart"] == acknowledged["sessionStart"]
    assert by_type["view"] == acknowledged["view"]
    assert "heartbeat" not in by_type
    # Each visitor has its own session and its own addresses' geo data.
    assert len(terms(server, "session.id", q="type:sessionStart")) == visitors["started"]
    assert len(terms(server, "_m1.ip")) == 32
    countries = terms(server, "_m1.geo.country_iso_code")
    assert {"GB", "US", "SE"} <= set(countries)
    states = terms(server, "_m1.geo.subdivision_1_iso_code")
    assert {"ENG", "WA"} <= set(states)
    view = server.post(
        "/query", server.admin_token(), data={"store": "index", "q": "type:view", "rows": 1}
    ).json()["response"]["docs"][0]
    for field in ("session.id", "session.start", "user.id", "event.id", "event.time", "url.href"):
        assert field in view, field
    assert view["url.href"] == f"https://{view['url.host']}{view['url.path']}{view['url.query']}"
    assert {"page.title", "page.referrer", "screen.width", "screen.height", "language"} <= set(view)

    # The sessions: live in the store until they lapse, then one sessionTimeout each.
    live = session_count(server)
    assert 0 < live <= with_session
    live_countries = terms(server, "_m1.geo.country_iso_code", "/session/query", store=STORE)
    assert {"GB", "US"} <= set(live_countries)
    wait_for("every session to time out", lambda: session_count(server) == 0)
    timeouts = terms(server, "session.id", q="type:sessionTimeout")
    assert len(timeouts) == with_session  # every visitor who left, and those at the end
    assert set(timeouts.values()) == {1}  # exactly once each
    assert terms(server, "event.type")["sessionTimeout"] == with_session


# -- the guide's form --------------------------------------------------------------------------


def test_config_json_form_without_a_session_store_until_ctrl_c(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start(start_server, "--trusted-proxies", "127.0.0.1")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "server": server.url,
                "session": None,
                "username": USER,
                "password": PASSWORD,
                "heartbeatMs": 1000,
                "comment": "keys the simulator does not know are ignored",
            }
        )
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(ENTRY_POINT), "simulate", str(config), "20", "--addresses", "8", "--json"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        try:
            wait_for("the logins", lambda: "logged in" in stderr_path.read_text(), 30)
            wait_for("a progress line", lambda: "visitors 20" in stderr_path.read_text(), 30)
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, stderr_path.read_text()
    summary = json.loads(out)
    assert summary["stopped_by"] == "SIGINT"
    assert summary["config"]["session"] is None and summary["config"]["users"] == 20
    assert_clean(summary)
    acknowledged = summary["events"]["acknowledged"]
    assert acknowledged["heartbeat"] > 0 and summary["session_updates"]["sent"] == 0
    # (heartbeats still queued when the run ended leave together, untimed)
    assert 0 < summary["latency_ms"]["heartbeat"]["count"] <= acknowledged["heartbeat"]
    assert terms(server, "event.type") == acknowledged  # no sessionTimeout without a store
    assert session_count(server) == 0
    # The events came through X-Forwarded-For from the pool's 8 addresses (with --addresses
    # 8, the test database's first 8); a run stopped this early need not have used them all.
    addresses = set(terms(server, "_m1.ip"))
    assert len(addresses) > 1 and addresses <= set(TEST_DB_ADDRESSES[:8])


# -- logins -------------------------------------------------------------------------------------


def test_expiring_tokens_are_renewed_without_losing_anything(start_server: StartServer) -> None:
    server = start(start_server, "--trusted-proxies", "127.0.0.1")
    response = server.post("/system/token-expire-ms", server.admin_token(), data={"value": "2500"})
    assert response.status_code == 204, response.text
    code, summary, stderr = simulate(
        server.url,
        *login_args("--session", STORE, "--users", "20", "--duration", "8"),
        "--heartbeat-ms", "500", "--addresses", "2", "--no-progress",
    )  # fmt: skip
    assert code == 0, stderr
    assert summary["logins"] > 2  # the two addresses logged in again when refused
    assert_clean(summary)
    assert terms(server, "event.type")["view"] == summary["events"]["acknowledged"]["view"]


# -- errors -------------------------------------------------------------------------------------


def test_no_server_is_exit_2_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, summary, stderr = simulate(url, *login_args("--users", "5", "--duration", "2"))
    assert code == 2 and summary == {}
    assert f"cannot reach {url}: connection refused" in stderr


def test_refusals_stop_the_run_with_exit_1(shared_server: Server) -> None:
    shared_server.add_user(USER, PASSWORD, ["publish", "sessionUpdate"])
    code, summary, stderr = simulate(
        shared_server.url, "--user", USER, "--password", "not the password", "--users", "2"
    )
    assert code == 1 and summary == {}
    assert "login as sim refused: 401" in stderr
    code, summary, stderr = simulate(
        shared_server.url,
        *login_args("--session", "nosuch", "--users", "3", "--duration", "20"),
        "--heartbeat-ms", "200", "--addresses", "1",
    )  # fmt: skip
    assert code == 1, stderr
    assert "no session store named nosuch" in stderr
    assert summary["stopped_by"] == "error" and set(summary["errors"]) == {"404"}


def test_an_untrusting_server_gets_a_warning_and_sees_one_address(shared_server: Server) -> None:
    shared_server.add_user("sim2", PASSWORD, ["publish"])
    code, summary, stderr = simulate(
        shared_server.url,
        "--user", "sim2", "--password", PASSWORD,
        "--users", "5", "--duration", "3", "--addresses", "4", "--heartbeat-ms", "500",
    )  # fmt: skip
    assert code == 0, stderr
    assert "does not take X-Forwarded-For" in stderr
    assert_clean(summary)
    assert set(terms(shared_server, "_m1.ip")) == {"127.0.0.1"}

"""The browser scripts in a real browser: headless chromium visits a site instrumented with
/m1.js or with the guide's instrumentation.js + M1Events.js pair, against a real server.

The site is examples/site, served by a small file server on 127.0.0.1 under the guide's
http://localhost.somethingunique (chromium maps the name as the guide's hosts entry does).
What counts is what the server stored, read back with /query and /session/query as admin,
and what the browser's console said.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from integration.browser import (
    INSTRUMENT_PASSWORD,
    NOT_LISTED,
    WHITELISTED,
    Console,
    launch,
    of_type,
    query,
    serve_site,
    session_events,
    session_store,
    site_with_m1js,
    site_with_pair,
    wait_for,
)
from integration.server import Server

StartServer = Callable[..., Server]

HEARTBEAT_MS = 250
STORE = "stash"
STORE_TIMEOUT_S = 2
FLAVORS = ["m1.js", "pair"]
SCRIPTS = ["/m1.js", "/js/M1Events.js", "/js/instrumentation.js"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def m1(start_module_server: StartServer) -> Server:
    """One server set up as the guide says: a publish-only `instrument` user, the
    localhost.somethingunique whitelist entry, and (for "Heartbeats on a Budget") a session
    store with a short timeout and a `budget` user who may also update sessions."""
    server = start_module_server()
    admin = server.admin_token()
    response = server.post("/system/cors/add", admin, data={"domains": WHITELISTED})
    assert response.status_code == 204, response.text
    # The guide's user/add, character for character but the host.
    response = server.post(
        "/user/add",
        admin,
        data={"username": "instrument", "password": INSTRUMENT_PASSWORD, "rights": '["publish"]'},
    )
    assert response.status_code == 204, response.text
    stores = (
        '{"environment": {"stores": [], "sessionStores": '
        f'[{{"store": "{STORE}", "timeoutSeconds": {STORE_TIMEOUT_S}}}]}}}}'
    )
    response = server.post("/orchestrate/addStores", admin, data={"environment": stores})
    assert response.status_code == 200, response.text
    server.add_user("budget", INSTRUMENT_PASSWORD, ["publish", "sessionUpdate"])
    return server


def make_site(flavor: str, target: Path, server: Server, **options: Any) -> Path:
    """The example site instrumented one way or the other, with the same settings."""
    user = options.pop("user", "instrument")
    heartbeat_ms = options.pop("heartbeat_ms", HEARTBEAT_MS)
    store = options.pop("session_store", None)
    if flavor == "m1.js":
        attributes: dict[str, str | int] = {
            "user": user,
            "password": INSTRUMENT_PASSWORD,
            "heartbeat_ms": heartbeat_ms,
        }
        if store:
            attributes["session_store"] = store
        return site_with_m1js(target, server, **attributes, **options)
    return site_with_pair(
        target, server, user=user, heartbeat_ms=heartbeat_ms, session_store=store, **options
    )


OpenPage = Callable[[], tuple[Page, Console]]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """A tab in a fresh browser profile, and what its pages say on the console. The profile
    outlives the tab until the test ends: closing it would cancel the tab's last beacons,
    which a browser that stays open delivers."""
    contexts: list[BrowserContext] = []

    def open_one() -> tuple[Page, Console]:
        context = browser.new_context()
        contexts.append(context)
        return context.new_page(), Console().attach(context)

    yield open_one
    for context in contexts:
        context.close()


def close(page: Page) -> None:
    """Close the tab the way a visitor does: the page gets its pagehide."""
    page.close()


def assert_clean(console: Console) -> None:
    assert console.page_errors == []
    assert console.errors == []


def visit(page: Page, origin: str) -> list[str]:
    """From index.html, browse the site: full page loads and history-API navigation.
    Returns the addresses the visitor saw, one per page view, in order."""
    seen = [f"{origin}/index.html"]
    page.click("#about")
    page.wait_for_url("**/about.html")
    seen.append(f"{origin}/about.html")
    page.click("#app")
    page.wait_for_url("**/app.html")
    seen.append(f"{origin}/app.html")
    # Same-document navigation: pushState, then popstate (back), then pushState again.
    page.click("#tab-pricing")
    page.wait_for_function("document.title.startsWith('Pricing')")
    seen.append(f"{origin}/app.html?tab=pricing")
    page.click("#back")
    page.wait_for_function("document.title.startsWith('Overview')")
    seen.append(f"{origin}/app.html")
    page.click("#tab-contact")
    page.wait_for_function("document.title.startsWith('Contact')")
    seen.append(f"{origin}/app.html?tab=contact")
    # A reload is a page view too.
    page.reload()
    seen.append(f"{origin}/app.html?tab=contact")
    return seen


def assert_event_shape(event: dict[str, Any], session_id: str) -> None:
    assert event["type"] == event["event.type"]
    assert event["session.id"] == session_id
    assert isinstance(event["session.start"], int)
    assert isinstance(event["event.time"], int) and event["event.time"] >= event["session.start"]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", event["event.id"]
    )
    assert event["user.id"]
    assert event["url.host"].startswith(WHITELISTED + ":")
    assert event["url.path"].endswith(".html")
    assert event["page.title"].endswith("example site") or event["page.title"].endswith("app")
    assert event["screen.width"] > 0 and event["screen.height"] > 0
    assert event["language"]


# -- the scripts over HTTP -----------------------------------------------------------------


@pytest.mark.parametrize("path", SCRIPTS)
def test_the_scripts_are_served_as_javascript_with_validators(m1: Server, path: str) -> None:
    response = httpx.get(m1.url + path, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=300"
    etag = response.headers["etag"]
    assert etag.startswith('"')
    again = httpx.get(m1.url + path, headers={"Accept-Encoding": "identity", "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    zipped = httpx.get(m1.url + path, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == response.content  # httpx decodes it
    assert zipped.headers["etag"] != etag


def test_m1js_is_small_and_has_no_comments(m1: Server) -> None:
    body = httpx.get(m1.url + "/m1.js", headers={"Accept-Encoding": "identity"}).content
    assert len(gzip.compress(body, 9)) < 4096
    assert not any(line.lstrip().startswith("//") for line in body.decode().splitlines())


def test_instrumentation_js_has_the_required_parameters_section(m1: Server) -> None:
    source = m1.get("/js/instrumentation.js").text
    section = source.split("REQUIRED PARAMETERS", 1)[1].split("END OF REQUIRED PARAMETERS")[0]
    for name in (
        "M1_ENVIRONMENT_URL",
        "M1_USER",
        "M1_PASSWORD",
        "HEARTBEAT_INTERVAL_MS",
        "M1_SESSION_STORE",
        "M1_ASYNC",
    ):
        assert re.search(rf"^\s*var {name} = .*;$", section, re.MULTILINE), name
    assert "jQuery" not in m1.get("/js/M1Events.js").text.split("\n", 3)[3]


# -- a visit ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_visit_is_recorded_as_one_session(
    open_page: OpenPage, m1: Server, tmp_path: Path, flavor: str
) -> None:
    samples = ("custom-events", "click-capture") if flavor == "pair" else ()
    site = make_site(flavor, tmp_path / "site", m1, **({"samples": samples} if samples else {}))
    page, console = open_page()
    with serve_site(site) as port:
        origin = f"http://{WHITELISTED}:{port}"
        page.goto(f"{origin}/index.html")
        if flavor == "pair":
            page.click("#add-to-cart")  # the custom-events sample
        else:
            page.evaluate("m1.event('addToCart', {sku: 'A-42'})")
        session_id = page.evaluate("m1.sessionId()")
        seen = visit(page, origin)
        # Heartbeats while the last page is visible.
        wait_for(
            lambda: [
                beat
                for beat in of_type(session_events(m1, session_id), "heartbeat")
                if beat["url.href"] == seen[-1]
            ][2:],
            "heartbeats from the last page",
        )
        assert page.evaluate("m1.sessionId()") == session_id
        close(page)
        events = wait_for(
            lambda: (
                (e := session_events(m1, session_id)) and len(of_type(e, "view")) >= len(seen) and e
            ),
            "every page view",
            show=lambda: [(e["type"], e["url.href"]) for e in session_events(m1, session_id)],
        )

    assert len(of_type(events, "sessionStart")) == 1
    assert events[0]["type"] == "sessionStart"
    views = of_type(events, "view")
    assert [view["url.href"] for view in views] == seen
    # Titles as the visitor saw them; the referrer is the page before.
    assert views[3]["page.title"] == "Pricing – m1lite example app"
    assert views[1]["page.referrer"] == seen[0]
    assert views[4]["page.referrer"] == seen[3]
    carts = of_type(events, "addToCart")
    assert len(carts) == 1 and carts[0]["event.data.sku"] == "A-42"
    if flavor == "pair":
        clicked = [event["event.data.text"] for event in of_type(events, "click")]
        assert clicked[:5] == ["Add to cart", "About", "App", "Pricing", "Back"]
    for event in events:
        assert_event_shape(event, session_id)
    assert len({event["user.id"] for event in events}) == 1
    assert len({event["event.id"] for event in events}) == len(events)
    assert_clean(console)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_heartbeats_in_a_session_store_end_in_one_session_timeout(
    open_page: OpenPage, m1: Server, tmp_path: Path, flavor: str
) -> None:
    site = make_site(flavor, tmp_path / "site", m1, user="budget", session_store=STORE)
    page, console = open_page()
    with serve_site(site) as port:
        origin = f"http://{WHITELISTED}:{port}"
        page.goto(f"{origin}/index.html")
        page.click("#about")
        page.wait_for_url("**/about.html")
        session_id = page.evaluate("m1.sessionId()")
        live = wait_for(
            lambda: (
                (docs := session_store(m1, STORE, session_id))
                and docs[0]["url"]["path"] == "/about.html"
                and docs
            ),
            "the session's document in the session store",
        )
        close(page)
    assert live[0]["type"] == "heartbeat" and live[0]["event"]["type"] == "heartbeat"
    assert live[0]["session"]["id"] == session_id

    timeouts = wait_for(
        lambda: of_type(session_events(m1, session_id), "sessionTimeout"), "a sessionTimeout"
    )
    # A few more flusher rounds: still exactly one, and the session left the store.
    time.sleep(STORE_TIMEOUT_S + 1)
    events = session_events(m1, session_id)
    assert len(of_type(events, "sessionTimeout")) == 1
    timeout = timeouts[0]
    assert timeout["event.type"] == "sessionTimeout"
    assert timeout["url.path"] == "/about.html"
    assert session_store(m1, STORE, session_id) == []
    # Heartbeats went to the store only; the events are the session's start and views.
    assert of_type(events, "heartbeat") == []
    assert len(of_type(events, "sessionStart")) == 1
    assert [view["url.path"] for view in of_type(events, "view")] == ["/index.html", "/about.html"]
    assert_clean(console)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_site_that_is_not_whitelisted_stores_nothing(
    open_page: OpenPage, m1: Server, tmp_path: Path, flavor: str
) -> None:
    site = make_site(flavor, tmp_path / "site", m1)
    page, console = open_page()
    with serve_site(site) as port:
        page.goto(f"http://{NOT_LISTED}:{port}/index.html")
        page.click("#about")
        page.wait_for_url("**/about.html")
        # The script keeps trying (with backoff); its attempts are refused by CORS.
        wait_for(lambda: len(console.errors) >= 2, "the refused requests in the console")
        page.wait_for_timeout(1500)
        close(page)
    hosts = {doc["url.host"] for doc in query(m1, "url.host:*", fl="url.host", rows=10000)}
    assert not any(host.startswith(NOT_LISTED) for host in hosts), hosts
    assert console.page_errors == []
    # The only complaint is the refused cross-origin request, nothing else.
    assert console.errors
    for error in console.errors:
        assert "blocked by CORS policy" in error or error == (
            "Failed to load resource: net::ERR_FAILED"
        ), error


def test_m1js_with_a_token_instead_of_a_password(
    open_page: OpenPage, m1: Server, tmp_path: Path
) -> None:
    token = m1.login("instrument", INSTRUMENT_PASSWORD)
    site = site_with_m1js(tmp_path / "site", m1, token=token, heartbeat_ms=0)
    page, console = open_page()
    with serve_site(site) as port:
        page.goto(f"http://{WHITELISTED}:{port}/index.html")
        session_id = page.evaluate("m1.sessionId()")
        events = wait_for(lambda: of_type(session_events(m1, session_id), "view"), "the view")
        close(page)
    assert events[0]["url.path"] == "/index.html"
    assert_clean(console)


def test_what_is_queued_when_the_tab_closes_leaves_with_a_beacon(
    open_page: OpenPage, m1: Server, tmp_path: Path
) -> None:
    site = site_with_m1js(
        tmp_path / "site", m1, user="instrument", password=INSTRUMENT_PASSWORD, heartbeat_ms=0
    )
    page, console = open_page()
    with serve_site(site) as port:
        page.goto(f"http://{WHITELISTED}:{port}/index.html")
        session_id = page.evaluate("m1.sessionId()")
        wait_for(lambda: of_type(session_events(m1, session_id), "view"), "the view")
        # Batches leave after a second; the tab closes before that.
        page.evaluate("m1.event('leaving', {n: 1}); m1.event('leaving', {n: 2})")
        close(page)
        left = wait_for(
            lambda: of_type(session_events(m1, session_id), "leaving"), "the beaconed events"
        )
    assert [event["event.data.n"] for event in left] == [1, 2]
    assert_clean(console)


def test_a_revoked_token_is_renewed(open_page: OpenPage, m1: Server, tmp_path: Path) -> None:
    m1.add_user("rotated", INSTRUMENT_PASSWORD, ["publish"])
    site = site_with_m1js(
        tmp_path / "site", m1, user="rotated", password=INSTRUMENT_PASSWORD, heartbeat_ms=0
    )
    page, console = open_page()
    with serve_site(site) as port:
        page.goto(f"http://{WHITELISTED}:{port}/index.html")
        session_id = page.evaluate("m1.sessionId()")
        wait_for(lambda: of_type(session_events(m1, session_id), "view"), "the first view")
        # Removing the user revokes its tokens, the tab's included; the user comes back.
        admin = m1.admin_token()
        assert m1.post("/user/remove", admin, data={"username": "rotated"}).status_code == 204
        m1.add_user("rotated", INSTRUMENT_PASSWORD, ["publish"])
        page.click("#about")
        page.wait_for_url("**/about.html")
        views = wait_for(
            lambda: len(v := of_type(session_events(m1, session_id), "view")) == 2 and v,
            "the view sent with a renewed token",
        )
        close(page)
    assert views[1]["url.path"] == "/about.html"
    assert console.page_errors == []
    # Chromium logs the refused request itself; the script renewed the token and went on.
    assert console.errors == [
        "Failed to load resource: the server responded with a status of 401 ()"
    ]


# -- the server goes away -----------------------------------------------------------------


def test_events_queued_while_the_server_is_down_arrive_once(
    open_page: OpenPage, start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    admin = server.admin_token()
    server.post("/system/cors/add", admin, data={"domains": WHITELISTED})
    server.add_user("instrument", INSTRUMENT_PASSWORD, ["publish"])
    site = site_with_m1js(
        tmp_path / "site",
        server,
        user="instrument",
        password=INSTRUMENT_PASSWORD,
        heartbeat_ms=HEARTBEAT_MS,
    )
    page, console = open_page()
    with serve_site(site) as port:
        page.goto(f"http://{WHITELISTED}:{port}/app.html")
        session_id = page.evaluate("m1.sessionId()")
        wait_for(lambda: of_type(session_events(server, session_id), "heartbeat"), "a heartbeat")

        server.stop()  # SIGTERM: the server drains and exits
        down_at = int(time.time() * 1000)
        page.click("#tab-pricing")  # a view while nothing answers
        page.wait_for_timeout(10_000)
        up_at = int(time.time() * 1000)
        server.start()  # same data directory, same port

        # The queued view and the heartbeats of the outage arrive once the server is back.
        wait_for(
            lambda: any(
                view["url.href"].endswith("?tab=pricing")
                for view in of_type(session_events(server, session_id), "view")
            ),
            "the view made while the server was down",
            timeout=45,
        )
        page.wait_for_timeout(1500)  # and whatever was sent since
        close(page)
        time.sleep(0.5)  # the pagehide beacon

    events = session_events(server, session_id)
    ids = [event["event.id"] for event in events]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    during = [
        event
        for event in of_type(events, "heartbeat")
        if down_at + 500 <= event["event.time"] <= up_at - 500
    ]
    # 10 s at 4 heartbeats a second: nearly all of them made it.
    assert len(during) >= 30
    assert [view["url.path"] for view in of_type(events, "view")] == ["/app.html", "/app.html"]
    assert len(of_type(events, "sessionStart")) == 1
    assert console.page_errors == []
    # The console reports the failed attempts; nothing else went wrong.
    for error in console.errors:
        assert "ERR_CONNECTION_REFUSED" in error or "CORS" in error, error


def test_the_queue_is_bounded_and_says_how_many_it_dropped(
    open_page: OpenPage, start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    admin = server.admin_token()
    server.post("/system/cors/add", admin, data={"domains": WHITELISTED})
    server.add_user("instrument", INSTRUMENT_PASSWORD, ["publish"])
    site = site_with_m1js(
        tmp_path / "site", server, user="instrument", password=INSTRUMENT_PASSWORD, heartbeat_ms=0
    )
    page, console = open_page()
    with serve_site(site) as port:
        page.goto(f"http://{WHITELISTED}:{port}/index.html")
        session_id = page.evaluate("m1.sessionId()")
        wait_for(lambda: of_type(session_events(server, session_id), "view"), "the view")
        server.stop()
        # 600 events while nothing answers: the queue keeps the newest 500.
        page.evaluate("for (let n = 0; n < 600; n++) m1.event('burst', {n: n})")
        server.start()
        burst = wait_for(
            lambda: len(b := of_type(session_events(server, session_id), "burst")) >= 500 and b,
            "the queued events",
            timeout=45,
        )
        close(page)
    assert [event["event.data.n"] for event in burst] == list(range(100, 600))
    assert sum(event.get("event.dropped", 0) for event in burst) == 100
    assert len({event["event.id"] for event in burst}) == 500
    assert console.page_errors == []

"""What the dashboard tests share: a server full of events, a browser, and the page read
back and compared with /query (tests/integration/test_dashboard*.py).

The server runs with the MaxMind test database and trusts X-Forwarded-For from loopback.
`m1lite simulate` fills it, three runs side by side, from addresses the test database
places in several countries: visitors whose heartbeats go to the session store `stash`
(live for the whole test session: they are the visitors online now), to `short` (its
sessions lapse within seconds and become sessionTimeout events) and as events. A few
visitors written with /write add a page path full of quotes and markup, to show that event
values are text on the page, never HTML.

The fill takes seconds, so `dash` is session-scoped: every dashboard module asks questions
of the same server (tests/integration/conftest.py makes the fixtures visible to them), and
tests only read from it or add uniquely named users. Screenshots at 1280x800 and 390x844 are
written to tests/artifacts/dashboard/ (M1LITE_TEST_ARTIFACTS overrides it).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, sync_playwright

from integration.browser import Console, launch, wait_for
from integration.server import Server

GEO_DB = Path(__file__).resolve().parents[1] / "data" / "GeoIP2-City-Test.mmdb"
ARTIFACTS = Path(
    os.environ.get("M1LITE_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
)
VIEWER, VIEWER_PASSWORD = "viewer", "viewer-password"
LIVE_STORE, SHORT_STORE = "stash", "short"
TIME = "_m1.receivedUTC"
# Addresses in the test database: GB/ENG, US/WA, SE, GB (no region), BT; and loopback
# (no X-Forwarded-For), which has no geo data at all.
ADDRESSES = ["81.2.69.142", "216.160.83.56", "89.160.20.112", "2.125.160.216", "67.43.156.1"]
# A page whose path holds quotes and markup: the page must show it as text.
HOSTILE = '/blog/a "quoted" <b>title</b>'
PATHS = ["/", "/pricing", HOSTILE, HOSTILE]
REFERRERS = ["", "https://www.google.com/", "https://news.ycombinator.com/item?id=1"]
SESSIONS = 12
SIMULATE_S = 8
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


# -- the data --------------------------------------------------------------------------------


def browser_event(kind: str, session: dict[str, Any], path: str, at_ms: int) -> dict[str, Any]:
    """An event as the browser script sends it (docs/api.md, Browser scripts)."""
    return {
        "type": kind,
        "event": {"id": str(uuid.uuid4()), "time": at_ms, "type": kind},
        "session": {"id": session["id"], "start": session["start"]},
        "user": {"id": session["user"]},
        "url": {
            "href": f"https://shop.example{path}",
            "host": "shop.example",
            "path": path,
            "query": "",
            "hash": "",
        },
        "page": {"title": f"Shop {path}", "referrer": session["referrer"]},
        "screen": {"width": 1280, "height": 800},
        "language": "en-GB",
    }


def fill(server: Server, token: str, seed: int = 11) -> None:
    """Write SESSIONS visitors' events with /write from several addresses (every 7th from
    loopback: no geo data), their views on PATHS, a third with heartbeats as events."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    for n in range(SESSIONS):
        address = ADDRESSES[n % len(ADDRESSES)] if n % 7 else None
        start = now - rng.randrange(60_000, 1_800_000)
        session = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "start": start,
            "referrer": REFERRERS[n % len(REFERRERS)],
        }
        items = [browser_event("sessionStart", session, "/", start)]
        for view in range(1 + n % 4):
            path = rng.choice(PATHS)
            at = start + view * 20_000
            items.append(browser_event("view", session, path, at))
            if n % 3 == 0:
                items += [
                    browser_event("heartbeat", session, path, at + 5_000 * (k + 1))
                    for k in range(rng.randint(1, 5))
                ]
        headers = {"X-Forwarded-For": address} if address else {}
        response = server.post(
            "/write",
            token,
            headers=headers,
            data={"items": json.dumps(items), "async": "false"},
        )
        assert response.status_code == 200, response.text


def ask(server: Server, path: str = "/query", **params: Any) -> dict[str, Any]:
    """One question as admin (of the store `index` unless told); lists repeat, dicts are
    JSON."""
    if path == "/query":
        params.setdefault("store", "index")
    data: list[tuple[str, str]] = []
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            data.append((name, json.dumps(item) if isinstance(item, dict) else str(item)))
    response = server.post(
        path,
        server.admin_token(),
        content=urlencode(data),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def live_count(server: Server, store: str) -> int:
    return int(ask(server, "/session/query", store=store, rows=0)["count"])


def simulate(
    server: Server, token: str, *args: str, seconds: int = SIMULATE_S
) -> subprocess.Popen[str]:
    """`m1lite simulate` against the server, as an operator runs it, from addresses of the
    test database (its first 14; the other two are random and have no geo data)."""
    command = [sys.executable, "-m", "m1lite", "simulate", "--server", server.url]
    command += ["--token", token, "--duration", str(seconds), "--addresses", "16"]
    command += ["--no-progress", "--json", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(run: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    summary: dict[str, Any] = json.loads(out)
    assert summary["errors"] == {}, summary["error_messages"]
    assert summary["events"]["acknowledged"] == summary["events"]["sent"]
    return summary


@pytest.fixture(scope="session")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The filled server, once for every dashboard module (the fill is the slow part)."""
    base = tmp_path_factory.mktemp("dashboard")
    flags = ("--geoip", str(GEO_DB), "--trusted-proxies", "127.0.0.1")
    server = Server(base / "data", base / "logs", flags=flags).start()
    try:
        fill_stores(server)
        yield server
    finally:
        server.stop()


def fill_stores(server: Server) -> None:
    admin = server.admin_token()
    stores = {
        "stores": [],
        "sessionStores": [
            {"store": LIVE_STORE, "timeoutSeconds": 3600},
            {"store": SHORT_STORE, "timeoutSeconds": 1},
        ],
    }
    response = server.post(
        "/orchestrate/addStores", admin, data={"environment": json.dumps(stores)}
    )
    assert response.status_code == 200, response.text
    server.add_user(VIEWER, VIEWER_PASSWORD, ["get", "sessionQuery"])
    # A token good from any address: the events come "through a proxy" from many.
    writer = server.login("admin", server.admin_password, ip="*")
    runs = [
        simulate(server, writer, "--session", LIVE_STORE, "--users", "40", "--seed", "1"),
        simulate(
            server,
            writer,
            "--session",
            SHORT_STORE,
            "--users",
            "20",
            "--seed",
            "2",
            "--heartbeat-ms",
            "500",
        ),
        simulate(server, writer, "--users", "20", "--seed", "3", "--heartbeat-ms", "1000"),
    ]
    fill(server, writer)
    summaries = [finished(run) for run in runs]
    # The short store's visitors stopped: their sessions lapse and become events. The
    # flusher writes the events and removes the sessions in one transaction.
    wait_for(lambda: live_count(server, SHORT_STORE) == 0, "the short store to flush", 20)
    ended = ask(server, q="event.type:sessionTimeout")["response"]["numFound"]
    assert ended >= summaries[1]["visitors"]["with_session"] > 0
    assert live_count(server, LIVE_STORE) == summaries[0]["visitors"]["with_session"] > 0


# -- the browser -----------------------------------------------------------------------------


# Per module, not per session: playwright's sync API runs one instance at a time, and
# other modules (test_browser.py) start their own.
@pytest.fixture(scope="module")
def dash_browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@dataclass
class Tab:
    """A page in a fresh profile, with what went wrong on it: console errors, page
    errors, failed requests and answers of 400 or more."""

    page: Page
    context: BrowserContext
    console: Console
    failed: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.console.page_errors == []
        assert self.console.errors == []
        assert self.failed == []


@pytest.fixture
def open_tab(dash_browser: Browser) -> Iterator[Callable[..., Tab]]:
    contexts: list[BrowserContext] = []

    def open_one(viewport: dict[str, int] = DESKTOP) -> Tab:
        context = dash_browser.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
        contexts.append(context)
        tab = Tab(context.new_page(), context, Console().attach(context))

        def on_response(response: Response) -> None:
            if response.status >= 400:
                tab.failed.append(f"{response.status} {response.url}")

        context.on("response", on_response)
        context.on("requestfailed", lambda request: tab.failed.append(f"failed {request.url}"))
        return tab

    yield open_one
    for context in contexts:
        context.close()


def loaded_generation(page: Page) -> int:
    return int(page.evaluate("Number(document.body.dataset.loaded || 0)"))


def wait_loaded(page: Page, after: int = 0) -> int:
    """Wait until a refresh newer than `after` has drawn every panel; its number."""
    # A function, not an expression: the page's CSP forbids the eval an expression needs.
    page.wait_for_function(
        "(after) => Number(document.body.dataset.loaded || 0) > after && "
        "document.body.dataset.loading === 'false'",
        arg=after,
        timeout=15_000,
    )
    return loaded_generation(page)


def log_in(page: Page, url: str, user: str = VIEWER, password: str = VIEWER_PASSWORD) -> None:
    page.goto(url)
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-submit")


def open_overview(tab: Tab, server: Server, fragment: str = "") -> None:
    log_in(tab.page, f"{server.url}/ui/{fragment}")
    wait_loaded(tab.page)


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    print(f"screenshot: {target}")
    return target


# What the page shows, read in one go (a live refresh cannot land half-way through).
READ_PAGE = """() => {
  const number = (text) => Number(text.replace(/[^0-9]/g, ""));
  const metric = (name) => document.querySelector(`[data-metric="${name}"]`);
  const rows = (panel) => [...document.querySelectorAll(`#${panel} .bars .row`)].map(
    (row) => [row.dataset.key, Number(row.querySelector(".value").dataset.value)]);
  const win = document.getElementById("window");
  return {
    from: win.dataset.from, to: win.dataset.to,
    chips: [...document.querySelectorAll("#chips .chip")].map((c) => c.dataset.fq),
    online: number(metric("online").textContent),
    visitors: number(metric("visitors").textContent),
    sessions: number(metric("sessions").textContent),
    views: number(metric("views").textContent),
    events: number(metric("events").textContent),
    avgSession: metric("avg-session").dataset.value ?? null,
    stored: number(metric("stored").textContent),
    pages: rows("panel-pages"),
    referrers: rows("panel-referrers"),
    countries: rows("panel-countries"),
    types: rows("panel-types"),
    exits: rows("panel-exits"),
    timeOnPage: rows("panel-timeonpage"),
    recent: [...document.querySelectorAll("#panel-recent tbody tr")].map(
      (tr) => Number(tr.dataset.key)),
    timeline: [...document.querySelectorAll("#timeline-table tbody tr")].map((tr) => [
      tr.dataset.start,
      ...[...tr.querySelectorAll("td.num")].map((td) => number(td.textContent))]),
  };
}"""


def read_page(page: Page) -> dict[str, Any]:
    shown: dict[str, Any] = page.evaluate(READ_PAGE)
    return shown


def duration(seconds: int) -> str:
    """As the page writes a duration: 45s, 3m 05s, 2h 07m."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def buckets(facet: dict[str, Any], stat: str | None = None) -> list[list[Any]]:
    """[[key, number]] as the page's bar lists hold them (missing values last)."""
    rows = [[str(b["val"]), b[stat] if stat else b["count"]] for b in facet["buckets"]]
    missing = facet.get("missing")
    if missing and missing["count"]:
        rows.append(["(missing)", missing[stat] if stat else missing["count"]])
    return rows


def expected(server: Server, shown: dict[str, Any], store: str = LIVE_STORE) -> dict[str, Any]:
    """The page's questions asked of /query directly: the window it shows, its chips."""
    window = f"{TIME}:[{quoted(shown['from'])} TO {quoted(shown['to'])}}}"
    fq = [window, *shown["chips"]]
    sessions = "unique(session.id)"
    answer = ask(
        server,
        store="index",
        fq=fq,
        rows=12,
        sort=f"{TIME} desc",
        fl="_m1key",
        json={
            "facet": {
                "sessions": sessions,
                "visitors": "unique(user.id)",
                "views": {"type": "query", "q": "event.type:view"},
                "pages": {
                    "type": "terms",
                    "field": "url.path",
                    "domain": {"filter": "event.type:view"},
                },
                "referrers": {
                    "type": "terms",
                    "field": "page.referrer",
                    "missing": True,
                    "domain": {"filter": "event.type:sessionStart"},
                },
                "countries": {
                    "type": "terms",
                    "field": "_m1.geo.country_iso_code",
                    "missing": True,
                    "sort": "sessions desc",
                    "facet": {"sessions": sessions},
                },
                "types": {"type": "terms", "field": "event.type", "limit": 20},
                "ended": {
                    "type": "query",
                    "q": "event.type:sessionTimeout",
                    "facet": {
                        "avg": "avg(session.durationMs)",
                        "exits": {"type": "terms", "field": "url.path"},
                    },
                },
                "beats": {
                    "type": "query",
                    "q": "event.type:heartbeat",
                    "facet": {"pages": {"type": "terms", "field": "url.path"}},
                },
            }
        },
    )
    facets = answer["facets"]
    if not facets["count"]:  # an empty domain has no facets but its count (as in Solr)
        none: dict[str, Any] = {"count": 0, "buckets": []}
        facets = {"views": none, "ended": none, "beats": none, "pages": none}
        facets.update(referrers=none, countries=none, types=none)
    ended = facets["ended"]
    return {
        "events": answer["response"]["numFound"],
        "sessions": facets.get("sessions", 0),
        "visitors": facets.get("visitors", 0),
        "views": facets["views"]["count"],
        "pages": buckets(facets["pages"]),
        "referrers": buckets(facets["referrers"]),
        "countries": buckets(facets["countries"], "sessions"),
        "types": buckets(facets["types"]),
        "exits": buckets(ended["exits"]) if ended["count"] else [],
        "avgSession": str(round(ended["avg"])) if ended["count"] else None,
        "timeOnPage": buckets(facets["beats"]["pages"]) if facets["beats"]["count"] else [],
        "recent": [doc["_m1key"] for doc in answer["response"]["docs"]],
        "online": ask(server, "/session/query", store=store, fq=shown["chips"], rows=0)["count"],
        "stored": ask(server, store="index")["response"]["numFound"],
    }


def assert_page_matches(
    server: Server, shown: dict[str, Any], store: str = LIVE_STORE
) -> dict[str, Any]:
    want = expected(server, shown, store)
    got = {key: shown[key] for key in want}
    assert got == want
    return want

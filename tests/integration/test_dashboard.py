"""The reporting dashboard at /ui/ in headless chromium, against a real server with events.

The server runs with the MaxMind test database and trusts X-Forwarded-For from loopback.
`m1lite simulate` fills it, three runs side by side, from addresses the test database
places in several countries: visitors whose heartbeats go to the session store `stash`
(live for the whole test: they are the visitors online now), to `short` (its sessions
lapse within seconds and become sessionTimeout events) and as events. A few visitors
written with /write add a page path full of quotes and markup, to show that event values
are text on the page, never HTML.

What counts is what the page shows: every number is read from the page and compared with
the same question asked of /query (or /session/query) directly, for the time window the
page says it shows and the filters its chips hold. The browser's console must stay free of
errors and every request must succeed. Screenshots at 1280x800 and 390x844 are written to
tests/artifacts/dashboard/ (M1LITE_TEST_ARTIFACTS overrides it).
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

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Response, sync_playwright

from integration.browser import Console, launch, wait_for
from integration.server import Server, assert_error

StartServer = Callable[..., Server]

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


@pytest.fixture(scope="module")
def dash(start_module_server: StartServer) -> Server:
    server = start_module_server("--geoip", str(GEO_DB), "--trusted-proxies", "127.0.0.1")
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
    return server


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
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
def open_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    contexts: list[BrowserContext] = []

    def open_one(viewport: dict[str, int] = DESKTOP) -> Tab:
        context = browser.new_context(viewport=viewport, locale="en-US", timezone_id="UTC")
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


# -- serving -------------------------------------------------------------------------------


def test_ui_is_served_without_a_token_with_validators_and_a_csp(dash: Server) -> None:
    redirect = httpx.get(dash.url + "/ui", follow_redirects=False)
    assert redirect.status_code == 308
    assert httpx.URL(dash.url + "/ui").join(redirect.headers["location"]) == httpx.URL(
        dash.url + "/ui/"
    )
    page = httpx.get(dash.url + "/ui/", headers={"Accept-Encoding": "identity"})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("panels/overview.js", "text/javascript; charset=utf-8"),
        ("ui.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        response = httpx.get(f"{dash.url}/ui/{name}", headers={"Accept-Encoding": "identity"})
        assert response.status_code == 200, name
        assert response.headers["content-type"] == kind
        etag = response.headers["etag"]
        again = httpx.get(
            f"{dash.url}/ui/{name}", headers={"If-None-Match": etag, "Accept-Encoding": "identity"}
        )
        assert again.status_code == 304
        zipped = httpx.get(f"{dash.url}/ui/{name}", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == response.content
    assert_error(httpx.get(dash.url + "/ui/nope.js"), 404)
    # Only the package's files: a path is a name in a table, never a file system path.
    assert_error(httpx.get(dash.url + "/ui/%2e%2e/app.py"), 404)
    assert_error(httpx.get(dash.url + "/ui/..%2fapp.py"), 404)


def test_store_list_stats_say_how_many_events_and_bytes(dash: Server) -> None:
    viewer = dash.login(VIEWER, VIEWER_PASSWORD)
    plain = dash.get("/store/list", viewer).json()
    assert "events" not in plain[0] and "diskBytes" not in plain[0]
    listed = dash.post("/store/list", viewer, data={"stats": "true"}).json()
    assert [s["name"] for s in listed] == ["index"]
    stored = ask(dash, store="index")["response"]["numFound"]
    assert listed[0]["events"] == stored
    assert listed[0]["diskBytes"] > 0
    # The same fields a plain listing has, plus the two.
    assert set(listed[0]) == set(plain[0]) | {"events", "diskBytes"}


# -- the overview ------------------------------------------------------------------------------


def test_overview_numbers_equal_the_same_questions_asked_of_query(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    open_overview(tab, dash)
    shown = read_page(tab.page)
    want = assert_page_matches(dash, shown)
    # The data has something in every panel.
    assert want["online"] > 0 and want["exits"] and want["timeOnPage"] and want["pages"]
    assert {key for key, _ in want["countries"]} >= {"GB", "US", "SE", "(missing)"}

    # The timeline's buckets add up to the events, and its sessions never exceed them.
    assert sum(row[3] for row in shown["timeline"]) == want["events"]
    assert tab.page.title() == "m1lite dashboard"
    screenshot(tab.page, "overview-1280x800")
    tab.assert_clean()


def test_a_bucket_click_filters_every_panel_and_a_reload_restores_it(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    open_overview(tab, dash)
    page = tab.page
    before = read_page(page)
    generation = loaded_generation(page)
    page.click('#panel-countries .row[data-key="GB"]')
    generation = wait_loaded(page, generation)
    shown = read_page(page)
    assert shown["chips"] == ['_m1.geo.country_iso_code:"GB"']
    assert page.locator("#chips .chip").inner_text().startswith("Country is GB")
    want = assert_page_matches(dash, shown)
    # Every panel changed to the filtered answer.
    assert [key for key, _ in want["countries"]] == ["GB"]
    for key in ("events", "sessions", "views", "online", "pages", "types", "recent"):
        assert shown[key] != before[key], key
    # A second filter from another panel, then another range: both land in the URL.
    path = shown["pages"][0][0]
    page.click(f"#panel-pages .row[data-key={json.dumps(path)}]")
    generation = wait_loaded(page, generation)
    page.select_option("#range", "1h")
    generation = wait_loaded(page, generation)
    page.click('[data-by-choice="page"]')
    generation = wait_loaded(page, generation)
    shown = read_page(page)
    assert shown["chips"] == ['_m1.geo.country_iso_code:"GB"', f"url.path:{quoted(path)}"]
    assert_page_matches(dash, shown)
    url = page.url
    assert "range=1h" in url and "by=page" in url
    # Reload: the token is still in sessionStorage, the state comes back from the URL.
    page.reload()
    wait_loaded(page)
    restored = read_page(page)
    assert restored["chips"] == shown["chips"]
    assert page.input_value("#range") == "1h"
    assert page.get_attribute('[data-by-choice="page"]', "aria-pressed") == "true"
    assert_page_matches(dash, restored)
    # Removing a chip removes its filter; Back brings it back.
    generation = loaded_generation(page)
    page.click("#chips .chip >> nth=1")
    generation = wait_loaded(page, generation)
    assert read_page(page)["chips"] == ['_m1.geo.country_iso_code:"GB"']
    page.go_back()
    wait_loaded(page, generation)
    assert read_page(page)["chips"] == shown["chips"]
    tab.assert_clean()


def test_a_custom_range_and_another_session_store(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    open_overview(tab, dash)
    page = tab.page
    generation = loaded_generation(page)
    # The session store whose sessions all lapsed: nobody is online in it.
    page.select_option("#ss", SHORT_STORE)
    generation = wait_loaded(page, generation)
    shown = read_page(page)
    assert shown["online"] == 0
    assert_page_matches(dash, shown, SHORT_STORE)
    assert f"ss={SHORT_STORE}" in page.url
    # A custom range: from two hours ago to now, in the page's local time (UTC here).
    page.select_option("#range", "custom")
    generation = wait_loaded(page, generation)
    now = time.time()
    page.fill("#custom-from", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - 7200)))
    page.fill("#custom-to", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now + 60)))
    page.click("#custom-range button[type=submit]")
    wait_loaded(page, generation)
    shown = read_page(page)
    assert page.get_attribute("#window", "data-gap") == "+1MINUTE"
    assert len(shown["timeline"]) >= 120
    assert shown["events"] > 0
    assert_page_matches(dash, shown, SHORT_STORE)
    tab.assert_clean()


def test_a_filter_that_matches_nothing_shows_zeros(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    fq = 'event.type:"no-such-type"'
    open_overview(tab, dash, "#/overview?range=1h&" + urlencode({"fq": fq}))
    shown = read_page(tab.page)
    assert shown["events"] == shown["sessions"] == shown["online"] == 0
    assert len(shown["timeline"]) == 60 and {row[3] for row in shown["timeline"]} == {0}
    assert_page_matches(dash, shown)
    tab.assert_clean()


def test_event_values_are_shown_as_text(dash: Server, open_tab: Callable[..., Tab]) -> None:
    """A path full of quotes and markup, as a filter from the URL: the chip, the pages and
    the recent events show it as written, and it adds no element to the page."""
    tab = open_tab(DESKTOP)
    fq = f"url.path:{quoted(HOSTILE)}"
    open_overview(tab, dash, "#/overview?" + urlencode({"fq": fq}))
    page = tab.page
    shown = read_page(page)
    assert shown["chips"] == [fq]
    assert page.inner_text("#chips .chip").startswith(f"Page is {HOSTILE}")
    want = assert_page_matches(dash, shown)
    assert [key for key, _ in want["pages"]] == [HOSTILE]
    assert page.locator("#panel-pages .label").all_inner_texts() == [HOSTILE]
    assert set(page.locator("#panel-recent tbody td:nth-child(3)").all_inner_texts()) == {HOSTILE}
    assert page.locator("main b, #chips b").count() == 0
    tab.assert_clean()


def test_a_time_bucket_click_filters_by_that_bucket(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    open_overview(tab, dash, "#/overview?range=1h")
    page = tab.page
    shown = read_page(page)
    busiest = max(range(len(shown["timeline"])), key=lambda i: shown["timeline"][i][3])
    generation = loaded_generation(page)
    page.click(f'#timeline-chart rect.hit[data-index="{busiest}"]')
    wait_loaded(page, generation)
    filtered = read_page(page)
    start = shown["timeline"][busiest][0]
    assert len(filtered["chips"]) == 1 and filtered["chips"][0].startswith(f'{TIME}:["{start}" TO')
    assert filtered["events"] == shown["timeline"][busiest][3]
    assert_page_matches(dash, filtered)
    tab.assert_clean()


def test_phone_layout_has_no_sideways_scroll(dash: Server, open_tab: Callable[..., Tab]) -> None:
    tab = open_tab(PHONE)
    open_overview(tab, dash)
    page = tab.page
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert_page_matches(dash, read_page(page))
    screenshot(page, "overview-390x844")
    page.click("#tab-explore")
    page.wait_for_selector("#explore[data-state=ready]")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "explore-390x844")
    tab.assert_clean()


# -- login ---------------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_with_a_message(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    page = tab.page
    log_in(page, dash.url + "/ui/", VIEWER, "not-the-password")
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert error.inner_text() == "Wrong username or password."
    assert page.is_hidden("#app")
    assert page.evaluate("sessionStorage.length") == 0
    # The one failure is the refused login itself.
    assert tab.failed == [f"401 {dash.url}/auth"]
    assert tab.console.page_errors == []
    assert all("401" in message for message in tab.console.errors)
    screenshot(page, "login-refused-1280x800")


def test_an_expired_token_asks_to_log_in_again_and_keeps_the_view(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    page = tab.page
    open_overview(tab, dash, "#/overview?range=7d&fq=event.type%3A%22view%22")
    page.evaluate("sessionStorage.setItem('m1lite.ui.token', 'revoked-token')")
    page.click("#refresh")
    page.locator("#login-note").wait_for(state="visible")
    assert "Log in again" in page.inner_text("#login-note")
    assert page.evaluate("sessionStorage.getItem('m1lite.ui.token')") is None
    page.fill("#login-password", VIEWER_PASSWORD)  # the username is still filled in
    page.click("#login-submit")
    wait_loaded(page)
    shown = read_page(page)
    assert shown["chips"] == ['event.type:"view"'] and page.input_value("#range") == "7d"
    assert_page_matches(dash, shown)
    assert {f.split()[0] for f in tab.failed} == {"401"}
    # Logging out forgets the token.
    page.click("#logout")
    assert page.is_visible("#login") and page.evaluate("sessionStorage.length") == 0


# -- the explorer ----------------------------------------------------------------------------------


def test_the_explorer_asks_any_query_and_shows_docs_facets_and_json(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    tab = open_tab(DESKTOP)
    page = tab.page
    log_in(page, dash.url + "/ui/#/explore")
    page.wait_for_selector("#explore[data-state=ready]")
    page.fill("#x-q", "event.type:(view OR sessionStart)")
    page.click("#x-fq-add")
    page.fill("#x-fq-list input >> nth=0", '_m1.geo.country_iso_code:"GB"')
    page.fill("#x-sort", f"{TIME} desc")
    page.fill("#x-rows", "5")
    page.fill("#x-fl", "url.path,event.type")
    # The facet editor refuses what is not a JSON object, and says why.
    page.fill("#x-json", '{"pages": {"type": "terms",')
    assert page.is_visible("#x-json-error")
    assert page.get_attribute("#x-json", "aria-invalid") == "true"
    facet = {"pages": {"type": "terms", "field": "url.path", "limit": 3}}
    page.fill("#x-json", json.dumps(facet))
    assert page.is_hidden("#x-json-error")
    page.click("#x-run")
    want = ask(
        dash,
        store="index",
        q="event.type:(view OR sessionStart)",
        fq='_m1.geo.country_iso_code:"GB"',
        sort=f"{TIME} desc",
        rows=5,
        fl="url.path,event.type",
        json={"facet": facet},
    )
    wait_for(
        lambda: page.get_attribute("#x-status", "data-found") == str(want["response"]["numFound"]),
        "the explorer's answer",
    )
    header = page.locator("#x-docs thead th").all_inner_texts()
    assert set(header) == {"url.path", "event.type", "_m1key"}
    cells = page.evaluate(
        "[...document.querySelectorAll('#x-docs tbody tr')].map("
        "(tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent))"
    )
    assert cells == [[str(doc[name]) for name in header] for doc in want["response"]["docs"]]
    page.click('[data-tab="facets"]')
    bars = page.locator('[data-facet="pages"] .bars .row')
    got = [
        [
            bars.nth(i).get_attribute("data-key"),
            int(bars.nth(i).locator(".value").get_attribute("data-value") or -1),
        ]
        for i in range(bars.count())
    ]
    assert got == buckets(want["facets"]["pages"])
    page.click('[data-tab="json"]')
    raw = json.loads(page.inner_text("#x-raw"))
    assert raw["response"] == want["response"]
    assert raw["facets"] == want["facets"]
    # The question is in the URL: a reload asks it again.
    page.reload()
    page.wait_for_selector("#explore[data-state=ready]")
    assert page.input_value("#x-q") == "event.type:(view OR sessionStart)"
    assert page.input_value("#x-fq-list input >> nth=0") == '_m1.geo.country_iso_code:"GB"'
    wait_for(
        lambda: page.get_attribute("#x-status", "data-found") == str(want["response"]["numFound"]),
        "the reloaded answer",
    )
    screenshot(page, "explore-1280x800")
    tab.assert_clean()


def test_without_the_session_query_right_online_now_counts_recent_events(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    dash.add_user("reader", VIEWER_PASSWORD, ["get"])
    tab = open_tab(DESKTOP)
    hb = 3600  # an online window (two intervals) that holds every event of the test
    log_in(tab.page, f"{dash.url}/ui/#/overview?hb={hb}", "reader")
    page = tab.page
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('no sessionQuery right')"
    )
    shown = read_page(page)
    online = ask(
        dash,
        fq=f"{TIME}:[NOW-{2 * hb}SECONDS TO *]",
        json={"facet": {"online": "unique(session.id)"}},
    )["facets"]["online"]
    assert shown["online"] == online > 0
    # The one refused request: the session store's count, asked once.
    assert tab.failed == [f"403 {dash.url}/session/query"]
    assert tab.console.page_errors == []
    assert len(tab.console.errors) == 1 and "403" in tab.console.errors[0]


# -- without a session store ------------------------------------------------------------------


def test_without_a_session_store_online_now_counts_recent_events(
    start_server: StartServer, open_tab: Callable[..., Tab]
) -> None:
    server = start_server("--geoip", str(GEO_DB), "--trusted-proxies", "127.0.0.1")
    server.add_user(VIEWER, VIEWER_PASSWORD, ["get"])
    writer = server.login("admin", server.admin_password, ip="*")
    finished(
        simulate(
            server, writer, "--users", "20", "--seed", "5", "--heartbeat-ms", "1000", seconds=4
        )
    )
    tab = open_tab(DESKTOP)
    hb = 60  # so the online window (two intervals) holds every event just written
    open_overview(tab, server, f"#/overview?hb={hb}")
    page = tab.page
    shown = read_page(page)
    online = ask(
        server,
        store="index",
        fq=f"{TIME}:[NOW-{2 * hb}SECONDS TO *]",
        json={"facet": {"online": "unique(session.id)"}},
    )["facets"]["online"]
    assert shown["online"] == online > 0
    assert "last 120 s" in page.inner_text("#online-source")
    beats = ask(
        server,
        store="index",
        q="event.type:heartbeat",
        json={"facet": {"pages": {"type": "terms", "field": "url.path"}}},
    )["facets"]["pages"]
    assert shown["timeOnPage"] == buckets(beats)
    # Time on page is heartbeats x the interval.
    first = page.locator("#panel-timeonpage .bars .row .value").first.inner_text()
    assert first == duration(beats["buckets"][0]["count"] * hb)
    assert "sessionTimeout" in page.inner_text("#panel-exits")
    tab.assert_clean()

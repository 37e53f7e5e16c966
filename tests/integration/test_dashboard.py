"""The reporting dashboard at /ui/ in headless chromium: how it is served, and the
overview's numbers, filters (clicked, or chosen from the keyboard), ranges and reloads.

What counts is what the page shows: every number is read from the page and compared with
the same question asked of /query (or /session/query) directly, for the time window the
page says it shows and the filters its chips hold. The browser's console must stay free of
errors and every request must succeed. The server, its events and the helpers are in
tests/integration/dashboard.py; the explorer and logging in have their own modules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import urlencode

import httpx

from integration.dashboard import (
    DESKTOP,
    GEO_DB,
    HOSTILE,
    PHONE,
    SHORT_STORE,
    TIME,
    VIEWER,
    VIEWER_PASSWORD,
    Tab,
    ask,
    assert_page_matches,
    buckets,
    duration,
    finished,
    loaded_generation,
    open_overview,
    quoted,
    read_page,
    screenshot,
    simulate,
    wait_loaded,
)
from integration.server import Server, assert_error

StartServer = Callable[..., Server]

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
    assert all(row[1] <= row[3] for row in shown["timeline"])
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


# Where the keyboard focus is: which chart (if any), which bucket, what it says.
FOCUSED = """() => {
  const el = document.activeElement;
  const chart = el.closest(".chart-box");
  return {
    chart: chart ? chart.id : null,
    index: el.dataset && el.dataset.index !== undefined ? Number(el.dataset.index) : null,
    role: el.getAttribute("role"),
    label: el.getAttribute("aria-label"),
    ring: el.matches(":focus-visible") ? getComputedStyle(el).stroke : "none",
  };
}"""


def test_a_time_bucket_chosen_from_the_keyboard_filters_by_that_bucket(
    dash: Server, open_tab: Callable[..., Tab]
) -> None:
    """A chart's buckets are one tab stop: Tab reaches it, the arrow keys move between
    buckets, Enter adds the filter a click adds, and the focus stays where it was."""
    tab = open_tab(DESKTOP)
    # No live refresh: the window cannot move on by a minute between reading and pressing.
    open_overview(tab, dash, "#/overview?range=1h&live=0")
    page = tab.page
    shown = read_page(page)
    busiest = max(range(len(shown["timeline"])), key=lambda i: shown["timeline"][i][3])
    # Every chart whose buckets can be picked or read is a single tab stop.
    stops = page.evaluate(
        "() => ['timeline-chart', 'concurrency-chart', 'storage-chart'].map("
        "(id) => document.querySelectorAll(`#${id} .hit[tabindex='0']`).length)"
    )
    assert stops == [1, 1, 1]
    # From the series buttons just before the chart, one Tab lands on its first bucket.
    page.focus('[data-metric-choice="events"]')
    page.keyboard.press("Tab")
    first = page.evaluate(FOCUSED)
    assert (first["chart"], first["index"], first["role"]) == ("timeline-chart", 0, "button")
    page.keyboard.press("End")
    assert page.evaluate(FOCUSED)["index"] == len(shown["timeline"]) - 1
    page.keyboard.press("Home")
    for _ in range(busiest):
        page.keyboard.press("ArrowRight")
    on = page.evaluate(FOCUSED)
    assert on["index"] == busiest
    # It says its time and its value (sessions, the series shown), and shows a ring.
    assert on["label"].endswith(f": Sessions {shown['timeline'][busiest][1]:,}")
    assert page.inner_text("#timeline-readout") == on["label"]
    assert on["ring"] not in ("none", "")
    screenshot(page, "overview-keyboard-1280x800")
    generation = loaded_generation(page)
    page.keyboard.press("Enter")
    wait_loaded(page, generation)
    filtered = read_page(page)
    start = shown["timeline"][busiest][0]
    assert len(filtered["chips"]) == 1 and filtered["chips"][0].startswith(f'{TIME}:["{start}" TO')
    assert page.locator("#chips .chip").inner_text().startswith("Time ")
    assert filtered["events"] == shown["timeline"][busiest][3]
    assert_page_matches(dash, filtered)
    # The redrawn chart kept the focus on the same bucket; Tab leaves the chart at once,
    # and Shift+Tab comes back to that bucket.
    after = page.evaluate(FOCUSED)
    assert (after["chart"], after["index"]) == ("timeline-chart", busiest)
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED)["chart"] is None
    page.keyboard.press("Shift+Tab")
    back = page.evaluate(FOCUSED)
    assert (back["chart"], back["index"]) == ("timeline-chart", busiest)
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

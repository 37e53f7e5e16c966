"""Logging in to the dashboard, in headless chromium: a wrong password, a token the server
refuses (the page asks again and keeps the view), logging out, and a user without the
sessionQuery right. The server and helpers are in tests/integration/dashboard.py."""

from __future__ import annotations

from collections.abc import Callable

from integration.dashboard import (
    DESKTOP,
    TIME,
    VIEWER,
    VIEWER_PASSWORD,
    Tab,
    ask,
    assert_page_matches,
    log_in,
    open_overview,
    read_page,
    screenshot,
    wait_loaded,
)
from integration.server import Server


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

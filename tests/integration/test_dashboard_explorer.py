"""The dashboard's query explorer (/ui/#/explore) in headless chromium: any question, its
answer shown as documents, facets and raw JSON, equal to /query's own answer, and kept in
the URL. The server and helpers are in tests/integration/dashboard.py."""

from __future__ import annotations

import json
from collections.abc import Callable

from integration.browser import wait_for
from integration.dashboard import DESKTOP, TIME, Tab, ask, buckets, log_in, screenshot
from integration.server import Server


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

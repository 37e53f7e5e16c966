"""`m1lite simulate`'s pure parts: visit plans, the documents (the browser script's shape),
addresses, latency histograms, options and config.json, and the HTTP response reader.
Real runs against a server are in tests/integration/test_simulate.py."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from m1lite.cli import build_parser
from m1lite.enrich.geo import GeoLookup
from m1lite.simulate.config import DEFAULT_THINK_S, ConfigError, SimConfig, resolve
from m1lite.simulate.http import _read_response
from m1lite.simulate.site import HOST, LANDING, PAGES, TEST_DB_ADDRESSES, address_pool
from m1lite.simulate.stats import Histogram, Stats, summary_text
from m1lite.simulate.visitor import Ids, Visitor, plan_visit

M1EVENTS_JS = Path(__file__).parent.parent / "m1lite" / "static" / "js" / "M1Events.js"
GEO_DB = Path(__file__).parent / "data" / "GeoIP2-City-Test.mmdb"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# -- plans ---------------------------------------------------------------------------------


def test_a_seed_reproduces_every_plan_and_another_seed_does_not() -> None:
    first = [plan_visit(42, n, 25.0, 64) for n in range(200)]
    again = [plan_visit(42, n, 25.0, 64) for n in reversed(range(200))][::-1]
    other = [plan_visit(43, n, 25.0, 64) for n in range(200)]
    assert first == again  # whatever order visitors arrive in
    assert first != other
    assert sum(a.pages == b.pages for a, b in zip(first, other, strict=True)) < 150


def test_visits_follow_the_site_links_from_a_landing_page() -> None:
    landing = {path for path, _ in LANDING}
    for n in range(500):
        visit = plan_visit(1, n, 25.0, 64)
        assert visit.pages[0] in landing
        for here, there in zip(visit.pages, visit.pages[1:], strict=False):
            assert there in {path for path, _ in PAGES[here].links}, (here, there)
        assert len(visit.think_s) == len(visit.pages)
        assert 0 <= visit.address < 64
        assert visit.user <= n


def test_bounces_pages_per_visit_returning_users_and_think_times() -> None:
    plans = [plan_visit(7, n, 20.0, 10) for n in range(4000)]
    bounce = sum(len(p.pages) == 1 for p in plans) / len(plans)
    assert 0.31 < bounce < 0.39  # 35 %
    assert 2.8 < statistics.fmean(len(p.pages) for p in plans) < 3.8  # about 3.3
    returning = sum(p.user != p.number for p in plans[1:]) / (len(plans) - 1)
    assert 0.26 < returning < 0.34  # 30 %
    thinks = [t for p in plans for t in p.think_s]
    assert min(thinks) >= 20.0 / 20 and max(thinks) <= 20.0 * 6
    assert 18.0 < statistics.fmean(thinks) < 22.0  # the mean asked for (a little trimmed)
    social = [p for p in plans if "utm_source" in p.query]
    assert social and all(p.referrer.startswith("https://") for p in social)


# -- documents -----------------------------------------------------------------------------


def _browser_doc_keys() -> tuple[set[str], dict[str, set[str]]]:
    """The keys of M1Events.js's doc(): top level, and of each nested object."""
    source = M1EVENTS_JS.read_text()
    function = source[source.index("function doc(") :]
    start = function.index("return {") + len("return {")
    returned = function[start : function.index("};", start)]
    top: set[str] = set()
    nested: dict[str, set[str]] = {}
    for line in returned.splitlines():
        match = re.match(r"\s*(\w+):\s*(\{[^}]*\})?", line)
        if match:
            top.add(match.group(1))
            if match.group(2):
                nested[match.group(1)] = set(re.findall(r"(\w+):", match.group(2)))
    # `event: ev`, with `ev = { id: uuid(), time: now, type: type }` built before the return
    built = re.search(r"ev = (\{[^}]*\})", function)
    assert built is not None
    nested["event"] = set(re.findall(r"(\w+):", built.group(1)))
    return top, nested


def test_documents_have_the_browser_scripts_shape() -> None:
    top, nested = _browser_doc_keys()
    assert top == {"type", "event", "session", "user", "url", "page", "screen", "language"}
    ids = Ids()
    visitor = Visitor(plan_visit(3, 0, 25.0, 64), ids, 1_700_000_000_000)
    for doc in [*visitor.arrive(1_700_000_000_000, ids), visitor.doc("heartbeat", 1, ids)]:
        assert set(doc) == top
        for key, keys in nested.items():
            assert set(doc[key]) == keys, key
        assert doc["event"]["type"] == doc["type"]
        assert UUID.match(doc["event"]["id"]) and UUID.match(doc["session"]["id"])
        assert UUID.match(doc["user"]["id"])
        assert isinstance(doc["language"], str) and doc["screen"]["width"] > 0


def test_a_landing_sends_session_start_then_view_and_views_chain_referrers() -> None:
    ids = Ids()
    visit = next(v for n in range(100) if len((v := plan_visit(5, n, 25.0, 64)).pages) >= 3)
    visitor = Visitor(visit, ids, 1000)
    start, view = visitor.arrive(1000, ids)
    assert [start["type"], view["type"]] == ["sessionStart", "view"]
    assert start["session"] == view["session"] == {"id": start["session"]["id"], "start": 1000}
    assert view["page"]["referrer"] == visit.referrer
    assert view["url"]["href"] == f"https://{HOST}{visit.pages[0]}{visit.query}"
    assert view["url"]["path"] == visit.pages[0] and view["url"]["host"] == HOST
    assert view["page"]["title"] == PAGES[visit.pages[0]].title
    second = visitor.next_view(2000, ids)
    assert second["page"]["referrer"] == view["url"]["href"]
    assert second["url"]["path"] == visit.pages[1] and second["url"]["query"] == ""
    beat = visitor.doc("heartbeat", 3000, ids)
    assert beat["url"] == second["url"] and beat["event"]["time"] == 3000
    assert len({start["event"]["id"], view["event"]["id"], second["event"]["id"]}) == 3
    assert visitor.pages_left == len(visit.pages) - 2


def test_ids_are_fresh_per_run_and_user_ids_repeat_within_one() -> None:
    first, second = Ids(), Ids()
    assert first.user(5) == first.user(5) != second.user(5)
    assert first.new() != second.new()


# -- addresses -------------------------------------------------------------------------------


def test_address_pools_start_with_the_test_database_and_add_public_addresses() -> None:
    pool = address_pool(100, random.Random(1))
    assert pool[: len(TEST_DB_ADDRESSES)] == list(TEST_DB_ADDRESSES)
    assert len(set(pool)) == 100
    assert all(ipaddress.ip_address(ip).is_global for ip in pool)
    assert address_pool(100, random.Random(1)) == pool
    assert address_pool(3, random.Random(1)) == list(TEST_DB_ADDRESSES[:3])


def test_the_test_database_addresses_resolve_with_countries_and_states() -> None:
    if not GEO_DB.exists():
        from data.fetch_geoip_test_db import fetch

        fetch(GEO_DB)
    geo = GeoLookup(GEO_DB)
    try:
        found = [geo.lookup(ip) for ip in TEST_DB_ADDRESSES]
    finally:
        geo.close()
    assert all(record and record["country_iso_code"] for record in found)
    countries = {r["country_iso_code"] for r in found if r}
    states = {r["subdivision_1_iso_code"] for r in found if r} - {""}
    assert {"GB", "US", "SE", "AU", "CN"} <= countries
    assert {"ENG", "WA", "CA", "VIC"} <= states


# -- latencies -------------------------------------------------------------------------------


def test_histogram_percentiles_are_within_two_percent_of_the_exact_ones() -> None:
    rng = random.Random(9)
    values = [rng.lognormvariate(1.5, 1.2) for _ in range(20_000)]
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for p in (50, 90, 99, 99.9):
        exact = ordered[max(1, round(p / 100 * len(values) + 0.5)) - 1]
        assert histogram.percentile(p) == pytest.approx(exact, rel=0.021)
    assert histogram.percentile(100) == max(values) == histogram.max_ms
    assert histogram.count == 20_000


def test_histogram_weights_merges_and_empty() -> None:
    empty = Histogram()
    assert empty.percentile(99) is None and empty.summary()["p99"] is None
    one = Histogram()
    one.add(1.0, 99)
    one.add(500.0, 1)
    assert one.percentile(99) == pytest.approx(1.0, rel=0.02)
    assert one.percentile(100) == 500.0
    other = Histogram()
    other.add(500.0, 99)
    one.merge(other)
    assert one.count == 199 and one.percentile(90) == pytest.approx(500.0, rel=0.02)


def test_stats_count_acknowledgements_and_the_text_summary_shows_them() -> None:
    from collections import Counter

    stats = Stats(warmup_s=0.0)
    stats.events_sent.update({"view": 3, "sessionStart": 1})
    stats.request_done("write", 4.0, events=Counter({"view": 3, "sessionStart": 1}))
    stats.request_done("session/update", 2.0, beats=5, heartbeats_in_batch=5)
    stats.error("503", "write: queue_full: the write queue is full")
    config = {"session": "stash"}
    summary = stats.summary(config, "duration")
    assert summary["events"]["acknowledged"] == {"view": 3, "sessionStart": 1}
    assert summary["session_updates"]["acknowledged"] == 5
    assert summary["latency_ms"]["heartbeat"]["count"] == 5
    assert summary["requests"] == {"write": 1, "session/update": 1}
    assert summary["errors"] == {"503": 1}
    text = summary_text(summary)
    assert "acknowledged 4 (sessionStart 1, view 3)" in text
    assert "503: 1" in text and "queue_full" in text


# -- options ---------------------------------------------------------------------------------


def parse(*argv: str) -> SimConfig:
    return resolve(build_parser().parse_args(["simulate", *argv]), random_seed=11)


def test_flags_form() -> None:
    config = parse(
        "--server", "http://127.0.0.1:8080/", "--user", "sim", "--password", "pw",
        "--session", "stash", "--users", "200", "--duration", "20", "--seed", "4",
    )  # fmt: skip
    assert config.server == "http://127.0.0.1:8080"
    assert (config.user, config.password, config.session) == ("sim", "pw", "stash")
    assert (config.users, config.duration_s, config.seed) == (200, 20.0, 4)
    assert config.heartbeat_ms == 5000 and config.rate is None and not config.batch
    assert config.think_s == 5.0  # a quarter of a 20 s run, so it shows several views
    assert config.arrival_window_s == 5.0
    assert parse("--server", "http://h", "--user", "u", "--password", "p").seed == 11
    long_run = parse("--server", "http://h", "--user", "u", "--password", "p", "--duration", "600")
    assert long_run.think_s == DEFAULT_THINK_S


def test_the_guides_config_json_form(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    guide = {
        "server": "http://127.0.0.1:9000",
        "session": None,
        "username": "sim",
        "password": "secret",
        "dataStore": "index",  # unknown keys are ignored
        "heartbeatMs": 1000,
        "seed": 3,
    }
    path.write_text(json.dumps(guide))
    config = parse(str(path), "25")
    assert (config.server, config.user, config.password) == (
        "http://127.0.0.1:9000",
        "sim",
        "secret",
    )
    assert config.session is None and config.users == 25
    assert config.heartbeat_ms == 1000 and config.seed == 3 and config.duration_s is None
    path.write_text(json.dumps({**guide, "session": "stash"}))
    flagged = parse(str(path), "25", "--heartbeat-ms", "2000", "--users", "30")
    assert flagged.session == "stash" and flagged.heartbeat_ms == 2000 and flagged.users == 30
    assert parse(str(path), "25", "--session", "").session is None


LOGIN = ("--user", "u", "--password", "p")
GUIDE_KEYS = '{"server": "http://h", "username": "u", "password": "p"'


@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        (None, ("--user", "u", "--password", "p"), "--server is required"),
        (None, ("--server", "ftp://x", *LOGIN), "http:// or https://"),
        (None, ("--server", "http://h", "--user", "u"), "--password is required"),
        (None, ("--server", "http://h", *LOGIN, "--users", "0"), "--users"),
        (None, ("--server", "http://h", *LOGIN, "--heartbeat-ms", "50"), "--heartbeat-ms"),
        ("[1, 2]", (), "JSON object"),
        ("{not json", (), "is not JSON"),
        (GUIDE_KEYS + ', "seed": "x"}', (), "seed must be an integer"),
        (GUIDE_KEYS + ', "session": 5}', (), "session must be"),
    ],
)  # fmt: skip
def test_bad_options_are_explained(
    tmp_path: Path, content: str | None, argv: tuple[str, ...], message: str
) -> None:
    args: list[str] = list(argv)
    if content is not None:
        path = tmp_path / "config.json"
        path.write_text(content)
        args = [str(path), "5"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(*args)


def test_a_token_replaces_user_and_password() -> None:
    config = parse("--server", "http://h", "--token", "abc", "--users", "2")
    assert config.token == "abc" and config.user == ""


def test_the_count_alone_asks_for_the_config_file() -> None:
    with pytest.raises(ConfigError, match=r"config\.json N"):
        parse("200")


# -- the HTTP client's response reader ---------------------------------------------------------


def read(raw: bytes) -> tuple[Any, bool]:
    async def go() -> tuple[Any, bool]:
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await _read_response(reader)

    return asyncio.run(go())


def test_response_reader_lengths_chunks_and_connection_close() -> None:
    response, keep = read(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n[1,2]extra")
    assert (response.status, response.body, keep) == (200, b"[1,2]", True)
    response, keep = read(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (response.status, response.body, keep) == (204, b"", True)
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    response, keep = read(chunked)
    assert (response.body, keep) == (b"abcde", True)
    response, keep = read(b"HTTP/1.1 503 x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert (response.status, keep) == (503, False)
    response, keep = read(b"HTTP/1.0 200 OK\r\n\r\nto the end")
    assert (response.body, keep) == (b"to the end", False)
    response, keep = read(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 U\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.status == 401


# -- answers that ask for a retry -------------------------------------------------------------


class Flaky:
    """A small HTTP server that refuses the first requests the way a busy m1lite does (503
    queue full, 429, a connection closed without an answer), then accepts; it counts the
    items of every request it accepted."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.accepted_items: dict[str, int] = {"write": 0, "session/update": 0}
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split(" ")[1].lstrip("/")
                length = next(
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length")
                )
                body = await reader.readexactly(length)
                if path == "write" and json.loads(body)["items"] == []:
                    # the simulator's check that its X-Forwarded-For is believed: yes
                    status, answer = 401, b'{"status":401,"message":"ip","error":"token_ip"}'
                    writer.write(
                        f"HTTP/1.1 401 X\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
                    )
                    writer.write(answer)
                    continue
                n = self.seen[path] = self.seen.get(path, 0) + 1
                if path == "auth":
                    status, answer = 200, b"token-for-this-address"
                elif path == "write" and n == 1:
                    writer.close()  # no answer at all
                    return
                elif path == "write" and n == 2:
                    status, answer = (
                        503,
                        b'{"status":503,"message":"queue full","error":"queue_full"}',
                    )
                elif path == "session/update" and n == 1:
                    status, answer = 429, b'{"status":429,"message":"slow down","error":"x"}'
                else:
                    sent = json.loads(body)
                    items = sent["items"] if path == "write" else sent["ops"][0]["upsert"]
                    self.accepted_items[path] += len(items)
                    status, answer = (200, b"[]") if path == "write" else (204, b"")
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_refused_and_unanswered_requests_are_sent_again(capsys: pytest.CaptureFixture[str]) -> None:
    from m1lite.simulate.run import _main

    flaky = Flaky()

    async def go() -> int:
        server = await asyncio.start_server(flaky.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = parse(
            "--server", f"http://127.0.0.1:{port}", "--user", "u", "--password", "p",
            "--session", "s", "--users", "3", "--duration", "3", "--heartbeat-ms", "500",
            "--addresses", "2", "--json", "--no-progress",
        )  # fmt: skip
        try:
            return await _main(config)
        finally:
            server.close()
            await asyncio.sleep(0.1)  # the handlers see the simulator's connections close
            await server.wait_closed()

    assert asyncio.run(go()) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["errors"] == {"connection": 1, "503": 1, "429": 1}
    events, updates = summary["events"], summary["session_updates"]
    assert events["acknowledged"] == events["sent"] and not sum(events["dropped"].values())
    assert flaky.accepted_items["write"] == sum(events["acknowledged"].values())
    assert updates["dropped"] == 0
    assert flaky.accepted_items["session/update"] == updates["acknowledged"] > 0
    assert updates["acknowledged"] + updates["superseded"] == updates["sent"]
    assert summary["logins"] == 2

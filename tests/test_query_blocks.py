"""Block bounds (m1lite/query/blocks.py) and per-group distinct counts give the answers a
brute-force pass over the records gives.

These paths start at hundreds of thousands of events; here the block size and the
thresholds are shrunk (module attributes read at call time) so that 3,000 events written
through the real writer span dozens of blocks, some without a value, some partly.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.query import blocks, facet_range, stats
from m1lite.query.execute import QueryContext, execute
from m1lite.query.facets import parse_facets, run_facets
from m1lite.query.parser import parse
from m1lite.query.results import page_keys
from m1lite.schema import parse_date_ms
from m1lite.storage import log as event_log

EVENTS = 3_000


@pytest.fixture(scope="module")
def small_blocks() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blocks, "BLOCK_BITS", 6)
        patch.setattr(blocks, "BLOCK_KEYS", 64)
        patch.setattr(blocks, "MIN_KEYS", 256)
        patch.setattr(stats, "_MARK_CELLS", 64)  # distinct counts: past the flag table
        yield


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, small_blocks: None) -> Iterator[Environment]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M1LITE_ADMIN_PASSWORD", "unit-test-admin")
        environment = Environment(Config(data=tmp_path_factory.mktemp("blocks") / "data"))
    environment.start()
    rng = random.Random(11)
    items: list[dict[str, Any]] = []
    for i in range(EVENTS):
        item: dict[str, Any] = {"seq": i, "g": rng.choice("abcde"), "s": f"s{rng.randrange(400)}"}
        if rng.random() < 0.8:
            item["x"] = rng.randint(0, 40)  # ties
        if rng.random() < 0.7:
            item["t"] = i  # grows with the key, absent here and there
        if not 1_000 <= i < 1_300 and rng.random() < 0.5:
            item["f"] = rng.random()  # absent from whole blocks, and half of the others
        items.append(item)

    async def write(batch: list[dict[str, Any]]) -> None:
        future = environment.submit(batch, "127.0.0.1", durable=True)
        assert future is not None
        await asyncio.wait_for(future, 60)

    for first in range(0, EVENTS, 500):  # each write shares one receive time: ties
        asyncio.run(write(items[first : first + 500]))
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def records(env: Environment) -> list[dict[str, Any]]:
    return event_log.get_records(env.lake, range(EVENTS))


NOW = parse_date_ms("2100-01-01T00:00:00Z")


def context(env: Environment) -> QueryContext:
    return QueryContext.snapshot(
        env.index, env.schema, env.field_kinds(), upto=None, now_ms=NOW or 0, parse=parse
    )


def number(record: dict[str, Any], name: str) -> float | None:
    value = record.get(name)
    if name == "_m1.receivedUTC" and value is not None:
        return float(parse_date_ms(value) or 0)
    return None if value is None else float(value)


def expected_order(records: list[dict[str, Any]], sort: list[tuple[str, bool]]) -> list[int]:
    """Numbers, absent last either way, ties by _m1key ascending."""

    def key(record: dict[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name, descending in sort:
            value = number(record, name)
            parts.append((1, 0.0) if value is None else (0, -value if descending else value))
        return (*parts, record["_m1key"])

    return [r["_m1key"] for r in sorted(records, key=key)]


def matches(record: dict[str, Any], q: str) -> bool:
    if q == "*":
        return True
    if q == "g:(a OR b)":
        return record["g"] in "ab"
    assert q == "x:[5 TO 9]"
    return "x" in record and 5 <= record["x"] <= 9


SORTS = [
    [("seq", True)],
    [("seq", False)],
    [("t", True)],
    [("t", False)],
    [("x", True)],
    [("x", False)],
    [("f", True)],
    [("f", False)],
    [("_m1.receivedUTC", True), ("x", False)],
    [("_m1.receivedUTC", False), ("seq", True)],
]


@pytest.mark.parametrize("sort", SORTS, ids=[",".join(f"{f}-{d}" for f, d in s) for s in SORTS])
@pytest.mark.parametrize("q", ["*", "g:(a OR b)", "x:[5 TO 9]"])
@pytest.mark.parametrize(("start", "rows"), [(0, 10), (37, 25), (0, 1), (1_400, 40)])
def test_sorted_pages_match_a_full_sort(
    env: Environment,
    records: list[dict[str, Any]],
    sort: list[tuple[str, bool]],
    q: str,
    start: int,
    rows: int,
) -> None:
    ctx = context(env)
    page = page_keys(execute(parse(q), ctx), sort, start, rows, ctx)
    chosen = [r for r in records if matches(r, q)]
    assert page == expected_order(chosen, sort)[start : start + rows]


RANGES = [
    ("seq", "[100 TO 2000}"),
    ("seq", "{100 TO *]"),
    ("seq", "[* TO 50]"),
    ("seq", "[2999 TO 5000]"),
    ("t", "[100 TO 2000]"),
    ("t", "{500 TO *]"),
    ("x", "[3 TO 7]"),
    ("x", "{3 TO 7}"),
    ("f", "[0.25 TO 0.5]"),
    ("f", "[* TO *]"),
    ("_m1.receivedUTC", "[* TO NOW]"),
]


@pytest.mark.parametrize(("name", "bounds"), RANGES)
def test_ranges_match_a_full_pass(
    env: Environment, records: list[dict[str, Any]], name: str, bounds: str
) -> None:
    ctx = context(env)
    found = set(execute(parse(f"{name}:{bounds}"), ctx))
    low_text, high_text = bounds[1:-1].split(" TO ")
    low = None if low_text == "*" else float(low_text)
    high = None if high_text in ("*", "NOW") else float(high_text)

    def inside(value: float | None) -> bool:
        if value is None:
            return False
        if low is not None and not (value >= low if bounds[0] == "[" else value > low):
            return False
        return high is None or (value <= high if bounds[-1] == "]" else value < high)

    assert found == {r["_m1key"] for r in records if inside(number(r, name))}


@pytest.mark.parametrize(
    "facet",
    [
        {"type": "range", "field": "seq", "start": 0, "end": 3000, "gap": 100},
        {"type": "range", "field": "seq", "start": 250, "end": 2800, "gap": 70},
        {"type": "terms", "field": "g"},
        {"type": "terms", "field": "x", "limit": -1},
    ],
)
def test_unique_per_bucket_matches_a_full_pass(
    env: Environment, records: list[dict[str, Any]], facet: dict[str, Any]
) -> None:
    request = {"facet": {"f": {**facet, "facet": {"u": "unique(s)", "uf": "unique(f)"}}}}
    ctx = context(env)
    answer = run_facets(parse_facets(json.dumps(request)), execute(parse("*"), ctx), ctx)
    buckets = answer["f"]["buckets"]
    assert buckets
    for bucket in buckets:
        if facet["type"] == "range":
            low = bucket["val"]  # without hardend the last bucket is a whole gap too
            members = [r for r in records if low <= r["seq"] < low + facet["gap"]]
        else:
            members = [r for r in records if r.get(facet["field"]) == bucket["val"]]
        assert bucket["count"] == len(members)
        if members:
            assert bucket["u"] == len({r["s"] for r in members})
            assert bucket["uf"] == len({r["f"] for r in members if "f" in r})


def test_key_ordered_columns_are_recognised(env: Environment) -> None:
    ctx = context(env)

    def ordered(name: str) -> bool:
        column = env.index.numbers[name][: ctx.upto]
        return blocks.key_ordered(env.index, name, column)

    assert ordered("seq")  # every event, growing with the key
    assert ordered("_m1.receivedUTC")  # ties within a write, growing across writes
    assert not ordered("t")  # grows with the key but absent here and there
    assert not ordered("x")  # every value in every block


_RANGE_BODIES = [
    {
        "u": "unique(s)",
        "total": "sum(x)",
        "low": "min(f)",
        "p": "percentile(x,50,90)",
        "g": {"type": "terms", "field": "g", "limit": 2},
    },
    # read straight off the codes column per bucket; x holds numbers: the general way
    {"u": "unique(s)", "n": "count", "h": "hll(g)", "missing": "unique(nope)"},
    {"u": "unique(s)", "ux": "unique(x)"},
]


@pytest.mark.parametrize("body", _RANGE_BODIES)
@pytest.mark.parametrize(
    ("q", "facet"),
    [
        ("*", {"field": "seq", "start": 0, "end": 3000, "gap": 100}),
        ("g:a", {"field": "seq", "start": -500, "end": 1000, "gap": 100, "processEmpty": True}),
        ("g:a", {"field": "seq", "start": 250, "end": 2800, "gap": 70, "other": "all"}),
        ("x:[5 TO 20]", {"field": "seq", "start": -50, "end": 2990, "gap": 333, "hardend": True}),
        ("*", {"field": "seq", "start": 100, "end": 900, "gap": 100, "include": ["upper"]}),
        ("g:(b OR c)", {"field": "seq", "start": 0, "end": 3000, "gap": 50, "mincount": 1}),
        (
            "*",
            {
                "field": "seq",
                "start": 500,
                "end": 1500,
                "gap": 250,
                "include": ["edge", "outer"],
                "other": ["before", "after", "between"],
            },
        ),
        (
            "*",
            {
                "field": "_m1.receivedUTC",
                "start": "2000-01-01T00:00:00Z",
                "end": "NOW",
                "gap": "+100YEARS",
                "other": "all",
            },
        ),
    ],
)
def test_key_position_buckets_equal_the_pairs_path(
    env: Environment,
    monkeypatch: pytest.MonkeyPatch,
    q: str,
    facet: dict[str, Any],
    body: dict[str, Any],
) -> None:
    """Range facets over a key-ordered column find buckets by key position; the answers
    (counts, before/after/between, statistics, sub-facets) are the general path's."""
    request = parse_facets(json.dumps({"facet": {"r": {"type": "range", **facet, "facet": body}}}))
    ctx = context(env)
    domain = execute(parse(q), ctx)
    chosen: list[bool] = []
    find_column = facet_range._key_ordered_column

    def spy(run: Any, data: Any) -> Any:
        column = find_column(run, data)
        chosen.append(column is not None)
        return column

    monkeypatch.setattr(facet_range, "_key_ordered_column", spy)
    by_position = run_facets(request, domain, ctx)
    assert chosen == [True]
    monkeypatch.setattr(facet_range, "_key_ordered_column", lambda run, data: None)
    by_pairs = run_facets(request, domain, ctx)
    assert by_position == by_pairs
    assert by_position["r"]["buckets"]

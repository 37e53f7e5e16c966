"""The query executor and result paging over a real Environment (LMDB in tmp_path).

Events go in through the enricher and the writer exactly as /write puts them; queries go
through the real parser. Expected answers are written out by hand for a small data set,
and computed by brute force from the records for the sorting tests.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyroaring import BitMap

from m1lite.api.query import store_upto
from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.errors import BadRequest, Conflict, NotFound
from m1lite.query import execute as executor
from m1lite.query.ast import (
    And,
    BoolQuery,
    Exists,
    MatchAll,
    Not,
    Or,
    Range,
    Term,
    Wildcard,
)
from m1lite.query.execute import QueryContext, TooManyTerms, execute
from m1lite.query.parser import parse
from m1lite.query.results import csv_columns, page_keys, project, to_csv
from m1lite.schema import parse_date_ms
from m1lite.storage import log as event_log

NOW = parse_date_ms("2024-01-03T00:00:00Z")
SCHEMA = [
    {"name": "when", "type": "date"},
    {"name": "body", "type": "text"},
    {"name": "zip", "type": "string"},
]
ITEMS: list[dict[str, Any]] = [
    {  # 0
        "type": "view",
        "n": 3,
        "s": "3",
        "tags": ["a", "b"],
        "flag": True,
        "when": "2024-01-01T00:00:00Z",
        "body": "Hello big World",
        "name": "alice",
        "zip": "02139",
    },
    {  # 1
        "type": "click",
        "n": 10,
        "s": "10",
        "tags": ["b", "c"],
        "flag": False,
        "when": "2024-01-02T12:00:00Z",
        "body": "hello there",
        "name": "bob",
        "zip": "2500",
    },
    {  # 2
        "type": "view",
        "n": -1.5,
        "tags": "c",
        "when": "2024-01-03T00:00:00Z",
        "body": "big news",
        "name": "Carol",
        "mixed": 5,
        "zip": 10001,  # a declared string: stored as "10001"
    },
    {"type": "heartbeat", "n": "3", "flag": "true", "name": "dave", "mixed": "x"},  # 3
    {"type": "sessionTimeout", "nums": [1, 2, 30], "name": "alice2", "event": {"id": "e4"}},  # 4
    {"type": "View", "when": "2024-02-01T00:00:00Z", "name": "eve", "mixed": 1},  # 5
]
ARCHIVED = {"type": "view", "name": "zed", "n": 3}  # 6, written with publish=false
EVERYTHING = set(range(len(ITEMS)))


def open_env(data: Path) -> Environment:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("M1LITE_ADMIN_PASSWORD", "unit-test-admin")
        env = Environment(Config(data=data))
    env.start()
    return env


def write(env: Environment, items: list[dict[str, Any]], *, published: bool = True) -> list[int]:
    """What /write with async=false does: returns once the events are durable and visible."""

    async def submit() -> list[int]:
        future = env.submit(
            [dict(item) for item in items], "127.0.0.1", published=published, durable=True
        )
        assert future is not None
        return await asyncio.wait_for(future, 60)

    return asyncio.run(submit())


def context(env: Environment, *, now_ms: int = NOW, upto: int | None = None) -> QueryContext:
    return QueryContext.snapshot(
        env.index, env.schema, env.field_kinds(), upto=upto, now_ms=now_ms, parse=parse
    )


def keys(env: Environment, q: str, *fq: str, now_ms: int = NOW) -> set[int]:
    ctx = context(env, now_ms=now_ms)
    found = execute(parse(q), ctx)
    for text in fq:
        found &= execute(parse(text), ctx)
    return set(found)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    environment = open_env(tmp_path_factory.mktemp("query") / "data")
    environment.schema.add(SCHEMA)
    environment.save_schema()
    assert write(environment, ITEMS[:3]) == [0, 1, 2]
    assert write(environment, ITEMS[3:]) == [3, 4, 5]
    assert write(environment, [ARCHIVED], published=False) == [6]
    yield environment
    environment.close()


@pytest.fixture
def fresh_env(tmp_path: Path) -> Iterator[Environment]:
    environment = open_env(tmp_path / "data")
    yield environment
    environment.close()


# -- node kinds ---------------------------------------------------------------------------

CASES = [
    # match all; never the archived (publish=false) event
    ("*", EVERYTHING),
    ("*:*", EVERYTHING),
    ("", EVERYTHING),
    # exact, case-sensitive strings
    ("type:view", {0, 2}),
    ("type:View", {5}),
    ('type:"view"', {0, 2}),
    ("type:nothing", set()),
    ("nofield:view", set()),
    ("event.id:e4", {4}),
    # numbers and strings: a term matches both readings
    ("n:3", {0, 3}),
    ("n:3.0", {0}),
    ('n:"3"', {0, 3}),
    ("s:3", {0}),
    ("n:-1.5", {2}),
    ("mixed:5", {2}),
    ("mixed:x", {3}),
    # booleans, and the string "true"
    ("flag:true", {0, 3}),
    ("flag:false", {1}),
    # multi-valued fields: every value counts
    ("tags:a", {0}),
    ("tags:b", {0, 1}),
    ("tags:c", {1, 2}),
    ("tags:a AND tags:b", {0}),
    ("tags:(a AND c)", set()),
    ("tags:(a OR c)", {0, 1, 2}),
    ("nums:30", {4}),
    ("nums:1", {4}),
    ("nums:[2 TO 5]", {4}),
    ("nums:[3 TO 29]", set()),
    # numeric ranges: inclusive, exclusive, open
    ("n:[0 TO 10]", {0, 1}),
    ("n:{3 TO 10}", set()),
    ("n:[3 TO 10}", {0}),
    ("n:{3 TO 10]", {1}),
    ("n:[* TO 0]", {2}),
    ("n:[4 TO *]", {1}),
    ("n:[* TO *]", {0, 1, 2, 3}),
    ("mixed:[1 TO 5]", {2, 5}),
    # string ranges: lexicographic, code point order (upper case first)
    ("name:[a TO c]", {0, 1, 4}),
    ("name:{alice TO bob]", {1, 4}),
    ("name:[* TO b}", {0, 2, 4}),
    # a declared string compares as a string even with numeric ends
    ("zip:[02000 TO 03000]", {0}),
    ("zip:10001", {2}),
    # dates: exact, ranges, date math against the request's NOW (2024-01-03T00:00:00Z)
    ('when:"2024-01-01T00:00:00Z"', {0}),
    ('when:"2024-01-01T00:00:00.000Z"', {0}),
    ("when:[2024-01-02T00:00:00Z TO *]", {1, 2, 5}),
    ("when:[2024-01-01 TO 2024-01-03}", {0, 1}),
    ("when:[NOW-1DAY TO NOW]", {1, 2}),
    ("when:{NOW-1DAY TO NOW}", {1}),
    ("when:[NOW/MONTH TO NOW/MONTH+1MONTH}", {0, 1, 2}),
    ("when:NOW", {2}),
    ("when:*", {0, 1, 2, 5}),
    # text fields: tokenised, lower-cased; a phrase needs every word (positions not kept)
    ("body:hello", {0, 1}),
    ("body:HELLO", {0, 1}),
    ('body:"hello world"', {0}),
    ('body:"world hello"', {0}),
    ("body:big", {0, 2}),
    ("body:hel*", {0, 1}),
    ("body:Hello, AND body:there", {1}),
    # wildcards through the sorted dictionary, case-sensitive
    ("name:al*", {0, 4}),
    ("name:alice?", {4}),
    ("name:b?b", {1}),
    ("name:c*", set()),
    ("name:C*", {2}),
    ("name:*", EVERYTHING),
    ("name:a*e*", {0, 4}),
    # existence
    ("mixed:*", {2, 3, 5}),
    ("nums:*", {4}),
    ("-mixed:*", {0, 1, 4}),
    ("flag:*", {0, 1, 3}),
    # boolean algebra
    ("NOT type:view", {1, 3, 4, 5}),
    ("-type:view", {1, 3, 4, 5}),
    ("!type:view", {1, 3, 4, 5}),
    ("type:view -n:3", {2}),
    ("+type:view n:3", {0, 2}),
    ("+type:view +n:3", {0}),
    ("-type:view -type:click", {3, 4, 5}),
    ("type:view OR type:click", {0, 1, 2}),
    ("type:view || type:click", {0, 1, 2}),
    ("(type:view OR type:click) AND flag:false", {1}),
    ("type:view AND NOT n:3", {2}),
    ("type:(view OR click) && -tags:b", {2}),
    ("type:view OR type:click AND flag:false", {0, 1, 2}),  # AND binds tighter
    # the key itself
    ("_m1key:3", {3}),
    ("_m1key:6", set()),  # archived
    ("_m1key:[1 TO 3}", {1, 2}),
    ("_m1key:[4 TO *]", {4, 5}),
    ("_m1key:*", EVERYTHING),
    ("_m1key:99999999999999999999", set()),
    ("_m1key:-5", set()),
    ("_m1key:[-5 TO 1e30]", EVERYTHING),
    ("_m1key:{0 TO 2}", {1}),
]


@pytest.mark.parametrize(("q", "expected"), CASES, ids=[case[0] or "empty" for case in CASES])
def test_query(env: Environment, q: str, expected: set[int]) -> None:
    assert keys(env, q) == expected


@pytest.mark.parametrize("postings_max", [0, 1_000_000], ids=["columns", "postings"])
def test_both_strategies_give_the_same_answers(
    env: Environment, postings_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codes-column scans and postings are two ways to one answer."""
    monkeypatch.setattr(executor, "POSTINGS_MAX_VALUES", postings_max)
    for q, expected in CASES:
        assert keys(env, q) == expected, q


def test_ast_nodes_built_directly(env: Environment) -> None:
    ctx = context(env)
    assert set(execute(MatchAll(), ctx)) == EVERYTHING
    assert set(execute(Term("name", "bob"), ctx)) == {1}
    assert set(execute(Wildcard("name", "*"), ctx)) == EVERYTHING
    assert set(execute(Exists("nums"), ctx)) == {4}
    assert set(execute(Range("n", "3", None, include_low=False), ctx)) == {1}
    assert set(execute(Not(Term("type", "view")), ctx)) == {1, 3, 4, 5}
    assert set(execute(And((Term("tags", "b"), Term("tags", "c"))), ctx)) == {1}
    assert set(execute(Or((Term("n", "3"), Term("n", "10"))), ctx)) == {0, 1, 3}
    assert set(execute(BoolQuery(must_not=(Term("type", "view"),)), ctx)) == {1, 3, 4, 5}
    assert set(execute(BoolQuery(), ctx)) == EVERYTHING
    assert set(execute(And(()), ctx)) == EVERYTHING
    assert set(execute(Or(()), ctx)) == set()


def test_filters_are_anded(env: Environment) -> None:
    assert keys(env, "*", "type:view", "n:3") == {0}
    assert keys(env, "type:view OR type:click", "-flag:false") == {0, 2}


def test_date_math_uses_the_request_time(env: Environment) -> None:
    received = "_m1.receivedUTC:[NOW-1HOUR TO NOW+1MINUTE]"
    assert keys(env, received, now_ms=NOW) == set()
    import time

    assert keys(env, received, now_ms=int(time.time() * 1000)) == EVERYTHING


@pytest.mark.parametrize(
    "q", ["when:yesterday", "when:[NOW-1FORTNIGHT TO NOW]", "_m1.receivedUTC:abc"]
)
def test_a_bad_date_is_a_400(env: Environment, q: str) -> None:
    with pytest.raises(BadRequest):
        keys(env, q)


def test_wildcard_expansion_is_limited(fresh_env: Environment) -> None:
    write(fresh_env, [{"code": f"k{i:04d}", "pair": [f"p{i}", "common"]} for i in range(1_100)])
    assert len(keys(fresh_env, "code:k000*")) == 10
    assert keys(fresh_env, "code:k0005") == {5}
    assert keys(fresh_env, "pair:p7") == {7}
    assert len(keys(fresh_env, "pair:common")) == 1_100  # second values of a big field
    assert len(keys(fresh_env, "code:k0*")) == 1_000  # 1,000 terms: allowed
    assert len(keys(fresh_env, "code:[k1000 TO k1099]")) == 100  # ranges are not term-limited
    with pytest.raises(TooManyTerms) as raised:
        keys(fresh_env, "code:k*")
    assert raised.value.status == 400 and raised.value.code == "too_many_terms"
    with pytest.raises(TooManyTerms):
        keys(fresh_env, "code:k?*")  # stops scanning once past the limit
    with pytest.raises(TooManyTerms):  # the limit is per query, not per pattern
        keys(fresh_env, "code:k0* OR code:k10*")


def test_the_sorted_dictionary_follows_new_values(fresh_env: Environment) -> None:
    write(fresh_env, [{"w": "beta"}, {"w": "delta"}])
    assert keys(fresh_env, "w:[a TO c]") == {0}
    write(fresh_env, [{"w": "alpha"}, {"w": "charlie"}, {"w": True}])
    assert keys(fresh_env, "w:[a TO c]") == {0, 2}
    assert keys(fresh_env, "w:[a TO d]") == {0, 2, 3}
    assert keys(fresh_env, "w:true") == {4}


# -- visibility and stores -------------------------------------------------------------


def test_an_acknowledged_write_is_visible_to_the_next_query(fresh_env: Environment) -> None:
    for round_ in range(5):
        [key] = write(fresh_env, [{"type": "ping", "round": round_}])
        assert key in keys(fresh_env, f"round:{round_}")
        assert keys(fresh_env, "type:ping") == set(range(round_ + 1))


def test_a_query_sees_its_snapshot_only(fresh_env: Environment) -> None:
    write(fresh_env, [{"type": "a"}] * 3)
    ctx = context(fresh_env)
    assert set(execute(parse("type:a"), ctx)) == {0, 1, 2}  # postings built here
    write(fresh_env, [{"type": "a"}] * 2)
    for q in ("type:a", "*", "type:*", "-type:b", "_m1key:[0 TO *]"):
        assert set(execute(parse(q), ctx)) == {0, 1, 2}, q
    assert keys(fresh_env, "type:a") == {0, 1, 2, 3, 4}


def test_queries_while_the_writer_adds(fresh_env: Environment) -> None:
    """Readers racing the writer (postings built mid-batch, a dictionary growing, columns
    swapped for grown ones) still answer exactly for their snapshot."""
    env = fresh_env
    rng = random.Random(3)
    batches = [
        [
            {"t": rng.choice("abc"), "m": [rng.choice("xyz"), f"w{rng.randint(0, 500)}"]}
            for _ in range(rng.randint(1, 200))
        ]
        for _ in range(60)
    ]
    failures: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        last: dict[str, int] = {}
        try:
            while not done.is_set():
                ctx = context(env)
                for q in ("t:a", "m:x", "m:w1*", "-t:b", "m:[w1 TO w2]"):
                    ctx.expanded_terms = 0
                    found = execute(parse(q), ctx)
                    assert not found or found.max() < ctx.upto
                    assert len(found) >= last.get(q, 0), q  # the log only grows
                    last[q] = len(found)
                index = env.index.fields.get("t")
                value_id = None if index is None else index.value_id("a")
                if index is not None and value_id is not None:
                    expected = np.flatnonzero(index.codes[: ctx.upto] == value_id + 1)
                    assert set(execute(parse("t:a"), ctx)) == set(expected.tolist())
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for batch in batches:
            write(env, batch)
    finally:
        done.set()
        for reader in readers:
            reader.join(60)
    assert not failures, failures[0]
    total = sum(len(batch) for batch in batches)
    assert keys(env, "t:*") == set(range(total))


def test_store_with_autocommit_off_shows_its_frozen_view(fresh_env: Environment) -> None:
    env = fresh_env
    write(env, [{"type": "early"}])
    env.stores.add_from_template({"stores": [{"name": "second"}]})
    env.stores.set_autocommit("index", False, env.writer.next_key)
    write(env, [{"type": "late"}])
    frozen = store_upto(env, ["index"])
    assert frozen == 1
    ctx = context(env, upto=frozen)
    assert set(execute(parse("*"), ctx)) == {0}
    assert set(execute(parse("type:late"), ctx)) == set()
    # Several stores are the same events: the union shows what the live one shows.
    assert store_upto(env, ["index", "second"]) is None
    env.stores.set_autocommit("index", True, env.writer.next_key)
    assert store_upto(env, ["index"]) is None


def test_store_names_are_checked(fresh_env: Environment) -> None:
    env = fresh_env
    with pytest.raises(NotFound) as missing:
        store_upto(env, ["index", "nope"])
    assert missing.value.code == "no_such_store"
    env.stores.add_from_template({"sessionStores": [{"store": "stash"}]})
    with pytest.raises(NotFound, match="session store"):
        store_upto(env, ["stash"])
    env.stores.set_active("index", False)
    with pytest.raises(Conflict) as disabled:
        store_upto(env, ["index"])
    assert disabled.value.status == 409 and disabled.value.code == "store_disabled"


# -- results: sorting, paging, projection, CSV -------------------------------------------------


def page(
    env: Environment, q: str, sort: list[tuple[str, bool]], start: int, rows: int
) -> list[int]:
    ctx = context(env)
    return page_keys(execute(parse(q), ctx), sort, start, rows, ctx)


def test_sorting_small(env: Environment) -> None:
    assert page(env, "*", [], 0, 10) == [0, 1, 2, 3, 4, 5]
    assert page(env, "*", [("_m1key", True)], 1, 3) == [4, 3, 2]
    # strings, code point order; missing last both ways
    assert page(env, "*", [("name", False)], 0, 10) == [2, 0, 4, 1, 3, 5]
    assert page(env, "*", [("name", True)], 0, 10) == [5, 3, 1, 4, 0, 2]
    assert page(env, "*", [("zip", False)], 0, 10) == [0, 2, 1, 3, 4, 5]
    # numbers (key 3's n is the string "3": numbers first, then strings, then missing)
    assert page(env, "*", [("n", False)], 0, 10) == [2, 0, 1, 3, 4, 5]
    assert page(env, "*", [("n", True)], 0, 10) == [1, 0, 2, 3, 4, 5]
    # dates
    assert page(env, "*", [("when", True)], 0, 10) == [5, 2, 1, 0, 3, 4]
    assert page(env, "*", [("when", False)], 0, 2) == [0, 1]
    # multi-field: ties of the first broken by the second, then by _m1key
    assert page(env, "*", [("type", False), ("n", True)], 0, 10) == [5, 1, 3, 4, 0, 2]
    assert page(env, "*", [("type", True), ("_m1key", True)], 0, 10) == [2, 0, 4, 3, 1, 5]
    assert page(env, "*", [("nofield", True)], 0, 10) == [0, 1, 2, 3, 4, 5]
    # booleans sort false before true, before strings
    assert page(env, "*", [("flag", False)], 0, 10) == [1, 0, 3, 2, 4, 5]
    # paging
    assert page(env, "*", [("name", False)], 2, 2) == [4, 1]
    assert page(env, "*", [("name", False)], 5, 10) == [5]
    assert page(env, "*", [("name", False)], 6, 10) == []
    assert page(env, "*", [("name", False)], 0, 0) == []


def _expected_order(records: list[dict[str, Any]], sort: list[tuple[str, bool]]) -> list[int]:
    """Brute force: missing last, numbers before strings, ties by _m1key ascending."""

    def sort_key(record: dict[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name, descending in sort:
            value = record.get(name)
            if isinstance(value, list):
                value = value[0]
            if value is None:
                parts.append((2, 0, ""))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                parts.append((0, -value if descending else value, ""))
            else:
                parts.append((1, 0, _Reversed(value) if descending else value))
        parts.append(record["_m1key"])
        return tuple(parts)

    return [r["_m1key"] for r in sorted(records, key=sort_key)]


class _Reversed:
    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def big_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    """Enough events for the top-k narrowing to kick in (it starts at 4,096 matches)."""
    environment = open_env(tmp_path_factory.mktemp("sort") / "data")
    rng = random.Random(7)
    items = []
    for i in range(6_000):
        item: dict[str, Any] = {"g": rng.choice("abcde")}
        if rng.random() < 0.8:
            item["x"] = rng.randint(0, 50)  # many ties
        if rng.random() < 0.7:
            item["w"] = rng.choice(["kiwi", "apple", "fig", "Plum", "date", str(i % 9)])
        if i % 3 == 0:
            item["t"] = rng.random()
        items.append(item)
    write(environment, items[:3_000])
    write(environment, items[3_000:])
    yield environment
    environment.close()


SORTS = [
    [("x", False)],
    [("x", True)],
    [("w", False)],
    [("w", True)],
    [("t", True)],
    [("x", True), ("w", False)],
    [("g", False), ("x", True), ("t", False)],
    [("w", True), ("_m1key", True)],
]


@pytest.mark.parametrize("sort", SORTS, ids=[",".join(f"{f}-{d}" for f, d in s) for s in SORTS])
@pytest.mark.parametrize(("start", "rows"), [(0, 10), (37, 25), (0, 1), (2_990, 40)])
def test_top_k_matches_a_full_sort(
    big_env: Environment, sort: list[tuple[str, bool]], start: int, rows: int
) -> None:
    records = event_log.get_records(big_env.lake, range(6_000))
    expected = _expected_order(records, sort)[start : start + rows]
    assert page(big_env, "*", sort, start, rows) == expected
    subset = [r for r in records if r["g"] in "ab"]
    assert page(big_env, "g:(a OR b)", sort, 0, 15) == _expected_order(subset, sort)[:15]


def test_projection() -> None:
    records = [
        {"a": 1, "b.c": "x", "b.d": [1, 2], "_m1key": 7},
        {"a": 2, "_m1key": 8},
    ]
    assert project(records, None) == records
    assert project(records, ["b.c", "a"]) == [
        {"b.c": "x", "a": 1, "_m1key": 7},
        {"a": 2, "_m1key": 8},
    ]
    assert project(records, ["_m1key", "zzz"]) == [{"_m1key": 7}, {"_m1key": 8}]
    assert project(records, ["b.*"]) == [{"b.c": "x", "b.d": [1, 2], "_m1key": 7}, {"_m1key": 8}]


def test_csv_is_rfc_4180() -> None:
    docs = [
        {"s": 'say "hi", then\r\nleave', "n": 1.5, "b": True, "m": ["x", "y,z"], "_m1key": 0},
        {"s": "plain", "n": 10, "b": False, "_m1key": 1},
    ]
    text = to_csv(docs, csv_columns(docs, ["s", "n", "b", "m"]))
    assert text == (
        's,n,b,m,_m1key\r\n"say ""hi"", then\r\nleave",1.5,true,"x,y,z",0\r\nplain,10,false,,1\r\n'
    )
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1] == ['say "hi", then\r\nleave', "1.5", "true", "x,y,z", "0"]


def test_csv_header_for_all_fields_is_first_seen_order() -> None:
    docs = [{"b": 1, "_m1key": 0}, {"a": 2, "b": 3, "_m1key": 1}]
    assert csv_columns(docs, None) == ["b", "_m1key", "a"]
    assert to_csv([], ["a", "_m1key"]) == "a,_m1key\r\n"


def test_bitmap_helpers_roundtrip() -> None:
    found = executor.keys_bitmap(np.array([5, 1, 9], dtype=np.int64))
    assert found == BitMap([1, 5, 9])
    assert executor.bitmap_array(found).tolist() == [1, 5, 9]
    assert executor.key_range(3, 1) == BitMap()

"""JSON facets (m1lite.query.facets) over a real Environment, checked against brute force.

Events go in through the enricher and the writer as /write puts them; the expected facet
answers are computed in plain Python from the records read back from the log, following
Solr's JSON Facet API rules (and the choices documented in m1lite/query/stats.py and
facets.py). Every terms facet runs through both counting paths (forward column and
postings) and both must equal the brute force.

Numbers in the data are multiples of 0.25, so sums are exact and sorting by a statistic
cannot depend on rounding.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import assert_same
from pyroaring import BitMap

from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.errors import BadRequest
from m1lite.query import facets
from m1lite.query.datemath import resolve_date
from m1lite.query.execute import QueryContext
from m1lite.query.facets import MAX_BUCKETS, parse_facets, run_facets
from m1lite.query.parser import parse
from m1lite.schema import format_date_ms, parse_date_ms
from m1lite.storage.index import Index
from m1lite.storage.log import get_records

SCHEMA = [
    {"name": "when", "type": "date"},
    {"name": "price", "type": "double"},
    {"name": "label", "type": "string"},
]
DATE_FIELDS = frozenset({"when", "_m1.receivedUTC"})
TYPES = {"when": "date", "price": "double", "label": "string", "_m1key": "integer"}
BASE_MS = parse_date_ms("2024-03-01T00:00:00Z") or 0
NOW_MS = BASE_MS + 5 * 3_600_000 + 123  # "now" for date math in these tests
STRATEGIES = ("auto", "column", "postings")


# ---------------------------------------------------------------------------- environment


@contextmanager
def environment(path: Path, batches: list[list[dict[str, Any]]]) -> Iterator[Environment]:
    """A started Environment with SCHEMA and the batches written (one request each)."""
    with mock.patch.dict(os.environ, {"M1LITE_ADMIN_PASSWORD": "facet-tests"}):
        env = Environment(Config(data=path))
    try:
        env.start()
        env.schema.add(SCHEMA)
        env.save_schema()
        write(env, batches)
        yield env
    finally:
        env.close()


def write(env: Environment, batches: list[list[dict[str, Any]]]) -> None:
    async def go() -> None:
        for items in batches:
            if items:
                future = env.submit([dict(i) for i in items], "10.0.0.1", durable=True)
                assert future is not None
                await future

    asyncio.run(go())


def all_records(env: Environment) -> list[dict[str, Any]]:
    return get_records(env.lake, range(env.index.visible_upto))


@dataclass
class MiniContext:
    """The FacetContext protocol with a tiny query language: `*:*` or `field:value`
    (matching a string, boolean or number value), answered from the records."""

    index: Index
    upto: int
    now_ms: int
    records: list[dict[str, Any]]

    def run_query(self, q: str) -> BitMap:
        return BitMap(r["_m1key"] for r in self.records if matches(r, q))

    def is_date(self, name: str) -> bool:
        return name in DATE_FIELDS

    def declared_type(self, name: str) -> str | None:
        return TYPES.get(name)


def context(env: Environment) -> MiniContext:
    return MiniContext(env.index, env.index.visible_upto, NOW_MS, all_records(env))


def matches(record: dict[str, Any], q: str) -> bool:
    if q.strip() in ("*", "*:*"):
        return True
    field, _, text = q.partition(":")
    strings, numbers = values_of(record, field)
    for value in strings:
        if (str(value).lower() if isinstance(value, bool) else value) == text:
            return True
    try:
        return float(text) in numbers
    except ValueError:
        return False


# ---------------------------------------------------------------------------- brute force


def values_of(record: dict[str, Any], field: str) -> tuple[list[Any], list[float]]:
    """(distinct strings/booleans, numbers with repeats) of a field, as the index sees them."""
    if field == "_m1key":
        return [], [float(record["_m1key"])]
    raw = record.get(field)
    if raw is None:
        return [], []
    strings: dict[tuple[bool, Any], Any] = {}
    numbers: list[float] = []
    for item in raw if isinstance(raw, list) else [raw]:
        if isinstance(item, bool):
            strings[(True, item)] = item
        elif isinstance(item, str):
            ms = parse_date_ms(item) if field in DATE_FIELDS else None
            if ms is not None:
                numbers.append(float(ms))
            else:
                strings[(False, item)] = item
        else:
            numbers.append(float(item))
    return list(strings.values()), numbers


def number_json(field: str, value: float) -> Any:
    if field in DATE_FIELDS:
        return format_date_ms(int(value))
    if TYPES.get(field) != "double" and value.is_integer():
        return int(value)
    return float(value)


def string_order(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, bool) else (1, value)


def stat_order(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float):
        return (0, value)
    return (1, value) if isinstance(value, str) else (2, value)


def parse_stat_text(text: str) -> tuple[str, str | None, list[float]]:
    text = text.strip()
    if text == "count":
        return "count", None, []
    func, _, rest = text.partition("(")
    args = [a.strip() for a in rest.rstrip(")").split(",") if a.strip()]
    return func, (args[0] if args else None), [float(p) for p in args[1:]]


def brute_stat(text: str, docs: list[dict[str, Any]]) -> Any:
    """One statistic over docs (a doc may appear more than once: allBuckets)."""
    func, field, points = parse_stat_text(text)
    if func == "count":
        return len(docs)
    assert field is not None
    per_doc = [values_of(d, field) for d in docs]
    numbers = sorted(n for _, ns in per_doc for n in ns)
    strings = [s for ss, _ in per_doc for s in ss]
    if func == "missing":
        return sum(1 for ss, ns in per_doc if not ss and not ns)
    if func == "countvals":
        return sum(len(ss) + len(ns) for ss, ns in per_doc)
    if func in ("unique", "hll"):
        return len({(isinstance(s, bool), s) for s in strings}) + len(set(numbers))
    if func in ("min", "max"):
        if numbers:
            return number_json(field, numbers[0] if func == "min" else numbers[-1])
        if strings:
            ordered = sorted(strings, key=string_order)
            return ordered[0] if func == "min" else ordered[-1]
        return None
    if func == "percentile":
        if not numbers:
            return None
        found = [float(np.percentile(numbers, p)) for p in points]
        return found[0] if len(found) == 1 else found
    total = float(sum(numbers))
    if func == "sum":
        return total
    if func == "sumsq":
        return float(sum(n * n for n in numbers))
    mean = total / len(numbers) if numbers else 0.0
    if func == "avg":
        return mean
    variance = sum((n - mean) ** 2 for n in numbers) / len(numbers) if numbers else 0.0
    return variance if func == "variance" else math.sqrt(variance)


class Brute:
    """Expected facet answers from the records."""

    def __init__(self, records: list[dict[str, Any]], now_ms: int = NOW_MS) -> None:
        self.records = records
        self.now_ms = now_ms

    def answer(self, request: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"count": len(docs)}
        self.fill(out, docs, request.get("facet", {}), False)
        return out

    def fill(
        self,
        bucket: dict[str, Any],
        docs: list[dict[str, Any]],
        children: dict[str, Any],
        process_empty: bool,
    ) -> None:
        if not docs and not process_empty:
            return
        for name, spec in children.items():
            if isinstance(spec, str):
                value = brute_stat(spec, docs)
                if value is not None:
                    bucket[name] = value
        for name, spec in children.items():
            if isinstance(spec, dict):
                bucket[name] = self.facet(spec, docs)

    def facet(self, spec: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
        domain = spec.get("domain")
        if domain is not None:
            if domain.get("query"):
                docs = [r for r in self.records if all(matches(r, q) for q in domain["query"])]
            filters = domain.get("filter", [])
            for q in [filters] if isinstance(filters, str) else filters:
                docs = [d for d in docs if matches(d, q)]
        kind = spec["type"]
        if kind == "query":
            matched = [d for d in docs if matches(d, spec.get("q", "*:*"))]
            out: dict[str, Any] = {"count": len(matched)}
            self.fill(out, matched, spec.get("facet", {}), spec.get("processEmpty", False))
            return out
        if kind == "range":
            return self.range(spec, docs)
        return self.terms(spec, docs)

    def bucket(
        self, spec: dict[str, Any], val: Any, members: list[dict[str, Any]]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"val": val, "count": len(members)}
        self.fill(out, members, spec.get("facet", {}), spec.get("processEmpty", False))
        return out

    def terms(self, spec: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
        field = spec["field"]
        mincount = spec.get("mincount", 1)
        prefix = spec.get("prefix")
        members: dict[tuple[int, Any], list[dict[str, Any]]] = {}

        def key_of(value: Any, number: bool) -> tuple[int, Any]:
            return (0, value) if number else (1 if isinstance(value, bool) else 2, value)

        for doc in docs:
            strings, numbers = values_of(doc, field)
            for s in strings:
                members.setdefault(key_of(s, False), []).append(doc)
            for n in set(numbers):
                members.setdefault(key_of(n, True), []).append(doc)
        if mincount == 0:
            for record in self.records:
                strings, numbers = values_of(record, field)
                for s in strings:
                    members.setdefault(key_of(s, False), [])
                if field != "_m1key":
                    for n in numbers:
                        members.setdefault(key_of(n, True), [])
        selectable = {
            k: v
            for k, v in members.items()
            if prefix is None or (k[0] == 2 and k[1].startswith(prefix))
        }
        candidates = sorted(k for k, v in selectable.items() if len(v) >= mincount)
        out: dict[str, Any] = {}
        if spec.get("numBuckets"):
            out["numBuckets"] = (
                sum(1 for v in selectable.values() if v) if mincount > 0 else len(selectable)
            )
        candidates = self.sort(spec, candidates, members)
        limit = spec.get("limit", 10)
        offset = spec.get("offset", 0)
        chosen = candidates[offset : None if limit < 0 else offset + limit]
        if spec.get("allBuckets"):
            everyone = [d for v in selectable.values() for d in v]
            all_out: dict[str, Any] = {"count": len(everyone)}
            if everyone or spec.get("processEmpty"):
                for name, stat in spec.get("facet", {}).items():
                    if isinstance(stat, str):
                        value = brute_stat(stat, everyone)
                        if value is not None:
                            all_out[name] = value
            out["allBuckets"] = all_out
        if spec.get("missing"):
            absent = [d for d in docs if values_of(d, field) == ([], [])]
            missing: dict[str, Any] = {"count": len(absent)}
            self.fill(missing, absent, spec.get("facet", {}), spec.get("processEmpty", False))
            out["missing"] = missing
        out["buckets"] = [
            self.bucket(spec, number_json(field, k[1]) if k[0] == 0 else k[1], members[k])
            for k in chosen
        ]
        return out

    def sort(
        self,
        spec: dict[str, Any],
        candidates: list[tuple[int, Any]],
        members: dict[tuple[int, Any], list[dict[str, Any]]],
    ) -> list[tuple[int, Any]]:
        """candidates come in index order; stable sorts keep it as the tie-break."""
        text = spec.get("sort", "count desc")
        if isinstance(text, dict):
            text = " ".join(*text.items())
        variable, *rest = text.split()
        descending = (rest[0] == "desc") if rest else variable != "index"
        if variable == "index":
            return list(reversed(candidates)) if descending else candidates
        if variable == "count":
            return sorted(candidates, key=lambda k: len(members[k]), reverse=descending)
        stat = spec["facet"][variable]
        values = {k: brute_stat(stat, members[k]) for k in candidates}
        present = [k for k in candidates if values[k] is not None]
        absent = [k for k in candidates if values[k] is None]
        present.sort(key=lambda k: stat_order(values[k]), reverse=descending)
        return present + absent

    def range(self, spec: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
        field = spec["field"]

        def words(value: Any) -> set[str]:
            return {value} if isinstance(value, str) else set(value)

        include = words(spec.get("include", [])) or {"lower"}
        if "all" in include:
            include = {"lower", "upper", "edge", "outer"}
        other = words(spec.get("other", []))
        if field in DATE_FIELDS:
            start = resolve_date(spec["start"], self.now_ms)
            end = resolve_date(spec["end"], self.now_ms)
            gap_ms = {"+1HOUR": 3_600_000, "+90MINUTES": 5_400_000, "+1DAY": 86_400_000}
            step = gap_ms[spec["gap"]]
            label: Any = format_date_ms
        else:
            start, end, step = spec["start"], spec["end"], spec["gap"]
            integral = TYPES.get(field) != "double" and all(
                isinstance(v, int) for v in (start, end, step)
            )
            label = int if integral else float
        ranges = []
        low = start
        while low < end:
            high = low + step
            if high > end:
                if spec.get("hardend"):
                    high = end
                else:
                    end = high
            ranges.append((low, high))
            low = high

        def inside(v: float, lo: float, hi: float, lo_in: bool, hi_in: bool) -> bool:
            return (lo < v or (lo_in and v == lo)) and (v < hi or (hi_in and v == hi))

        def members(lo: float, hi: float, lo_in: bool, hi_in: bool) -> list[dict[str, Any]]:
            return [
                d
                for d in docs
                if any(inside(v, lo, hi, lo_in, hi_in) for v in values_of(d, field)[1])
            ]

        out: dict[str, Any] = {"buckets": []}
        for lo, hi in ranges:
            lo_in = "lower" in include or ("edge" in include and lo == start)
            hi_in = "upper" in include or ("edge" in include and hi == end)
            found = members(lo, hi, lo_in, hi_in)
            if len(found) >= spec.get("mincount", 0):
                out["buckets"].append(self.bucket(spec, label(lo), found))
        if "none" in other:
            return out
        extra = {
            "before": (
                -math.inf,
                start,
                False,
                "outer" in include or not ({"lower", "edge"} & include),
            ),
            "after": (
                end,
                math.inf,
                "outer" in include or not ({"upper", "edge"} & include),
                False,
            ),
            "between": (
                start,
                end,
                bool({"lower", "edge"} & include),
                bool({"upper", "edge"} & include),
            ),
        }
        for name, (lo, hi, lo_in, hi_in) in extra.items():
            if name in other or "all" in other:
                found = members(lo, hi, lo_in, hi_in)
                bucket: dict[str, Any] = {"count": len(found)}
                self.fill(bucket, found, spec.get("facet", {}), spec.get("processEmpty", False))
                out[name] = bucket
        return out


def check(env: Environment, request: dict[str, Any], keys: list[int] | None = None) -> dict:
    """Run request over keys (default: everything) with every strategy; compare."""
    ctx = context(env)
    wanted = set(range(ctx.upto)) if keys is None else set(keys)
    docs = [r for r in ctx.records if r["_m1key"] in wanted]
    expected = Brute(ctx.records).answer(request, docs)
    parsed = parse_facets(request)
    for strategy in STRATEGIES:
        actual = run_facets(parsed, BitMap(wanted), ctx, strategy=strategy)
        assert_same(actual, expected, f"facets[{strategy}]")
    return expected


# ---------------------------------------------------------------------------- a fixed data set


def fixed_events(n: int = 120, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "alp", "be", "Zed", "éclair"]
    events = []
    for i in range(n):
        event: dict[str, Any] = {"i": i}
        if rng.random() < 0.85:
            event["s"] = rng.choice(words)
        if rng.random() < 0.6:
            event["m"] = [rng.choice(words) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.8:
            event["n"] = rng.randint(-4, 12) / 4
        if rng.random() < 0.4:
            event["mn"] = [rng.randint(0, 8) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.7:
            event["price"] = rng.randint(0, 40) / 4
        if rng.random() < 0.5:
            event["b"] = rng.random() < 0.5
        if rng.random() < 0.9:
            event["when"] = format_date_ms(BASE_MS + rng.randint(0, 6 * 3_600_000))
        choice = rng.random()
        if choice < 0.3:
            event["x"] = rng.choice(words)
        elif choice < 0.5:
            event["x"] = rng.randint(0, 5)
        elif choice < 0.6:
            event["x"] = rng.random() < 0.5
        elif choice < 0.75:
            event["x"] = [rng.choice(words), rng.randint(0, 3), rng.choice(words)]
        if rng.random() < 0.3:
            event["user"] = {"id": f"u{rng.randint(0, 9)}", "score": rng.randint(0, 3)}
        if rng.random() < 0.9:
            event["uid"] = f"id{i:03d}"  # many distinct values: small buckets count sparsely
        if rng.random() < 0.5:
            event["codes"] = [f"c{rng.randint(0, 299)}" for _ in range(rng.randint(1, 3))]
        events.append(event)
    return events


@pytest.fixture(scope="module")
def fixed_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    events = fixed_events()
    # Several requests, so multi-valued extras come from several commits.
    with environment(tmp_path_factory.mktemp("facets"), [events[:50], events[50:]]) as env:
        yield env


TERMS_CASES = [
    {"type": "terms", "field": "s"},
    {"type": "terms", "field": "s", "limit": -1, "sort": "index asc"},
    {"type": "terms", "field": "s", "limit": 3, "offset": 2, "sort": "count asc"},
    {"type": "terms", "field": "s", "sort": "index desc", "mincount": 12},
    {"type": "terms", "field": "s", "prefix": "al", "numBuckets": True, "allBuckets": True},
    {"type": "terms", "field": "s", "missing": True, "numBuckets": True, "mincount": 15},
    {"type": "terms", "field": "s", "mincount": 0, "limit": -1, "numBuckets": True},
    {
        "type": "terms",
        "field": "m",
        "limit": -1,
        "allBuckets": True,
        "missing": True,
        "facet": {"p": "sum(price)", "c": "countvals(m)"},
    },
    {"type": "terms", "field": "m", "sort": "index", "prefix": "b"},
    {"type": "terms", "field": "n", "limit": -1},
    {"type": "terms", "field": "n", "sort": "index desc", "limit": 5, "offset": 1},
    {"type": "terms", "field": "n", "mincount": 0, "limit": -1, "numBuckets": True},
    {"type": "terms", "field": "mn", "limit": -1, "missing": True, "sort": "index asc"},
    {"type": "terms", "field": "price", "limit": 4, "sort": "index asc"},
    {"type": "terms", "field": "b", "missing": True},
    {"type": "terms", "field": "x", "limit": -1, "sort": "index asc", "missing": True},
    {"type": "terms", "field": "x", "limit": -1, "mincount": 0, "numBuckets": True},
    {"type": "terms", "field": "when", "limit": 3, "sort": "index asc"},
    {
        "type": "terms",
        "field": "user.id",
        "sort": "u desc",
        "limit": 4,
        "facet": {"u": "unique(s)", "a": "avg(n)"},
    },
    {"type": "terms", "field": "s", "sort": "a asc", "facet": {"a": "avg(price)"}},
    {"type": "terms", "field": "s", "sort": "lo desc", "facet": {"lo": "min(m)"}},
    {"type": "terms", "field": "s", "sort": {"hi": "desc"}, "facet": {"hi": "max(when)"}},
    {"type": "terms", "field": "s", "sort": "p asc", "facet": {"p": "percentile(price,50)"}},
    {"type": "terms", "field": "nope", "missing": True, "allBuckets": True, "numBuckets": True},
    {"type": "terms", "field": "_m1key", "limit": 5, "sort": "index desc"},
    {
        "type": "terms",
        "field": "s",
        "limit": -1,
        "facet": {
            "u": {
                "type": "terms",
                "field": "uid",
                "limit": 3,
                "sort": "index desc",
                "prefix": "id0",
                "numBuckets": True,
                "allBuckets": True,
                "facet": {"n": "sum(n)"},
            }
        },
    },
    {
        "type": "terms",
        "field": "s",
        "limit": -1,
        "facet": {
            "c": {
                "type": "terms",
                "field": "codes",
                "limit": 4,
                "sort": "x asc",
                "missing": True,
                "facet": {"x": "max(n)"},
            }
        },
    },
]


@pytest.mark.parametrize("spec", TERMS_CASES, ids=lambda s: f"{s['field']}-{len(s)}")
def test_terms_options_match_brute_force(fixed_env: Environment, spec: dict[str, Any]) -> None:
    check(fixed_env, {"facet": {"f": spec}})


def test_terms_on_a_sub_domain_match_brute_force(fixed_env: Environment) -> None:
    keys = list(range(0, 120, 3))
    check(
        fixed_env,
        {
            "facet": {
                "f": {
                    "type": "terms",
                    "field": "m",
                    "limit": -1,
                    "missing": True,
                    "facet": {"v": "variance(n)"},
                }
            }
        },
        keys,
    )


def test_shorthand_forms(fixed_env: Environment) -> None:
    ctx = context(fixed_env)
    domain = BitMap(range(ctx.upto))
    short = run_facets(
        parse_facets(
            {
                "facet": {
                    "a": {"terms": "s"},
                    "b": {"query": "s:beta"},
                    "c": {"type": "func", "func": "avg(n)"},
                    "d": "count()",
                }
            }
        ),
        domain,
        ctx,
    )
    long = run_facets(
        parse_facets(
            '{"facet": {"a": {"type": "terms", "field": "s"}, '
            '"b": {"type": "query", "q": "s:beta"}, "c": "avg(n)", "d": "count"}}'
        ),
        domain,
        ctx,
    )
    assert short == long
    assert short["d"] == short["count"] == ctx.upto


RANGE_CASES = [
    {"type": "range", "field": "n", "start": -1, "end": 3, "gap": 1},
    {
        "type": "range",
        "field": "n",
        "start": -1,
        "end": 3,
        "gap": 1,
        "other": "all",
        "include": ["lower", "upper"],
    },
    {
        "type": "range",
        "field": "n",
        "start": 0,
        "end": 2.5,
        "gap": 1,
        "other": ["before", "after", "between"],
        "include": "edge",
    },
    {
        "type": "range",
        "field": "n",
        "start": 0,
        "end": 2.5,
        "gap": 1,
        "hardend": True,
        "other": "all",
        "include": ["outer"],
    },
    {
        "type": "range",
        "field": "n",
        "start": 0,
        "end": 2.5,
        "gap": 1,
        "hardend": True,
        "other": "all",
        "include": "all",
    },
    {
        "type": "range",
        "field": "n",
        "start": 0.5,
        "end": 2,
        "gap": 0.25,
        "mincount": 1,
        "other": "none",
    },
    {
        "type": "range",
        "field": "mn",
        "start": 0,
        "end": 8,
        "gap": 3,
        "other": "all",
        "include": "upper",
        "facet": {"s": "sum(mn)", "c": "count()"},
    },
    {
        "type": "range",
        "field": "price",
        "start": 0,
        "end": 10,
        "gap": 2.5,
        "facet": {"u": "unique(s)"},
    },
    {"type": "range", "field": "_m1key", "start": 0, "end": 120, "gap": 25, "other": "after"},
    {
        "type": "range",
        "field": "when",
        "start": "2024-03-01T00:00:00Z",
        "end": "2024-03-01T06:00:00Z",
        "gap": "+1HOUR",
        "other": "all",
        "facet": {"first": "min(when)", "last": "max(when)"},
    },
    {
        "type": "range",
        "field": "when",
        "start": "NOW/HOUR-5HOURS",
        "end": "NOW",
        "gap": "+90MINUTES",
        "include": ["upper", "edge"],
        "other": "all",
    },
    {
        "type": "range",
        "field": "when",
        "start": "2024-03-01T01:00:00Z",
        "end": "2024-03-01T02:30:00Z",
        "gap": "+1HOUR",
        "hardend": True,
        "other": "between",
    },
    {"type": "range", "field": "nope", "start": 0, "end": 3, "gap": 1, "other": "all"},
]


@pytest.mark.parametrize("spec", RANGE_CASES, ids=lambda s: f"{s['field']}-{len(s)}")
def test_ranges_match_brute_force(fixed_env: Environment, spec: dict[str, Any]) -> None:
    check(fixed_env, {"facet": {"r": spec}})


def test_range_bucket_values_keep_their_kind(fixed_env: Environment) -> None:
    expected = check(
        fixed_env,
        {
            "facet": {
                "ints": {"type": "range", "field": "n", "start": 0, "end": 2, "gap": 1},
                "floats": {"type": "range", "field": "n", "start": 0.0, "end": 2, "gap": 0.5},
                "double": {"type": "range", "field": "price", "start": 0, "end": 2, "gap": 1},
                "dates": {
                    "type": "range",
                    "field": "when",
                    "start": "2024-03-01T00:00:00Z",
                    "end": "2024-03-01T02:00:00Z",
                    "gap": "+1HOUR",
                },
            }
        },
    )
    assert [b["val"] for b in expected["ints"]["buckets"]] == [0, 1]
    assert [b["val"] for b in expected["floats"]["buckets"]] == [0.0, 0.5, 1.0, 1.5]
    assert [b["val"] for b in expected["double"]["buckets"]] == [0.0, 1.0]
    assert [b["val"] for b in expected["dates"]["buckets"]] == [
        "2024-03-01T00:00:00.000Z",
        "2024-03-01T01:00:00.000Z",
    ]


def test_received_time_ranges_with_date_math(fixed_env: Environment) -> None:
    ctx = context(fixed_env)
    received = parse_date_ms(ctx.records[0]["_m1.receivedUTC"])
    assert received is not None
    ctx.now_ms = received
    request = {
        "facet": {
            "r": {
                "type": "range",
                "field": "_m1.receivedUTC",
                # A day either side: the two writes could straddle midnight.
                "start": "NOW/DAY-1DAY",
                "end": "NOW/DAY+2DAYS",
                "gap": "+1HOUR",
                "mincount": 1,
                "other": "all",
            }
        }
    }
    out = run_facets(parse_facets(request), BitMap(range(ctx.upto)), ctx)
    hour = format_date_ms(received - received % 3_600_000)
    by_hour: dict[str, int] = {}
    for record in ctx.records:
        ms = parse_date_ms(record["_m1.receivedUTC"]) or 0
        slot = format_date_ms(ms - ms % 3_600_000)
        by_hour[slot] = by_hour.get(slot, 0) + 1
    assert {b["val"]: b["count"] for b in out["r"]["buckets"]} == by_hour
    assert hour in by_hour
    assert out["r"]["between"]["count"] == ctx.upto
    assert out["r"]["before"] == {"count": 0} and out["r"]["after"] == {"count": 0}


def test_query_facets_and_domain_filters(fixed_env: Environment) -> None:
    check(
        fixed_env,
        {
            "facet": {
                "beta": {
                    "type": "query",
                    "q": "s:beta",
                    "facet": {"n": "sum(n)", "top": {"type": "terms", "field": "m", "limit": 2}},
                },
                "nothing": {"type": "query", "q": "s:nothing", "facet": {"n": "sum(n)"}},
                "filtered": {
                    "type": "terms",
                    "field": "s",
                    "domain": {"filter": ["b:true"]},
                    "facet": {"a": "avg(price)"},
                },
            }
        },
    )


def test_domain_query_replaces_the_parent_domain(fixed_env: Environment) -> None:
    ctx = context(fixed_env)
    request = parse_facets(
        {
            "facet": {
                "all_s": {"type": "terms", "field": "s", "limit": -1, "domain": {"query": "*:*"}}
            }
        }
    )
    small = run_facets(request, BitMap([0, 1]), ctx)
    full = run_facets(
        parse_facets({"facet": {"all_s": {"type": "terms", "field": "s", "limit": -1}}}),
        BitMap(range(ctx.upto)),
        ctx,
    )
    assert small["count"] == 2
    assert small["all_s"] == full["all_s"]


def test_nested_three_deep_with_every_stat(fixed_env: Environment) -> None:
    stats = {
        "c": "count()",
        "su": "sum(price)",
        "av": "avg(n)",
        "mi": "min(when)",
        "ma": "max(m)",
        "sq": "sumsq(mn)",
        "va": "variance(price)",
        "sd": "stddev(n)",
        "p1": "percentile(price,50)",
        "p3": "percentile(n,0,25.5,100)",
        "un": "unique(m)",
        "hl": "hll(user.id)",
        "ms": "missing(price)",
        "cv": "countvals(x)",
    }
    check(
        fixed_env,
        {
            "facet": {
                **stats,
                "level1": {
                    "type": "terms",
                    "field": "s",
                    "limit": 3,
                    "facet": {
                        **stats,
                        "level2": {
                            "type": "range",
                            "field": "when",
                            "start": "2024-03-01T00:00:00Z",
                            "end": "2024-03-01T06:00:00Z",
                            "gap": "+90MINUTES",
                            "facet": {
                                **stats,
                                "level3": {
                                    "type": "terms",
                                    "field": "m",
                                    "missing": True,
                                    "facet": stats,
                                },
                            },
                        },
                    },
                },
            }
        },
    )


def test_stats_of_missing_fields_follow_solr(fixed_env: Environment) -> None:
    expected = check(
        fixed_env,
        {
            "facet": {
                "su": "sum(nope)",
                "av": "avg(nope)",
                "mi": "min(nope)",
                "p": "percentile(nope,50)",
                "sd": "stddev(nope)",
                "un": "unique(nope)",
                "ms": "missing(nope)",
                "cv": "countvals(nope)",
            }
        },
    )
    assert expected == {"count": 120, "su": 0.0, "av": 0.0, "sd": 0.0, "un": 0, "ms": 120, "cv": 0}


def test_empty_domain_has_only_its_count(fixed_env: Environment) -> None:
    ctx = context(fixed_env)
    request = parse_facets({"facet": {"s": {"type": "terms", "field": "s"}, "a": "avg(n)"}})
    assert run_facets(request, BitMap(), ctx) == {"count": 0}


def test_process_empty_fills_empty_buckets(fixed_env: Environment) -> None:
    check(
        fixed_env,
        {
            "facet": {
                "r": {
                    "type": "range",
                    "field": "n",
                    "start": 100,
                    "end": 102,
                    "gap": 1,
                    "processEmpty": True,
                    "other": "all",
                    "facet": {"a": "avg(n)", "m": "max(n)", "q": {"type": "query", "q": "*:*"}},
                }
            }
        },
    )


def test_real_query_context_runs_facets(fixed_env: Environment) -> None:
    env = fixed_env
    ctx = QueryContext.snapshot(
        env.index, env.schema, env.field_kinds(), upto=None, now_ms=NOW_MS, parse=parse
    )
    records = all_records(env)
    request = {
        "facet": {
            "q": {"type": "query", "q": "s:alpha", "facet": {"n": "sum(n)"}},
            "t": {"type": "terms", "field": "m", "domain": {"filter": "s:beta"}},
        }
    }
    expected = Brute(records).answer(request, records)
    assert_same(run_facets(parse_facets(request), ctx.domain, ctx), expected)


# ---------------------------------------------------------------------------- paths, growth


def test_both_terms_paths_agree_on_a_larger_index(tmp_path: Path) -> None:
    rng = random.Random(3)
    events = [
        {
            "k": f"v{rng.randint(0, 40)}",
            "t": [f"t{rng.randint(0, 6)}" for _ in range(2)],
            "n": rng.randint(0, 9),
        }
        for _ in range(3000)
    ]
    with environment(tmp_path, [events[:1000], events[1000:]]) as env:
        request = {
            "facet": {
                "k": {
                    "type": "terms",
                    "field": "k",
                    "limit": 50,
                    "allBuckets": True,
                    "facet": {"a": "avg(n)", "t": {"type": "terms", "field": "t"}},
                },
                "t": {"type": "terms", "field": "t", "sort": "u desc", "facet": {"u": "unique(k)"}},
            }
        }
        check(env, request)
        check(env, request, list(range(0, 3000, 7)))


def test_facets_follow_new_writes_and_a_restart(tmp_path: Path) -> None:
    events = fixed_events(60, seed=11)
    request = {
        "facet": {
            "m": {"type": "terms", "field": "m", "limit": -1, "facet": {"s": "sum(mn)"}},
            "mn": {"type": "terms", "field": "mn", "limit": -1},
            "x": {"type": "terms", "field": "x", "limit": -1, "sort": "index asc"},
        }
    }
    with environment(tmp_path, [events[:20]]) as env:
        check(env, request)
        write(env, [events[20:40]])  # the cached extras grow with the index
        check(env, request)
        write(env, [events[40:]])
        before = check(env, request)
    with mock.patch.dict(os.environ, {"M1LITE_ADMIN_PASSWORD": "facet-tests"}):
        env = Environment(Config(data=tmp_path))
    try:
        assert check(env, request) == before
    finally:
        env.close()


# ---------------------------------------------------------------------------- abuse


def error_of(request: Any, env: Environment | None = None) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parsed = parse_facets(request)
        if env is not None:
            ctx = context(env)
            run_facets(parsed, BitMap(range(ctx.upto)), ctx)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (
            {"facet": {"f": {"type": "terms", "field": "s", "limit": 1_000_000}}},
            "facet_limit",
            "limit",
        ),
        (
            {"facet": {"f": {"type": "range", "field": "n", "start": 0, "end": 10, "gap": 0}}},
            "bad_facet",
            "gap",
        ),
        (
            {"facet": {"f": {"type": "range", "field": "n", "start": 0, "end": 10**7, "gap": 1}}},
            "facet_limit",
            "buckets",
        ),
        (
            {"facet": {"f": {"type": "range", "field": "n", "start": 5, "end": 1, "gap": 1}}},
            "bad_facet",
            "before start",
        ),
        ({"facet": {"f": {"type": "heatmap", "field": "s"}}}, "bad_facet", "heatmap"),
        ({"facet": {"f": {"type": "pivot", "field": "s"}}}, "bad_facet", "unknown facet type"),
        ({"facet": {"f": {"field": "s", "limit": 3}}}, "bad_facet", "type"),
        ({"facet": {"f": "median(x)"}}, "bad_facet", "unknown statistic"),
        ({"facet": {"f": "avg(div(x,2))"}}, "bad_facet", "field name"),
        ({"facet": {"f": "avg x"}}, "bad_facet", "not a statistic"),
        ({"facet": {"f": "percentile(x)"}}, "bad_facet", "percentile"),
        ({"facet": {"f": "percentile(x,101)"}}, "bad_facet", "0–100"),
        ({"facet": {"f": 3}}, "bad_facet", "'f'"),
        ({"facet": {"f": {"type": "terms", "field": "s", "sort": "zz desc"}}}, "bad_facet", "zz"),
        (
            {"facet": {"f": {"type": "terms", "field": "s", "sort": "count up"}}},
            "bad_facet",
            "asc or desc",
        ),
        ({"facet": {"f": {"type": "terms", "field": "s", "limt": 3}}}, "bad_facet", "limt"),
        ({"facet": {"f": {"type": "terms", "field": "s", "limit": "ten"}}}, "bad_facet", "integer"),
        (
            {"facet": {"f": {"type": "terms", "field": "s", "missing": "yes"}}},
            "bad_facet",
            "true or false",
        ),
        ({"facet": {"f": {"type": "terms"}}}, "bad_facet", "field"),
        (
            {
                "facet": {
                    "f": {
                        "type": "range",
                        "field": "n",
                        "start": 0,
                        "end": 3,
                        "gap": 1,
                        "include": "middle",
                    }
                }
            },
            "bad_facet",
            "middle",
        ),
        (
            {"facet": {"f": {"type": "terms", "field": "s", "domain": {"join": {}}}}},
            "bad_facet",
            "join",
        ),
        ({"facet": {"count": "avg(n)"}}, "bad_facet", "count"),
        ({"facet": [1]}, "bad_facet", "object"),
        ("{not json", "bad_facet", "JSON"),
        ({"facet": {f"s{i}": "sum(n)" for i in range(65)}}, "facet_limit", "64"),
    ],
)
def test_bad_requests_are_400_naming_the_facet(request_: Any, code: str, words: str) -> None:
    error = error_of(request_)
    assert error.code == code
    assert words in error.message


def nested(depth: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "terms", "field": "s"}
    for _ in range(depth - 1):
        spec = {"type": "terms", "field": "s", "facet": {"in": spec}}
    return {"facet": {"top": spec}}


def test_nesting_is_limited_to_eight(fixed_env: Environment) -> None:
    check(fixed_env, nested(8))
    error = error_of(nested(9))
    assert error.code == "facet_limit" and "8" in error.message


def test_runaway_buckets_are_400(fixed_env: Environment) -> None:
    # 120 _m1key buckets x 10,000 range buckets: refused, not computed.
    error = error_of(
        {
            "facet": {
                "k": {
                    "type": "terms",
                    "field": "_m1key",
                    "limit": 10_000,
                    "facet": {
                        "r": {"type": "range", "field": "n", "start": 0, "end": 10_000, "gap": 1}
                    },
                }
            }
        },
        fixed_env,
    )
    assert error.code == "facet_limit" and f"{MAX_BUCKETS:,}" in error.message
    # A date gap that makes too many buckets is found while stepping, not after.
    error = error_of(
        {
            "facet": {
                "r": {
                    "type": "range",
                    "field": "when",
                    "start": "2024-01-01T00:00:00Z",
                    "end": "2025-01-01T00:00:00Z",
                    "gap": "+1MINUTE",
                }
            }
        },
        fixed_env,
    )
    assert error.code == "facet_limit"
    error = error_of(
        {"facet": {"r": {"type": "range", "field": "label", "start": 0, "end": 3, "gap": 1}}},
        fixed_env,
    )
    assert "string" in error.message
    error = error_of(
        {"facet": {"r": {"type": "range", "field": "n", "start": "NOW", "end": 3, "gap": 1}}},
        fixed_env,
    )
    assert "number" in error.message


def test_work_budget_stops_expensive_nesting(
    fixed_env: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every _m1key bucket lists all of codes' values (mincount 0): fine alone, too much
    # together once the budget (lowered here; 200M values in production) runs out.
    monkeypatch.setattr(facets, "MAX_WORK", 5_000)
    request = {
        "facet": {
            "k": {
                "type": "terms",
                "field": "_m1key",
                "limit": -1,
                "facet": {"c": {"type": "terms", "field": "codes", "mincount": 0, "limit": 1}},
            }
        }
    }
    error = error_of(request, fixed_env)
    assert error.code == "facet_limit" and "5,000" in error.message


# ---------------------------------------------------------------------------- hypothesis

WORDS = st.sampled_from(["a", "ab", "abc", "b", "ba", "Z", "é"])
NUMBERS = st.integers(-8, 16).map(lambda i: i / 4) | st.integers(-3, 6)
SCALARS = WORDS | NUMBERS | st.booleans()
EVENTS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "s": WORDS,
            "m": st.lists(WORDS, min_size=1, max_size=4),
            "n": NUMBERS,
            "mn": st.lists(NUMBERS, min_size=1, max_size=3),
            "price": NUMBERS,
            "b": st.booleans(),
            "when": st.integers(0, 6 * 3_600_000).map(lambda ms: format_date_ms(BASE_MS + ms)),
            "x": SCALARS | st.lists(SCALARS, min_size=1, max_size=3),
        },
    ),
    max_size=25,
)
TERMS_FIELDS = ["s", "m", "n", "mn", "price", "b", "when", "x", "uid", "codes", "nope"]
RANGE_FIELDS = ["n", "mn", "price", "x", "_m1key"]
FUNCS = [
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "sumsq",
    "variance",
    "stddev",
    "percentile",
    "unique",
    "hll",
    "missing",
    "countvals",
]


@st.composite
def stat_texts(draw: st.DrawFn) -> str:
    func = draw(st.sampled_from(FUNCS))
    if func == "count":
        return "count()"
    field = draw(st.sampled_from(TERMS_FIELDS))
    if func == "percentile":
        points = draw(
            st.lists(st.sampled_from(["0", "10", "50", "62.5", "100"]), min_size=1, max_size=3)
        )
        return f"percentile({field},{','.join(points)})"
    return f"{func}({field})"


@st.composite
def facet_specs(draw: st.DrawFn, depth: int = 1) -> dict[str, Any]:
    kind = draw(st.sampled_from(["terms", "terms", "range", "query"]))
    stats = draw(st.dictionaries(st.sampled_from(["s1", "s2"]), stat_texts(), max_size=2))
    children: dict[str, Any] = dict(stats)
    if depth < 3 and draw(st.booleans()):
        children["sub"] = draw(facet_specs(depth + 1))
    spec: dict[str, Any] = {"type": kind}
    if children:
        spec["facet"] = children
    if draw(st.integers(0, 5)) == 0:
        spec["processEmpty"] = True
    queries = st.sampled_from(["*:*", "s:a", "m:ab", "n:1", "x:a", "b:true"])
    if kind != "query" and draw(st.integers(0, 4)) == 0:
        spec["domain"] = {
            "filter": draw(st.lists(queries, max_size=2) | queries),
            "query": draw(st.lists(queries, max_size=1)),
        }
    if kind == "range" and draw(st.integers(0, 3)) == 0:
        hours = draw(st.integers(-1, 5))
        spec.update(
            field="when",
            start=format_date_ms(BASE_MS + hours * 3_600_000),
            end=f"NOW/HOUR{draw(st.integers(-5, 2)):+d}HOURS",
            gap=draw(st.sampled_from(["+1HOUR", "+90MINUTES"])),
        )
        if resolve_date(spec["end"], NOW_MS) < BASE_MS + hours * 3_600_000:
            spec["end"] = spec["start"]
    if kind == "query":
        spec["q"] = draw(queries)
    elif kind == "range":
        if "start" not in spec:
            start = draw(st.integers(-2, 3))
            gap = draw(st.sampled_from([1, 2, 0.5]))
            field = draw(st.sampled_from(RANGE_FIELDS))
            spec.update(field=field, start=start, end=start + draw(st.integers(0, 6)), gap=gap)
        if draw(st.booleans()):
            spec["hardend"] = True
        spec["include"] = draw(
            st.lists(st.sampled_from(["lower", "upper", "edge", "outer", "all"]), max_size=2)
        )
        spec["other"] = draw(
            st.lists(st.sampled_from(["before", "after", "between", "all", "none"]), max_size=2)
        )
        spec["mincount"] = draw(st.integers(0, 2))
    else:
        spec["field"] = draw(st.sampled_from(TERMS_FIELDS))
        spec["limit"] = draw(st.sampled_from([-1, 0, 1, 2, 10]))
        spec["offset"] = draw(st.integers(0, 2))
        spec["mincount"] = draw(st.integers(0, 2))
        for option in ("missing", "numBuckets", "allBuckets"):
            if draw(st.booleans()):
                spec[option] = True
        if draw(st.integers(0, 3)) == 0:
            spec["prefix"] = draw(st.sampled_from(["", "a", "ab", "b", "z"]))
        sorts = ["count desc", "count asc", "index asc", "index desc", "count", "index"]
        sorts += [f"{name} {way}" for name in stats for way in ("asc", "desc")]
        spec["sort"] = draw(st.sampled_from(sorts))
    return spec


REQUESTS = st.dictionaries(
    st.sampled_from(["f1", "f2", "t1"]),
    facet_specs() | stat_texts(),
    min_size=1,
    max_size=2,
).map(lambda facets: {"facet": facets})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS, request_=REQUESTS, data=st.data())
def test_random_events_and_facets_match_brute_force(
    events: list[dict[str, Any]], request_: dict[str, Any], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp, environment(Path(tmp), [events]) as env:
        keys = None
        if events and data.draw(st.booleans()):
            keys = sorted(data.draw(st.sets(st.integers(0, len(events) - 1))))
        check(env, request_, keys)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_=REQUESTS, data=st.data())
def test_random_facets_on_the_fixed_data_match_brute_force(
    fixed_env: Environment, request_: dict[str, Any], data: st.DataObject
) -> None:
    keys = None
    if data.draw(st.booleans()):
        keys = sorted(data.draw(st.sets(st.integers(0, 119), max_size=60)))
    check(fixed_env, request_, keys)

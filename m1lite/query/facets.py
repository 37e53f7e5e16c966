"""Solr's JSON Facet API over the index: `parse_facets` checks a `json` request's `facet`
object, `run_facets` answers it for a domain (the keys the query matched).

The response follows Solr: `{"count": n, <stat>: v, <facet>: {...}}` at every level
(statistics first, then sub-facets, in request order); terms and range facets hold
`buckets` of `{"val": v, "count": n, ...stats, ...facets}`. Solr behaviours kept:

- a bucket (or the whole domain) with count 0 carries only its count, no statistics or
  sub-facets, unless its facet sets `processEmpty: true` (so no matches → `{"count": 0}`);
- terms: `limit` 10 (-1 or any negative = all), `offset`, `mincount` 1, `sort` "count desc"
  (also "count asc", "index asc|desc", "<stat> asc|desc", {"count": "desc"}; without a
  direction index sorts asc, everything else desc), ties broken by value ascending;
  `missing` = events without any value of the field (with stats and sub-facets);
  `numBuckets` = values with at least one event in the domain (Solr ignores mincount
  here, except that with mincount 0 every known value counts); `allBuckets` = one bucket
  over every (prefix-selected) value, an event counted once per value it holds, with
  statistics but no sub-facets; `prefix` keeps string values with that prefix (numbers
  and booleans never match); mincount 0 also lists values the domain does not hold;
- values: strings and booleans as JSON strings/booleans; numbers as ints when integral
  (floats for `double` properties); dates as ISO text; an event counts once per bucket
  even when a multi-valued field repeats the value; index order is numbers, then
  false/true, then strings by code point (Solr's byte order);
- range: `start`, `end`, `gap` (numbers, or for dates ISO/epoch/date math and gaps such as
  `+1HOUR`), `hardend` false, `include` lower (upper, edge, outer, all), `other` before,
  after, between, none, all, `mincount` 0; bucket bounds and the before/after/between
  edges follow Solr's FacetRangeProcessor exactly (without hardend the end moves to the
  last bucket's end); `val` is the bucket start;
- query: `q` (default `*:*`) → `{"count": n, ...}`;
- `domain`: `query` replaces the parent domain (a list: intersection), `filter` (string or
  list) narrows it; `excludeTags` is accepted and changes nothing (m1lite filters carry
  no tags); joins and block joins are refused;
- short forms `{"terms": "field"}`, `{"query": "q"}`, `{"type": "func", "func": "avg(x)"}`;
  type `field` is an alias of terms; Solr's tuning options (method, overrequest, refine,
  prelim_sort, ...) are accepted and ignored: a single node's answer is exact anyway.

Departures: statistics are exact (see stats.py); sorting by a statistic puts buckets
that lack it (min/max/percentile of nothing) last in both directions; arbitrary `ranges`
and heatmaps are refused; a stat string may also be the bare word `count`.

Terms facets on string/boolean values count either through the forward column (gather
the domain's codes, `np.bincount`, plus the extras of multi-valued events) or through
the postings (one `intersection_cardinality` per distinct value). The column costs about
one pass over the domain; the postings about one intersection per value and 64K-key
chunk. `_terms_path` picks per facet: postings when they exist or are cheap to build
(at most `POSTINGS_MAX_VALUES` values) and `values x (1 + chunks) x POSTINGS_COST` is
below the domain size, else the column. Both give the same buckets.

Size limits (400 `facet_limit`): `limit` at most 10,000, at most 64 facets and statistics
in one request, nesting at most 8 deep, at most 10,000 buckets per range facet, and at
most 100,000 buckets in one response (so nested limits cannot multiply into millions).
Malformed requests are 400 `bad_facet` with a message naming the facet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
from pyroaring import BitMap

from m1lite.errors import BadRequest
from m1lite.query.datemath import parse_gap, resolve_date
from m1lite.query.execute import keys_bitmap, prefix_bounds, sorted_terms
from m1lite.query.stats import (
    ALL_STATS,
    FieldData,
    FieldTypes,
    GroupedStats,
    StatSpec,
    every_row,
    keys_of,
    unique_ints,
)
from m1lite.schema import format_date_ms
from m1lite.storage.index import Index

MAX_LIMIT = 10_000
MAX_FACETS = 64  # facets and statistics, all levels together
MAX_DEPTH = 8
MAX_RANGE_BUCKETS = 10_000
MAX_BUCKETS = 100_000  # buckets in one response, all facets and levels together
MAX_PERCENTILES = 100
# Array cells (keys, buckets, statistic inputs) one request may touch: bounds the work of
# nested facets whose limits are each fine but whose product is not.
MAX_WORK = 200_000_000
POSTINGS_MAX_VALUES = 4_096  # build postings for a terms facet only up to this many values
# Measured: one bitmap intersection per value and 64K chunk costs about as much as
# gathering and counting this many keys of the codes column.
POSTINGS_COST = 125
_ALL_CODES = 1 << 32  # build postings from every code in memory (see _string_counts)

_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_STAT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)\s*", re.DOTALL)
_FIELD = re.compile(r"[^\s(),\"']+")
_RESERVED_NAMES = frozenset({"count", "val"})  # a bucket's own keys
_TYPES = ("terms", "field", "range", "query", "func", "heatmap")
_TERMS_OPTIONS = frozenset(
    {"field", "limit", "offset", "mincount", "missing", "numBuckets", "allBuckets"}
    | {"prefix", "sort"}
)
# Solr tuning knobs that do not change an exact single-node answer: accepted, ignored.
_IGNORED_OPTIONS = frozenset(
    {"method", "overrequest", "overrefine", "refine", "cacheDf", "prelim_sort", "perSeg"}
)
_RANGE_OPTIONS = frozenset({"field", "start", "end", "gap", "hardend", "other", "include"})
_BODY_OPTIONS = frozenset({"type", "facet", "domain", "processEmpty"})
_OTHER = frozenset({"before", "after", "between", "none", "all"})
_INCLUDE = frozenset({"lower", "upper", "edge", "outer", "all"})


class FacetError(BadRequest):
    code = "bad_facet"


class FacetLimit(BadRequest):
    code = "facet_limit"


class FacetContext(FieldTypes, Protocol):
    """What `run_facets` reads; `m1lite.query.execute.QueryContext` provides it.

    `run_query` must return only keys the request may see (below `upto`, published, in
    the asked stores): facets use it for `query` facets and `domain` changes."""

    @property
    def index(self) -> Index: ...

    @property
    def upto(self) -> int: ...

    @property
    def now_ms(self) -> int: ...

    def run_query(self, q: str) -> BitMap: ...


# ---------------------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class Domain:
    """`domain`: `query` replaces the parent domain (several: their intersection), then
    each `filter` narrows it."""

    queries: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Body:
    """What every bucket of a facet (or the root) holds besides its count."""

    stats: tuple[StatSpec, ...] = ()
    facets: tuple[Facet, ...] = ()
    process_empty: bool = False
    domain: Domain | None = None


@dataclass(frozen=True, slots=True)
class TermsFacet:
    name: str
    path: str
    field: str
    body: Body
    limit: int = 10  # -1: all
    offset: int = 0
    mincount: int = 1
    missing: bool = False
    num_buckets: bool = False
    all_buckets: bool = False
    prefix: str | None = None
    sort_by: str = "count"  # count, index or a statistic's name
    descending: bool = True


@dataclass(frozen=True, slots=True)
class RangeFacet:
    name: str
    path: str
    field: str
    body: Body
    start: int | float | str
    end: int | float | str
    gap: int | float | str
    hardend: bool = False
    other: frozenset[str] = frozenset()
    include: frozenset[str] = frozenset({"lower"})
    mincount: int = 0


@dataclass(frozen=True, slots=True)
class QueryFacet:
    name: str
    path: str
    q: str
    body: Body


Facet = TermsFacet | RangeFacet | QueryFacet


@dataclass(frozen=True, slots=True)
class FacetRequest:
    body: Body

    @property
    def empty(self) -> bool:
        return not self.body.stats and not self.body.facets


def parse_facets(json_param: Any) -> FacetRequest:
    """Check the `json` parameter (text or decoded) and return its facet request; keys
    other than `facet` belong to the JSON Request API and are left to the caller."""
    if isinstance(json_param, str | bytes | bytearray):
        try:
            json_param = msgspec.json.decode(json_param)
        except msgspec.DecodeError as exc:
            raise FacetError(f"json is not valid JSON: {exc}") from None
    if not isinstance(json_param, dict):
        raise FacetError('json must be a JSON object such as {"facet": {...}}')
    spec = json_param.get("facet")
    if spec is None:
        return FacetRequest(Body())
    return FacetRequest(_Parser().body({"facet": spec}, "", 0))


class _Parser:
    def __init__(self) -> None:
        self.count = 0

    def body(self, spec: dict[str, Any], path: str, depth: int) -> Body:
        """The `facet`, `domain` and `processEmpty` options of a facet (or the root)."""
        children = spec.get("facet")
        stats: list[StatSpec] = []
        facets: list[Facet] = []
        if children is not None:
            if not isinstance(children, dict):
                raise FacetError(f"{_where(path)}: facet must be an object of named facets")
            for name, value in children.items():
                full = f"{path}.{name}" if path else name
                if not name or name in _RESERVED_NAMES:
                    raise FacetError(
                        f"facet name {full!r} is not allowed: count and val are the bucket's own"
                    )
                self.count += 1
                if self.count > MAX_FACETS:
                    raise FacetLimit(f"at most {MAX_FACETS} facets and statistics per request")
                item = self.item(name, value, full, depth + 1)
                if isinstance(item, StatSpec):
                    stats.append(item)
                else:
                    facets.append(item)
        return Body(
            tuple(stats),
            tuple(facets),
            _bool(spec, "processEmpty", False, path),
            _domain(spec.get("domain"), path),
        )

    def item(self, name: str, value: Any, path: str, depth: int) -> StatSpec | Facet:
        if isinstance(value, str):
            return parse_stat(name, value, path)
        if not isinstance(value, dict):
            raise FacetError(
                f"facet {path!r} must be an object (a terms, range or query facet) or a "
                'statistic such as "avg(price)"'
            )
        kind = value.get("type")
        spec = value
        if kind is None:
            shorthand = [key for key in value if key in _TYPES]
            if len(value) != 1 or not shorthand:
                raise FacetError(
                    f'facet {path!r} needs a "type": terms, range or query '
                    '(or the short form {"terms": "field"})'
                )
            kind = shorthand[0]
            inner = value[kind]
            if isinstance(inner, dict):
                spec = inner
            elif isinstance(inner, str) and kind in ("terms", "field"):
                spec = {"field": inner}
            elif isinstance(inner, str) and kind == "query":
                spec = {"q": inner}
            elif isinstance(inner, str) and kind == "func":
                spec = {"func": inner}
            else:
                raise FacetError(f"facet {path!r}: {kind} must be given an object")
        if not isinstance(kind, str):
            raise FacetError(f"facet {path!r}: type must be a string")
        if kind == "func":
            _check_options(spec, {"func"}, path, kind)
            text = spec.get("func")
            if not isinstance(text, str):
                raise FacetError(f'facet {path!r}: "func" must be a statistic string')
            return parse_stat(name, text, path)
        if kind not in ("terms", "field", "range", "query"):
            raise FacetError(
                f"facet {path!r}: unknown facet type {kind!r}; m1lite supports terms, range, "
                "query (and statistics such as avg(x))"
            )
        if depth > MAX_DEPTH:
            raise FacetLimit(f"facet {path!r}: facets nest at most {MAX_DEPTH} deep")
        if kind == "query":
            _check_options(spec, {"q", "query"}, path, kind)
            q = spec.get("q", spec.get("query", "*:*"))
            if not isinstance(q, str):
                raise FacetError(f"facet {path!r}: q must be a query string")
            return QueryFacet(name, path, q, self.body(spec, path, depth))
        if kind == "range":
            return self.range(name, spec, path, depth)
        return self.terms(name, spec, path, depth)

    def terms(self, name: str, spec: dict[str, Any], path: str, depth: int) -> TermsFacet:
        _check_options(spec, _TERMS_OPTIONS, path, "terms")
        body = self.body(spec, path, depth)
        limit = _int(spec, "limit", 10, path, minimum=None)
        if limit > MAX_LIMIT:
            raise FacetLimit(
                f"facet {path!r}: limit {limit} is above the maximum of {MAX_LIMIT:,} "
                "(use -1 for all buckets of a smaller field)"
            )
        prefix = spec.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise FacetError(f"facet {path!r}: prefix must be a string")
        sort_by, descending = _sort(spec.get("sort"), body.stats, path)
        return TermsFacet(
            name,
            path,
            _field_option(spec, path),
            body,
            limit=-1 if limit < 0 else limit,
            offset=_int(spec, "offset", 0, path),
            mincount=_int(spec, "mincount", 1, path),
            missing=_bool(spec, "missing", False, path),
            num_buckets=_bool(spec, "numBuckets", False, path),
            all_buckets=_bool(spec, "allBuckets", False, path),
            prefix=prefix,
            sort_by=sort_by,
            descending=descending,
        )

    def range(self, name: str, spec: dict[str, Any], path: str, depth: int) -> RangeFacet:
        if "ranges" in spec:
            raise FacetError(
                f"facet {path!r}: arbitrary ranges are not supported; use start, end and gap"
            )
        _check_options(spec, _RANGE_OPTIONS | {"mincount"}, path, "range")
        ends = {}
        for option in ("start", "end", "gap"):
            value = spec.get(option)
            if value is None:
                raise FacetError(f"facet {path!r}: a range facet needs start, end and gap")
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise FacetError(f"facet {path!r}: {option} must be a number or a date")
            ends[option] = value
        start, end, gap = ends["start"], ends["end"], ends["gap"]
        if all(isinstance(v, int | float) for v in (start, end, gap)):
            _check_numeric_range(float(start), float(end), float(gap), path)
        include = _word_set(spec.get("include"), _INCLUDE, "include", path)
        if "all" in include:
            include = frozenset({"lower", "upper", "edge", "outer"})
        return RangeFacet(
            name,
            path,
            _field_option(spec, path),
            self.body(spec, path, depth),
            start,
            end,
            gap,
            hardend=_bool(spec, "hardend", False, path),
            other=_word_set(spec.get("other"), _OTHER, "other", path),
            include=include or frozenset({"lower"}),
            mincount=_int(spec, "mincount", 0, path),
        )


def parse_stat(name: str, text: str, path: str) -> StatSpec:
    """`avg(price)`, `unique(session.id)`, `percentile(t,50,90)`, `count()`."""
    if text.strip() == "count":
        return StatSpec(name, "count")
    match = _STAT.fullmatch(text)
    if match is None:
        raise FacetError(
            f'facet {path!r}: {text!r} is not a statistic; use e.g. "avg(price)", '
            '"unique(user)", "percentile(t,50,90)", or an object with a type'
        )
    func = match.group(1).lower()
    if func not in ALL_STATS:
        raise FacetError(
            f"facet {path!r}: unknown statistic {func!r}; known: " + ", ".join(sorted(ALL_STATS))
        )
    inner = match.group(2)
    if "(" in inner or ")" in inner:
        raise FacetError(f"facet {path!r}: {func}() takes a field name, not a function")
    args = [part.strip() for part in inner.split(",")] if inner.strip() else []
    if func == "count":
        if args:
            raise FacetError(f"facet {path!r}: count() takes no field; it counts events")
        return StatSpec(name, "count")
    if not args or not _FIELD.fullmatch(args[0]):
        raise FacetError(f"facet {path!r}: {func}() needs a field name, e.g. {func}(price)")
    if func != "percentile":
        if len(args) != 1:
            raise FacetError(f"facet {path!r}: {func}() takes exactly one field")
        return StatSpec(name, func, args[0])
    if len(args) < 2:
        raise FacetError(f"facet {path!r}: percentile(field, p1, p2, ...) needs a percentile")
    if len(args) - 1 > MAX_PERCENTILES:
        raise FacetLimit(f"facet {path!r}: at most {MAX_PERCENTILES} percentiles")
    points = []
    for arg in args[1:]:
        if not _NUMBER.fullmatch(arg) or not 0 <= float(arg) <= 100:
            raise FacetError(f"facet {path!r}: percentile {arg!r} must be a number 0–100")
        points.append(float(arg))
    return StatSpec(name, func, args[0], tuple(points))


def _where(path: str) -> str:
    return f"facet {path!r}" if path else "json"


def _check_options(
    spec: dict[str, Any], allowed: frozenset[str] | set[str], path: str, kind: str
) -> None:
    for key in spec:
        if key not in allowed and key not in _BODY_OPTIONS and key not in _IGNORED_OPTIONS:
            raise FacetError(
                f"facet {path!r}: unknown {kind} facet option {key!r}; allowed: "
                + ", ".join(sorted(allowed | (_BODY_OPTIONS - {"type"})))
            )


def _field_option(spec: dict[str, Any], path: str) -> str:
    field = spec.get("field")
    if not isinstance(field, str) or not field.strip():
        raise FacetError(f"facet {path!r}: field must be a field name")
    return field.strip()


def _int(spec: dict[str, Any], key: str, default: int, path: str, minimum: int | None = 0) -> int:
    value = spec.get(key, default)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FacetError(f"facet {path!r}: {key} must be an integer")
    if minimum is not None and value < minimum:
        raise FacetError(f"facet {path!r}: {key} must be at least {minimum}")
    return value


def _bool(spec: dict[str, Any], key: str, default: bool, path: str) -> bool:
    value = spec.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise FacetError(f"{_where(path)}: {key} must be true or false")
    return value


def _word_set(value: Any, allowed: frozenset[str], key: str, path: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    words = value.split(",") if isinstance(value, str) else value
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise FacetError(f"facet {path!r}: {key} must be a string or a list of strings")
    found = frozenset(w.strip().lower() for w in words if w.strip())
    unknown = sorted(found - allowed)
    if unknown:
        raise FacetError(
            f"facet {path!r}: {key} {unknown[0]!r} is not one of {', '.join(sorted(allowed))}"
        )
    return found


def _domain(value: Any, path: str) -> Domain | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FacetError(f"{_where(path)}: domain must be an object")
    for key in value:
        # m1lite filters carry no tags, so excluding tags never changes a domain.
        if key not in ("filter", "query", "excludeTags"):
            raise FacetError(
                f"{_where(path)}: domain option {key!r} is not supported (filter, query)"
            )

    def queries(key: str) -> tuple[str, ...]:
        found = value.get(key)
        if found is None:
            return ()
        items = [found] if isinstance(found, str) else found
        if not isinstance(items, list) or not all(isinstance(q, str) for q in items):
            raise FacetError(f"{_where(path)}: domain {key} must be a query string or a list")
        return tuple(items)

    return Domain(queries("query"), queries("filter"))


def _sort(value: Any, stats: Sequence[StatSpec], path: str) -> tuple[str, bool]:
    if value is None:
        return "count", True
    direction: Any = None
    if isinstance(value, dict) and len(value) == 1:
        ((variable, direction),) = value.items()
    elif isinstance(value, str) and 1 <= len(value.split()) <= 2:
        variable, *rest = value.split()
        direction = rest[0] if rest else None
    else:
        raise FacetError(f'facet {path!r}: sort must look like "count desc" or "index asc"')
    if direction is None:
        descending = variable != "index"
    elif isinstance(direction, str) and direction.lower() in ("asc", "desc"):
        descending = direction.lower() == "desc"
    else:
        raise FacetError(f"facet {path!r}: sort direction must be asc or desc")
    names = [stat.name for stat in stats]
    if variable not in ("count", "index") and variable not in names:
        raise FacetError(
            f"facet {path!r}: cannot sort by {variable!r}; use count, index or a statistic "
            "defined in this facet's own facet object" + (f" ({', '.join(names)})" if names else "")
        )
    return variable, descending


def _check_numeric_range(start: float, end: float, gap: float, path: str) -> None:
    if not all(math.isfinite(v) for v in (start, end, gap)):
        raise FacetError(f"facet {path!r}: start, end and gap must be finite numbers")
    if gap <= 0:
        raise FacetError(f"facet {path!r}: gap must be positive")
    if end < start:
        raise FacetError(f"facet {path!r}: end comes before start")
    if (end - start) / gap > MAX_RANGE_BUCKETS:
        raise FacetLimit(
            f"facet {path!r}: start, end and gap make more than {MAX_RANGE_BUCKETS:,} "
            "buckets; use a larger gap"
        )


# ---------------------------------------------------------------------------- running


def run_facets(
    request: FacetRequest, domain: BitMap, ctx: FacetContext, *, strategy: str = "auto"
) -> dict[str, Any]:
    """The `facets` object for a domain. `strategy` ("auto", "column", "postings") forces
    the terms counting path; anything but "auto" is for tests and benchmarks."""
    run = _Run(ctx, strategy)
    out: dict[str, Any] = {"count": len(domain)}
    run.fill(out, domain, request.body)
    return out


def _split(groups: np.ndarray, keys: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """The keys of each group."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    ordered = keys[order]
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(n_groups)]


def _slices(
    starts: np.ndarray, stops: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (slice number, values[i]) for every i in every slice [start, stop)."""
    lengths = np.maximum(stops - starts, 0)
    total = int(lengths.sum())
    groups = np.repeat(np.arange(lengths.size), lengths)
    if lengths.size and bool(np.all(starts[1:] == stops[:-1])) and bool(np.all(stops >= starts)):
        # Back-to-back slices (adjacent range buckets): one contiguous run, no index array.
        return groups, values[int(starts[0]) : int(stops[-1])]
    index = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
    return groups, values[index]


def _unique_pairs(groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if groups.size == 0:
        return groups, keys
    combined = unique_ints(groups * (1 << 32) + keys)
    return combined >> 32, combined & 0xFFFFFFFF


def _value_key(value: Any) -> tuple[int, Any]:
    """Order of statistic values of different kinds (numbers, text, percentile lists)."""
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, value)


class _Run:
    """One `run_facets` call: cached field views and the response-wide bucket budget."""

    def __init__(self, ctx: FacetContext, strategy: str) -> None:
        if strategy not in ("auto", "column", "postings"):
            raise ValueError(f"unknown terms strategy {strategy!r}")
        self.ctx = ctx
        self.strategy = strategy
        self.buckets = 0
        self.work = 0
        self._fields: dict[str, FieldData] = {}

    def field(self, name: str) -> FieldData:
        found = self._fields.get(name)
        if found is None:
            found = self._fields[name] = FieldData(self.ctx.index, name, self.ctx.upto, self.ctx)
        return found

    def spend(self, buckets: int, path: str) -> None:
        self.buckets += buckets
        if self.buckets > MAX_BUCKETS:
            raise FacetLimit(
                f"facet {path!r}: the response would hold more than {MAX_BUCKETS:,} buckets; "
                "lower limit here or in the enclosing facets"
            )

    def charge(self, cells: int, path: str) -> None:
        self.work += cells
        if self.work > MAX_WORK:
            raise FacetLimit(
                f"facet {path!r}: the facet request would read more than {MAX_WORK:,} "
                "values; lower the limits of nested facets or narrow the query"
            )

    # -- one bucket at a time

    def fill(self, bucket: dict[str, Any], domain: BitMap, body: Body) -> None:
        """Add statistics and sub-facets to a bucket that already has its count."""
        if bucket["count"] == 0 and not body.process_empty:
            return
        for name, value in self.single_stats(domain, body):
            if value is not None:
                bucket[name] = value
        for facet in body.facets:
            bucket[facet.name] = self.facet(facet, domain)

    def single_stats(self, domain: BitMap, body: Body) -> list[tuple[str, Any]]:
        if not body.stats:
            return []
        keys = keys_of(domain)
        self.charge(keys.size * len(body.stats), "")
        stats = GroupedStats(
            np.zeros(keys.size, dtype=np.int64), keys, 1, np.array([keys.size]), self.field
        )
        return [(spec.name, stats.values(spec)[0]) for spec in body.stats]

    def many(
        self,
        body: Body,
        vals: Sequence[Any],
        counts: np.ndarray,
        groups: np.ndarray,
        keys: np.ndarray,
    ) -> list[dict[str, Any]]:
        """Buckets for groups 0..len(vals)-1 of the pairs, statistics computed together."""
        n = len(vals)
        columns: list[tuple[str, list[Any]]] = []
        if body.stats:
            self.charge(keys.size * len(body.stats), "")
            stats = GroupedStats(groups, keys, n, counts, self.field)
            columns = [(spec.name, stats.values(spec)) for spec in body.stats]
        members = _split(groups, keys, n) if body.facets else None
        out = []
        for i in range(n):
            bucket: dict[str, Any] = {"val": vals[i], "count": int(counts[i])}
            if counts[i] > 0 or body.process_empty:
                for name, column in columns:
                    if column[i] is not None:
                        bucket[name] = column[i]
                if members is not None:
                    sub = keys_bitmap(members[i])
                    for facet in body.facets:
                        bucket[facet.name] = self.facet(facet, sub)
            out.append(bucket)
        return out

    def facet(self, facet: Facet, parent: BitMap) -> dict[str, Any]:
        domain = self.domain(facet.body.domain, parent)
        if isinstance(facet, TermsFacet):
            return self.terms(facet, domain)
        if isinstance(facet, RangeFacet):
            return self.range(facet, domain)
        matched = domain & self.ctx.run_query(facet.q)
        self.spend(1, facet.path)
        out: dict[str, Any] = {"count": len(matched)}
        self.fill(out, matched, facet.body)
        return out

    def domain(self, spec: Domain | None, parent: BitMap) -> BitMap:
        if spec is None:
            return parent
        domain = parent
        if spec.queries:
            domain = self.ctx.run_query(spec.queries[0])
            for q in spec.queries[1:]:
                domain = domain & self.ctx.run_query(q)
        for q in spec.filters:
            domain = domain & self.ctx.run_query(q)
        return domain

    # -- terms

    def terms(self, facet: TermsFacet, domain: BitMap) -> dict[str, Any]:
        data = self.field(facet.field)
        keys = keys_of(domain)
        buckets = _TermBuckets(self, facet, data, domain, keys)
        counts = buckets.counts
        eligible = buckets.selectable
        if facet.mincount > 0:
            eligible = eligible & (counts >= facet.mincount)
        candidates = np.flatnonzero(eligible)
        out: dict[str, Any] = {}
        if facet.num_buckets:
            # Solr counts every value with events in the domain, whatever mincount says.
            live = buckets.selectable & (counts > 0) if facet.mincount > 0 else buckets.selectable
            out["numBuckets"] = int(np.count_nonzero(live))
        stop = None if facet.limit < 0 else facet.offset + facet.limit
        wanted = max(
            0, (candidates.size if stop is None else min(stop, candidates.size)) - facet.offset
        )
        self.spend(wanted, facet.path)  # before any per-bucket work
        chosen = candidates[:0]
        if wanted:
            chosen = candidates[self.order(facet, buckets, candidates)[facet.offset : stop]]
        if facet.all_buckets:
            out["allBuckets"] = self.all_buckets(facet, buckets)
        if facet.missing:
            absent = keys[~data.has_value(keys)]
            missing: dict[str, Any] = {"count": int(absent.size)}
            self.fill(missing, keys_bitmap(absent), facet.body)
            out["missing"] = missing
        if facet.body.stats or facet.body.facets:
            groups, pair_keys = buckets.pairs(chosen)
        else:  # counts alone: gathering every event of the chosen buckets would be wasted
            groups = pair_keys = np.zeros(0, dtype=np.int64)
        out["buckets"] = self.many(
            facet.body, [buckets.val(b) for b in chosen], counts[chosen], groups, pair_keys
        )
        return out

    def order(self, facet: TermsFacet, buckets: _TermBuckets, candidates: np.ndarray) -> np.ndarray:
        """Candidate positions in output order; ties by value (index order) ascending."""
        if candidates.size <= 1:
            return np.arange(candidates.size)
        position = buckets.index_position()[candidates]
        if facet.sort_by == "index":
            return np.argsort(-position if facet.descending else position, kind="stable")
        if facet.sort_by == "count":
            counts = buckets.counts[candidates]
            return np.lexsort((position, -counts if facet.descending else counts))
        spec = next(s for s in facet.body.stats if s.name == facet.sort_by)
        groups, keys = buckets.pairs(candidates)
        self.charge(keys.size, facet.path)
        stats = GroupedStats(groups, keys, candidates.size, buckets.counts[candidates], self.field)
        return _stat_order(stats.values(spec), position, facet.descending)

    def all_buckets(self, facet: TermsFacet, buckets: _TermBuckets) -> dict[str, Any]:
        """Solr's allBuckets: every value's events in one bucket (an event once per value)."""
        live = np.flatnonzero(buckets.selectable & (buckets.counts > 0))
        _groups, keys = buckets.pairs(live)
        total = int(keys.size)
        out: dict[str, Any] = {"count": total}
        if facet.body.stats and (total or facet.body.process_empty):
            stats = GroupedStats(
                np.zeros(total, dtype=np.int64), keys, 1, np.array([total]), self.field
            )
            for spec in facet.body.stats:
                value = stats.values(spec)[0]
                if value is not None:
                    out[spec.name] = value
        return out

    # -- range

    def range(self, facet: RangeFacet, domain: BitMap) -> dict[str, Any]:
        data = self.field(facet.field)
        if data.declared in ("string", "text", "boolean"):
            raise FacetError(
                f"facet {facet.path!r}: range facets need a number or date field; "
                f"{facet.field!r} is a {data.declared} property"
            )
        ranges, labels, start, end = _range_bounds(facet, data, self.ctx.now_ms)
        keys = keys_of(domain)
        self.charge(keys.size + len(ranges), facet.path)
        where, values = data.number_pairs(keys)
        if values.size > 1 and bool(np.any(values[1:] < values[:-1])):
            order = np.argsort(values, kind="stable")
            sorted_values, sorted_keys = values[order], keys[where[order]]
        else:  # already in order, as a receive time is in key order: no sort, no shuffle
            sorted_values = values
            sorted_keys = keys if every_row(where, keys.size) else keys[where]
        multi = data.number_extras is not None

        def bounds(
            lows: np.ndarray, highs: np.ndarray, low_in: np.ndarray, high_in: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            first = np.where(
                low_in,
                np.searchsorted(sorted_values, lows, "left"),
                np.searchsorted(sorted_values, lows, "right"),
            )
            last = np.where(
                high_in,
                np.searchsorted(sorted_values, highs, "right"),
                np.searchsorted(sorted_values, highs, "left"),
            )
            return first, np.maximum(first, last)

        first, last = bounds(
            np.array([r[0] for r in ranges], dtype=np.float64),
            np.array([r[1] for r in ranges], dtype=np.float64),
            np.array([r[2] for r in ranges], dtype=bool),
            np.array([r[3] for r in ranges], dtype=bool),
        )
        groups, pair_keys = _slices(first, last, sorted_keys)
        if multi:
            groups, pair_keys = _unique_pairs(groups, pair_keys)
            counts = np.bincount(groups, minlength=len(ranges))
        else:  # one value per event: a bucket's count is its slice's length
            counts = np.maximum(last - first, 0)
        kept = np.flatnonzero(counts >= facet.mincount)
        self.spend(kept.size, facet.path)
        if kept.size < len(ranges):  # renumber the kept buckets (mincount 0 keeps all)
            lookup = np.full(len(ranges), -1, dtype=np.int64)
            lookup[kept] = np.arange(kept.size)
            groups = lookup[groups]
            inside = groups >= 0
            groups, pair_keys = groups[inside], pair_keys[inside]
        out: dict[str, Any] = {
            "buckets": self.many(
                facet.body, [labels[i] for i in kept], counts[kept], groups, pair_keys
            )
        }
        include, other = facet.include, facet.other
        if "none" in other:
            return out
        wanted = {
            # Solr: an outer edge is counted in before/after with "outer", or when the
            # first/last bucket does not already count it.
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
        for name, (low, high, low_in, high_in) in wanted.items():
            if name not in other and "all" not in other:
                continue
            one_first, one_last = bounds(
                np.array([low], dtype=np.float64),
                np.array([high], dtype=np.float64),
                np.array([low_in]),
                np.array([high_in]),
            )
            members = unique_ints(sorted_keys[int(one_first[0]) : int(one_last[0])])
            self.spend(1, facet.path)
            bucket: dict[str, Any] = {"count": int(members.size)}
            self.fill(bucket, keys_bitmap(members), facet.body)
            out[name] = bucket
        return out


def _stat_order(values: list[Any], position: np.ndarray, descending: bool) -> np.ndarray:
    """Order by a statistic; buckets without it last, ties by value ascending."""
    present = np.array([i for i, v in enumerate(values) if v is not None], dtype=np.int64)
    absent = np.array([i for i, v in enumerate(values) if v is None], dtype=np.int64)
    absent = absent[np.argsort(position[absent], kind="stable")]
    if present.size and all(type(values[i]) in (int, float) for i in present):
        numbers = np.array([values[i] for i in present], dtype=np.float64)
        ordered = present[np.lexsort((position[present], -numbers if descending else numbers))]
    else:
        by_position = sorted(present.tolist(), key=lambda i: position[i])
        ordered = np.array(
            sorted(by_position, key=lambda i: _value_key(values[i]), reverse=descending),
            dtype=np.int64,
        )
    return np.concatenate([ordered, absent])


class _TermBuckets:
    """The possible buckets of a terms facet, numbered: first the field's distinct numbers
    (ascending), then string/boolean values (`string_ids`, dictionary ids: every id when
    postings counted them or zero counts are asked for, else only the ids the domain
    holds, so a small bucket of a big field costs what the bucket holds)."""

    def __init__(
        self, run: _Run, facet: TermsFacet, data: FieldData, domain: BitMap, keys: np.ndarray
    ) -> None:
        self.data = data
        self.domain = domain
        self.postings: list[BitMap] | None = None
        self.string_pairs: tuple[np.ndarray, np.ndarray] | None = None  # (local id, key)
        run.charge(keys.size, facet.path)
        self.numbers, number_counts, self.number_pairs = self._numbers(run, facet, data, keys)
        self.n_numbers = self.numbers.size
        self.string_ids, string_counts = self._strings(run, facet, data, domain, keys)
        self.counts = np.concatenate([number_counts, string_counts]).astype(np.int64)
        self.selectable = np.ones(self.counts.size, dtype=bool)
        if facet.prefix is not None:  # strings only: never numbers or booleans
            self.selectable[: self.n_numbers] = False
            if self.string_ids.size and data.strings is not None:
                terms = sorted_terms(data.strings, data.n_values)
                low, high = prefix_bounds(terms.strings, facet.prefix)
                base = len(terms.bool_ids)  # strings come after the booleans in rank
                rank = terms.rank()[self.string_ids]
                self.selectable[self.n_numbers :] = (rank >= base + low) & (rank < base + high)
        self._position: np.ndarray | None = None

    @staticmethod
    def _numbers(
        run: _Run, facet: TermsFacet, data: FieldData, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        where, values = data.number_pairs(keys)
        if facet.prefix is not None:
            where, values = where[:0], values[:0]
        if data.number_extras is not None and where.size:  # an event counts once per value
            order = np.lexsort((values, where))
            where, values = where[order], values[order]
            new = np.ones(where.size, dtype=bool)
            new[1:] = (where[1:] != where[:-1]) | (values[1:] != values[:-1])
            where, values = where[new], values[new]
        distinct, inverse = np.unique(values, return_inverse=True)
        if facet.mincount == 0 and facet.prefix is None and not data.is_key:
            # Solr lists every value of the field with mincount 0, counted or not.
            everything = data.distinct_numbers()
            run.charge(everything.size, facet.path)
            inverse = np.searchsorted(everything, distinct)[inverse]
            distinct = everything
        counts = np.bincount(inverse, minlength=distinct.size)
        return distinct, counts, (inverse.astype(np.int64), keys[where])

    def _strings(
        self, run: _Run, facet: TermsFacet, data: FieldData, domain: BitMap, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n = data.n_values
        if n == 0 or data.strings is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if _terms_path(run.strategy, data, keys) == "postings":
            chunks = int(keys[-1] >> 16) - int(keys[0] >> 16) + 1 if keys.size else 1
            run.charge(n * (1 + chunks) * POSTINGS_COST, facet.path)
            # Built from every code in memory, not just below upto: the writer keeps built
            # postings current, so a build must not miss a batch it is adding right now.
            self.postings = postings = data.strings.bitmaps(_ALL_CODES)
            counts = np.fromiter(
                (domain.intersection_cardinality(postings[i]) for i in range(n)),
                dtype=np.int64,
                count=n,
            )
            return np.arange(n, dtype=np.int64), counts
        where, ids = data.string_pairs(keys)
        if facet.mincount == 0 or ids.size * 4 >= n:
            run.charge(n, facet.path)
            self.string_pairs = (ids, keys[where])
            return np.arange(n, dtype=np.int64), np.bincount(ids, minlength=n)
        present = unique_ints(ids)
        local = np.searchsorted(present, ids)
        self.string_pairs = (local, keys[where])
        return present, np.bincount(local, minlength=present.size)

    def index_position(self) -> np.ndarray:
        """Per bucket, its place in index order: numbers, then booleans, then strings."""
        if self._position is None:
            position = np.arange(self.counts.size, dtype=np.int64)
            if self.string_ids.size and self.data.strings is not None:
                rank = sorted_terms(self.data.strings, self.data.n_values).rank()
                position[self.n_numbers :] = self.n_numbers + rank[self.string_ids]
            self._position = position
        return self._position

    def val(self, bucket: int) -> Any:
        if bucket < self.n_numbers:
            return self.data.number_out(float(self.numbers[bucket]))
        return self.data.string_out(int(self.string_ids[bucket - self.n_numbers]))

    def pairs(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in chosen, key) for every event of the chosen buckets."""
        lookup = np.full(self.counts.size, -1, dtype=np.int64)
        lookup[chosen] = np.arange(chosen.size)
        sources = [self.number_pairs]
        if self.string_pairs is not None:
            sources.append((self.string_pairs[0] + self.n_numbers, self.string_pairs[1]))
        groups: list[np.ndarray] = []
        keys: list[np.ndarray] = []
        for bucket_ids, bucket_keys in sources:
            mapped = lookup[bucket_ids]
            keep = mapped >= 0
            groups.append(mapped[keep])
            keys.append(bucket_keys[keep])
        if self.postings is not None:
            for position, bucket in enumerate(chosen.tolist()):
                if bucket >= self.n_numbers:
                    value_id = int(self.string_ids[bucket - self.n_numbers])
                    found = keys_of(self.postings[value_id] & self.domain)
                    groups.append(np.full(found.size, position, dtype=np.int64))
                    keys.append(found)
        return np.concatenate(groups), np.concatenate(keys)


def _terms_path(strategy: str, data: FieldData, keys: np.ndarray) -> str:
    if strategy != "auto":
        return strategy
    assert data.strings is not None
    n = data.n_values
    if data.strings.postings is None and n > POSTINGS_MAX_VALUES:
        return "column"
    chunks = int(keys[-1] >> 16) - int(keys[0] >> 16) + 1 if keys.size else 1
    return "postings" if n * (1 + chunks) * POSTINGS_COST <= keys.size else "column"


# ---------------------------------------------------------------------------- range bounds

_Bound = tuple[float, float, bool, bool]


def _range_bounds(
    facet: RangeFacet, data: FieldData, now_ms: int
) -> tuple[list[_Bound], list[Any], float, float]:
    """Solr's bucket list: (low, high, include low, include high) per bucket, the bucket
    labels, and start and the effective end (moved to the last bucket's end unless
    hardend) for before/after/between."""
    path = facet.path
    label: Callable[[Any], Any]
    step: Callable[[Any], Any]
    if data.is_date:
        start: Any = _date_point(facet.start, now_ms, path, "start")
        end: Any = _date_point(facet.end, now_ms, path, "end")
        if isinstance(facet.gap, str) and not _NUMBER.fullmatch(facet.gap):
            gap = parse_gap(facet.gap)
            step = gap.add
        else:
            ms = _number(facet.gap, path, "gap")
            if ms <= 0 or not float(ms).is_integer():
                raise FacetError(f"facet {path!r}: gap must be a date gap such as +1HOUR")
            fixed = int(ms)
            step = lambda value: value + fixed  # noqa: E731
        label = format_date_ms
        if end < start:
            raise FacetError(f"facet {path!r}: end comes before start")
    else:
        start, end = _number(facet.start, path, "start"), _number(facet.end, path, "end")
        gap_value = _number(facet.gap, path, "gap")
        _check_numeric_range(float(start), float(end), float(gap_value), path)
        integral = data.integral and all(isinstance(v, int) for v in (start, end, gap_value))
        if not integral:
            start, end, gap_value = float(start), float(end), float(gap_value)
        step = lambda value: value + gap_value  # noqa: E731
        label = data.number_out if integral else float
    include = facet.include
    ranges: list[_Bound] = []
    labels: list[Any] = []
    low = start
    while low < end:
        if len(ranges) >= MAX_RANGE_BUCKETS:
            raise FacetLimit(
                f"facet {path!r}: start, end and gap make more than {MAX_RANGE_BUCKETS:,} "
                "buckets; use a larger gap"
            )
        high = step(low)
        if high <= low:
            raise FacetError(f"facet {path!r}: gap is too small to move past {low}")
        if high > end:
            if facet.hardend:
                high = end
            else:
                end = high
        ranges.append(
            (
                float(low),
                float(high),
                "lower" in include or ("edge" in include and low == start),
                "upper" in include or ("edge" in include and high == end),
            )
        )
        labels.append(label(low))
        low = high
    return ranges, labels, float(start), float(end)


def _number(value: Any, path: str, what: str) -> int | float:
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        text = value.strip()
        number = float(text)
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else number
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FacetError(f"facet {path!r}: {what} must be a number (the field is not a date field)")
    return value


def _date_point(value: Any, now_ms: int, path: str, what: str) -> int:
    if isinstance(value, str):
        return resolve_date(value, now_ms)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FacetError(f"facet {path!r}: {what} must be a date or epoch milliseconds")
    return int(value)

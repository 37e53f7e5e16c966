"""The JSON Facet API's request side: `parse_facets` checks a `json` request's `facet`
object and returns it as a `FacetRequest` (dataclasses below), or raises `FacetError`
(400 `bad_facet`, naming the facet) or `FacetLimit` (400 `facet_limit`).

Accepted shapes and options are Solr's (see facets.py for the semantics): terms, range,
query and func facets, their short forms, nested `facet` objects, `domain` changes, stat
strings such as `unique(session.id)` or `percentile(x,50,90)`. Solr's tuning options
(method, overrequest, refine, prelim_sort, ...) are accepted and ignored.

Size limits: `limit` at most 10,000, at most 64 facets and statistics in one request,
nesting at most 8 deep, at most 10,000 buckets per range facet; `MAX_BUCKETS` and
`MAX_WORK` bound a whole response while it runs (facets.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from m1lite.errors import BadRequest
from m1lite.query.stats import ALL_STATS, StatSpec

MAX_LIMIT = 10_000
MAX_FACETS = 64  # facets and statistics, all levels together
MAX_DEPTH = 8
MAX_RANGE_BUCKETS = 10_000
MAX_BUCKETS = 100_000  # buckets in one response, all facets and levels together
MAX_PERCENTILES = 100
# Array cells (keys, buckets, statistic inputs) one request may touch: bounds the work of
# nested facets whose limits are each fine but whose product is not.
MAX_WORK = 200_000_000

NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
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
            check_numeric_range(float(start), float(end), float(gap), path)
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
        if not NUMBER_TEXT.fullmatch(arg) or not 0 <= float(arg) <= 100:
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


def check_numeric_range(start: float, end: float, gap: float, path: str) -> None:
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

"""Solr's JSON Facet API over the index: `parse_facets` (facet_request.py) checks a `json`
request's `facet` object, `run_facets` answers it for a domain (the keys the query
matched); range facets run in facet_range.py.

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

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from pyroaring import BitMap

from m1lite.query.execute import keys_bitmap, prefix_bounds, sorted_terms
from m1lite.query.facet_range import range_facet
from m1lite.query.facet_request import (
    MAX_BUCKETS,
    MAX_WORK,
    Body,
    Domain,
    Facet,
    FacetLimit,
    FacetRequest,
    RangeFacet,
    TermsFacet,
    parse_facets,
)
from m1lite.query.stats import (
    FieldData,
    FieldTypes,
    GroupedStats,
    keys_of,
    unique_ints,
)
from m1lite.storage.index import Index

__all__ = ["MAX_BUCKETS", "FacetContext", "FacetRequest", "FacetRun", "parse_facets", "run_facets"]

POSTINGS_MAX_VALUES = 4_096  # build postings for a terms facet only up to this many values
# Measured: one bitmap intersection per value and 64K chunk costs about as much as
# gathering and counting this many keys of the codes column.
POSTINGS_COST = 125
_ALL_CODES = 1 << 32  # build postings from every code in memory (see _string_counts)


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


# ---------------------------------------------------------------------------- running


def run_facets(
    request: FacetRequest, domain: BitMap, ctx: FacetContext, *, strategy: str = "auto"
) -> dict[str, Any]:
    """The `facets` object for a domain. `strategy` ("auto", "column", "postings") forces
    the terms counting path; anything but "auto" is for tests and benchmarks."""
    run = FacetRun(ctx, strategy)
    out: dict[str, Any] = {"count": len(domain)}
    run.fill(out, domain, request.body)
    return out


def _split(groups: np.ndarray, keys: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """The keys of each group."""
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_groups + 1))
    ordered = keys[order]
    return [ordered[bounds[i] : bounds[i + 1]] for i in range(n_groups)]


def _value_key(value: Any) -> tuple[int, Any]:
    """Order of statistic values of different kinds (numbers, text, percentile lists)."""
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, value)


class FacetRun:
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
            return range_facet(self, facet, domain)
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
        self, run: FacetRun, facet: TermsFacet, data: FieldData, domain: BitMap, keys: np.ndarray
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
        run: FacetRun, facet: TermsFacet, data: FieldData, keys: np.ndarray
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
        self, run: FacetRun, facet: TermsFacet, data: FieldData, domain: BitMap, keys: np.ndarray
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

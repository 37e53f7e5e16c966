"""Range facets: Solr's buckets over a number or date field, each with its count, and its
statistics and sub-facets.

Two ways to find each bucket's events, with the same answers:

- by key position, when the field's column never decreases with the key and every
  visible key holds one value: a receive time (`_m1.receivedUTC`) is such a column, as
  keys are handed out in receive order. Then each bucket edge is one `searchsorted` on
  the column, a bucket is a key range, its count is two `rank`s of the domain bitmap and
  its statistics read only its own keys. Nothing as wide as the domain is built: at 10M
  events the alternative's temporaries (about 600 MB for hourly buckets with
  `unique(session.id)`) cost more in page faults than the work itself.
- by pairs otherwise: the domain's values gathered and sorted, each bucket a slice of
  them, statistics computed for all buckets at once (stats.py).

Bucket bounds and the before/after/between edges follow Solr's FacetRangeProcessor
(`_range_bounds`, `_other_bounds`); `val` is the bucket start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from m1lite.query import blocks
from m1lite.query.datemath import parse_gap, resolve_date
from m1lite.query.execute import key_range, keys_bitmap
from m1lite.query.facet_request import (
    MAX_RANGE_BUCKETS,
    NUMBER_TEXT,
    Body,
    FacetError,
    FacetLimit,
    RangeFacet,
    check_numeric_range,
)
from m1lite.query.stats import (
    FieldData,
    every_row,
    gather,
    keys_of,
    sorted_distinct,
    unique_ints,
)
from m1lite.schema import format_date_ms

if TYPE_CHECKING:
    from m1lite.query.facets import FacetRun

_Bound = tuple[float, float, bool, bool]  # low, high, include low, include high
_EMPTY = np.zeros(0, dtype=np.int64)


def range_facet(run: FacetRun, facet: RangeFacet, domain: BitMap) -> dict[str, Any]:
    data = run.field(facet.field)
    if data.declared in ("string", "text", "boolean"):
        raise FacetError(
            f"facet {facet.path!r}: range facets need a number or date field; "
            f"{facet.field!r} is a {data.declared} property"
        )
    ranges, labels, start, end = _range_bounds(facet, data, run.ctx.now_ms)
    others = _other_bounds(facet, start, end)
    column = _key_ordered_column(run, data)
    if column is not None:
        return _by_key_position(run, facet, domain, column, ranges, labels, others)
    return _by_pairs(run, facet, domain, data, ranges, labels, others)


# ---------------------------------------------------------------------------- by key position


def _key_ordered_column(run: FacetRun, data: FieldData) -> np.ndarray | None:
    """The field's column when buckets can be found by key position: one number per
    event, never decreasing with the key (a key past the column's end holds none)."""
    column = data.numbers
    if data.is_key or data.number_extras is not None or column.size == 0:
        return None
    return column if blocks.key_ordered(run.ctx.index, data.name, column) else None


def _key_positions(column: np.ndarray, bounds: list[_Bound]) -> tuple[list[int], list[int]]:
    """Per bound, the keys [first, last) whose values it holds (`column` is sorted)."""
    first, last = _edges(column, bounds)
    return first.tolist(), last.tolist()


def _by_key_position(
    run: FacetRun,
    facet: RangeFacet,
    domain: BitMap,
    column: np.ndarray,
    ranges: list[_Bound],
    labels: list[Any],
    others: list[tuple[str, _Bound]],
) -> dict[str, Any]:
    run.charge(len(ranges), facet.path)
    first, last = _key_positions(column, ranges)
    counts = [domain.range_cardinality(a, b) for a, b in zip(first, last, strict=True)]
    kept = [i for i, count in enumerate(counts) if count >= facet.mincount]
    run.spend(len(kept), facet.path)
    body = facet.body
    distinct_only = _distinct_counts_only(run, body)
    buckets = []
    for i in kept:
        bucket: dict[str, Any] = {"val": labels[i], "count": counts[i]}
        if distinct_only is not None:
            if counts[i] or body.process_empty:
                run.charge(counts[i] * len(distinct_only), facet.path)
                for name, data in distinct_only:
                    bucket[name] = (
                        counts[i]
                        if data is None
                        else _distinct_codes(data.codes, domain, first[i], last[i], counts[i])
                    )
        elif body.stats or body.facets:
            run.fill(bucket, domain & key_range(first[i], last[i]), body)
        buckets.append(bucket)
    out: dict[str, Any] = {"buckets": buckets}
    for name, bound in others:
        (one_first,), (one_last,) = _key_positions(column, [bound])
        members = domain & key_range(one_first, one_last)
        run.spend(1, facet.path)
        other: dict[str, Any] = {"count": len(members)}
        run.fill(other, members, body)
        out[name] = other
    return out


def _distinct_counts_only(run: FacetRun, body: Body) -> list[tuple[str, FieldData | None]] | None:
    """When a bucket holds nothing but `count` and `unique`/`hll` of single-valued string
    fields ("unique sessions per hour"): those statistics with their field (None for
    count), read per bucket straight off the codes column. None otherwise."""
    if body.facets or not body.stats:
        return None
    found: list[tuple[str, FieldData | None]] = []
    for spec in body.stats:
        if spec.func == "count":
            found.append((spec.name, None))
            continue
        if spec.func not in ("unique", "hll") or spec.field is None:
            return None
        data = run.field(spec.field)
        if data.is_key or data.numbers.size or data.string_extras is not None:
            return None
        found.append((spec.name, data))
    return found


def _distinct_codes(codes: np.ndarray, domain: BitMap, first: int, last: int, count: int) -> int:
    """Distinct values among the domain's keys in [first, last) (code 0: no value). When
    the domain holds every key of the range, its codes are a slice: nothing gathered."""
    if count == last - first:
        part = codes[first:last]
    else:
        part = gather(codes, keys_of(domain & key_range(first, last)), 0)
    if part.size == 0:
        return 0
    ordered = np.sort(part)
    return sorted_distinct(ordered) - (1 if ordered[0] == 0 else 0)


# ---------------------------------------------------------------------------- by pairs


def _by_pairs(
    run: FacetRun,
    facet: RangeFacet,
    domain: BitMap,
    data: FieldData,
    ranges: list[_Bound],
    labels: list[Any],
    others: list[tuple[str, _Bound]],
) -> dict[str, Any]:
    keys = keys_of(domain)
    run.charge(keys.size + len(ranges), facet.path)
    where, values = data.number_pairs(keys)
    if values.size > 1 and bool(np.any(values[1:] < values[:-1])):
        order = np.argsort(values, kind="stable")
        sorted_values, sorted_keys = values[order], keys[where[order]]
    else:  # already in order: no sort, no shuffle
        sorted_values = values
        sorted_keys = keys if every_row(where, keys.size) else keys[where]
    first, last = _edges(sorted_values, ranges)
    single_valued = data.number_extras is None
    if single_valued and not (facet.body.stats or facet.body.facets):
        # Counts only: a bucket's count is its slice's length; no pairs are needed.
        groups, pair_keys = _EMPTY, _EMPTY
    else:
        groups, pair_keys = _slices(first, last, sorted_keys)
    if single_valued:  # one value per event: a bucket's count is its slice's length
        counts = last - first
    else:
        groups, pair_keys = _unique_pairs(groups, pair_keys)
        counts = np.bincount(groups, minlength=len(ranges))
    kept = np.flatnonzero(counts >= facet.mincount)
    run.spend(kept.size, facet.path)
    if kept.size < len(ranges):  # renumber the kept buckets (mincount 0 keeps all)
        lookup = np.full(len(ranges), -1, dtype=np.int64)
        lookup[kept] = np.arange(kept.size)
        groups = lookup[groups]
        inside = groups >= 0
        groups, pair_keys = groups[inside], pair_keys[inside]
    out: dict[str, Any] = {
        "buckets": run.many(facet.body, [labels[i] for i in kept], counts[kept], groups, pair_keys)
    }
    for name, bound in others:
        one_first, one_last = _edges(sorted_values, [bound])
        members = unique_ints(sorted_keys[int(one_first[0]) : int(one_last[0])])
        run.spend(1, facet.path)
        bucket: dict[str, Any] = {"count": int(members.size)}
        run.fill(bucket, keys_bitmap(members), facet.body)
        out[name] = bucket
    return out


def _edges(sorted_values: np.ndarray, bounds: list[_Bound]) -> tuple[np.ndarray, np.ndarray]:
    """Per bound, the positions [first, last) of the sorted values it holds."""
    lows = np.array([b[0] for b in bounds], dtype=np.float64)
    highs = np.array([b[1] for b in bounds], dtype=np.float64)
    low_in = np.array([b[2] for b in bounds], dtype=bool)
    high_in = np.array([b[3] for b in bounds], dtype=bool)
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


def _slices(
    starts: np.ndarray, stops: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (slice number, values[i]) for every i in every slice [start, stop)."""
    lengths = stops - starts  # _edges makes stop >= start
    total = int(lengths.sum())
    groups = np.repeat(np.arange(lengths.size), lengths)
    if lengths.size and bool(np.all(starts[1:] == stops[:-1])):
        # Back-to-back slices (adjacent range buckets): one contiguous run, no index array.
        return groups, values[int(starts[0]) : int(stops[-1])]
    index = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
    return groups, values[index]


def _unique_pairs(groups: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if groups.size == 0:
        return groups, keys
    combined = unique_ints(groups * (1 << 32) + keys)
    return combined >> 32, combined & 0xFFFFFFFF


# ---------------------------------------------------------------------------- bounds


def _other_bounds(facet: RangeFacet, start: float, end: float) -> list[tuple[str, _Bound]]:
    """The before/after/between buckets `other` asks for. Solr: an outer edge is counted
    in before/after with "outer", or when the first/last bucket does not already count it."""
    include, other = facet.include, facet.other
    if "none" in other:
        return []
    wanted: dict[str, _Bound] = {
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
    return [(name, b) for name, b in wanted.items() if name in other or "all" in other]


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
        if isinstance(facet.gap, str) and not NUMBER_TEXT.fullmatch(facet.gap):
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
        check_numeric_range(float(start), float(end), float(gap_value), path)
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
    if isinstance(value, str) and NUMBER_TEXT.fullmatch(value):
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

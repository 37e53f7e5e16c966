"""Evaluating a query AST as bitmap algebra over the in-memory index.

Every query runs against one snapshot: `QueryContext` reads `visible_upto` once (clamped
by stores whose autocommit is off) and every leaf only looks at keys below it, so a
batch the writer is adding meanwhile never shows up half-indexed. Leaves return fresh
BitMaps (never an index's own postings, which the writer keeps extending); the result
is intersected with the published domain at the end.

Per field the index holds up to three kinds of values: strings and booleans (a
dictionary plus a column of codes, postings built on demand), numbers (a float64 column;
dates as epoch ms) and further values of multi-valued events (`extras`). A term matches
every interpretation its text allows: `f:3` finds the string "3" and the number 3,
`f:true` the boolean true and the string "true".

Strategy per string lookup: postings when they are already built or the field has few
distinct values (one bitmap per value is then cheap and every later query is a lookup);
otherwise a vectorised scan of the codes column, which costs one pass over 4 bytes per
event and no memory per value (the right trade for unique-per-event fields such as
`event.id`).
"""

from __future__ import annotations

import array
import bisect
import re
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyroaring import BitMap

from m1lite.errors import BadRequest
from m1lite.query import blocks
from m1lite.query.ast import (
    And,
    BoolQuery,
    Exists,
    MatchAll,
    Node,
    Not,
    Or,
    Range,
    Term,
    Wildcard,
)
from m1lite.query.datemath import resolve_date
from m1lite.schema import Schema, parse_date_ms
from m1lite.storage.index import FieldIndex, Index, tokens

MAX_EXPANDED_TERMS = 1_024  # dictionary terms one query's wildcards may expand to
POSTINGS_MAX_VALUES = 1_024  # fields with at most this many values get postings on first use
KEY_FIELD = "_m1key"
_ALL_KEYS = 1 << 32  # BitMap keys are 32-bit
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE_LIKE = re.compile(r"NOW|\d{4}-\d{2}-\d{2}")  # an ISO date or date math, at the start
_NUMERIC_TYPES = frozenset({"integer", "double", "date"})


class TooManyTerms(BadRequest):
    code = "too_many_terms"


class BadDate(BadRequest):
    code = "bad_date"


# -- bitmaps <-> arrays ------------------------------------------------------------------


def keys_bitmap(keys: np.ndarray) -> BitMap:
    """A BitMap of integer keys; through array('I'), which pyroaring copies in bulk
    (building from a numpy array directly goes element by element, ~50x slower)."""
    buffer = array.array("I")
    buffer.frombytes(np.ascontiguousarray(keys, dtype=np.uint32).tobytes())
    return BitMap(buffer)


def bitmap_array(keys: BitMap) -> np.ndarray:
    """The keys as an ascending uint32 array."""
    return np.frombuffer(keys.to_array(), dtype=np.uint32)


def key_range(low: int, high: int) -> BitMap:
    """Keys low <= k < high."""
    keys = BitMap()
    low, high = max(low, 0), min(high, _ALL_KEYS)
    if high > low:
        keys.add_range(low, high)
    return keys


# -- the sorted dictionary of a field --------------------------------------------------------


@dataclass(slots=True)
class SortedTerms:
    """A field's dictionary in value order: booleans (false, true) first, then strings.

    Used by wildcards and string ranges (bisect on `strings`) and by sorting (`rank`).
    """

    size: int  # dictionary entries covered (ids below this)
    last: Any  # values[size - 1] when built: detects a dictionary rolled back and refilled
    bool_ids: list[int]
    string_ids: list[int]  # ids of string values, in value order
    strings: list[str]  # the string values, in order
    _rank: np.ndarray | None = None

    @property
    def order(self) -> list[int]:
        return self.bool_ids + self.string_ids

    def rank(self) -> np.ndarray:
        """id -> position in value order (int64)."""
        if self._rank is None:
            rank = np.zeros(self.size, dtype=np.int64)
            order = np.array(self.order, dtype=np.int64)
            rank[order] = np.arange(len(order), dtype=np.int64)
            self._rank = rank
        return self._rank


_SORTED: weakref.WeakKeyDictionary[FieldIndex, SortedTerms] = weakref.WeakKeyDictionary()
_SORTED_LOCK = threading.Lock()


def sorted_terms(index: FieldIndex, size: int) -> SortedTerms:
    """The cached sorted dictionary covering ids below `size`, refreshed when it grew.

    Growth is merged, not re-sorted: the new values are sorted on their own and the
    concatenation of two sorted runs is what Timsort merges in linear time.
    """
    values = index.values
    cached = _SORTED.get(index)
    if cached is not None and not _still_valid(cached, values):
        cached = None  # the dictionary was rolled back (a failed commit) meanwhile
    if cached is not None and cached.size >= size:
        return cached
    bool_ids = [] if cached is None else list(cached.bool_ids)
    string_ids = [] if cached is None else cached.string_ids
    added: list[int] = []
    for value_id in range(0 if cached is None else cached.size, size):
        (bool_ids if isinstance(values[value_id], bool) else added).append(value_id)
    key = values.__getitem__
    added.sort(key=key)
    merged = sorted(string_ids + added, key=key) if string_ids else added
    bool_ids.sort(key=key)
    result = SortedTerms(
        size=size,
        last=values[size - 1] if size else None,
        bool_ids=bool_ids,
        string_ids=merged,
        strings=[values[i] for i in merged],
    )
    with _SORTED_LOCK:
        current = _SORTED.get(index)
        if current is None or current.size <= size:
            _SORTED[index] = result
    return result


def _still_valid(cached: SortedTerms, values: list[Any]) -> bool:
    if cached.size == 0:
        return True
    return cached.size <= len(values) and values[cached.size - 1] is cached.last


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """`*` any run of characters, `?` exactly one; everything else literal, case-sensitive."""
    parts = ["." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


def literal_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?"), default=len(pattern))
    return pattern[:cut]


def prefix_bounds(strings: list[str], prefix: str) -> tuple[int, int]:
    """The slice of sorted strings that start with prefix."""
    low = bisect.bisect_left(strings, prefix)
    if not prefix:
        return low, len(strings)
    # The smallest string greater than every string with this prefix (code point order).
    last = ord(prefix[-1])
    if last == 0x10FFFF:
        high = low
        while high < len(strings) and strings[high].startswith(prefix):
            high += 1
        return low, high
    return low, bisect.bisect_left(strings, prefix[:-1] + chr(last + 1), low)


# -- the snapshot a query runs against ------------------------------------------------------


@dataclass
class QueryContext:
    """One query's view of the index: keys below `upto`, published ones in `domain`."""

    index: Index
    schema: Schema
    date_fields: frozenset[str]
    text_fields: frozenset[str]
    upto: int
    domain: BitMap
    now_ms: int
    parse: Callable[[str], Node] | None = None  # the query parser, for `run_query`
    expanded_terms: int = 0
    _numbers: dict[str, np.ndarray | None] = field(default_factory=dict)

    @classmethod
    def snapshot(
        cls,
        index: Index,
        schema: Schema,
        field_kinds: tuple[frozenset[str], frozenset[str]],
        *,
        upto: int | None,
        now_ms: int,
        parse: Callable[[str], Node] | None = None,
    ) -> QueryContext:
        """`upto` None: everything visible; else at most that (a store with autocommit off)."""
        visible = index.visible_upto
        limit = visible if upto is None else min(upto, visible)
        domain = key_range(0, limit)
        domain -= index.archived
        date_fields, text_fields = field_kinds
        return cls(index, schema, date_fields, text_fields, limit, domain, now_ms, parse)

    # -- what facets and sorting read too --

    def run_query(self, q: str) -> BitMap:
        """Keys matching a query string (facet `query` buckets, `fq`), within the domain."""
        if self.parse is None:
            raise RuntimeError("this context has no query parser")
        return execute(self.parse(q), self)

    def field(self, name: str) -> FieldIndex | None:
        return self.index.fields.get(name)

    def codes(self, name: str) -> tuple[FieldIndex, np.ndarray, int] | None:
        """(field, codes of keys below upto, dictionary size covering them)."""
        index = self.index.fields.get(name)
        if index is None:
            return None
        codes = index.codes[: self.upto]
        # Read after the codes: every id a visible key refers to was interned before it.
        size = len(index.values)
        return index, codes, size

    def numbers(self, name: str) -> np.ndarray | None:
        """The numeric column of keys below upto (NaN = absent), or None."""
        if name not in self._numbers:
            column = self.index.numbers.get(name)
            self._numbers[name] = None if column is None else column[: self.upto]
        return self._numbers[name]

    def number_extras(self, name: str) -> dict[int, list[float]]:
        """Further numbers of multi-valued events (a copy: the writer updates the original)."""
        extras = self.index.number_extras.get(name)
        return {} if not extras else extras.copy()

    def string_extras(self, index: FieldIndex) -> dict[int, list[int]]:
        return index.extras.copy() if index.extras else {}

    def is_date(self, name: str) -> bool:
        return name in self.date_fields

    def is_text(self, name: str) -> bool:
        return name in self.text_fields

    def declared_type(self, name: str) -> str | None:
        prop = self.schema.get(name)
        return None if prop is None else prop.type

    def sorted_terms(self, name: str) -> SortedTerms | None:
        found = self.codes(name)
        if found is None:
            return None
        index, _codes, size = found
        return sorted_terms(index, size)

    def date_ms(self, text: str) -> int:
        """An ISO date, epoch ms, or date math (`NOW-7DAYS`, `NOW/DAY`) as epoch ms."""
        ms = parse_date_ms(text)
        if ms is not None:
            return ms
        return resolve_date(text, self.now_ms)


# -- evaluation ----------------------------------------------------------------------------


def execute(node: Node, ctx: QueryContext) -> BitMap:
    """The published, visible keys matching node."""
    result = _eval(node, ctx)
    result &= ctx.domain
    return result


def _eval(node: Node, ctx: QueryContext) -> BitMap:
    match node:
        case MatchAll():
            return ctx.domain.copy()
        case Term():
            return _term(ctx, node)
        case Wildcard():
            return _wildcard(ctx, node)
        case Exists():
            return _exists(ctx, node.field)
        case Range():
            return _range(ctx, node)
        case Not():
            return ctx.domain - _eval(node.clause, ctx)
        case And():
            return _all_of(ctx, node.clauses)
        case Or():
            return _any_of(ctx, node.clauses)
        case BoolQuery():
            return _bool(ctx, node)
    raise TypeError(f"not a query node: {node!r}")


def _all_of(ctx: QueryContext, clauses: Iterable[Node]) -> BitMap:
    result: BitMap | None = None
    for clause in clauses:
        found = _eval(clause, ctx)
        result = found if result is None else result & found
        if not result:
            break  # the rest cannot add anything back
    return ctx.domain.copy() if result is None else result


def _any_of(ctx: QueryContext, clauses: Iterable[Node]) -> BitMap:
    found = [_eval(clause, ctx) for clause in clauses]
    if not found:
        return BitMap()
    return BitMap.union(*found) if len(found) > 1 else found[0]


def _bool(ctx: QueryContext, node: BoolQuery) -> BitMap:
    if node.must:
        result = _all_of(ctx, node.must)
    elif node.should:
        result = _any_of(ctx, node.should)
    else:
        result = ctx.domain.copy()  # only negative clauses: everything but them
    if node.must_not and result:
        result -= _any_of(ctx, node.must_not)
    return result


# -- leaves ----------------------------------------------------------------------------------


def _term(ctx: QueryContext, node: Term) -> BitMap:
    name, value = node.field, node.value
    if name == KEY_FIELD:
        return _key_term(ctx, value)
    if ctx.is_date(name):
        ms = float(_date_or_400(ctx, name, value))
        return _number_range(ctx, name, ms, ms)
    if ctx.is_text(name):
        words = tokens(value)
        if not words:
            return BitMap()
        # A phrase is every one of its words: positions are not indexed.
        return _all_of_found(_string_keys(ctx, name, _ids(ctx, name, [w])) for w in words)
    candidates: list[Any] = [value]
    if value in ("true", "false"):
        candidates.append(value == "true")
    found = _string_keys(ctx, name, _ids(ctx, name, candidates))
    number = _as_number(value)
    if number is not None:
        found |= _number_range(ctx, name, number, number)
    return found


def _all_of_found(parts: Iterable[BitMap]) -> BitMap:
    result: BitMap | None = None
    for part in parts:
        result = part if result is None else result & part
        if not result:
            break
    return BitMap() if result is None else result


def _ids(ctx: QueryContext, name: str, values: list[Any]) -> list[int]:
    index = ctx.field(name)
    if index is None:
        return []
    found = (index.value_id(v) for v in values)
    return [i for i in found if i is not None]


def _key_term(ctx: QueryContext, value: str) -> BitMap:
    number = _as_number(value)
    if number is None or not number.is_integer():
        return BitMap()
    return key_range(int(number), int(number) + 1)


def _as_number(text: str) -> float | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    return number if np.isfinite(number) else None


def _date_or_400(ctx: QueryContext, name: str, text: str) -> int:
    try:
        return ctx.date_ms(text)
    except BadRequest:
        raise
    except (ValueError, OverflowError):
        pass
    raise BadDate(f"{name} is a date field and {text!r} is not a date or date math")


def _string_keys(ctx: QueryContext, name: str, ids: list[int]) -> BitMap:
    """Keys below upto whose field holds any of the dictionary ids."""
    found = ctx.codes(name)
    if found is None or not ids:
        return BitMap()
    index, codes, size = found
    if index.postings is not None or size <= POSTINGS_MAX_VALUES:
        postings = index.bitmaps(ctx.upto)
        chosen = [postings[i] for i in ids if i < len(postings)]
        result = (
            BitMap.union(*chosen) if len(chosen) > 1 else chosen[0].copy() if chosen else BitMap()
        )
        result.remove_range(ctx.upto, _ALL_KEYS)  # postings run ahead of the snapshot
        return result
    if len(ids) == 1:
        hits = np.flatnonzero(codes == ids[0] + 1)
    else:
        wanted = np.zeros(size + 1, dtype=bool)
        wanted[np.asarray(ids, dtype=np.int64) + 1] = True
        hits = np.flatnonzero(wanted[codes])
    result = keys_bitmap(hits)
    extras = ctx.string_extras(index)
    if extras:
        id_set = set(ids)
        upto = ctx.upto
        result.update(k for k, more in extras.items() if k < upto and not id_set.isdisjoint(more))
    return result


def _number_range(
    ctx: QueryContext,
    name: str,
    low: float | None,
    high: float | None,
    include_low: bool = True,
    include_high: bool = True,
) -> BitMap:
    """Keys holding a number within the bounds (None = open end)."""
    column = ctx.numbers(name)
    if column is None:
        return BitMap()
    result = _column_range(ctx, name, column, low, high, include_low, include_high)
    extras = ctx.number_extras(name)
    if extras:
        upto = ctx.upto
        inside = _scalar_test(low, high, include_low, include_high)
        result.update(k for k, more in extras.items() if k < upto and any(map(inside, more)))
    return result


def _column_range(
    ctx: QueryContext,
    name: str,
    column: np.ndarray,
    low: float | None,
    high: float | None,
    include_low: bool,
    include_high: bool,
) -> BitMap:
    """Keys whose column value lies within the bounds: through the block bounds when the
    column is long (whole blocks in, whole blocks out), else one vectorised pass."""
    if len(column) >= blocks.MIN_KEYS:
        found = blocks.bounds(ctx.index, name, column)
        parts = blocks.range_parts(found, column, low, high, include_low, include_high)
        if parts is not None:
            ranges, keys = parts
            result = keys_bitmap(keys)
            for start, stop in ranges:
                result.add_range(start, stop)
            return result
    mask = blocks.compare(column, low, high, include_low, include_high)
    return keys_bitmap(np.flatnonzero(mask))


def _scalar_test(
    low: float | None, high: float | None, include_low: bool, include_high: bool
) -> Callable[[float], bool]:
    def inside(value: float) -> bool:
        if low is not None and not (value >= low if include_low else value > low):
            return False
        return high is None or (value <= high if include_high else value < high)

    return inside


def _exists(ctx: QueryContext, name: str) -> BitMap:
    if name == KEY_FIELD:
        return ctx.domain.copy()
    present: np.ndarray | None = None
    found = ctx.codes(name)
    if found is not None:
        present = found[1] != 0
    column = ctx.numbers(name)
    if column is not None:
        numbers = ~np.isnan(column)
        if present is None:
            present = numbers
        else:
            # The two columns may differ in length (each grows on its own).
            width = max(len(present), len(numbers))
            present = np.pad(present, (0, width - len(present))) | np.pad(
                numbers, (0, width - len(numbers))
            )
    if present is None:
        return BitMap()
    # Multi-valued events keep their first value in the column, so extras add no keys.
    return keys_bitmap(np.flatnonzero(present))


def _count_terms(ctx: QueryContext, count: int, what: str) -> None:
    ctx.expanded_terms += count
    if ctx.expanded_terms > MAX_EXPANDED_TERMS:
        raise TooManyTerms(
            f"{what} expands to more than {MAX_EXPANDED_TERMS} terms; make the pattern "
            "more specific"
        )


def _wildcard(ctx: QueryContext, node: Wildcard) -> BitMap:
    name, pattern = node.field, node.pattern
    if pattern and set(pattern) == {"*"}:
        return _exists(ctx, name)
    if ctx.is_text(name):
        pattern = pattern.lower()  # text terms are indexed lower-cased
    terms = ctx.sorted_terms(name)
    if terms is None:
        return BitMap()
    strings, string_ids = terms.strings, terms.string_ids
    prefix = literal_prefix(pattern)
    low, high = prefix_bounds(strings, prefix)
    what = f"{name}:{pattern}"
    if pattern == prefix + "*":
        # A plain prefix: the bisected slice is exactly the matching terms.
        _count_terms(ctx, high - low, what)
        ids = string_ids[low:high]
    else:
        regex = wildcard_regex(pattern)
        ids = []
        budget = MAX_EXPANDED_TERMS - ctx.expanded_terms
        for position in range(low, high):
            if regex.fullmatch(strings[position]):
                ids.append(string_ids[position])
                if len(ids) > budget:
                    break  # stop scanning: the answer is a 400 either way
        _count_terms(ctx, len(ids), what)
    return _string_keys(ctx, name, ids)


def _range(ctx: QueryContext, node: Range) -> BitMap:
    name, low, high = node.field, node.low, node.high
    if low is None and high is None:
        return _exists(ctx, name)
    if name == KEY_FIELD:
        return _key_range(ctx, node)
    ends = [end for end in (low, high) if end is not None]
    declared = ctx.declared_type(name)
    if ctx.is_date(name):
        lo = None if low is None else float(_date_or_400(ctx, name, low))
        hi = None if high is None else float(_date_or_400(ctx, name, high))
        return _numeric(ctx, node, lo, hi)
    result = BitMap()
    numeric = all(_as_number(end) is not None for end in ends)
    has_numbers = ctx.numbers(name) is not None
    if numeric:
        lo = None if low is None else _as_number(low)
        hi = None if high is None else _as_number(high)
        result |= _numeric(ctx, node, lo, hi)
    elif has_numbers and all(_DATE_LIKE.match(end) for end in ends):
        # Epoch-ms numbers in a field not declared a date still compare as dates.
        lo = None if low is None else float(_date_or_400(ctx, name, low))
        hi = None if high is None else float(_date_or_400(ctx, name, high))
        result |= _numeric(ctx, node, lo, hi)
    # Numeric ends compare numbers only, unless the field holds no numbers or is declared
    # a string: then they compare as strings (zip codes, ids), lexicographically.
    if not numeric or not has_numbers or (declared is not None and declared not in _NUMERIC_TYPES):
        result |= _string_range(ctx, node)
    return result


def _numeric(ctx: QueryContext, node: Range, low: float | None, high: float | None) -> BitMap:
    return _number_range(ctx, node.field, low, high, node.include_low, node.include_high)


def _key_range(ctx: QueryContext, node: Range) -> BitMap:
    low = 0.0 if node.low is None else _as_number(node.low)
    high = float(ctx.upto) if node.high is None else _as_number(node.high)
    if low is None or high is None:
        raise BadRequest(f"{KEY_FIELD} ranges take integers", code="bad_range")
    # An open end (`*`) is unbounded whatever its bracket: `_m1key:{* TO 5}` includes key 0.
    include_low = node.include_low or node.low is None
    include_high = node.include_high or node.high is None
    first = int(np.ceil(low)) if include_low or not low.is_integer() else int(low) + 1
    last = int(np.floor(high)) if include_high or not high.is_integer() else int(high) - 1
    return key_range(max(first, 0), min(last + 1, ctx.upto))


def _string_range(ctx: QueryContext, node: Range) -> BitMap:
    terms = ctx.sorted_terms(node.field)
    if terms is None:
        return BitMap()
    strings = terms.strings
    first, stop = 0, len(strings)
    if node.low is not None:
        cut = bisect.bisect_left if node.include_low else bisect.bisect_right
        first = cut(strings, node.low)
    if node.high is not None:
        cut = bisect.bisect_right if node.include_high else bisect.bisect_left
        stop = cut(strings, node.high)
    if stop <= first:
        return BitMap()
    return _string_keys(ctx, node.field, terms.string_ids[first:stop])

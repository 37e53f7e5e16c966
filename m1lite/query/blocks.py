"""Per-block bounds of number and date columns (zone maps), so that a sort which needs
only the first rows of many matches, or a range on a column that grows with the key,
reads only the blocks that can matter.

Keys are cut into blocks of `BLOCK_KEYS` (one roaring container's span). For each block
of a column: its largest and smallest value (absent values ignored), whether every
key of the block holds a value, and whether its values never decrease with the key.

- Sorting: `top_candidates` visits blocks from the most promising bound down, gathers
  the matches of each, and stops once the `stop`-th best value seen beats the bound of
  every block not visited: the page lies among what was gathered. `_m1.receivedUTC`
  grows with the key, so `sort=_m1.receivedUTC desc` reads the last block or two instead
  of gathering and partitioning every match (10M events: ~0.3 s down to under 1 ms).
- Range facets: `key_ordered` tells when a column never decreases with the key, so that
  a bucket's events are one key range (facet_range.py).
- Ranges: `range_parts` takes blocks wholly inside the range as key ranges, skips blocks
  wholly outside and compares values only in the blocks in between (a date filter over
  the last days of a 10M-event log: a few blocks compared instead of 10M values).

The bounds of complete blocks are cached per event index (`Index` itself): its rows below
`visible_upto` never change. Indexes that rewrite rows in place (subclasses such as a
session store's) get fresh bounds on every call.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
from pyroaring import BitMap

from m1lite.storage.index import Index

BLOCK_BITS = 16
BLOCK_KEYS = 1 << BLOCK_BITS
MIN_KEYS = 4 * BLOCK_KEYS  # below this many keys (or matches) a plain pass costs little


@dataclass(frozen=True, slots=True)
class Bounds:
    high: np.ndarray  # per block: the largest value, -inf when none
    low: np.ndarray  # per block: the smallest value, +inf when none
    full: np.ndarray  # per block: every key holds a value
    ordered: np.ndarray  # per block: every key holds a value, none smaller than the last

    def head(self, blocks: int) -> Bounds:
        return Bounds(
            self.high[:blocks], self.low[:blocks], self.full[:blocks], self.ordered[:blocks]
        )

    def extend(self, more: Bounds) -> Bounds:
        return Bounds(
            np.concatenate([self.high, more.high]),
            np.concatenate([self.low, more.low]),
            np.concatenate([self.full, more.full]),
            np.concatenate([self.ordered, more.ordered]),
        )


_EMPTY = Bounds(np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
_cache: weakref.WeakKeyDictionary[Index, dict[str, Bounds]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _reduce(blocks: np.ndarray) -> Bounds:
    """Bounds of each row of a 2-D array (one row per block)."""
    high = np.fmax.reduce(blocks, axis=1)  # fmax/fmin skip NaN (absent)
    low = np.fmin.reduce(blocks, axis=1)
    full = ~np.isnan(blocks).any(axis=1)
    ordered = (blocks[:, 1:] >= blocks[:, :-1]).all(axis=1)  # False wherever a NaN is
    return Bounds(
        np.where(np.isnan(high), -np.inf, high),
        np.where(np.isnan(low), np.inf, low),
        full,
        ordered & full,
    )


def _complete(column: np.ndarray, first: int, last: int) -> Bounds:
    return _reduce(column[first << BLOCK_BITS : last << BLOCK_BITS].reshape(-1, BLOCK_KEYS))


def bounds(index: Index, name: str, column: np.ndarray) -> Bounds:
    """Bounds per block of `column` (the field's values of the keys below the query's
    upto); the last block may be partial."""
    complete = len(column) >> BLOCK_BITS
    if type(index) is Index:
        with _lock:
            per_field = _cache.setdefault(index, {})
            found = per_field.get(name, _EMPTY)
            if len(found.high) < complete:
                found = per_field[name] = found.extend(_complete(column, len(found.high), complete))
        found = found.head(complete)
    else:
        found = _complete(column, 0, complete)
    tail = column[complete << BLOCK_BITS :]
    return found.extend(_reduce(tail.reshape(1, -1))) if tail.size else found


def key_ordered(index: Index, name: str, column: np.ndarray) -> bool:
    """Whether every key of `column` holds a value and no value is smaller than the one
    before it (as a receive time grows with the key)."""
    found = bounds(index, name, column)
    return bool(found.ordered.all()) and bool(np.all(found.low[1:] >= found.high[:-1]))


# -- sorting -------------------------------------------------------------------------------


def top_candidates(
    keys: BitMap, column: np.ndarray, found: Bounds, *, descending: bool, stop: int
) -> np.ndarray | None:
    """The keys (ascending uint32) that can be among the first `stop` when sorted by
    `column` with absent values last: every key at least as good as the `stop`-th best.
    None when fewer than `stop` keys hold a value (absent ones reach the page)."""
    best = found.high if descending else -found.low  # scores: larger is better
    kept_keys: list[np.ndarray] = []
    kept_scores: list[np.ndarray] = []
    held = 0
    threshold = -np.inf
    for block in np.argsort(-best, kind="stable").tolist():
        bound = best[block]
        if bound == -np.inf or (held >= stop and bound < threshold):
            break  # no block left can hold a value as good as the stop-th
        first = block << BLOCK_BITS
        span = BitMap()
        span.add_range(first, min(first + BLOCK_KEYS, len(column)))
        matched = np.frombuffer(keys.intersection(span).to_array(), dtype=np.uint32)
        if not matched.size:
            continue
        scores = column[matched] if descending else -column[matched]
        present = ~np.isnan(scores)
        kept_keys.append(matched[present])
        kept_scores.append(scores[present])
        held += int(np.count_nonzero(present))
        if held >= stop:
            scores = np.concatenate(kept_scores)
            threshold = float(np.partition(scores, scores.size - stop)[scores.size - stop])
            keep = scores >= threshold  # ties stay: later sort fields and _m1key order them
            kept_keys = [np.concatenate(kept_keys)[keep]]
            kept_scores = [scores[keep]]
            held = int(np.count_nonzero(keep))
    if held < stop:
        return None
    return np.sort(np.concatenate(kept_keys))


# -- ranges ----------------------------------------------------------------------------------


def compare(
    values: np.ndarray,
    low: float | None,
    high: float | None,
    include_low: bool,
    include_high: bool,
) -> np.ndarray:
    """Which values lie within the bounds (None = open end); NaN (absent) never does."""
    mask: np.ndarray | None = None
    if low is not None:
        mask = values >= low if include_low else values > low
    if high is not None:
        upper = values <= high if include_high else values < high
        mask = upper if mask is None else mask & upper
    if mask is None:
        mask = ~np.isnan(values)
    return mask


def range_parts(
    found: Bounds,
    column: np.ndarray,
    low: float | None,
    high: float | None,
    include_low: bool,
    include_high: bool,
) -> tuple[list[tuple[int, int]], np.ndarray] | None:
    """Keys whose value lies within the bounds, as (start, stop) key ranges of whole
    blocks plus the matching keys of the other blocks (int64); None when most blocks
    would need comparing anyway (a column not ordered by key: one pass is cheaper)."""
    overlaps = found.high >= found.low  # blocks without values have high -inf, low +inf
    overlaps &= compare(found.high, low, None, include_low, True)
    overlaps &= compare(found.low, None, high, True, include_high)
    inside = overlaps & found.full & compare(found.low, low, None, include_low, True)
    inside &= compare(found.high, None, high, True, include_high)
    partial = np.flatnonzero(overlaps & ~inside)
    if partial.size * 2 > len(found.high):
        return None
    ranges: list[tuple[int, int]] = []
    for block in np.flatnonzero(inside).tolist():
        start, stop = block << BLOCK_BITS, min((block + 1) << BLOCK_BITS, len(column))
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], stop)
        else:
            ranges.append((start, stop))
    keys = [
        np.flatnonzero(
            compare(
                column[block << BLOCK_BITS : (block + 1) << BLOCK_BITS],
                low,
                high,
                include_low,
                include_high,
            )
        )
        + (block << BLOCK_BITS)
        for block in partial.tolist()
    ]
    return ranges, np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)

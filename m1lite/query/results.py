"""From a result bitmap to a page of documents: sort, page, fetch, project, CSV.

Sorting picks the page without sorting every match: the candidates' sort keys are
gathered from the index columns (numbers and dates from the float column, strings through
the rank of their code in the field's sorted dictionary), the first sort field narrows
the candidates to those that can reach the page (np.partition on start + rows, ties
kept), and only those are ordered with np.lexsort. Missing values sort last in both
directions (Solr's default), ties fall back to `_m1key` ascending. A multi-valued field
sorts by its first value. A field holding numbers and strings sorts its numbers first.
"""

from __future__ import annotations

import csv
import fnmatch
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
from pyroaring import BitMap

from m1lite.query import blocks
from m1lite.query.execute import (
    KEY_FIELD,
    QueryContext,
    bitmap_array,
    keys_bitmap,
    sorted_terms,
)

SortSpec = list[tuple[str, bool]]  # (field, descending)
_PARTITION_MIN = 4_096  # below this many matches a full lexsort is cheaper than narrowing


def page_keys(keys: BitMap, sort: SortSpec, start: int, rows: int, ctx: QueryContext) -> list[int]:
    """The `_m1key`s of matches start .. start+rows-1 in sort order."""
    total = len(keys)
    stop = min(start + rows, total)
    if stop <= start:
        return []
    if not sort or sort[0] == (KEY_FIELD, False):
        return list(keys[start:stop])  # the bitmap is in key order already
    if sort[0] == (KEY_FIELD, True):
        return list(reversed(keys[total - stop : total - start]))
    if total >= blocks.MIN_KEYS:
        narrowed = _narrow_by_blocks(keys, sort[0], stop, ctx)
        if narrowed is not None:
            keys, total = narrowed, len(narrowed)
    candidates = bitmap_array(keys)
    first = _sort_keys(ctx, sort[0][0], sort[0][1], candidates)
    if total >= _PARTITION_MIN and stop < total // 2 and first.primary is not None:
        # Keep what can reach the page: every candidate up to the stop-th smallest key of
        # the first sort field, ties included (later fields and _m1key order those).
        threshold = np.partition(first.primary, stop - 1)[stop - 1]
        keep = np.flatnonzero(first.primary <= threshold)
        candidates = candidates[keep]
        first = first.subset(keep)
    columns = list(first.columns)
    for name, descending in sort[1:]:
        if name == KEY_FIELD:
            columns.append(_key_column(candidates, descending))
            break  # keys are unique: nothing after them can matter
        columns.extend(_sort_keys(ctx, name, descending, candidates).columns)
    columns.append(candidates)  # the final tie-break: _m1key ascending
    order = np.lexsort(columns[::-1])  # lexsort's last key is the primary one
    return [int(k) for k in candidates[order[start:stop]]]


def _narrow_by_blocks(
    keys: BitMap, first: tuple[str, bool], stop: int, ctx: QueryContext
) -> BitMap | None:
    """The matches that can reach the first `stop` places when the first sort field is a
    number or date field (see blocks.py); None when that cannot be narrowed."""
    name, descending = first
    column = ctx.numbers(name)
    if column is None or ctx.codes(name) is not None:
        return None  # no numbers, or strings too (they sort after numbers: not bounded here)
    found = blocks.bounds(ctx.index, name, column)
    kept = blocks.top_candidates(keys, column, found, descending=descending, stop=stop)
    return None if kept is None else keys_bitmap(kept)


class _SortKeys:
    """One sort field's keys for the candidates, most significant first."""

    __slots__ = ("columns", "primary")

    def __init__(self, columns: list[np.ndarray], primary: np.ndarray | None) -> None:
        self.columns = columns
        # One float array ordering the candidates like `columns` do (missing = +inf), when
        # one exists: what the partition step narrows on.
        self.primary = primary

    def subset(self, keep: np.ndarray) -> _SortKeys:
        return _SortKeys(
            [column[keep] for column in self.columns],
            None if self.primary is None else self.primary[keep],
        )


def _key_column(candidates: np.ndarray, descending: bool) -> np.ndarray:
    keys = candidates.astype(np.int64)
    return -keys if descending else keys


def _sort_keys(ctx: QueryContext, name: str, descending: bool, candidates: np.ndarray) -> _SortKeys:
    if name == KEY_FIELD:
        column = _key_column(candidates, descending)
        return _SortKeys([column], column.astype(np.float64))
    sign = -1.0 if descending else 1.0
    numbers = _gather_numbers(ctx, name, candidates)
    ranks = _gather_ranks(ctx, name, candidates)
    has_number = None if numbers is None else ~np.isnan(numbers)
    if ranks is None or not (ranks >= 0).any():
        if has_number is None:
            zeros = np.zeros(len(candidates))
            return _SortKeys([zeros], zeros)  # nobody has the field: key order decides
        assert numbers is not None
        value = np.where(has_number, numbers * sign, 0.0)
        primary = np.where(has_number, value, np.inf)
        return _SortKeys([~has_number, value], primary)
    string_value = np.where(ranks >= 0, ranks * int(sign), 0)
    if has_number is None or not has_number.any():
        missing = ranks < 0
        primary = np.where(missing, np.inf, string_value.astype(np.float64))
        return _SortKeys([missing, string_value], primary)
    assert numbers is not None
    # Both kinds: numbers, then strings, then missing, whatever the direction.
    kind = np.where(has_number, 0, np.where(ranks >= 0, 1, 2))
    number_value = np.where(has_number, numbers * sign, 0.0)
    string_value = np.where(has_number, 0, string_value)
    return _SortKeys([kind, number_value, string_value], None)


def _gather_numbers(ctx: QueryContext, name: str, candidates: np.ndarray) -> np.ndarray | None:
    column = ctx.numbers(name)
    if column is None:
        return None
    inside = candidates < len(column)
    if inside.all():
        return column[candidates]
    values = np.full(len(candidates), np.nan)
    values[inside] = column[candidates[inside]]
    return values


def _gather_ranks(ctx: QueryContext, name: str, candidates: np.ndarray) -> np.ndarray | None:
    """Position of each candidate's value in the sorted dictionary; -1 = no string value."""
    found = ctx.codes(name)
    if found is None:
        return None
    index, codes, size = found
    terms = sorted_terms(index, size)
    rank = np.concatenate(([-1], terms.rank()))  # code 0 (absent) -> -1
    inside = candidates < len(codes)
    picked = np.zeros(len(candidates), dtype=np.int64)
    picked[inside] = codes[candidates[inside]]
    picked[picked > terms.size] = 0  # an id interned after the snapshot: not visible anyway
    return rank[picked]


# -- documents ---------------------------------------------------------------------------


def project(records: Iterable[dict[str, Any]], fl: list[str] | None) -> list[dict[str, Any]]:
    """The requested fields of each flat record, `_m1key` always; None = every field.

    Names may be globs (`_m1.geo.*`); fields come in `fl` order, `_m1key` last unless named.
    """
    if fl is None:
        return list(records)
    names = fl if KEY_FIELD in fl else [*fl, KEY_FIELD]
    globs = [name for name in names if "*" in name or "?" in name]
    docs = []
    for record in records:
        doc: dict[str, Any] = {}
        for name in names:
            if name in globs:
                for key, value in record.items():
                    if key not in doc and fnmatch.fnmatchcase(key, name):
                        doc[key] = value
            elif name in record:
                doc[name] = record[name]
        docs.append(doc)
    return docs


def csv_columns(docs: list[dict[str, Any]], fl: list[str] | None) -> list[str]:
    """The header: the fl names, or (all fields, globs) the docs' fields in first-seen order."""
    if fl is not None and not any("*" in name or "?" in name for name in fl):
        return fl if KEY_FIELD in fl else [*fl, KEY_FIELD]
    seen: dict[str, None] = {}
    for doc in docs:
        for key in doc:
            seen.setdefault(key)
    return list(seen)


def to_csv(docs: list[dict[str, Any]], columns: list[str]) -> str:
    """RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or line break."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for doc in docs:
        writer.writerow([_cell(doc.get(column)) for column in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(_cell(item) for item in value)  # multi-valued: one cell
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same double
    return str(value)

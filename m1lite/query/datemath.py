"""Solr date math: `NOW-7DAYS`, `NOW/DAY+1DAY`, `2021-02-23T00:00:00Z+1MONTH`, facet gaps.

A date expression is an anchor followed by operations applied left to right:

- anchor: `NOW` (the request's time), an ISO-8601 date (`2021-02-23`,
  `2021-02-23T19:18:04Z`, `2021-02-23T19:18:04.399Z`, with or without `Z` or an offset;
  without either it is UTC), or plain epoch milliseconds (no operations after those);
- `+N UNIT` / `-N UNIT` adds or subtracts N units (`+1DAY`, `-15MINUTES`);
- `/UNIT` rounds down to the start of the unit (`/DAY` is midnight UTC).

Units: YEAR(S), MONTH(S), DAY(S) or DATE, HOUR(S), MINUTE(S), SECOND(S), MILLI(S) or
MILLISECOND(S); upper or lower case. Everything is UTC, so a day is always 24 hours; month
and year steps are calendar steps that clamp the day (Jan 31 + 1MONTH = Feb 28 or 29), as
in Solr (java.time).

Results are epoch milliseconds limited to years 1–9999, the range m1lite stores dates in.
Every error is a BadRequest (400) with the code `bad_date` and a message that says why.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date
from typing import Final

from m1lite.errors import BadRequest
from m1lite.schema import parse_date_ms

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MS_PER_DAY: Final = 86_400_000
MIN_MS: Final = (date.min.toordinal() - _EPOCH_ORDINAL) * _MS_PER_DAY
MAX_MS: Final = (date.max.toordinal() - _EPOCH_ORDINAL + 1) * _MS_PER_DAY - 1

# Canonical unit names. DAY, HOUR... have a fixed length in UTC; MONTH and YEAR do not.
_UNITS: Final = {
    "YEAR": "YEAR",
    "YEARS": "YEAR",
    "MONTH": "MONTH",
    "MONTHS": "MONTH",
    "DAY": "DAY",
    "DAYS": "DAY",
    "DATE": "DAY",
    "HOUR": "HOUR",
    "HOURS": "HOUR",
    "MINUTE": "MINUTE",
    "MINUTES": "MINUTE",
    "SECOND": "SECOND",
    "SECONDS": "SECOND",
    "MILLI": "MILLI",
    "MILLIS": "MILLI",
    "MILLISECOND": "MILLI",
    "MILLISECONDS": "MILLI",
}
_FIXED_MS: Final = {
    "DAY": _MS_PER_DAY,
    "HOUR": 3_600_000,
    "MINUTE": 60_000,
    "SECOND": 1000,
    "MILLI": 1,
}
_UNIT_LIST: Final = "YEAR, MONTH, DAY, HOUR, MINUTE, SECOND or MILLI (plural forms too)"

# Where an ISO anchor ends and the math begins. Mirrors the forms schema.parse_date_ms
# accepts; an offset counts only when math or the end follows it, so the `+12` of
# `...T10:00:00+12HOURS` is read as math, not as a +12:00 offset.
_ISO_ANCHOR: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
    r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?(?=$|[-+/]))?)?",
    re.ASCII,
)
_EPOCH_ANCHOR: Final = re.compile(r"-?\d{1,19}", re.ASCII)
# 18 digits covers every reachable step (9999 years is ~3.2e14 ms) and keeps int() cheap.
_OP: Final = re.compile(r"([+-])(\d{1,18})([A-Za-z]+)|/([A-Za-z]+)", re.ASCII)

# One operation: ("+", n, unit) adds n units (n may be negative), ("/", 0, unit) rounds.
_Op = tuple[str, int, str]


def resolve_date(text: str, now_ms: int) -> int:
    """Epoch milliseconds for a date or date-math expression; BadRequest when it is not one."""
    expr = text.strip()
    if expr[:3].upper() == "NOW":
        anchor = now_ms
        rest = 3
    else:
        match = _ISO_ANCHOR.match(expr)
        if match is None:
            if _EPOCH_ANCHOR.fullmatch(expr):
                return _check(int(expr), text)
            raise _bad(
                f"not a date: {text!r} (use an ISO date such as 2021-02-23T19:18:04Z, "
                "or NOW, optionally with date math such as NOW-7DAYS or NOW/DAY)"
            )
        anchor_ms = parse_date_ms(match.group())
        if anchor_ms is None:
            raise _bad(f"not a valid date: {match.group()!r} in {text!r}")
        anchor = anchor_ms
        rest = match.end()
    return _apply(_check(anchor, text), _parse_ops(expr, rest, text), text)


@dataclass(frozen=True, slots=True)
class Gap:
    """A range-facet step such as `+1HOUR` or `+1MONTH`, parsed once and applied per bucket.

    `fixed_ms` is set when every step is the same number of milliseconds (no month or year
    arithmetic, no rounding), so bucket starts are plain additions.
    """

    text: str
    ops: tuple[_Op, ...]
    fixed_ms: int | None

    def add(self, ms: int) -> int:
        """The next bucket start after `ms` (BadRequest if it leaves years 1–9999)."""
        if self.fixed_ms is not None:
            return _check(ms + self.fixed_ms, self.text)
        return _apply(ms, self.ops, self.text)


def parse_gap(gap: str) -> Gap:
    """A date gap such as `+1HOUR`, `+15MINUTES`, `+1MONTH` or `+1MONTH+2DAYS`.

    The leading `+` may be left out (`1DAY`). Numeric gaps (`10`, `+2.5`) are not date gaps;
    the caller tells them apart first. A gap must move forward; for calendar gaps (months,
    rounding) that is checked at a few sample dates, so callers should still stop when a
    step does not advance.
    """
    expr = gap.strip()
    if expr[:1].isdigit():
        expr = "+" + expr
    ops = _parse_ops(expr, 0, gap)
    if not ops:
        raise _bad(f"empty date gap {gap!r}: use e.g. +1HOUR, +1DAY or +1MONTH")
    fixed: int | None = 0
    for kind, amount, unit in ops:
        if kind == "/" or unit not in _FIXED_MS or fixed is None:
            fixed = None
        else:
            fixed += amount * _FIXED_MS[unit]
    result = Gap(gap, tuple(ops), fixed)
    # 2000-01-31 and 2001-02-28 expose month clamping; 1970 is a plain midnight.
    for sample in (0, 949_276_800_000, 983_318_400_000):
        if result.add(sample) <= sample:
            raise _bad(f"date gap {gap!r} must be positive, e.g. +1DAY")
    return result


def _parse_ops(expr: str, pos: int, original: str) -> list[_Op]:
    ops: list[_Op] = []
    end = len(expr)
    while pos < end:
        match = _OP.match(expr, pos)
        if match is None:
            raise _bad(
                f"bad date math in {original!r} at character {pos + 1}: expected "
                "+N UNIT, -N UNIT or /UNIT (e.g. NOW-7DAYS, NOW/DAY+1DAY)"
            )
        sign, amount, unit_text, round_text = match.groups()
        if round_text is not None:
            ops.append(("/", 0, _unit(round_text, original)))
        else:
            n = int(amount)
            ops.append(("+", -n if sign == "-" else n, _unit(unit_text, original)))
        pos = match.end()
    return ops


def _unit(text: str, original: str) -> str:
    unit = _UNITS.get(text.upper())
    if unit is None:
        raise _bad(f"unknown date unit {text!r} in {original!r}: use {_UNIT_LIST}")
    return unit


def _apply(ms: int, ops: list[_Op] | tuple[_Op, ...], original: str) -> int:
    for kind, amount, unit in ops:
        if kind == "/":
            ms = _round_down(ms, unit)
        elif unit in _FIXED_MS:
            ms = _check(ms + amount * _FIXED_MS[unit], original)
        else:
            ms = _add_months(ms, amount * 12 if unit == "YEAR" else amount, original)
    return _check(ms, original)


def _round_down(ms: int, unit: str) -> int:
    step = _FIXED_MS.get(unit)
    if step is not None:
        return ms - ms % step  # Python's % floors, so this is right before 1970 too
    day = date.fromordinal(ms // _MS_PER_DAY + _EPOCH_ORDINAL)
    first = date(day.year, 1 if unit == "YEAR" else day.month, 1)
    return (first.toordinal() - _EPOCH_ORDINAL) * _MS_PER_DAY


def _add_months(ms: int, months: int, original: str) -> int:
    days, rest = divmod(ms, _MS_PER_DAY)
    day = date.fromordinal(days + _EPOCH_ORDINAL)
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        raise _bad(f"date math {original!r} leaves the years 1–9999")
    month = month0 + 1
    # Clamp like java.time: Jan 31 + 1 month is the last day of February.
    last = calendar.monthrange(year, month)[1]
    moved = date(year, month, min(day.day, last))
    return (moved.toordinal() - _EPOCH_ORDINAL) * _MS_PER_DAY + rest


def _bad(message: str) -> BadRequest:
    # One error code for every date problem, whether in q, fq or a range facet.
    return BadRequest(message, code="bad_date")


def _check(ms: int, original: str) -> int:
    if not MIN_MS <= ms <= MAX_MS:
        raise _bad(f"date math {original!r} leaves the years 1–9999")
    return ms

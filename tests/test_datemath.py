"""Dates and Solr date math in ranges (`[NOW-7DAYS TO NOW]`) and facet gaps (`+1HOUR`)."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m1lite.errors import BadRequest
from m1lite.query.datemath import parse_gap, resolve_date
from m1lite.schema import format_date_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def utc(*parts: int) -> int:
    return ms(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


# 2021-02-23T19:18:04.399Z, a Tuesday.
NOW = utc(2021, 2, 23, 19, 18, 4, 399_000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NOW", NOW),
        ("now", NOW),
        ("  NOW  ", NOW),
        ("NOW-7DAYS", NOW - 7 * 86_400_000),
        ("NOW+1HOUR", NOW + 3_600_000),
        ("NOW/DAY", utc(2021, 2, 23)),
        ("NOW/DAY+1DAY", utc(2021, 2, 24)),
        ("NOW/DAY-7DAYS", utc(2021, 2, 16)),
        ("NOW/HOUR", utc(2021, 2, 23, 19)),
        ("NOW/MINUTE", utc(2021, 2, 23, 19, 18)),
        ("NOW/SECOND", utc(2021, 2, 23, 19, 18, 4)),
        ("NOW/MILLI", NOW),
        ("NOW/MONTH", utc(2021, 2, 1)),
        ("NOW/YEAR", utc(2021, 1, 1)),
        ("NOW-1YEAR/YEAR", utc(2020, 1, 1)),
        ("NOW+1MONTH", utc(2021, 3, 23, 19, 18, 4, 399_000)),
        ("NOW-15MINUTES", NOW - 15 * 60_000),
        ("NOW+30SECONDS", NOW + 30_000),
        ("NOW+250MILLIS", NOW + 250),
        ("NOW+1DAY+2HOURS-3MINUTES", NOW + 86_400_000 + 7_200_000 - 180_000),
        ("now-7days/day", utc(2021, 2, 16)),
        # ISO anchors
        ("2021-02-23T19:18:04.399Z", NOW),
        ("2021-02-23T19:18:04Z", utc(2021, 2, 23, 19, 18, 4)),
        ("2021-02-23T19:18:04", utc(2021, 2, 23, 19, 18, 4)),
        ("2021-02-23T19:18:04.399123Z", NOW),
        ("2021-02-23", utc(2021, 2, 23)),
        ("2021-02-23T20:18:04.399+01:00", NOW),
        ("2021-02-23T00:00:00Z+1MONTH", utc(2021, 3, 23)),
        ("2021-02-23+1DAY", utc(2021, 2, 24)),
        ("2021-02-23T19:18:04.399Z/DAY", utc(2021, 2, 23)),
        # +12HOURS right after a time is math, not a +12:00 offset
        ("2021-02-23T00:00:00+12HOURS", utc(2021, 2, 23, 12)),
        ("2021-02-23T00:00:00+12:00", utc(2021, 2, 22, 12)),
        ("2021-02-23T00:00:00+12:00+1DAY", utc(2021, 2, 23, 12)),
        # epoch milliseconds, as events may carry them
        (str(NOW), NOW),
        ("-1000", -1000),
    ],
)
def test_dates_and_date_math(text: str, expected: int) -> None:
    assert resolve_date(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-01-31T10:00:00Z+1MONTH", utc(2021, 2, 28, 10)),  # clamped to the month's end
        ("2020-01-31+1MONTH", utc(2020, 2, 29)),  # leap year
        ("2021-03-31-1MONTH", utc(2021, 2, 28)),
        ("2020-02-29+1YEAR", utc(2021, 2, 28)),
        ("2020-02-29+4YEARS", utc(2024, 2, 29)),
        ("2021-12-15+1MONTH", utc(2022, 1, 15)),
        ("2021-01-15-13MONTHS", utc(2019, 12, 15)),
        ("2021-01-31+1MONTH+1MONTH", utc(2021, 3, 28)),  # each step clamps, as in Solr
        ("1969-12-31T23:59:59.999Z/DAY", utc(1969, 12, 31)),  # rounding before 1970 floors
        ("1969-07-20T20:17:00Z/YEAR", utc(1969, 1, 1)),
        ("0001-01-01", utc(1, 1, 1)),
        ("9999-12-31T23:59:59.999Z", utc(9999, 12, 31, 23, 59, 59, 999_000)),
    ],
)
def test_calendar_arithmetic(text: str, expected: int) -> None:
    assert resolve_date(text, NOW) == expected


@pytest.mark.parametrize(
    "unit",
    [
        "YEAR",
        "YEARS",
        "MONTH",
        "MONTHS",
        "DAY",
        "DAYS",
        "DATE",
        "HOUR",
        "HOURS",
        "MINUTE",
        "MINUTES",
        "SECOND",
        "SECONDS",
        "MILLI",
        "MILLIS",
        "MILLISECOND",
        "MILLISECONDS",
    ],
)
def test_every_unit_spelling(unit: str) -> None:
    aliases = {"DATE": "DAY", "MILLIS": "MILLI", "MILLISECOND": "MILLI", "MILLISECONDS": "MILLI"}
    singular = aliases.get(unit, unit.removesuffix("S"))
    assert resolve_date(f"NOW+2{unit}", NOW) == resolve_date(f"NOW+1{singular}+1{singular}", NOW)
    assert resolve_date(f"NOW/{unit}", NOW) == resolve_date(f"NOW/{singular}", NOW)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not a date"),
        ("yesterday", "not a date"),
        ("2021-13-01", "not a valid date"),
        ("2021-02-30", "not a valid date"),
        ("2021-02-23T25:00:00Z", "not a valid date"),
        ("NOW-7WEEKS", "unknown date unit 'WEEKS'"),
        ("NOW/FORTNIGHT", "unknown date unit"),
        ("NOW-DAY", "expected +N UNIT, -N UNIT or /UNIT"),
        ("NOW+", "at character 4"),
        ("NOW*2DAYS", "bad date math"),
        ("NOW+1.5DAYS", "bad date math"),
        ("NOW + 1DAY", "bad date math"),
        ("NOW+10000YEARS", "leaves the years 1–9999"),
        ("NOW-3000YEARS", "leaves the years 1–9999"),
        ("NOW+999999999999999999DAYS", "leaves the years 1–9999"),
        ("NOW+9999999999999999999DAYS", "bad date math"),  # 19 digits: refused unread
        ("0001-01-01-1MILLI", "leaves the years 1–9999"),
        ("99999999999999999", "leaves the years 1–9999"),
        ("1614107884399+1DAY", "not a date"),
    ],
)
def test_bad_dates_are_a_400_that_says_why(text: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        resolve_date(text, NOW)
    assert caught.value.status == 400
    assert words in caught.value.message


# ----------------------------------------------------------------------------- gaps


@pytest.mark.parametrize(
    ("gap", "fixed"),
    [
        ("+1HOUR", 3_600_000),
        ("+15MINUTES", 900_000),
        ("+7DAYS", 7 * 86_400_000),
        ("+1SECOND", 1000),
        ("+500MILLIS", 500),
        ("1DAY", 86_400_000),
        ("+1DAY-1HOUR", 82_800_000),
        ("  +1HOUR ", 3_600_000),
    ],
)
def test_fixed_gaps(gap: str, fixed: int) -> None:
    parsed = parse_gap(gap)
    assert parsed.fixed_ms == fixed
    assert parsed.add(NOW) == NOW + fixed


def test_month_and_year_gaps_follow_the_calendar() -> None:
    month = parse_gap("+1MONTH")
    assert month.fixed_ms is None
    starts = [utc(2020, 1, 1)]
    for _ in range(3):
        starts.append(month.add(starts[-1]))
    assert starts == [utc(2020, 1, 1), utc(2020, 2, 1), utc(2020, 3, 1), utc(2020, 4, 1)]
    assert month.add(utc(2020, 1, 31)) == utc(2020, 2, 29)
    assert parse_gap("+1YEAR").add(utc(2020, 2, 29)) == utc(2021, 2, 28)
    assert parse_gap("+1MONTH+2DAYS").add(utc(2021, 1, 1)) == utc(2021, 2, 3)


def test_a_gap_with_rounding_is_a_calendar_gap() -> None:
    gap = parse_gap("+1DAY/DAY")
    assert gap.fixed_ms is None
    assert gap.add(utc(2021, 2, 23, 19)) == utc(2021, 2, 24)


@pytest.mark.parametrize(
    ("gap", "words"),
    [
        ("", "empty date gap"),
        ("+0DAYS", "must be positive"),
        ("-1DAY", "must be positive"),
        ("/DAY", "must be positive"),
        ("+1DAY-25HOURS", "must be positive"),
        ("+1WEEK", "unknown date unit 'WEEK'"),
        ("+1", "bad date math"),
        ("+2.5", "bad date math"),
        ("NOW+1DAY", "bad date math"),
        ("+1DAY junk", "bad date math"),
    ],
)
def test_bad_gaps_are_a_400(gap: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_gap(gap)
    assert words in caught.value.message


def test_a_gap_that_leaves_the_calendar_is_a_400() -> None:
    with pytest.raises(BadRequest, match="leaves the years"):
        parse_gap("+1DAY").add(utc(9999, 12, 31, 12))
    with pytest.raises(BadRequest, match="leaves the years"):
        parse_gap("+1MONTH").add(utc(9999, 12, 31))


# ----------------------------------------------------------------------------- properties

UNITS = ["YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "SECOND", "MILLI"]
_FIXED = {
    "DAY": timedelta(days=1),
    "HOUR": timedelta(hours=1),
    "MINUTE": timedelta(minutes=1),
    "SECOND": timedelta(seconds=1),
    "MILLI": timedelta(milliseconds=1),
}


def oracle_step(dt: datetime, op: tuple[str, int, str]) -> datetime:
    """The same step with datetime arithmetic."""
    kind, n, unit = op
    if kind == "/":
        fields = ["year", "month", "day", "hour", "minute", "second", "microsecond"]
        keep = {"YEAR": 1, "MONTH": 2, "DAY": 3, "HOUR": 4, "MINUTE": 5, "SECOND": 6}.get(unit)
        if keep is None:  # MILLI: already whole milliseconds
            return dt
        reset = {"month": 1, "day": 1, "hour": 0, "minute": 0, "second": 0, "microsecond": 0}
        return dt.replace(**{f: reset[f] for f in fields[keep:]})
    if unit in _FIXED:
        return dt + n * _FIXED[unit]
    months = n * 12 if unit == "YEAR" else n
    index = dt.year * 12 + dt.month - 1 + months
    year, month = index // 12, index % 12 + 1
    return dt.replace(year=year, month=month, day=min(dt.day, calendar.monthrange(year, month)[1]))


def render_op(op: tuple[str, int, str], plural: bool) -> str:
    kind, n, unit = op
    name = unit + ("S" if plural else "")
    return f"/{name}" if kind == "/" else f"{'-' if n < 0 else '+'}{abs(n)}{name}"


_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
).map(lambda dt: dt.replace(microsecond=dt.microsecond // 1000 * 1000))
_ops = st.one_of(
    st.tuples(st.just("+"), st.integers(-400, 400), st.sampled_from(UNITS)),
    st.tuples(st.just("/"), st.just(0), st.sampled_from(UNITS)),
)


@given(_datetimes, st.lists(_ops, max_size=5), st.booleans(), st.booleans())
def test_date_math_agrees_with_datetime_arithmetic(
    start: datetime, ops: list[tuple[str, int, str]], plural: bool, from_now: bool
) -> None:
    expected = start
    for op in ops:
        expected = oracle_step(expected, op)
    math = "".join(render_op(op, plural) for op in ops)
    if from_now:
        got = resolve_date("NOW" + math, ms(start))
    else:
        iso = start.strftime("%Y-%m-%dT%H:%M:%S.") + f"{start.microsecond // 1000:03d}Z"
        got = resolve_date(iso + math, 0)
    assert got == ms(expected)


@given(
    _datetimes,
    st.integers(1, 500),
    st.sampled_from(["DAY", "HOUR", "MINUTE", "SECOND", "MONTH", "YEAR"]),
)
def test_gaps_agree_with_datetime_arithmetic(start: datetime, n: int, unit: str) -> None:
    gap = parse_gap(f"+{n}{unit}S")
    assert gap.add(ms(start)) == ms(oracle_step(start, ("+", n, unit)))


DOCS = Path(__file__).resolve().parent.parent / "docs" / "query.md"
_DOC_ROW = re.compile(r"^\| `([^`]+)` \| (\d{4}-\d\d-\d\dT[\d:.]+Z) \|$", re.MULTILINE)


def test_the_date_math_table_in_the_docs_is_right() -> None:
    rows = _DOC_ROW.findall(DOCS.read_text())
    assert len(rows) >= 5
    for expression, shown in rows:
        assert format_date_ms(resolve_date(expression, NOW)) == shown, expression

"""A brute-force reading of m1lite's query semantics, for tests/test_query_property.py.

The property tests build random queries as a small tree of their own (the Q* classes
below), render it to Solr query text (`render`), send that text through the real parser
and executor, and compare the answer with `Oracle.run` evaluating the same tree over the
flat records read back from the log. Nothing here calls m1lite: the rules are the
documented ones (docs/query.md, docs/api.md "Matching", "Ranges", "Wildcards",
"Sorting", and the facet rules of m1lite/query/facets.py and stats.py), written out
plainly so a slip in the engine's bitmap algebra, its parser or its index shows up as a
difference.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

KEY = "_m1key"
NEGATIVE = ("-", "!", "NOT")  # prefixes meaning "must not" (in AND/OR: NOT)
Prefix = str | None  # "+", one of NEGATIVE, or None

_TOKEN = re.compile(r"\w+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_DATE_LIKE = re.compile(r"NOW|\d{4}-\d{2}-\d{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNIT_MS = {"DAY": 86_400_000, "HOUR": 3_600_000, "MINUTE": 60_000}


# ---------------------------------------------------------------------------- the query tree


@dataclass(frozen=True)
class QAll:
    style: int = 0  # 0 `*`, 1 `*:*`


@dataclass(frozen=True)
class QTerm:
    field: str
    value: str
    style: int = 0  # 0 escaped bare word, 1 quoted, 2 `n:-5` (negative numbers only)
    bare: bool = False  # inside a field group: the value alone


@dataclass(frozen=True)
class QWild:
    field: str
    pattern: str  # literal characters plus `*` / `?`; never starts with a wildcard
    bare: bool = False


@dataclass(frozen=True)
class QExists:
    field: str
    style: int = 0  # `f:*`, `f:[* TO *]`, `f:**`, `f:{* TO *}`
    bare: bool = False


@dataclass(frozen=True)
class QRange:
    field: str
    low: str | None
    high: str | None
    include_low: bool = True
    include_high: bool = True
    style: int = 0  # how ends are written: bare when possible, quoted, or escaped
    bare: bool = False


@dataclass(frozen=True)
class QNot:
    clause: Q
    style: str = "NOT"  # NOT, ! or -


@dataclass(frozen=True)
class QAnd:
    clauses: tuple[tuple[Prefix, Q], ...]
    style: str = "AND"  # AND or &&


@dataclass(frozen=True)
class QOr:
    clauses: tuple[tuple[Prefix, Q], ...]
    style: str = "OR"  # OR or ||


@dataclass(frozen=True)
class QList:
    """Clauses side by side: Lucene's must (+) / must not (-) / should (plain) list."""

    items: tuple[tuple[Prefix, Q], ...]


@dataclass(frozen=True)
class QGroup:
    """`field:( ... )`: bare leaves inside take the group's field."""

    field: str
    inner: Q


@dataclass(frozen=True)
class QBoost:
    clause: Q
    boost: str = "2"


Q = QAll | QTerm | QWild | QExists | QRange | QNot | QAnd | QOr | QList | QGroup | QBoost


# ---------------------------------------------------------------------------- rendering

_OPERATOR_WORDS = frozenset({"AND", "OR", "NOT", "&&", "||"})
_ALWAYS_ESCAPED = frozenset('\\!():^[]"{}~*?')
_ESCAPED_FIRST = frozenset("+-/")  # ordinary inside a word, syntax at its start
_RANGE_BARE = re.compile(r'[^\s\]}\\"]+')
_LIST, _OR, _AND, _UNARY, _ATOM = range(5)  # precedence levels of rendered text


def escape_word(value: str, wild: bool = False) -> str:
    """A bare word for value with the fewest backslashes docs/query.md asks for."""
    out = []
    for i, char in enumerate(value):
        if wild and char in "*?":
            out.append(char)
        elif char.isspace() or char in _ALWAYS_ESCAPED or (i == 0 and char in _ESCAPED_FIRST):
            out.append("\\" + char)
        else:
            out.append(char)
    text = "".join(out)
    return "\\" + text if text in _OPERATOR_WORDS else text


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range_end(value: str | None, style: int) -> str:
    if value is None:
        return "*"
    plain = value not in ("*", "TO") and _RANGE_BARE.fullmatch(value) is not None
    if plain and style != 1:
        return value
    if style == 2 and value:
        return "".join("\\" + c if c.isspace() or c in '\\]}*"' else c for c in value)
    return quote(value)


def render(q: Q) -> str:
    return _render(q)[0]


def _atomic(q: Q) -> str:
    text, level = _render(q)
    return text if level == _ATOM else f"({text})"


def _prefixed(prefix: Prefix, q: Q, minimum: int, in_list: bool = False) -> str:
    """A clause of AND/OR/a list: prefixed ones must be atomic; plain ones need at least
    `minimum` precedence, and in a list a bare NOT needs parentheses (unwrapped, it would
    be a must-not clause rather than a should clause)."""
    if prefix is not None:
        return ("NOT " if prefix == "NOT" else prefix) + _atomic(q)
    text, level = _render(q)
    if level < minimum or (in_list and level == _UNARY):
        return f"({text})"
    return text


def _render(q: Q) -> tuple[str, int]:
    match q:
        case QAll():
            return ("*:*" if q.style else "*"), _ATOM
        case QTerm():
            if q.value == "" or q.style == 1:
                value = quote(q.value)
            elif q.style == 2 and not q.bare and re.fullmatch(r"-[\d.].*", q.value):
                value = q.value  # Lenient `n:-5`, no backslash
            else:
                value = escape_word(q.value)
            return _leaf(q.field, q.bare, value), _ATOM
        case QWild():
            return _leaf(q.field, q.bare, escape_word(q.pattern, wild=True)), _ATOM
        case QExists():
            value = ("*", "[* TO *]", "**", "{* TO *}")[q.style % 4]
            return _leaf(q.field, q.bare, value), _ATOM
        case QRange():
            low, high = _range_end(q.low, q.style), _range_end(q.high, q.style)
            opening = "[" if q.include_low else "{"
            closing = "]" if q.include_high else "}"
            return _leaf(q.field, q.bare, f"{opening}{low} TO {high}{closing}"), _ATOM
        case QNot():
            style = "NOT " if q.style == "NOT" else q.style
            return style + _atomic(q.clause), _UNARY
        case QAnd():
            parts = [_prefixed(p, c, _AND) for p, c in q.clauses]
            return f" {q.style} ".join(parts), _AND
        case QOr():
            parts = [_prefixed(p, c, _OR) for p, c in q.clauses]
            return f" {q.style} ".join(parts), _OR
        case QList():
            return " ".join(_prefixed(p, c, _OR, in_list=True) for p, c in q.items), _LIST
        case QGroup():
            return f"{q.field}:({_render(q.inner)[0]})", _ATOM
        case QBoost():
            # One boost per clause (`a^2^2` is a syntax error, as in Lucene).
            inner = _render(q.clause)[0] if isinstance(q.clause, QBoost) else None
            base = _atomic(q.clause) if inner is None else f"({inner})"
            return f"{base}^{q.boost}", _ATOM
    raise TypeError(q)


def _leaf(name: str, bare: bool, value: str) -> str:
    return value if bare else f"{name}:{value}"


# ---------------------------------------------------------------------------- dates


def iso_ms(text: str) -> int:
    """Epoch ms of an ISO-8601 date or time (no offset: UTC)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def format_iso(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


_ANCHOR = re.compile(
    r"NOW|\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:\d{2})?)?|\d+"
)
_STEP = re.compile(r"([+-])(\d+)(DAY|HOUR|MINUTE)S?|/(DAY|HOUR|MINUTE)")


def date_ms(text: str, now_ms: int) -> int:
    """Date math as docs/query.md describes it (the units the tests use: fixed-length
    days, hours and minutes): an anchor (NOW, ISO, epoch ms), then steps left to right."""
    anchor = _ANCHOR.match(text)
    assert anchor is not None, text
    word = anchor.group()
    ms = now_ms if word == "NOW" else int(word) if word.isdigit() else iso_ms(word)
    position = anchor.end()
    while position < len(text):
        step = _STEP.match(text, position)
        assert step is not None, text
        if step.group(4):
            ms -= ms % UNIT_MS[step.group(4)]
        else:
            amount = int(step.group(2)) * UNIT_MS[step.group(3)]
            ms += amount if step.group(1) == "+" else -amount
        position = step.end()
    return ms


# ---------------------------------------------------------------------------- values


@dataclass
class Values:
    """What one record holds in one field, as the documented matching rules see it."""

    strings: list[str] = field(default_factory=list)  # in record order
    bools: list[bool] = field(default_factory=list)
    numbers: list[float] = field(default_factory=list)  # dates as epoch ms; repeats kept
    words: set[str] = field(default_factory=set)  # text properties
    first_scalar: str | bool | None = None  # first string/boolean (sorting)

    @property
    def empty(self) -> bool:
        return not (self.strings or self.bools or self.numbers or self.words)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def as_number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


def inside(
    value: Any, low: Any, high: Any, include_low: bool = True, include_high: bool = True
) -> bool:
    if low is not None and not (value >= low if include_low else value > low):
        return False
    return high is None or (value <= high if include_high else value < high)


def wildcard_matches(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


class Oracle:
    """Queries, sorting and a subset of facets over the published records, by brute force.

    `types` names the declared properties (date, text, string, double, ...), `now_ms`
    is NOW for date math.
    """

    def __init__(self, records: list[dict[str, Any]], types: dict[str, str], now_ms: int):
        self.records = {record[KEY]: record for record in records}
        self.keys = frozenset(self.records)
        self.types = types
        self.now_ms = now_ms
        self._values: dict[tuple[int, str], Values] = {}
        self._has_numbers: dict[str, bool] = {}

    # -- values

    def values(self, key: int, name: str) -> Values:
        found = self._values.get((key, name))
        if found is None:
            found = self._values[(key, name)] = self._read(self.records[key], name)
        return found

    def _read(self, record: dict[str, Any], name: str) -> Values:
        out = Values()
        if name == KEY:
            out.numbers.append(float(record[KEY]))
            return out
        raw = record.get(name)
        items = [] if raw is None else raw if isinstance(raw, list) else [raw]
        kind = self.types.get(name)
        for item in items:
            if kind == "date":
                out.numbers.append(float(iso_ms(item) if isinstance(item, str) else item))
            elif kind == "text":
                if isinstance(item, str):
                    out.words.update(tokens(item))
            elif isinstance(item, bool):
                out.bools.append(item)
                if out.first_scalar is None:
                    out.first_scalar = item
            elif isinstance(item, str):
                out.strings.append(item)
                if out.first_scalar is None:
                    out.first_scalar = item
            else:
                out.numbers.append(float(item))
        return out

    def has_numbers(self, name: str) -> bool:
        """Whether any visible event holds a number in the field (ranges depend on it)."""
        if name not in self._has_numbers:
            self._has_numbers[name] = any(self.values(k, name).numbers for k in self.keys)
        return self._has_numbers[name]

    def _where(self, name: str, test: Any) -> set[int]:
        return {k for k in self.keys if test(self.values(k, name))}

    # -- queries

    def run(self, q: Q) -> set[int]:
        match q:
            case QAll():
                return set(self.keys)
            case QTerm():
                return self.term(q.field, q.value)
            case QWild():
                return self.wildcard(q.field, q.pattern)
            case QExists():
                return self.exists(q.field)
            case QRange():
                return self.range(q)
            case QNot():
                return set(self.keys) - self.run(q.clause)
            case QAnd():
                result = set(self.keys)
                for prefix, clause in q.clauses:
                    result &= self._signed(prefix, clause)
                return result
            case QOr():
                found: set[int] = set()
                for prefix, clause in q.clauses:
                    found |= self._signed(prefix, clause)
                return found
            case QList():
                must = [c for p, c in q.items if p == "+"]
                should = [c for p, c in q.items if p is None]
                must_not = [c for p, c in q.items if p in NEGATIVE]
                if must:
                    result = set(self.keys)
                    for clause in must:
                        result &= self.run(clause)
                elif should:
                    result = set().union(*(self.run(c) for c in should))
                else:
                    result = set(self.keys)
                for clause in must_not:
                    result -= self.run(clause)
                return result
            case QGroup():
                return self.run(q.inner)
            case QBoost():
                return self.run(q.clause)
        raise TypeError(q)

    def _signed(self, prefix: Prefix, clause: Q) -> set[int]:
        found = self.run(clause)
        return set(self.keys) - found if prefix in NEGATIVE else found

    def term(self, name: str, text: str) -> set[int]:
        kind = self.types.get(name)
        if name == KEY:
            number = as_number(text)
            ok = number is not None and number.is_integer()
            return {k for k in self.keys if ok and k == number}
        if kind == "date":
            ms = date_ms(text, self.now_ms)
            return self._where(name, lambda v: ms in v.numbers)
        if kind == "text":
            wanted = set(tokens(text))
            return self._where(name, lambda v: bool(wanted) and wanted <= v.words)
        number = as_number(text)
        boolean = {"true": True, "false": False}.get(text)
        return self._where(
            name,
            lambda v: (
                text in v.strings
                or (boolean is not None and boolean in v.bools)
                or (number is not None and number in v.numbers)
            ),
        )

    def wildcard(self, name: str, pattern: str) -> set[int]:
        if set(pattern) == {"*"}:
            return self.exists(name)
        if self.types.get(name) == "text":
            lowered = pattern.lower()
            return self._where(name, lambda v: any(wildcard_matches(lowered, w) for w in v.words))
        return self._where(name, lambda v: any(wildcard_matches(pattern, s) for s in v.strings))

    def exists(self, name: str) -> set[int]:
        if name == KEY:
            return set(self.keys)
        return self._where(name, lambda v: not v.empty)

    def range(self, q: QRange) -> set[int]:
        name, low, high = q.field, q.low, q.high
        if low is None and high is None:
            return self.exists(name)
        kind = self.types.get(name)
        if kind == "date" or name == KEY:
            convert: Any = (lambda t: float(date_ms(t, self.now_ms))) if kind == "date" else float
            lo = None if low is None else convert(low)
            hi = None if high is None else convert(high)
            return self._numbers_within(name, lo, hi, q)
        ends = [end for end in (low, high) if end is not None]
        numeric = all(as_number(end) is not None for end in ends)
        has_numbers = self.has_numbers(name)
        found: set[int] = set()
        if numeric:
            lo = None if low is None else as_number(low)
            hi = None if high is None else as_number(high)
            found |= self._numbers_within(name, lo, hi, q)
        elif has_numbers and all(_DATE_LIKE.match(end) for end in ends):
            lo = None if low is None else float(date_ms(low, self.now_ms))
            hi = None if high is None else float(date_ms(high, self.now_ms))
            found |= self._numbers_within(name, lo, hi, q)
        if not numeric or not has_numbers or kind in ("string", "text", "boolean"):

            def strings_inside(v: Values) -> bool:
                pool = v.words if kind == "text" else v.strings
                return any(inside(s, low, high, q.include_low, q.include_high) for s in pool)

            found |= self._where(name, strings_inside)
        return found

    def _numbers_within(self, name: str, lo: Any, hi: Any, q: QRange) -> set[int]:
        return self._where(
            name, lambda v: any(inside(n, lo, hi, q.include_low, q.include_high) for n in v.numbers)
        )

    # -- sorting

    def page(
        self, keys: set[int], sort: list[tuple[str, bool]], start: int, rows: int
    ) -> list[int]:
        """Keys start..start+rows-1 sorted: numbers, then strings (false, true, then code
        point order), then missing, each kind in the asked direction; multi-valued fields
        by their first value; ties by _m1key ascending."""
        ranks: dict[str, dict[tuple[int, Any], int]] = {}
        for name, _descending in sort:
            scalars = {
                self._scalar_key(self.values(k, name).first_scalar)
                for k in self.keys
                if name != KEY and self.values(k, name).first_scalar is not None
            }
            ranks[name] = {value: i for i, value in enumerate(sorted(scalars))}

        def sort_key(key: int) -> tuple[Any, ...]:
            parts: list[Any] = []
            for name, descending in sort:
                sign = -1 if descending else 1
                values = self.values(key, name)
                if values.numbers:
                    parts.append((0, sign * values.numbers[0]))
                elif values.first_scalar is not None:
                    parts.append((1, sign * ranks[name][self._scalar_key(values.first_scalar)]))
                else:
                    parts.append((2, 0))
            return (*parts, key)

        return sorted(keys, key=sort_key)[start : start + rows]

    @staticmethod
    def _scalar_key(value: str | bool | None) -> tuple[int, Any]:
        return (0, value) if isinstance(value, bool) else (1, value)

    # -- facets (terms with statistics, numeric and date ranges)

    def facets(self, request: dict[str, Any], keys: set[int]) -> dict[str, Any]:
        docs = sorted(keys)
        out: dict[str, Any] = {"count": len(docs)}
        self._fill(out, docs, request["facet"])
        return out

    def _fill(self, bucket: dict[str, Any], docs: list[int], children: dict[str, Any]) -> None:
        """Statistics and sub-facets of a bucket; an empty bucket has only its count."""
        if not docs:
            return
        for name, spec in children.items():
            if isinstance(spec, str):
                value = self.stat(spec, docs)
                if value is not None:
                    bucket[name] = value
            elif spec["type"] == "terms":
                bucket[name] = self.terms_facet(spec, docs)
            else:
                bucket[name] = self.range_facet(spec, docs)

    def number_out(self, name: str, value: float) -> Any:
        if self.types.get(name) == "date":
            return format_iso(int(value))
        if self.types.get(name) != "double" and value.is_integer():
            return int(value)
        return float(value)

    def stat(self, text: str, docs: list[int]) -> Any:
        func, _, rest = text.partition("(")
        name = rest.rstrip(")").strip()
        if func == "count":
            return len(docs)
        per_doc = [self.values(k, name) for k in docs]
        numbers = sorted(n for v in per_doc for n in v.numbers)
        scalars: list[tuple[int, Any]] = [(0, b) for v in per_doc for b in v.bools]
        scalars += [(1, s) for v in per_doc for s in v.strings]
        if func == "unique":
            return len(set(scalars)) + len(set(numbers))
        if func in ("min", "max"):
            if numbers:
                return self.number_out(name, numbers[0] if func == "min" else numbers[-1])
            if scalars:
                ordered = sorted(scalars)
                return (ordered[0] if func == "min" else ordered[-1])[1]
            return None
        total = float(sum(numbers))
        if func == "sum":
            return total
        if func == "avg":
            return total / len(numbers) if numbers else 0.0
        raise ValueError(f"the oracle does not know {text}")

    def terms_facet(self, spec: dict[str, Any], docs: list[int]) -> dict[str, Any]:
        """Buckets by count descending, ties in index order (numbers, false, true, strings)."""
        name = spec["field"]
        members: dict[tuple[int, Any], list[int]] = {}
        for key in docs:
            values = self.values(key, name)
            held: list[tuple[int, Any]] = [(0, n) for n in values.numbers]
            held += [(1, b) for b in values.bools] + [(2, s) for s in values.strings]
            for value in dict.fromkeys(held):
                members.setdefault(value, []).append(key)
        order = sorted(members, key=lambda v: (-len(members[v]), v))
        limit = spec.get("limit", 10)
        buckets = []
        for kind, value in order if limit < 0 else order[:limit]:
            shown = self.number_out(name, value) if kind == 0 else value
            bucket: dict[str, Any] = {"val": shown, "count": len(members[(kind, value)])}
            self._fill(bucket, members[(kind, value)], spec.get("facet", {}))
            buckets.append(bucket)
        return {"buckets": buckets}

    def range_facet(self, spec: dict[str, Any], docs: list[int]) -> dict[str, Any]:
        """Buckets [low, low + gap) from start while low < end; without hardend the last
        bucket runs a whole gap past end; `val` is the bucket's start."""
        name = spec["field"]
        label: Any
        start: Any
        end: Any
        if self.types.get(name) == "date":
            start, end = date_ms(spec["start"], self.now_ms), date_ms(spec["end"], self.now_ms)
            gap: Any = date_ms("NOW" + spec["gap"], 0)
            label = format_iso
        else:
            start, end, gap = spec["start"], spec["end"], spec["gap"]
            integral = self.types.get(name) != "double" and all(
                isinstance(v, int) for v in (start, end, gap)
            )
            label = int if integral else float
            if not integral:
                start, end, gap = float(start), float(end), float(gap)
        buckets = []
        low = start
        while low < end:
            high = low + gap
            if high > end and spec.get("hardend"):
                high = end
            members = [
                k for k in docs if any(low <= n < high for n in self.values(k, name).numbers)
            ]
            bucket: dict[str, Any] = {"val": label(low), "count": len(members)}
            self._fill(bucket, members, spec.get("facet", {}))
            buckets.append(bucket)
            low = high
        return {"buckets": buckets}


def assert_same(actual: Any, expected: Any, where: str = "facets") -> None:
    """Equal JSON, floats within 1e-9 and of the same kind (int stays int)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert type(actual) is float, f"{where}: {actual!r} is not a float ({expected!r})"
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9), (
            f"{where}: {actual!r} != {expected!r}"
        )
    else:
        assert type(actual) is type(expected) and actual == expected, (
            f"{where}: {actual!r} != {expected!r}"
        )

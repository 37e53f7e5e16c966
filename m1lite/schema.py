"""The environment schema: typed properties, and coercion of flat events to those types.

m1lite is schemaless by default: an undeclared key is stored as it came. Declaring a property
(`/schema/add`) makes the server check and normalise that key on ingest, and tells the query
engine how to compare it (numbers and dates as numbers, not as strings).

Coercion rules, per declared type:

- integer: an int in the signed 64-bit range, an integral float (`3.0`), or a string of
  ASCII digits with an optional sign. Booleans are refused: `true` is not 1.
- double: an int or float, or a decimal/exponent string; always stored as a float.
  NaN and infinities are refused (JSON cannot carry them back).
- boolean: `true`/`false`, or those words as strings in any case.
- date: an ISO-8601 string (`2021-02-23T19:18:04.399Z`, fraction optional, `Z` or `±hh:mm`
  offset optional meaning UTC when absent, date-only means midnight UTC), or epoch
  milliseconds as a number or a string of digits. Stored as ISO-8601 UTC with exactly three
  fraction digits and `Z`, the form the hosted product shows for `_m1.receivedUTC`.
- string and text: strings as they are; numbers become their decimal text and booleans
  `true`/`false` (the JSON spelling, so `f:true` finds them).

Strings are stripped of surrounding whitespace before being read as numbers, booleans or dates
(CSV cells often carry it); string and text values are never altered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date
from typing import Any, Final

import msgspec

from m1lite.errors import BadRequest, Conflict

__all__ = [
    "BUILTIN_PROPERTIES",
    "PROPERTY_TYPES",
    "Property",
    "Schema",
    "format_date_ms",
    "parse_date_ms",
]

PROPERTY_TYPES: Final = ("string", "text", "integer", "double", "date", "boolean")


class Property(msgspec.Struct):
    name: str
    type: str
    multi: bool = False
    description: str | None = None
    required: bool = False


# Always present, survive /schema/wipe, and are filled by the server, not by clients.
BUILTIN_PROPERTIES: Final = (
    Property("_m1key", "integer", description="record id, assigned by the server", required=True),
    Property(
        "_m1rand", "double", description="uniform random in [0,1), for sampling", required=True
    ),
    Property("_m1.ip", "string", description="client IP address"),
    Property("_m1.receivedUTC", "date", description="time the server received the event"),
)
_BUILTINS: Final = {p.name: p for p in BUILTIN_PROPERTIES}

_ALLOWED_KEYS: Final = frozenset(
    # `multivalued` and `large` are the legacy spelling seen in old GET /schema output; taking
    # them lets such output be posted back.
    ("name", "type", "multi", "description", "required", "multivalued", "large")
)

# ---------------------------------------------------------------------------- dates

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MS_PER_DAY: Final = 86_400_000
_MIN_MS: Final = (date.min.toordinal() - _EPOCH_ORDINAL) * _MS_PER_DAY
_MAX_MS: Final = (date.max.toordinal() - _EPOCH_ORDINAL + 1) * _MS_PER_DAY - 1

# re.ASCII: without it \d would accept Arabic-Indic and other Unicode digits.
_ISO_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?)?",
    re.ASCII,
)
_INT_RE: Final = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1


def parse_date_ms(value: Any) -> int | None:
    """Epoch milliseconds for an ISO-8601 string or an epoch-ms number/digit string.

    None when `value` is not a date m1lite understands, or falls outside years 1–9999.
    Fractions beyond milliseconds are truncated, not rounded, so a time never moves into the
    next second.
    """
    kind = type(value)
    if kind is int:
        return value if _MIN_MS <= value <= _MAX_MS else None
    if kind is float:
        if not math.isfinite(value):
            return None
        ms = math.floor(value)
        return ms if _MIN_MS <= ms <= _MAX_MS else None
    if kind is not str:
        return None
    text = value.strip()
    match = _ISO_RE.fullmatch(text)
    if match is None:
        if _INT_RE.fullmatch(text):
            ms = int(text)
            return ms if _MIN_MS <= ms <= _MAX_MS else None
        return None
    year, month, day, hour, minute, second, fraction, _z, sign, off_h, off_m = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    h = int(hour) if hour else 0
    m = int(minute) if minute else 0
    s = int(second) if second else 0
    if h > 23 or m > 59 or s > 59:
        return None
    ms = ((days * 24 + h) * 60 + m) * 60_000 + s * 1000
    if fraction:
        ms += int((fraction + "00")[:3])
    if sign:
        oh = int(off_h)
        om = int(off_m) if off_m else 0
        if oh > 23 or om > 59:
            return None
        offset_ms = (oh * 60 + om) * 60_000
        ms = ms - offset_ms if sign == "+" else ms + offset_ms
    return ms if _MIN_MS <= ms <= _MAX_MS else None


def format_date_ms(ms: int) -> str:
    """`2021-02-23T19:18:04.399Z` for epoch milliseconds (years 1–9999)."""
    days, rest = divmod(ms, _MS_PER_DAY)
    d = date.fromordinal(days + _EPOCH_ORDINAL)
    seconds, millis = divmod(rest, 1000)
    minutes, s = divmod(seconds, 60)
    h, m = divmod(minutes, 60)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{h:02d}:{m:02d}:{s:02d}.{millis:03d}Z"


# ---------------------------------------------------------------------------- converters

# A converter returns the typed value, or _INVALID. A sentinel rather than an exception keeps
# permissive ingest of dirty data cheap.
_INVALID: Final = object()
_Converter = Callable[[Any], Any]


def _to_integer(v: Any) -> Any:
    kind = type(v)
    if kind is int:
        return v if _I64_MIN <= v <= _I64_MAX else _INVALID
    if kind is float:
        if v.is_integer() and _I64_MIN <= v <= _I64_MAX:
            return int(v)
        return _INVALID
    if kind is str:
        text = v.strip()
        if _INT_RE.fullmatch(text):
            n = int(text)
            return n if _I64_MIN <= n <= _I64_MAX else _INVALID
    return _INVALID


def _to_double(v: Any) -> Any:
    kind = type(v)
    if kind is float:
        return v if math.isfinite(v) else _INVALID
    if kind is int:
        try:
            return float(v)
        except OverflowError:
            return _INVALID
    if kind is str:
        text = v.strip()
        # The regex, not float() alone: float() also takes "nan", "inf" and "1_000".
        if _FLOAT_RE.fullmatch(text):
            f = float(text)
            return f if math.isfinite(f) else _INVALID
    return _INVALID


def _to_boolean(v: Any) -> Any:
    if type(v) is bool:
        return v
    if type(v) is str:
        word = v.strip().lower()
        if word == "true":
            return True
        if word == "false":
            return False
    return _INVALID


def _to_date(v: Any) -> Any:
    if type(v) is bool:
        return _INVALID
    ms = parse_date_ms(v)
    if ms is None:
        return _INVALID
    text = format_date_ms(ms)
    # Hand back the caller's own object when it was already canonical, so coerce can tell
    # that nothing changed.
    return v if text == v else text


def _to_string(v: Any) -> Any:
    kind = type(v)
    if kind is str:
        return v
    if kind is bool:
        return "true" if v else "false"
    if kind is int or kind is float:
        return str(v)
    return _INVALID


_CONVERTERS: Final[dict[str, _Converter]] = {
    "string": _to_string,
    "text": _to_string,
    "integer": _to_integer,
    "double": _to_double,
    "date": _to_date,
    "boolean": _to_boolean,
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------- schema


class Schema:
    """The built-in properties plus the user's, and the coercion they imply.

    Changes build a new table and swap it in with one assignment, so a `coerce` running on
    another thread sees either the old schema or the new one, never half of an `add`.
    """

    def __init__(self) -> None:
        self._user: dict[str, Property] = {}
        self._typed: dict[str, tuple[Property, _Converter]] = {}

    @classmethod
    def from_list(cls, properties: list[dict[str, Any]]) -> Schema:
        """Rebuild a schema from `to_list()` output (built-in entries are checked, not added)."""
        schema = cls()
        schema.add(properties)
        return schema

    def to_list(self) -> list[dict[str, Any]]:
        """The GET /schema body: built-ins first, then user properties in definition order."""
        return [
            {
                "name": p.name,
                "type": p.type,
                "multi": p.multi,
                "description": p.description,
                "required": p.required,
            }
            for p in (*BUILTIN_PROPERTIES, *self._user.values())
        ]

    def get(self, name: str) -> Property | None:
        """The declared property `name`, built-in or user; None when undeclared."""
        return _BUILTINS.get(name) or self._user.get(name)

    def __len__(self) -> int:
        return len(BUILTIN_PROPERTIES) + len(self._user)

    def add(self, properties: list[Any]) -> None:
        """Add or update properties from /schema/add maps; all or nothing.

        Re-adding a property with the same type updates `multi` and `description`; a
        different type is a 409, because values already stored were checked against the old
        type. Re-posting a built-in unchanged is accepted (so GET /schema output can be sent
        back), changing one is a 409.
        """
        if not isinstance(properties, list):
            raise BadRequest("properties must be a JSON array of property objects")
        pending = dict(self._user)
        for index, entry in enumerate(properties):
            prop = _validate(index, entry)
            builtin = _BUILTINS.get(prop.name)
            if builtin is not None:
                if prop.type != builtin.type or prop.multi != builtin.multi:
                    raise Conflict(
                        f"properties[{index}]: '{prop.name}' is a built-in {builtin.type} "
                        "property and cannot be redefined"
                    )
                continue
            if prop.required:
                raise BadRequest(
                    f"properties[{index}].required: only built-in properties are required; "
                    "m1lite does not enforce required user properties"
                )
            old = pending.get(prop.name)
            if old is not None and old.type != prop.type:
                raise Conflict(
                    f"properties[{index}]: '{prop.name}' is already a {old.type} property; "
                    f"wipe the schema to redefine it as {prop.type}"
                )
            pending[prop.name] = prop
        self._install(pending)

    def wipe(self) -> None:
        """Forget every user property; the built-ins stay. Stored data is not touched."""
        self._install({})

    def _install(self, user: dict[str, Property]) -> None:
        typed = {name: (p, _CONVERTERS[p.type]) for name, p in user.items()}
        by_type: dict[str, set[str]] = {}
        for p in (*BUILTIN_PROPERTIES, *user.values()):
            by_type.setdefault(p.type, set()).add(p.name)
        self._user = user
        self._typed = typed
        self._names_by_type = {kind: frozenset(names) for kind, names in by_type.items()}

    def names_of_type(self, kind: str) -> frozenset[str]:
        """Every declared property of one type (the index treats dates and text specially)."""
        return self._names_by_type.get(kind, frozenset())

    def coerce(self, flat: dict[str, Any], permissive: bool) -> dict[str, Any]:
        """Check and normalise the declared keys of one flat event.

        Undeclared keys pass through. Built-in properties are not coerced: the server sets
        them after this step and overwrites whatever the client sent. Strict mode raises
        BadRequest for the first value that does not fit; permissive mode drops that value
        (one element of a multi-valued list, or the whole key) and keeps the rest of the
        event. Returns `flat` itself when nothing changed; never modifies `flat`.
        """
        typed = self._typed
        if not typed:
            return flat
        out = flat
        for name, value in flat.items():
            entry = typed.get(name)
            if entry is None:
                continue
            prop, convert = entry
            new = _coerce_value(name, value, prop, convert, permissive)
            if new is value:
                continue
            if out is flat:
                out = dict(flat)
            if new is _INVALID:
                del out[name]
            else:
                out[name] = new
        return out


def _coerce_value(
    name: str, value: Any, prop: Property, convert: _Converter, permissive: bool
) -> Any:
    """The coerced value, `value` itself if already fine, or _INVALID to drop the key."""
    if value is None:
        return _INVALID
    if type(value) is list:
        if not prop.multi:
            if permissive:
                return _INVALID
            raise BadRequest(
                f"property '{name}' is a single {prop.type}, but the event has a list "
                f"of {len(value)} values"
            )
        changed = False
        result = []
        for item in value:
            new = convert(item)
            if new is _INVALID:
                if not permissive:
                    raise BadRequest(_misfit(name, prop, item))
                changed = True
                continue
            if new is not item:
                changed = True
            result.append(new)
        if not changed:
            return value
        return result if result else _INVALID
    new = convert(value)
    if new is _INVALID and not permissive:
        raise BadRequest(_misfit(name, prop, value))
    if prop.multi and new is not _INVALID:
        return [new]
    return new


def _misfit(name: str, prop: Property, value: Any) -> str:
    return f"property '{name}' is of type {prop.type}; {_show(value)} is not a valid {prop.type}"


def _validate(index: int, entry: Any) -> Property:
    where = f"properties[{index}]"
    if not isinstance(entry, dict):
        raise BadRequest(f"{where} must be an object with name and type")
    unknown = [key for key in entry if key not in _ALLOWED_KEYS]
    if unknown:
        raise BadRequest(
            f"{where}: unknown key {unknown[0]!r} (allowed: name, type, multi, description, "
            "required)"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(f"{where}.name must be a non-empty string")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise BadRequest(f"{where}.name {name!r} has an empty part between dots")
    kind = entry.get("type")
    if kind not in PROPERTY_TYPES:
        raise BadRequest(
            f"{where}.type must be one of {', '.join(PROPERTY_TYPES)} (got {_show(kind)})"
        )
    multi = _optional_bool(entry, "multi", where)
    legacy_multi = _optional_bool(entry, "multivalued", where)
    if multi is not None and legacy_multi is not None and multi != legacy_multi:
        raise BadRequest(f"{where}: multi and multivalued disagree")
    _optional_bool(entry, "large", where)  # legacy key: checked, then ignored
    description = entry.get("description")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"{where}.description must be a string or null")
    return Property(
        name=name,
        type=kind,
        multi=bool(multi if multi is not None else legacy_multi),
        description=description,
        required=bool(_optional_bool(entry, "required", where)),
    )


def _optional_bool(entry: dict[str, Any], key: str, where: str) -> bool | None:
    value = entry.get(key)
    if value is None or type(value) is bool:
        return value
    raise BadRequest(f"{where}.{key} must be true or false (got {_show(value)})")

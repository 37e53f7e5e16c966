from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m1lite.errors import BadRequest, Conflict
from m1lite.schema import PROPERTY_TYPES, Property, Schema, format_date_ms, parse_date_ms

BUILTIN_LIST = [
    {"name": "_m1key", "type": "integer", "multi": False, "required": True},
    {"name": "_m1rand", "type": "double", "multi": False, "required": True},
    {"name": "_m1.ip", "type": "string", "multi": False, "required": False},
    {"name": "_m1.receivedUTC", "type": "date", "multi": False, "required": False},
]


def _shape(listing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: p[k] for k in ("name", "type", "multi", "required")} for p in listing]


def schema_with(*props: dict[str, Any]) -> Schema:
    schema = Schema()
    schema.add(list(props))
    return schema


# ----------------------------------------------------------------- definitions


def test_new_schema_lists_the_builtins_first() -> None:
    listing = Schema().to_list()
    assert _shape(listing) == BUILTIN_LIST
    assert all(set(p) == {"name", "type", "multi", "description", "required"} for p in listing)


def test_added_properties_follow_builtins_in_order() -> None:
    schema = schema_with(
        {"name": "myTags", "type": "string", "multi": True, "description": "Important tags."},
        {"name": "myBoolean", "type": "boolean"},
    )
    listing = schema.to_list()
    assert listing[4:] == [
        {
            "name": "myTags",
            "type": "string",
            "multi": True,
            "description": "Important tags.",
            "required": False,
        },
        {
            "name": "myBoolean",
            "type": "boolean",
            "multi": False,
            "description": None,
            "required": False,
        },
    ]
    assert schema.get("myTags") == Property("myTags", "string", True, "Important tags.")
    assert schema.get("nope") is None


def test_every_documented_type_is_accepted() -> None:
    schema = schema_with(*({"name": f"p.{t}", "type": t} for t in PROPERTY_TYPES))
    assert [p["type"] for p in schema.to_list()[4:]] == list(PROPERTY_TYPES)


def test_to_list_round_trips_through_from_list() -> None:
    schema = schema_with({"name": "n", "type": "integer", "multi": True, "description": "d"})
    again = Schema.from_list(schema.to_list())
    assert again.to_list() == schema.to_list()


def test_readding_same_type_updates_description_and_multi() -> None:
    schema = schema_with({"name": "n", "type": "integer"})
    schema.add([{"name": "n", "type": "integer", "multi": True, "description": "now multi"}])
    assert schema.get("n") == Property("n", "integer", True, "now multi")
    assert len(schema.to_list()) == 5


def test_redefining_type_is_a_conflict_and_changes_nothing() -> None:
    schema = schema_with({"name": "n", "type": "integer"})
    with pytest.raises(Conflict, match=r"properties\[1\].*'n' is already a integer"):
        schema.add([{"name": "m", "type": "string"}, {"name": "n", "type": "string"}])
    assert schema.get("m") is None
    assert schema.get("n") == Property("n", "integer")


def test_conflict_within_one_call() -> None:
    with pytest.raises(Conflict, match=r"properties\[1\]"):
        schema_with({"name": "n", "type": "integer"}, {"name": "n", "type": "date"})


def test_builtins_can_be_reposted_but_not_changed() -> None:
    schema = Schema()
    schema.add([{"name": "_m1key", "type": "integer", "required": True}])
    with pytest.raises(Conflict, match="built-in"):
        schema.add([{"name": "_m1key", "type": "string"}])
    with pytest.raises(Conflict, match="built-in"):
        schema.add([{"name": "_m1.receivedUTC", "type": "date", "multi": True}])


def test_legacy_multivalued_spelling_is_accepted() -> None:
    schema = schema_with({"name": "t", "type": "string", "multivalued": True, "large": False})
    assert schema.get("t") == Property("t", "string", multi=True)


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"name": "x"}, r"properties must be a JSON array"),
        (["x"], r"properties\[0\] must be an object"),
        ([{"type": "string"}], r"properties\[0\]\.name must be a non-empty string"),
        ([{"name": "", "type": "string"}], r"properties\[0\]\.name must be a non-empty"),
        ([{"name": 5, "type": "string"}], r"properties\[0\]\.name must be a non-empty"),
        ([{"name": "a..b", "type": "string"}], r"properties\[0\]\.name 'a\.\.b' has an empty"),
        ([{"name": "ok", "type": "string"}, {"name": "b"}], r"properties\[1\]\.type must be one"),
        ([{"name": "a", "type": "int"}], r"string, text, integer, double, date, boolean.*'int'"),
        ([{"name": "a", "type": "string", "multi": "yes"}], r"properties\[0\]\.multi must be"),
        ([{"name": "a", "type": "string", "description": 3}], r"\.description must be a string"),
        ([{"name": "a", "type": "string", "mutli": True}], r"unknown key 'mutli'"),
        ([{"name": "a", "type": "string", "required": True}], r"\.required: only built-in"),
    ],
)
def test_invalid_definitions_name_entry_and_field(properties: Any, message: str) -> None:
    schema = Schema()
    with pytest.raises(BadRequest, match=message):
        schema.add(properties)
    assert len(schema.to_list()) == 4


def test_wipe_keeps_only_builtins_and_stops_coercion() -> None:
    schema = schema_with({"name": "n", "type": "integer"})
    schema.wipe()
    assert _shape(schema.to_list()) == BUILTIN_LIST
    assert schema.coerce({"n": "x"}, permissive=False) == {"n": "x"}


# ----------------------------------------------------------------- coercion


def coerced(ptype: str, value: Any, multi: bool = False) -> Any:
    schema = schema_with({"name": "p", "type": ptype, "multi": multi})
    return schema.coerce({"p": value}, permissive=False)["p"]


@pytest.mark.parametrize(
    ("ptype", "value", "expected"),
    [
        ("integer", 42, 42),
        ("integer", "-17", -17),
        ("integer", " 8 ", 8),
        ("integer", 3.0, 3),
        ("integer", 2**63 - 1, 2**63 - 1),
        ("double", 1.5, 1.5),
        ("double", 2, 2.0),
        ("double", "2.5e3", 2500.0),
        ("double", "-.5", -0.5),
        ("boolean", True, True),
        ("boolean", "false", False),
        ("boolean", "TRUE", True),
        ("string", "hello", "hello"),
        ("string", 12, "12"),
        ("string", 1.5, "1.5"),
        ("string", True, "true"),
        ("text", " spaced ", " spaced "),
        ("text", 7, "7"),
        ("date", "2021-02-23T19:18:04.399Z", "2021-02-23T19:18:04.399Z"),
        ("date", "2021-02-23T19:18:04Z", "2021-02-23T19:18:04.000Z"),
        ("date", "2021-02-23T19:18:04.3991234Z", "2021-02-23T19:18:04.399Z"),
        ("date", "2021-02-23T20:18:04.5+01:00", "2021-02-23T19:18:04.500Z"),
        ("date", "2021-02-23T14:48:04-0430", "2021-02-23T19:18:04.000Z"),
        ("date", "2021-02-23T19:18", "2021-02-23T19:18:00.000Z"),
        ("date", "2021-02-23", "2021-02-23T00:00:00.000Z"),
        ("date", 1618474796186, "2021-04-15T08:19:56.186Z"),
        ("date", "1618474796186", "2021-04-15T08:19:56.186Z"),
        ("date", 0, "1970-01-01T00:00:00.000Z"),
        ("date", -1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_values_are_coerced_to_the_declared_type(ptype: str, value: Any, expected: Any) -> None:
    result = coerced(ptype, value)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("ptype", "value"),
    [
        ("integer", True),
        ("integer", "1.5"),
        ("integer", 1.5),
        ("integer", "1_000"),
        ("integer", "٣"),
        ("integer", 2**63),
        ("integer", ""),
        ("double", "nan"),
        ("double", "inf"),
        ("double", False),
        ("double", "1,5"),
        ("double", "1e999"),
        ("boolean", 1),
        ("boolean", "yes"),
        ("date", "2021-02-30T00:00:00Z"),
        ("date", "2021-02-23T25:00:00Z"),
        ("date", "23/02/2021"),
        ("date", "2021-02-23T19:18:04+25:00"),
        ("date", True),
        ("date", 10**20),
        ("string", {"a": 1}),
    ],
)
def test_misfits_are_refused_in_strict_mode(ptype: str, value: Any) -> None:
    schema = schema_with({"name": "p.q", "type": ptype})
    with pytest.raises(BadRequest, match=f"property 'p.q' is of type {ptype}"):
        schema.coerce({"p.q": value, "other": 1}, permissive=False)


def test_permissive_mode_drops_only_the_bad_value() -> None:
    schema = schema_with({"name": "n", "type": "integer"}, {"name": "d", "type": "date"})
    event = {"n": "many", "d": 0, "free": "kept"}
    assert schema.coerce(event, permissive=True) == {
        "d": "1970-01-01T00:00:00.000Z",
        "free": "kept",
    }
    assert event == {"n": "many", "d": 0, "free": "kept"}


def test_multi_property_wraps_scalars_and_coerces_each_element() -> None:
    assert coerced("integer", "5", multi=True) == [5]
    assert coerced("integer", [1, "2", 3.0], multi=True) == [1, 2, 3]


def test_multi_property_with_a_bad_element() -> None:
    schema = schema_with({"name": "t", "type": "integer", "multi": True})
    with pytest.raises(BadRequest, match="property 't' is of type integer; 'x'"):
        schema.coerce({"t": [1, "x"]}, permissive=False)
    assert schema.coerce({"t": [1, "x", 2]}, permissive=True) == {"t": [1, 2]}
    assert schema.coerce({"t": ["x"], "k": 1}, permissive=True) == {"k": 1}


def test_list_for_single_valued_property() -> None:
    schema = schema_with({"name": "n", "type": "integer"})
    with pytest.raises(BadRequest, match="'n' is a single integer, but the event has a list of 2"):
        schema.coerce({"n": [1, 2]}, permissive=False)
    assert schema.coerce({"n": [1, 2], "k": 1}, permissive=True) == {"k": 1}


def test_undeclared_and_builtin_keys_pass_through() -> None:
    schema = schema_with({"name": "n", "type": "integer"})
    event = {"n": 1, "x": "1", "_m1.receivedUTC": "whatever", "_m1key": "k"}
    assert schema.coerce(event, permissive=False) == event


def test_unchanged_event_is_returned_as_is() -> None:
    schema = schema_with({"name": "n", "type": "integer"}, {"name": "t", "type": "string"})
    event = {"n": 1, "t": "x"}
    assert schema.coerce(event, permissive=False) is event
    assert Schema().coerce(event, permissive=False) is event


def test_coerced_event_keeps_key_order() -> None:
    schema = schema_with({"name": "b", "type": "integer"})
    assert list(schema.coerce({"a": 1, "b": "2", "c": 3}, permissive=False)) == ["a", "b", "c"]


# ----------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.001Z", 1),
        ("2021-02-23T19:18:04.399Z", 1614107884399),
        ("2021-02-23 19:18:04.399z", 1614107884399),
        ("2021-02-23T19:18:04,399Z", 1614107884399),
        (1614107884399, 1614107884399),
        (1614107884399.9, 1614107884399),
        ("0001-01-01T00:00:00Z", -62135596800000),
        ("9999-12-31T23:59:59.999Z", 253402300799999),
        ("hello", None),
        ("2021-13-01", None),
        (None, None),
        (False, None),
        (float("nan"), None),
        ([1], None),
    ],
)
def test_parse_date_ms(value: Any, expected: int | None) -> None:
    assert parse_date_ms(value) == expected


def test_format_date_ms_is_the_lake_format() -> None:
    assert format_date_ms(1614107884399) == "2021-02-23T19:18:04.399Z"
    assert format_date_ms(-62135596800000) == "0001-01-01T00:00:00.000Z"


@given(st.integers(min_value=-62135596800000, max_value=253402300799999))
def test_dates_agree_with_datetime_and_round_trip(ms: int) -> None:
    text = format_date_ms(ms)
    oracle = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    # Not strftime: its %Y does not zero-pad years before 1000 on Linux.
    expected = (
        f"{oracle.year:04d}-{oracle.month:02d}-{oracle.day:02d}T{oracle.hour:02d}:"
        f"{oracle.minute:02d}:{oracle.second:02d}.{oracle.microsecond // 1000:03d}Z"
    )
    assert text == expected
    assert parse_date_ms(text) == ms
    assert coerced("date", ms) == text

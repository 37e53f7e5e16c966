from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m1lite.errors import BadRequest
from m1lite.flatten import check_depth, flatten, unflatten


def test_nested_objects_become_dotted_keys() -> None:
    doc = {"type": "view", "event": {"type": "click", "element": {"id": "buy", "x": 3}}}
    assert flatten(doc) == {
        "type": "view",
        "event.type": "click",
        "event.element.id": "buy",
        "event.element.x": 3,
    }


def test_scalar_values_keep_their_json_types() -> None:
    doc = {"s": "x", "i": 1, "f": 1.5, "t": True, "b": False, "z": 0, "e": ""}
    assert flatten(doc) == doc


def test_arrays_of_scalars_stay_lists_even_with_one_element() -> None:
    assert flatten({"tags": ["a", "b"], "one": [1], "m": {"n": [1.5, 2]}}) == {
        "tags": ["a", "b"],
        "one": [1],
        "m.n": [1.5, 2],
    }


def test_null_empty_object_and_empty_array_mean_absent() -> None:
    doc: dict[str, Any] = {
        "a": None,
        "b": {},
        "c": [],
        "d": {"e": None, "f": {}},
        "g": [None, "x", None],
    }
    assert flatten(doc) == {"g": ["x"]}


def test_array_of_objects_gathers_values_per_key_in_array_order() -> None:
    doc = {"items": [{"id": 1, "tag": "x"}, {"id": 2}, {"id": 3, "tag": "y"}]}
    assert flatten(doc) == {"items.id": [1, 2, 3], "items.tag": ["x", "y"]}


def test_array_of_objects_with_one_object_still_gives_lists() -> None:
    assert flatten({"items": [{"id": 7}]}) == {"items.id": [7]}


def test_nested_arrays_are_spread_into_one_list() -> None:
    doc = {"m": [[1, 2], [3], [[4]]], "o": [{"t": ["a", "b"]}, {"t": "c"}]}
    assert flatten(doc) == {"m": [1, 2, 3, 4], "o.t": ["a", "b", "c"]}


def test_mixed_array_keeps_scalars_under_its_own_key() -> None:
    assert flatten({"a": [1, {"b": 2}, None, 3]}) == {"a": [1, 3], "a.b": [2]}


def test_deep_objects_inside_arrays() -> None:
    doc = {"a": [{"b": {"c": 1, "d": [{"e": "x"}]}}, {"b": {"c": 2}}]}
    assert flatten(doc) == {"a.b.c": [1, 2], "a.b.d.e": ["x"]}


def test_repeated_key_later_path_wins() -> None:
    assert flatten({"a.b": 1, "a": {"b": 2}}) == {"a.b": 2}
    assert flatten({"a": {"b": 2}, "a.b": 1}) == {"a.b": 1}
    assert flatten({"a": [{"b": 1}], "a.b": [2]}) == {"a.b": [2]}


def test_flatten_does_not_modify_its_input() -> None:
    doc: dict[str, Any] = {"a": [{"b": 1}], "c": {"d": [1, None]}, "e": ["x"]}
    before = {"a": [{"b": 1}], "c": {"d": [1, None]}, "e": ["x"]}
    flat = flatten(doc)
    flat["a.b"].append(99)
    flat["c.d"].append(99)
    assert doc == before


def test_unflatten_rebuilds_nesting() -> None:
    flat = {"type": "view", "event.type": "click", "event.el.id": "buy", "tags": ["a"]}
    assert unflatten(flat) == {
        "type": "view",
        "event": {"type": "click", "el": {"id": "buy"}},
        "tags": ["a"],
    }


def test_unflatten_keeps_a_key_whose_prefix_is_also_a_key() -> None:
    flat = {"a.b": 2, "a": 1, "x.y": 3, "x.y.z": 4}
    nested = unflatten(flat)
    assert nested == {"a": 1, "a.b": 2, "x": {"y": 3}, "x.y.z": 4}
    assert flatten(nested) == flat


# Keys without dots, and non-empty: those are the documents flatten can invert exactly.
_keys = st.text(st.characters(exclude_characters="."), min_size=1, max_size=6)
_scalars = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
)
_docs = st.recursive(
    st.dictionaries(_keys, _scalars, min_size=1, max_size=5),
    lambda children: st.dictionaries(_keys, st.one_of(_scalars, children), min_size=1, max_size=5),
    max_leaves=30,
)


@given(_docs)
def test_unflatten_inverts_flatten(doc: dict[str, Any]) -> None:
    assert unflatten(flatten(doc)) == doc


def test_check_depth_accepts_exactly_the_limit() -> None:
    check_depth({"a": {"b": [1]}}, 3)
    check_depth("scalar", 0)
    check_depth({}, 1)


@pytest.mark.parametrize(
    "value",
    [{"a": {"b": {"c": 1}}}, [[[[1]]]], {"a": [{"b": 1}]}, {"ok": 1, "deep": [[{"x": {}}]]}],
)
def test_check_depth_rejects_one_level_too_many(value: Any) -> None:
    with pytest.raises(BadRequest, match="nesting deeper than 2 levels"):
        check_depth(value, 2)


def test_check_depth_handles_hostile_depth_without_recursion_error() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = {"a": value}
    with pytest.raises(BadRequest, match="deeper than 32"):
        check_depth(value, 32)
    check_depth(value, 200_000)

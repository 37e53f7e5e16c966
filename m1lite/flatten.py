"""Nested JSON events ⇄ the flat, dotted-key records the lake stores.

The lake (like Solr underneath the hosted product) has no nesting: `{"a": {"b": 1}}` is stored
as `{"a.b": 1}` and an array is a multi-valued field. These rules decide what a client reads
back, so they are part of the contract:

- Objects become dotted keys; an empty object contributes nothing.
- `null` means "field absent" and is dropped, also inside arrays.
- An array of scalars stays a list, even with one element (the client said "several").
  An empty array is dropped like an empty object: a field with no values is absent.
- An array that holds objects (or nested arrays) is spread out: each object is flattened and
  its values are gathered per dotted key, in array order, into lists. So
  `{"items": [{"id": 1, "tag": "x"}, {"id": 2}]}` becomes
  `{"items.id": [1, 2], "items.tag": ["x"]}`. Which id went with which tag is lost; that is
  the price of a flat multi-valued model, and it is what lets `items.id:2` find the event.
  Scalars directly in such an array stay under the array's own key.
- Two paths can spell the same key (`{"a.b": 1, "a": {"b": 2}}`); the later one in document
  order wins, as in a JSON object with a repeated key.

`flatten` recurses once per nested object and refuses documents deeper than `max_depth`
levels on the way (one pass on the ingest path instead of two); `check_depth` does the same
check alone, without recursion.
"""

from __future__ import annotations

from typing import Any

from m1lite.errors import BadRequest

__all__ = ["check_depth", "flatten", "unflatten"]


def flatten(doc: dict[str, Any], max_depth: int = 64) -> dict[str, Any]:
    """Return the flat form of `doc` (see the module docstring for the rules).

    Raises BadRequest when objects/arrays nest deeper than `max_depth` levels (counted as in
    `check_depth`). Lists of plain scalars are shared with `doc`, not copied: events are
    decoded fresh for every request, and copying every tag list would cost time on the
    ingest path.
    """
    out: dict[str, Any] = {}
    try:
        if max_depth < 1:
            raise _TooDeep
        _walk(doc, "", out, max_depth - 1)
    except _TooDeep:
        raise BadRequest(f"nesting deeper than {max_depth} levels", code="too_deep") from None
    return out


class _TooDeep(Exception):
    """Raised deep inside the walk; `flatten` turns it into the one BadRequest."""


def _walk(obj: dict[str, Any], prefix: str, out: dict[str, Any], room: int) -> None:
    """`room`: how many more levels of nesting below `obj` are allowed."""
    for key, value in obj.items():
        if value is None:
            continue
        name = prefix + key
        kind = type(value)
        if kind is dict:
            if value:
                if not room:
                    raise _TooDeep
                _walk(value, name + ".", out, room - 1)
        elif kind is list:
            if not value:
                continue
            if not room:
                raise _TooDeep
            # One pass decides whether the list can be kept as is: the common case is a
            # short list of strings or numbers.
            for item in value:
                if item is None or type(item) is dict or type(item) is list:
                    break
            else:
                out[name] = value
                continue
            gathered: dict[str, list[Any]] = {}
            _gather_list(value, name, gathered, room - 1)
            # Assign (not merge) so that "later path wins" holds for arrays as well.
            out.update(gathered)
        else:
            out[name] = value


def _gather_list(values: list[Any], name: str, acc: dict[str, list[Any]], room: int) -> None:
    """Spread one array into `acc`, appending every leaf value to its dotted key's list."""
    for item in values:
        if item is None:
            continue
        kind = type(item)
        if kind is dict or kind is list:
            if not room:
                raise _TooDeep
            if kind is dict:
                _gather_dict(item, name + ".", acc, room - 1)
            else:
                _gather_list(item, name, acc, room - 1)
        else:
            bucket = acc.get(name)
            if bucket is None:
                acc[name] = [item]
            else:
                bucket.append(item)


def _gather_dict(obj: dict[str, Any], prefix: str, acc: dict[str, list[Any]], room: int) -> None:
    for key, value in obj.items():
        if value is None:
            continue
        name = prefix + key
        kind = type(value)
        if kind is dict or kind is list:
            if not room:
                raise _TooDeep
            if kind is dict:
                _gather_dict(value, name + ".", acc, room - 1)
            else:
                _gather_list(value, name, acc, room - 1)
        else:
            bucket = acc.get(name)
            if bucket is None:
                acc[name] = [value]
            else:
                bucket.append(value)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Rebuild nesting from dotted keys: `{"a.b": 1}` → `{"a": {"b": 1}}`.

    The inverse of `flatten` for events without arrays of objects. Values (lists included)
    are kept as they are; arrays of objects are not reassembled because `flatten` dropped the
    pairing. When a key's dotted prefix is itself a key (`{"a": 1, "a.b": 2}`), nesting would
    lose one of them, so such a key stays at the top level, spelled with its dots; flattening
    the result gives back `flat` unchanged.
    """
    conflicting = _keys_under_a_leaf(flat)
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if "." not in key or key in conflicting:
            # No collision is possible here: had this plain key a dotted child, that child is
            # in `conflicting` and was kept flat, so no dict was built under this name.
            out[key] = value
            continue
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _keys_under_a_leaf(flat: dict[str, Any]) -> set[str]:
    """Keys that have a proper dotted prefix which is also a key of `flat`."""
    found: set[str] = set()
    for key in flat:
        dot = key.find(".")
        while dot != -1:
            if key[:dot] in flat:
                found.add(key)
                break
            dot = key.find(".", dot + 1)
    return found


def check_depth(value: Any, max_depth: int) -> None:
    """Raise BadRequest if objects/arrays nest more than `max_depth` levels.

    `{"a": 1}` and `[1]` are one level deep, `{"a": {"b": 1}}` two. Iterative, so a hostile
    10,000-level document costs a loop, not a RecursionError (which would surface as a 500).
    """
    if type(value) is not dict and type(value) is not list:
        return
    if max_depth < 1:
        raise BadRequest(f"nesting deeper than {max_depth} levels", code="too_deep")
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        children = container.values() if type(container) is dict else container
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= max_depth:
                    raise BadRequest(f"nesting deeper than {max_depth} levels", code="too_deep")
                stack.append((child, depth + 1))

"""Session documents: reading `/session/update` ops, merging upserts, and the
`sessionTimeout` event a lapsed session becomes.

Pure functions over JSON values, shared by the built-in flusher and `m1lite flush`
(which does the same over the public API).

Merge rules (contract.md, Session stores): an upsert map is deep-merged into the stored
document: objects merge key by key, any other value (string, number, boolean, array)
replaces what was there, and `null` removes the key (as in JSON Merge Patch, RFC 7386),
so a client can clear a field. Top-level keys starting with `_m1` are the server's and
are dropped from upserts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from m1lite.errors import BadRequest
from m1lite.schema import parse_date_ms

SERVER_PREFIX = "_m1"
TIMEOUT_TYPE = "sessionTimeout"
MAX_ID_BYTES = 400  # a session id longer than this is surely not one
MAX_OPS = 10_000  # upserts plus deletes in one request


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_ops")


@dataclass(slots=True)
class Upsert:
    session_id: str
    patch: dict[str, Any]  # the upsert map without server (`_m1*`) keys


@dataclass(slots=True)
class Delete:
    session_id: str


Op = Upsert | Delete


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a nested document (`session.id`), or a top-level key
    spelled with its dots; None when absent."""
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            node = None
            break
        node = node[part]
    if node is None and "." in dotted:
        return doc.get(dotted)
    return node


def set_path(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted path in a nested document, creating objects on the way; where a
    non-object value is in the way, the key is set at the top level with its dots (it
    flattens to the same name)."""
    parts = dotted.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            doc[dotted] = value
            return
        node = child
    node[parts[-1]] = value


def id_text(value: Any, where: str) -> str:
    """A session id as the string it is compared as: strings as they are, integers in
    decimal (the legacy samples use numbers, the current docs UUIDs)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        raise _bad(f"{where} must be a string or an integer, not {_kind(value)}")
    if not text:
        raise _bad(f"{where} must not be empty")
    if len(text.encode()) > MAX_ID_BYTES:
        raise _bad(f"{where} is longer than {MAX_ID_BYTES} bytes")
    return text


def read_ops(ops: Any, key: str) -> list[Op]:
    """The request's ops, checked, in order; any problem is a 400 naming where it is."""
    if not isinstance(ops, list):
        raise _bad('ops must be a JSON array such as [{"upsert": [...]}, {"delete": [...]}]')
    found: list[Op] = []
    for position, op in enumerate(ops):
        where = f"ops[{position}]"
        if not isinstance(op, dict):
            raise _bad(f"{where} must be an object with upsert and/or delete")
        unknown = sorted(set(op) - {"upsert", "delete"})
        if unknown:
            raise _bad(f"{where} has unknown key {unknown[0]!r}; an op holds upsert and/or delete")
        if "upsert" not in op and "delete" not in op:
            raise _bad(f"{where} needs upsert and/or delete")
        upserts = op.get("upsert", [])
        if not isinstance(upserts, list):
            raise _bad(f"{where}.upsert must be an array of objects")
        for number, item in enumerate(upserts):
            item_where = f"{where}.upsert[{number}]"
            if not isinstance(item, dict):
                raise _bad(f"{item_where} must be an object, not {_kind(item)}")
            value = get_path(item, key)
            if value is None:
                raise _bad(f"{item_where} has no {key} (the session store's key)")
            session_id = id_text(value, f"{item_where}.{key}")
            patch = {k: v for k, v in item.items() if not k.startswith(SERVER_PREFIX)}
            found.append(Upsert(session_id, patch))
        deletes = op.get("delete", [])
        if not isinstance(deletes, list):
            raise _bad(f"{where}.delete must be an array of session ids")
        for number, value in enumerate(deletes):
            found.append(Delete(id_text(value, f"{where}.delete[{number}]")))
        if len(found) > MAX_OPS:
            raise _bad(f"at most {MAX_OPS:,} upserts and deletes per request")
    return found


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", bool: "a boolean", float: "a number"}.get(
        type(value), type(value).__name__
    )


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Merge `patch` into `base` (modified and returned; see the module docstring)."""
    for name, value in patch.items():
        if value is None:
            base.pop(name, None)
        elif type(value) is dict:
            current = base.get(name)
            base[name] = deep_merge(current if type(current) is dict else {}, value)
        else:
            base[name] = value
    return base


def duration_ms(doc: dict[str, Any], last_ms: int, created_ms: int | None) -> int | None:
    """How long the session lasted: lastUpdated minus `session.start` (epoch ms or an ISO
    date) when the client sent one that is not after lastUpdated, else minus the time the
    server first saw the session; None when neither is known."""
    start = parse_date_ms(get_path(doc, "session.start"))
    if start is not None and start <= last_ms:
        return last_ms - start
    if created_ms is not None and created_ms <= last_ms:
        return last_ms - created_ms
    return None


def to_timeout_event(doc: dict[str, Any], last_ms: int, created_ms: int | None) -> dict[str, Any]:
    """Turn a session document (modified in place and returned) into its
    `sessionTimeout` event: the last document, with top-level `type` and `event.type`
    set to `sessionTimeout`, `session.end` = lastUpdated and `session.durationMs`."""
    duration = duration_ms(doc, last_ms, created_ms)
    doc["type"] = TIMEOUT_TYPE
    set_path(doc, "event.type", TIMEOUT_TYPE)
    set_path(doc, "session.end", last_ms)
    if duration is not None:
        set_path(doc, "session.durationMs", duration)
    return doc

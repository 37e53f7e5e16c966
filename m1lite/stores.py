"""Data stores and session stores: what the environment template defines.

On one machine every data store indexes every published event (MinusOneDB's
stores are replicas of the lake's index); a store can be disabled (queries on it
are refused) or have autocommit switched off (queries see it as of the moment it
was switched off, until it is switched on again). `shards` and `replicas` are
kept for compatibility and ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from m1lite.errors import BadRequest, Conflict, NotFound
from m1lite.storage.meta import MetaStore

AUTOCOMMIT_S = 1  # the bound on visibility for async writes; commits happen every 50 ms
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class DataStore(msgspec.Struct):
    name: str
    type: str = "standard"
    active: bool = True
    autocommit: bool = True
    frozen_upto: int | None = None  # with autocommit off: events below this key are visible
    shards: int = 1
    replicas: int = 1

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "active": self.active,
            "autocommit": AUTOCOMMIT_S if self.autocommit else 0,
            "shards": self.shards,
            "replicas": self.replicas,
        }


class SessionStoreDef(msgspec.Struct):
    name: str
    key: str = "session.id"
    timeoutSeconds: int = 30
    flushStore: str = "index"
    shards: int = 1
    replicas: int = 1

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "timeoutSeconds": self.timeoutSeconds,
            "flushStore": self.flushStore,
            "shards": self.shards,
            "replicas": self.replicas,
        }


BUILTIN_TEMPLATES: dict[str, dict[str, Any]] = {
    "events": {"environment": {"stores": [{"name": "index"}], "sessionStores": []}},
    "eventsSessionStore": {
        "environment": {
            "stores": [{"name": "index"}],
            "sessionStores": [
                {"store": "stash", "key": "session.id", "timeoutSeconds": 30, "flushStore": "index"}
            ],
        }
    },
}


def load_template(name_or_path: str) -> dict[str, Any]:
    if name_or_path in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(BUILTIN_TEMPLATES)
        raise ValueError(f"template {name_or_path!r} is neither {known} nor a readable file")
    try:
        template = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"template {path} is not valid JSON: {exc}") from exc
    if not isinstance(template, dict):
        raise ValueError(f"template {path} must be a JSON object")
    return template


def _store_name(entry: dict[str, Any], what: str) -> str:
    name = entry.get("store", entry.get("name"))
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS or len(name) > 64:
        raise BadRequest(f"{what} needs a name of letters, digits, _ and - (got {name!r})")
    return name


def _positive_int(entry: dict[str, Any], key: str, default: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"{key} must be a positive integer")
    return value


class Stores:
    def __init__(self, meta: MetaStore) -> None:
        self._meta = meta
        saved = meta.get("stores", {"data": [], "sessions": []})
        self.data: dict[str, DataStore] = {
            s["name"]: msgspec.convert(s, DataStore) for s in saved["data"]
        }
        self.sessions: dict[str, SessionStoreDef] = {
            s["name"]: msgspec.convert(s, SessionStoreDef) for s in saved["sessions"]
        }

    @property
    def is_new(self) -> bool:
        return not self.data and not self.sessions

    def add_from_template(self, template: dict[str, Any]) -> list[str]:
        """Add the template's stores (existing names are a 409); returns the names added."""
        environment = template.get("environment", template)
        if not isinstance(environment, dict):
            raise BadRequest("the template needs an 'environment' object")
        stores = environment.get("stores") or []
        sessions = environment.get("sessionStores") or []
        if not isinstance(stores, list) or not isinstance(sessions, list):
            raise BadRequest("'stores' and 'sessionStores' must be arrays")
        new_data: dict[str, DataStore] = {}
        new_sessions: dict[str, SessionStoreDef] = {}
        for entry in stores:
            if not isinstance(entry, dict):
                raise BadRequest("each entry of 'stores' must be an object")
            name = _store_name(entry, "a data store")
            new_data[name] = DataStore(
                name=name,
                type=str(entry.get("type", "standard")),
                shards=_positive_int(entry, "shards", 1),
                replicas=_positive_int(entry, "replicas", 1),
            )
        for entry in sessions:
            if not isinstance(entry, dict):
                raise BadRequest("each entry of 'sessionStores' must be an object")
            name = _store_name(entry, "a session store")
            flush = entry.get("flushStore", "index")
            if not isinstance(flush, str):
                raise BadRequest("flushStore must name a data store")
            new_sessions[name] = SessionStoreDef(
                name=name,
                key=str(entry.get("key", "session.id")),
                timeoutSeconds=_positive_int(entry, "timeoutSeconds", 30),
                flushStore=flush,
                shards=_positive_int(entry, "shards", 1),
                replicas=_positive_int(entry, "replicas", 1),
            )
        for name in [*new_data, *new_sessions]:
            if name in self.data or name in self.sessions:
                raise Conflict(f"a store named {name} already exists", code="store_exists")
        for definition in new_sessions.values():
            if definition.flushStore not in self.data and definition.flushStore not in new_data:
                raise BadRequest(
                    f"session store {definition.name} flushes into unknown data store "
                    f"{definition.flushStore}"
                )
        self.data.update(new_data)
        self.sessions.update(new_sessions)
        self._save()
        return [*new_data, *new_sessions]

    def data_store(self, name: str) -> DataStore:
        store = self.data.get(name)
        if store is None:
            raise NotFound(f"no data store named {name}", code="no_such_store")
        return store

    def session_store(self, name: str) -> SessionStoreDef:
        store = self.sessions.get(name)
        if store is None:
            raise NotFound(f"no session store named {name}", code="no_such_store")
        return store

    def set_active(self, name: str, active: bool) -> None:
        if name in self.sessions and name not in self.data:
            return  # session stores are always active on one machine
        self.data_store(name).active = active
        self._save()

    def set_autocommit(self, name: str, on: bool, next_key: int) -> None:
        store = self.data_store(name)
        if store.autocommit == on:
            return
        store.autocommit = on
        store.frozen_upto = None if on else next_key
        self._save()

    def _save(self) -> None:
        self._meta.put(
            "stores",
            {
                "data": [msgspec.to_builtins(s) for s in self.data.values()],
                "sessions": [msgspec.to_builtins(s) for s in self.sessions.values()],
            },
        )

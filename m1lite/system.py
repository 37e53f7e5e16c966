"""System properties: the environment's settings that admins change at run time.

Values are kept and answered as strings (as MinusOneDB's `GET /system` does);
typed views (`cors_hosts`, `geo_enabled`, ...) are cached for the hot path and
recomputed on every change. Unknown names are accepted for application use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from m1lite.errors import BadRequest
from m1lite.storage.meta import MetaStore

DEFAULTS: dict[str, str] = {
    "cors": "",
    "geo": "true",
    "token-expire-ms": "86400000",
    "password-min-length": "8",
    "property-ip": "_m1.ip",
    "property-received": "_m1.receivedUTC",
    "property-session-id": "session.id",
    "publish-permissive": "true",
}
READ_ONLY = frozenset({"init"})
_BOOLEAN = frozenset({"geo", "publish-permissive"})
_POSITIVE_INT = frozenset({"token-expire-ms", "password-min-length"})
_PROPERTY_NAMES = frozenset({"property-ip", "property-received", "property-session-id"})
_MAX_VALUE_CHARS = 65_536


def parse_host_list(value: Any) -> list[str]:
    """A comma list or a JSON array of host names."""
    if isinstance(value, list):
        items = value
    else:
        text = str(value).strip()
        if text.startswith("["):
            try:
                items = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise BadRequest(f"not a valid JSON array: {exc}") from None
            if not isinstance(items, list):
                raise BadRequest("expected a JSON array of host names")
        else:
            items = text.split(",")
    hosts = []
    for item in items:
        if not isinstance(item, str):
            raise BadRequest("host names must be strings")
        host = item.strip()
        if host and host not in hosts:
            hosts.append(host)
    return hosts


class SystemProperties:
    def __init__(self, meta: MetaStore, *, initialised: bool) -> None:
        self._meta = meta
        stored = meta.get("system", {})
        self._values: dict[str, str] = {**DEFAULTS, **stored}
        self._initialised = initialised
        self._refresh()

    def set_initialised(self, value: bool) -> None:
        self._initialised = value

    def all(self) -> dict[str, str]:
        return {**self._values, "init": "true" if self._initialised else "false"}

    def get(self, name: str) -> str | None:
        return self.all().get(name)

    def set_many(self, updates: Mapping[str, Any]) -> None:
        new = dict(self._values)
        for name, value in updates.items():
            new[name] = self._validate(name, value)
        self._meta.put("system", new)
        self._values = new
        self._refresh()

    def _validate(self, name: str, value: Any) -> str:
        if name in READ_ONLY:
            raise BadRequest(f"system property {name} is read-only", code="read_only")
        if not name or len(name) > 128:
            raise BadRequest("invalid system property name")
        if name == "cors":
            return ",".join(parse_host_list(value))
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        text = text.strip()
        if len(text) > _MAX_VALUE_CHARS:
            raise BadRequest(f"value of {name} is longer than {_MAX_VALUE_CHARS} characters")
        if name in _BOOLEAN:
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise BadRequest(f"{name} must be true or false")
            return lowered
        if name in _POSITIVE_INT:
            if not text.isdigit() or int(text) <= 0:
                raise BadRequest(f"{name} must be a positive integer")
            return str(int(text))
        if name in _PROPERTY_NAMES and not text:
            raise BadRequest(f"{name} must name a property")
        return text

    def _refresh(self) -> None:
        v = self._values
        self.cors_hosts: list[str] = parse_host_list(v["cors"])
        self.geo_enabled = v["geo"] == "true"
        self.permissive = v["publish-permissive"] == "true"
        self.token_expire_ms = int(v["token-expire-ms"])
        self.password_min_length = int(v["password-min-length"])
        self.property_ip = v["property-ip"]
        self.property_received = v["property-received"]
        self.property_session_id = v["property-session-id"]

    def add_cors(self, hosts: list[str]) -> None:
        self.set_many({"cors": [*self.cors_hosts, *hosts]})

    def remove_cors(self, hosts: list[str]) -> None:
        drop = {h.lower() for h in hosts}
        self.set_many({"cors": [h for h in self.cors_hosts if h.lower() not in drop]})

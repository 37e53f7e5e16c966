"""Turning client items into lake records: validate, flatten, stamp, locate, type.

This is the ingest hot path; it runs once per event on the event loop, so it
does one pass over each item and caches what repeats (the geo fields of an IP).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from m1lite.enrich.geo import GeoLookup
from m1lite.errors import BadRequest, PayloadTooLarge
from m1lite.flatten import flatten
from m1lite.schema import Schema
from m1lite.storage.log import encode_record
from m1lite.system import SystemProperties

_GEO_PREFIX = "_m1.geo."
_GEO_CACHE_MAX = 65_536
# JSON allows integers of any size; the log (msgpack) and the schema's integer type hold
# signed 64-bit. A bigger one must be refused here: in the writer it would fail the whole
# group commit, losing other clients' events that were already acknowledged.


_second_prefix: tuple[int, str] = (-1, "")


def received_utc(now_s: float | None = None) -> str:
    """ISO-8601 with milliseconds and Z, e.g. 2021-02-23T19:18:04.399Z."""
    global _second_prefix
    now_s = time.time() if now_s is None else now_s
    second = int(now_s)
    if _second_prefix[0] != second:  # strftime once a second, not once a request
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _second_prefix = (second, stamp)
    return f"{_second_prefix[1]}{int((now_s - second) * 1000):03d}Z"


class Enricher:
    def __init__(
        self,
        system: SystemProperties,
        schema: Schema,
        geo: GeoLookup | None,
        *,
        max_depth: int,
        max_properties: int,
    ) -> None:
        self.system = system
        self.schema = schema
        self.geo = geo
        self.max_depth = max_depth
        self.max_properties = max_properties
        self._geo_fields: dict[str, dict[str, Any]] = {}

    def geo_fields(self, ip: str) -> dict[str, Any]:
        """`_m1.geo.*` for an IP (empty when unknown or geo is off), cached per IP."""
        if self.geo is None or not self.system.geo_enabled:
            return {}
        fields = self._geo_fields.get(ip)
        if fields is None:
            found = self.geo.lookup(ip) or {}
            fields = {_GEO_PREFIX + name: value for name, value in found.items()}
            if len(self._geo_fields) >= _GEO_CACHE_MAX:
                self._geo_fields.clear()  # rare; a simple bound beats LRU bookkeeping here
            self._geo_fields[ip] = fields
        return fields

    def records(self, items: list[Any], client_ip: str) -> Enriched:
        """Lake records for a /write's items, the stamp they share (IP, receive time,
        geo: the writer indexes those once per request) and their msgpack encodings.
        Any bad item fails the request, never the group commit it would join."""
        system = self.system
        stamp = {system.property_ip: client_ip, system.property_received: received_utc()}
        stamp.update(self.geo_fields(client_ip))
        permissive = system.permissive
        rand = random.random
        records: list[dict[str, Any]] = []
        encoded: list[bytes] = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(
                    f"items[{position}] must be a JSON object, not {type(item).__name__}",
                    code="invalid_item",
                )
            # Client-sent _m1* values are the server's to set.
            for key in [k for k in item if k.startswith("_m1")]:
                del item[key]
            record = flatten(item, self.max_depth)
            if len(record) > self.max_properties:
                raise PayloadTooLarge(
                    f"items[{position}] has {len(record)} properties; "
                    f"at most {self.max_properties} are accepted",
                    code="too_many_properties",
                )
            record.update(stamp)
            record["_m1rand"] = rand()
            record = self.schema.coerce(record, permissive)
            try:
                encoded.append(encode_record(record))
            except OverflowError:
                raise BadRequest(
                    f"items[{position}] holds an integer that does not fit in 64 bits "
                    "(send it as a string or a float)",
                    code="integer_out_of_range",
                ) from None
            records.append(record)
        return Enriched(records, stamp, encoded)


@dataclass(slots=True)
class Enriched:
    """What the writer takes: records, their shared stamp, and their encodings."""

    records: list[dict[str, Any]]
    shared: dict[str, Any]
    encoded: list[bytes]

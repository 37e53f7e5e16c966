"""GeoIP lookups that produce MinusOneDB's ``_m1.geo`` sub-fields.

The field names mirror the GeoLite2-City CSV columns because that is what MinusOneDB
exposes. Missing string values become ``""`` (as MinusOneDB does) so a field keeps one
type across events; missing numeric values are omitted instead, since there is no
neutral number (0,0 is a real place in the Gulf of Guinea).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import maxminddb
from maxminddb.errors import InvalidDatabaseError

__all__ = ["GeoDatabaseError", "GeoLookup"]

LOCALE = "en"

# Distinguishes "not cached" from a cached None (address not in the database).
_MISS: Any = object()


class GeoDatabaseError(Exception):
    """The GeoIP database is missing, unreadable, corrupt or closed."""


def _section(record: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = record.get(key)
    return value if isinstance(value, Mapping) else {}


def _name(section: Mapping[str, Any]) -> str:
    names = section.get("names")
    if isinstance(names, Mapping):
        value = names.get(LOCALE)
        if isinstance(value, str):
            return value
    return ""


def _str(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    # metro_code is an integer in the database but a string-typed field for us.
    return "" if value is None else str(value)


def _to_geo(record: Mapping[str, Any], network: str) -> dict[str, object]:
    """Flatten one GeoIP2-City record into ``_m1.geo`` fields."""
    continent = _section(record, "continent")
    country = _section(record, "country")
    registered = _section(record, "registered_country")
    city = _section(record, "city")
    location = _section(record, "location")
    postal = _section(record, "postal")
    traits = _section(record, "traits")
    subs_raw = record.get("subdivisions")
    subs = [s for s in subs_raw if isinstance(s, Mapping)] if isinstance(subs_raw, list) else []
    sub1: Mapping[str, Any] = subs[0] if subs else {}
    sub2: Mapping[str, Any] = subs[1] if len(subs) > 1 else {}

    geo: dict[str, object] = {
        "continent_name": _name(continent),
        "continent_code": _str(continent, "code"),
        "country_name": _name(country),
        "country_iso_code": _str(country, "iso_code"),
        "is_in_european_union": bool(country.get("is_in_european_union", False)),
        "subdivision_1_name": _name(sub1),
        "subdivision_1_iso_code": _str(sub1, "iso_code"),
        "subdivision_2_name": _name(sub2),
        "subdivision_2_iso_code": _str(sub2, "iso_code"),
        "city_name": _name(city),
        "postal_code": _str(postal, "code"),
        "metro_code": _str(location, "metro_code"),
        "time_zone": _str(location, "time_zone"),
        "network": network,
        "is_anonymous_proxy": bool(traits.get("is_anonymous_proxy", False)),
        "is_satellite_provider": bool(traits.get("is_satellite_provider", False)),
        "locale_code": LOCALE,
    }
    lat = location.get("latitude")
    lon = location.get("longitude")
    if isinstance(lat, int | float) and isinstance(lon, int | float):
        geo["latitude"] = float(lat)
        geo["longitude"] = float(lon)
        geo["position"] = f"{float(lat)},{float(lon)}"
    radius = location.get("accuracy_radius")
    if isinstance(radius, int):
        geo["accuracy_radius"] = radius
    geoname_id = city.get("geoname_id", country.get("geoname_id"))
    if isinstance(geoname_id, int):
        geo["geoname_id"] = geoname_id
    registered_id = registered.get("geoname_id")
    if isinstance(registered_id, int):
        geo["registered_country_geoname_id"] = registered_id
    return geo


class GeoLookup:
    """Looks up IP addresses in a MaxMind DB (GeoIP2/GeoLite2 City) file.

    Results are cached per address string in a bounded LRU. A cache hit returns the
    *same* dict object as the first lookup, so callers must treat results as read-only
    (copy before mutating). Safe to share between threads.
    """

    def __init__(self, path: str | Path, cache_size: int = 65536) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._path = str(path)
        try:
            self._reader = maxminddb.open_database(self._path, maxminddb.MODE_AUTO)
        except FileNotFoundError as exc:
            raise GeoDatabaseError(f"GeoIP database not found: {self._path}") from exc
        except (OSError, InvalidDatabaseError, ValueError) as exc:
            raise GeoDatabaseError(
                f"cannot open GeoIP database {self._path}: not a valid MaxMind DB file ({exc})"
            ) from exc
        self._metadata = self._reader.metadata()
        self._ipv4_only = self._metadata.ip_version == 4
        self._cache_size = cache_size
        self._cache: dict[str, dict[str, object] | None] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def build_date(self) -> str:
        """The database build date as ``YYYY-MM-DD`` (UTC)."""
        return datetime.fromtimestamp(self._metadata.build_epoch, tz=UTC).date().isoformat()

    @property
    def database_type(self) -> str:
        """The database's self-declared type, e.g. ``GeoIP2-City``."""
        return str(self._metadata.database_type)

    def lookup(self, ip: str) -> dict[str, object] | None:
        """Return the ``_m1.geo`` fields for ``ip``, or None if unknown or invalid.

        Raises GeoDatabaseError if the database is closed or its record is corrupt.
        """
        if self._closed:
            raise GeoDatabaseError(f"GeoIP database is closed: {self._path}")
        if self._cache_size:
            with self._lock:
                hit = self._cache.pop(ip, _MISS)
                if hit is not _MISS:
                    self._cache[ip] = hit  # re-insert: dicts keep insertion order = recency
                    return hit
        result = self._resolve(ip)
        if self._cache_size:
            with self._lock:
                self._cache[ip] = result
                if len(self._cache) > self._cache_size:
                    del self._cache[next(iter(self._cache))]
        return result

    def _resolve(self, ip: str) -> dict[str, object] | None:
        try:
            addr = ipaddress.ip_address(ip.strip())
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.ipv4_mapped is not None:
                # Report the IPv4 network, not ::ffff:a.b.c.d/127.
                addr = addr.ipv4_mapped
            elif self._ipv4_only:
                return None
        try:
            record, prefix_len = self._reader.get_with_prefix_len(addr)
        except InvalidDatabaseError as exc:
            raise GeoDatabaseError(f"corrupt record for {ip} in {self._path}: {exc}") from exc
        if not isinstance(record, Mapping):
            return None
        network = ipaddress.ip_network((addr, prefix_len), strict=False)
        return _to_geo(record, str(network))

    def close(self) -> None:
        """Release the database file; later lookups raise GeoDatabaseError."""
        if not self._closed:
            self._closed = True
            self._reader.close()
            with self._lock:
                self._cache.clear()

    def __enter__(self) -> GeoLookup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

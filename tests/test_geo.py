"""Tests for GeoLookup against MaxMind's published GeoIP2-City test database.

Expected values were read from the database itself (it is fake data, pinned by sha256 in
tests/data/fetch_geoip_test_db.py), not from any real-world geography.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from m1lite.enrich.geo import GeoDatabaseError, GeoLookup

DATA_DIR = Path(__file__).parent / "data"
TEST_DB = DATA_DIR / "GeoIP2-City-Test.mmdb"


def _ensure_test_db() -> Path:
    # The Makefile fetches it too; this keeps a bare `pytest` run working.
    if not TEST_DB.exists():
        spec = importlib.util.spec_from_file_location(
            "fetch_geoip_test_db", DATA_DIR / "fetch_geoip_test_db.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.fetch(TEST_DB)
    return TEST_DB


@pytest.fixture(scope="session")
def db_path() -> Path:
    return _ensure_test_db()


@pytest.fixture
def geo(db_path: Path) -> Iterator[GeoLookup]:
    lookup = GeoLookup(db_path)
    yield lookup
    lookup.close()


def test_london_full_record(geo: GeoLookup) -> None:
    assert geo.lookup("81.2.69.142") == {
        "continent_name": "Europe",
        "continent_code": "EU",
        "country_name": "United Kingdom",
        "country_iso_code": "GB",
        "registered_country_geoname_id": 6252001,
        "is_in_european_union": False,
        "subdivision_1_name": "England",
        "subdivision_1_iso_code": "ENG",
        "subdivision_2_name": "",
        "subdivision_2_iso_code": "",
        "city_name": "London",
        "postal_code": "",
        "metro_code": "",
        "time_zone": "Europe/London",
        "latitude": 51.5142,
        "longitude": -0.0931,
        "position": "51.5142,-0.0931",
        "accuracy_radius": 10,
        "network": "81.2.69.142/31",
        "geoname_id": 2643743,
        "is_anonymous_proxy": False,
        "is_satellite_provider": False,
        "locale_code": "en",
    }


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        (
            "216.160.83.56",
            {
                "city_name": "Milton",
                "country_iso_code": "US",
                "subdivision_1_iso_code": "WA",
                "subdivision_1_name": "Washington",
                "latitude": 47.2513,
                "longitude": -122.3149,
                "network": "216.160.83.56/29",
                "time_zone": "America/Los_Angeles",
                "continent_code": "NA",
                "continent_name": "North America",
                "postal_code": "98354",
                "metro_code": "819",
                "accuracy_radius": 22,
                "geoname_id": 5803556,
            },
        ),
        (
            "2.125.160.216",
            {
                "city_name": "Boxford",
                "country_iso_code": "GB",
                "subdivision_1_iso_code": "ENG",
                "subdivision_2_iso_code": "WBK",
                "subdivision_2_name": "West Berkshire",
                "latitude": 51.75,
                "longitude": -1.25,
                "position": "51.75,-1.25",
                "network": "2.125.160.216/29",
                "time_zone": "Europe/London",
                "continent_code": "EU",
                "postal_code": "OX1",
                "registered_country_geoname_id": 3017382,
            },
        ),
        (
            "89.160.20.112",
            {
                "city_name": "Linköping",
                "country_iso_code": "SE",
                "country_name": "Sweden",
                "is_in_european_union": True,
                "subdivision_1_iso_code": "E",
                "subdivision_1_name": "Östergötland County",
                "latitude": 58.4167,
                "longitude": 15.6167,
                "network": "89.160.20.112/28",
                "time_zone": "Europe/Stockholm",
                "continent_code": "EU",
                "accuracy_radius": 76,
            },
        ),
        (
            "175.16.199.0",
            {
                "city_name": "Changchun",
                "country_iso_code": "CN",
                "subdivision_1_iso_code": "22",
                "subdivision_1_name": "Jilin Sheng",
                "latitude": 43.88,
                "longitude": 125.3228,
                "network": "175.16.199.0/24",
                "time_zone": "Asia/Harbin",
                "continent_code": "AS",
                "continent_name": "Asia",
            },
        ),
    ],
)
def test_known_cities(geo: GeoLookup, ip: str, expected: dict[str, object]) -> None:
    result = geo.lookup(ip)
    assert result is not None
    assert {key: result.get(key) for key in expected} == expected


def test_ipv6_without_city_uses_country_geoname_id(geo: GeoLookup) -> None:
    result = geo.lookup("2001:218::1")
    assert result is not None
    assert result["country_iso_code"] == "JP"
    assert result["city_name"] == ""
    assert result["network"] == "2001:218::/32"
    assert result["geoname_id"] == 1861060  # Japan
    assert result["time_zone"] == "Asia/Tokyo"


def test_ipv4_mapped_reports_ipv4_network(geo: GeoLookup) -> None:
    result = geo.lookup("::ffff:81.2.69.142")
    assert result is not None
    assert result["city_name"] == "London"
    assert result["network"] == "81.2.69.142/31"


def test_record_without_location_omits_numeric_fields(geo: GeoLookup) -> None:
    # 2.3.3.0/24 carries only a continent in the test database.
    result = geo.lookup("2.3.3.7")
    assert result is not None
    assert result["continent_code"] == "EU"
    assert result["country_iso_code"] == ""
    assert result["time_zone"] == ""
    assert result["network"] == "2.3.3.0/24"
    for key in (
        "latitude",
        "longitude",
        "position",
        "accuracy_radius",
        "geoname_id",
        "registered_country_geoname_id",
    ):
        assert key not in result


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.0.0.1", "::1"])
def test_not_found(geo: GeoLookup, ip: str) -> None:
    assert geo.lookup(ip) is None


@pytest.mark.parametrize("ip", ["not-an-ip", "", "999.1.1.1", "1.2.3.4/24", "[::1]"])
def test_invalid_address(geo: GeoLookup, ip: str) -> None:
    assert geo.lookup(ip) is None


def test_cache_returns_same_object(geo: GeoLookup) -> None:
    first = geo.lookup("81.2.69.142")
    assert first is not None
    assert geo.lookup("81.2.69.142") is first


def test_cache_is_bounded_lru(db_path: Path) -> None:
    with GeoLookup(db_path, cache_size=2) as geo:
        london = geo.lookup("81.2.69.142")
        milton = geo.lookup("216.160.83.56")
        assert geo.lookup("81.2.69.142") is london  # London is now most recent
        geo.lookup("89.160.20.112")  # evicts Milton, the least recent
        assert geo.lookup("81.2.69.142") is london
        again = geo.lookup("216.160.83.56")
        assert again == milton
        assert again is not milton


def test_cache_disabled(db_path: Path) -> None:
    with GeoLookup(db_path, cache_size=0) as geo:
        first = geo.lookup("81.2.69.142")
        second = geo.lookup("81.2.69.142")
        assert first == second
        assert first is not second


def test_negative_cache_size_rejected(db_path: Path) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        GeoLookup(db_path, cache_size=-1)


def test_metadata(geo: GeoLookup) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", geo.build_date)
    assert geo.build_date == "2025-04-18"
    assert geo.database_type == "GeoIP2-City"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError, match="not found"):
        GeoLookup(tmp_path / "nope.mmdb")


@pytest.mark.parametrize("content", [b"", b"this is not a MaxMind database\n" * 100])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.mmdb"
    path.write_bytes(content)
    with pytest.raises(GeoDatabaseError, match="not a valid MaxMind DB"):
        GeoLookup(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(GeoDatabaseError):
        GeoLookup(tmp_path)


def test_lookup_after_close_raises(db_path: Path) -> None:
    geo = GeoLookup(db_path)
    geo.lookup("81.2.69.142")
    geo.close()
    geo.close()  # idempotent
    with pytest.raises(GeoDatabaseError, match="closed"):
        geo.lookup("81.2.69.142")

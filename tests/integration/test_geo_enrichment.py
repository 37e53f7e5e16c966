"""Geo enrichment end to end: MaxMind's GeoIP2-City test database, a trusted proxy, /get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import StartServer

GEO_DB = Path(__file__).parent.parent / "data" / "GeoIP2-City-Test.mmdb"


@pytest.fixture
def geo_server(start_server: StartServer):  # type: ignore[no-untyped-def]
    if not GEO_DB.exists():
        from data.fetch_geoip_test_db import fetch

        fetch(GEO_DB)
    return start_server("--geoip", str(GEO_DB), "--trusted-proxies", "127.0.0.1")


def write_from(server, ip: str | None) -> dict:  # type: ignore[no-untyped-def]
    headers = {"X-Forwarded-For": ip} if ip else {}
    # Tokens are bound to the client IP the server sees; this one is usable from any.
    token = server.login("admin", server.admin_password, ip="*")
    response = server.request(
        "POST",
        "/write",
        token=token,
        data={"items": json.dumps([{"event": {"type": "view"}}]), "async": "false"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    [key] = response.json()
    [record] = server.request(
        "POST", "/get", token=server.admin_token(), data={"ids": str(key)}
    ).json()
    return record


def test_geo_fields_for_test_database_ips_behind_a_trusted_proxy(geo_server) -> None:  # type: ignore[no-untyped-def]
    london = write_from(geo_server, "81.2.69.142")
    assert london["_m1.ip"] == "81.2.69.142"
    assert london["_m1.geo.city_name"] == "London"
    assert london["_m1.geo.country_iso_code"] == "GB"
    assert london["_m1.geo.continent_code"] == "EU"
    assert london["_m1.geo.subdivision_1_iso_code"] == "ENG"
    assert london["_m1.geo.time_zone"] == "Europe/London"
    assert london["_m1.geo.latitude"] == pytest.approx(51.5142)
    assert london["_m1.geo.longitude"] == pytest.approx(-0.0931)
    assert london["_m1.geo.position"] == "51.5142,-0.0931"
    assert london["_m1.geo.network"] == "81.2.69.142/31"

    milton = write_from(geo_server, "203.0.113.9, 216.160.83.56")  # client, proxy chain
    assert milton["_m1.ip"] == "216.160.83.56"
    assert milton["_m1.geo.city_name"] == "Milton"
    assert milton["_m1.geo.subdivision_1_iso_code"] == "WA"
    assert milton["_m1.geo.postal_code"] == "98354"


def test_no_geo_for_addresses_outside_the_database(geo_server) -> None:  # type: ignore[no-untyped-def]
    record = write_from(geo_server, None)
    assert record["_m1.ip"] == "127.0.0.1"
    assert not [k for k in record if k.startswith("_m1.geo.")]


def test_geo_can_be_switched_off(geo_server) -> None:  # type: ignore[no-untyped-def]
    response = geo_server.request(
        "POST", "/system/geo", token=geo_server.admin_token(), data={"value": "false"}
    )
    assert response.status_code == 204
    record = write_from(geo_server, "81.2.69.142")
    assert record["_m1.ip"] == "81.2.69.142"
    assert "_m1.geo.city_name" not in record


def test_forwarded_for_from_an_untrusted_peer_is_ignored(start_server: StartServer) -> None:
    server = start_server("--geoip", str(GEO_DB))  # no trusted proxies
    record = write_from(server, "81.2.69.142")
    assert record["_m1.ip"] == "127.0.0.1"
    assert "_m1.geo.city_name" not in record

"""Tests for client-IP resolution behind trusted proxies."""

from __future__ import annotations

import pytest

from m1lite.enrich.ip import TrustedProxies

PROXIES = TrustedProxies(["10.0.0.0/8", "192.0.2.7", "2001:db8:ffff::/48"])


def test_untrusted_peer_ignores_spoofed_header() -> None:
    assert PROXIES.client_ip("203.0.113.9", "1.2.3.4") == "203.0.113.9"
    assert PROXIES.client_ip("203.0.113.9", "10.0.0.1, 1.2.3.4") == "203.0.113.9"


def test_trusted_peer_without_header_is_the_client() -> None:
    assert PROXIES.client_ip("10.1.2.3", None) == "10.1.2.3"
    assert PROXIES.client_ip("10.1.2.3", "") == "10.1.2.3"


def test_trusted_peer_header_is_honoured() -> None:
    assert PROXIES.client_ip("10.1.2.3", "198.51.100.20") == "198.51.100.20"
    # A single address (not a CIDR) in the config is trusted too.
    assert PROXIES.client_ip("192.0.2.7", "198.51.100.20") == "198.51.100.20"


def test_chain_of_proxies_takes_rightmost_untrusted() -> None:
    # The client spoofed 6.6.6.6; our proxies appended the real client and each other.
    header = "6.6.6.6, 198.51.100.20, 10.9.9.9, 192.0.2.7"
    assert PROXIES.client_ip("10.1.2.3", header) == "198.51.100.20"


def test_all_hops_trusted_returns_leftmost() -> None:
    assert PROXIES.client_ip("10.1.2.3", "10.5.5.5, 10.6.6.6") == "10.5.5.5"


def test_ipv6() -> None:
    assert PROXIES.client_ip("2001:db8:ffff::1", "2001:db8:1::42") == "2001:db8:1::42"
    assert PROXIES.client_ip("2001:db8:ffff::1", "2001:DB8:1:0::42") == "2001:db8:1::42"
    assert PROXIES.client_ip("2001:db8:1::1", "198.51.100.20") == "2001:db8:1::1"
    assert PROXIES.client_ip("2001:db8:ffff::1", "[2001:db8:1::42]:443") == "2001:db8:1::42"


def test_ipv4_mapped_is_normalised() -> None:
    # Peer is a trusted proxy seen through a dual-stack socket.
    assert PROXIES.client_ip("::ffff:10.1.2.3", "::ffff:198.51.100.20") == "198.51.100.20"
    assert PROXIES.client_ip("::ffff:203.0.113.9", "1.2.3.4") == "203.0.113.9"
    # A mapped entry that is a trusted proxy is skipped like its IPv4 form.
    assert PROXIES.client_ip("10.1.2.3", "198.51.100.20, ::ffff:10.0.0.5") == "198.51.100.20"


def test_mapped_trusted_network_matches_ipv4_peer() -> None:
    proxies = TrustedProxies(["::ffff:10.0.0.0/104"])
    assert proxies.client_ip("10.1.2.3", "198.51.100.20") == "198.51.100.20"


def test_ports_in_header_are_stripped() -> None:
    assert PROXIES.client_ip("10.1.2.3", "198.51.100.20:5555") == "198.51.100.20"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("garbage", "10.1.2.3"),
        ("unknown", "10.1.2.3"),
        ("1.2.3.4, nonsense", "10.1.2.3"),
        # Left of a malformed hop is untrustworthy; stop at the nearest trusted hop.
        ("1.2.3.4, nonsense, 10.7.7.7", "10.7.7.7"),
        ("198.51.100.20,,", "198.51.100.20"),
        (" , ", "10.1.2.3"),
        ("1.2.3.4:port", "10.1.2.3"),
        ("[2001:db8::1", "10.1.2.3"),
        ("999.1.1.1", "10.1.2.3"),
    ],
)
def test_garbage_header(header: str, expected: str) -> None:
    assert PROXIES.client_ip("10.1.2.3", header) == expected


def test_unknown_peer() -> None:
    assert PROXIES.client_ip(None, "1.2.3.4") == ""
    assert PROXIES.client_ip("", "1.2.3.4") == ""
    assert TrustedProxies([]).client_ip(None, None) == ""


def test_non_ip_peer_is_passed_through() -> None:
    # e.g. a unix-socket listener or a test client that reports a name.
    assert PROXIES.client_ip("testclient", "1.2.3.4") == "testclient"


def test_empty_config_ignores_header() -> None:
    proxies = TrustedProxies([])
    assert not proxies
    assert proxies.client_ip("10.1.2.3", "198.51.100.20") == "10.1.2.3"
    assert proxies.client_ip("::ffff:10.1.2.3", None) == "10.1.2.3"
    assert proxies.client_ip("2001:db8::1", None) == "2001:db8::1"


def test_empty_config_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import m1lite.enrich.ip as ip_module

    def boom(value: str) -> None:
        raise AssertionError(f"parsed {value!r} on the fast path")

    monkeypatch.setattr(ip_module, "_parse", boom)
    assert TrustedProxies([]).client_ip("203.0.113.9", "1.2.3.4, 5.6.7.8") == "203.0.113.9"


@pytest.mark.parametrize("entry", ["", "10.0.0.0/33", "not-an-ip", "10.0.0.0/8/8", "::g"])
def test_bad_entry_raises(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid trusted proxy"):
        TrustedProxies(["10.0.0.0/8", entry])


def test_single_string_config_is_rejected() -> None:
    with pytest.raises(TypeError):
        TrustedProxies("10.0.0.0/8")


def test_host_bits_and_whitespace_accepted() -> None:
    proxies = TrustedProxies([" 10.1.2.3/8 "])
    assert proxies.client_ip("10.200.0.1", "198.51.100.20") == "198.51.100.20"

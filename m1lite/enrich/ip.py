"""Client-IP resolution behind reverse proxies.

X-Forwarded-For is only believed when the TCP peer is a proxy we trust; otherwise any
client could claim any address. Each trusted proxy appends the address it received the
request from, so the real client is the rightmost entry that is not one of our proxies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedProxies"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED_PREFIXES = ("::ffff:", "::FFFF:")


def _parse(value: str) -> _Address | None:
    """Parse an address, unwrapping IPv4-mapped IPv6; None if it is not an IP."""
    text = value.strip()
    # Some proxies append a port: "[2001:db8::1]:443" or "192.0.2.1:8080".
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """A set of proxy networks whose X-Forwarded-For header we believe."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        if isinstance(cidrs, str):
            # Iterating a str would treat each character as an entry.
            raise TypeError("cidrs must be an iterable of strings, not a single string")
        networks: list[_Network] = []
        for entry in cidrs:
            text = entry.strip()
            try:
                # A bare address becomes a /32 or /128 network.
                network = ipaddress.ip_network(text, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"invalid trusted proxy {entry!r}: expected an IP address or CIDR "
                    "network such as 10.0.0.0/8"
                ) from exc
            if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:
                    # Addresses are unwrapped before matching, so unwrap the network too.
                    network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            networks.append(network)
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def is_trusted(self, addr: _Address) -> bool:
        # `in` across IP versions is simply False, so no version check is needed.
        return any(addr in net for net in self._networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        """Return the client address for a request from ``peer``.

        ``peer`` is the TCP peer address ("" if unknown, returned as ""); ``forwarded_for``
        is the raw X-Forwarded-For header value, if any.
        """
        if not peer:
            return ""
        if not self._networks:
            # Fast path (runs per request): no proxies configured, so no parsing, except
            # to unwrap the IPv4-mapped peers that a dual-stack listener reports.
            if peer.startswith(_MAPPED_PREFIXES):
                mapped = _parse(peer)
                return str(mapped) if mapped is not None else peer
            return peer
        peer_addr = _parse(peer)
        if peer_addr is None:
            return peer
        peer_text = str(peer_addr)
        if not forwarded_for or not self.is_trusted(peer_addr):
            return peer_text
        leftmost: _Address | None = None
        for part in reversed(forwarded_for.split(",")):
            if not part.strip():
                continue  # stray comma: carries no address, so it cannot mislead us
            addr = _parse(part)
            if addr is None:
                # Malformed entry: anything left of it came through an unknown hop.
                return str(leftmost) if leftmost is not None else peer_text
            if not self.is_trusted(addr):
                return str(addr)
            leftmost = addr
        # Every hop is one of our proxies (e.g. an internal health check).
        return str(leftmost) if leftmost is not None else peer_text

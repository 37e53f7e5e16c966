"""CORS as an access rule, not just a header: a browser origin must be whitelisted.

Browsers attach `Origin` to cross-site requests. An origin whose host is in the `cors`
system property gets its origin echoed back; any other origin is refused with 403 before
the app runs, so an auth token lifted from one site cannot be replayed from another page.
Requests without `Origin` (curl, SDKs, same-origin GETs) and requests from the server's
own origin pass untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m1lite.errors import error_body

_DEFAULT_PORTS = {"http": 80, "https": 443}

# A serialised origin is exactly `scheme://host[:port]`. Anything else a browser could send
# (`null`, a path, userinfo, a trailing dot or slash) is refused instead of being guessed at.
# Browsers serialise IDNs to punycode, so ASCII host characters are enough.
_ORIGIN_RE = re.compile(
    r"(?P<scheme>https?)://"
    r"(?P<host>[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)
_HOST_HEADER_RE = re.compile(
    r"(?P<host>[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)

_PREFLIGHT_HEADERS: list[tuple[bytes, bytes]] = [
    (b"access-control-allow-methods", b"GET, POST"),
    (b"access-control-allow-headers", b"m1-auth-token, Content-Type"),
    (b"access-control-max-age", b"600"),
    (b"vary", b"Origin"),
]
# Headers the app must not set on a CORS response: the origin is ours to decide, and
# credentials are never allowed (auth travels in `m1-auth-token`, not in cookies).
_STRIPPED = frozenset({b"access-control-allow-origin", b"access-control-allow-credentials"})
_MAX_ORIGIN_IN_MESSAGE = 200


class _Origin:
    __slots__ = ("host", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port


def _parse_origin(raw: bytes) -> _Origin | None:
    """The origin's lowercased scheme, host and effective port, or None if malformed."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _ORIGIN_RE.fullmatch(text)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    port = _DEFAULT_PORTS[scheme] if match["port"] is None else int(match["port"])
    if not 0 < port <= 65535:
        return None
    return _Origin(scheme, match["host"].lower(), port)


def _is_own_origin(origin: _Origin, host_header: bytes | None) -> bool:
    """True when the Origin names the host:port this request was addressed to."""
    if host_header is None:
        return False
    match = _HOST_HEADER_RE.fullmatch(host_header.decode("latin-1"))
    if match is None or match["host"].lower() != origin.host:
        return False
    if match["port"] is None:
        # A Host without a port means "the default port of the scheme the client used".
        # We take that scheme from the Origin rather than from scope["scheme"]: behind a
        # TLS-terminating proxy the scope says http while the page was https.
        return origin.port == _DEFAULT_PORTS[origin.scheme]
    return origin.port == int(match["port"])


def _entry_host(entry: str) -> str:
    """The host part of one whitelist entry, lowercased; '' when there is nothing usable."""
    text = entry.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text.split("]", 1)[0] + "]" if "]" in text else ""
    return text.split(":", 1)[0]


def _compile(entries: Sequence[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact hosts and `.suffix` strings for `*.` entries."""
    exact: set[str] = set()
    suffixes: set[str] = set()
    for entry in entries:
        host = _entry_host(entry)
        if host.startswith("*."):
            base = host[2:]
            # `*.` alone or a second wildcard would widen the rule beyond one domain.
            if base and "*" not in base:
                suffixes.add("." + base)
        elif host and "*" not in host:
            exact.add(host)
    return frozenset(exact), tuple(sorted(suffixes))


def _cors_headers(
    headers: Sequence[tuple[bytes, bytes]], origin: bytes
) -> list[tuple[bytes, bytes]]:
    """The app's headers with our Allow-Origin and `Origin` merged into Vary."""
    out: list[tuple[bytes, bytes]] = []
    vary_at = -1
    varies_on_origin = False
    for name, value in headers:
        lname = name.lower()
        if lname in _STRIPPED:
            continue
        if lname == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            varies_on_origin = varies_on_origin or b"origin" in tokens or b"*" in tokens
            if vary_at < 0:
                vary_at = len(out)
        out.append((name, value))
    if not varies_on_origin:
        if vary_at < 0:
            out.append((b"vary", b"Origin"))
        else:
            name, value = out[vary_at]
            out[vary_at] = (name, value + b", Origin" if value.strip() else b"Origin")
    out.append((b"access-control-allow-origin", origin))
    return out


class CorsMiddleware:
    """Echo whitelisted origins, answer their preflights, refuse every other origin."""

    def __init__(self, app: ASGIApp, allowed_hosts: Callable[[], Sequence[str]]) -> None:
        self.app = app
        self._allowed_hosts = allowed_hosts
        # The whitelist is re-read per request (it can change at runtime) but only
        # re-compiled when its contents change.
        self._cached_entries: tuple[str, ...] | None = None
        self._exact: frozenset[str] = frozenset()
        self._suffixes: tuple[str, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin_raw: bytes | None = None
        origin_count = 0
        host_header: bytes | None = None
        preflight_method = False
        for name, value in scope["headers"]:
            if name == b"origin":
                origin_raw = value
                origin_count += 1
            elif name == b"host":
                host_header = value
            elif name == b"access-control-request-method":
                preflight_method = True
        if origin_raw is None:
            await self.app(scope, receive, send)
            return

        # Two Origin headers are never sent by a browser; picking one would be a guess.
        origin = _parse_origin(origin_raw) if origin_count == 1 else None
        if origin is not None and _is_own_origin(origin, host_header):
            await self.app(scope, receive, send)
            return
        if origin is None or not self._is_allowed(origin.host):
            await _refuse(send, origin_raw)
            return

        if preflight_method and scope["method"] == "OPTIONS":
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [(b"access-control-allow-origin", origin_raw), *_PREFLIGHT_HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = _cors_headers(message.get("headers", ()), origin_raw)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _is_allowed(self, host: str) -> bool:
        entries = tuple(self._allowed_hosts())
        if entries != self._cached_entries:
            self._exact, self._suffixes = _compile(entries)
            self._cached_entries = entries
        return host in self._exact or host.endswith(self._suffixes)


async def _refuse(send: Send, origin_raw: bytes) -> None:
    shown = origin_raw.decode("latin-1")[:_MAX_ORIGIN_IN_MESSAGE]
    body = error_body(
        403,
        f"origin {shown!r} is not allowed; add its host to the cors system property",
        "cors_origin_refused",
    )
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The refusal depends on Origin, so a shared cache must not reuse it.
                (b"vary", b"Origin"),
                # Refused before any body was read: the connection will not be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

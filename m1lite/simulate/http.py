"""A small keep-alive HTTP/1.1 client for the simulator: POST a body, read the answer.

Why not httpx: in this process the simulator shares the machine with the server it
measures, and httpx's async client spent 1 to 3 ms of CPU per request here (httpcore
imports `sniffio` on every request, failing when it is not installed, and walks its whole
pool on every change), which made the simulator, not the server, the bottleneck at a few
hundred requests a second. This client needs a few tens of microseconds: the simulator
only ever POSTs to one server and reads a status and a body.

Connections: at most `connections` open, reused (keep-alive) last-in first-out; a caller
waits for a free one. A connection the server has closed while idle is dropped before
reuse. Requests are never abandoned on a timer (a timed-out write may still be stored, and
sending it again would store it twice); only connecting has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 10.0


class ConnectionFailed(Exception):
    """No complete answer: the connection could not be made, or broke."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class HttpPool:
    """Keep-alive connections to one server (http:// or https://)."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self._idle: list[_Connection] = []
        self._gate = asyncio.Semaphore(connections)
        self.opened = 0  # connections opened
        self.waited = 0  # requests that found every connection busy and waited for one
        self._ssl = ssl.create_default_context() if self.tls else None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Response:
        """POST `body` to `path` (e.g. "/write"); raises ConnectionFailed without an answer."""
        head = [
            f"POST {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host_header}",
            f"Content-Length: {len(body)}",
        ]
        head.extend(f"{name}: {value}" for name, value in headers.items())
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        if self._gate.locked():
            self.waited += 1
        async with self._gate:
            connection = await self._take()
            try:
                connection.writer.write(request)
                response, keep = await _read_response(connection.reader)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                # (LimitOverrunError is a ValueError: a header block beyond 64 KiB)
                connection.close()
                raise ConnectionFailed(_describe(exc)) from exc
            except BaseException:
                connection.close()  # cancelled mid-request: the connection is unusable
                raise
            if keep:
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def _take(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()  # the server closed it while it was idle
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self.tls else None,
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            raise ConnectionFailed(_describe(exc)) from exc
        self.opened += 1
        return _Connection(reader, writer)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        await asyncio.sleep(0)


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """(the response, whether the connection can be reused)."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise OSError(f"not an HTTP answer: {lines[0][:80]!r}")
        status = int(status_line[1])
        if status >= 200:
            break  # 1xx (100 Continue) answers are skipped
    length: int | None = None
    chunked = False
    keep = status_line[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            keep = "close" not in value.lower() and (keep or "keep-alive" in value.lower())
    if status in (204, 304):
        body = b""
    elif chunked:
        body = await _read_chunked(reader)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()  # the body ends with the connection
        keep = False
    return Response(status, body), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection before answering"
    return str(exc) or type(exc).__name__

"""Request body limits, enforced while the body streams in.

A declared `Content-Length` over the limit is refused before a byte is read; one within
it is trusted, because the server's HTTP parser (h11/h2) delivers exactly that many
bytes. Bodies with no length (chunked) are counted as they arrive; the first chunk past
the limit makes `receive` raise `BodyTooLarge`, which unwinds the app and becomes a 413.
Compressed request bodies are refused: we never decompress input, so a small gzip
payload cannot expand past the limit behind our back.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m1lite.errors import PayloadTooLarge, error_body


class BodyTooLarge(PayloadTooLarge):
    """Raised from `receive` once the request body passes the configured limit."""


class BodyLimitMiddleware:
    """Refuse request bodies over `max_body_bytes` (an int, or a callable read per request)."""

    def __init__(self, app: ASGIApp, max_body_bytes: Callable[[], int] | int) -> None:
        self.app = app
        if isinstance(max_body_bytes, int):
            fixed = max_body_bytes
            self._limit: Callable[[], int] = lambda: fixed
        else:
            self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit()
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                # Repeated identical lengths are legal (RFC 9110 §8.6); differing ones
                # would let two parsers disagree about where the body ends.
                if declared is not None and value.strip() != declared:
                    await _reply(send, 400, "conflicting Content-Length headers", "bad_request")
                    return
                declared = value.strip()
            elif name == b"content-encoding" and not _is_identity(value):
                shown = value.decode("latin-1")[:100]
                message = (
                    f"Content-Encoding {shown!r} is not supported: "
                    "send the request body uncompressed"
                )
                await _reply(send, 400, message, "unsupported_encoding")
                return
        if declared is not None:
            if not declared.isdigit():
                shown = declared.decode("latin-1")[:100]
                message = f"Content-Length {shown!r} is not a number"
                await _reply(send, 400, message, "bad_request")
                return
            if int(declared) > limit:
                await _reply(send, 413, _too_large_message(limit), "too_large")
                return
            # The server's HTTP parser delivers exactly Content-Length bytes, so only a
            # chunked body needs counting: the common case pays for no wrappers.
            await self.app(scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(_too_large_message(limit))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(_too_large_message(limit))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Once the body is over the limit, whatever the app sends (its own error
            # page, Starlette's 500 for the uncaught exception) is replaced by our 413.
            if exceeded and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # Any exception once over the limit is the overflow unwinding, possibly
            # re-raised or wrapped by the app's own error handling. If the response is
            # already under way we cannot change its status, so let the server abort it.
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _reply(send, 413, _too_large_message(limit), "too_large")


def _is_identity(value: bytes) -> bool:
    return all(token.strip().lower() in (b"", b"identity") for token in value.split(b","))


def _too_large_message(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


async def _reply(send: Send, status: int, message: str, code: str) -> None:
    body = error_body(status, message, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # Refused before the body was read: the server will close the
                # connection, so say it (keep-alive clients would otherwise reuse it).
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""BodyLimitMiddleware: oversized, mislabelled and compressed bodies are refused."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from m1lite.errors import ApiError, PayloadTooLarge
from m1lite.middleware.limits import BodyLimitMiddleware, BodyTooLarge

LIMIT = 100


class Harness:
    def __init__(self, limit: int | None = LIMIT, **app_kwargs: object) -> None:
        self.calls = 0
        self.limit = LIMIT

        async def echo_length(request: Request) -> Response:
            self.calls += 1
            body = await request.body()
            return Response(str(len(body)))

        app = Starlette(routes=[Route("/write", echo_length, methods=["POST"])], **app_kwargs)
        # None means "use the callable form", so both constructor shapes are exercised.
        max_body = limit if limit is not None else (lambda: self.limit)
        self.client = TestClient(BodyLimitMiddleware(app, max_body))


@pytest.fixture
def h() -> Harness:
    return Harness()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "message", "error"}
    assert body["status"] == status
    assert body["error"] == code
    return body


def chunks(total: int, size: int = 30) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield b"x" * n
        sent += n


def test_body_exactly_at_limit_is_accepted(h: Harness) -> None:
    r = h.client.post("/write", content=b"x" * LIMIT)
    assert r.status_code == 200
    assert r.text == str(LIMIT)


def test_one_byte_over_refused_without_calling_the_app(h: Harness) -> None:
    r = h.client.post("/write", content=b"x" * (LIMIT + 1))
    body = assert_error(r, 413, "too_large")
    assert body["message"] == f"request body is larger than the limit of {LIMIT} bytes"
    assert h.calls == 0


def test_chunked_body_at_limit_is_accepted(h: Harness) -> None:
    r = h.client.post("/write", content=chunks(LIMIT))
    assert r.status_code == 200
    assert r.text == str(LIMIT)


def test_chunked_body_over_limit_refused(h: Harness) -> None:
    r = h.client.post("/write", content=chunks(LIMIT + 1))
    assert "content-length" not in r.request.headers
    body = assert_error(r, 413, "too_large")
    assert str(LIMIT) in body["message"]


def test_next_request_after_413_is_served(h: Harness) -> None:
    assert h.client.post("/write", content=chunks(LIMIT * 3)).status_code == 413
    assert h.client.post("/write", content=b"x" * (LIMIT + 1)).status_code == 413
    r = h.client.post("/write", content=b"hello")
    assert r.status_code == 200
    assert r.text == "5"


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "10, 10", "0x10"])
def test_bad_content_length_is_400(h: Harness, value: str) -> None:
    r = h.client.post("/write", content=b"", headers={"Content-Length": value})
    body = assert_error(r, 400, "bad_request")
    assert "Content-Length" in body["message"]
    assert h.calls == 0


def test_conflicting_content_lengths_are_400(h: Harness) -> None:
    headers = [("Content-Length", "1"), ("Content-Length", "2")]
    r = h.client.post("/write", content=b"x", headers=headers)
    assert_error(r, 400, "bad_request")
    assert h.calls == 0


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "identity, gzip", "GZIP"])
def test_compressed_request_body_is_refused(h: Harness, encoding: str) -> None:
    r = h.client.post("/write", content=b"\x1f\x8b", headers={"Content-Encoding": encoding})
    body = assert_error(r, 400, "unsupported_encoding")
    assert encoding in body["message"]
    assert "uncompressed" in body["message"]
    assert h.calls == 0


def test_identity_encoding_is_accepted(h: Harness) -> None:
    r = h.client.post("/write", content=b"abc", headers={"Content-Encoding": "identity"})
    assert r.status_code == 200
    assert r.text == "3"


def test_callable_limit_is_read_per_request() -> None:
    h = Harness(limit=None)
    assert h.client.post("/write", content=b"x" * 150).status_code == 413
    h.limit = 200
    r = h.client.post("/write", content=b"x" * 150)
    assert r.status_code == 200
    assert r.text == "150"


def test_app_error_handler_still_yields_our_413() -> None:
    # An app that renders ApiError itself must not turn the overflow into something else.
    async def render(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return Response(b"app page", status_code=exc.status)

    h = Harness(exception_handlers={ApiError: render})
    r = h.client.post("/write", content=chunks(LIMIT + 50))
    assert_error(r, 413, "too_large")


def test_body_too_large_is_a_payload_too_large() -> None:
    exc = BodyTooLarge("too big")
    assert isinstance(exc, PayloadTooLarge)
    assert exc.status == 413
    assert exc.code == "too_large"


def test_overflow_mid_stream_stops_reading() -> None:
    # Drive the middleware directly so the body really arrives in several messages.
    pieces = [b"x" * 60, b"x" * 60, b"x" * 60]
    served: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        served.append(len(pieces[len(served)]))
        return {
            "type": "http.request",
            "body": pieces[len(served) - 1],
            "more_body": len(served) < len(pieces),
        }

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the app must not see the whole body")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    anyio.run(BodyLimitMiddleware(app, LIMIT), scope, receive, send)
    assert served == [60, 60]  # the third chunk was never pulled
    assert sent[0]["status"] == 413
    assert b'"error":"too_large"' in sent[1]["body"]

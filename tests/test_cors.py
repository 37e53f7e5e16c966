"""CorsMiddleware: whitelisted origins are echoed, everything else is refused up front."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from m1lite.middleware.cors import CorsMiddleware

PREFLIGHT = {"Access-Control-Request-Method": "POST"}


class Harness:
    """A tiny app behind the middleware, with a mutable whitelist and a call counter."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts
        self.calls = 0

        async def write(request: Request) -> Response:
            self.calls += 1
            body = await request.body()
            return Response(str(len(body)), headers={"Vary": "Accept-Encoding"})

        async def plain(request: Request) -> Response:
            self.calls += 1
            return Response(status_code=204)

        app = Starlette(
            routes=[
                Route("/write", write, methods=["POST"]),
                Route("/plain", plain, methods=["GET", "OPTIONS"]),
            ]
        )
        self.client = TestClient(CorsMiddleware(app, lambda: self.hosts))


@pytest.fixture
def h() -> Harness:
    return Harness(["example.com", "*.apps.test", "https://full.test", "", "  "])


def assert_refused(response, origin: str) -> None:
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"status", "message", "error"}
    assert body["status"] == 403
    assert body["error"] == "cors_origin_refused"
    assert origin in body["message"]


def test_allowed_origin_is_echoed_exactly(h: Harness) -> None:
    r = h.client.post("/write", content=b"abc", headers={"Origin": "https://example.com"})
    assert r.status_code == 200
    assert r.text == "3"
    assert r.headers["access-control-allow-origin"] == "https://example.com"
    assert "access-control-allow-credentials" not in r.headers
    # The app's own Vary survives, with Origin merged into it.
    assert r.headers.get_list("vary") == ["Accept-Encoding, Origin"]
    assert h.calls == 1


def test_vary_added_when_app_sets_none(h: Harness) -> None:
    r = h.client.get("/plain", headers={"Origin": "https://example.com"})
    assert r.status_code == 204
    assert r.headers.get_list("vary") == ["Origin"]


@pytest.mark.parametrize(
    "origin",
    [
        "http://example.com",
        "https://example.com:8443",
        "http://EXAMPLE.com:80",
        "https://a.apps.test",
        "https://a.b.apps.test:444",
        "https://full.test",
        "http://FULL.test:3000",
    ],
)
def test_listed_hosts_allowed_with_any_scheme_and_port(h: Harness, origin: str) -> None:
    r = h.client.post("/write", content=b"x", headers={"Origin": origin})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-origin"] != "*"


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "https://evilexample.com",
        "https://example.com.evil.net",
        "https://apps.test",  # `*.apps.test` covers subdomains only
        "https://evilapps.test",
        "https://unlisted.org",
        "example.com",  # no scheme
        "ftp://example.com",
        "https://example.com/",  # path
        "https://example.com/x",
        "https://user@example.com",  # userinfo
        "https://example.com:",
        "https://example.com:99999",
        "https://example.com.",
        "https://example.com?q",
        "https://*.apps.test",
        "",
    ],
)
def test_bad_origins_refused_before_the_app(h: Harness, origin: str) -> None:
    r = h.client.post("/write", content=b"x", headers={"Origin": origin})
    assert_refused(r, origin)
    r = h.client.options("/write", headers={"Origin": origin, **PREFLIGHT})
    assert_refused(r, origin)
    assert h.calls == 0


def test_refusal_body_has_the_exact_shape(h: Harness) -> None:
    r = h.client.get("/plain", headers={"Origin": "https://evil.test"})
    assert json.loads(r.content) == {
        "status": 403,
        "message": "origin 'https://evil.test' is not allowed; "
        "add its host to the cors system property",
        "error": "cors_origin_refused",
    }


def test_two_origin_headers_refused(h: Harness) -> None:
    headers = [("Origin", "https://example.com"), ("Origin", "https://evil.test")]
    r = h.client.get("/plain", headers=headers)
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    assert h.calls == 0


def test_preflight_from_allowed_origin_answered_without_the_app(h: Harness) -> None:
    r = h.client.options(
        "/write",
        headers={
            "Origin": "https://a.apps.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "m1-auth-token, content-type",
        },
    )
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == "https://a.apps.test"
    assert r.headers["access-control-allow-methods"] == "GET, POST"
    assert r.headers["access-control-allow-headers"] == "m1-auth-token, Content-Type"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in r.headers
    assert h.calls == 0


def test_options_without_request_method_reaches_the_app(h: Harness) -> None:
    r = h.client.options("/plain", headers={"Origin": "https://example.com"})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://example.com"
    assert h.calls == 1


def test_no_origin_passes_untouched(h: Harness) -> None:
    r = h.client.post("/write", content=b"hello")
    assert r.status_code == 200
    assert r.text == "5"
    assert "access-control-allow-origin" not in r.headers
    assert r.headers.get_list("vary") == ["Accept-Encoding"]
    assert h.calls == 1


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://myserver.local", "myserver.local"),
        ("https://myserver.local", "myserver.local"),  # TLS ended at a proxy
        ("http://myserver.local:8080", "MyServer.Local:8080"),
        ("https://myserver.local", "myserver.local:443"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://[::1]:8080", "[::1]:8080"),
    ],
)
def test_own_origin_passes_untouched(h: Harness, origin: str, host: str) -> None:
    r = h.client.post("/write", content=b"ab", headers={"Origin": origin, "Host": host})
    assert r.status_code == 200
    assert r.text == "2"
    assert "access-control-allow-origin" not in r.headers
    assert h.calls == 1


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://myserver.local:8081", "myserver.local:8080"),
        ("http://myserver.local:8080", "myserver.local"),
        ("https://myserver.local", "myserver.local:80"),
        ("http://other.local:8080", "myserver.local:8080"),
    ],
)
def test_same_host_other_port_is_not_own_origin(h: Harness, origin: str, host: str) -> None:
    r = h.client.post("/write", content=b"ab", headers={"Origin": origin, "Host": host})
    assert_refused(r, origin)
    assert h.calls == 0


def test_whitelist_changes_take_effect_at_runtime(h: Harness) -> None:
    headers = {"Origin": "https://new.test"}
    assert h.client.get("/plain", headers=headers).status_code == 403
    h.hosts = [*h.hosts, "new.test"]
    r = h.client.get("/plain", headers=headers)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://new.test"
    h.hosts = []
    r = h.client.get("/plain", headers={"Origin": "https://example.com"})
    assert_refused(r, "https://example.com")


def test_app_cannot_grant_credentials_or_another_origin() -> None:
    async def app(scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-allow-credentials", b"true"),
                    (b"vary", b"origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(CorsMiddleware(app, lambda: ["example.com"]))
    r = client.get("/", headers={"Origin": "https://example.com"})
    assert r.text == "ok"
    assert r.headers.get_list("access-control-allow-origin") == ["https://example.com"]
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers.get_list("vary") == ["origin"]  # already varies on Origin

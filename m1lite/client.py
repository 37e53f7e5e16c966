"""A small HTTP client for an m1lite (or MinusOneDB) environment.

Used by the `m1` command line, the simulator and the tests. Parameters go out the
way the MinusOneDB docs send them: form fields (JSON values as JSON text inside
a field), the token in the `m1-auth-token` header.

    client = Client("http://127.0.0.1:8080")
    client.auth("admin", "secret")
    client.call("user/add", {"username": "instrument", "password": "...",
                             "rights": ["publish"]})

Any answer outside 2xx raises `ClientError` carrying the server's status, message
and short error code; a server that cannot be reached raises `ServerUnreachable`
(a `ClientError` with status 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

TOKEN_HEADER = "m1-auth-token"

# Endpoints that only answer GET (the rest all take POST).
GET_ONLY = frozenset({"ping", "health"})
# Endpoints that read on GET and write on POST: with no parameters the caller
# means "show me", so they are sent as GET then.
READ_ON_GET = frozenset({"system", "init"})

DEFAULT_TIMEOUT = 120.0

# A parameter value: text; bool/int/float (sent as text); list/dict (sent as JSON
# text, e.g. `items`, `rights`); a tuple repeats the parameter once per element
# (e.g. several `fq`).
ParamValue = Any


class ClientError(Exception):
    """A non-2xx answer (or, for ServerUnreachable, no answer at all)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.message = message
        self.code = code


class ServerUnreachable(ClientError):
    """Connection refused, DNS failure, timeout: the request got no HTTP answer."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message, "unreachable")


def method_for(path: str, params: Mapping[str, Any]) -> str:
    """GET for GET-only endpoints, and for read-on-GET endpoints called without params."""
    path = path.strip("/")
    if path in GET_ONLY:
        return "GET"
    is_system_value = path.startswith("system/") and not path.startswith("system/cors/")
    if (path in READ_ON_GET or is_system_value) and not params:
        return "GET"
    return "POST"


def encode_params(params: Mapping[str, ParamValue]) -> dict[str, str | list[str]]:
    """Form fields from Python values (see ParamValue)."""
    fields: dict[str, str | list[str]] = {}
    for name, value in params.items():
        if isinstance(value, tuple):
            fields[name] = [_field_text(v) for v in value]
        else:
            fields[name] = _field_text(value)
    return fields


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def error_from_response(response: httpx.Response) -> ClientError:
    """The server's {"status", "message", "error"} body, or whatever a proxy sent instead."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error")
        return ClientError(status, body["message"], code if isinstance(code, str) else "error")
    text = response.text.strip()[:500] or "(no body)"
    code = (response.reason_phrase or "error").lower().replace(" ", "_")
    return ClientError(status, text, code)


class Client:
    def __init__(
        self, base_url: str, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def auth(self, username: str, password: str, **extra: ParamValue) -> str:
        """Log in; the token is kept for later calls and returned. `extra`: ip, ttl."""
        params: dict[str, ParamValue] = {"username": username, "password": password, **extra}
        response = self.call("auth", params, authenticated=False)
        self.token = response.text.strip()
        return self.token

    def call(
        self,
        path: str,
        params: Mapping[str, ParamValue] | None = None,
        files: Mapping[str, Any] | None = None,
        *,
        method: str | None = None,
        authenticated: bool = True,
    ) -> httpx.Response:
        """One request; raises ClientError unless the answer is 2xx.

        `files` is passed to httpx (e.g. {"file": (name, fileobj)}), which makes the
        request multipart with the params as plain fields beside the files.
        """
        params = params or {}
        path = path.strip("/")
        verb = method or method_for(path, params)
        headers = {}
        if authenticated and self.token:
            headers[TOKEN_HEADER] = self.token
        fields = encode_params(params)
        url = f"{self.base_url}/{path}"
        try:
            if verb == "GET":
                response = self._http.get(url, params=fields, headers=headers)
            else:
                response = self._http.request(
                    verb, url, data=fields or None, files=files, headers=headers
                )
        except httpx.TimeoutException as exc:
            raise ServerUnreachable(
                f"no answer from {url}: timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
        if not response.is_success:
            raise error_from_response(response)
        return response

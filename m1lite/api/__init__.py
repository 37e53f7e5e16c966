"""The HTTP API: one module per area; this module holds the endpoint wrapper.

`endpoint(rights)` turns `async def handler(call: Call) -> Response` into a
Starlette endpoint that reads the parameters from wherever the client put them,
authenticates the token (401), checks that the user has any one of the rights
(403), and turns every `ApiError` into the one JSON error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from m1lite.auth import User, require
from m1lite.environment import Environment
from m1lite.errors import ApiError
from m1lite.params import Params, read_params

TOKEN_HEADER = "m1-auth-token"
_json_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Call:
    request: Request
    params: Params
    env: Environment
    user: User | None
    client_ip: str


Handler = Callable[[Call], Awaitable[Response]]


def client_ip(request: Request, env: Environment) -> str:
    peer = request.scope.get("client")
    return env.proxies.client_ip(peer[0] if peer else None, request.headers.get("x-forwarded-for"))


def request_token(request: Request, params: Params) -> str | None:
    """The token a request carries: the `m1-auth-token` header, else that parameter."""
    return request.headers.get(TOKEN_HEADER) or params.string(TOKEN_HEADER)


def endpoint(
    rights: tuple[str, ...] | None,
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """rights None: no token needed. Otherwise the caller needs any one of them."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            env: Environment = request.app.state.env
            try:
                params = await read_params(request)
            except ApiError as error:
                # The body may be partly unread: the server closes the connection after
                # this answer, and says so.
                response = error_response(error)
                response.headers["Connection"] = "close"
                return response
            try:
                ip = client_ip(request, env)
                user = None
                if rights is not None:
                    user = env.auth.authenticate(request_token(request, params), ip)
                    require(user, rights)
                return await handler(Call(request, params, env, user, ip))
            except ApiError as error:
                return error_response(error)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return wrap


def error_response(error: ApiError) -> Response:
    headers = {"Retry-After": str(error.retry_after_s)} if error.status in (429, 503) else None
    return Response(error.body(), error.status, headers, media_type="application/json")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_json_encode(value), status, media_type="application/json")


def text_response(text: str) -> Response:
    return Response(text, 200, media_type="text/plain; charset=utf-8")


def no_content() -> Response:
    return Response(status_code=204)

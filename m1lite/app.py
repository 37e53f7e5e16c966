"""create_app(config): the Starlette app, its routes, middleware and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from m1lite.api import (
    error_response,
    lake,
    ops,
    query,
    schema,
    sessions,
    static,
    stores,
    system,
    ui,
    users,
)
from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.errors import ApiError, error_body
from m1lite.middleware.cors import CorsMiddleware
from m1lite.middleware.limits import BodyLimitMiddleware

logger = logging.getLogger("m1lite")
GET_POST = ["GET", "POST"]

ROUTES = [
    # /write first: Starlette tries routes in order, and it is the hot path (then the
    # heartbeats' /session/update).
    Route("/write", lake.write, methods=["POST"]),
    Route("/session/update", sessions.session_update, methods=["POST"]),
    Route("/auth", users.auth, methods=["POST"]),
    Route("/user/password", users.password, methods=["POST"]),
    Route("/user/add", users.user_add, methods=["POST"]),
    Route("/user/update", users.user_update, methods=["POST"]),
    Route("/user/list", users.user_list, methods=GET_POST),
    Route("/user/get", users.user_get, methods=GET_POST),
    Route("/user/remove", users.user_remove, methods=["POST"]),
    Route("/schema", schema.schema, methods=GET_POST),
    Route("/schema/add", schema.schema_add, methods=["POST"]),
    Route("/schema/wipe", schema.schema_wipe, methods=["POST"]),
    Route("/get", lake.get, methods=GET_POST),
    Route("/publish", lake.publish, methods=["POST"]),
    Route("/query", query.query, methods=GET_POST),
    Route("/store/list", stores.store_list, methods=GET_POST),
    Route("/store/enable", stores.store_enable, methods=["POST"]),
    Route("/store/autocommit", stores.store_autocommit, methods=["POST"]),
    Route("/session/query", sessions.session_query, methods=GET_POST),
    Route("/session/list", stores.session_list, methods=GET_POST),
    Route("/orchestrate/addStores", stores.add_stores, methods=["POST"]),
    Route("/system", system.system_all, methods=GET_POST),
    Route("/system/cors/add", system.cors_add, methods=["POST"]),
    Route("/system/cors/remove", system.cors_remove, methods=["POST"]),
    Route("/system/{name}", system.system_one, methods=GET_POST),
    Route("/ping", ops.ping, methods=["GET", "HEAD"]),
    Route("/init", ops.init, methods=GET_POST),
    Route("/health", ops.health, methods=["GET"]),
    # The browser scripts (no token: pages load them with a plain <script> tag).
    Route("/m1.js", static.m1_js, methods=["GET"]),
    Route("/js/M1Events.js", static.m1events_js, methods=["GET"]),
    Route("/js/instrumentation.js", static.instrumentation_js, methods=["GET"]),
]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no endpoint {request.url.path}", 405: "method not allowed"}
    body = error_body(
        exc.status_code,
        message.get(exc.status_code, str(exc.detail)),
        codes.get(exc.status_code, "http_error"),
    )
    # 404/405 come before anything read the body, so the server closes the connection;
    # say so, or a keep-alive client reusing it sees its next request fail.
    headers = {"Connection": "close"} if has_body(request.headers) else None
    return Response(body, exc.status_code, headers, media_type="application/json")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s", request.url.path, exc_info=exc)
    body = error_body(500, "internal error; the server log has details", "internal")
    return Response(body, 500, media_type="application/json")


class M1App:
    """The outer ASGI app: CORS, then body limits, then Starlette's routing."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.env: Environment | None = None
        starlette = Starlette(
            # The dashboard's files after the API (they need no token; its data calls
            # go to the API like any client's).
            routes=[*ROUTES, *ui.UI_ROUTES],
            lifespan=self._lifespan,
            exception_handlers={
                HTTPException: _http_error,
                ApiError: _api_error,
                Exception: _unexpected,
            },
        )
        self.starlette = starlette
        limited = BodyLimitMiddleware(starlette, config.max_body_bytes)
        self._asgi: ASGIApp = CorsMiddleware(limited, self._cors_hosts)

    def _cors_hosts(self) -> list[str]:
        return self.env.system.cors_hosts if self.env is not None else []

    def open(self) -> Environment:
        """Open the data directory (also usable without the lifespan, e.g. in tools)."""
        env = Environment(self.config)
        env.start()
        self.env = env
        self.starlette.state.env = env
        return env

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        env = self.env if self.env is not None else self.open()
        env.start_background_tasks()
        try:
            yield
        finally:
            # The flusher first: what it handed the writer is committed by close().
            await env.stop_background_tasks()
            self.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)


def has_body(headers: Headers) -> bool:
    length = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or length not in ("", "0")


def create_app(config: Config) -> M1App:
    return M1App(config)

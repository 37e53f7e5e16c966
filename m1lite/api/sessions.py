"""/session/update and /session/query: the live documents of a session store."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content
from m1lite.api.query import MAX_WINDOW, read_request
from m1lite.errors import BadRequest
from m1lite.params import Params
from m1lite.query.execute import KEY_FIELD
from m1lite.sessions.documents import read_ops
from m1lite.sessions.index import SessionAnswer, SessionQuery
from m1lite.sessions.registry import SessionStores

DEFAULT_ROWS = 10


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_parameter")


@endpoint(rights=("sessionUpdate",))
async def session_update(call: Call) -> Response:
    """Apply `ops` (upserts and deletes) to a session store; see docs/api.md."""
    params = call.params
    sessions = call.env.sessions
    name = params.required_str("store")
    store = sessions.store(name)  # 404 before the ops are read
    ops = read_ops(params.json("ops", required=True), store.key)
    durable = not params.boolean("async", False)
    await call.env.writer.room_for(2 * len(ops))  # a burst waits a little, as on /write
    future = sessions.update(name, ops, call.client_ip, durable=durable)
    if future is not None:
        await future  # 204 only once the ops are on disk
    return no_content()


@endpoint(rights=("sessionQuery",))
async def session_query(call: Call) -> Response:
    """Search a session store's live documents; see docs/api.md."""
    sessions = call.env.sessions
    name, request = read_session_query(call.params, sessions)
    answer = await run_in_threadpool(sessions.search, name, request)
    return json_response(answer_body(sessions, name, answer))


def answer_body(sessions: SessionStores, name: str, answer: SessionAnswer) -> dict[str, Any]:
    """`{"count", "items"}`, plus `facets` when asked (the items are read here, on the
    event loop, where the store changes)."""
    body: dict[str, Any] = {
        "count": answer.count,
        "items": sessions.documents(name, answer.page),
    }
    if answer.facets is not None:
        body["facets"] = answer.facets
    return body


def read_session_query(params: Params, sessions: SessionStores) -> tuple[str, SessionQuery]:
    """`/query`'s parameters (q, fq, sort, start, rows, json), checked the same way;
    rows defaults to 10 and the sort to the store's key, ascending."""
    request = read_request(params)
    if len(request.stores) != 1:
        raise _bad("store names one session store")
    name = request.stores[0]
    store = sessions.store(name)  # 404 for an unknown store
    if request.csv:
        raise _bad("/session/query answers JSON only (format=csv is for /query)")
    if request.fl is not None:
        raise _bad("/session/query returns whole documents; fl is for /query")
    sort = request.sort
    if not _given(params, "sort", "sort"):
        sort = [(store.key, False)]
    elif any(field == KEY_FIELD for field, _descending in sort):
        raise _bad("session documents have no _m1key; sort by a property")
    rows = request.rows
    if not _given(params, "rows", "limit"):
        rows = DEFAULT_ROWS
        if request.start + rows > MAX_WINDOW:
            raise _bad(f"start + rows must be at most {MAX_WINDOW:,}")
    return name, SessionQuery(
        query=request.query,
        filters=request.filters,
        sort=sort,
        start=request.start,
        rows=rows,
        facet=request.facet,
    )


def _given(params: Params, name: str, json_key: str) -> bool:
    """Whether the client set a parameter, directly or in the `json` request."""
    if params.raw(name) not in (None, ""):
        return True
    body = params.json("json")
    return isinstance(body, dict) and json_key in body

"""/query: Solr-style search of the data stores, answered in Solr's envelope or as CSV."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import TOKEN_HEADER, Call, endpoint, json_response
from m1lite.environment import Environment
from m1lite.errors import BadRequest, Conflict, NotFound
from m1lite.params import Params
from m1lite.query.ast import Node
from m1lite.query.execute import KEY_FIELD, QueryContext, execute
from m1lite.query.facets import FacetRequest, parse_facets, run_facets
from m1lite.query.parser import parse, parse_fl, parse_sort
from m1lite.query.results import SortSpec, csv_columns, page_keys, project, to_csv
from m1lite.storage import log as event_log

MAX_ROWS = 10_000
MAX_WINDOW = 100_000  # start + rows
DEFAULT_SORT: SortSpec = [(KEY_FIELD, False)]
# Keys of Solr's JSON request API that `json` may carry, and the parameter each stands for.
JSON_KEYS = {
    "query": "q",
    "filter": "fq",
    "limit": "rows",
    "offset": "start",
    "sort": "sort",
    "fields": "fl",
    "facet": None,
}
_encode_json = msgspec.json.Encoder().encode


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_parameter")


@dataclass(slots=True)
class QueryRequest:
    stores: list[str]
    query: Node
    filters: list[Node]
    start: int
    rows: int
    sort: SortSpec
    fl: list[str] | None
    csv: bool
    facet: FacetRequest | None
    echo: dict[str, Any]


@endpoint(rights=("get",))
async def query(call: Call) -> Response:
    """Search the data stores named in `store`; see docs/api.md#query."""
    started = time.perf_counter()
    request = read_request(call.params)
    upto = store_upto(call.env, request.stores)
    return await run_in_threadpool(_answer, call.env, request, upto, started)


def read_request(params: Params) -> QueryRequest:
    """Every parameter checked before any work is done, so a bad one costs nothing."""
    store_param = params.required_str("store")
    stores = [name.strip() for name in store_param.split(",") if name.strip()]
    if not stores:
        raise BadRequest("missing parameter: store", code="missing_parameter")
    body = _json_request(params)
    q = params.string("q")
    if q is None or not q.strip():
        q = _json_text(body, "query") or "*"
    filter_texts = [_as_text(value, "fq") for value in params.all("fq")]
    filter_texts.extend(_json_list(body, "filter"))
    rows = _window_param(params, body, "rows", "limit", MAX_ROWS)
    start = _window_param(params, body, "start", "offset", MAX_WINDOW)
    if start + rows > MAX_WINDOW:
        raise _bad(
            f"start + rows must be at most {MAX_WINDOW:,} (got {start + rows}); "
            "narrow the query or page with a range on _m1key instead"
        )
    sort_text = params.string("sort") or _json_text(body, "sort")
    sort = parse_sort(sort_text) or DEFAULT_SORT
    fl_raw = params.raw("fl")
    if isinstance(fl_raw, list):  # a JSON body may give fl as an array
        fl_text: str | None = ",".join(_as_text(name, "fl") for name in fl_raw)
    elif fl_raw is not None:
        fl_text = params.string("fl")
    else:
        fl_text = ",".join(_json_list(body, "fields")) or None
    fl = parse_fl(fl_text)
    output = (params.string("format") or params.string("wt") or "json").strip().lower()
    if output not in ("json", "csv"):
        raise _bad(f"format must be json or csv, not {output!r}")
    facet = None
    if body is not None and "facet" in body and output == "json":
        facet = parse_facets(body)
    return QueryRequest(
        stores=stores,
        query=parse(q),
        filters=[parse(text) for text in filter_texts if text.strip()],
        start=start,
        rows=rows,
        sort=sort,
        fl=fl,
        csv=output == "csv",
        facet=facet,
        echo=_echo(params, fl),
    )


def _json_request(params: Params) -> dict[str, Any] | None:
    body = params.json("json")
    if body is None:
        return None
    if not isinstance(body, dict):
        raise _bad('json must be a JSON object such as {"facet": {...}}')
    unknown = sorted(set(body) - set(JSON_KEYS))
    if unknown:
        raise _bad(f"json: unknown key {unknown[0]!r}; m1lite reads {', '.join(JSON_KEYS)}")
    return body


def _as_text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise _bad(f"{name} must be a string")


def _json_text(body: dict[str, Any] | None, key: str) -> str | None:
    if body is None or key not in body:
        return None
    return _as_text(body[key], f"json.{key}")


def _json_list(body: dict[str, Any] | None, key: str) -> list[str]:
    """A JSON key that takes a string or an array of strings."""
    if body is None or key not in body:
        return []
    value = body[key]
    values = value if isinstance(value, list) else [value]
    return [_as_text(item, f"json.{key}") for item in values]


def _window_param(
    params: Params, body: dict[str, Any] | None, name: str, json_key: str, maximum: int
) -> int:
    """`rows` / `start`, or the JSON request's `limit` / `offset` when the parameter is absent."""
    if params.raw(name) is not None or body is None or json_key not in body:
        return params.integer(name, 0, minimum=0, maximum=maximum)
    value = body[json_key]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _bad(f"json.{json_key} must be an integer from 0 to {maximum}")
    return value


def _echo(params: Params, fl: list[str] | None) -> dict[str, Any]:
    """The request's parameters as strings (a list for a repeated one), token left out."""
    echo: dict[str, Any] = {}
    for name in params.names():
        if name == TOKEN_HEADER:
            continue
        values = [_echo_value(value) for value in params.all(name)]
        echo[name] = values[0] if len(values) == 1 else values
    if fl is not None and isinstance(echo.get("fl"), str):
        echo["fl"] = ",".join(fl if KEY_FIELD in fl else [*fl, KEY_FIELD])  # as m1 does
    return echo


def _echo_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _encode_json(value).decode()


def store_upto(env: Environment, names: list[str]) -> int | None:
    """Validate the stores; the key bound their view imposes (None: everything visible).

    On one machine every store holds every published event, so several stores are the
    same events once; only a store with autocommit off shows less (its frozen view).
    """
    bounds: list[int | None] = []
    for name in names:
        store = env.stores.data.get(name)
        if store is None:
            hint = ""
            if name in env.stores.sessions:
                hint = f" ({name} is a session store: use /session/query)"
            raise NotFound(f"no data store named {name}{hint}", code="no_such_store")
        if not store.active:
            raise Conflict(
                f"data store {name} is disabled; enable it with /store/enable",
                code="store_disabled",
            )
        bounds.append(None if store.autocommit else store.frozen_upto)
    if any(bound is None for bound in bounds):
        return None
    return max(bound for bound in bounds if bound is not None)


def _answer(env: Environment, request: QueryRequest, upto: int | None, started: float) -> Response:
    ctx = QueryContext.snapshot(
        env.index,
        env.schema,
        env.field_kinds(),
        upto=upto,
        now_ms=int(time.time() * 1000),
        parse=parse,
    )
    keys = execute(request.query, ctx)
    for node in request.filters:
        if not keys:
            break
        keys &= execute(node, ctx)
    facets = None if request.facet is None else run_facets(request.facet, keys, ctx)
    page = page_keys(keys, request.sort, request.start, request.rows, ctx)
    docs = project(event_log.get_records(env.lake, page), request.fl)
    if request.csv:
        return Response(
            to_csv(docs, csv_columns(docs, request.fl)),
            200,
            media_type="text/csv; charset=utf-8",
        )
    body: dict[str, Any] = {
        "responseHeader": {
            "status": 0,
            "QTime": int((time.perf_counter() - started) * 1000),
            "params": request.echo,
        },
        "response": {"numFound": len(keys), "start": request.start, "docs": docs},
    }
    if facets is not None:
        body["facets"] = facets
    return json_response(body)

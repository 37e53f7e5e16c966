"""Data stores and session stores: /store/*, /session/list, /orchestrate/addStores."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content
from m1lite.environment import Environment
from m1lite.errors import BadRequest


@endpoint(rights=("get", "admin"))
async def store_list(call: Call) -> Response:
    """The data stores; with `stats=true` each also says how many events the data
    directory holds and its size on disk (the dashboard's storage panel)."""
    listed = [s.public() for s in call.env.stores.data.values()]
    if call.params.boolean("stats", False):
        events, disk_bytes = await run_in_threadpool(_lake_stats, call.env)
        for store in listed:
            # One machine: every data store holds every event, in one LMDB file.
            store["events"] = events
            store["diskBytes"] = disk_bytes
    return json_response(listed)


def _lake_stats(env: Environment) -> tuple[int, int]:
    return env.lake.event_count(), env.lake.disk_bytes()


@endpoint(rights=("admin",))
async def store_enable(call: Call) -> Response:
    params = call.params
    call.env.stores.set_active(params.required_str("store"), params.boolean("active", True))
    return no_content()


@endpoint(rights=("admin",))
async def store_autocommit(call: Call) -> Response:
    params = call.params
    env = call.env
    env.stores.set_autocommit(
        params.required_str("store"), params.boolean("on", True), env.writer.next_key
    )
    return no_content()


@endpoint(rights=("get", "admin"))
async def session_list(call: Call) -> Response:
    return json_response([s.public() for s in call.env.stores.sessions.values()])


@endpoint(rights=("admin",))
async def add_stores(call: Call) -> Response:
    """Add data and session stores from a template (the guide's addSessionStore.json)."""
    template = call.params.json("environment", required=True)
    if isinstance(template, dict) and isinstance(template.get("environment"), dict):
        template = template["environment"]  # the whole addSessionStore.json file
    if not isinstance(template, dict):
        raise BadRequest("environment must be a JSON object with stores and sessionStores")
    added = call.env.stores.add_from_template({"environment": template})
    return json_response({"added": added})

"""Data stores and session stores: /store/*, /session/list, /orchestrate/addStores."""

from __future__ import annotations

from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content
from m1lite.errors import BadRequest


@endpoint(rights=("get", "admin"))
async def store_list(call: Call) -> Response:
    return json_response([s.public() for s in call.env.stores.data.values()])


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

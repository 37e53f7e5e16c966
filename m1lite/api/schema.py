"""The schema: /schema, /schema/add, /schema/wipe."""

from __future__ import annotations

from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content
from m1lite.errors import BadRequest


@endpoint(rights=("schema", "get", "publish"))
async def schema(call: Call) -> Response:
    return json_response(call.env.schema.to_list())


@endpoint(rights=("schema",))
async def schema_add(call: Call) -> Response:
    properties = call.params.json("properties", required=True)
    if not isinstance(properties, list):
        raise BadRequest("properties must be a JSON array of property maps")
    call.env.schema.add(properties)
    call.env.save_schema()
    return no_content()


@endpoint(rights=("schema",))
async def schema_wipe(call: Call) -> Response:
    call.env.schema.wipe()
    call.env.save_schema()
    return no_content()

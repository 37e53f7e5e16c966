"""System properties: /system, /system/<name>, /system/cors/add|remove."""

from __future__ import annotations

from starlette.responses import Response

from m1lite.api import TOKEN_HEADER, Call, endpoint, json_response, no_content, text_response
from m1lite.errors import BadRequest, NotFound
from m1lite.system import parse_host_list


@endpoint(rights=("admin",))
async def system_all(call: Call) -> Response:
    """GET: every property (string values). POST: set each given field."""
    system = call.env.system
    if call.request.method == "POST":
        updates = {
            name: call.params.raw(name) for name in call.params.names() if name != TOKEN_HEADER
        }
        if not updates:
            raise BadRequest("give at least one property to set", code="missing_parameter")
        system.set_many(updates)
        return no_content()
    return json_response(system.all())


@endpoint(rights=("admin",))
async def system_one(call: Call) -> Response:
    """GET: the bare value as text. POST: `value` is the new value."""
    name = call.request.path_params["name"]
    system = call.env.system
    if call.request.method == "POST":
        value = call.params.raw("value")
        if value is None:
            raise BadRequest("missing parameter: value", code="missing_parameter")
        system.set_many({name: value})
        return no_content()
    value = system.get(name)
    if value is None:
        raise NotFound(f"no system property named {name}", code="no_such_property")
    return text_response(value)


def _domains(call: Call) -> list[str]:
    raw = call.params.raw("domains")
    if raw is None:
        raw = call.params.raw("value")  # accepted for older clients
    if raw is None:
        raise BadRequest("missing parameter: domains", code="missing_parameter")
    hosts = parse_host_list(raw)
    if not hosts:
        raise BadRequest("domains is empty", code="missing_parameter")
    return hosts


@endpoint(rights=("admin",))
async def cors_add(call: Call) -> Response:
    call.env.system.add_cors(_domains(call))
    return no_content()


@endpoint(rights=("admin",))
async def cors_remove(call: Call) -> Response:
    call.env.system.remove_cors(_domains(call))
    return no_content()

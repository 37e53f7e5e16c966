"""Auth and users: /auth, /user/*."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content, text_response
from m1lite.auth import ANY_IP, parse_rights, require
from m1lite.errors import BadRequest


@endpoint(rights=None)
async def auth(call: Call) -> Response:
    """A token for username/password; `ip` and `ttl` need the admin right."""
    params = call.params
    username = params.required_str("username")
    password = params.string("password", required=True) or ""
    env = call.env
    # scrypt takes tens of milliseconds: keep it off the event loop.
    user = await run_in_threadpool(env.auth.login, username, password)
    ip = params.string("ip")
    ttl_ms = params.integer("ttl", env.system.token_expire_ms, minimum=1)
    if ip is not None or "ttl" in params:
        require(user, ("admin",))
    bound_ip = "*" if ip in ANY_IP else (ip or call.client_ip)
    return text_response(env.auth.mint_token(user.username, bound_ip, ttl_ms))


@endpoint(rights=())
async def password(call: Call) -> Response:
    """Change your own password, or (admin) someone else's."""
    assert call.user is not None
    params = call.params
    username = params.string("username") or call.user.username
    if username != call.user.username:
        require(call.user, ("admin",))
    new_password = params.string("password", required=True) or ""
    env = call.env
    env.auth.check_password_rules(new_password, env.system.password_min_length)
    await run_in_threadpool(env.auth.set_password, username, new_password)
    return no_content()


@endpoint(rights=("admin",))
async def user_add(call: Call) -> Response:
    params = call.params
    env = call.env
    username = params.required_str("username")
    new_password = params.string("password", required=True) or ""
    rights = parse_rights(params.raw("rights") or [])
    env.auth.check_password_rules(new_password, env.system.password_min_length)
    await run_in_threadpool(env.auth.add_user, username, new_password, rights)
    env.system.set_initialised(True)
    return no_content()


@endpoint(rights=("admin",))
async def user_update(call: Call) -> Response:
    params = call.params
    if params.raw("rights") is None:
        raise BadRequest("missing parameter: rights", code="missing_parameter")
    call.env.auth.update_rights(params.required_str("username"), parse_rights(params.raw("rights")))
    return no_content()


@endpoint(rights=("admin",))
async def user_list(call: Call) -> Response:
    return json_response([u.public() for u in call.env.auth.users.values()])


@endpoint(rights=("admin",))
async def user_get(call: Call) -> Response:
    return json_response(call.env.auth.get_user(call.params.required_str("username")).public())


@endpoint(rights=("admin",))
async def user_remove(call: Call) -> Response:
    call.env.auth.remove_user(call.params.required_str("username"))
    return no_content()

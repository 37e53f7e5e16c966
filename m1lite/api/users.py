"""Auth and users: /auth, /user/*."""

from __future__ import annotations

from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import (
    Call,
    endpoint,
    json_response,
    no_content,
    request_token,
    text_response,
)
from m1lite.auth import ANY_IP, User, parse_rights, require
from m1lite.errors import BadRequest


@endpoint(rights=None)
async def auth(call: Call) -> Response:
    """A token for username/password; `ip` and `ttl` need the admin right (the user's,
    or that of an admin token sent with the request)."""
    params = call.params
    username = params.required_str("username")
    password = params.string("password", required=True) or ""
    env = call.env
    user = await _login(call, username, password)
    ip = params.string("ip")
    ttl_ms = params.integer("ttl", env.system.token_expire_ms, minimum=1)
    if ip is not None or "ttl" in params:
        _require_admin_for(call, user)
    bound_ip = "*" if ip in ANY_IP else (ip or call.client_ip)
    # The token's row is committed (durable) before it is answered: off the event loop.
    token = await run_in_threadpool(
        partial(env.auth.mint_token, generation=user.generation),
        user.username,
        bound_ip,
        ttl_ms,
    )
    return text_response(token)


def _require_admin_for(call: Call, user: User) -> None:
    """`ip` and `ttl` need the admin right: the user logging in has it, or the request
    carries an admin's token. The second lets an admin mint a token for a publish-only
    user that works from any address, for a busy site's `data-token`."""
    token = request_token(call.request, call.params)
    if token and "admin" not in user.rights:
        user = call.env.auth.authenticate(token, call.client_ip)
    require(user, ("admin",))


async def _login(call: Call, username: str, password: str) -> User:
    """The browser script's repeat logins (the password scrypt last accepted) are answered
    here in µs. Any other login takes a scrypt (tens of ms) in a worker thread, at most
    one per core at a time: the others wait here, not in threads, so a flood of wrong
    passwords cannot take every worker thread (mints and queries need them too). A
    waiter usually finds the cache filled by the one before it (many tabs, one password).

    Brute force (m1lite/login_limits.py): an address over its failure budget is refused
    before anything is checked; a login that needs scrypt is charged to its address and
    username when its slot comes (refused, without scrypt, if either is over) and
    refunded if right.
    """
    auth = call.env.auth
    limits = call.env.login_limits
    limits.check_address(call.client_ip)
    user = auth.login_cached(username, password)
    if user is not None:
        return user
    async with call.env.password_checks:
        # Charged only once a slot is ours: logins that waited behind the first check of
        # a password (a restart's rush of tabs) find it cached and are never counted.
        user = auth.login_cached(username, password)
        if user is not None:
            return user
        limits.begin_check(call.client_ip, username)
        user = await run_in_threadpool(auth.login, username, password)
    limits.succeeded(call.client_ip, username)
    return user


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

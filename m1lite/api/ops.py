"""Operations: /ping, /init, /health."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from m1lite.api import Call, endpoint, json_response, no_content
from m1lite.auth import RIGHTS
from m1lite.errors import Conflict

PASSED, FAILED = "PASSED", "FAILED"


@endpoint(rights=None)
async def ping(call: Call) -> Response:
    return json_response(True)


@endpoint(rights=None)
async def init(call: Call) -> Response:
    """GET: whether the environment has users. POST: the first admin, only while none exist."""
    env = call.env
    if call.request.method == "GET":
        return json_response(env.auth.has_users())
    if env.auth.has_users():
        raise Conflict("the environment is already initialised", code="already_initialised")
    params = call.params
    username = params.required_str("username")
    password = params.string("password", required=True) or ""
    env.auth.check_password_rules(password, env.system.password_min_length)
    await run_in_threadpool(env.auth.add_user, username, password, RIGHTS)
    env.system.set_initialised(True)
    return no_content()


def _component(ok: bool, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"status": PASSED if ok else FAILED, "message": message, **extra}


@endpoint(rights=("admin",))
async def health(call: Call) -> Response:
    """Every component PASSED or FAILED, with a message; overall FAILED if any failed."""
    env = call.env
    components: dict[str, dict[str, Any]] = {}
    if env.geo is None:
        components["geo"] = _component(True, "No geo database configured (--geoip).")
    elif not env.system.geo_enabled:
        components["geo"] = _component(True, "Geo database loaded; system property geo is off.")
    else:
        components["geo"] = _component(
            True,
            "Data loaded.",
            details={"type": env.geo.database_type, "buildDate": env.geo.build_date},
        )
    try:
        entries = env.lake.event_count()
        components["lake"] = _component(
            True,
            f"{entries} events",
            details={"events": entries, "diskBytes": env.lake.disk_bytes()},
        )
    except Exception as exc:  # health must report, not raise
        components["lake"] = _component(False, str(exc))
    writer = env.writer
    components["db"] = _component(
        not writer.storage_full,
        "storage full: writes refused" if writer.storage_full else "",
        details={
            "mapSizeBytes": env.lake.map_size,
            "queuedEvents": writer.queued_events,
            "commits": writer.commits,
        },
    )
    components["stores"] = _component(
        True,
        "",
        details={
            name: _component(store.active, "active" if store.active else "disabled")
            for name, store in env.stores.data.items()
        },
    )
    components["sessions"] = _component(
        True, "", details={name: _component(True) for name in env.stores.sessions}
    )
    auth = env.auth
    components["users"] = _component(
        auth.has_users(),
        f"{len(auth.users)} users",
        details={
            "passwordChecks": auth.password_checks,
            "cachedLogins": auth.cached_logins,
            "loginsRefused": env.login_limits.refused,
            "tokensMinted": auth.tokens.minted,
            "tokenCommits": auth.tokens.commits,
            "tokensCached": auth.tokens.cached(),
            "tokenDiskLookups": auth.tokens.disk_lookups,
            "tokensPurged": auth.tokens.purged,
        },
    )
    components["system"] = _component(True)
    overall = all(c["status"] == PASSED for c in components.values())
    components["overall"] = _component(overall)
    return json_response(components)

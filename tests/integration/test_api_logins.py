"""Logins at scale against a real server: repeat logins with the password scrypt already
accepted skip scrypt (read from /health's `users` details, never from timings), anything
else still runs it; tokens pushed out of the memory cache are found on disk; expired
tokens leave the data directory while the server runs."""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Any

import pytest

from integration.server import ADMIN_PASSWORD, ADMIN_USER, Server, assert_error
from m1lite.auth import token_digest
from m1lite.storage.env import LakeEnv
from m1lite.storage.meta import MetaStore
from m1lite.tokens import TOKEN_PREFIX

WAIT_S = 30.0  # only so a broken purge fails the test instead of hanging it


def users_health(server: Server) -> dict[str, Any]:
    body = server.get("/health", server.admin_token()).json()
    details: dict[str, Any] = body["users"]["details"]
    return details


def auth(server: Server, username: str, password: str, ip: str = "10.1.1.1") -> Any:
    return server.post(
        "/auth",
        data={"username": username, "password": password},
        headers={"X-Forwarded-For": ip},
    )


@pytest.fixture(scope="module")
def srv(start_module_server) -> Server:
    return start_module_server("--trusted-proxies", "127.0.0.1")


def test_repeat_logins_skip_scrypt_and_a_wrong_password_still_runs_it(srv: Server) -> None:
    srv.add_user("visitor", "visitor-password", ["publish"])  # one login: scrypt
    before = users_health(srv)
    tokens = set()
    for n in range(20):
        response = auth(srv, "visitor", "visitor-password", ip=f"10.2.0.{n + 1}")
        assert response.status_code == 200
        tokens.add(response.text)
        # Each token works from its own address (the visitor's), as always.
        write = srv.post(
            "/write",
            response.text,
            data={"items": '[{"n": 1}]'},
            headers={"X-Forwarded-For": f"10.2.0.{n + 1}"},
        )
        assert write.status_code == 204
    assert len(tokens) == 20
    after = users_health(srv)
    assert after["passwordChecks"] == before["passwordChecks"]
    assert after["cachedLogins"] == before["cachedLogins"] + 20
    assert after["tokensMinted"] == before["tokensMinted"] + 20

    for wrong in ("visitor-passwor", "visitor-password!", "Visitor-password"):
        assert_error(auth(srv, "visitor", wrong), 401)
    refused = users_health(srv)
    assert refused["passwordChecks"] == after["passwordChecks"] + 3
    assert refused["tokensMinted"] == after["tokensMinted"]
    # The right one is still answered from the cache.
    assert auth(srv, "visitor", "visitor-password").status_code == 200
    assert users_health(srv)["passwordChecks"] == refused["passwordChecks"]


def test_a_password_change_refuses_the_old_password_and_accepts_the_new(srv: Server) -> None:
    token = srv.add_user("changer", "changer-old-pw", ["publish"])
    assert auth(srv, "changer", "changer-old-pw").status_code == 200  # cached now
    response = srv.post("/user/password", token, data={"password": "changer-new-pw"})
    assert response.status_code == 204
    before = users_health(srv)
    assert_error(auth(srv, "changer", "changer-old-pw"), 401)
    assert auth(srv, "changer", "changer-new-pw").status_code == 200
    assert auth(srv, "changer", "changer-new-pw").status_code == 200
    after = users_health(srv)
    assert after["passwordChecks"] == before["passwordChecks"] + 2  # old refused, new once


def test_removing_a_user_refuses_its_cached_password(srv: Server) -> None:
    srv.add_user("leaver", "leaver-password", ["publish"])
    assert auth(srv, "leaver", "leaver-password").status_code == 200  # cached now
    response = srv.post("/user/remove", srv.admin_token(), data={"username": "leaver"})
    assert response.status_code == 204
    assert_error(auth(srv, "leaver", "leaver-password"), 401)
    srv.add_user("leaver", "leaver-other-pw", ["publish"])
    assert_error(auth(srv, "leaver", "leaver-password"), 401)


def test_many_tabs_logging_in_at_once_run_few_scrypts(srv: Server) -> None:
    """After a password change nothing is cached; a burst of logins waits for the first
    checks instead of each running scrypt."""
    srv.add_user("burst", "burst-password", ["publish"])
    response = srv.post(
        "/user/password",
        srv.admin_token(),
        data={"username": "burst", "password": "burst-new-password"},
    )
    assert response.status_code == 204
    before = users_health(srv)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda n: auth(srv, "burst", "burst-new-password", ip=f"10.3.0.{n + 1}"),
                range(32),
            )
        )
    assert [a.status_code for a in answers] == [200] * 32
    after = users_health(srv)
    checks = after["passwordChecks"] - before["passwordChecks"]
    assert 1 <= checks <= (os.cpu_count() or 1)
    assert after["cachedLogins"] - before["cachedLogins"] == 32 - checks


def test_a_token_pushed_out_of_memory_still_works(start_server) -> None:
    server = start_server("--token-cache-size", "8")
    first = server.login(ADMIN_USER, ADMIN_PASSWORD)
    others = [server.login(ADMIN_USER, ADMIN_PASSWORD) for _ in range(40)]
    before = users_health(server)
    assert before["tokensCached"] <= 8
    assert server.get("/user/list", first).status_code == 200
    assert users_health(server)["tokenDiskLookups"] > before["tokenDiskLookups"]
    for token in others:
        assert server.get("/user/list", token).status_code == 200
    server.restart()
    for token in (first, *others):
        assert server.get("/user/list", token).status_code == 200


def _stored_digests(server: Server) -> set[str]:
    lake = LakeEnv(server.data_dir / "lake", map_size_mb=1024, max_map_size_mb=1_048_576)
    try:
        keys = MetaStore(lake).keys(TOKEN_PREFIX)
    finally:
        lake.close()
    return {key.removeprefix(TOKEN_PREFIX) for key in keys}


def test_expired_tokens_leave_the_data_directory_while_the_server_runs(start_server) -> None:
    server = start_server("--token-purge-ms", "100")
    admin = server.admin_token()
    # Publish users get the system's lifetime: make it short, then log in.
    response = server.post("/system", admin, data={"token-expire-ms": "300"})
    assert response.status_code == 204, response.text
    server.add_user("shortlived", "shortlived-pw", ["publish"])
    short = [server.login("shortlived", "shortlived-pw") for _ in range(3)]
    short.append(server.login(ADMIN_USER, ADMIN_PASSWORD, ttl=1))
    live = server.login(ADMIN_USER, ADMIN_PASSWORD, ttl=3_600_000)
    deadline = time.monotonic() + WAIT_S
    # Expiring: the 4 above and add_user's login (300 ms); the admin's first token and
    # `live` were minted with 24 hours and one hour.
    while users_health(server)["tokensPurged"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert users_health(server)["tokensPurged"] == 5
    for token in short:
        assert_error(server.get("/schema", token), 401)
    assert server.get("/user/list", live).status_code == 200
    # No clean shutdown: what the data directory holds is what the running server did.
    server.kill()
    stored = _stored_digests(server)
    assert token_digest(live) in stored
    assert not {token_digest(t) for t in short} & stored


def test_an_admin_token_mints_a_publish_only_token_for_any_address(srv: Server) -> None:
    """The operations guide's `data-token` for a busy site."""
    publisher = srv.add_user("pagetoken", "pagetoken-pw", ["publish"])
    fields = {"username": "pagetoken", "password": "pagetoken-pw", "ip": "*", "ttl": "600000"}
    response = srv.post("/auth", srv.admin_token(), data=fields)
    assert response.status_code == 200
    page_token = response.text
    for ip in ("10.4.0.1", "192.0.2.9", "2001:db8::7"):
        write = srv.post(
            "/write",
            page_token,
            data={"items": '[{"from": "page"}]'},
            headers={"X-Forwarded-For": ip},
        )
        assert write.status_code == 204, ip
    # The token has the publish-only user's rights, not the admin's.
    body = assert_error(srv.get("/user/list", page_token), 403)
    assert body["message"].startswith("User pagetoken ")
    # A token without admin does not give ip or ttl; neither does a bad one.
    assert_error(srv.post("/auth", publisher, data=fields), 403)
    assert_error(srv.post("/auth", "not-a-token", data=fields), 401)
    assert_error(srv.post("/auth", data=fields), 403)

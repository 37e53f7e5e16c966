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


# -- brute-force protection ---------------------------------------------------------------
# Budgets of failed password checks per address and per username (m1lite/login_limits.py).
# A long window here: nothing drains while a test runs, so what is allowed does not depend
# on how fast the machine is. "No scrypt" is read from /health's passwordChecks.

PER_ADDRESS, PER_USER = 3, 5


@pytest.fixture(scope="module")
def limited(start_module_server) -> Server:
    return start_module_server(
        "--trusted-proxies",
        "127.0.0.1",
        "--login-failures-per-address",
        str(PER_ADDRESS),
        "--login-failures-per-user",
        str(PER_USER),
        "--login-failure-window-ms",
        "600000",
    )


def assert_too_many(response: Any) -> dict[str, Any]:
    body = assert_error(response, 429)
    assert body["error"] == "too_many_failed_logins"
    assert int(response.headers["Retry-After"]) >= 1
    return body


def test_failures_from_one_address_are_refused_without_scrypt(limited: Server) -> None:
    limited.add_user("target", "target-password", ["publish"])
    before = users_health(limited)
    for n in range(PER_ADDRESS):
        assert_error(auth(limited, "target", f"guess-{n}", ip="10.9.0.1"), 401)
    assert users_health(limited)["passwordChecks"] == before["passwordChecks"] + PER_ADDRESS
    checked = users_health(limited)
    body = assert_too_many(auth(limited, "target", "guess-x", ip="10.9.0.1"))
    assert "address" in body["message"]
    # Over its budget an address gets nothing checked, not even the right password (which
    # would turn the refusal into a fast oracle), and not for another username either.
    assert_too_many(auth(limited, "target", "target-password", ip="10.9.0.1"))
    assert_too_many(auth(limited, ADMIN_USER, ADMIN_PASSWORD, ip="10.9.0.1"))
    after = users_health(limited)
    assert after["passwordChecks"] == checked["passwordChecks"]
    assert after["tokensMinted"] == checked["tokensMinted"]
    assert after["loginsRefused"] == checked["loginsRefused"] + 3
    # Other addresses are unaffected, and the right password still logs in while the
    # username has failures.
    assert_error(auth(limited, "target", "guess-y", ip="10.9.0.2"), 401)
    assert auth(limited, "target", "target-password", ip="10.9.0.3").status_code == 200


def test_concurrent_guesses_from_one_address_get_exactly_the_budgets_checks(
    limited: Server,
) -> None:
    limited.add_user("concurrent", "concurrent-password", ["publish"])
    before = users_health(limited)
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda n: auth(limited, "concurrent", f"guess-{n}", ip="10.9.1.1"), range(12))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * PER_ADDRESS + [429] * (12 - PER_ADDRESS)
    assert users_health(limited)["passwordChecks"] == before["passwordChecks"] + PER_ADDRESS


def test_successes_are_never_limited_and_do_not_count(limited: Server) -> None:
    limited.add_user("nat", "nat-password", ["publish"])
    limited.post(
        "/user/password", limited.admin_token(), data={"username": "nat", "password": "nat-pw-2"}
    )
    # Many tabs behind one address: the first runs scrypt, the rest hit the cache.
    for _ in range(3 * PER_ADDRESS):
        assert auth(limited, "nat", "nat-pw-2", ip="10.9.2.1").status_code == 200
    # ... and the address still has its whole budget of failures.
    for n in range(PER_ADDRESS):
        assert_error(auth(limited, "nat", f"guess-{n}", ip="10.9.2.1"), 401)
    assert_too_many(auth(limited, "nat", "guess-x", ip="10.9.2.1"))


def test_a_username_over_budget_still_accepts_its_known_password(limited: Server) -> None:
    publish = limited.add_user("publisher", "publisher-password", ["publish"])  # cached now
    for n in range(PER_USER):  # spread over addresses, each within its own budget
        assert_error(auth(limited, "publisher", "guess", ip=f"10.9.3.{n + 1}"), 401)
    before = users_health(limited)
    body = assert_too_many(auth(limited, "publisher", "guess", ip="10.9.3.100"))
    assert "username" in body["message"]
    assert users_health(limited)["passwordChecks"] == before["passwordChecks"]
    # The site's tabs keep logging in (from anywhere) with the password last accepted.
    for n in range(5):
        response = auth(limited, "publisher", "publisher-password", ip=f"10.9.4.{n + 1}")
        assert response.status_code == 200
    # Any other password would need scrypt: refused, unchecked, until the username's
    # failures drain. That includes a new password nobody has logged in with yet.
    response = limited.post("/user/password", publish, data={"password": "publisher-new-pw"})
    assert response.status_code == 204
    assert_too_many(auth(limited, "publisher", "publisher-new-pw", ip="10.9.4.50"))
    assert users_health(limited)["passwordChecks"] == before["passwordChecks"]
    # Other usernames are unaffected.
    assert_error(auth(limited, "somebody-else", "guess", ip="10.9.4.51"), 401)


def test_an_address_may_try_again_after_its_failures_drain(start_server) -> None:
    # 2 failures per 4 s: one more every 2 s once the two are used.
    server = start_server(
        "--trusted-proxies",
        "127.0.0.1",
        "--login-failures-per-address",
        "2",
        "--login-failure-window-ms",
        "4000",
    )
    server.add_user("retrier", "retrier-password", ["publish"])
    refused = None
    for _ in range(20):  # guesses until refused (the budget drains while scrypt runs)
        response = auth(server, "retrier", "guess", ip="10.9.5.1")
        if response.status_code == 429:
            refused = response
            break
        assert_error(response, 401)
    assert refused is not None
    assert_too_many(refused)
    time.sleep(int(refused.headers["Retry-After"]))
    before = users_health(server)
    assert_error(auth(server, "retrier", "guess", ip="10.9.5.1"), 401)  # checked again
    assert users_health(server)["passwordChecks"] == before["passwordChecks"] + 1


def test_ipv6_guesses_from_one_64_share_a_budget(limited: Server) -> None:
    # An unknown username is counted like any other (answers do not reveal which exist).
    for n in range(PER_ADDRESS):
        assert_error(auth(limited, "v6-user", "guess", ip=f"2001:db8:9:9::{n + 1}"), 401)
    assert_too_many(auth(limited, "v6-user", "guess", ip="2001:db8:9:9:ffff::1"))
    assert_error(auth(limited, "v6-user", "guess", ip="2001:db8:9:a::1"), 401)


def test_a_rush_of_right_passwords_is_never_counted_as_failures(limited: Server) -> None:
    """After a password change nothing is cached: three times the username's failure
    budget of tabs log in at once with the right password, and none is refused (the
    waiters find the first check's result instead of being charged for one)."""
    limited.add_user("rush", "rush-password", ["publish"])
    response = limited.post(
        "/user/password",
        limited.admin_token(),
        data={"username": "rush", "password": "rush-new-password"},
    )
    assert response.status_code == 204
    tabs = PER_USER * 3
    with concurrent.futures.ThreadPoolExecutor(tabs) as pool:
        answers = list(
            pool.map(
                lambda n: auth(limited, "rush", "rush-new-password", ip=f"10.7.0.{n + 1}"),
                range(tabs),
            )
        )
    assert [a.status_code for a in answers] == [200] * tabs

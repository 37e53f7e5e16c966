"""Tokens and rights against a real server: every endpoint in app.ROUTES is swept, so an
endpoint added later is covered without touching this file."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from integration.server import ADMIN_PASSWORD, ADMIN_USER, Server, assert_error
from m1lite.app import ROUTES

# The browser scripts too: pages load them with a plain <script> tag.
NO_TOKEN = {"/auth", "/ping", "/init", "/m1.js", "/js/M1Events.js", "/js/instrumentation.js"}
ANY_TOKEN = {"/user/password"}  # any valid token; admin only to change someone else's
PROXY = "10.9.9.9"

# The documented right sets (brief and m1-api.md §3). Endpoints not listed here are still
# swept for 401/403; this table pins the sets of the ones we know.
DOCUMENTED_RIGHTS = {
    "/user/add": {"admin"},
    "/user/update": {"admin"},
    "/user/list": {"admin"},
    "/user/get": {"admin"},
    "/user/remove": {"admin"},
    "/schema": {"schema", "get", "publish"},
    "/schema/add": {"schema"},
    "/schema/wipe": {"schema"},
    "/write": {"publish"},
    "/publish": {"publish"},
    "/get": {"get"},
    "/store/list": {"get", "admin"},
    "/store/enable": {"admin"},
    "/store/autocommit": {"admin"},
    "/session/list": {"get", "admin"},
    "/orchestrate/addStores": {"admin"},
    "/system": {"admin"},
    "/system/geo": {"admin"},
    "/system/cors/add": {"admin"},
    "/system/cors/remove": {"admin"},
    "/health": {"admin"},
}
_RIGHTS_MESSAGE = re.compile(r"^User (\S+) does not have requested right in set (\S+)$")


def _endpoints() -> list[tuple[str, str]]:
    """(method, concrete path) for every route; path parameters filled with a real name."""
    found = []
    for route in ROUTES:
        path = re.sub(r"\{[^}]+\}", "geo", route.path)
        methods = route.methods or {"GET"}
        found.append(("POST" if "POST" in methods else "GET", path))
    return found


ENDPOINTS = _endpoints()
TOKEN_ENDPOINTS = [e for e in ENDPOINTS if e[1] not in NO_TOKEN]
RIGHTS_ENDPOINTS = [e for e in TOKEN_ENDPOINTS if e[1] not in ANY_TOKEN]


def _ids(endpoints: list[tuple[str, str]]) -> list[str]:
    return [f"{m} {p}" for m, p in endpoints]


@pytest.fixture(scope="module")
def srv(start_module_server) -> Server:
    """Trusted proxy 127.0.0.1: X-Forwarded-For lets the test speak from other IPs."""
    return start_module_server("--trusted-proxies", "127.0.0.1")


@pytest.fixture(scope="module")
def no_rights(srv: Server) -> str:
    return srv.add_user("norights", "norights-pw", [])


@pytest.fixture(scope="module")
def publish_only(srv: Server) -> str:
    return srv.add_user("pubonly", "pubonly-pw", ["publish"])


def _as_ip(ip: str) -> dict[str, dict[str, str]]:
    return {"headers": {"X-Forwarded-For": ip}}


def test_sweep_covers_the_known_endpoints() -> None:
    paths = {p for _, p in ENDPOINTS}
    assert paths >= NO_TOKEN
    assert set(DOCUMENTED_RIGHTS) <= paths


# -- 401 ---------------------------------------------------------------------------------


def test_every_endpoint_refuses_a_missing_token(srv: Server) -> None:
    for method, path in TOKEN_ENDPOINTS:
        assert_error(srv.request(method, path), 401)


def test_every_endpoint_refuses_a_wrong_token(srv: Server) -> None:
    real = srv.admin_token()
    wrong = ["not-a-token", real[:-1] + ("A" if real[-1] != "A" else "B"), real + "x"]
    for method, path in TOKEN_ENDPOINTS:
        for token in wrong:
            assert_error(srv.request(method, path, token), 401)


def test_every_endpoint_refuses_an_expired_token(srv: Server) -> None:
    expired = srv.login(ADMIN_USER, ADMIN_PASSWORD, ttl=1)
    time.sleep(0.05)  # the token lived 1 ms
    for method, path in TOKEN_ENDPOINTS:
        assert_error(srv.request(method, path, expired), 401)


def test_every_endpoint_refuses_a_token_bound_to_another_ip(srv: Server) -> None:
    elsewhere = srv.login(ADMIN_USER, ADMIN_PASSWORD, ip=PROXY)
    for method, path in TOKEN_ENDPOINTS:
        assert_error(srv.request(method, path, elsewhere), 401)
    # Behind a trusted proxy the token is good from its IP...
    assert srv.get("/user/list", elsewhere, **_as_ip(PROXY)).status_code == 200
    # ...and a token minted from 127.0.0.1 is refused when the client is someone else.
    local = srv.admin_token()
    for method, path in TOKEN_ENDPOINTS:
        assert_error(srv.request(method, path, local, **_as_ip("10.1.2.3")), 401)


def test_no_token_endpoints_answer_without_a_token(srv: Server) -> None:
    assert srv.get("/ping").json() is True
    assert srv.get("/init").json() is True
    assert srv.post("/auth", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD}).text


def test_auth_refuses_wrong_credentials(srv: Server) -> None:
    assert_error(srv.post("/auth", data={"username": ADMIN_USER, "password": "nope"}), 401)
    assert_error(srv.post("/auth", data={"username": "ghost", "password": "whatever1"}), 401)


# -- 403 ---------------------------------------------------------------------------------


def _refused_set(srv: Server, method: str, path: str, token: str, username: str) -> set[str]:
    body = assert_error(srv.request(method, path, token), 403)
    match = _RIGHTS_MESSAGE.match(body["message"])
    assert match, body["message"]
    assert match.group(1) == username
    return set(match.group(2).split(","))


def test_a_user_without_rights_gets_403_naming_the_right_set(srv: Server, no_rights: str) -> None:
    for method, path in RIGHTS_ENDPOINTS:
        rights = _refused_set(srv, method, path, no_rights, "norights")
        if path in DOCUMENTED_RIGHTS:
            assert rights == DOCUMENTED_RIGHTS[path], path


def test_the_403_message_is_minusonedbs(srv: Server, no_rights: str) -> None:
    body = assert_error(srv.get("/user/list", no_rights), 403)
    assert body["message"] == "User norights does not have requested right in set admin"


def test_a_publish_only_user_is_refused_everything_but_publish(
    srv: Server, no_rights: str, publish_only: str
) -> None:
    allowed = []
    for method, path in RIGHTS_ENDPOINTS:
        needed = _refused_set(srv, method, path, no_rights, "norights")
        if "publish" in needed:
            allowed.append(path)
            assert srv.request(method, path, publish_only).status_code not in (401, 403), path
        else:
            assert _refused_set(srv, method, path, publish_only, "pubonly") == needed
    assert {"/write", "/publish", "/schema"} <= set(allowed)


def test_admin_passes_auth_on_every_endpoint(srv: Server) -> None:
    for method, path in TOKEN_ENDPOINTS:
        response = srv.request(method, path, srv.admin_token())
        assert response.status_code not in (401, 403), (path, response.text)
        assert response.status_code < 500, (path, response.text)


# -- where the token comes from ----------------------------------------------------------


def test_token_as_header_query_parameter_form_field_and_json_field(srv: Server) -> None:
    token = srv.admin_token()
    assert srv.get("/user/list", token).status_code == 200
    assert srv.get("/user/list", params={"m1-auth-token": token}).status_code == 200
    assert srv.post("/user/list", data={"m1-auth-token": token}).status_code == 200
    assert srv.post("/user/list", json={"m1-auth-token": token}).status_code == 200
    response = srv.post(
        "/write", data={"m1-auth-token": token, "items": '[{"a":1}]', "async": "false"}
    )
    assert response.status_code == 200


def test_any_ip_token_works_from_every_ip(srv: Server) -> None:
    for placeholder in ("*", "..."):
        token = srv.login(ADMIN_USER, ADMIN_PASSWORD, ip=placeholder)
        for ip in ("127.0.0.1", "10.1.1.1", "192.0.2.77", "2001:db8::5"):
            assert srv.get("/user/list", token, **_as_ip(ip)).status_code == 200, ip


def test_auth_with_ip_or_ttl_needs_admin(srv: Server, publish_only: str) -> None:
    for extra in ({"ip": "*"}, {"ip": PROXY}, {"ttl": "60000"}):
        response = srv.post(
            "/auth", data={"username": "pubonly", "password": "pubonly-pw", **extra}
        )
        body = assert_error(response, 403)
        assert "admin" in body["message"]


def test_admin_ttl_mints_a_working_token(srv: Server) -> None:
    token = srv.login(ADMIN_USER, ADMIN_PASSWORD, ttl=600_000)
    assert srv.get("/user/list", token).status_code == 200


# -- passwords and users -----------------------------------------------------------------


def test_password_min_length_on_user_add_and_user_password(server: Server) -> None:
    admin = server.admin_token()

    def add(name: str, password: str):
        return server.post(
            "/user/add", admin, data={"username": name, "password": password, "rights": "get"}
        )

    assert server.get("/system/password-min-length", admin).text == "8"
    assert_error(add("shorty", "7chars!"), 400)
    assert add("eight", "8chars!!").status_code == 204
    assert_error(server.post("/user/password", admin, data={"password": "short"}), 400)
    assert_error(
        server.post("/user/password", admin, data={"username": "eight", "password": "1234567"}),
        400,
    )
    # The system property governs the rule.
    assert server.post("/system/password-min-length", admin, data={"value": "12"}).status_code
    assert_error(add("eleven", "11-chars-pw"), 400)
    assert add("twelve", "12-chars-pw!").status_code == 204
    assert server.login("eight", "8chars!!")  # the earlier password still works


def test_user_changes_own_password(srv: Server) -> None:
    token = srv.add_user("alice", "alice-old-pw", ["get"])
    assert srv.post("/user/password", token, data={"password": "alice-new-pw"}).status_code
    assert_error(srv.post("/auth", data={"username": "alice", "password": "alice-old-pw"}), 401)
    assert srv.login("alice", "alice-new-pw")


def test_admin_changes_someone_elses_password_a_user_cannot(srv: Server) -> None:
    bob = srv.add_user("bob", "bob-password", ["get"])
    srv.add_user("carol", "carol-password", ["publish"])
    response = srv.post(
        "/user/password", bob, data={"username": "carol", "password": "hijacked-pw"}
    )
    assert_error(response, 403)
    assert srv.login("carol", "carol-password")
    response = srv.post(
        "/user/password",
        srv.admin_token(),
        data={"username": "carol", "password": "carol-new-pw"},
    )
    assert response.status_code == 204
    assert srv.login("carol", "carol-new-pw")
    assert_error(srv.post("/auth", data={"username": "carol", "password": "carol-password"}), 401)


def test_removing_a_user_revokes_its_tokens(srv: Server) -> None:
    tokens = [srv.add_user("dave", "dave-password", ["get", "publish"])]
    tokens.append(srv.login("dave", "dave-password"))
    for token in tokens:
        assert srv.get("/schema", token).status_code == 200
    response = srv.post("/user/remove", srv.admin_token(), data={"username": "dave"})
    assert response.status_code == 204
    for token in tokens:
        assert_error(srv.get("/schema", token), 401)
    assert_error(srv.post("/auth", data={"username": "dave", "password": "dave-password"}), 401)
    # A new user of the same name does not inherit the old tokens.
    srv.add_user("dave", "dave-password", ["get"])
    for token in tokens:
        assert_error(srv.get("/schema", token), 401)


# -- tokens at rest ----------------------------------------------------------------------


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_tokens_and_passwords_are_not_stored_in_clear(server: Server) -> None:
    tokens = [
        server.admin_token(),
        server.login(ADMIN_USER, ADMIN_PASSWORD, ip="*"),
        server.login(ADMIN_USER, ADMIN_PASSWORD, ttl=3_600_000),
        server.add_user("erin", "erin-secret-pw", ["publish"]),
    ]
    # Prove the scan can see the directory's content: a written value is found.
    response = server.post(
        "/write",
        server.admin_token(),
        data={"items": '[{"marker":"findable-marker-xyz"}]', "async": "false"},
    )
    assert response.status_code == 200
    assert _files_containing(server.data_dir, b"findable-marker-xyz")
    for token in tokens:
        assert _files_containing(server.data_dir, token.encode()) == []
    for password in (ADMIN_PASSWORD, "erin-secret-pw"):
        assert _files_containing(server.data_dir, password.encode()) == []
    server.stop()
    for token in tokens:
        assert _files_containing(server.data_dir, token.encode()) == []


def test_tokens_survive_a_restart_and_a_crash(server: Server) -> None:
    admin = server.admin_token()
    frank = server.add_user("frank", "frank-password", ["get"])
    server.restart()
    assert server.get("/user/list", admin).status_code == 200
    assert server.get("/store/list", frank).status_code == 200
    assert_error(server.get("/user/list", frank), 403)
    late = server.login("frank", "frank-password")
    server.kill()  # no clean shutdown: tokens were durable when /auth answered
    server.start()
    for token in (admin, frank, late):
        assert server.get("/store/list", token).status_code == 200


# -- /init -------------------------------------------------------------------------------


def test_init_is_true_after_first_start_and_post_init_is_409(srv: Server) -> None:
    assert srv.get("/init").json() is True
    body = assert_error(
        srv.post("/init", data={"username": "intruder", "password": "intruder-pw"}), 409
    )
    assert body["status"] == 409
    assert_error(srv.post("/auth", data={"username": "intruder", "password": "intruder-pw"}), 401)
    names = [u["username"] for u in srv.get("/user/list", srv.admin_token()).json()]
    assert "intruder" not in names

"""The guide's curl commands, run verbatim with the real `curl` against a real server.

Only the host is replaced (https://envName-accountName.minusonedb.com → the test server) and
the shell variables `$adminToken` / `$myToken` hold real tokens, exactly as a reader of the
event-capture guide (reference/event-capture-guide.txt) would run them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from integration.server import Server

GUIDE_HOST = "https://envName-accountName.minusonedb.com"
GUIDE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "event-capture-guide.txt"

# Copied character for character from the guide.
USER_ADD = """curl https://envName-accountName.minusonedb.com/user/add \\
-d 'username=instrument&password=ChangeMeNow!&rights=["publish"]' \\
-H "m1-auth-token: $adminToken\""""
USER_UPDATE = """curl https://envName-accountName.minusonedb.com/user/update \\
-d 'username=instrument&rights=["publish"]' \\
-H "m1-auth-token: $adminToken\""""
CORS_ADD_LOCAL = """curl https://envName-accountName.minusonedb.com/system/cors/add \\
-d "domains=localhost.somethingunique" \\
-H "m1-auth-token: $myToken\""""
CORS_ADD_M1 = """curl https://envName-accountName.minusonedb.com/system/cors/add \\
-d "domains=minusonedb.com" \\
-H "m1-auth-token: $myToken\""""
# m1-api.md §3.1 and §3.5 (the /write example's two form fields, sent the way §2.2 says).
AUTH = (
    "curl -X POST https://envName-accountName.minusonedb.com/auth"
    ' -d "username=$user&password=$password"'
)
WRITE_ITEMS = (
    'items=[{"property1":{"ip":"127.0.0.1"},"session":null,'
    '"event":{"id":"key98765","time":946702800,"type":"sessionStart"}}]'
)
WRITE = (
    "curl https://envName-accountName.minusonedb.com/write \\\n"
    f"-d '{WRITE_ITEMS}&publish=true' \\\n"
    '-H "m1-auth-token: $myToken"'
)
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def curl(server: Server, command: str, **variables: str) -> tuple[int, str]:
    """Run a guide command in bash; returns (HTTP status, body)."""
    assert command.startswith("curl ")
    command = command.replace(GUIDE_HOST, server.url)
    # Ask curl for the status too, without changing the guide's own arguments.
    command += " -s -S -w '\\n%{http_code}'"
    env = {**os.environ, **variables}
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def curl_token(server: Server, user: str, password: str) -> str:
    status, token = curl(server, AUTH, user=user, password=password)
    assert status == 200, token
    return token


def assert_copied_from_the_guide(*commands: str) -> None:
    """Where the guide sits next to the project (the team's workspace), the commands must
    still be in it character for character; a checkout without it runs them all the same."""
    if GUIDE.is_file():
        text = GUIDE.read_text()
        for command in commands:
            assert command in text


def run_the_guide(server: Server, admin_password: str) -> None:
    assert_copied_from_the_guide(USER_ADD, USER_UPDATE, CORS_ADD_LOCAL, CORS_ADD_M1)
    admin = curl_token(server, "admin", admin_password)

    status, body = curl(server, USER_ADD, adminToken=admin)
    assert (status, body) == (204, "")
    user = server.get("/user/get", admin, params={"username": "instrument"}).json()
    assert user == {"username": "instrument", "rights": ["publish"]}

    # The guide's second command narrows an existing user; run it on a broader one.
    server.post("/user/update", admin, data={"username": "instrument", "rights": "publish,get"})
    status, body = curl(server, USER_UPDATE, adminToken=admin)
    assert (status, body) == (204, "")
    assert server.get("/user/get", admin, params={"username": "instrument"}).json()["rights"] == [
        "publish"
    ]

    for command, domain in (
        (CORS_ADD_LOCAL, "localhost.somethingunique"),
        (CORS_ADD_M1, "minusonedb.com"),
    ):
        status, body = curl(server, command, myToken=admin)
        assert (status, body) == (204, "")
        assert domain in server.get("/system/cors", admin).text.split(",")
    assert server.get("/system/cors", admin).text == "localhost.somethingunique,minusonedb.com"

    instrument = curl_token(server, "instrument", "ChangeMeNow!")
    status, body = curl(server, WRITE, myToken=instrument)
    assert (status, body) == (204, "")
    record = _get_when_stored(server, admin, 0)
    assert record["event.type"] == "sessionStart"
    assert record["event.id"] == "key98765"
    assert record["event.time"] == 946702800
    assert record["property1.ip"] == "127.0.0.1"
    assert "session" not in record  # null means absent
    assert record["_m1key"] == 0
    assert record["_m1.ip"] == "127.0.0.1"
    assert ISO_MS_Z.match(record["_m1.receivedUTC"]), record["_m1.receivedUTC"]
    assert 0 <= record["_m1rand"] < 1
    # The publish-only instrument user cannot read what it wrote.
    status, _ = curl(
        server,
        'curl https://envName-accountName.minusonedb.com/get -d "ids=0" '
        '-H "m1-auth-token: $myToken"',
        myToken=instrument,
    )
    assert status == 403


def _get_when_stored(server: Server, token: str, key: int) -> dict:
    """async writes are durable within the group-commit interval; poll, do not guess."""
    deadline = time.monotonic() + 10
    while True:
        records = server.post("/get", token, data={"ids": str(key)}).json()
        if records or time.monotonic() > deadline:
            assert records, f"_m1key {key} never became readable"
            return records[0]
        time.sleep(0.02)


def test_guide_commands_against_a_test_server(server: Server) -> None:
    run_the_guide(server, server.admin_password)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_make_run_defaults(tmp_path: Path) -> None:
    """What `make run` runs: `.venv/bin/m1lite serve` with no flags, in a fresh directory."""
    m1lite = Path(sys.executable).with_name("m1lite")
    assert m1lite.is_file(), f"{m1lite} missing: is the package installed in the venv?"
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    env: dict[str, str | None] = {"M1LITE_ADMIN_PASSWORD": None}
    port = 8080
    if not _port_free(port):
        from integration.server import free_port

        port = free_port()
        env["M1LITE_PORT"] = str(port)  # make run passes no flags, so it honours this
    server = Server(
        cwd / "m1lite-data",
        tmp_path / "logs",
        argv=[str(m1lite), "serve"],
        cwd=cwd,
        port=port,
        env=env,
    )
    try:
        server.start()
        assert server.url == f"http://127.0.0.1:{port}"
        printed = re.search(r"created user 'admin' with password (\S+)", server.stderr())
        assert printed, server.stderr()
        password = printed.group(1)
        assert len(password) >= 8
        assert (cwd / "m1lite-data").is_dir()
        assert [p.name for p in cwd.iterdir()] == ["m1lite-data"]
        run_the_guide(server, password)
        assert server.stop(signal.SIGTERM) == 0
        # Second start: same admin, and the password is not printed again.
        server.start()
        assert "password" not in server.stderr()
        assert server.login("admin", password)
    finally:
        server.stop()

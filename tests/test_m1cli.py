"""The `m1` client, run as the real executable against a real m1lite server.

Every `m1 ...` line of the event capture guide is run here with ENV replaced by
a saved name. Each test gets its own config directory (M1_CONFIG_DIR), so saved
names and tokens never leak between tests; the server is shared by the module,
so tests use user names of their own.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ADMIN_PASSWORD = "m1cli-admin-password"
M1_EXE = Path(sys.executable).parent / "m1"
M1 = [str(M1_EXE)] if M1_EXE.exists() else [sys.executable, "-m", "m1lite.m1cli"]

# The guide's addSessionStore.json exactly as its web page shows it, including
# the Markdown line-break backslashes a copy-paste brings along.
GUIDE_ADD_SESSION_STORE = """{
"environment": {
"stores": [\\
],
"sessionStores": [{\\
"store": "stash",\\
"shards": 1,\\
"replicas": 1\\
}]
}
}
"""

GUIDE_FACET_JSON = """{
"facet": {
"by_state": {
"field": "_m1.geo.subdivision_1_iso_code",
"type": "terms"
}
}
}"""


SERVE = [sys.executable, "-m", "m1lite", "serve", "--host", "127.0.0.1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("m1cli-server")
    port = free_port()
    env = {**os.environ, "M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    with (base / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [*SERVE, "--data", str(base / "data"), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(url, process, base / "server.log")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_ping(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server did not answer /ping: {log.read_text()}")


Result = subprocess.CompletedProcess[str]


class Runner:
    """Runs `m1` with its own config directory; `sh` takes a command line as a shell would."""

    def __init__(self, config: Path, cwd: Path) -> None:
        self.config = config
        self.cwd = cwd

    def __call__(self, *args: str, input: str = "") -> Result:
        return subprocess.run(
            [*M1, *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, "M1_CONFIG_DIR": str(self.config)},
            cwd=self.cwd,
            timeout=60,
        )

    def sh(self, line: str, input: str = "") -> Result:
        return self(*shlex.split(line), input=input)


@pytest.fixture
def m1(tmp_path: Path) -> Runner:
    return Runner(tmp_path / "config", tmp_path)


@pytest.fixture
def admin(m1: Runner, server_url: str) -> Runner:
    """An m1 with `local` saved and logged in as admin."""
    ok(m1("env", "add", "local", server_url))
    ok(m1.sh(f"auth local -username admin -password {ADMIN_PASSWORD}"))
    return m1


def ok(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def saved_token(config: Path, url: str) -> str:
    return str(json.loads((config / "tokens.json").read_text())[url]["token"])


# ---------------------------------------------------------------- help and usage


def test_help_exits_zero_and_shows_guide_examples(m1: Runner) -> None:
    out = ok(m1("--help"))
    assert "m1 [OPTIONS] ENV PATH [-param value ...]" in out
    assert "m1 orchestrate addStores local envKey addSessionStore.json" in out
    assert "m1 local system/cors/add -domains localhost.somethingunique" in out
    assert ok(m1("help")) == out
    assert ok(m1("-h")) == out
    assert "m1 auth ENV" in ok(m1("auth", "--help"))
    assert "addStores ENV [ENVKEY] FILE" in ok(m1("orchestrate", "--help"))
    assert "m1 env add local" in ok(m1("env", "--help"))
    # The generic call help needs neither a saved ENV nor a server.
    assert "-name @file" in ok(m1.sh("anywhere user/add --help"))
    assert "-name @file" in ok(m1.sh("anywhere --help"))


def test_usage_errors_exit_64(m1: Runner) -> None:
    assert m1().returncode == 64
    unknown = m1.sh("nosuchenv ping")
    assert unknown.returncode == 64
    assert "m1 env add nosuchenv URL" in unknown.stderr
    missing_value = m1.sh("http://127.0.0.1:9 user/add -username")
    assert missing_value.returncode == 64
    assert "-username needs a value" in missing_value.stderr
    assert m1.sh("http://127.0.0.1:9 user/add username x").returncode == 64
    assert m1.sh("http://127.0.0.1:9").returncode == 64
    assert m1("--bogus").returncode == 64
    missing_file = m1.sh("http://127.0.0.1:9 schema/add -properties @nope.json")
    assert missing_file.returncode == 64
    assert "nope.json" in missing_file.stderr


# ---------------------------------------------------------------- saved environments


def test_env_add_list_remove_and_private_files(tmp_path: Path, server_url: str) -> None:
    config = tmp_path / "fresh" / "m1"
    m1 = Runner(config, tmp_path)
    assert ok(m1("env", "add", "local", server_url + "/")) == ""
    assert ok(m1.sh("env add other https://example.invalid")) == ""
    listing = ok(m1.sh("env list"))
    assert "local" in listing and server_url in listing and "no token" in listing
    assert "other" in listing and "https://example.invalid" in listing

    assert stat.S_IMODE(config.stat().st_mode) == 0o700
    assert stat.S_IMODE((config / "envs.json").stat().st_mode) == 0o600
    ok(m1.sh(f"auth local -username admin -password {ADMIN_PASSWORD}"))
    assert stat.S_IMODE((config / "tokens.json").stat().st_mode) == 0o600
    assert "token for admin" in ok(m1.sh("env list"))

    ok(m1.sh("env remove local"))
    listing = ok(m1.sh("env list"))
    assert "local" not in listing and "other" in listing
    # The token went with the name: nothing else pointed at that URL.
    assert server_url not in (config / "tokens.json").read_text()
    assert m1.sh("local ping").returncode == 64
    assert m1.sh("env remove local").returncode == 64


def test_env_add_rejects_bad_names_and_urls(m1: Runner) -> None:
    assert m1.sh("env add auth http://127.0.0.1:1").returncode == 64
    assert m1.sh("env add local ftp://example.com").returncode == 64
    assert m1.sh("env add local not-a-url").returncode == 64
    assert m1.sh("env frobnicate").returncode == 64


# ---------------------------------------------------------------- auth


def test_auth_reads_username_and_password_from_stdin(
    m1: Runner, tmp_path: Path, server_url: str
) -> None:
    ok(m1("env", "add", "local", server_url))
    done = m1.sh("auth local", input=f"admin\n{ADMIN_PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    assert "as admin" in done.stderr
    record = json.loads((tmp_path / "config" / "tokens.json").read_text())[server_url]
    assert record["username"] == "admin"
    # An admin may read token-expire-ms, so the expiry is known.
    assert record["expires"].endswith("Z")
    users = json.loads(ok(m1.sh("local user/list")))
    assert "admin" in [u["username"] for u in users]


def test_auth_with_parameters_and_a_url_env(m1: Runner, server_url: str) -> None:
    ok(m1.sh(f"auth {server_url} -username admin -password {ADMIN_PASSWORD}"))
    assert json.loads(ok(m1.sh(f"{server_url} user/get -username admin")))["username"] == "admin"
    # A name saved later for the same URL finds the same token.
    ok(m1("env", "add", "later", server_url))
    ok(m1.sh("later user/list"))


def test_wrong_password_is_a_server_error(m1: Runner, server_url: str) -> None:
    result = m1.sh(f"auth {server_url} -username admin -password wrong-password")
    assert result.returncode == 1
    assert result.stderr.startswith("m1: 401 ")


def test_at_file_and_at_at_escape(admin: Runner, tmp_path: Path, server_url: str) -> None:
    ok(admin.sh("local user/add -username atuser -password @@literal-pw -rights get"))
    (tmp_path / "pw.txt").write_text("@literal-pw\n")
    other = Runner(tmp_path / "other-config", tmp_path)
    # The file's trailing newline is not part of the password.
    ok(other.sh(f"auth {server_url} -username atuser -password @pw.txt"))
    ok(other.sh(f"auth {server_url} -username atuser -password @@literal-pw"))
    assert other.sh(f"auth {server_url} -username atuser -password literal-pw").returncode == 1


# ---------------------------------------------------------------- the guide


def reached_server(result: Result, path: str) -> None:
    """`query` and `session/query` may not exist yet: either an answer or the server's 404."""
    if result.returncode == 0:
        assert isinstance(json.loads(result.stdout), dict)
    else:
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"m1: 404 not_found: no endpoint /{path}")


def rights(m1: Runner, username: str) -> list[str]:
    return list(json.loads(ok(m1.sh(f"local user/get -username {username}")))["rights"])


def test_every_guide_command(admin: Runner, tmp_path: Path) -> None:
    m1 = admin
    # Instrument your website (ENV = the saved name `local`).
    line = """local user/add -username instrument -password ChangeMeNow! -rights '["publish"]'"""
    assert ok(m1.sh(line)) == ""  # 204 prints nothing
    ok(m1.sh("""local user/update -username instrument -rights '["publish"]'"""))
    assert rights(m1, "instrument") == ["publish"]
    ok(m1.sh("local system/cors/add -domains localhost.somethingunique"))
    ok(m1.sh("local system/cors/add -domains minusonedb.com"))
    cors = ok(m1.sh("local system/cors"))
    assert "localhost.somethingunique" in cors and "minusonedb.com" in cors
    recent = """local query -store index -q '*' -sort "_m1.receivedUTC desc" -rows 5"""
    reached_server(m1.sh(recent), "query")
    by_state = """local query -store index -q '*' -json '{
"facet": {
"by_state": {
"field": "_m1.geo.subdivision_1_iso_code",
"type": "terms"
}
}
}'"""
    reached_server(m1.sh(by_state), "query")
    heartbeats = """local query -store index -q "event.type:heartbeat" \
-sort "_m1.receivedUTC desc" -rows 3"""
    reached_server(m1.sh(heartbeats), "query")

    # Heartbeats on a budget.
    (tmp_path / "addSessionStore.json").write_text(GUIDE_ADD_SESSION_STORE)
    added = ok(m1.sh("orchestrate addStores local envKey addSessionStore.json"))
    assert json.loads(added) == {"added": ["stash"]}
    assert "stash" in [s["name"] for s in json.loads(ok(m1.sh("local session/list")))]
    ok(
        m1.sh(
            """local user/add -username flush -password "change this password" """
            """-rights '["publish", "sessionUpdate", "sessionQuery"]'"""
        )
    )
    assert rights(m1, "flush") == ["publish", "sessionUpdate", "sessionQuery"]
    ok(m1.sh("""local user/update -username instrument -rights '["publish", "sessionUpdate"]'"""))
    assert rights(m1, "instrument") == ["publish", "sessionUpdate"]
    reached_server(m1.sh('local session/query -store stash -q "*"'), "session/query")
    reached_server(m1.sh('local query -store index -q "type:sessionTimeout" -rows 5'), "query")

    # Adding the same store again is the server's 409, reported as an error.
    again = m1.sh("orchestrate addStores local envKey addSessionStore.json")
    assert again.returncode == 1
    assert again.stderr.startswith("m1: 409 ")


def test_orchestrate_without_envkey_and_plain_json(admin: Runner, tmp_path: Path) -> None:
    template = {"environment": {"stores": [], "sessionStores": [{"store": "cart"}]}}
    (tmp_path / "cart.json").write_text(json.dumps(template))
    assert json.loads(ok(admin.sh("orchestrate addStores local cart.json"))) == {"added": ["cart"]}
    assert admin.sh("orchestrate addStores local").returncode == 64
    assert admin.sh("orchestrate createEnv local x.json").returncode == 64


def test_system_parameters_as_in_the_api_docs(admin: Runner) -> None:
    assert ok(admin.sh("local system -geo true -token-expire-ms 86400000")) == ""
    values = json.loads(ok(admin.sh("local system")))
    assert values["geo"] == "true"
    assert values["token-expire-ms"] == "86400000"


def test_schema_add_properties_from_file(admin: Runner, tmp_path: Path) -> None:
    properties = [
        {"name": "myTags", "type": "string", "multi": True, "description": "Important tags."},
        {"name": "myBoolean", "type": "boolean"},
    ]
    (tmp_path / "fileWithSchema.json").write_text(json.dumps(properties, indent=2) + "\n")
    ok(admin.sh("local schema/add -properties @fileWithSchema.json"))
    schema = json.loads(ok(admin.sh("local schema")))
    entries = schema if isinstance(schema, list) else list(schema.values())
    by_name = {p["name"]: p for p in entries}
    assert by_name["myTags"]["type"] == "string"
    assert by_name["myBoolean"]["type"] == "boolean"


# ---------------------------------------------------------------- requests and output


def test_write_from_stdin_and_get_back(admin: Runner) -> None:
    items = [{"event": {"type": "view"}, "n": 1}, {"event": {"type": "click"}, "n": 2}]
    written = admin.sh("local write -items @- -async false", input=json.dumps(items))
    keys = json.loads(ok(written))
    assert len(keys) == 2
    records = json.loads(ok(admin.sh(f"local get -ids {','.join(map(str, keys))}")))
    assert [r["event.type"] for r in records] == ["view", "click"]


def test_publish_uploads_a_local_file(admin: Runner, tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    progress = json.loads(ok(admin.sh("local publish -file @events.jsonl")))
    assert progress["rows"] == 2
    assert progress["done"] is True


def test_output_forms(admin: Runner, tmp_path: Path, server_url: str) -> None:
    assert ok(admin.sh("local ping")) == "true\n"  # ping only answers GET
    pretty = ok(admin.sh("local user/list"))
    assert pretty == json.dumps(json.loads(pretty), indent=2, ensure_ascii=False) + "\n"
    token = saved_token(tmp_path / "config", server_url)
    direct = httpx.post(f"{server_url}/user/list", headers={"m1-auth-token": token})
    assert ok(admin.sh("local user/list --raw")) == direct.text
    assert ok(admin.sh("--raw local user/list")) == direct.text
    # Text answers come as they are (plus a final newline).
    assert ok(admin.sh("local system/password-min-length")) == "8\n"


# ---------------------------------------------------------------- errors


def test_forbidden_for_a_publish_only_user(admin: Runner, tmp_path: Path, server_url: str) -> None:
    ok(admin.sh("""local user/add -username pubonly -password pubonly-pw -rights '["publish"]'"""))
    m1 = Runner(tmp_path / "pub-config", tmp_path)
    ok(m1.sh(f"auth {server_url} -username pubonly -password pubonly-pw"))
    result = m1.sh(f"{server_url} user/list")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("m1: 403 forbidden: User pubonly does not have")


def test_bad_or_missing_token(admin: Runner, tmp_path: Path, server_url: str) -> None:
    tokens_file = tmp_path / "config" / "tokens.json"
    tokens = json.loads(tokens_file.read_text())
    tokens[server_url]["token"] = "not-a-real-token"
    tokens_file.write_text(json.dumps(tokens))
    result = admin.sh("local user/list")
    assert result.returncode == 1
    assert result.stderr.startswith("m1: 401 ")
    assert "token expired or invalid: run m1 auth local" in result.stderr

    fresh = Runner(tmp_path / "empty-config", tmp_path)
    result = fresh.sh(f"{server_url} user/list")
    assert result.returncode == 1
    assert f"no saved token for {server_url}: run m1 auth {server_url}" in result.stderr


def test_connection_refused_exits_2(m1: Runner) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = m1.sh(f"{url} ping")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr
    assert m1.sh(f"auth {url} -username a -password b").returncode == 2

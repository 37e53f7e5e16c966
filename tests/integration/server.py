"""A real m1lite server in a subprocess, for tests that talk HTTP to it.

`Server` runs `python -m m1lite serve` on 127.0.0.1 and a free port, in its own process group,
with a known admin password, and waits for `/ping`. Every started server is remembered so the
session teardown can kill any a test forgot (see tests/conftest.py): no leaked processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

ADMIN_USER = "admin"
ADMIN_PASSWORD = "integration-admin-pw"
TOKEN_HEADER = "m1-auth-token"
START_TIMEOUT_S = 15.0

# Every Server ever started in this test process, for the last-resort cleanup.
_LIVE: set[Server] = set()


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerFailed(RuntimeError):
    """The server exited or never answered /ping."""


class Server:
    """One `m1lite serve` process. Not started until `start()` (the fixtures do that)."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        flags: Iterable[str] = (),
        port: int | None = None,
        env: dict[str, str | None] | None = None,
        argv: list[str] | None = None,
        cwd: Path | None = None,
        admin_password: str = ADMIN_PASSWORD,
    ) -> None:
        """`argv` replaces the whole command (then `data_dir` and `port` must match what it
        implies); `env` entries are added to the environment, a None value removes one."""
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.flags = list(flags)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.argv = argv
        self.cwd = cwd
        self.admin_password = admin_password
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._client: httpx.Client | None = None
        self._admin_token: str | None = None

    # -- process ----------------------------------------------------------------------

    def command(self) -> list[str]:
        if self.argv is not None:
            return list(self.argv)
        return [
            sys.executable,
            "-m",
            "m1lite",
            "serve",
            "--data",
            str(self.data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.flags,
        ]

    def environ(self) -> dict[str, str]:
        # The test runner's own M1LITE_* settings must not leak into the server.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("M1LITE_")}
        environ["M1LITE_ADMIN_PASSWORD"] = self.admin_password
        for name, value in self.extra_env.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        return environ

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"server-{self.starts}.stderr"

    def stderr(self) -> str:
        """What the current (or last) run printed on stderr."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Server:
        if self.running:
            raise RuntimeError("server already running")
        self.starts += 1
        with (
            open(self.log_dir / f"server-{self.starts}.stdout", "wb") as out,
            open(self.stderr_path, "wb") as err,
        ):
            # Files, not pipes: a chatty server must never block on a full pipe.
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.environ(),
                cwd=self.cwd,
                start_new_session=True,  # own process group: killpg reaches everything
            )
        _LIVE.add(self)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc is not None
        while True:
            code = self.proc.poll()
            if code is not None:
                _LIVE.discard(self)
                raise ServerFailed(
                    f"m1lite exited with {code} before answering /ping; stderr:\n{self.stderr()}"
                )
            try:
                if httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise ServerFailed(
                    f"m1lite did not answer /ping within {START_TIMEOUT_S} s; stderr:\n"
                    f"{self.stderr()}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the server and wait for it; SIGKILL if it outlives `timeout`.

        Returns the exit code (None if it was never started).
        """
        self._close_client()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg()
                self.proc.wait(5)
        self._killpg()  # anything the server itself started
        _LIVE.discard(self)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: a crash, with no chance to drain or clean up."""
        self._close_client()
        if self.proc is None:
            return None
        self._killpg()
        self.proc.wait(5)
        _LIVE.discard(self)
        return self.proc.returncode

    def _killpg(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> Server:
        """Stop (gracefully by default) and start again on the same data dir and port."""
        self.stop(sig)
        self._admin_token = None
        return self.start()

    # -- HTTP -------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0)
        return self._client

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One request; `token` goes in the m1-auth-token header."""
        if token is not None:
            headers = dict(kwargs.pop("headers", None) or {})
            headers[TOKEN_HEADER] = token
            kwargs["headers"] = headers
        return self.client.request(method, path, **kwargs)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, token, **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, token, **kwargs)

    def login(self, username: str, password: str, **params: Any) -> str:
        """A token from POST /auth (extra params such as ip or ttl are passed along)."""
        response = self.post("/auth", data={"username": username, "password": password, **params})
        if response.status_code != 200:
            raise AssertionError(f"/auth for {username}: {response.status_code} {response.text}")
        return response.text

    def admin_token(self) -> str:
        """The admin's token, minted once per server run."""
        if self._admin_token is None:
            self._admin_token = self.login(ADMIN_USER, self.admin_password)
        return self._admin_token

    def add_user(self, username: str, password: str, rights: Iterable[str]) -> str:
        """Create a user (as admin) and return a token for it."""
        response = self.post(
            "/user/add",
            self.admin_token(),
            data={"username": username, "password": password, "rights": ",".join(rights)},
        )
        if response.status_code != 204:
            raise AssertionError(f"/user/add {username}: {response.status_code} {response.text}")
        return self.login(username, password)


def stop_all() -> None:
    """Kill every server still running (session teardown's safety net)."""
    for server in list(_LIVE):
        server.kill()


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The one error shape: JSON, exactly status/message/error, status = the HTTP code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"status", "message", "error"}, body
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["error"], str) and body["error"]
    return body

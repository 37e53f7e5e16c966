"""Durability acceptance tests: what a real server promises about acknowledged events
across kill -9, SIGTERM, a full disk map and a second server on the same data dir.

Each test runs `python -m m1lite serve` subprocesses (own process group) through the
small `Proc` helper below, and judges only what a client can see: HTTP statuses and
bodies, and what `/get` returns after a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

PASSWORD = "known"
TOKEN_HEADER = "m1-auth-token"
MAX_GET_IDS = 10_000
START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    """One `m1lite serve` subprocess on a fresh port; stderr goes to a file."""

    def __init__(self, data_dir: Path, log_dir: Path, *flags: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"server-{self.port}.stderr"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("M1LITE_")}
        environ["M1LITE_ADMIN_PASSWORD"] = PASSWORD
        command = [
            *(sys.executable, "-m", "m1lite", "serve", "--data", str(data_dir)),
            *("--host", "127.0.0.1", "--port", str(self.port), *flags),
        ]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=environ,
                start_new_session=True,  # its own process group, for killpg
            )
        self.client = httpx.Client(base_url=self.url, timeout=30.0)
        self._token: str | None = None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self) -> Proc:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.stderr()}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/ping", timeout=1.0).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise AssertionError(f"server never answered /ping:\n{self.stderr()}")
            time.sleep(0.05)

    @property
    def token(self) -> str:
        if self._token is None:
            response = self.client.post("/auth", data={"username": "admin", "password": PASSWORD})
            assert response.status_code == 200, response.text
            self._token = response.text
        return self._token

    def post(self, path: str, **data: Any) -> httpx.Response:
        return self.client.post(path, data=data, headers={TOKEN_HEADER: self.token})

    def write(self, items: list[dict[str, Any]], *, durable: bool) -> httpx.Response:
        return self.post("/write", items=json.dumps(items), **{"async": str(not durable).lower()})

    def get(self, keys: list[int]) -> list[dict[str, Any]]:
        """Records for the keys, asked in chunks of at most MAX_GET_IDS."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), MAX_GET_IDS):
            chunk = keys[start : start + MAX_GET_IDS]
            response = self.post("/get", ids=",".join(map(str, chunk)))
            assert response.status_code == 200, response.text
            found += response.json()
        return found

    def lake_events(self) -> int:
        response = self.client.get("/health", headers={TOKEN_HEADER: self.token})
        assert response.status_code == 200, response.text
        return int(response.json()["lake"]["details"]["events"])

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.client.close()

    def sigterm(self, timeout: float = 10.0) -> int:
        """SIGTERM and the exit code; raises TimeoutExpired if it does not exit in time."""
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def reap(self) -> None:
        """Teardown: whatever is left of the process group dies."""
        self.client.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """serve(data_dir, *flags) starts a server and waits for /ping; all reaped at teardown."""
    started: list[Proc] = []

    def start(data_dir: Path, *flags: str, ready: bool = True) -> Proc:
        proc = Proc(data_dir, tmp_path / "logs", *flags)
        started.append(proc)
        return proc.wait_ready() if ready else proc

    yield start
    for proc in started:
        proc.reap()


def assert_records(server: Proc, acked: dict[int, str]) -> None:
    """Every acknowledged key is there, holding the marker its ack promised."""
    keys = sorted(acked)
    records = server.get(keys)
    assert len(records) == len(keys), f"{len(keys) - len(records)} acknowledged events lost"
    for key, record in zip(keys, records, strict=True):
        assert record["_m1key"] == key
        assert record["marker"] == acked[key], key


# -- 1. kill -9 during durable writes -----------------------------------------------------


def _durable_writer(
    url: str, token: str, writer: int, seed: int, stop: threading.Event, out: list[tuple]
) -> None:
    """POST async=false writes until the server goes away; record each (keys, markers) ack."""
    rng = random.Random(seed * 100 + writer)
    with httpx.Client(base_url=url, timeout=30.0, headers={TOKEN_HEADER: token}) as client:
        seq = 0
        while not stop.is_set():
            markers = [f"r{seed}-w{writer}-s{seq}-i{i}" for i in range(rng.randint(1, 20))]
            items = [{"marker": m, "writer": writer, "seq": seq} for m in markers]
            seq += 1
            try:
                response = client.post(
                    "/write", data={"items": json.dumps(items), "async": "false"}
                )
            except httpx.TransportError:
                return  # killed mid-request: no ack, no promise
            if response.status_code != 200:
                out.append(("error", response.status_code, response.text))
                return
            out.append((response.json(), markers))


def test_kill_9_during_durable_writes_loses_no_acknowledged_event(
    tmp_path: Path, serve: Any
) -> None:
    data = tmp_path / "data"
    server = serve(data)
    acked: dict[int, str] = {}  # key -> marker, across all rounds
    per_round = []
    for seed in (11, 22, 33):
        events_before = server.lake_events()
        token = server.token
        stop = threading.Event()
        outs: list[list[tuple]] = [[] for _ in range(4)]
        threads = [
            threading.Thread(
                target=_durable_writer, args=(server.url, token, w, seed, stop, outs[w])
            )
            for w in range(4)
        ]
        for thread in threads:
            thread.start()
        # The kill lands while all four writers are mid-stream (the timing only varies
        # where it lands; nothing below depends on it).
        time.sleep(random.Random(seed).uniform(0.8, 1.6))
        server.kill9()
        stop.set()
        for thread in threads:
            thread.join()

        round_keys: list[int] = []
        for out in outs:
            for keys, markers in out:
                assert keys != "error", (keys, markers)
                assert len(keys) == len(markers), "one key per item"
                for key, marker in zip(keys, markers, strict=True):
                    assert key not in acked, f"key {key} acknowledged twice"
                    acked[key] = marker
                    round_keys.append(key)
        assert round_keys, "no write was acknowledged before the kill"
        assert min(round_keys) >= events_before, "a key was reused after the previous crash"
        per_round.append(len(round_keys))

        server = serve(data)
        assert_records(server, acked)
        # Keys are contiguous from 0 to the highest ack (committed-but-unacknowledged
        # events may follow it: the kill came between commit and answer).
        top = max(acked)
        everything = server.get(list(range(top + 1)))
        assert [r["_m1key"] for r in everything] == list(range(top + 1))
        assert server.lake_events() >= top + 1
    print(f"acknowledged events per kill round: {per_round}")

    # after the last crash, new keys continue after everything in the log
    events = server.lake_events()
    response = server.write([{"marker": "after"}], durable=True)
    assert response.status_code == 200 and response.json() == [events]


# -- 2. SIGTERM drains queued async events ------------------------------------------------


def test_sigterm_commits_queued_async_events(tmp_path: Path, serve: Any) -> None:
    data = tmp_path / "data"
    # A group commit far longer than the test: the events are certainly still in memory
    # when the SIGTERM comes, whatever the machine's speed.
    server = serve(data, "--group-commit-ms", "60000")
    markers: list[str] = []
    for request in range(20):
        batch = [f"q{request}-{i}" for i in range(50)]
        response = server.write([{"marker": m} for m in batch], durable=False)
        assert response.status_code == 204, response.text
        markers += batch
    health = server.client.get("/health", headers={TOKEN_HEADER: server.token}).json()
    assert health["db"]["details"]["queuedEvents"] == len(markers)
    assert health["lake"]["details"]["events"] == 0
    assert server.sigterm(timeout=10) == 0, server.stderr()

    server = serve(data)
    records = server.get(list(range(len(markers))))
    assert sorted(r["marker"] for r in records) == sorted(markers)
    assert server.lake_events() == len(markers)


# -- 3. a full map answers 507 and keeps what it acknowledged -----------------------------


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and body["error"] == code
    assert isinstance(body["message"], str) and body["message"]


def test_full_map_answers_507_and_keeps_acknowledged_events(tmp_path: Path, serve: Any) -> None:
    data = tmp_path / "data"
    server = serve(data, "--map-size-mb", "1", "--max-map-size-mb", "4")
    acked: dict[int, str] = {}
    pad = "p" * 3000
    full = None
    for request in range(1000):
        batch = [f"m{request}-{i}" for i in range(20)]
        response = server.write([{"marker": m, "pad": pad} for m in batch], durable=True)
        if response.status_code != 200:
            full = response
            break
        for key, marker in zip(response.json(), batch, strict=True):
            acked[key] = marker
    assert full is not None, "the 4 MiB map never filled"
    _error(full, 507, "storage_full")
    assert acked and sorted(acked) == list(range(len(acked)))

    # Full: reads keep answering, and no write is accepted only to be lost.
    assert server.client.get("/ping").json() is True
    assert_records(server, acked)
    _error(server.write([{"marker": "async"}], durable=False), 507, "storage_full")
    # async=false is tried (it can learn that space came back); as big as the write
    # that failed, it fails the same way.
    retry = [{"marker": f"sync-{i}", "pad": pad} for i in range(20)]
    _error(server.write(retry, durable=True), 507, "storage_full")
    health = server.client.get("/health", headers={TOKEN_HEADER: server.token}).json()
    assert health["db"]["status"] == "FAILED"
    login = server.client.post("/auth", data={"username": "admin", "password": PASSWORD})
    assert login.status_code in (200, 507), login.text  # never a 500
    assert server.sigterm() == 0, server.stderr()

    # Restarted with room to grow: everything acknowledged is there; writing works again
    # and the refused writes used up no keys.
    server = serve(data, "--map-size-mb", "1", "--max-map-size-mb", "64")
    assert_records(server, acked)
    assert server.lake_events() == len(acked)
    response = server.write([{"marker": "again", "pad": pad}], durable=True)
    assert response.status_code == 200 and response.json() == [len(acked)]
    assert server.write([{"marker": "async again"}], durable=False).status_code == 204


# -- 4. one server per data directory -----------------------------------------------------


def test_second_server_on_the_same_data_dir_refuses_to_start(tmp_path: Path, serve: Any) -> None:
    data = tmp_path / "data"
    first = serve(data)
    keys = first.write([{"marker": "first"}], durable=True).json()

    second = serve(data, ready=False)
    assert second.proc.wait(START_TIMEOUT_S) == 3
    message = second.stderr()
    assert "in use" in message and str(data) in message, message

    assert first.client.get("/ping").status_code == 200
    assert [r["marker"] for r in first.get(keys)] == ["first"]
    assert first.write([{"marker": "still"}], durable=True).json() == [keys[0] + 1]


# -- 5. bad input in one request never costs another request its events -----------------


def test_an_unindexable_field_loses_no_other_acknowledged_event(tmp_path: Path, serve: Any) -> None:
    # A long group commit puts both requests' events into one commit, deterministically.
    server = serve(tmp_path / "data", "--group-commit-ms", "60000")
    assert server.write([{"marker": "queued"}], durable=False).status_code == 204
    odd = {"marker": "odd", "n" * 600: 1, "s" * 600: "x"}
    response = server.write([odd], durable=True)
    assert response.status_code == 200, response.text
    assert response.json() == [1]
    records = server.get([0, 1])
    assert [r["marker"] for r in records] == ["queued", "odd"]
    assert records[1]["n" * 600] == 1 and records[1]["s" * 600] == "x"
    assert server.sigterm() == 0
    restarted = serve(tmp_path / "data")
    assert [r["marker"] for r in restarted.get([0, 1])] == ["queued", "odd"]

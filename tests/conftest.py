"""Shared fixtures: real m1lite servers for the integration tests.

- `server`: a fresh server (own data dir under tmp_path), stopped at teardown.
- `start_server(*flags, data_dir=None, env=None)`: start more servers, or servers with
  flags (e.g. `--trusted-proxies 127.0.0.1`); all stopped at teardown.
- `start_module_server(...)`: the same, but the servers live for the whole test module.
- `shared_server`: one plain server per test module, for tests that only read or that
  create uniquely named things; cheaper than a fresh server each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration.server import Server, stop_all

StartServer = Callable[..., Server]


def _factory(base: Path) -> tuple[StartServer, list[Server]]:
    started: list[Server] = []

    def start(
        *flags: str, data_dir: Path | None = None, env: dict[str, str | None] | None = None
    ) -> Server:
        n = len(started)
        server = Server(data_dir or base / f"data{n}", base / f"logs{n}", flags=flags, env=env)
        started.append(server)
        return server.start()

    return start, started


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    start, started = _factory(tmp_path)
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> Server:
    return start_server()


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    start, started = _factory(tmp_path_factory.mktemp("module"))
    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(start_module_server: StartServer) -> Server:
    return start_module_server()


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_servers() -> Iterator[None]:
    yield
    stop_all()

"""Shared bench helpers: machine facts and versions, /proc CPU and memory, server
processes, percentiles, results files. Load generators are in http_load.py, py-spy
summaries in profiles.py.

Every figure a bench prints should travel with the machine, versions and settings it was
taken on (`machine_info`, `versions`), and CPU time is read from /proc for the server's
whole process tree, so "server CPU µs per request" holds even though the load generator
shares the cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = ("starlette", "hypercorn", "h11", "msgspec", "lmdb", "pyroaring", "numpy", "httpx")

# -- machine and versions -----------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of Python, the packages measured (`PACKAGES` plus `extra`), m1lite and wrk."""
    found = {"python": platform.python_version()}
    for name in (*PACKAGES, *extra):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    found["m1lite"] = _m1lite_version()
    found["wrk"] = wrk_version()
    return found


def _m1lite_version() -> str:
    try:
        version = metadata.version("m1lite")
    except metadata.PackageNotFoundError:
        version = "?"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    # --no-optional-locks: a bench must not even refresh git's index file.
    dirty = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO), "status", "--porcelain", "-uno"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    where = f"{commit}{'+dirty' if dirty else ''}, " if commit else ""
    return f"{version} ({where}source {source_hash()})"


def source_hash() -> str:
    """A short hash of the m1lite sources measured: the tree changes between commits."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "m1lite").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "missing"
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split("[")[0].strip() if first else "?"


# -- /proc ---------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                kids.extend(int(x) for x in text.split())
    return kids


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def _user_system(stat_path: str) -> tuple[int, int]:
    with contextlib.suppress(OSError, IndexError, ValueError):
        stat = Path(stat_path).read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]), int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return 0, 0


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` and its descendants, all threads, from /proc."""
    user = system = 0
    for member in process_tree(pid):
        u, s = _user_system(f"/proc/{member}/stat")
        user, system = user + u, system + s
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of one process."""
    found = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            found[int(tid)] = sum(_user_system(f"/proc/{pid}/task/{tid}/stat")) / CLOCK_TICKS
    return found


def rss_bytes(pid: int, kind: str = "VmRSS") -> int:
    """Resident memory; kind "RssAnon" leaves out file pages (LMDB's map, libraries)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(kind + ":"):
                return int(line.split()[1]) * 1024
    return 0


def system_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, to tell how loaded the whole machine was."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


@dataclass
class Meter:
    """CPU of a server, of this process's children (wrk) and of the machine, over a span."""

    pid: int
    started: float = 0.0
    server_cpu: float = 0.0
    child_cpu: float = 0.0
    busy: tuple[int, int] = (0, 0)
    server_sys: float = 0.0
    elapsed_s: float = 0.0
    server_cpu_s: float = 0.0
    server_sys_s: float = 0.0
    client_cpu_s: float = 0.0
    self_cpu: float = 0.0
    self_cpu_s: float = 0.0  # this process: the in-process load generator
    machine_busy_cores: float = 0.0

    def __enter__(self) -> Meter:
        self.started = time.monotonic()
        user, self.server_sys = cpu_split(self.pid)
        self.server_cpu = user + self.server_sys
        usage = os.times()
        self.child_cpu = usage.children_user + usage.children_system
        self.self_cpu = usage.user + usage.system
        self.busy = system_busy_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed_s = time.monotonic() - self.started
        user, system = cpu_split(self.pid)
        self.server_cpu_s = user + system - self.server_cpu
        self.server_sys_s = system - self.server_sys
        usage = os.times()
        self.client_cpu_s = usage.children_user + usage.children_system - self.child_cpu
        self.self_cpu_s = usage.user + usage.system - self.self_cpu
        busy, total = system_busy_ticks()
        share = (busy - self.busy[0]) / max(1, total - self.busy[1])
        self.machine_busy_cores = share * (os.cpu_count() or 1)


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server in its own process group, so stopping it never touches anything else."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 30.0) -> Server:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.request("GET", self.base_url + self.ready_path, timeout=1.0)
                if response.status_code < 500:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or
    below it (p95 of 20 values is the 19th, not the largest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


QUIET_LOAD = 0.7  # 1-minute load average below which the machine counts as quiet


def wait_quiet(max_wait_s: float) -> float:
    """Wait (up to max_wait_s) for the 1-minute load average to drop below QUIET_LOAD;
    returns the load average when timing starts."""
    deadline = time.monotonic() + max_wait_s
    load = os.getloadavg()[0]
    if load >= QUIET_LOAD:
        print(f"  load average {load:.2f}: waiting for < {QUIET_LOAD} ...", flush=True)
    while load >= QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    if load >= QUIET_LOAD:
        print(f"  still {load:.2f} after {max_wait_s:.0f} s: measuring anyway", flush=True)
    return round(load, 2)


def start_m1lite(
    data_dir: Path,
    workdir: Path,
    *flags: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
) -> tuple[Server, float]:
    """`m1lite serve` on the data directory and a free port; returns it and the seconds it
    took to answer /ping (a large directory loads its index first)."""
    port = free_port()
    server = Server(
        "m1lite",
        python_command(
            "-m", "m1lite", "serve", "--data", str(data_dir), "--port", str(port), *flags
        ),
        port,
        workdir / "m1lite.log",
        ready_path="/ping",
        env=env or {},
    )
    started = time.perf_counter()
    server.start(timeout_s=timeout_s)
    return server, time.perf_counter() - started


def write_results(results: Any, out: Path | None, prefix: str) -> Path:
    """The results JSON, at `out` or bench/results/<prefix>-<timestamp>.json (not in git)."""
    path = out or REPO / "bench" / "results" / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {path}")
    return path


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_range(values: Sequence[float], digits: int = 0) -> str:
    mid, low, high = median_range(values)
    return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]

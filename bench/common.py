"""Shared bench helpers: machine facts, server processes, /proc CPU, event bodies, wrk, an
open-loop load generator and py-spy profile summaries.

Every figure a bench prints should travel with the machine, versions and settings it was
taken on (`machine_info`, `versions`), and CPU time is read from /proc for the server's
whole process tree, so "server CPU µs per request" holds even though the load generator
shares the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parent.parent
POST_LUA = Path(__file__).resolve().parent / "post.lua"
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


# -- events ----------------------------------------------------------------------------------

# Stand-ins for the per-event values the load generators fill in; letters only, so form
# encoding leaves them as they are.
_ID_MARK = "QQEVENTIDQQ"
_TIME_MARK = 4_242_424_242_424_242
_TIME_TEXT = "QQEVENTTIMEQQ"
_SPLIT = re.compile(f"({_ID_MARK}|{_TIME_TEXT})")

_PATHS = [
    "/",
    "/pricing",
    "/blog",
    "/blog/self-hosted-analytics",
    "/blog/roaring-bitmaps-explained",
    "/docs/getting-started",
    "/docs/api/write",
    "/docs/api/query",
    "/products/trail-runner-2",
    "/products/city-backpack",
    "/cart",
    "/checkout",
    "/account/settings",
    "/search",
    "/about",
]
_REFERRERS = [
    "",
    "",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/",
    "https://t.co/xyz123",
    "https://www.bing.com/search?q=event+capture",
]
_LANGUAGES = ["en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP"]
_SCREENS = [(1920, 1080), (1440, 900), (2560, 1440), (390, 844), (412, 915), (1366, 768)]
_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
]


def make_event(rng: random.Random, session: dict[str, Any]) -> dict[str, Any]:
    """One web event in the shape the guide's instrumentation sends (about 500 B of JSON)."""
    kind = rng.choices(["heartbeat", "view", "sessionStart"], weights=[55, 40, 5])[0]
    path = rng.choice(_PATHS)
    width, height = session["screen"]
    return {
        "session": {"id": session["id"], "start": session["start"]},
        "user": {"id": session["user"]},
        "event": {"id": _ID_MARK, "time": _TIME_MARK, "type": kind},
        "url": {"host": "www.example.com", "path": path},
        "title": f"Example - {path.strip('/').replace('/', ' / ') or 'Home'}",
        "referrer": session["referrer"],
        "screen": {"width": width, "height": height},
        "language": session["language"],
        "userAgent": session["agent"],
    }


def make_session(rng: random.Random) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "start": 1_764_288_000_000 + rng.randrange(86_400_000),
        "referrer": rng.choice(_REFERRERS),
        "language": rng.choice(_LANGUAGES),
        "screen": rng.choice(_SCREENS),
        "agent": rng.choice(_AGENTS),
    }


@dataclass(frozen=True)
class Bodies:
    """Form bodies for /write, as segments around each event's id and time."""

    templates: list[list[str]]
    events_per_body: int
    mean_event_json_bytes: float

    def mean_body_bytes(self) -> float:
        filler = 36 + 13  # a uuid-long event id and a 13-digit time per event
        sizes = [sum(map(len, t)) + filler * self.events_per_body for t in self.templates]
        return statistics.fmean(sizes)


def make_bodies(events_per_body: int, *, is_async: bool, count: int, seed: int = 2024) -> Bodies:
    """`count` distinct bodies of `events_per_body` events (sessions of about ten events)."""
    rng = random.Random(seed)
    sessions = [make_session(rng) for _ in range(max(1, count * events_per_body // 10))]
    templates: list[list[str]] = []
    sizes: list[int] = []
    for _ in range(count):
        events = [make_event(rng, rng.choice(sessions)) for _ in range(events_per_body)]
        text = json.dumps(events, separators=(",", ":")).replace(str(_TIME_MARK), _TIME_TEXT)
        # as sent: a 36-character id in place of the mark, a 13-digit time
        fill = 36 - len(_ID_MARK) + 13 - len(str(_TIME_MARK))
        sizes.extend(len(json.dumps(e, separators=(",", ":"))) + fill for e in events)
        form = f"items={quote(text, safe='')}&publish=true&async={str(is_async).lower()}"
        parts = _SPLIT.split(form)
        marks, segments = parts[1::2], parts[0::2]
        assert marks == [_ID_MARK, _TIME_TEXT] * events_per_body, "event.id must precede time"
        templates.append(segments)
    return Bodies(templates, events_per_body, statistics.fmean(sizes))


def id_prefix() -> str:
    """A fresh uuid-looking prefix per load run, so event ids never repeat across runs."""
    hexed = uuid.uuid4().hex
    return f"{hexed[:8]}-{hexed[8:12]}-4{hexed[13:16]}-8{hexed[17:20]}-"


def render(template: list[str], prefix: str, tid: int, first_event: int, base_ms: int) -> str:
    """The same filling as post.lua's `request`, for the Python load generator."""
    out = [template[0]]
    event = first_event
    for i in range(1, len(template), 2):
        event += 1
        out.append(f"{prefix}{tid:04x}{event:08x}")
        out.append(template[i])
        out.append(str(base_ms + event // 4))
        out.append(template[i + 1])
    return "".join(out)


# -- wrk ---------------------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    # Form-encoded text has no brackets, so a level-1 long string can never be cut short.
    assert "]=]" not in text
    return f"[=[{text}]=]"


def write_wrk_data(
    path: Path, bodies: Bodies, url_path: str, headers: dict[str, str], prefix: str
) -> None:
    lines = ["return {", f"  path = {_lua_string(url_path)},", "  headers = {"]
    lines += [f"    [ {_lua_string(k)} ] = {_lua_string(v)}," for k, v in headers.items()]
    lines += [
        "  },",
        f"  prefix = {_lua_string(prefix)},",
        f"  base_ms = {int(time.time() * 1000)},",
    ]
    lines.append("  templates = {")
    for template in bodies.templates:
        lines.append("    {" + ", ".join(_lua_string(s) for s in template) + "},")
    lines += ["  },", "}", ""]
    path.write_text("\n".join(lines))


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    sent: int
    events_sent: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    stdout: str

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def non_2xx(self) -> int:
        return self.errors["status"]

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")


def run_wrk(
    url: str,
    bodies: Bodies,
    headers: dict[str, str],
    workdir: Path,
    *,
    duration_s: float,
    connections: int = 64,
    threads: int = 1,
) -> WrkResult:
    """`wrk -t1 -c64 -d… --latency -s post.lua URL` with fresh event ids; parsed summary."""
    data = workdir / f"wrk-{uuid.uuid4().hex[:8]}.lua"
    url_path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
    write_wrk_data(data, bodies, url_path, headers, id_prefix())
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
        "--",
        str(data),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    data.unlink()
    line = next((x for x in out.stdout.splitlines() if x.startswith("@@WRK ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[len("@@WRK ") :])
    return WrkResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        sent=raw["sent"],
        events_sent=raw["events_sent"],
        errors={k[4:]: raw[k] for k in raw if k.startswith("err_")},
        latency_ms={
            "mean": raw["lat_mean_us"] / 1000,
            "p50": raw["p50_us"] / 1000,
            "p90": raw["p90_us"] / 1000,
            "p99": raw["p99_us"] / 1000,
            "p99.9": raw["p999_us"] / 1000,
            "max": raw["lat_max_us"] / 1000,
        },
        stdout=out.stdout,
    )


# -- open-loop load at a fixed rate ---------------------------------------------------------


@dataclass
class OpenLoopResult:
    target_rps: float
    connections: int
    duration_s: float
    sent: int
    completed: int
    events_sent: int
    statuses: dict[int, int]
    latencies_ms: list[float]
    max_backlog: int

    @property
    def achieved_rps(self) -> float:
        return self.completed / self.duration_s

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return self.completed - self.ok

    def percentile_ms(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (what wrk reports too)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked responses are not expected from /write")
    if length:
        await reader.readexactly(length)
    return status


async def _open_loop(
    host: str,
    port: int,
    url_path: str,
    headers: dict[str, str],
    bodies: Bodies,
    rate: float,
    duration_s: float,
    connections: int,
) -> OpenLoopResult:
    """Send at `rate` requests/s whatever the server does; latency counts from the moment
    each request was due, so a stalled server shows up as latency (no coordinated
    omission), and requests wait in a backlog when every connection is busy."""
    loop = asyncio.get_running_loop()
    prefix = id_prefix()
    base_ms = int(time.time() * 1000)
    head = f"POST {url_path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counter = {"sent": 0, "events": 0, "backlog": 0}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (when := await due.get()) is not None:
                n = counter["sent"]
                counter["sent"] += 1
                body = render(
                    bodies.templates[n % len(bodies.templates)],
                    prefix,
                    0,
                    counter["events"],
                    base_ms,
                ).encode()
                counter["events"] += bodies.events_per_body
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status = await _read_response(reader)
                latencies.append((loop.time() - when) * 1000)
                statuses[status] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # let the connections open before the clock starts
    total = int(rate * duration_s)
    start = loop.time()
    for i in range(total):
        when = start + i / rate
        delay = when - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        due.put_nowait(when)
        counter["backlog"] = max(counter["backlog"], due.qsize())
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = loop.time() - start
    return OpenLoopResult(
        target_rps=rate,
        connections=connections,
        duration_s=elapsed,
        sent=counter["sent"],
        completed=len(latencies),
        events_sent=counter["events"],
        statuses=dict(statuses),
        latencies_ms=latencies,
        max_backlog=counter["backlog"],
    )


def run_open_loop(
    base_url: str,
    url_path: str,
    headers: dict[str, str],
    bodies: Bodies,
    *,
    rate: float,
    duration_s: float,
    connections: int,
) -> OpenLoopResult:
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    return asyncio.run(
        _open_loop(host, int(port), url_path, headers, bodies, rate, duration_s, connections)
    )


# -- py-spy profiles -------------------------------------------------------------------------

# Frames on (nearly) every stack of a thread: they say nothing about where time goes.
_DRIVERS = frozenset(
    {
        "<module> (m1lite/__main__.py)",
        "_run_module_as_main (<frozen runpy>)",
        "_run_code (<frozen runpy>)",
        "main (m1lite/cli.py)",
        "_serve (m1lite/cli.py)",
        "run (asyncio/runners.py)",
        "Runner.run (asyncio/runners.py)",
        "BaseEventLoop.run_until_complete (asyncio/base_events.py)",
        "BaseEventLoop.run_forever (asyncio/base_events.py)",
        "BaseEventLoop._run_once (asyncio/base_events.py)",
        "Handle._run (asyncio/events.py)",
        "Thread._bootstrap (threading.py)",
        "Thread._bootstrap_inner (threading.py)",
        "Thread.run (threading.py)",
    }
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<where>[^()]*)\)$")


_LIBRARY_PATH = re.compile(r"^.*/site-packages/|^.*?/lib/python3\.\d+/")


def _short_where(where: str) -> str:
    """Paths relative to site-packages, the stdlib or the repository."""
    short = _LIBRARY_PATH.sub("", where)
    if short != where:
        return short
    with contextlib.suppress(ValueError):
        return str(Path(where).relative_to(REPO))
    return where


def summarise_profile(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """Self and cumulative sample shares per function from py-spy's raw (collapsed) output.

    Self time is per function, shown at its hottest line (py-spy samples lines).

    A line is `frame;frame;...;leaf COUNT`, root first; with `--threads` the root is the
    thread. Self time goes to the leaf; cumulative time to every distinct function on the
    stack (once per stack, so recursion does not count twice), leaving out the frames that
    merely drive the event loop or a thread. Shares are of all samples of active threads.
    """
    self_time: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        thread = frames[0] if frames and frames[0].startswith("thread ") else ""
        if thread:
            frames = frames[1:]
        names = [_frame_name(f) for f in frames]
        if not names:
            continue
        total += count
        threads[thread or "?"] += count
        self_time[names[-1]] += count
        self_lines[_frame_name(frames[-1], with_line=True)] += count
        for name in set(names) - _DRIVERS:
            cumulative[name] += count

    def hottest_line(name: str) -> str:
        lines = [(n, where) for where, n in self_lines.items() if where.startswith(name[:-1] + ":")]
        return max(lines)[1] if lines else name

    def shares(counter: Counter[str], lines: bool = False) -> list[dict[str, Any]]:
        return [
            {
                "function": hottest_line(name) if lines else name,
                "samples": n,
                "percent": round(100 * n / max(1, total), 1),
            }
            for name, n in counter.most_common(top)
        ]

    own = Counter({name: n for name, n in cumulative.items() if "(m1lite/" in name})
    return {
        "samples": total,
        "threads": shares(threads),
        "self": shares(self_time, lines=True),
        "cumulative": shares(cumulative),
        # the middleware chain tops the list above; m1lite's own functions say more
        "cumulative_m1lite": shares(own),
    }


def _frame_name(frame: str, *, with_line: bool = False) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    where = _short_where(match["where"])
    if not with_line:
        where = where.rsplit(":", 1)[0]
    return f"{match['func']} ({where})"


def thread_id(frame: str) -> int | None:
    """The OS thread id in py-spy's `thread (TID): NAME` frame (hex ids are not OS ids)."""
    match = re.match(r"thread \((\d+)\)", frame)
    return int(match.group(1)) if match else None


def median_range(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_range(values: Sequence[float], digits: int = 0) -> str:
    mid, low, high = median_range(values)
    return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]

"""Load generators for the HTTP benches: event bodies with fresh ids and times, wrk
(closed loop, as fast as it goes) and an open-loop client at a fixed request rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import statistics
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.common import percentile

POST_LUA = Path(__file__).resolve().parent / "post.lua"


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


async def read_response(reader: asyncio.StreamReader) -> int:
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
                status = await read_response(reader)
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

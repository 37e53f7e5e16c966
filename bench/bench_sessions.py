"""Session stores with 100,000 live sessions: upserts, the flusher's tick, queries, memory.

In process (a real Environment on a real LMDB in a temporary directory, MaxMind's test
geo database loaded):

  upserts    one request per new session through `SessionStores.update` (merge, stamp,
             queue for LMDB), then the same with the group commits drained; then
             durable upserts (async=false) of existing sessions from 64 concurrent tasks
  tick       the flusher's tick with 100,000 live sessions and none due (target < 5 ms)
  queries    the first query (indexes every session), a q=* count, a term count, facets
             by page and country, the 10 most recent, and a refresh after 10,000 updates
  restart    closing and reopening the data directory: the stores rebuilt from LMDB
  flush      every session due at once: timeout events written, sessions removed
  memory     a fresh store in a fresh process under tracemalloc: Python heap (numpy
             included) per live session, for the store alone and with its query index
             (target < 2 KiB per typical session); then the same in another fresh
             process without tracemalloc, as growth of anonymous RSS

Over HTTP (`m1lite serve`, hypercorn, one worker; the 100,000 sessions preloaded): wrk
(-t1 -c64) sends heartbeats to random existing sessions, async=false then async=true.

A typical session is the guide's heartbeat document: `ip`, `session.id`/`session.start`,
`user.id`, `event.id`/`event.time`/`event.type`/`event.data.page` (UUIDs for the ids), plus
the server's `_m1` stamp with 23 geo fields.

Figures need a quiet machine: before each part (and each wrk run) the bench waits, up to
--max-wait s, for the 1-minute load average to drop below 0.7; it prints the load with
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.errors import Unavailable
from m1lite.query.facets import parse_facets
from m1lite.query.parser import parse
from m1lite.sessions.documents import read_ops
from m1lite.sessions.index import SessionQuery

ADMIN_PASSWORD = "bench-admin-password"
GEOIP = common.REPO / "tests" / "data" / "GeoIP2-City-Test.mmdb"
LUA = Path(__file__).resolve().parent / "session_update.lua"
STORE = "stash"
TARGET_TICK_MS = 5.0
TARGET_BYTES = 2048
PAGES = ["/", "/pricing", "/blog", "/docs/getting-started", "/products/trail-runner-2"]
PAGES += ["/cart", "/checkout", "/search", "/about", "/account/settings"]
IPS = ["81.2.69.142", "216.160.83.56", "2.125.160.216", "89.160.20.112", "175.16.199.10"]
IPS += ["67.43.156.5", "81.2.69.160", "216.160.83.60", "202.196.224.5", "2.125.160.220"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000, help="live sessions")
    parser.add_argument("--ticks", type=int, default=2_000, help="ticks timed")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--max-wait", type=float, default=900.0, help="s to wait for quiet")
    parser.add_argument("--only", default="imh", help="parts: i (in process), m (memory), h (HTTP)")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    parser.add_argument(
        "--memory-mode",
        choices=("heap", "rss", "distinct"),
        default="heap",
        help=argparse.SUPPRESS,
    )
    return parser.parse_args(argv)


# -- helpers ----------------------------------------------------------------------------


def current_load() -> float:
    return round(os.getloadavg()[0], 2)


def say(label: str, value: str, load: float | None = None) -> None:
    extra = "" if load is None else f"   [load {load:.2f}]"
    print(f"  {label:<52} {value}{extra}", flush=True)


def session_item(n: int, rng: random.Random) -> dict[str, Any]:
    """The guide's heartbeat upsert (m1-api.md §3.8), with a page."""
    now_ms = int(time.time() * 1000)
    return {
        "ip": IPS[n % len(IPS)],
        "session": {"id": f"bench-{n:06d}", "start": now_ms - rng.randrange(600_000)},
        "user": {"id": str(uuid.UUID(int=rng.getrandbits(128)))},
        "event": {
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "time": now_ms,
            "type": "heartbeat",
            "data": {"page": PAGES[n % len(PAGES)]},
        },
    }


def open_env(data: Path) -> Environment:
    """The guide's environment, except that `stash` times out after an hour: the bench's
    sessions must stay live while it waits for a quiet machine."""
    os.environ.setdefault("M1LITE_ADMIN_PASSWORD", ADMIN_PASSWORD)
    template = data.parent / "template.json"
    template.write_text(
        json.dumps(
            {
                "environment": {
                    "stores": [{"name": "index"}],
                    "sessionStores": [{"store": STORE, "timeoutSeconds": 3600}],
                }
            }
        )
    )
    env = Environment(Config(data=data, template=str(template), geoip=GEOIP))
    env.start()
    return env


async def drain(env: Environment) -> None:
    while env.writer.queued_events:
        await asyncio.sleep(0.01)


async def put(env: Environment, item: dict[str, Any], ip: str) -> None:
    """One async upsert request, waiting for the writer when its queue is full."""
    ops = read_ops([{"upsert": [item]}], "session.id")
    try:
        env.sessions.update(STORE, ops, ip, durable=False)
    except Unavailable:  # queue full: nothing changed; let the writer catch up
        await drain(env)
        env.sessions.update(STORE, ops, ip, durable=False)


async def fill(env: Environment, count: int, seed: int = 7) -> tuple[float, float]:
    """One request per new session; (seconds applying, seconds until committed)."""
    rng = random.Random(seed)
    items = [session_item(n, rng) for n in range(count)]
    started = time.perf_counter()
    for n, item in enumerate(items):
        await put(env, item, IPS[n % len(IPS)])
        if n % 2_000 == 0:
            await asyncio.sleep(0)  # let the writer's answers through
    applied = time.perf_counter() - started
    await drain(env)
    return applied, time.perf_counter() - started


def query(
    env: Environment,
    q: str = "*",
    rows: int = 0,
    facet: dict[str, Any] | None = None,
    sort: list[tuple[str, bool]] | None = None,
) -> tuple[float, int]:
    request = SessionQuery(
        query=parse(q),
        filters=[],
        sort=sort or [("session.id", False)],
        start=0,
        rows=rows,
        facet=None if facet is None else parse_facets(facet),
    )
    started = time.perf_counter()
    answer = env.sessions.search(STORE, request)
    env.sessions.documents(STORE, answer.page)
    return (time.perf_counter() - started) * 1000, answer.count


# -- in process -----------------------------------------------------------------------


async def in_process(args: argparse.Namespace, workdir: Path, out: dict[str, Any]) -> None:
    n = args.sessions
    print(f"\nIn process, {n:,} sessions", flush=True)
    env = open_env(workdir / "inproc")
    load = common.wait_quiet(args.max_wait)
    applied, committed = await fill(env, n)
    out["upsert_apply_per_s"] = n / applied
    out["upsert_committed_per_s"] = n / committed
    say("new sessions, applied (1 upsert per request)", f"{n / applied:,.0f}/s", load)
    say("new sessions, committed to LMDB (async)", f"{n / committed:,.0f}/s")

    # Durable heartbeats to existing sessions from 64 concurrent requests.
    load = current_load()
    rng = random.Random(3)
    total, workers = 20_000, 64
    commits = env.writer.commits

    async def worker(count: int) -> None:
        for _ in range(count):
            k = rng.randrange(n)
            item = {"session": {"id": f"bench-{k:06d}"}, "event": {"id": uuid.uuid4().hex}}
            future = env.sessions.update(
                STORE, read_ops([{"upsert": [item]}], "session.id"), IPS[k % 10], durable=True
            )
            assert future is not None
            await future

    started = time.perf_counter()
    await asyncio.gather(*(worker(total // workers) for _ in range(workers)))
    elapsed = time.perf_counter() - started
    done = total // workers * workers
    per_commit = done / max(1, env.writer.commits - commits)
    out["upsert_durable_per_s"] = done / elapsed
    out["upserts_per_commit"] = per_commit
    say(
        "durable upserts of existing sessions, 64 concurrent",
        f"{done / elapsed:,.0f}/s ({per_commit:.0f} per commit)",
        load,
    )

    # The tick with none due.
    load = current_load()
    env.sessions.index(STORE).last_used = 0.0  # not queried: no background refresh
    times = []
    for _ in range(args.ticks):
        started_ns = time.perf_counter_ns()
        flushed = await env.flusher.tick()
        times.append((time.perf_counter_ns() - started_ns) / 1e6)
        assert flushed == 0
    tick = {
        "median_ms": statistics.median(times),
        "p99_ms": common.percentile(times, 99),
        "max_ms": max(times),
    }
    out["tick_none_due"] = tick
    say(
        f"flusher tick, {n:,} live, none due (median/p99/max)",
        f"{tick['median_ms'] * 1000:.1f} / {tick['p99_ms'] * 1000:.1f} / "
        f"{tick['max_ms'] * 1000:.1f} µs",
        load,
    )

    # Queries.
    load = current_load()
    facet = {
        "facet": {
            "pages": {"field": "event.data.page", "type": "terms"},
            "countries": {"field": "_m1.geo.country_iso_code", "type": "terms"},
        }
    }
    first, count = query(env, "event.type:heartbeat")
    assert count == n, count
    queries: dict[str, float] = {"first query (indexes every session)": first}
    for label, q, rows, facets, sort in (
        ("count, q=* rows=0", "*", 0, None, None),
        ("count, q=event.type:heartbeat rows=0", "event.type:heartbeat", 0, None, None),
        ("facets by page and country, rows=0", "*", 0, facet, None),
        ("10 most recent", "*", 10, None, [("_m1.session.lastUpdated", True)]),
    ):
        runs = [query(env, q, rows, facets, sort)[0] for _ in range(20)]
        queries[label] = statistics.median(runs)
    rng = random.Random(5)
    for k in rng.sample(range(n), min(n, 10_000)):
        item = {"session": {"id": f"bench-{k:06d}"}, "event": {"data": {"page": "/moved"}}}
        await put(env, item, IPS[0])
    await drain(env)
    queries["facets after 10,000 updates (refresh + facets)"] = query(env, "*", 0, facet)[0]
    out["queries_ms"] = queries
    for label, ms in queries.items():
        say(label, f"{ms:,.2f} ms", load)
    env.close()

    # Restart: the stores rebuilt from LMDB.
    load = current_load()
    started = time.perf_counter()
    env = open_env(workdir / "inproc")
    reopen = time.perf_counter() - started
    assert len(env.sessions.store(STORE)) == n
    out["reopen_s"] = reopen
    say(f"reopen with {n:,} sessions (rebuild from LMDB)", f"{reopen:.2f} s", load)

    # Everything due at once.
    load = current_load()
    env.sessions.clock = lambda: time.time() + 7200
    started = time.perf_counter()
    flushed = await env.flusher.tick()
    elapsed = time.perf_counter() - started
    assert flushed == n, flushed
    out["flush_all_per_s"] = n / elapsed
    say(f"flush of {n:,} due sessions (5,000 per commit)", f"{n / elapsed:,.0f} sessions/s", load)
    env.close()


# -- memory -----------------------------------------------------------------------------


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


async def memory(args: argparse.Namespace, workdir: Path, out: dict[str, Any]) -> None:
    """One fresh process per measure: tracemalloc's own tables would count in the RSS."""
    n = args.sessions
    traced = args.memory_mode != "rss"
    distinct = args.memory_mode == "distinct"
    what = "Python heap (tracemalloc)" if traced else "RSS, anonymous memory"
    places = "every session from its own network" if distinct else "typical sessions"
    print(f"\nMemory, {n:,} {places}: {what}, a fresh process", flush=True)
    load = common.wait_quiet(args.max_wait)
    env = open_env(workdir / f"memory-{args.memory_mode}")
    rng = random.Random(11)
    items = [session_item(k, rng) for k in range(n)]
    ips = [IPS[k % 10] for k in range(n)]
    if distinct:
        # The worst case for sharing: a distinct address and geo network per session (the
        # test database knows a few networks: London's fields, each with its own network
        # and position).
        ips = [f"10.{k >> 16}.{(k >> 8) & 255}.{k & 255}" for k in range(n)]
        for item, ip in zip(items, ips, strict=True):
            item["ip"] = ip
        london = env.enricher.geo_fields(IPS[0])
        assert london, "the test geo database did not load"

        def lookup(ip: str) -> dict[str, Any]:
            last = int(ip.rsplit(".", 1)[1])
            return {
                **london,
                "_m1.geo.network": f"{ip}/32",
                "_m1.geo.latitude": 51.5 + last / 1000,
                "_m1.geo.position": f"{51.5 + last / 1000},-0.0931",
            }

        env.sessions.geo._lookup = lookup
    size = statistics.mean(len(json.dumps(item)) for item in items[:1000])
    gc.collect()
    if traced:
        tracemalloc.start()

    def used() -> int:
        return tracemalloc.get_traced_memory()[0] if traced else rss_anon()

    base = used()
    for k, item in enumerate(items):
        await put(env, item, ips[k])
        if k % 2_000 == 0:
            await asyncio.sleep(0)
    await drain(env)
    del items, ips
    gc.collect()
    store_bytes = (used() - base) / n
    query(env, "event.type:heartbeat")
    query(env, "*", 0, {"facet": {"c": {"field": "_m1.geo.country_iso_code", "type": "terms"}}})
    gc.collect()
    total_bytes = (used() - base) / n
    if traced:
        tracemalloc.stop()
    doc = env.sessions.documents(STORE, [(0, env.sessions.store(STORE).generation_at(0))])
    out["memory"] = {
        f"{args.memory_mode}_store_bytes_per_session": store_bytes,
        f"{args.memory_mode}_with_index_bytes_per_session": total_bytes,
    }
    if args.memory_mode == "heap":
        out["memory"]["upsert_json_bytes"] = size
        out["memory"]["stored_doc_json_bytes"] = len(json.dumps(doc[0])) if doc else None
    if args.memory_mode == "heap":
        say("upsert JSON (the client's document)", f"{size:,.0f} B", load)
        if doc:
            say("stored document as /session/query returns it", f"{len(json.dumps(doc[0])):,} B")
    say(f"{what} per session, store only", f"{store_bytes:,.0f} B", load)
    say(f"{what} per session, store + query index", f"{total_bytes:,.0f} B")
    env.close()


def memory_in_children(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The memory part in fresh processes: growth means nothing in one whose heap already
    held (and freed) the other parts' data."""
    found: dict[str, Any] = {}
    for mode in ("heap", "rss", "distinct"):
        result = workdir / f"memory-{mode}.json"
        command = [
            *common.python_command(str(Path(__file__).resolve())),
            *("--only", "m", "--memory-mode", mode, "--sessions", str(args.sessions)),
            *("--out", str(result), "--max-wait", str(args.max_wait)),
        ]
        subprocess.run(command, check=True)
        found.update(json.loads(result.read_text()).get("memory", {}))
    return found


# -- over HTTP --------------------------------------------------------------------------


def run_wrk(url: str, token: str, sessions: int, is_async: bool, args: argparse.Namespace) -> Any:
    command = [
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{args.duration:g}s",
        "--latency",
        "-s",
        str(LUA),
        url + "/session/update",
        "--",
        token,
        str(sessions),
        "true" if is_async else "false",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("@@WRK ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(line[len("@@WRK ") :])


def over_http(args: argparse.Namespace, workdir: Path, out: dict[str, Any]) -> None:
    n = args.sessions
    print(f"\nOver HTTP, {n:,} live sessions", flush=True)
    if shutil.which("wrk") is None:
        print("  wrk not found (apt-get install -y wrk): skipped")
        return
    data = workdir / "http"
    env = open_env(data)
    asyncio.run(fill(env, n))
    env.close()
    port = common.free_port()
    server = common.Server(
        "m1lite",
        common.python_command(
            "-m",
            "m1lite",
            "serve",
            "--data",
            str(data),
            "--port",
            str(port),
            "--geoip",
            str(GEOIP),
            "--trusted-proxies",
            "127.0.0.1",
        ),
        port,
        workdir / "m1lite.log",
        ready_path="/ping",
        env={"M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    ).start()
    try:
        token = httpx.post(
            server.base_url + "/auth",
            data={"username": "admin", "password": ADMIN_PASSWORD, "ip": "*"},
            timeout=30,
        ).text.strip()
        results = {}
        for is_async in (False, True):
            label = "async=true" if is_async else "async=false"
            warm = argparse.Namespace(**{**vars(args), "duration": 3.0})
            run_wrk(server.base_url, token, n, is_async, warm)
            load = common.wait_quiet(args.max_wait)
            with common.Meter(server.pid) as meter:
                raw = run_wrk(server.base_url, token, n, is_async, args)
            rps = raw["requests"] / (raw["duration_us"] / 1e6)
            errors = sum(v for k, v in raw.items() if k.startswith("err_"))
            cpu_us = meter.server_cpu_s / max(1, raw["requests"]) * 1e6
            results[label] = {
                "req_per_s": rps,
                "p50_ms": raw["p50_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "errors": errors,
                "server_cpu_us_per_req": cpu_us,
                "other_cores": meter.machine_busy_cores
                - (meter.server_cpu_s + meter.client_cpu_s) / meter.elapsed_s,
            }
            say(
                f"/session/update {label}, 1 upsert, wrk -c{args.connections}",
                f"{rps:,.0f} req/s, p50 {raw['p50_us'] / 1000:.1f} / p99 "
                f"{raw['p99_us'] / 1000:.1f} ms, {cpu_us:.0f} µs CPU/req, {errors} errors",
                load,
            )
        live = httpx.post(
            server.base_url + "/session/query",
            data={"store": STORE, "rows": 0},
            headers={"m1-auth-token": token},
            timeout=30,
        ).json()["count"]
        assert live == n, f"{live} live sessions after the runs, expected {n}"
        out["http"] = results
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: dict[str, Any] = {
        "machine": common.machine_info(),
        "versions": common.versions(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps(out["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
        workdir = Path(tmp)
        if "i" in args.only:
            asyncio.run(in_process(args, workdir, out))
        if "m" in args.only:
            if args.only == "m":
                asyncio.run(memory(args, workdir, out))
            else:
                out["memory"] = memory_in_children(args, workdir)
        if "h" in args.only:
            over_http(args, workdir, out)
    if args.only == "m" and args.out is not None:  # a memory child: the parent reports
        args.out.write_text(json.dumps(out, default=str))
        return 0
    tick = out.get("tick_none_due", {}).get("median_ms")
    mem = out.get("memory", {}).get("heap_with_index_bytes_per_session")
    print("\nTargets")
    if tick is not None:
        verdict = "met" if out["tick_none_due"]["p99_ms"] < TARGET_TICK_MS else "missed"
        say("tick with none due < 5 ms", f"p99 {out['tick_none_due']['p99_ms']:.4f} ms: {verdict}")
    if mem is not None:
        say(
            "memory < 2 KiB per typical session",
            f"{mem:,.0f} B: " + ("met" if mem < TARGET_BYTES else "missed"),
        )
    common.write_results(out, args.out, "sessions")
    return 0


if __name__ == "__main__":
    sys.exit(main())

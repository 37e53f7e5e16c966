"""Logins (/auth) and token checks: what the browser script's one login per visitor tab
costs the server.

In process (a real Auth on a real LMDB in a temporary directory):

  check      `Auth.authenticate` (what every /write does first) for a token in the
             in-memory cache, and for one only in LMDB (a cache of one entry, the other
             tokens pushed out), in µs per call
  login      `Auth.login` + `Auth.mint_token`: the same password again (the verified-
             password cache answers) against a fresh password each time (scrypt)
  sizes      LMDB bytes per stored token (row and expiry key) and heap per cached token

Over HTTP (`m1lite serve`, hypercorn, one worker, `--trusted-proxies 127.0.0.1`):

  same       64 connections, each from its own address (X-Forwarded-For), logging the
             publish-only user in again and again for --duration s: logins/s, latency,
             server CPU per login, scrypt runs (from /health)
  cold       one client, one login at a time: each with a fresh password set by the
             admin just before (untimed), so every login runs scrypt; then the same with
             the same password; ms per login
  wrong      64 connections sending a wrong password: refusals/s (each one scrypt: the
             cache does not speed up guessing)

`--src DIR` runs the server from another source tree, e.g. the last commit's, for a
before/after: `git archive HEAD | tar -x -C /tmp/m1lite-head` then `--src /tmp/m1lite-head`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, http_load
from m1lite.auth import Auth, token_digest
from m1lite.storage.env import LakeEnv
from m1lite.storage.meta import MetaStore
from m1lite.tokens import TOKEN_PREFIX, Token, TokenTable, encode_row, expiry_key

ADMIN_PASSWORD = "bench-admin-password"
USER, PASSWORD = "instrument", "instrument-password"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="s per HTTP load run")
    parser.add_argument("--connections", type=int, default=64, help="addresses/connections")
    parser.add_argument("--cold", type=int, default=20, help="logins timed one at a time")
    parser.add_argument("--only", default="ih", help="parts: i (in process), h (HTTP)")
    parser.add_argument("--src", type=Path, help="run the server from this source tree")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    return parser.parse_args(argv)


def say(label: str, value: str) -> None:
    print(f"  {label:<56} {value}", flush=True)


def per_call_us(calls: int, seconds: float) -> float:
    return seconds / calls * 1e6


# -- in process -----------------------------------------------------------------------------


def in_process(work: Path) -> dict[str, Any]:
    lake = LakeEnv(work / "lake", map_size_mb=256, max_map_size_mb=4096)
    try:
        return _in_process(MetaStore(lake))
    finally:
        lake.close()


def _in_process(meta: MetaStore) -> dict[str, Any]:
    results: dict[str, Any] = {}
    auth = Auth(meta, token_cache_size=1)
    auth.add_user(USER, PASSWORD, ["publish"])
    tokens = [auth.mint_token(USER, "10.0.0.1", 3_600_000) for _ in range(2_000)]
    calls = 200_000

    # A cache hit: the last token minted is the one entry of the cache.
    hot = tokens[-1]
    started = time.perf_counter()
    for _ in range(calls):
        auth.authenticate(hot, "10.0.0.1")
    results["authenticate_hit_us"] = per_call_us(calls, time.perf_counter() - started)
    # A miss every time: two tokens alternating in a cache of one.
    pair = (tokens[0], tokens[1])
    started = time.perf_counter()
    for n in range(calls):
        auth.authenticate(pair[n & 1], "10.0.0.1")
    results["authenticate_miss_us"] = per_call_us(calls, time.perf_counter() - started)
    results["disk_lookups"] = auth.tokens.disk_lookups
    say("authenticate, token in the memory cache", f"{results['authenticate_hit_us']:.2f} µs")
    say("authenticate, token read from LMDB", f"{results['authenticate_miss_us']:.2f} µs")

    logins = 300
    started = time.perf_counter()
    for _ in range(logins):
        auth.login(USER, PASSWORD)
        auth.mint_token(USER, "10.0.0.1", 3_600_000)
    results["login_mint_same_password_us"] = per_call_us(logins, time.perf_counter() - started)
    cold, timed = 20, 0.0
    for n in range(cold):
        auth.set_password(USER, f"fresh-password-{n}")  # untimed: it hashes (scrypt)
        started = time.perf_counter()
        auth.login(USER, f"fresh-password-{n}")
        auth.mint_token(USER, "10.0.0.1", 3_600_000)
        timed += time.perf_counter() - started
    results["login_mint_fresh_password_us"] = per_call_us(cold, timed)
    results["token_commit_us"] = _commit_us(auth)
    for label, key in (
        ("login + mint, same password (cached)", "login_mint_same_password_us"),
        ("login + mint, fresh password (scrypt)", "login_mint_fresh_password_us"),
        ("mint alone (one durable LMDB commit)", "token_commit_us"),
    ):
        say(label, f"{results[key]:.0f} µs")
    return results


def sizes(work: Path, rows: int = 50_000) -> dict[str, float]:
    """LMDB bytes per token row (with its expiry key), and Python heap per cached token."""
    lake = LakeEnv(work / "sizes", map_size_mb=256, max_map_size_mb=4096)
    try:
        meta = MetaStore(lake)
        table = TokenTable(meta, cache_size=rows)

        def used_bytes() -> int:
            return int(lake.env.info()["last_pgno"]) * int(lake.env.stat()["psize"])

        empty = used_bytes()
        expires = int(time.time() * 1000) + 86_400_000
        digests = [token_digest(secrets.token_urlsafe(32)) for _ in range(rows)]
        for start in range(0, rows, 5_000):
            values: dict[str, Any] = {}
            for digest in digests[start : start + 5_000]:
                record = Token(digest, USER, "203.0.113.77", expires, secrets.token_hex(8))
                values[TOKEN_PREFIX + digest] = encode_row(record)
                values[expiry_key(expires, digest)] = None
            meta.put_many(values)
        disk = (used_bytes() - empty) / rows
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for digest in digests:
            table.find(digest)
        heap = (tracemalloc.get_traced_memory()[0] - before) / rows
        tracemalloc.stop()
    finally:
        lake.close()
    say("LMDB per token row (row + expiry key)", f"{disk:.0f} B")
    say("memory per cached token", f"{heap:.0f} B")
    return {"lmdb_bytes_per_token": disk, "heap_bytes_per_cached_token": heap}


def _commit_us(auth: Auth) -> float:
    mints = 300
    started = time.perf_counter()
    for _ in range(mints):
        auth.mint_token(USER, "10.0.0.1", 3_600_000)
    return per_call_us(mints, time.perf_counter() - started)


# -- over HTTP ------------------------------------------------------------------------------


async def _login_loop(
    port: int, bodies: list[bytes], duration_s: float, addresses: list[str]
) -> dict[str, Any]:
    """One keep-alive connection per address, each sending /auth back to back."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    deadline = loop.time() + duration_s

    async def connection(address: str, n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST /auth HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Forwarded-For: {address}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
        )
        try:
            while loop.time() < deadline:
                body = bodies[n % len(bodies)]
                n += 1
                started = loop.time()
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status = await http_load.read_response(reader)
                latencies.append((loop.time() - started) * 1000)
                statuses[status] += 1
        finally:
            writer.close()
            await writer.wait_closed()

    started = loop.time()
    await asyncio.gather(*(connection(a, i) for i, a in enumerate(addresses)))
    elapsed = loop.time() - started
    return {
        "answers": len(latencies),
        "per_s": len(latencies) / elapsed,
        "statuses": dict(statuses),
        "p50_ms": common.percentile(latencies, 50),
        "p99_ms": common.percentile(latencies, 99),
    }


def health_users(client: httpx.Client, admin: str) -> dict[str, Any]:
    details = client.get("/health", headers={"m1-auth-token": admin}).json()["users"]
    found: dict[str, Any] = details.get("details", {})
    return found


def load_run(
    server: common.Server, client: httpx.Client, admin: str, body: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    addresses = [f"10.77.{n // 250}.{n % 250 + 1}" for n in range(args.connections)]
    before = health_users(client, admin)
    with common.Meter(server.pid) as meter:
        run = asyncio.run(_login_loop(server.port, [body], args.duration, addresses))
    after = health_users(client, admin)
    run["server_cpu_ms_per_answer"] = meter.server_cpu_s / max(1, run["answers"]) * 1000
    run["server_cores"] = meter.server_cpu_s / meter.elapsed_s
    run["load_generator_cores"] = meter.self_cpu_s / meter.elapsed_s
    for name in ("passwordChecks", "cachedLogins", "tokensMinted", "tokenCommits"):
        if name in after:
            run[name] = after[name] - before.get(name, 0)
    return run


def cold_and_warm(
    server: common.Server, client: httpx.Client, admin: str, n: int
) -> dict[str, Any]:
    """ms per /auth answer, one at a time: a fresh password each time, then the same."""
    timed: dict[str, list[float]] = {"fresh": [], "same": []}
    cpu: dict[str, float] = {"fresh": 0.0, "same": 0.0}
    for kind in ("fresh", "same"):
        for i in range(n):
            password = f"fresh-password-{i}" if kind == "fresh" else PASSWORD
            if kind == "fresh" or i == 0:
                response = client.post(
                    "/user/password",
                    headers={"m1-auth-token": admin},
                    data={"username": USER, "password": password},
                )
                response.raise_for_status()
            before = common.cpu_seconds(server.pid)
            started = time.perf_counter()
            response = client.post(
                "/auth",
                data={"username": USER, "password": password},
                headers={"X-Forwarded-For": "10.77.9.9"},
            )
            elapsed = time.perf_counter() - started
            spent = common.cpu_seconds(server.pid) - before
            response.raise_for_status()
            if kind == "same" and i == 0:
                continue  # the first one runs scrypt and fills the cache
            timed[kind].append(elapsed * 1000)
            cpu[kind] += spent
    return {
        f"{kind}_ms": {
            "median": statistics.median(values),
            "mean": statistics.fmean(values),
            # /proc CPU ticks are 10 ms: a mean over many logins, not a per-login reading
            "server_cpu_ms": cpu[kind] / len(values) * 1000,
        }
        for kind, values in timed.items()
    }


def over_http(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    port = common.free_port()
    # The server runs in the repository (bench.common), where `-m m1lite` would find the
    # working tree first: another source tree goes first on sys.path explicitly.
    start = ["-m", "m1lite"]
    if args.src is not None:
        first = f"import sys, runpy; sys.path.insert(0, {str(args.src.resolve())!r}); "
        start = ["-c", first + "runpy.run_module('m1lite', run_name='__main__')"]
    server = common.Server(
        "m1lite",
        common.python_command(
            *start,
            "serve",
            "--data",
            str(work / "data"),
            "--port",
            str(port),
            "--trusted-proxies",
            "127.0.0.1",
            "--log-level",
            "warning",
        ),
        port,
        work / "server.log",
        "/ping",
        env={"M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    ).start()
    results: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            admin = client.post(
                "/auth", data={"username": "admin", "password": ADMIN_PASSWORD, "ip": "*"}
            ).text
            response = client.post(
                "/user/add",
                headers={"m1-auth-token": admin},
                data={"username": USER, "password": PASSWORD, "rights": "publish"},
            )
            response.raise_for_status()
            results["cold"] = cold_and_warm(server, client, admin, args.cold)
            for kind in ("fresh", "same"):
                figures = results["cold"][f"{kind}_ms"]
                say(
                    f"one /auth at a time, {kind} password",
                    f"{figures['median']:.2f} ms median, server CPU "
                    f"{figures['server_cpu_ms']:.2f} ms",
                )
            client.post(
                "/user/password",
                headers={"m1-auth-token": admin},
                data={"username": USER, "password": PASSWORD},
            ).raise_for_status()
            right = urlencode({"username": USER, "password": PASSWORD}).encode()
            wrong = urlencode({"username": USER, "password": "not-the-password"}).encode()
            for name, body in (("same", right), ("wrong", wrong)):
                run = load_run(server, client, admin, body, args)
                results[name] = run
                say(
                    f"{args.connections} addresses, {name} password",
                    f"{run['per_s']:,.0f} answers/s {run['statuses']}, p50 "
                    f"{run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms",
                )
                say(
                    "  server CPU per answer; cores (server, load generator)",
                    f"{run['server_cpu_ms_per_answer']:.2f} ms; "
                    f"{run['server_cores']:.2f}, {run['load_generator_cores']:.2f}",
                )
                if "passwordChecks" in run:
                    say(
                        "  scrypt runs, cached logins, tokens minted, commits",
                        f"{run['passwordChecks']}, {run['cachedLogins']}, "
                        f"{run['tokensMinted']}, {run['tokenCommits']}",
                    )
    finally:
        server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "machine": common.machine_info(),
        "versions": common.versions(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps({"machine": results["machine"], "src": str(args.src or "")}))
    work = Path(tempfile.mkdtemp(prefix="m1lite-bench-auth-"))
    try:
        if "i" in args.only:
            print("in process:")
            results["in_process"] = in_process(work / "inproc")
            results["sizes"] = sizes(work)
        if "h" in args.only:
            print("over HTTP:")
            results["http"] = over_http(work / "http", args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.write_results(results, args.out, "auth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

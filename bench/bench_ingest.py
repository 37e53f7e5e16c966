"""Ingest throughput and latency of m1lite's /write against a bare Starlette 204 endpoint.

Both run on hypercorn with one worker, configured alike; wrk (-t1 -c64) loads them in
turn, a warm-up before every measured run, rotating the servers within each repetition
so the ratio of m1lite to the bare app comes from the same minute of a noisy machine:

  a  bare POST /e, one-event body            (the HTTP ceiling)
  b  m1lite /write, 1 event, async=true      (target: b/a >= 0.70 in the same rep)
  e  bare POST /e, 100-event body
  d  m1lite /write, 100 events, async=true   (target: >= 100,000 events/s)
  c  m1lite /write, 1 event, async=false     (closed loop, for its throughput)
  f  m1lite /write, 1 event, async=false at a fixed rate (open loop; target: p99 < 50 ms
     at 1,000 requests/s)

Server CPU comes from /proc for the server process, so CPU µs per request holds although
wrk shares the cores. After each m1lite run the bench waits for the writer to drain and
checks /health's event count against what wrk sent and what was acknowledged.

`--profile DIR` instead samples the servers with py-spy under the loads asked for
(`--only`; `--profile-gil` samples only the thread holding the GIL) and prints the
threads' CPU and the top functions by self and cumulative time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script (`make bench`): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, http_load

ADMIN_PASSWORD = "bench-admin-password"
TARGET_RATIO = 0.70
TARGET_BATCH_EVENTS_S = 100_000
TARGET_SYNC_P99_MS = 50.0
OTHER_LOAD_WARNING = 0.3  # cores used by other processes that make a run suspect


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    server: str  # "bare" or "m1lite"
    events: int
    is_async: bool


SCENARIOS = {
    "a": Scenario("a", "bare 204, 1-event body", "bare", 1, True),
    "b": Scenario("b", "m1lite /write 1 event async=true", "m1lite", 1, True),
    "e": Scenario("e", "bare 204, 100-event body", "bare", 100, True),
    "d": Scenario("d", "m1lite /write 100 events async=true", "m1lite", 100, True),
    "c": Scenario("c", "m1lite /write 1 event async=false", "m1lite", 1, False),
    "f": Scenario("f", "m1lite /write 1 event async=false, fixed rate", "m1lite", 1, False),
}
ORDER = "abedcf"


class BenchFailure(Exception):
    """Something that makes the figures untrustworthy: non-2xx answers, lost events."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every scenario")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s runs, 1 rep")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s for run f")
    parser.add_argument(
        "--rate-connections", type=int, default=32, help="connections of the fixed-rate run"
    )
    parser.add_argument(
        "--only", default=ORDER, help=f"scenarios to run, in order (default {ORDER})"
    )
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy profiles instead")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument(
        "--profile-gil", action="store_true", help="sample only the thread holding the GIL"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.reps, args.warmup = 2.0, 1, 1.0
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {''.join(sorted(unknown))}")
    return args


# -- servers -----------------------------------------------------------------------------


def start_servers(workdir: Path, need: set[str]) -> dict[str, common.Server]:
    servers: dict[str, common.Server] = {}
    if "bare" in need:
        port = common.free_port()
        servers["bare"] = common.Server(
            "bare",
            common.python_command("-m", "bench.baseline_app", "--port", str(port)),
            port,
            workdir / "bare.log",
            ready_path="/e",  # a GET answers 405: the app is up
        ).start()
    if "m1lite" in need:
        port = common.free_port()
        data = workdir / "m1lite-data"
        servers["m1lite"] = common.Server(
            "m1lite",
            common.python_command(
                "-m", "m1lite", "serve", "--data", str(data), "--port", str(port)
            ),
            port,
            workdir / "m1lite.log",
            ready_path="/ping",
            env={"M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD},
        ).start()
    return servers


def login(server: common.Server) -> str:
    response = httpx.post(
        server.base_url + "/auth",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=30,
    )
    response.raise_for_status()
    return response.text.strip()


def stored_events(
    server: common.Server, token: str, settle_s: float = 0.2, backlog: list[int] | None = None
) -> int:
    """The lake's event count once the writer has drained (stable over three polls).
    `backlog` receives the events still queued or uncommitted at the first poll."""
    seen: list[int] = []
    deadline = time.monotonic() + 120
    first = True
    while time.monotonic() < deadline:
        response = httpx.get(
            server.base_url + "/health", headers={"m1-auth-token": token}, timeout=30
        )
        response.raise_for_status()
        health = response.json()
        events = int(health["lake"]["details"]["events"])
        queued = int(health["db"]["details"]["queuedEvents"])
        if first and backlog is not None:
            backlog.append(events)
            backlog.append(queued)
        first = False
        seen = [*seen[-2:], events] if queued == 0 else []
        if len(seen) == 3 and len(set(seen)) == 1:
            if backlog is not None:
                backlog[0] = events - backlog[0]  # committed after wrk had stopped
            return events
        time.sleep(settle_s)
    raise BenchFailure("the writer did not drain within 120 s")


# -- one run -----------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    servers: dict[str, common.Server]
    token: str
    bodies: dict[tuple[int, bool], http_load.Bodies]


def headers_for(ctx: Context) -> dict[str, str]:
    # The same headers for both servers, so the bare app parses the same request bytes.
    return {"Content-Type": "application/x-www-form-urlencoded", "m1-auth-token": ctx.token}


def bodies_for(ctx: Context, scenario: Scenario) -> http_load.Bodies:
    key = (scenario.events, scenario.is_async)
    if key not in ctx.bodies:
        count = 256 if scenario.events == 1 else 8
        ctx.bodies[key] = http_load.make_bodies(
            scenario.events, is_async=scenario.is_async, count=count
        )
    return ctx.bodies[key]


def run_scenario(ctx: Context, scenario: Scenario, rep: int) -> dict[str, Any]:
    server = ctx.servers[scenario.server]
    bodies = bodies_for(ctx, scenario)
    url = server.base_url + ("/e" if scenario.server == "bare" else "/write")
    headers = headers_for(ctx)
    is_m1 = scenario.server == "m1lite"
    before = stored_events(server, ctx.token) if is_m1 else 0
    if scenario.key == "f":
        return run_fixed_rate(ctx, scenario, rep, server, bodies, headers, before)

    warm = http_load.run_wrk(
        url,
        bodies,
        headers,
        ctx.workdir,
        duration_s=ctx.args.warmup,
        connections=ctx.args.connections,
    )
    with common.Meter(server.pid) as meter:
        result = http_load.run_wrk(
            url,
            bodies,
            headers,
            ctx.workdir,
            duration_s=ctx.args.duration,
            connections=ctx.args.connections,
        )
    record: dict[str, Any] = {
        "scenario": scenario.key,
        "title": scenario.title,
        "rep": rep,
        "server": scenario.server,
        "events_per_request": scenario.events,
        "body_bytes": round(bodies.mean_body_bytes()),
        "duration_s": round(result.duration_s, 3),
        "requests": result.requests,
        "rps": result.rps,
        "events_per_s": result.rps * scenario.events,
        "server_cpu_us_per_request": 1e6 * meter.server_cpu_s / max(1, result.requests),
        "server_cores": meter.server_cpu_s / meter.elapsed_s,
        "server_system_share": meter.server_sys_s / max(1e-9, meter.server_cpu_s),
        "wrk_cores": meter.client_cpu_s / meter.elapsed_s,
        "machine_busy_cores": meter.machine_busy_cores,
        # what else ran on the machine meanwhile (other processes, softirq): noise
        "other_cores": max(
            0.0,
            meter.machine_busy_cores - (meter.server_cpu_s + meter.client_cpu_s) / meter.elapsed_s,
        ),
        "latency_ms": result.latency_ms,
        "non_2xx": result.non_2xx + warm.non_2xx,
        "socket_errors": {k: result.errors[k] + warm.errors[k] for k in result.errors},
        "server_rss_mb": common.rss_bytes(server.pid) / 2**20,
        "server_rss_anon_mb": common.rss_bytes(server.pid, "RssAnon") / 2**20,
    }
    if is_m1:
        record["verify"] = verify_counts(
            ctx,
            server,
            before,
            sent=(warm.sent + result.sent) * scenario.events,
            acked=(warm.requests - warm.non_2xx + result.requests - result.non_2xx)
            * scenario.events,
        )
    return record


def run_fixed_rate(
    ctx: Context,
    scenario: Scenario,
    rep: int,
    server: common.Server,
    bodies: http_load.Bodies,
    headers: dict[str, str],
    before: int,
) -> dict[str, Any]:
    args = ctx.args
    warm = http_load.run_open_loop(
        server.base_url,
        "/write",
        headers,
        bodies,
        rate=args.rate,
        duration_s=args.warmup,
        connections=args.rate_connections,
    )
    with common.Meter(server.pid) as meter:
        result = http_load.run_open_loop(
            server.base_url,
            "/write",
            headers,
            bodies,
            rate=args.rate,
            duration_s=args.duration,
            connections=args.rate_connections,
        )
    latency = {
        "p50": result.percentile_ms(50),
        "p90": result.percentile_ms(90),
        "p99": result.percentile_ms(99),
        "p99.9": result.percentile_ms(99.9),
        "max": max(result.latencies_ms, default=float("nan")),
    }
    record: dict[str, Any] = {
        "scenario": scenario.key,
        "title": scenario.title,
        "rep": rep,
        "server": scenario.server,
        "events_per_request": scenario.events,
        "body_bytes": round(bodies.mean_body_bytes()),
        "target_rps": args.rate,
        "connections": args.rate_connections,
        "duration_s": round(result.duration_s, 3),
        "requests": result.completed,
        "rps": result.achieved_rps,
        "events_per_s": result.achieved_rps * scenario.events,
        "max_backlog": result.max_backlog,
        "server_cpu_us_per_request": 1e6 * meter.server_cpu_s / max(1, result.completed),
        "server_cores": meter.server_cpu_s / meter.elapsed_s,
        "client_cores": meter.self_cpu_s / meter.elapsed_s,
        "other_cores": max(
            0.0,
            meter.machine_busy_cores - (meter.server_cpu_s + meter.self_cpu_s) / meter.elapsed_s,
        ),
        "server_system_share": meter.server_sys_s / max(1e-9, meter.server_cpu_s),
        "machine_busy_cores": meter.machine_busy_cores,
        "latency_ms": latency,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "non_2xx": result.non_2xx + warm.non_2xx,
        "socket_errors": {},
        "server_rss_mb": common.rss_bytes(server.pid) / 2**20,
        "server_rss_anon_mb": common.rss_bytes(server.pid, "RssAnon") / 2**20,
    }
    record["verify"] = verify_counts(
        ctx,
        server,
        before,
        sent=result.events_sent + warm.events_sent,
        acked=(result.ok + warm.ok) * scenario.events,
        exact=True,
    )
    return record


def verify_counts(
    ctx: Context, server: common.Server, before: int, *, sent: int, acked: int, exact: bool = False
) -> dict[str, Any]:
    """wrk stops mid-flight: requests it sent but whose answer it never read may or may not
    have been stored, so stored must lie in [acknowledged, sent]. The open-loop generator
    reads every answer, so there stored must equal acknowledged."""
    backlog: list[int] = []
    stored = stored_events(server, ctx.token, backlog=backlog) - before
    ok = stored == acked if exact else acked <= stored <= sent
    return {
        "sent": sent,
        "acknowledged": acked,
        "stored": stored,
        "ok": ok,
        # how far the writer lagged when the load stopped (async=true queues in memory)
        "committed_after_load": backlog[0],
        "queued_after_load": backlog[1],
    }


# -- reporting ---------------------------------------------------------------------------


def header(args: argparse.Namespace, machine: dict[str, Any], versions: dict[str, str]) -> str:
    lines = [
        "m1lite ingest bench",
        f"  machine : {machine['nproc']} cpus, {machine['cpu_model']}, {machine['mem_gib']} GiB, "
        f"kernel {machine['kernel']}, load {machine['loadavg_at_start']}, {machine['date']}",
        "  versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"  settings: wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, "
        f"warm-up {args.warmup:g} s, {args.reps} reps, scenarios {args.only}; fixed rate "
        f"{args.rate:g} req/s over {args.rate_connections} connections; hypercorn 1 worker; "
        "m1lite defaults (group-commit-ms 50)",
    ]
    return "\n".join(lines)


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["scenario"], []).append(run)
    summary: dict[str, Any] = {"scenarios": {}, "ratios_b_over_a": [], "targets": {}}
    for key, group in by.items():
        summary["scenarios"][key] = {
            "title": group[0]["title"],
            "rps": common.median_range([r["rps"] for r in group]),
            "events_per_s": common.median_range([r["events_per_s"] for r in group]),
            "server_cpu_us_per_request": common.median_range(
                [r["server_cpu_us_per_request"] for r in group]
            ),
            "p50_ms": common.median_range([r["latency_ms"]["p50"] for r in group]),
            "p99_ms": common.median_range([r["latency_ms"]["p99"] for r in group]),
            "max_ms": common.median_range([r["latency_ms"]["max"] for r in group]),
            "other_cores": common.median_range([r["other_cores"] for r in group]),
        }
    reps = sorted({r["rep"] for r in runs})
    for rep in reps:
        same = {r["scenario"]: r for r in runs if r["rep"] == rep}
        if "a" in same and "b" in same:
            summary["ratios_b_over_a"].append(same["b"]["rps"] / same["a"]["rps"])
            # The same ratio from CPU per request: what it would be if each server had a
            # whole core, which other load on a shared machine does not disturb as much.
            summary.setdefault("cpu_ratios_b_over_a", []).append(
                same["a"]["server_cpu_us_per_request"] / same["b"]["server_cpu_us_per_request"]
            )
        if "e" in same and "d" in same:
            summary.setdefault("ratios_d_over_e", []).append(same["d"]["rps"] / same["e"]["rps"])
    m1_runs = [r for r in runs if "verify" in r]
    if m1_runs:
        summary["m1lite_memory"] = {
            "events_stored": sum(r["verify"]["stored"] for r in m1_runs),
            "rss_mb_at_end": m1_runs[-1]["server_rss_mb"],
            "rss_anon_mb_at_end": m1_runs[-1]["server_rss_anon_mb"],
        }
    scen = summary["scenarios"]
    targets = summary["targets"]
    if summary["ratios_b_over_a"]:
        ratio = common.median_range(summary["ratios_b_over_a"])
        targets["b/a ratio >= 0.70"] = {"value": ratio, "met": ratio[0] >= TARGET_RATIO}
    if "d" in scen:
        cpu = scen["d"]["server_cpu_us_per_request"]
        per_core = tuple(1e6 * SCENARIOS["d"].events / x for x in (cpu[0], cpu[2], cpu[1]))
        summary["d_events_per_s_per_core"] = per_core
        value = scen["d"]["events_per_s"]
        targets["d events/s >= 100,000"] = {
            "value": value,
            "met": value[0] >= TARGET_BATCH_EVENTS_S,
        }
    if "f" in scen:
        value = scen["f"]["p99_ms"]
        targets[f"async=false p99 at {args.rate:g} req/s < 50 ms"] = {
            "value": value,
            "met": value[0] < TARGET_SYNC_P99_MS,
        }
    return summary


def print_run(run: dict[str, Any]) -> None:
    lat = run["latency_ms"]
    extra = ""
    if run["scenario"] == "f":
        extra = f" (target {run['target_rps']:g}, backlog max {run['max_backlog']})"
    verify = run.get("verify")
    check = ""
    if verify:
        check = (
            f"  stored {verify['stored']:,} / acked {verify['acknowledged']:,} / "
            f"sent {verify['sent']:,} {'ok' if verify['ok'] else 'MISMATCH'}, writer "
            f"backlog at stop {verify['committed_after_load']:,}"
        )
    print(
        f"  [{run['scenario']}] rep {run['rep']} {run['title']}: {run['rps']:,.0f} req/s{extra}, "
        f"{run['events_per_s']:,.0f} events/s, {run['server_cpu_us_per_request']:,.0f} µs CPU/req, "
        f"server {run['server_cores']:.2f} cores, other load {run['other_cores']:.2f}, "
        f"p50/p99/max {lat['p50']:.1f}/{lat['p99']:.1f}/{lat['max']:.1f} ms, "
        f"non-2xx {run['non_2xx']}, RSS {run['server_rss_mb']:.0f} MB "
        f"(anon {run['server_rss_anon_mb']:.0f}){check}",
        flush=True,
    )


def print_summary(summary: dict[str, Any]) -> None:
    print("\nsummary: median (min–max) over reps")
    print(
        f"  {'':3} {'scenario':48} {'req/s':>26} {'events/s':>30} {'CPU µs/req':>20} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'other':>6}"
    )
    for key in ORDER:
        if key not in summary["scenarios"]:
            continue
        s = summary["scenarios"][key]
        print(
            f"  {key:3} {s['title']:48} {rng(s['rps']):>26} {rng(s['events_per_s']):>30} "
            f"{rng(s['server_cpu_us_per_request']):>20} {s['p50_ms'][0]:>8.1f} "
            f"{s['p99_ms'][0]:>8.1f} {s['other_cores'][0]:>6.2f}"
        )
    busiest = max(s["other_cores"][2] for s in summary["scenarios"].values())
    if busiest > OTHER_LOAD_WARNING:
        print(
            f"\n  WARNING: other processes used up to {busiest:.2f} cores during the runs "
            "('other'): throughput and latency suffer; CPU µs/req holds better"
        )
    if summary["ratios_b_over_a"]:
        ratios = ", ".join(f"{r:.3f}" for r in summary["ratios_b_over_a"])
        print(f"\n  b/a per rep (same rep): {ratios}")
    if summary.get("cpu_ratios_b_over_a"):
        ratios = ", ".join(f"{r:.3f}" for r in summary["cpu_ratios_b_over_a"])
        print(f"  b/a from CPU µs per request (a whole core each): {ratios}")
    if summary.get("d_events_per_s_per_core"):
        print(
            f"  d events/s per server core (from CPU µs/req): "
            f"{rng(summary['d_events_per_s_per_core'])}"
        )
    if summary.get("ratios_d_over_e"):
        ratios = ", ".join(f"{r:.3f}" for r in summary["ratios_d_over_e"])
        print(f"  d/e per rep (same rep): {ratios}")
    memory = summary.get("m1lite_memory")
    if memory:
        print(
            f"  m1lite after {memory['events_stored']:,} events stored: RSS "
            f"{memory['rss_mb_at_end']:,.0f} MB, of it anonymous (heap) "
            f"{memory['rss_anon_mb_at_end']:,.0f} MB"
        )
    print("\ntargets:")
    for name, target in summary["targets"].items():
        value = target["value"]
        shown = rng(value, 3) if value[0] < 10 else rng(value, 1 if value[0] < 1000 else 0)
        print(f"  {'MET ' if target['met'] else 'MISS'} {name}: {shown}")


def rng(value: tuple[float, float, float], digits: int = 0) -> str:
    mid, low, high = value
    return f"{mid:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def failures(runs: list[dict[str, Any]]) -> list[str]:
    found = []
    for run in runs:
        where = f"[{run['scenario']}] rep {run['rep']}"
        if run["non_2xx"]:
            found.append(f"{where}: {run['non_2xx']} non-2xx responses")
        if sum(run["socket_errors"].values()):
            found.append(f"{where}: socket errors {run['socket_errors']}")
        verify = run.get("verify")
        if verify and not verify["ok"]:
            found.append(f"{where}: events stored/acked/sent mismatch {verify}")
    return found


# -- profiling -----------------------------------------------------------------------------


def _load(ctx: Context, scenario: Scenario, duration_s: float) -> tuple[float, int]:
    """Run one scenario's load for the profiler: (requests/s, requests)."""
    server = ctx.servers[scenario.server]
    bodies = bodies_for(ctx, scenario)
    headers = headers_for(ctx)
    if scenario.key == "f":
        fixed = http_load.run_open_loop(
            server.base_url,
            "/write",
            headers,
            bodies,
            rate=ctx.args.rate,
            duration_s=duration_s,
            connections=ctx.args.rate_connections,
        )
        return fixed.achieved_rps, fixed.completed
    url = server.base_url + ("/e" if scenario.server == "bare" else "/write")
    result = http_load.run_wrk(url, bodies, headers, ctx.workdir, duration_s=duration_s)
    return result.rps, result.requests


def profile(ctx: Context, out_dir: Path) -> dict[str, Any]:
    """py-spy under each load asked for; raw collapsed stacks plus a summary per load.
    Profiling the bare app too shows what the HTTP stack both share costs."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = {}
    for key in ctx.args.only:
        scenario = SCENARIOS[key]
        server = ctx.servers[scenario.server]
        _load(ctx, scenario, ctx.args.warmup)
        raw = out_dir / f"prof-{key}.txt"
        # --nonblocking: do not pause the server to sample it, so the load runs as measured.
        gil = ["--gil"] if ctx.args.profile_gil else []
        spy = subprocess.Popen(
            [
                *(py_spy, "record", "--rate", str(ctx.args.profile_rate)),
                *("-d", f"{ctx.args.duration:g}", "-f", "raw", "--threads", "--nonblocking"),
                *("--full-filenames", *gil, "-o", str(raw), "-p", str(server.pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        before = common.thread_cpu(server.pid)
        with common.Meter(server.pid) as meter:
            rps, requests = _load(ctx, scenario, ctx.args.duration + 1)
        after = common.thread_cpu(server.pid)
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
        summary = profiles.summarise_profile(raw, top=20)
        # Sample shares mix CPU with threads that py-spy saw as active while they waited;
        # /proc's per-thread CPU says how busy each thread really was.
        for row in summary["threads"]:
            tid = profiles.thread_id(row["function"])
            used = after.get(tid, 0.0) - before.get(tid, 0.0) if tid else 0.0
            row["cpu_cores"] = round(used / meter.elapsed_s, 2)
        load = summary["load"] = {
            "title": scenario.title,
            "rps": rps,
            "events_per_s": rps * scenario.events,
            "server_cpu_us_per_request": 1e6 * meter.server_cpu_s / max(1, requests),
            "server_cores": meter.server_cpu_s / meter.elapsed_s,
            "server_system_share": meter.server_sys_s / max(1e-9, meter.server_cpu_s),
            "other_cores": meter.machine_busy_cores
            - (meter.server_cpu_s + meter.client_cpu_s + meter.self_cpu_s) / meter.elapsed_s,
        }
        profiles[key] = summary
        print(
            f"\n[{key}] {scenario.title}: {rps:,.0f} req/s under py-spy, "
            f"{load['server_cpu_us_per_request']:,.0f} µs CPU/req, server "
            f"{load['server_cores']:.2f} cores ({100 * load['server_system_share']:.0f}% "
            f"system), other load {load['other_cores']:.2f}, {summary['samples']} samples ({raw})"
        )
        for row in summary["threads"]:
            print(
                f"    {row['percent']:5.1f}% of samples, {row['cpu_cores']:.2f} cores  "
                f"{row['function']}"
            )
        for part in ("self", "cumulative", "cumulative_m1lite"):
            print(f"  {part}:")
            for row in summary[part]:
                print(f"    {row['percent']:5.1f}%  {row['function']}")
    (out_dir / "profiles.json").write_text(json.dumps(profiles, indent=2))
    return profiles


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    machine, versions = common.machine_info(), common.versions()
    print(header(args, machine, versions), flush=True)
    need = {SCENARIOS[k].server for k in args.only}
    with tempfile.TemporaryDirectory(prefix="m1lite-bench-") as tmp:
        workdir = Path(tmp)
        servers = start_servers(workdir, need)
        try:
            token = login(servers["m1lite"]) if "m1lite" in servers else ""
            ctx = Context(args, workdir, servers, token, {})
            if args.profile:
                profile(ctx, args.profile)
                return 0
            runs: list[dict[str, Any]] = []
            for rep in range(args.reps):
                for key in args.only:
                    run = run_scenario(ctx, SCENARIOS[key], rep)
                    print_run(run)
                    runs.append(run)
        finally:
            for server in servers.values():
                code = server.stop()
                if code not in (0, None):
                    print(f"{server.name} exited with {code}:\n{server.log_tail()}")
    summary = summarise(runs, args)
    print_summary(summary)
    out = args.out or common.REPO / "bench" / "results" / time.strftime("ingest-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    problems = failures(runs)
    out.write_text(
        json.dumps(
            {
                "machine": machine,
                "versions": versions,
                "settings": settings,
                "summary": summary,
                "runs": runs,
                "problems": problems,
            },
            indent=2,
        )
    )
    print(f"\nresults: {out}")
    if problems:
        print("\nFAILED: these figures are not trustworthy:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

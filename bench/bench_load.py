"""Load: how many concurrent visitors one m1lite process holds with 5 s heartbeats.

`m1lite simulate` (a subprocess) against `m1lite serve` (another, in its own process
group, a fresh data directory per step, the test geo database, `--trusted-proxies
127.0.0.1`), at increasing visitor counts until the heartbeat latency p99 passes 100 ms,
in two modes: heartbeats to a session store (`stash`, timeoutSeconds 30) and heartbeats
as events. Visitors behave as `m1lite simulate` makes them (docs/cli.md): think time 25 s
(mean), about 3.3 pages per visit, a heartbeat every 5 s, each visitor its own requests
(one per heartbeat, one /write per view) unless --batch, durable writes (async=false).

Each step: the visitors arrive within the first heartbeat period; the first --warmup
seconds are left out, then --measure seconds count (latency percentiles and rates from the
simulator's summary; CPU of the server and of the simulator from /proc over that window).
A step "holds" when the heartbeat p99 is at most 100 ms, no request failed and the
simulator kept to its schedule (its own lag p99 under 50 ms: otherwise the simulator, not
the server, was the limit, and the bench says so and stops).

The simulator shares the machine's cores with the server: its CPU is reported with every
step, and `other` is what the rest of the machine used meanwhile (a busy machine shows).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

ADMIN_PASSWORD = "bench-admin-password"
USER, PASSWORD = "sim", "bench-simulated-visitors"
GEOIP = common.REPO / "tests" / "data" / "GeoIP2-City-Test.mmdb"
STORE = "stash"
TARGET_P99_MS = 100.0
MAX_LAG_P99_MS = 50.0
STEPS = "1000,2000,5000,7500,10000,12500,15000,17500,20000,25000,30000,40000"
QUICK_STEPS = "500,1000,2000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default=STEPS, help=f"visitor counts (default {STEPS})")
    parser.add_argument("--warmup", type=float, default=15.0, help="s left out per step")
    parser.add_argument("--measure", type=float, default=30.0, help="s measured per step")
    parser.add_argument(
        "--modes", default="session,events", help="session (a session store), events"
    )
    parser.add_argument("--heartbeat-ms", type=int, default=5000)
    parser.add_argument("--think-s", type=float, default=25.0)
    parser.add_argument("--addresses", type=int, default=64)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--batch", action="store_true", help="the simulator's --batch mode")
    parser.add_argument("--quick", action="store_true", help="a short trial: 3 small steps")
    parser.add_argument("--max-wait", type=float, default=300.0, help="s to wait for quiet")
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.measure = QUICK_STEPS, 6.0, 8.0
    args.step_list = [int(x) for x in args.steps.split(",") if x.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.mode_list:
        if mode not in ("session", "events"):
            parser.error(f"unknown mode {mode!r}")
    return args


def start_server(workdir: Path, name: str) -> common.Server:
    port = common.free_port()
    command = common.python_command(
        "-m", "m1lite", "serve",
        "--data", str(workdir / f"data-{name}"),
        "--port", str(port),
        "--template", "eventsSessionStore",
        "--geoip", str(GEOIP),
        "--trusted-proxies", "127.0.0.1",
    )  # fmt: skip
    server = common.Server(
        "m1lite",
        command,
        port,
        workdir / f"server-{name}.log",
        ready_path="/ping",
        env={"M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD},
    ).start()
    token = httpx.post(
        server.base_url + "/auth",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=30,
    ).text.strip()
    response = httpx.post(
        server.base_url + "/user/add",
        data={"username": USER, "password": PASSWORD, "rights": "publish,sessionUpdate"},
        headers={"m1-auth-token": token},
        timeout=30,
    )
    response.raise_for_status()
    return server


def _sample(server_pid: int, sim_pid: int) -> tuple[float, float, float, tuple[int, int]]:
    return (
        time.monotonic(),
        common.cpu_seconds(server_pid),
        common.cpu_seconds(sim_pid),
        common.system_busy_ticks(),
    )


def run_step(args: argparse.Namespace, workdir: Path, mode: str, users: int) -> dict[str, Any]:
    name = f"{mode}-{users}"
    server = start_server(workdir, name)
    duration = args.warmup + args.measure
    out_path, err_path = workdir / f"sim-{name}.json", workdir / f"sim-{name}.err"
    command = common.python_command(
        "-m", "m1lite", "simulate",
        "--server", server.base_url, "--user", USER, "--password", PASSWORD,
        "--users", str(users), "--duration", f"{duration:g}", "--warmup", f"{args.warmup:g}",
        "--heartbeat-ms", str(args.heartbeat_ms), "--think-s", f"{args.think_s:g}",
        "--addresses", str(args.addresses), "--connections", str(args.connections),
        "--seed", "1", "--json", "--no-progress",
    )  # fmt: skip
    if mode == "session":
        command += ["--session", STORE]
    if args.batch:
        command.append("--batch")
    try:
        with out_path.open("w") as out, err_path.open("w") as err:
            sim = subprocess.Popen(command, stdout=out, stderr=err, cwd=common.REPO)
            try:
                started = _wait_for_start(sim, err_path)
                time.sleep(max(0.0, started + args.warmup - time.monotonic()))
                first = _sample(server.pid, sim.pid)
                time.sleep(max(0.0, started + duration - 0.3 - time.monotonic()))
                last = _sample(server.pid, sim.pid)
                rss = common.rss_bytes(server.pid, "RssAnon")
                sim.wait(timeout=duration + 120)
            finally:
                if sim.poll() is None:
                    sim.kill()
                    sim.wait()
        if sim.returncode != 0:
            raise RuntimeError(f"simulate exited {sim.returncode}:\n{err_path.read_text()}")
        summary = json.loads(out_path.read_text())
    finally:
        server.stop()
    seconds = last[0] - first[0]
    busy, total = last[3][0] - first[3][0], last[3][1] - first[3][1]
    machine = busy / max(1, total) * (os.cpu_count() or 1)
    server_cores = (last[1] - first[1]) / seconds
    sim_cores = (last[2] - first[2]) / seconds
    measured = summary["measured"]
    lag = summary["simulator_cpu"]["schedule_lag_ms"]
    p99 = measured["heartbeat_ms"]["p99"]
    dropped = sum(summary["events"]["dropped"].values()) + summary["session_updates"]["dropped"]
    kept_up = (lag["p99"] or 0.0) < MAX_LAG_P99_MS
    held = (
        p99 is not None
        and p99 <= TARGET_P99_MS
        and not summary["errors"]
        and dropped == 0
        and kept_up
    )
    return {
        "mode": mode,
        "visitors": users,
        "held": held,
        "simulator_kept_up": kept_up,
        "heartbeat_ms": measured["heartbeat_ms"],
        "request_ms": measured["request_ms"],
        "session_updates_per_s": measured["session_updates_per_s"],
        "events_per_s": measured["events_per_s"],
        "requests_per_s": measured["requests_per_s"],
        "server_cores": round(server_cores, 3),
        "simulator_cores": round(sim_cores, 3),
        "other_cores": round(machine - server_cores - sim_cores, 3),
        "server_rss_anon_mb": round(rss / 2**20, 1),
        "errors": summary["errors"],
        "dropped": dropped,
        "schedule_lag_ms": lag,
        "requests_waited_for_a_connection": summary["connections"]["requests_waited"],
        "visitors_started": summary["visitors"]["started"],
        "load_at_end": round(os.getloadavg()[0], 2),
    }


def _wait_for_start(sim: Any, err_path: Path, timeout_s: float = 120.0) -> float:
    """When the simulator's clock started: it says so once its addresses logged in."""
    deadline = time.monotonic() + timeout_s
    while "logged in" not in err_path.read_text():
        if sim.poll() is not None:
            raise RuntimeError(f"simulate exited {sim.returncode}:\n{err_path.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"simulate did not start in {timeout_s:.0f} s")
        time.sleep(0.05)
    return time.monotonic()


def show(step: dict[str, Any]) -> None:
    hb = step["heartbeat_ms"]
    verdict = "holds" if step["held"] else "missed"
    if not step["simulator_kept_up"]:
        verdict = "simulator-bound"
    rate = step["session_updates_per_s"] if step["mode"] == "session" else step["events_per_s"]
    label = "upserts/s" if step["mode"] == "session" else "events/s"
    print(
        f"  {step['visitors']:>7,}  p50 {hb['p50']:>7} / p99 {hb['p99']:>7} ms  "
        f"{rate:>7,.0f} {label}  {step['requests_per_s']:>6,.0f} req/s  "
        f"server {step['server_cores']:.2f}  simulator {step['simulator_cores']:.2f}  "
        f"other {step['other_cores']:.2f} cores  errors {sum(step['errors'].values())}  "
        f"{verdict}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: dict[str, Any] = {
        "machine": common.machine_info(),
        "versions": common.versions(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "steps": [],
        "largest_held": {},
    }
    print(json.dumps(out["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        workdir = Path(tmp)
        for mode in args.mode_list:
            what = "session store" if mode == "session" else "heartbeats as events"
            print(
                f"\n{what}: heartbeat {args.heartbeat_ms} ms, think {args.think_s:g} s", flush=True
            )
            load = common.wait_quiet(args.max_wait)
            print(f"  load average {load:.2f}", flush=True)
            largest = 0
            for users in args.step_list:
                step = run_step(args, workdir, mode, users)
                out["steps"].append(step)
                show(step)
                if not step["held"]:
                    break
                largest = users
                time.sleep(3)  # let the last step's server exit and the machine settle
            out["largest_held"][mode] = largest
    print("\nLargest number of concurrent visitors held (heartbeat p99 <= 100 ms):")
    for mode, largest in out["largest_held"].items():
        if largest >= 10_000:
            target = "met"
        elif largest == args.step_list[-1]:
            target = f"not reached: the steps end at {largest:,}"
        else:
            target = "missed"
        print(f"  {mode:<8} {largest:>7,}   target 10,000: {target}")
    common.write_results(out, args.out, "load")
    return 0


if __name__ == "__main__":
    sys.exit(main())

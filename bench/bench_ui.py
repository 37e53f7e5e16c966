"""How fast the dashboard's overview loads (issue 7): every query the page sends, together.

Builds synthetic web events with numpy (seeded; 1M by default) spread over the 30 days that
end now, in the browser script's field names, writes them into a new m1lite data directory
through m1lite's writer (bench/query_data.py), and starts `m1lite serve` on it. Then, for
each time range (last hour, 24 hours, 7 days, 30 days):

1. headless chromium logs in to /ui/ and loads the overview; the requests the page sends
   (/query, /session/query, /store/list) are captured as they are, so the bench times the
   page's own queries, not a copy of them; and the page's own figure (first request sent
   to every panel drawn, `data-load-ms`) is read on each of `--rounds` refreshes;
2. the captured requests are replayed together over HTTP (at most 6 connections, as a
   browser opens per host), `--rounds` times after `--warmup`, timing the whole set (the
   figure the target is about) and each request (with the server's QTime).

Target (issue 7): the overview's queries together under 1 s with 1M events stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import httpx

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench import query_data as qd

ADMIN_PASSWORD = "bench-admin-password"
TARGET_S = 1.0
RANGES = ["1h", "24h", "7d", "30d"]
API_PATHS = ("/query", "/session/query", "/store/list")
BROWSER_CONNECTIONS = 6  # what chromium opens per host over HTTP/1.1
MARKER = "bench-ui-dataset.json"
REGIONS = ["01", "02", "03", "04", "05", "06"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to load")
    parser.add_argument("--seed", type=int, default=qd.SEED)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per range")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--ranges", default=",".join(RANGES), help="comma list of ranges")
    parser.add_argument(
        "--session-store",
        action="store_true",
        help="add an (empty) session store: the page asks /session/query for online now "
        "instead of counting recent events with /query",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="data directory to build, or reuse when this bench built it with the same "
        "--events and --seed (its 30 days then end when it was built; default: a temporary "
        "one, removed at the end)",
    )
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    parser.add_argument(
        "--chromium", default=os.environ.get("M1LITE_TEST_CHROMIUM", "/usr/bin/chromium")
    )
    args = parser.parse_args(argv)
    unknown = set(args.ranges.split(",")) - set(RANGES)
    if unknown:
        parser.error(f"unknown ranges {sorted(unknown)}; known: {RANGES}")
    return args


# -- the events --------------------------------------------------------------------------


def dashboard_records(ds: qd.Dataset, lo: int, hi: int) -> list[dict[str, Any]]:
    """The query bench's records in the browser script's names (docs/api.md): `type`
    beside `event.type`, `page.referrer`; its `sessionEnd` events become the flusher's
    `sessionTimeout` (with `session.durationMs`), and sessions get a region."""
    out = qd.records(ds, lo, hi)
    for record in out:
        kind = record["event.type"]
        if kind == "sessionEnd":
            kind = record["event.type"] = "sessionTimeout"
            record["session.durationMs"] = int(record["_m1rand"] * 1_800_000)
        record["type"] = kind
        record["page.referrer"] = record.pop("referrer")
        region = REGIONS[int(record["session.id"][:2], 16) % len(REGIONS)]
        record["_m1.geo.subdivision_1_iso_code"] = region
    return out


def build(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    wanted = {"events": args.events, "seed": args.seed}
    marker = data_dir / MARKER
    if marker.exists():
        saved = json.loads(marker.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            print(f"reusing {data_dir} (built {saved['built']})", flush=True)
            return {**saved["load"], "reused": True, "built": saved["built"]}
        raise SystemExit(f"{data_dir} holds other events ({saved}); give another --data")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SystemExit(f"{data_dir} is not empty and was not built by this bench")
    ds = qd.make_dataset(args.events, args.seed)
    # The same events, moved so that their 30 days end a minute ago.
    ds.received_ms = ds.received_ms + (int(time.time() * 1000) - 60_000 - qd.START_MS - qd.SPAN_MS)

    def progress(done: int, seconds: float) -> None:
        print(f"  {done:,} events in {seconds:.0f} s ({done / seconds:,.0f}/s)", flush=True)

    print(f"loading {args.events:,} events into m1lite ({data_dir}) ...", flush=True)
    result = qd.load_m1lite(ds, data_dir, progress=progress, make_records=dashboard_records)
    load = {"seconds": round(result.seconds, 1), "events_per_s": round(result.events_per_s)}
    built = time.strftime("%Y-%m-%d %H:%M:%S %z")
    marker.write_text(json.dumps({**wanted, "built": built, "load": load}))
    print(f"  loaded in {result.seconds:.1f} s", flush=True)
    return {**load, "reused": False, "built": built}


# -- the page ------------------------------------------------------------------------------


def capture(
    args: argparse.Namespace, base_url: str, ranges: list[str]
) -> dict[str, dict[str, Any]]:
    """Per range: the requests the overview sends (method, path, headers, body) and the
    page's own load times over `args.rounds` refreshes."""
    from playwright.sync_api import sync_playwright

    found: dict[str, dict[str, Any]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        sent: list[dict[str, Any]] = []

        def on_request(request: Any) -> None:
            path = urlsplit(request.url).path
            if path in API_PATHS:
                sent.append(
                    {
                        "path": path,
                        "headers": {
                            k: v
                            for k, v in request.headers.items()
                            if k in ("m1-auth-token", "content-type")
                        },
                        "body": request.post_data or "",
                    }
                )

        page.on("request", on_request)
        page.goto(f"{base_url}/ui/#/overview?range={ranges[0]}&live=0")
        page.fill("#login-user", "admin")
        page.fill("#login-password", ADMIN_PASSWORD)
        page.click("#login-submit")
        page.wait_for_selector("body[data-loaded]", timeout=120_000)
        for name in ranges:
            page.goto(f"{base_url}/ui/#/overview?range={name}&live=0")
            page.reload()  # a fresh page: state from the URL, nothing cached but the token
            loaded = _wait_loaded(page, 0)
            sent.clear()
            times: list[float] = []
            for _ in range(args.warmup + args.rounds):
                page.click("#refresh")
                loaded = _wait_loaded(page, loaded)
                times.append(float(page.evaluate("Number(document.body.dataset.loadMs)")))
            one_refresh = len(sent) // (args.warmup + args.rounds)
            found[name] = {
                "requests": sent[:one_refresh],
                "page_ms": times[args.warmup :],
            }
        browser.close()
    return found


def _wait_loaded(page: Any, after: int) -> int:
    page.wait_for_function(
        "(after) => Number(document.body.dataset.loaded || 0) > after && "
        "document.body.dataset.loading === 'false'",
        arg=after,
        timeout=120_000,
    )
    return int(page.evaluate("Number(document.body.dataset.loaded)"))


# -- replaying the page's requests ---------------------------------------------------------


def label(request: dict[str, Any]) -> str:
    if request["path"] != "/query":
        return request["path"]
    facets = ""
    for part in request["body"].split("&"):
        name, _, value = part.partition("=")
        if name == "json":
            facets = ",".join(list(json.loads(unquote_plus(value)).get("facet", {}))[:3])
    return f"/query [{facets}]"


async def replay(
    base_url: str, requests: list[dict[str, Any]], rounds: int, warmup: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=BROWSER_CONNECTIONS)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:

        async def one(request: dict[str, Any]) -> tuple[float, int | None]:
            started = time.perf_counter()
            response = await client.post(
                request["path"], content=request["body"], headers=request["headers"]
            )
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{request['path']}: {response.status_code} {response.text}")
            body = response.json()
            qtime = body.get("responseHeader", {}).get("QTime") if isinstance(body, dict) else None
            return elapsed, qtime

        totals: list[float] = []
        each: list[list[float]] = [[] for _ in requests]
        qtimes: list[list[int]] = [[] for _ in requests]
        for round_number in range(warmup + rounds):
            started = time.perf_counter()
            answers = await asyncio.gather(*(one(r) for r in requests))
            total = time.perf_counter() - started
            if round_number < warmup:
                continue
            totals.append(total)
            for i, (elapsed, qtime) in enumerate(answers):
                each[i].append(elapsed)
                if qtime is not None:
                    qtimes[i].append(qtime)
    return {
        "together_ms": summary([t * 1000 for t in totals]),
        "requests": [
            {
                "label": label(r),
                "wall_ms": summary([t * 1000 for t in each[i]]),
                "qtime_ms": summary([float(q) for q in qtimes[i]]) if qtimes[i] else None,
            }
            for i, r in enumerate(requests)
        ],
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "p95": round(common.percentile(values, 95), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ranges = args.ranges.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="m1lite-bench-ui-"))
    data_dir = args.data or workdir / "data"
    results: dict[str, Any] = {
        "machine": common.machine_info(),
        "versions": common.versions(("playwright",)),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    server: common.Server | None = None
    try:
        results["load"] = build(args, data_dir)
        server, ready_s = common.start_m1lite(
            data_dir, workdir, env={"M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD}
        )
        results["server_ready_s"] = round(ready_s, 1)
        if args.session_store:
            token = httpx.post(
                server.base_url + "/auth", data={"username": "admin", "password": ADMIN_PASSWORD}
            ).text
            environment = {"stores": [], "sessionStores": [{"store": "stash"}]}
            response = httpx.post(
                server.base_url + "/orchestrate/addStores",
                headers={"m1-auth-token": token},
                data={"environment": json.dumps(environment)},
            )
            if response.status_code not in (200, 409):
                raise RuntimeError(response.text)
        print(
            f"server ready in {results['server_ready_s']} s; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        pages = capture(args, server.base_url, ranges)
        results["ranges"] = {}
        for name in ranges:
            timed = asyncio.run(
                replay(server.base_url, pages[name]["requests"], args.rounds, args.warmup)
            )
            timed["page_ms"] = summary(pages[name]["page_ms"])
            timed["request_count"] = len(pages[name]["requests"])
            results["ranges"][name] = timed
            report(name, timed)
        worst = max(r["together_ms"]["p95"] for r in results["ranges"].values())
        results["target_met"] = worst < TARGET_S * 1000
        print(
            f"\nworst p95 of all queries together: {worst:.1f} ms "
            f"(target < {TARGET_S * 1000:.0f} ms: {'met' if results['target_met'] else 'MISSED'})"
        )
    finally:
        if server is not None:
            server.stop()
        if args.data is None:
            shutil.rmtree(workdir, ignore_errors=True)
    common.write_results(results, args.out, "ui")
    return 0


def report(name: str, timed: dict[str, Any]) -> None:
    together, page = timed["together_ms"], timed["page_ms"]
    print(f"\nrange {name}: {timed['request_count']} requests")
    print(
        f"  all together (replayed, {BROWSER_CONNECTIONS} connections): median "
        f"{together['median']} ms, p95 {together['p95']} ms"
    )
    print(f"  in chromium (sent to drawn): median {page['median']} ms, p95 {page['p95']} ms")
    for request in timed["requests"]:
        qtime = request["qtime_ms"]
        server_side = f", QTime median {qtime['median']} ms" if qtime else ""
        print(f"    {request['label']:<58} median {request['wall_ms']['median']} ms{server_side}")


if __name__ == "__main__":
    sys.exit(main())

"""Query speed of m1lite against DuckDB on the same synthetic events (issue 3).

Builds the events with numpy (seeded; 1M by default, `--events 10000000` for the full
run), writes them into a real m1lite data directory through m1lite's writer, loads the
same arrays into DuckDB (in-memory, `SET threads=2`; VARCHAR columns as a user would
declare them, and ENUM columns as a second variant), then asks every question of
`query_questions.py` of each engine, rotating the engine order every round, checks that
the answers agree, and prints medians and the per-round ratio m1lite / DuckDB.

m1lite is measured in-process (the /query handler's own functions, no HTTP: the time the
ratio target is about, against DuckDB's in-process time) and then over HTTP against a real
`m1lite serve` on the same directory (client wall time and the server's QTime). Index size:
the LMDB `index` database against the `log` database (pages x page size), plus the
server's resident memory.

Target (issue 3), at 10M events: every question at most half of DuckDB's time; index at
most 25 % of the log.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a script (`make bench-query`): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, profiles
from bench import query_data as qd
from bench import query_questions as qq

ADMIN_PASSWORD = "bench-admin-password"
TARGET_RATIO = 0.5  # m1lite time / DuckDB (VARCHAR) time
TARGET_INDEX_SHARE = 0.25  # index bytes / log bytes
MARKER = "bench-dataset.json"  # in a data directory this bench built


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to load")
    parser.add_argument("--seed", type=int, default=qd.SEED)
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (in-process)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--http-rounds", type=int, default=5, help="timed rounds over HTTP")
    parser.add_argument("--only", help="comma list of question keys (default: all)")
    parser.add_argument(
        "--data",
        type=Path,
        help="data directory to build, or reuse when it holds the same events (default: a "
        "temporary one, removed at the end)",
    )
    parser.add_argument("--batch", type=int, default=5_000, help="events per writer submit")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP phase")
    parser.add_argument(
        "--quiet-wait", type=float, default=240, help="max seconds to wait for a quiet machine"
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run with glibc malloc keeping freed memory for reuse (MALLOC_MMAP_THRESHOLD_, "
        "MALLOC_TRIM_THRESHOLD_), for this process and the server: see README",
    )
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/...)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy profiles instead")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-rate", type=int, default=250, help="py-spy samples/s")
    args = parser.parse_args(argv)
    known = [q.key for q in qq.questions()]
    if args.only:
        unknown = set(args.only.split(",")) - set(known)
        if unknown:
            parser.error(f"unknown questions: {', '.join(sorted(unknown))}; known: {known}")
    return args


def chosen_questions(args: argparse.Namespace) -> list[qq.Question]:
    found = qq.questions()
    if not args.only:
        return found
    wanted = args.only.split(",")
    return [q for q in found if q.key in wanted]


# -- the machine -------------------------------------------------------------------------


@dataclass
class Busy:
    """Cores used by other processes during a span: the machine's busy time minus this
    process's (DuckDB's threads included) and the server's."""

    server_pid: int | None = None
    start: float = 0.0
    busy: tuple[int, int] = (0, 0)
    own: float = 0.0
    server: float = 0.0
    other_cores: float = 0.0

    def __enter__(self) -> Busy:
        self.start = time.monotonic()
        self.busy = common.system_busy_ticks()
        usage = os.times()
        self.own = usage.user + usage.system
        self.server = common.cpu_seconds(self.server_pid) if self.server_pid else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(1e-9, time.monotonic() - self.start)
        busy, total = common.system_busy_ticks()
        share = (busy - self.busy[0]) / max(1, total - self.busy[1])
        usage = os.times()
        own = usage.user + usage.system - self.own
        server = (common.cpu_seconds(self.server_pid) if self.server_pid else 0.0) - self.server
        machine = share * (os.cpu_count() or 1)
        self.other_cores = max(0.0, machine - (own + server) / elapsed)


# -- rounds ------------------------------------------------------------------------------


@dataclass
class Timings:
    """Per question and engine: ms per timed round (and QTime for m1lite)."""

    ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    qtime: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cpu: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    sys: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)

    def add(self, question: str, engine: str, asked: qq.Asked) -> None:
        self.ms.setdefault(question, {}).setdefault(engine, []).append(asked.ms)
        if asked.qtime_ms is not None:
            self.qtime.setdefault(question, {}).setdefault(engine, []).append(asked.qtime_ms)
        if asked.cpu_ms is not None:
            self.cpu.setdefault(question, {}).setdefault(engine, []).append(asked.cpu_ms)
        if asked.sys_ms is not None:
            self.sys.setdefault(question, {}).setdefault(engine, []).append(asked.sys_ms)


def run_rounds(
    engines: list[Any],
    questions: list[qq.Question],
    *,
    rounds: int,
    warmup: int,
    server_pid: int | None = None,
) -> Timings:
    """Every question of every engine per round, the engine order rotated each round; the
    answers compared with the first engine's in every round (warm-up included)."""
    timings = Timings()
    for number in range(warmup + rounds):
        shift = number % len(engines)
        order = engines[shift:] + engines[:shift]
        with Busy(server_pid) as busy:
            for question in questions:
                answers: dict[str, Any] = {}
                for engine in order:
                    gc.collect()  # never bill one engine for another's garbage
                    asked = engine.ask(question)
                    answers[engine.name] = asked.answer
                    if number >= warmup:
                        timings.add(question.key, engine.name, asked)
                reference = answers[engines[0].name]
                for name, answer in answers.items():
                    if answer != reference:
                        timings.mismatches.append(f"round {number}: {question.key}: {name}")
        if number >= warmup:
            timings.other_cores.append(round(busy.other_cores, 2))
        label = "warm-up" if number < warmup else f"round {number - warmup + 1}/{rounds}"
        print(f"  {label} done (other load {busy.other_cores:.2f} cores)", flush=True)
    return timings


def summarise(timings: Timings, questions: list[qq.Question], base: str) -> list[dict[str, Any]]:
    """Per question: each engine's median (min-max) ms, QTime, and `share`: the median over
    rounds of base's time / that engine's time (0.5 = base took half as long)."""
    rows = []
    for question in questions:
        per_engine = timings.ms[question.key]
        row: dict[str, Any] = {"question": question.key, "title": question.title, "engines": {}}
        for engine, values in per_engine.items():
            entry: dict[str, Any] = {
                "median_ms": round(statistics.median(values), 3),
                "min_ms": round(min(values), 3),
                "max_ms": round(max(values), 3),
            }
            if engine != base and base in per_engine:
                ratios = [b / e for b, e in zip(per_engine[base], values, strict=True)]
                entry["share"] = round(statistics.median(ratios), 3)
            qtimes = timings.qtime.get(question.key, {}).get(engine)
            if qtimes:
                entry["qtime_ms"] = statistics.median(qtimes)
            for name, found in (("cpu_ms", timings.cpu), ("sys_ms", timings.sys)):
                spent = found.get(question.key, {}).get(engine)
                if spent:
                    entry[name] = round(statistics.median(spent), 3)
            entry["all_ms"] = [round(v, 2) for v in values]
            row["engines"][engine] = entry
        rows.append(row)
    return rows


# -- phases ------------------------------------------------------------------------------


def prepare_data(args: argparse.Namespace, data_dir: Path, ds: qd.Dataset) -> dict[str, Any]:
    """Load m1lite unless data_dir already holds these events; the load figures."""
    wanted = {"events": args.events, "seed": args.seed, "format": 1}
    marker = data_dir / MARKER
    if marker.exists():
        saved = json.loads(marker.read_text())
        if {k: saved.get(k) for k in wanted} == wanted:
            print(f"reusing {data_dir} (built {saved['built']})", flush=True)
            return {**saved["load"], "reused": True}
        raise SystemExit(f"{data_dir} holds other events ({saved}); give another --data")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise SystemExit(f"{data_dir} is not empty and was not built by this bench")

    def progress(done: int, seconds: float) -> None:
        print(f"  {done:,} events in {seconds:.0f} s ({done / seconds:,.0f}/s)", flush=True)

    print(f"loading {args.events:,} events into m1lite ({data_dir}) ...", flush=True)
    result = qd.load_m1lite(ds, data_dir, batch=args.batch, progress=progress)
    load = {
        "seconds": round(result.seconds, 1),
        "events_per_s": round(result.events_per_s),
        "commits": result.commits,
        "batch": args.batch,
    }
    marker.write_text(
        json.dumps({**wanted, "built": time.strftime("%Y-%m-%d %H:%M:%S"), "load": load})
    )
    print(f"  loaded in {result.seconds:.1f} s: {result.events_per_s:,.0f} events/s", flush=True)
    return {**load, "reused": False}


def sizes(data_dir: Path, ds: qd.Dataset) -> dict[str, Any]:
    dbs = qd.lmdb_sizes(data_dir)
    log_bytes, index_bytes = dbs["log"]["bytes"], dbs["index"]["bytes"]
    return {
        "lmdb": dbs,
        "index_share_of_log": round(index_bytes / log_bytes, 4),
        "log_bytes_per_event": round(log_bytes / ds.n, 1),
        "index_bytes_per_event": round(index_bytes / ds.n, 1),
        "data_mdb_bytes": (data_dir / "lake" / "data.mdb").stat().st_blocks * 512,
        "mean_record_bytes": round(qd.mean_record_bytes(data_dir), 1),
        "mean_json_bytes": round(qd.mean_json_bytes(ds), 1),
        "index_by_field": qd.index_breakdown(data_dir),
    }


def open_in_process(data_dir: Path) -> tuple[Any, dict[str, Any]]:
    from m1lite.config import Config
    from m1lite.environment import Environment

    gc.collect()
    before = common.rss_bytes(os.getpid(), "RssAnon")
    started = time.perf_counter()
    env = Environment(Config(data=data_dir))
    opened = time.perf_counter() - started
    return env, {
        "open_s": round(opened, 2),
        "rss_anon_growth_bytes": common.rss_bytes(os.getpid(), "RssAnon") - before,
    }


def start_server(data_dir: Path, workdir: Path) -> tuple[common.Server, str, float]:
    server, ready = common.start_m1lite(
        data_dir, workdir, env={"M1LITE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    response = httpx.post(
        server.base_url + "/auth",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=30,
    )
    response.raise_for_status()
    return server, response.text.strip(), ready


def server_memory(pid: int) -> dict[str, int]:
    return {"rss_bytes": common.rss_bytes(pid), "rss_anon_bytes": common.rss_bytes(pid, "RssAnon")}


# -- profiles ------------------------------------------------------------------------------


def profile(engine: qq.M1InProcess, questions: list[qq.Question], args: argparse.Namespace) -> None:
    """py-spy on this process while the in-process engine asks each question in a loop."""
    out_dir: Path = args.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).parent / "py-spy"
    summaries = {}
    for question in questions:
        raw = out_dir / f"{question.key}.txt"
        command = [str(spy), "record", "--pid", str(os.getpid()), "--rate", str(args.profile_rate)]
        command += ["--duration", str(int(args.profile_seconds)), "--format", "raw"]
        command += ["--output", str(raw), "--nonblocking"]
        spy_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times = []
        time.sleep(0.5)  # let py-spy attach
        while spy_process.poll() is None:
            times.append(engine.ask(question).ms)
        _out, err = spy_process.communicate()
        if not raw.exists():
            print(f"py-spy failed for {question.key}: {err.decode(errors='replace')}")
            continue
        summary = profiles.summarise_profile(raw, top=12)
        summary["median_ms"] = statistics.median(times) if times else None
        summaries[question.key] = summary
        print(f"\n## {question.key}: {question.title}  (median {summary['median_ms']:.1f} ms)")
        for title, key in (("self", "self"), ("cumulative (m1lite)", "cumulative_m1lite")):
            print(f"  {title}:")
            for item in summary[key][:10]:
                print(f"    {item['percent']:5.1f}%  {item['function']}")
    (out_dir / "profiles.json").write_text(json.dumps(summaries, indent=2))


# -- output ------------------------------------------------------------------------------


def print_table(rows: list[dict[str, Any]], engines: list[str], base: str) -> None:
    print(f"\n{'question':<18}" + "".join(f"{e:>24}" for e in engines) + f"   {base} / engine")
    for row in rows:
        cells = []
        for engine in engines:
            entry = row["engines"].get(engine)
            cells.append(
                f"{entry['median_ms']:>10.2f} ({entry['min_ms']:.1f}-{entry['max_ms']:.1f})"
            )
        ratios = [
            f"{e}={row['engines'][e]['share']:.2f}"
            for e in engines
            if e != base and "share" in row["engines"][e]
        ]
        print(
            f"{row['question']:<18}" + "".join(f"{c:>24}" for c in cells) + "   " + " ".join(ratios)
        )


def verdicts(rows: list[dict[str, Any]], size: dict[str, Any]) -> list[str]:
    """The issue's targets: m1lite at most half of DuckDB (VARCHAR) per question, and the
    index at most a quarter of the log."""
    lines = []
    for row in rows:
        share = row["engines"]["duckdb"]["share"]
        state = "met" if share <= TARGET_RATIO else "MISSED"
        lines.append(f"{row['question']}: m1lite = {share:.2f} x DuckDB's time ({state})")
    share = size["index_share_of_log"]
    state = "met" if share <= TARGET_INDEX_SHARE else "MISSED"
    lines.append(f"index / log = {share:.1%} ({state})")
    return lines


# glibc: large blocks from the heap instead of their own mmap, and a heap that is never
# trimmed, so memory a query frees is reused by the next one instead of going back to the
# kernel (on a VM that reports free pages to its host, faulting it back in costs ~1 s/GB).
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep_freed_memory and any(os.environ.get(k) != v for k, v in KEEP_FREED_MEMORY.items()):
        # glibc reads these at start-up only: start again with them set.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_FREED_MEMORY})
    import duckdb

    machine, versions = common.machine_info(), common.versions(extra=("duckdb",))
    versions.pop("wrk", None)
    print(json.dumps({"machine": machine, "versions": versions}, indent=1), flush=True)
    questions = chosen_questions(args)
    results: dict[str, Any] = {
        "machine": machine,
        "versions": versions,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="m1lite-qbench-") as tmp:
        workdir = Path(tmp)
        data_dir = args.data or workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        ds = qd.make_dataset(args.events, args.seed)
        results["dataset_s"] = round(time.perf_counter() - started, 1)
        results["load"] = prepare_data(args, data_dir, ds)
        results["sizes"] = size = sizes(data_dir, ds)
        index_mb, log_mb = (size["lmdb"][db]["bytes"] / 1e6 for db in ("index", "log"))
        print(
            f"index {index_mb:,.1f} MB = {size['index_share_of_log']:.1%} of the log's "
            f"{log_mb:,.1f} MB",
            flush=True,
        )

        con = duckdb.connect()
        con.execute("SET threads=2")
        if not args.profile:  # profiles look at m1lite alone
            print("loading DuckDB ...", flush=True)
            results["duckdb_load"] = qd.load_duckdb(ds, con)
            print(f"  {results['duckdb_load']}", flush=True)
        del ds
        gc.collect()

        env, results["in_process_open"] = open_in_process(data_dir)
        m1 = qq.M1InProcess(env)
        engines = [m1, qq.Duck(con, "ev", "duckdb"), qq.Duck(con, "ev_enum", "duckdb-enum")]
        names = [e.name for e in engines]
        try:
            if args.profile:
                run_rounds([m1], questions, rounds=0, warmup=1)  # warm the caches
                profile(m1, questions, args)
                return 0
            print("in-process rounds:", flush=True)
            results["load_average_in_process"] = common.wait_quiet(args.quiet_wait)
            timings = run_rounds(engines, questions, rounds=args.rounds, warmup=args.warmup)
        finally:
            env.close()
        # The server below holds its own index; this one would only take memory.
        del env, m1, engines
        gc.collect()
        results["in_process"] = rows = summarise(timings, questions, "m1lite")
        results["in_process_other_cores"] = timings.other_cores
        results["mismatches"] = list(timings.mismatches)
        print_table(rows, names, "m1lite")

        if not args.no_http:
            server, token, ready_s = start_server(data_dir, workdir)
            http = qq.M1Http(server.base_url, token)
            try:
                results["server_ready_s"] = round(ready_s, 1)
                results["server_memory_at_start"] = server_memory(server.pid)
                print(f"HTTP rounds (server ready in {ready_s:.1f} s):", flush=True)
                results["load_average_http"] = common.wait_quiet(args.quiet_wait)
                http_timings = run_rounds(
                    [http, qq.Duck(con, "ev", "duckdb")],
                    questions,
                    rounds=args.http_rounds,
                    warmup=1,
                    server_pid=server.pid,
                )
                results["server_memory_after_queries"] = server_memory(server.pid)
            finally:
                http.close()
                code = server.stop()
                if code not in (0, None):
                    print(f"m1lite exited with {code}:\n{server.log_tail()}")
            results["http"] = http_rows = summarise(http_timings, questions, "m1lite-http")
            results["http_other_cores"] = http_timings.other_cores
            results["mismatches"] += http_timings.mismatches
            print_table(http_rows, ["m1lite-http", "duckdb"], "m1lite-http")
        if args.data is None:
            shutil.rmtree(data_dir, ignore_errors=True)

    results["verdicts"] = verdicts(rows, size)
    print("\n" + "\n".join(results["verdicts"]))
    common.write_results(results, args.out, "query")
    if results["mismatches"]:
        print("\nFAILED: the engines' answers differ:", file=sys.stderr)
        for line in results["mismatches"]:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

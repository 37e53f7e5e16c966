"""The `m1lite` operator command: serve, reindex, flush, simulate, backup, restore, config-docs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from m1lite import __version__
from m1lite import backup as backup_commands
from m1lite.config import Config, add_arguments, configuration_markdown, resolve
from m1lite.simulate.config import add_command as add_simulate_command
from m1lite.storage.env import DataDirLock, DataDirLocked, LakeEnv

REINDEX_BATCH = 20_000  # events per transaction, as the writer's largest group commit


def _serve(config: Config) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HypercornConfig

    from m1lite.app import create_app
    from m1lite.enrich.geo import GeoDatabaseError

    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(config)
    try:
        # Open before binding, so a locked or broken data directory fails fast and clearly.
        app.open()
    except DataDirLocked as exc:
        print(f"m1lite: {exc}", file=sys.stderr)
        return 3
    except (GeoDatabaseError, ValueError, OSError) as exc:
        print(f"m1lite: cannot start: {exc}", file=sys.stderr)
        return 2

    hyper = HypercornConfig()
    hyper.bind = [
        f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    ]
    hyper.workers = 1
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.loglevel = config.log_level.upper()
    hyper.keep_alive_timeout = 75
    hyper.graceful_timeout = 8  # Docker waits 10 s after SIGTERM

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"m1lite {__version__} serving {config.data} on http://{config.host}:{config.port}",
            file=sys.stderr,
            flush=True,
        )
        await serve(app, hyper, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    try:
        asyncio.run(run())
    finally:
        app.close()  # drains queued events even if the lifespan did not run
    return 0


def _reindex(config: Config) -> int:
    """Drop the `index` database and rebuild it from the log (the server must be stopped)."""
    from m1lite.schema import Schema, parse_date_ms
    from m1lite.storage.index import Index
    from m1lite.storage.meta import MetaStore
    from m1lite.storage.replay import checkpoint, replay
    from m1lite.system import SystemProperties

    if not (config.data / "lake").is_dir():
        print(f"m1lite: {config.data} holds no m1lite data (no lake/ folder)", file=sys.stderr)
        return 2
    lock = DataDirLock(config.data)
    try:
        lock.acquire()
    except DataDirLocked as exc:
        print(f"m1lite: {exc}; stop the server first", file=sys.stderr)
        return 3
    try:
        lake = LakeEnv(
            config.data / "lake",
            map_size_mb=config.map_size_mb,
            max_map_size_mb=config.max_map_size_mb,
        )
        try:
            meta = MetaStore(lake)
            system = SystemProperties(meta, initialised=True)
            schema = Schema.from_list(meta.get("schema", []))
            # The same split Environment.field_kinds gives the writer.
            kinds = (
                schema.names_of_type("date") | {system.property_received},
                schema.names_of_type("text"),
            )
            with lake.write() as txn:
                txn.drop(lake.dbs["index"], delete=False)
            index = Index()
            total = replay(
                lake,
                index,
                start=0,
                field_kinds=kinds,
                date_ms=parse_date_ms,
                progress=lambda done: print(
                    f"m1lite: reindexed {done:,} events", file=sys.stderr, flush=True
                ),
            )
            checkpoint(lake, index)
        finally:
            lake.close()
    finally:
        lock.release()
    print(f"m1lite: reindexed {total:,} events", file=sys.stderr, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m1lite",
        description="A small self-hosted event capture server with a MinusOneDB-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"m1lite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every flag also reads M1LITE_<FLAG> (the flag wins).",
    )
    add_arguments(serve)
    reindex = commands.add_parser(
        "reindex",
        help="rebuild the query index from the event log (server stopped)",
        description="Drop the index and rebuild it from the event log. Stop the server "
        "first: reindex takes the data directory's lock (exit code 3 while a server holds "
        "it). If interrupted, run it again.",
    )
    reindex.add_argument("--data", dest="data", default=None, help="Data directory.")
    flush = commands.add_parser(
        "flush",
        help="flush lapsed sessions over the API (the guide's standalone flusher)",
        description="Every --interval seconds, turn the sessions of a session store last "
        "updated more than --timeout-s ago into sessionTimeout events (/write), then "
        "delete them (/session/update). The server's built-in flusher already does this "
        "(atomically); this is for running it elsewhere. See docs/sessions.md.",
    )
    flush.add_argument("--server", required=True, help="Server URL, e.g. http://127.0.0.1:8080.")
    flush.add_argument(
        "--user", required=True, help="A user with publish, sessionQuery and sessionUpdate."
    )
    flush.add_argument("--password", required=True, help="Its password.")
    flush.add_argument("--session", default="stash", help="Session store (default: stash).")
    flush.add_argument(
        "--timeout-s",
        type=float,
        default=30.0,
        help="Seconds without an update after which a session is flushed (default: 30).",
    )
    flush.add_argument(
        "--interval", type=float, default=1.0, help="Seconds between passes (default: 1)."
    )
    flush.add_argument(
        "--key",
        default="session.id",
        help="The session store's key property (default: session.id).",
    )
    flush.add_argument("--once", action="store_true", help="One pass, then exit.")
    add_simulate_command(commands)
    commands.add_parser("config-docs", help="print docs/configuration.md from the settings table")
    backup_commands.add_commands(commands)
    return parser


def _flush(args: argparse.Namespace) -> int:
    from m1lite.client import ClientError
    from m1lite.sessions.remote import run

    if args.timeout_s <= 0 or args.interval <= 0:
        print("m1lite: --timeout-s and --interval must be positive", file=sys.stderr)
        return 2
    try:
        return run(
            args.server,
            args.user,
            args.password,
            args.session,
            args.timeout_s,
            key=args.key,
            interval_s=args.interval,
            once=args.once,
            say=lambda line: print(f"m1lite flush: {line}", flush=True),
        )
    except ClientError as exc:
        print(f"m1lite flush: {exc.message} ({exc.status} {exc.code})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        sys.exit(_serve(resolve(args)))
    if args.command == "reindex":
        sys.exit(_reindex(resolve(args)))
    if args.command == "flush":
        sys.exit(_flush(args))
    if args.command == "simulate":
        from m1lite.simulate.run import command

        sys.exit(command(args))
    if args.command in backup_commands.COMMANDS:
        sys.exit(backup_commands.run(args))
    if args.command == "config-docs":
        sys.stdout.write(configuration_markdown())

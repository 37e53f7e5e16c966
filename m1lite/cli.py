"""The `m1lite` operator command: serve, config-docs (more commands join in later issues)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from m1lite import __version__
from m1lite.config import Config, add_arguments, configuration_markdown, resolve
from m1lite.storage.env import DataDirLocked


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
    commands.add_parser("config-docs", help="print docs/configuration.md from the settings table")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        sys.exit(_serve(resolve(args)))
    if args.command == "config-docs":
        sys.stdout.write(configuration_markdown())

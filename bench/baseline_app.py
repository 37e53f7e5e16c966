"""The bare baseline: Starlette on hypercorn with nothing but `POST /e` (read body, 204).

bench_ingest.py compares m1lite's /write against this app in the same repetition, so the
ratio shows what m1lite's own work costs on top of the HTTP stack both share. It is served
the way `m1lite serve` serves (hypercorn's asyncio `serve`, one worker, no access log,
the same keep-alive), so the only difference is the application.

Run: `python -m bench.baseline_app --port P` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def ingest(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


app = Starlette(routes=[Route("/e", ingest, methods=["POST"])])


def main() -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # Keep in step with m1lite/cli.py `_serve`.
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.workers = 1
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = "INFO"
    config.keep_alive_timeout = 75
    config.graceful_timeout = 8

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(run())


if __name__ == "__main__":
    main()

"""`m1lite simulate`'s options: flags, or the guide's config.json plus a visitor count.

    m1lite simulate --server URL --user U --password P [--session stash] --users N ...
    m1lite simulate config.json N [flags]

config.json has the guide's keys: `server`, `session` (a session store's name, or null to
send heartbeats as events), `username`, `password`. Optional keys: `users`, `duration`,
`rate`, `seed`, `heartbeatMs`, `thinkSeconds`, `addresses`, `async`. Other keys (the
guide's sample carries explanations) are ignored. Flags given on the command line win.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_HEARTBEAT_MS = 5000
DEFAULT_THINK_S = 25.0
DEFAULT_ADDRESSES = 64
DEFAULT_CONNECTIONS = 64
DEFAULT_TICK_MS = 1000  # M1Events.js sends its queue once a second

# config.json key -> (attribute, type)
_JSON_KEYS: dict[str, tuple[str, type]] = {
    "server": ("server", str),
    "username": ("user", str),
    "password": ("password", str),
    "users": ("users", int),
    "duration": ("duration", float),
    "rate": ("rate", float),
    "seed": ("seed", int),
    "heartbeatMs": ("heartbeat_ms", int),
    "thinkSeconds": ("think_s", float),
    "addresses": ("addresses", int),
    "async": ("is_async", bool),
}
_KIND_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class ConfigError(ValueError):
    """A bad command line or config.json: the message says what to fix."""


@dataclass(frozen=True)
class SimConfig:
    server: str
    user: str
    password: str
    session: str | None  # session store for heartbeats; None: heartbeats are events
    users: int  # concurrent visitors
    duration_s: float | None  # None: until Ctrl-C / SIGTERM
    rate: float | None  # arrivals per second at the start; None: over one heartbeat period
    seed: int
    heartbeat_ms: int  # 0: no heartbeats
    think_s: float  # mean seconds on a page
    addresses: int  # client addresses (X-Forwarded-For), one login each
    connections: int  # HTTP connections to the server, at most
    tick_ms: int  # how long queued events wait to be sent together (--batch: per address)
    batch: bool  # one request per address per tick, instead of each visitor its own
    token: str | None  # a token good from any address (minted with ip=*): no logins
    is_async: bool  # /write async=true (answered once queued, not once on disk)
    warmup_s: float  # left out of the rates and latencies of the summary
    progress: bool
    json: bool

    @property
    def arrival_window_s(self) -> float:
        """Without --rate the first visitors arrive spread over one heartbeat period."""
        return (self.heartbeat_ms or DEFAULT_HEARTBEAT_MS) / 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        type=Path,
        help="the guide's config.json (server, session, username, password)",
    )
    parser.add_argument("count", nargs="?", type=int, help="concurrent visitors (with config)")
    parser.add_argument("--server", help="server URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--user", help="a user with publish (and sessionUpdate with --session)")
    parser.add_argument("--password", help="its password")
    parser.add_argument(
        "--session",
        help="session store for heartbeats (e.g. stash); without it heartbeats are events",
    )
    parser.add_argument("--users", type=int, help="concurrent visitors (default 10)")
    parser.add_argument(
        "--duration", type=float, help="seconds to run (default: until Ctrl-C or SIGTERM)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="visitors arriving per second until --users are on the site "
        "(default: all arrive within the first heartbeat period)",
    )
    parser.add_argument("--seed", type=int, help="makes every visitor's behaviour reproducible")
    parser.add_argument(
        "--heartbeat-ms",
        type=int,
        help=f"heartbeat interval, 0 for none (default {DEFAULT_HEARTBEAT_MS})",
    )
    parser.add_argument(
        "--think-s",
        type=float,
        help=f"mean seconds a visitor reads a page (default {DEFAULT_THINK_S:g}; with "
        "--duration at most a quarter of it, so short runs still show several views)",
    )
    parser.add_argument(
        "--addresses",
        type=int,
        help="client addresses the visitors come from, sent as X-Forwarded-For; each "
        f"logs in once (default {DEFAULT_ADDRESSES})",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"HTTP connections to the server, at most (default {DEFAULT_CONNECTIONS})",
    )
    parser.add_argument(
        "--tick-ms",
        type=int,
        default=DEFAULT_TICK_MS,
        help="how long a visitor's events wait to leave together, as the browser script's "
        f"queue does (with --batch: each address's interval) (default {DEFAULT_TICK_MS})",
    )
    parser.add_argument(
        "--batch",
        action="store_true",
        help="each address sends one request per tick with all its visitors' events (and "
        "one with their heartbeats, an upsert each) instead of each visitor its own "
        "requests: many fewer requests for the same visitors",
    )
    parser.add_argument(
        "--token",
        help="a token good from any address (an admin's /auth with ip=*, as the browser "
        "script's data-token): no logins, --user and --password not needed",
    )
    parser.add_argument(
        "--async",
        dest="is_async",
        action="store_true",
        default=None,
        help="/write with async=true: answered once queued (default: once on disk)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds left out of the summary's rates and latencies (the ramp-up)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _from_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    found: dict[str, Any] = {}
    if "session" in data:
        session = data["session"]
        if session is not None and not isinstance(session, str):
            raise ConfigError(f"{path}: session must be a store name or null")
        found["session"] = session or None
    for key, (attribute, kind) in _JSON_KEYS.items():
        if key not in data or data[key] is None:
            continue
        value = data[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{path}: {key} must be {_KIND_WORDS[kind]}")
        found[attribute] = kind(value)
    return found


def resolve(args: argparse.Namespace, random_seed: int) -> SimConfig:
    """The options from the command line (and config.json); `random_seed` when no seed."""
    values: dict[str, Any] = {}
    if args.config is not None:
        if str(args.config).isdigit() and args.count is None:
            raise ConfigError("give the config file first: m1lite simulate config.json N")
        values.update(_from_json(args.config))
        if args.count is not None:
            values["users"] = args.count
    for name in ("server", "user", "password", "users", "duration", "rate", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    for flag, attribute in (
        ("session", "session"),
        ("heartbeat_ms", "heartbeat_ms"),
        ("think_s", "think_s"),
        ("addresses", "addresses"),
        ("is_async", "is_async"),
    ):
        if getattr(args, flag) is not None:
            values[attribute] = getattr(args, flag)
    needed = [("server", "--server")]
    if not args.token:
        needed += [("user", "--user"), ("password", "--password")]
    for required, flag in needed:
        if not values.get(required):
            raise ConfigError(f"{flag} is required (or give a config.json with it)")
    server = str(values["server"]).rstrip("/")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"the server must be an http:// or https:// URL, not {server!r}")
    users = int(values.get("users", 10))
    duration = values.get("duration")
    think = values.get("think_s")
    if think is None:
        think = DEFAULT_THINK_S if duration is None else min(DEFAULT_THINK_S, duration / 4)
    config = SimConfig(
        server=server,
        user=str(values.get("user", "")),
        password=str(values.get("password", "")),
        session=values.get("session") or None,
        users=users,
        duration_s=None if duration is None else float(duration),
        rate=values.get("rate"),
        seed=int(values.get("seed", random_seed)),
        heartbeat_ms=int(values.get("heartbeat_ms", DEFAULT_HEARTBEAT_MS)),
        think_s=float(think),
        addresses=int(values.get("addresses", DEFAULT_ADDRESSES)),
        connections=args.connections,
        tick_ms=args.tick_ms,
        batch=args.batch,
        token=args.token or None,
        is_async=bool(values.get("is_async", False)),
        warmup_s=args.warmup,
        progress=not args.no_progress,
        json=args.json,
    )
    _check(config)
    return config


def _check(config: SimConfig) -> None:
    problems = []
    if config.users < 1:
        problems.append("--users must be at least 1")
    if config.duration_s is not None and config.duration_s <= 0:
        problems.append("--duration must be positive")
    if config.rate is not None and config.rate <= 0:
        problems.append("--rate must be positive")
    if config.heartbeat_ms < 0 or 0 < config.heartbeat_ms < 100:
        problems.append("--heartbeat-ms must be 0 (none) or at least 100")
    if config.think_s <= 0:
        problems.append("--think-s must be positive")
    if config.addresses < 1:
        problems.append("--addresses must be at least 1")
    if config.connections < 1:
        problems.append("--connections must be at least 1")
    if config.tick_ms < 10:
        problems.append("--tick-ms must be at least 10")
    if config.warmup_s < 0:
        problems.append("--warmup must not be negative")
    if problems:
        raise ConfigError("; ".join(problems))


def add_command(commands: Any) -> argparse.ArgumentParser:
    """Add `simulate` to the `m1lite` subcommands (`commands` from add_subparsers)."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "simulate",
        help="simulated website visitors: events, heartbeats, sessions (load testing)",
        description="Simulate N concurrent website visitors sending the browser script's "
        "events (sessionStart, view, heartbeat) to a server, from a spread of client "
        "addresses (X-Forwarded-For: start the server with --trusted-proxies including "
        "this machine's address). Runs for --duration seconds or until Ctrl-C / SIGTERM, "
        "then prints a summary. Forms: `m1lite simulate --server URL --user U --password "
        "P [--session stash] --users N --duration S` and `m1lite simulate config.json N` "
        "(the guide's keys: server, session, username, password). See docs/cli.md.",
    )
    add_arguments(parser)
    return parser

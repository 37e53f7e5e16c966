"""One settings table: it feeds `m1lite serve` flags, `M1LITE_*` variables and
docs/configuration.md (tests/test_config.py keeps the three in step).

A flag wins over its variable, the variable over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str  # flag name without dashes; the variable is M1LITE_<NAME upper, '-' → '_'>
    default: Any
    help: str
    type: type = str

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def env_var(self) -> str:
        return "M1LITE_" + self.name.upper().replace("-", "_")

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("data", "./m1lite-data", "Data directory (one environment per directory)."),
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", 8080, "TCP port to listen on.", int),
    Setting(
        "template",
        "events",
        "Environment template applied when the data directory is new: `events`, "
        "`eventsSessionStore`, or a JSON file in the addSessionStore.json shape.",
    ),
    Setting("geoip", "", "MaxMind City database (.mmdb) used for `_m1.geo.*` enrichment."),
    Setting(
        "trusted-proxies",
        "",
        "Comma list of proxy addresses or CIDRs whose X-Forwarded-For is believed.",
    ),
    Setting("max-body-bytes", 1_048_576, "Largest request body accepted (413 above).", int),
    Setting("max-items-per-write", 10_000, "Most items one /write may carry.", int),
    Setting("max-json-depth", 32, "Deepest nesting accepted in an event.", int),
    Setting("max-properties-per-event", 1_000, "Most flattened properties in one event.", int),
    Setting(
        "group-commit-ms",
        50,
        "Longest time an async=true event waits in memory before its commit.",
        int,
    ),
    Setting(
        "max-queue-events",
        50_000,
        "Events queued in memory for the writer; past it /write waits up to 2 s for room "
        "(back-pressure), then answers 503.",
        int,
    ),
    Setting("map-size-mb", 1024, "Initial LMDB map size; grown automatically when full.", int),
    Setting(
        "max-map-size-mb",
        1_048_576,
        "Largest LMDB map size m1lite grows to before answering 507.",
        int,
    ),
    Setting(
        "token-cache-size",
        65_536,
        "Tokens kept in memory for fast checks (most recently used first); the others "
        "are looked up in the data directory.",
        int,
    ),
    Setting(
        "token-purge-ms",
        60_000,
        "How often expired tokens are deleted from memory and the data directory.",
        int,
    ),
    Setting(
        "login-failures-per-address",
        10,
        "Failed `/auth` password checks allowed per client address (IPv6: per /64) per "
        "`login-failure-window-ms`; past it `/auth` answers 429 without checking. 0: no limit.",
        int,
    ),
    Setting(
        "login-failures-per-user",
        20,
        "Failed `/auth` password checks allowed per username per `login-failure-window-ms`; "
        "past it only the password last accepted for that user still logs in (429 "
        "otherwise). 0: no limit.",
        int,
    ),
    Setting(
        "login-failure-window-ms",
        60_000,
        "The window of the two login-failure limits: the failures of one window are "
        "forgotten gradually over the next.",
        int,
    ),
    Setting("log-level", "info", "Log level: debug, info, warning or error."),
)


@dataclass
class Config:
    data: Path = Path("./m1lite-data")
    host: str = "127.0.0.1"
    port: int = 8080
    template: str = "events"
    geoip: str = ""
    trusted_proxies: str = ""
    max_body_bytes: int = 1_048_576
    max_items_per_write: int = 10_000
    max_json_depth: int = 32
    max_properties_per_event: int = 1_000
    group_commit_ms: int = 50
    max_queue_events: int = 50_000
    map_size_mb: int = 1024
    max_map_size_mb: int = 1_048_576
    token_cache_size: int = 65_536
    token_purge_ms: int = 60_000
    login_failures_per_address: int = 10
    login_failures_per_user: int = 20
    login_failure_window_ms: int = 60_000
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trusted_proxy_list(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every setting as a flag whose default is None, so 'not given' is visible."""
    for s in SETTINGS:
        parser.add_argument(s.flag, dest=s.attr, type=s.type, default=None, help=s.help)


def resolve(args: argparse.Namespace | None, environ: Mapping[str, str] | None = None) -> Config:
    """Flag, else M1LITE_* variable, else the table's default."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        value = getattr(args, s.attr, None) if args is not None else None
        if value is None and s.env_var in environ:
            raw = environ[s.env_var]
            try:
                value = s.type(raw)
            except ValueError as exc:
                raise SystemExit(
                    f"m1lite: {s.env_var}={raw!r} is not a valid {s.type.__name__}"
                ) from exc
        if value is None:
            value = s.default
        values[s.attr] = value
    values["data"] = Path(values["data"])
    return Config(**values)


def configuration_markdown() -> str:
    """docs/configuration.md, generated from the table."""
    lines = [
        "# Configuration",
        "",
        "Every setting is a flag of `m1lite serve` and an `M1LITE_*` environment variable;",
        "the flag wins over the variable, the variable over the default.",
        "This page is generated from `m1lite/config.py` (`m1lite config-docs`).",
        "",
        "| flag | variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default != "" else "(none)"
        lines.append(f"| `{s.flag}` | `{s.env_var}` | {default} | {s.help} |")
    lines += [
        "",
        "Also read at first start: `M1LITE_ADMIN_PASSWORD`, the password of the `admin`",
        "user created when the data directory has no users (a random one is printed on",
        "stderr otherwise).",
        "",
    ]
    return "\n".join(lines)

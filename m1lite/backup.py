"""`m1lite backup` and `m1lite restore`: the command line over m1lite.storage.backup.

Exit status: 0 done; 1 failed while working (an I/O or LMDB error; a partial backup
is removed, the restore target is left as it was); 2 refused (bad destination, not
an m1lite data directory, an incomplete or damaged backup); 3 a server holds the
restore target.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import lmdb
import msgspec

from m1lite.config import resolve
from m1lite.storage.backup import BackupError, Manifest, Restored, backup, restore
from m1lite.storage.env import DataDirLocked

COMMANDS = ("backup", "restore")


def add_commands(commands: Any) -> None:
    """Register both subcommands on the `m1lite` parser's subparsers."""
    take = commands.add_parser(
        "backup",
        help="copy the data directory consistently, also while the server runs",
        description="Write one point-in-time copy of the data directory's environment "
        "(events, index checkpoint, users, tokens, stores, schema, system properties, "
        "session documents) and a manifest into DEST. Safe while a server serves the "
        "directory: events it acknowledged as durable before the backup began are in "
        "it. See docs/operations.md.",
    )
    take.add_argument("dest", type=Path, help="Backup directory to create (new or empty).")
    take.add_argument(
        "--data", default=None, help="Data directory (default: M1LITE_DATA or ./m1lite-data)."
    )
    take.add_argument("--json", action="store_true", help="Print the manifest as JSON.")
    put = commands.add_parser(
        "restore",
        help="put a backup in place as a data directory (server stopped)",
        description="Verify a backup (checksum, then open it and recount it against its "
        "manifest) and put it in place as DATA's environment. Refuses a non-empty DATA "
        "unless --force (which replaces DATA/lake and keeps the rest), and a DATA a server "
        "holds (exit code 3).",
    )
    put.add_argument("src", type=Path, help="Backup directory made by `m1lite backup`.")
    put.add_argument(
        "--data", default=None, help="Data directory (default: M1LITE_DATA or ./m1lite-data)."
    )
    put.add_argument(
        "--force", action="store_true", help="Replace the environment of a non-empty DATA."
    )
    put.add_argument("--json", action="store_true", help="Print the result as JSON.")


def run(args: argparse.Namespace) -> int:
    data = resolve(args).data
    try:
        if args.command == "backup":
            manifest = backup(data, args.dest)
            _say(
                args,
                _backup_line(manifest, args.dest),
                {"path": str(args.dest), **_plain(manifest)},
            )
        else:
            restored = restore(args.src, data, force=args.force)
            _say(args, _restore_line(restored), _plain(restored))
    except DataDirLocked as exc:
        print(f"m1lite: {exc}", file=sys.stderr)
        return 3
    except BackupError as exc:
        print(f"m1lite {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, lmdb.Error) as exc:
        print(f"m1lite {args.command} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # A partial backup or staging copy is already removed (see storage.backup).
        print(f"m1lite {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _plain(value: Manifest | Restored) -> dict[str, Any]:
    plain: dict[str, Any] = msgspec.to_builtins(value)
    plain["bytes"] = value.bytes
    return plain


def _say(args: argparse.Namespace, line: str, as_json: dict[str, Any]) -> None:
    if args.json:
        print(msgspec.json.encode(as_json).decode(), flush=True)
    else:
        print(line, flush=True)


def _backup_line(manifest: Manifest, dest: Path) -> str:
    contents = manifest.contents
    keys = (
        "" if contents.last_key is None else f" (keys {contents.first_key:,}-{contents.last_key:,})"
    )
    return (
        f"m1lite: backed up {contents.events:,} events{keys} to {dest}: "
        f"{human_bytes(manifest.bytes)} in {manifest.seconds:.1f} s"
    )


def _restore_line(restored: Restored) -> str:
    replaced = ", replacing its environment" if restored.replaced else ""
    return (
        f"m1lite: restored {restored.events:,} events into {restored.data}{replaced}: "
        f"{human_bytes(restored.bytes)} in {restored.seconds:.1f} s; "
        f"the next event gets _m1key {restored.next_key:,}"
    )


def human_bytes(count: int) -> str:
    """1,536 -> '1.5 KiB'; binary units, one decimal."""
    if count < 1024:
        return f"{count:,} bytes"
    value, unit = count / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"

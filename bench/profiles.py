"""py-spy profile summaries: where a server's time goes, by function and by thread."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO

# -- py-spy profiles -------------------------------------------------------------------------

# Frames on (nearly) every stack of a thread: they say nothing about where time goes.
_DRIVERS = frozenset(
    {
        "<module> (m1lite/__main__.py)",
        "_run_module_as_main (<frozen runpy>)",
        "_run_code (<frozen runpy>)",
        "main (m1lite/cli.py)",
        "_serve (m1lite/cli.py)",
        "run (asyncio/runners.py)",
        "Runner.run (asyncio/runners.py)",
        "BaseEventLoop.run_until_complete (asyncio/base_events.py)",
        "BaseEventLoop.run_forever (asyncio/base_events.py)",
        "BaseEventLoop._run_once (asyncio/base_events.py)",
        "Handle._run (asyncio/events.py)",
        "Thread._bootstrap (threading.py)",
        "Thread._bootstrap_inner (threading.py)",
        "Thread.run (threading.py)",
    }
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<where>[^()]*)\)$")


_LIBRARY_PATH = re.compile(r"^.*/site-packages/|^.*?/lib/python3\.\d+/")


def _short_where(where: str) -> str:
    """Paths relative to site-packages, the stdlib or the repository."""
    short = _LIBRARY_PATH.sub("", where)
    if short != where:
        return short
    with contextlib.suppress(ValueError):
        return str(Path(where).relative_to(REPO))
    return where


def summarise_profile(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """Self and cumulative sample shares per function from py-spy's raw (collapsed) output.

    Self time is per function, shown at its hottest line (py-spy samples lines).

    A line is `frame;frame;...;leaf COUNT`, root first; with `--threads` the root is the
    thread. Self time goes to the leaf; cumulative time to every distinct function on the
    stack (once per stack, so recursion does not count twice), leaving out the frames that
    merely drive the event loop or a thread. Shares are of all samples of active threads.
    """
    self_time: Counter[str] = Counter()
    self_lines: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        thread = frames[0] if frames and frames[0].startswith("thread ") else ""
        if thread:
            frames = frames[1:]
        names = [_frame_name(f) for f in frames]
        if not names:
            continue
        total += count
        threads[thread or "?"] += count
        self_time[names[-1]] += count
        self_lines[_frame_name(frames[-1], with_line=True)] += count
        for name in set(names) - _DRIVERS:
            cumulative[name] += count

    def hottest_line(name: str) -> str:
        lines = [(n, where) for where, n in self_lines.items() if where.startswith(name[:-1] + ":")]
        return max(lines)[1] if lines else name

    def shares(counter: Counter[str], lines: bool = False) -> list[dict[str, Any]]:
        return [
            {
                "function": hottest_line(name) if lines else name,
                "samples": n,
                "percent": round(100 * n / max(1, total), 1),
            }
            for name, n in counter.most_common(top)
        ]

    own = Counter({name: n for name, n in cumulative.items() if "(m1lite/" in name})
    return {
        "samples": total,
        "threads": shares(threads),
        "self": shares(self_time, lines=True),
        "cumulative": shares(cumulative),
        # the middleware chain tops the list above; m1lite's own functions say more
        "cumulative_m1lite": shares(own),
    }


def _frame_name(frame: str, *, with_line: bool = False) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    where = _short_where(match["where"])
    if not with_line:
        where = where.rsplit(":", 1)[0]
    return f"{match['func']} ({where})"


def thread_id(frame: str) -> int | None:
    """The OS thread id in py-spy's `thread (TID): NAME` frame (hex ids are not OS ids)."""
    match = re.match(r"thread \((\d+)\)", frame)
    return int(match.group(1)) if match else None

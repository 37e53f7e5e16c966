"""What the simulator counts, the live progress line and the final summary.

Latencies go into log-scale histograms (2 % wide buckets from 10 µs to about 10 minutes), so
a long run keeps constant memory and percentiles are within 2 % of the exact value.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_LOW_MS = 0.01
_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = 1000  # 0.01 ms * 1.02**1000 = about 4 * 10**8 ms


class Histogram:
    """Counts of latencies (ms) in log-scale buckets; weighted adds."""

    __slots__ = ("count", "counts", "max_ms")

    def __init__(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.count = 0
        self.max_ms = 0.0

    def add(self, ms: float, weight: int = 1) -> None:
        if weight <= 0:
            return
        bucket = (
            0 if ms <= _LOW_MS else min(_BUCKETS, int(math.log(ms / _LOW_MS) / _LOG_GROWTH) + 1)
        )
        self.counts[bucket] += weight
        self.count += weight
        self.max_ms = max(self.max_ms, ms)

    def merge(self, other: Histogram) -> None:
        for bucket, n in enumerate(other.counts):
            if n:
                self.counts[bucket] += n
        self.count += other.count
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, p: float) -> float | None:
        """The nearest-rank percentile (the top of its bucket, capped at the maximum)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for bucket, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(self.max_ms, _LOW_MS * _GROWTH**bucket)
        return self.max_ms  # pragma: no cover - the counts add up to count

    def summary(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 2)

        return {
            "count": self.count,
            "p50": rounded(self.percentile(50)),
            "p90": rounded(self.percentile(90)),
            "p99": rounded(self.percentile(99)),
            "p99.9": rounded(self.percentile(99.9)),
            "max": rounded(self.max_ms) if self.count else None,
        }


@dataclass
class Window:
    """The counts of one stretch of time: a progress interval, or the whole measured run."""

    events_acked: Counter[str] = field(default_factory=Counter)
    beats_acked: int = 0  # session store upserts acknowledged
    requests: Counter[str] = field(default_factory=Counter)  # by endpoint
    heartbeat_ms: Histogram = field(default_factory=Histogram)  # per heartbeat
    request_ms: dict[str, Histogram] = field(default_factory=dict)  # per request, by endpoint


class Stats:
    """Everything the summary reports. `measured` leaves out the --warmup seconds."""

    def __init__(self, warmup_s: float) -> None:
        self.started = time.monotonic()
        self.ended: float | None = None  # when the visitors stopped (before the last answers)
        self.cpu_started = _cpu_s()
        self.warmup_s = warmup_s
        self.visitors_started = 0
        self.visitors_left = 0
        self.active = 0
        self.sessions = 0  # visitors with at least one heartbeat stored in the session store
        self.events_sent: Counter[str] = Counter()
        self.events_dropped: Counter[str] = Counter()
        self.beats_sent = 0
        self.beats_superseded = 0  # replaced by a newer heartbeat before they were sent
        self.beats_dropped = 0
        self.logins = 0
        # How late the schedule ran (by design up to its 10 ms step): when the simulator
        # cannot keep up, this grows, and the latencies it measures are not the server's.
        self.lag_ms = Histogram()
        self.errors: Counter[str] = Counter()  # "503", "connection", ...
        self.first_errors: dict[str, str] = {}  # one message per kind, for the summary
        self.total = Window()
        self.measured = Window()
        self.interval = Window()
        self.measured_from = self.started + warmup_s

    def restart_clock(self) -> None:
        """The run starts now (after the logins): duration and warm-up count from here."""
        self.started = time.monotonic()
        self.measured_from = self.started + self.warmup_s
        self.cpu_started = _cpu_s()

    def _windows(self) -> tuple[Window, ...]:
        if time.monotonic() >= self.measured_from:
            return (self.total, self.interval, self.measured)
        return (self.total, self.interval)

    def request_done(
        self,
        endpoint: str,
        ms: float,
        events: Counter[str] | None = None,
        beats: int = 0,
        heartbeats_in_batch: int = 0,
    ) -> None:
        """A 2xx answer: `events` acknowledged by type, `beats` upserts acknowledged;
        `heartbeats_in_batch` heartbeats (upserts or events) saw this latency.

        Requests started once the visitors stopped (what was still queued, sent all at
        once like every tab's pagehide at the same moment) count, but not in latencies:
        that burst is the end of the simulation, not the server's behaviour under load."""
        timed = self.ended is None or time.monotonic() - ms / 1000 < self.ended
        for window in self._windows():
            window.requests[endpoint] += 1
            if events:
                window.events_acked.update(events)
            window.beats_acked += beats
            if not timed:
                continue
            window.heartbeat_ms.add(ms, heartbeats_in_batch)
            histogram = window.request_ms.get(endpoint)
            if histogram is None:
                histogram = window.request_ms[endpoint] = Histogram()
            histogram.add(ms)

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.first_errors.setdefault(kind, message[:300])

    def take_interval(self) -> Window:
        window, self.interval = self.interval, Window()
        return window

    def elapsed_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def progress_line(self, window: Window, seconds: float, session_mode: bool) -> str:
        events = sum(window.events_acked.values()) / seconds
        beats = window.beats_acked / seconds
        p99 = window.heartbeat_ms.percentile(99)
        parts = [
            f"{self.elapsed_s():5.0f}s",
            f"visitors {self.active:,} (arrived {self.visitors_started:,}, "
            f"left {self.visitors_left:,})",
            f"events {events:,.0f}/s",
        ]
        if session_mode:
            parts.append(f"session updates {beats:,.0f}/s")
        parts.append(f"errors {sum(self.errors.values()):,}")
        parts.append("heartbeat p99 " + ("-" if p99 is None else f"{p99:,.1f} ms"))
        return "  ".join(parts)

    def summary(self, config: dict[str, Any], stopped_by: str) -> dict[str, Any]:
        elapsed = self.elapsed_s()
        measured_s = max(0.0, elapsed - self.warmup_s)
        measured = self.measured
        cpu = _cpu_s() - self.cpu_started
        return {
            "config": config,
            "stopped_by": stopped_by,
            "elapsed_s": round(elapsed, 2),
            "visitors": {
                "started": self.visitors_started,
                "left": self.visitors_left,
                "on_site_at_end": self.active,
                "with_session": self.sessions,
            },
            "events": {
                "sent": dict(self.events_sent),
                "acknowledged": dict(self.total.events_acked),
                "dropped": dict(self.events_dropped),
            },
            "session_updates": {
                "sent": self.beats_sent,
                "acknowledged": self.total.beats_acked,
                "superseded": self.beats_superseded,
                "dropped": self.beats_dropped,
            },
            "logins": self.logins,
            "requests": dict(self.total.requests),
            "errors": dict(self.errors),
            "error_messages": dict(self.first_errors),
            "latency_ms": {
                "heartbeat": self.total.heartbeat_ms.summary(),
                **{k: h.summary() for k, h in sorted(self.total.request_ms.items())},
            },
            "measured": {
                "warmup_s": self.warmup_s,
                "seconds": round(measured_s, 2),
                "events_per_s": _rate(sum(measured.events_acked.values()), measured_s),
                "session_updates_per_s": _rate(measured.beats_acked, measured_s),
                "requests_per_s": _rate(sum(measured.requests.values()), measured_s),
                "heartbeat_ms": measured.heartbeat_ms.summary(),
                "request_ms": {k: h.summary() for k, h in sorted(measured.request_ms.items())},
            },
            "simulator_cpu": {
                "seconds": round(cpu, 2),
                "cores": round(cpu / elapsed, 3) if elapsed > 0 else None,
                "schedule_lag_ms": self.lag_ms.summary(),
            },
        }


def _rate(count: float, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def summary_text(summary: dict[str, Any]) -> str:
    """The summary for people: a few aligned lines."""
    visitors = summary["visitors"]
    events = summary["events"]
    updates = summary["session_updates"]
    heartbeat = summary["latency_ms"]["heartbeat"]

    def by_type(counts: dict[str, int]) -> str:
        if not counts:
            return "0"
        total = sum(counts.values())
        return f"{total:,} (" + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) + ")"

    lines = [
        f"simulated {summary['elapsed_s']:.0f} s, stopped by {summary['stopped_by']}",
        f"visitors     arrived {visitors['started']:,}, left {visitors['left']:,}, "
        f"on the site at the end {visitors['on_site_at_end']:,}",
        f"events       sent {by_type(events['sent'])}",
        f"             acknowledged {by_type(events['acknowledged'])}",
    ]
    if sum(events["dropped"].values()):
        lines.append(f"             dropped {by_type(events['dropped'])}")
    if summary["config"]["session"]:
        lines.append(
            f"sessions     {visitors['with_session']:,} visitors with a session; heartbeats "
            f"sent {updates['sent']:,}, acknowledged {updates['acknowledged']:,}"
            + (f", dropped {updates['dropped']:,}" if updates["dropped"] else "")
        )
    if heartbeat["count"]:
        lines.append(
            f"heartbeats   latency p50 {heartbeat['p50']} ms, p99 {heartbeat['p99']} ms, "
            f"max {heartbeat['max']} ms ({heartbeat['count']:,} heartbeats)"
        )
    errors = summary["errors"]
    lines.append(
        "errors       "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(errors.items())) if errors else "none")
    )
    for kind, message in sorted(summary["error_messages"].items()):
        lines.append(f"             {kind}: {message}")
    cpu = summary["simulator_cpu"]
    lag = cpu["schedule_lag_ms"]
    lines.append(
        f"simulator    {cpu['seconds']} s CPU ({cpu['cores']} cores), schedule lag p99 "
        f"{lag['p99']} ms, max {lag['max']} ms"
    )
    return "\n".join(lines) + "\n"

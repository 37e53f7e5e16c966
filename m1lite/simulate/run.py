"""The simulator's driver: one asyncio loop, one schedule, one HTTP connection pool.

Visitors are not tasks: every visitor action (arrive, next view or leave, heartbeat) and
every outbox flush is an entry in one heap ordered by due time, which a single loop pops
every few milliseconds. 20,000 visitors with 5 s heartbeats are 4,000 entries a second,
which costs far less than 20,000 sleeping tasks waking up.

Sending (see sender.py): by default each visitor sends its own requests, as a browser
tab does: a heartbeat goes at once in a request of its own, and events leave --tick-ms
after the first was queued (M1Events.js waits a second), so a landing's sessionStart and
view share one /write. With --batch each address's outbox is flushed once per --tick-ms
instead (the addresses' flushes spread evenly over the tick, so the server sees a steady
stream of requests), each request carrying every event or heartbeat that address's
visitors queued since the last one (each heartbeat its own upsert, or its own event):
many fewer requests for the same visitors, as behind a proxy that batches.

The end (--duration, Ctrl-C, SIGTERM): no more actions; what is queued is sent (the
browser's pagehide), answers are awaited for up to END_WAIT_S, the summary is printed.
A second Ctrl-C stops waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import signal
import sys
import time
from dataclasses import asdict
from typing import Any, TextIO

from m1lite.simulate.config import SimConfig
from m1lite.simulate.http import HttpPool
from m1lite.simulate.sender import Address, LoginRefused, Outbox, Sender, Unreachable
from m1lite.simulate.site import address_pool
from m1lite.simulate.stats import Stats, summary_text
from m1lite.simulate.visitor import Ids, Visitor, plan_visit

ARRIVE, NEXT, BEAT, FLUSH = 0, 1, 2, 3
RESOLUTION_S = 0.01  # the schedule is served in 10 ms steps
END_WAIT_S = 10.0
LOGIN_CONCURRENCY = 4
EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 2


class Simulation:
    def __init__(self, config: SimConfig, client: HttpPool, err: TextIO) -> None:
        self.config = config
        self.client = client
        self.err = err
        self.stats = Stats(config.warmup_s)
        self.ids = Ids()
        self.sender = Sender(
            client,
            self.stats,
            user=config.user,
            password=config.password,
            session=config.session,
            is_async=config.is_async,
            on_fatal=self._fatal,
            on_idle=self._on_idle if not config.batch else None,
        )
        rng = random.Random(f"m1lite-simulate-addresses:{config.seed}")
        self.addresses = [Address(ip) for ip in address_pool(config.addresses, rng)]
        self.outboxes = [Outbox(address) for address in self.addresses]
        self.visitor_outboxes: dict[Visitor, Outbox] = {}
        self.leaving: set[Outbox] = set()  # of visitors who left, with sends unfinished
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.next_number = 0
        self.stop_reason = ""
        self.fatal_message = ""
        self.hurry = False  # a second signal: stop waiting for answers
        self.heartbeat_s = config.heartbeat_ms / 1000
        self.tick_s = config.tick_ms / 1000

    # -- the schedule -------------------------------------------------------------------

    def _at(self, due: float, action: int, target: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, action, target))

    def stop(self, reason: str) -> None:
        if self.stop_reason:
            self.hurry = True
        else:
            self.stop_reason = reason

    def _fatal(self, message: str) -> None:
        if not self.fatal_message:
            self.fatal_message = message
        self.stop("error")

    def _outbox(self, visitor: Visitor) -> Outbox:
        if self.config.batch:
            return self.outboxes[visitor.visit.address]
        return self.visitor_outboxes[visitor]

    def _queue_events(self, visitor: Visitor, docs: list[dict[str, Any]], now: float) -> None:
        outbox = self._outbox(visitor)
        outbox.events.extend(docs)
        for doc in docs:
            self.stats.events_sent[doc["type"]] += 1
        if not self.config.batch and not outbox.flush_scheduled:
            outbox.flush_scheduled = True
            self._at(now + self.tick_s, FLUSH, outbox)

    def _heartbeat(self, visitor: Visitor, now: float, now_ms: int) -> None:
        doc = visitor.doc("heartbeat", now_ms, self.ids)
        if self.config.session is None:
            self._queue_events(visitor, [doc], now)
            return
        outbox = self._outbox(visitor)
        if visitor in outbox.beats:
            self.stats.beats_superseded += 1
        outbox.beats[visitor] = doc
        self.stats.beats_sent += 1
        if not self.config.batch:
            self.sender.flush(outbox, now, events=False)
            self._retry_later(outbox, now)

    def _on_idle(self, outbox: Outbox) -> None:
        """Per visitor, a send finished: a waiting heartbeat goes now, waiting events at
        their flush (already scheduled, or right away if none is)."""
        if not outbox.pending:
            if not outbox.busy:
                self.leaving.discard(outbox)
            return
        now = time.monotonic()
        self.sender.flush(outbox, now, events=not outbox.flush_scheduled)
        self._retry_later(outbox, now)

    def _retry_later(self, outbox: Outbox, now: float) -> None:
        """Per visitor: an outbox held by a back-off is flushed when the back-off ends."""
        if outbox.pending and now < outbox.hold_until and not outbox.flush_scheduled:
            outbox.flush_scheduled = True
            self._at(outbox.hold_until, FLUSH, outbox)

    def _arrive(self, now: float, now_ms: int) -> None:
        config = self.config
        visit = plan_visit(config.seed, self.next_number, config.think_s, len(self.addresses))
        self.next_number += 1
        visitor = Visitor(visit, self.ids, now_ms)
        if not config.batch:
            self.visitor_outboxes[visitor] = Outbox(self.addresses[visit.address])
        self.stats.visitors_started += 1
        self.stats.active += 1
        self._queue_events(visitor, visitor.arrive(now_ms, self.ids), now)
        self._at(now + visitor.think_s(), NEXT, visitor)
        if self.heartbeat_s:
            self._at(now + self.heartbeat_s, BEAT, visitor)

    def _next(self, visitor: Visitor, now: float, now_ms: int) -> None:
        if visitor.pages_left:
            self._queue_events(visitor, [visitor.next_view(now_ms, self.ids)], now)
            self._at(now + visitor.think_s(), NEXT, visitor)
            return
        # Leaving: nothing more is sent; a session store's flusher times the session out.
        visitor.gone = True
        self.stats.active -= 1
        self.stats.visitors_left += 1
        if not self.config.batch:
            outbox = self.visitor_outboxes.pop(visitor)
            self.sender.flush(outbox, now)  # pagehide: what is queued leaves now
            if outbox.pending or outbox.busy:
                self.leaving.add(outbox)
                self._retry_later(outbox, now)
        self._arrive(now, now_ms)  # someone new takes the place

    def _run_due(self, now: float) -> None:
        now_ms = int(time.time() * 1000)
        heap = self.heap
        if heap and heap[0][0] <= now:
            self.stats.lag_ms.add((now - heap[0][0]) * 1000)
        while heap and heap[0][0] <= now and not self.stop_reason:
            due, _, action, target = heapq.heappop(heap)
            if action == BEAT:
                if not target.gone:
                    self._heartbeat(target, now, now_ms)
                    self._at(due + self.heartbeat_s, BEAT, target)
            elif action == NEXT:
                self._next(target, now, now_ms)
            elif action == FLUSH:
                if not self.config.batch:
                    target.flush_scheduled = False
                    self.sender.flush(target, now)
                    self._retry_later(target, now)
                else:
                    self.sender.flush(target, now)
                    self._at(due + self.tick_s, FLUSH, target)
            else:
                self._arrive(now, now_ms)

    # -- the run ------------------------------------------------------------------------

    async def login_all(self) -> None:
        """Log every address in; the first alone, so a wrong password or an unreachable
        server is reported once."""
        first, *rest = self.addresses
        await self.sender.login(first)
        gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def one(address: Address) -> None:
            async with gate:
                await self.sender.login(address)

        results = await asyncio.gather(*(one(a) for a in rest), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def run(self) -> int:
        config = self.config
        started = time.monotonic()
        try:
            if config.token:
                trusted = True  # an any-address token cannot tell
                for address in self.addresses:
                    address.token = config.token
            else:
                await self.login_all()
                trusted = len(self.addresses) < 2 or await self.sender.proxies_trusted(
                    self.addresses[0], self.addresses[1]
                )
        except Unreachable as exc:
            self._say(f"cannot reach {config.server}: {exc}; is the server running?")
            return EXIT_UNREACHABLE
        except LoginRefused as exc:
            self._say(str(exc))
            return EXIT_REFUSED
        logins = "with the token given" if config.token else f"logged in as {config.user}"
        self._say(
            f"{len(self.addresses)} addresses {logins} in "
            f"{time.monotonic() - started:.1f} s; {config.users:,} visitors, "
            + (f"heartbeats to session store {config.session}" if config.session else "")
            + ("heartbeats as events" if not config.session else "")
            + f", seed {config.seed}"
        )
        if not trusted:
            self._say(
                "the server does not take X-Forwarded-For from this machine: every visitor "
                "will seem to come from this machine's address (start it with "
                "--trusted-proxies set to this machine's address for the visitors' addresses "
                "and geo data)"
            )
        self._install_signals()
        self.stats.restart_clock()
        self._schedule_start()
        progress = asyncio.get_running_loop().create_task(self._progress())
        try:
            await self._serve()
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        self.stats.ended = time.monotonic()
        await self._finish()
        self._report()
        return EXIT_REFUSED if self.fatal_message else EXIT_OK

    def _schedule_start(self) -> None:
        config = self.config
        t0 = time.monotonic()
        for i in range(config.users):
            offset = i / config.rate if config.rate else i * config.arrival_window_s / config.users
            self._at(t0 + offset, ARRIVE)
        if config.batch:
            for i, outbox in enumerate(self.outboxes):
                self._at(t0 + self.tick_s * (i + 1) / len(self.outboxes), FLUSH, outbox)

    async def _serve(self) -> None:
        end = (
            None if self.config.duration_s is None else self.stats.started + self.config.duration_s
        )
        while not self.stop_reason:
            now = time.monotonic()
            if end is not None and now >= end:
                self.stop("duration")
                break
            self._run_due(now)
            wait = self.heap[0][0] - time.monotonic() if self.heap else RESOLUTION_S
            await asyncio.sleep(min(0.1, max(RESOLUTION_S, wait)))

    async def _finish(self) -> None:
        """Send what is queued, wait for the answers (END_WAIT_S at most)."""
        deadline = time.monotonic() + END_WAIT_S
        boxes = [*self.outboxes, *self.visitor_outboxes.values(), *self.leaving]
        while not self.hurry and time.monotonic() < deadline and not self.fatal_message:
            waiting = [box for box in boxes if box.pending]
            if not waiting and not self.sender.tasks:
                break
            now = time.monotonic()
            for box in waiting:
                self.sender.flush(box, now)
            await asyncio.sleep(0.05)
        await self.sender.drain(0.0 if self.hurry else max(0.0, deadline - time.monotonic()))
        for box in boxes:  # never sent
            self.stats.events_dropped.update(doc["type"] for doc in box.events)
            self.stats.beats_dropped += len(box.beats)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop, sig.name)

    async def _progress(self) -> None:
        if not self.config.progress:
            return
        tty = self.err.isatty()
        every = 1.0 if tty else 5.0  # a live line on a terminal, a log line every 5 s else
        last = time.monotonic()
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            window = self.stats.take_interval()
            line = self.stats.progress_line(window, now - last, self.config.session is not None)
            last = now
            if tty:
                self.err.write("\r\x1b[K" + line)
            else:
                self.err.write(line + "\n")
            self.err.flush()

    def _report(self) -> None:
        if self.config.progress and self.err.isatty():
            self.err.write("\n")
        if self.fatal_message:
            self._say(self.fatal_message)
        shown = {k: v for k, v in asdict(self.config).items() if k != "password"}
        shown["token"] = "(given)" if self.config.token else None  # secrets stay out
        summary = self.stats.summary(shown, self.stop_reason or "error")
        summary["connections"] = {
            "opened": self.client.opened,
            # Requests that waited for a free connection: when many did, raise
            # --connections, or the latencies measure the simulator's pool.
            "requests_waited": self.client.waited,
        }
        if self.config.json:
            import json

            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        else:
            sys.stdout.write(summary_text(summary))
        sys.stdout.flush()

    def _say(self, message: str) -> None:
        self.err.write(f"m1lite simulate: {message}\n")
        self.err.flush()


async def _main(config: SimConfig) -> int:
    client = HttpPool(config.server, config.connections)
    try:
        return await Simulation(config, client, sys.stderr).run()
    finally:
        await client.close()


def run(config: SimConfig) -> int:
    """Run the simulation to its end; the exit status."""
    try:
        return asyncio.run(_main(config))
    except KeyboardInterrupt:  # Ctrl-C during the logins, before the handlers are set
        return EXIT_OK


def command(args: Any) -> int:
    """`m1lite simulate`: options from the parsed command line, then the run."""
    from m1lite.simulate.config import ConfigError, resolve

    try:
        config = resolve(args, random_seed=random.SystemRandom().randrange(1_000_000))
    except ConfigError as exc:
        print(f"m1lite simulate: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE  # 2, as argparse exits for a bad command line
    return run(config)

"""One simulated visit: its plan (drawn from a seeded generator) and the documents the
visitor sends, in the shape m1lite/static/js/M1Events.js gives them.

A visit's plan depends only on (seed, visitor number), so `--seed` reproduces every
visitor's landing page, referrer, path through the site, think times, address, screen
and language, whatever order the visitors' actions interleave in. Ids (session, user,
event) are fresh in every run, so two runs against one server never share a session.

Behaviour:
- 35 % of visits bounce (one page); after the second page a visitor reads another with
  probability 0.75, up to 25 pages: about 3.3 pages per visit.
- Each page is read for a lognormal time (sigma 0.8) with the given mean, between a
  twentieth of it and six times it; the visitor leaves after reading the last page.
- 30 % of visits are returning users: they reuse the user id of an earlier visitor.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any

from m1lite.simulate.site import HOST, LANDING, LANGUAGES, PAGES, REFERRERS, SCREENS, weighted

BOUNCE = 0.35
CONTINUE = 0.75
MAX_PAGES = 25
THINK_SIGMA = 0.8
RETURNING = 0.3

_LANDING = weighted(LANDING)
_REFERRERS = weighted(tuple(((ref, utm), weight) for ref, weight, utm in REFERRERS))
_SCREENS = weighted(SCREENS)
_LANGUAGES = weighted(LANGUAGES)
_LINKS = {path: weighted(page.links) for path, page in PAGES.items()}


@dataclass(frozen=True, slots=True)
class Visit:
    number: int  # the visitor's number in the run: 0, 1, 2, ...
    address: int  # index into the run's address pool
    user: int  # the number of the visitor whose user id this one has (itself when new)
    referrer: str  # the landing page's document.referrer
    query: str  # the landing page's query string ("" or "?utm_source=...")
    pages: tuple[str, ...]  # the paths viewed, in order
    think_s: tuple[float, ...]  # seconds spent on each page
    screen: tuple[int, int]
    language: str


def plan_visit(seed: int, number: int, think_mean_s: float, addresses: int) -> Visit:
    """The plan of visitor `number` of a run seeded with `seed`."""
    rng = random.Random(f"m1lite-simulate:{seed}:{number}")
    (referrer, utm_source) = rng.choices(*_REFERRERS)[0]
    query = ""
    if utm_source and rng.random() < 0.5:
        query = f"?utm_source={utm_source}&utm_medium=social"
    pages = [rng.choices(*_LANDING)[0]]
    if rng.random() >= BOUNCE:
        pages.append(rng.choices(*_LINKS[pages[-1]])[0])
        while len(pages) < MAX_PAGES and rng.random() < CONTINUE:
            pages.append(rng.choices(*_LINKS[pages[-1]])[0])
    # A lognormal with this mu has the mean asked for.
    mu = math.log(think_mean_s) - THINK_SIGMA**2 / 2
    low, high = think_mean_s / 20, think_mean_s * 6
    think = tuple(min(high, max(low, rng.lognormvariate(mu, THINK_SIGMA))) for _ in pages)
    returning = number > 0 and rng.random() < RETURNING
    return Visit(
        number=number,
        address=rng.randrange(addresses),
        user=rng.randrange(number) if returning else number,
        referrer=referrer,
        query=query,
        pages=tuple(pages),
        think_s=think,
        screen=rng.choices(*_SCREENS)[0],
        language=rng.choices(*_LANGUAGES)[0],
    )


class Ids:
    """Fresh random UUIDs (version 4), from a generator seeded by the OS, not by --seed."""

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(16))
        self.salt = os.urandom(16)

    def new(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def user(self, number: int) -> str:
        """The user id of user `number` in this run: the same number, the same id."""
        digest = hashlib.blake2b(number.to_bytes(8, "big"), key=self.salt, digest_size=16)
        return str(uuid.UUID(bytes=digest.digest(), version=4))


class Visitor:
    """A visitor on the site: which page it is on, and the documents it sends.

    Documents share the visitor's unchanging parts (session, user, screen, url, page):
    they are only ever serialised, never changed after they are made.
    """

    __slots__ = ("gone", "has_session", "page", "screen", "session", "step", "url", "user", "visit")

    def __init__(self, visit: Visit, ids: Ids, now_ms: int) -> None:
        self.visit = visit
        self.session = {"id": ids.new(), "start": now_ms}
        self.user = {"id": ids.user(visit.user)}
        self.screen = {"width": visit.screen[0], "height": visit.screen[1]}
        self.step = -1  # index of the page being read
        self.url: dict[str, str] = {}
        self.page: dict[str, str] = {}
        self.gone = False
        self.has_session = False  # a heartbeat of it was stored in the session store

    @property
    def pages_left(self) -> int:
        return len(self.visit.pages) - 1 - self.step

    def think_s(self) -> float:
        """Seconds the visitor reads the current page before the next view (or leaving)."""
        return self.visit.think_s[self.step]

    def arrive(self, now_ms: int, ids: Ids) -> list[dict[str, Any]]:
        """The landing: sessionStart, then the view, as the browser script sends them."""
        self._go(0)
        return [self.doc("sessionStart", now_ms, ids), self.doc("view", now_ms, ids)]

    def next_view(self, now_ms: int, ids: Ids) -> dict[str, Any]:
        self._go(self.step + 1)
        return self.doc("view", now_ms, ids)

    def _go(self, step: int) -> None:
        visit = self.visit
        referrer = visit.referrer if step == 0 else self.url["href"]
        self.step = step
        path = visit.pages[step]
        query = visit.query if step == 0 else ""
        self.url = {
            "href": f"https://{HOST}{path}{query}",
            "host": HOST,
            "path": path,
            "query": query,
            "hash": "",
        }
        self.page = {"title": PAGES[path].title, "referrer": referrer}

    def doc(self, kind: str, now_ms: int, ids: Ids) -> dict[str, Any]:
        """One event: M1Events.js's doc() for a page at self.url (no event.data)."""
        return {
            "type": kind,
            "event": {"id": ids.new(), "time": now_ms, "type": kind},
            "session": self.session,
            "user": self.user,
            "url": self.url,
            "page": self.page,
            "screen": self.screen,
            "language": self.visit.language,
        }

"""Brute-force protection for /auth: a budget of failed password checks per client
address and per username, in memory only (a restart forgets it).

What is counted: logins that need scrypt, i.e. every password other than the one scrypt
last accepted for that user. Such an attempt is charged before scrypt runs and the
charge is given back when the password turns out right, so only failures stay counted,
and a burst of concurrent guesses cannot all slip past the check before the first one
fails. The repeat logins of the browser script (the cached password) are never charged:
many tabs behind one NAT log in freely.

The policy (see docs/api.md `/auth` and docs/operations.md "Logins at scale"):
- An address over its budget gets 429 for every login, before any password check,
  the cached one included. Answering the cached password there would hand a guesser a
  free oracle at HTTP speed, faster than no limit at all.
- A username over its budget (guesses spread over many addresses) refuses only the
  attempts that would need scrypt; the password the server last accepted still logs in
  from an address within its own budget. So an attacker cannot lock the site's
  publish user out from the whole internet (its tabs use the cached password), and a
  refused attempt still costs the address one failure, so the per-address budget keeps
  bounding how fast anyone guesses.
- A success gives back only its own charge: it does not clear another address's
  failures (an attacker's cannot be washed out by logging in as someone else).

Each budget is a GCRA ("generic cell rate algorithm") bucket: one float per key, the
time at which the key's failures will have drained. `limit` failures within `window_s`
may come at once; after that one more every `window_s / limit`. Keys that drained are
dropped; past `max_entries` keys the least recently charged go first (bounded memory:
about 150 bytes a key). IPv6 addresses are counted per /64, the block one subscriber
usually gets: per-address counting is pointless if every guess can come from a new
address of the same network.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable

from m1lite.errors import TooManyRequests

DEFAULT_MAX_ENTRIES = 100_000
TOO_MANY = "too_many_failed_logins"


def address_key(ip: str) -> str:
    """The key an address is counted under: itself for IPv4, its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an address (a test client, a socket path): counted as it is
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return ip


class FailureBudget:
    """At most `limit` failures per `window_s` per key (0: no limit)."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(0, limit)
        self.window_s = max(window_s, 0.001)
        self.interval_s = self.window_s / self.limit if self.limit else 0.0
        self.max_entries = max(1, max_entries)
        self._clock = clock
        # key → when its failures have drained; dict order = least recently charged first.
        self._drained_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._drained_at)

    def wait_s(self, key: str) -> float:
        """0 if `key` may fail once more now, else the seconds until it may."""
        if not self.limit:
            return 0.0
        now = self._clock()
        with self._lock:
            drained = self._drained_at.get(key, now)
        return self._wait(max(drained, now), now)

    def charge(self, key: str) -> float:
        """Count one failure for `key` and return 0, or, if over budget, count nothing
        and return the seconds to wait."""
        if not self.limit:
            return 0.0
        now = self._clock()
        with self._lock:
            drained = max(self._drained_at.pop(key, now), now)
            wait = self._wait(drained, now)
            if not wait:
                drained += self.interval_s
            self._drained_at[key] = drained  # to the end: the most recently charged
            while len(self._drained_at) > self.max_entries:
                del self._drained_at[next(iter(self._drained_at))]
        return wait

    def refund(self, key: str) -> None:
        """Take back one charge (the password was right)."""
        if not self.limit:
            return
        now = self._clock()
        with self._lock:
            drained = self._drained_at.get(key)
            if drained is None:
                return
            drained -= self.interval_s
            if drained <= now:
                del self._drained_at[key]  # nothing left: as if never seen
            else:
                self._drained_at[key] = drained

    def _wait(self, drained: float, now: float) -> float:
        # One more failure would make the backlog drained + interval - now; allowed up
        # to the window (that is: `limit` failures at once from a clean start).
        over = drained + self.interval_s - now - self.window_s
        return over if over > 1e-9 else 0.0


class LoginLimits:
    """The two budgets /auth consults (see the module's docstring for the policy)."""

    def __init__(
        self,
        per_address: int,
        per_user: int,
        window_s: float,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses = FailureBudget(per_address, window_s, max_entries=max_entries, clock=clock)
        self.users = FailureBudget(per_user, window_s, max_entries=max_entries, clock=clock)
        self.refused = 0  # logins answered 429 (for /health)

    def check_address(self, ip: str) -> None:
        """Before any password check: 429 if the address has used its budget."""
        wait = self.addresses.wait_s(address_key(ip))
        if wait:
            self._refuse(wait, "from this address")

    def begin_check(self, ip: str, username: str) -> None:
        """Before a scrypt check: charge the address and the username (429 if either is
        over). A username over budget still costs the address its failure."""
        wait = self.addresses.charge(address_key(ip))
        if wait:
            self._refuse(wait, "from this address")
        wait = self.users.charge(username)
        if wait:
            self._refuse(wait, "for this username")

    def succeeded(self, ip: str, username: str) -> None:
        """The checked password was right: give back what `begin_check` charged."""
        self.addresses.refund(address_key(ip))
        self.users.refund(username)

    def _refuse(self, wait_s: float, whom: str) -> None:
        self.refused += 1
        seconds = max(1, math.ceil(wait_s))
        raise TooManyRequests(
            f"too many failed logins {whom}: try again in {seconds} s",
            code=TOO_MANY,
            retry_after_s=seconds,
        )

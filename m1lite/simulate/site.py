"""The simulated website and where its visitors come from.

A small product site: a home page, pricing, about, docs and a blog. Each page links to a
few others with weights (how likely a reader follows that link); visitors land on a page
chosen by `LANDING` weights, from a referrer chosen by `REFERRERS` weights.

Addresses: `TEST_DB_ADDRESSES` all resolve in MaxMind's GeoIP2-City test database
(tests/data/GeoIP2-City-Test.mmdb), so geo facets have data with it (GB/ENG, US/CA,
US/WA, SE/E, AU/VIC, CN/22, PH, SG, BT); the rest of a pool is random public-looking
addresses, which a real GeoLite2/GeoIP2 City database resolves.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

HOST = "www.example.com"


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    links: tuple[tuple[str, int], ...]  # (path, weight)


_POSTS = ("/blog/self-hosted-analytics", "/blog/sessions-on-a-budget", "/blog/roaring-bitmaps")

PAGES: dict[str, Page] = {
    "/": Page(
        "Example Analytics",
        (
            ("/pricing", 3),
            ("/docs/", 3),
            ("/docs/getting-started", 2),
            ("/blog/", 2),
            ("/about", 1),
        ),
    ),
    "/pricing": Page(
        "Pricing - Example Analytics",
        (("/signup", 3), ("/docs/getting-started", 2), ("/", 1), ("/about", 1)),
    ),
    "/about": Page("About us - Example Analytics", (("/", 2), ("/pricing", 1), ("/blog/", 1))),
    "/signup": Page("Sign up - Example Analytics", (("/docs/getting-started", 2), ("/", 1))),
    "/docs/": Page(
        "Documentation - Example Analytics",
        (("/docs/getting-started", 3), ("/docs/api", 2), ("/docs/sessions", 1), ("/pricing", 1)),
    ),
    "/docs/getting-started": Page(
        "Getting started - Example Analytics",
        (("/docs/api", 3), ("/docs/sessions", 2), ("/docs/", 1), ("/pricing", 1)),
    ),
    "/docs/api": Page(
        "API reference - Example Analytics",
        (("/docs/sessions", 1), ("/docs/getting-started", 1), ("/docs/", 1)),
    ),
    "/docs/sessions": Page(
        "Session stores - Example Analytics",
        (("/docs/api", 1), ("/docs/", 1), ("/pricing", 1)),
    ),
    "/blog/": Page("Blog - Example Analytics", (*((p, 2) for p in _POSTS), ("/", 1))),
    _POSTS[0]: Page(
        "Why we self-host our analytics - Example Analytics",
        (("/blog/", 2), (_POSTS[1], 1), ("/pricing", 1), ("/", 1)),
    ),
    _POSTS[1]: Page(
        "Heartbeats on a budget - Example Analytics",
        (("/blog/", 2), (_POSTS[2], 1), ("/docs/sessions", 2)),
    ),
    _POSTS[2]: Page(
        "Roaring bitmaps, explained - Example Analytics",
        (("/blog/", 2), (_POSTS[0], 1), ("/", 1)),
    ),
}

LANDING: tuple[tuple[str, int], ...] = (
    ("/", 35),
    (_POSTS[0], 12),
    (_POSTS[1], 8),
    (_POSTS[2], 5),
    ("/pricing", 10),
    ("/docs/getting-started", 12),
    ("/docs/api", 8),
    ("/docs/", 6),
    ("/about", 4),
)

# (referrer, weight, utm_source): "" is a visitor who typed the address or used a bookmark.
REFERRERS: tuple[tuple[str, int, str], ...] = (
    ("", 35, ""),
    ("https://www.google.com/", 30, ""),
    ("https://www.bing.com/", 6, ""),
    ("https://duckduckgo.com/", 5, ""),
    ("https://news.ycombinator.com/", 8, "hackernews"),
    ("https://t.co/", 6, "twitter"),
    ("https://www.linkedin.com/", 5, "linkedin"),
    ("https://www.reddit.com/", 5, "reddit"),
)

SCREENS: tuple[tuple[tuple[int, int], int], ...] = (
    ((1920, 1080), 30),
    ((1440, 900), 12),
    ((2560, 1440), 8),
    ((1366, 768), 10),
    ((390, 844), 20),
    ((412, 915), 14),
    ((768, 1024), 6),
)

LANGUAGES: tuple[tuple[str, int], ...] = (
    ("en-US", 45),
    ("en-GB", 15),
    ("de-DE", 8),
    ("fr-FR", 7),
    ("es-ES", 6),
    ("sv-SE", 4),
    ("ja-JP", 5),
    ("zh-CN", 5),
    ("pt-BR", 5),
)

# One address in each network of the test database that has a country, most with a
# subdivision and a city; London and Linköping twice (their networks are the largest).
TEST_DB_ADDRESSES: tuple[str, ...] = (
    "81.2.69.142",  # GB, ENG, London
    "81.2.69.170",  # GB, ENG, London
    "2.125.160.217",  # GB, ENG, Boxford
    "2.2.3.5",  # GB, ENG, Boxford
    "216.160.83.58",  # US, WA, Milton
    "214.78.120.5",  # US, CA, San Diego
    "149.101.100.5",  # US
    "89.160.20.115",  # SE, E, Linköping
    "89.160.20.130",  # SE, E, Linköping
    "214.0.1.5",  # AU, VIC, Melbourne
    "175.16.199.5",  # CN, 22, Changchun
    "202.196.224.5",  # PH
    "214.0.0.5",  # SG, Singapore
    "67.43.156.5",  # BT
)


def address_pool(count: int, rng: random.Random) -> list[str]:
    """`count` distinct client addresses: the test database's first, then random public
    IPv4 addresses (global unicast, none from the test database's networks)."""
    pool = list(TEST_DB_ADDRESSES[:count])
    taken = set(pool)
    while len(pool) < count:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        text = str(address)
        if address.is_global and not address.is_multicast and text not in taken:
            pool.append(text)
            taken.add(text)
    return pool


def weighted(pairs: tuple[tuple[T, int], ...]) -> tuple[list[T], list[int]]:
    """Split (value, weight) pairs for random.choices; cum_weights, so choices is O(log n)."""
    values = [value for value, _ in pairs]
    cumulative, total = [], 0
    for _, weight in pairs:
        total += weight
        cumulative.append(total)
    return values, cumulative

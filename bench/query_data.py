"""The query bench's data: synthetic web events built with numpy (seeded), loaded into a real
m1lite data directory through the writer and into DuckDB from the same arrays, and the
sizes of what each keeps.

The distributions follow the perf baseline (`perf-baseline.md` §5): `event.type` 5 values
at 60/20/10/5/5 %, country 200 values Zipf s=1, `url.path` 10,000 values Zipf s=1,
browser 20 values Zipf s=1.5, `_m1.receivedUTC` uniform over 30 days with `_m1key`s in
receive order (an append-only log). Around them, the fields the guide's instrumentation
sends, so records weigh what real ones do: sessions of about ten events interleaved over
a few minutes (`session.id`, `user.id`, `_m1.ip`, country, browser, language, screen,
referrer and user agent are per session), a unique `event.id` and the client's
`event.time` per event, and the server's `_m1rand`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import numpy as np

DAY_MS = 86_400_000
START_MS = 1_790_812_800_000  # 2026-10-01T00:00:00Z
SPAN_MS = 30 * DAY_MS
SESSION_EVENTS = 10  # events per session, on average
SESSION_SPREAD = 2_000  # a session's events lie within this many neighbouring keys
SEED = 2024

TYPES = ["heartbeat", "view", "click", "sessionStart", "sessionEnd"]
TYPE_SHARES = [0.60, 0.20, 0.10, 0.05, 0.05]
BROWSERS = [
    "Chrome",
    "Safari",
    "Edge",
    "Firefox",
    "Samsung Internet",  # rank 5: the light parameter (needs quotes in a query)
    "Opera",
    "UC Browser",
    "Brave",
    "Vivaldi",
    "Yandex",
    "DuckDuckGo",
    "Chrome WebView",
    "Safari WebView",
    "Firefox iOS",
    "Chrome iOS",
    "Edge iOS",
    "Opera Mini",
    "Silk",
    "QQ Browser",
    "Whale",
]
_COUNTRY_HEAD = [
    "US",
    "CN",
    "IN",
    "BR",
    "DE",
    "GB",
    "JP",
    "FR",
    "CA",
    "RU",
    "MX",
    "ID",
    "IT",
    "ES",
    "KR",
    "AU",
    "TR",
    "NL",
    "PL",
    "SE",
]
_OS = [
    "Windows NT 10.0; Win64; x64",
    "Macintosh; Intel Mac OS X 14_4",
    "X11; Linux x86_64",
    "iPhone; CPU iPhone OS 17_4 like Mac OS X",
    "Linux; Android 14; Pixel 8",
]
LANGUAGES = ["en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP"]
SCREENS = [(1920, 1080), (1440, 900), (2560, 1440), (390, 844), (412, 915), (1366, 768)]
REFERRERS = [
    "",
    "",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://news.ycombinator.com/",
    "https://t.co/xyz123",
    "https://www.bing.com/search?q=event+capture",
]
_SECTIONS = ["blog", "docs", "products", "help", "news", "account", "search", "pricing"]

# m1lite's flat field name -> the DuckDB column holding it, in the order the enricher
# leaves them: the item's fields, then the server's stamp, then `_m1rand`.
FIELDS = {
    "session.id": "session_id",
    "user.id": "user_id",
    "event.id": "event_id",
    "event.time": "event_time",
    "event.type": "event_type",
    "url.host": "url_host",
    "url.path": "url_path",
    "referrer": "referrer",
    "screen.width": "screen_width",
    "screen.height": "screen_height",
    "language": "language",
    "userAgent": "user_agent",
    "browser.name": "browser",
    "_m1.ip": "ip",
    "_m1.receivedUTC": "received",
    "_m1.geo.country_iso_code": "country",
    "_m1rand": "rand",
}
TYPE_FIELD, COUNTRY_FIELD, PATH_FIELD = "event.type", "_m1.geo.country_iso_code", "url.path"
BROWSER_FIELD, SESSION_FIELD, TIME_FIELD = "browser.name", "session.id", "_m1.receivedUTC"
# Fields DuckDB's second variant holds as ENUM (every dictionary-coded low/mid-cardinality one).
ENUM_COLUMNS = ("event_type", "url_path", "referrer", "language", "user_agent", "browser")
ENUM_COLUMNS += ("country",)


def _countries() -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    codes = list(_COUNTRY_HEAD)
    seen = set(codes)
    for a in letters:
        for b in letters:
            if len(codes) == 200:
                return codes
            if a + b not in seen:
                codes.append(a + b)
    return codes


COUNTRIES = _countries()
PATHS = [f"/{_SECTIONS[i % len(_SECTIONS)]}/page-{i:05d}" for i in range(10_000)]


def _user_agents() -> list[str]:
    """One user agent per (browser, OS): 100 strings of 100-150 characters."""
    out = []
    for browser in BROWSERS:
        for system in _OS:
            version = 100 + (len(browser) * 7 + len(system)) % 30
            out.append(
                f"Mozilla/5.0 ({system}) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"{browser.replace(' ', '')}/{version}.0.0.0 Safari/537.36"
            )
    return out


USER_AGENTS = _user_agents()


def zipf_choice(rng: np.random.Generator, values: int, s: float, size: int) -> np.ndarray:
    """Ranks 0..values-1 drawn with P(rank r) proportional to 1 / (r + 1)^s."""
    weights = 1.0 / np.arange(1, values + 1, dtype=np.float64) ** s
    return rng.choice(values, size=size, p=weights / weights.sum()).astype(np.int32)


def _uuids(rng: np.random.Generator, count: int) -> list[str]:
    """Version-4-looking uuids from the generator (so the same seed gives the same ids)."""
    raw = rng.integers(0, 1 << 63, size=(count, 2), dtype=np.int64).astype(np.uint64)
    text = raw.byteswap().tobytes().hex()
    return [
        f"{text[i : i + 8]}-{text[i + 8 : i + 12]}-4{text[i + 13 : i + 16]}-"
        f"a{text[i + 17 : i + 20]}-{text[i + 20 : i + 32]}"
        for i in range(0, len(text), 32)
    ]


@functools.lru_cache(maxsize=2)
def _event_ids(seed: int, block: int) -> list[str]:
    return _uuids(np.random.default_rng([seed, block]), 1 << 16)


@dataclass
class Dataset:
    """Every event's values as arrays (codes into the value lists) in `_m1key` order."""

    n: int
    seed: int
    received_ms: np.ndarray  # int64, ascending
    client_delay_ms: np.ndarray  # event.time = received - delay
    event_type: np.ndarray  # codes into TYPES
    path: np.ndarray  # codes into PATHS
    session: np.ndarray  # codes into session_ids
    rand: np.ndarray
    event_id_seed: int  # event ids are drawn per batch from this seed (not kept: 10M strings)
    session_ids: np.ndarray  # object array of str
    # per session
    user: np.ndarray  # codes into user_ids
    user_ids: np.ndarray
    country: np.ndarray  # codes into COUNTRIES
    browser: np.ndarray  # codes into BROWSERS
    agent: np.ndarray  # codes into USER_AGENTS
    language: np.ndarray
    screen: np.ndarray
    referrer: np.ndarray
    ip: np.ndarray  # object array of str

    @property
    def sessions(self) -> int:
        return len(self.session_ids)


def make_dataset(n: int, seed: int = SEED) -> Dataset:
    rng = np.random.default_rng(seed)
    received = START_MS + np.sort(rng.integers(0, SPAN_MS, size=n, dtype=np.int64))
    sessions = (n - 1 + SESSION_SPREAD) // SESSION_EVENTS + 1
    session = (np.arange(n, dtype=np.int64) + rng.integers(0, SESSION_SPREAD, size=n)) // (
        SESSION_EVENTS
    )
    users = max(1, sessions // 3)
    user = rng.integers(0, users, size=sessions)
    browser = zipf_choice(rng, len(BROWSERS), 1.5, sessions)
    system = rng.integers(0, len(_OS), size=sessions)
    octets = rng.integers(1, 255, size=(sessions, 4))
    return Dataset(
        n=n,
        seed=seed,
        received_ms=received,
        client_delay_ms=rng.integers(5, 3_000, size=n, dtype=np.int64),
        event_type=rng.choice(len(TYPES), size=n, p=TYPE_SHARES).astype(np.int8),
        path=zipf_choice(rng, len(PATHS), 1.0, n),
        session=session.astype(np.int32),
        rand=rng.random(n),
        event_id_seed=int(rng.integers(0, 1 << 62)),
        session_ids=np.array(_uuids(rng, sessions), dtype=object),
        user=user.astype(np.int32),
        user_ids=np.array(_uuids(rng, users), dtype=object),
        country=zipf_choice(rng, len(COUNTRIES), 1.0, sessions),
        browser=browser,
        agent=(browser * len(_OS) + system).astype(np.int32),
        language=rng.integers(0, len(LANGUAGES), size=sessions).astype(np.int8),
        screen=rng.integers(0, len(SCREENS), size=sessions).astype(np.int8),
        referrer=rng.integers(0, len(REFERRERS), size=sessions).astype(np.int8),
        ip=np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in octets.tolist()], dtype=object),
    )


def iso_ms(ms: np.ndarray) -> list[str]:
    """Epoch ms as the enricher writes `_m1.receivedUTC`: 2026-10-01T00:00:00.123Z."""
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return [t + "Z" for t in text.tolist()]


def _objects(values: list[Any]) -> np.ndarray:
    return np.array(values, dtype=object)


_TYPES_O, _PATHS_O, _COUNTRIES_O = _objects(TYPES), _objects(PATHS), _objects(COUNTRIES)
_BROWSERS_O, _AGENTS_O, _LANGUAGES_O = (
    _objects(BROWSERS),
    _objects(USER_AGENTS),
    _objects(LANGUAGES),
)
_REFERRERS_O = _objects(REFERRERS)
_WIDTHS = np.array([w for w, _ in SCREENS], dtype=np.int64)
_HEIGHTS = np.array([h for _, h in SCREENS], dtype=np.int64)


def columns(ds: Dataset, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Events lo..hi-1 as one array per m1lite field: object arrays of str (references
    into the value lists), int64 or float64; `_m1.receivedUTC` as epoch ms (int64)."""
    session = ds.session[lo:hi]
    received = ds.received_ms[lo:hi]
    # Event ids: a generator per 65,536-event block, so any batch boundaries give the
    # same ids (m1lite and DuckDB load in different batch sizes).
    ids: list[str] = []
    for block in range(lo >> 16, ((hi - 1) >> 16) + 1):
        start = block << 16
        block_ids = _event_ids(ds.event_id_seed, block)
        ids.extend(block_ids[max(lo, start) - start : min(hi, start + (1 << 16)) - start])
    screen = ds.screen[session]
    return {
        "session.id": ds.session_ids[session],
        "user.id": ds.user_ids[ds.user[session]],
        "event.id": _objects(ids),
        "event.time": received - ds.client_delay_ms[lo:hi],
        "event.type": _TYPES_O[ds.event_type[lo:hi]],
        "url.host": np.full(hi - lo, "www.example.com", dtype=object),
        "url.path": _PATHS_O[ds.path[lo:hi]],
        "referrer": _REFERRERS_O[ds.referrer[session]],
        "screen.width": _WIDTHS[screen],
        "screen.height": _HEIGHTS[screen],
        "language": _LANGUAGES_O[ds.language[session]],
        "userAgent": _AGENTS_O[ds.agent[session]],
        "browser.name": _BROWSERS_O[ds.browser[session]],
        "_m1.ip": ds.ip[session],
        "_m1.receivedUTC": received,
        "_m1.geo.country_iso_code": _COUNTRIES_O[ds.country[session]],
        "_m1rand": ds.rand[lo:hi],
    }


def records(ds: Dataset, lo: int, hi: int) -> list[dict[str, Any]]:
    """Flat records as the enricher hands them to the writer (dates as ISO text)."""
    cols = columns(ds, lo, hi)
    values = [iso_ms(col) if name == TIME_FIELD else col.tolist() for name, col in cols.items()]
    names = list(cols)
    return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


# -- m1lite ------------------------------------------------------------------------------


@dataclass
class LoadResult:
    events: int
    seconds: float
    commits: int
    log_bytes_on_disk: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def load_m1lite(
    ds: Dataset,
    data_dir: Path,
    *,
    batch: int = 5_000,
    in_flight: int = 8,
    progress: Callable[[int, float], None] | None = None,
    make_records: Callable[[Dataset, int, int], list[dict[str, Any]]] | None = None,
) -> LoadResult:
    """Write every event into a new data directory through m1lite's own writer (group
    commits of the log, the index in the same transactions, checkpoints), as /write does
    after enrichment, with async=false semantics: each batch is acknowledged once durable.
    Then close the environment, which checkpoints the index: a server opens the directory
    with nothing to replay. `make_records` replaces `records` (another bench's field
    names)."""
    build = make_records or records
    from m1lite.config import Config
    from m1lite.environment import Environment
    from m1lite.storage.log import encode_record

    os.environ.setdefault("M1LITE_ADMIN_PASSWORD", "bench-admin-password")
    env = Environment(Config(data=data_dir))
    env.start()
    started = time.perf_counter()

    async def feed() -> None:
        pending: deque[asyncio.Future[list[int]]] = deque()
        for lo in range(0, ds.n, batch):
            hi = min(lo + batch, ds.n)
            batch_records = build(ds, lo, hi)
            encoded = [encode_record(r) for r in batch_records]
            future = env.writer.submit(batch_records, encoded=encoded, durable=True)
            assert future is not None
            pending.append(future)
            while len(pending) > in_flight:
                await pending.popleft()
            if progress is not None and (hi // batch) % 200 == 0:
                progress(hi, time.perf_counter() - started)
        for future in pending:
            await future

    try:
        asyncio.run(feed())
        commits = env.writer.commits
    finally:
        env.close()  # drains the writer and checkpoints the index
    seconds = time.perf_counter() - started
    disk = (data_dir / "lake" / "data.mdb").stat().st_blocks * 512
    return LoadResult(ds.n, seconds, commits, disk)


def lmdb_sizes(data_dir: Path) -> dict[str, dict[str, int]]:
    """Per named database: entries and bytes in pages (psize x (branch + leaf + overflow))."""
    env = lmdb.open(
        str(data_dir / "lake"), readonly=True, lock=False, max_dbs=8, subdir=True, map_size=1 << 20
    )
    try:
        out: dict[str, dict[str, int]] = {}
        with env.begin() as txn:
            for name in ("log", "index", "meta", "sessions"):
                with contextlib.suppress(lmdb.Error):
                    stat = txn.stat(env.open_db(name.encode(), txn=txn, create=False))
                    pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
                    out[name] = {
                        "entries": stat["entries"],
                        "pages": pages,
                        "bytes": pages * stat["psize"],
                    }
        return out
    finally:
        env.close()


def index_breakdown(data_dir: Path) -> dict[str, dict[str, int]]:
    """Bytes of the `index` database's values per field and record kind (codes, numbers,
    dictionary, extras): which fields the index's size goes to."""
    from m1lite.storage import index as idx

    kinds = {
        idx.CODES: "codes",
        idx.NUMBERS: "numbers",
        idx.DICTIONARY: "dictionary",
        idx.EXTRAS: "extras",
        idx.NUMBER_EXTRAS: "number_extras",
    }
    env = lmdb.open(
        str(data_dir / "lake"), readonly=True, lock=False, max_dbs=8, subdir=True, map_size=1 << 20
    )
    out: dict[str, dict[str, int]] = {}
    try:
        with env.begin(buffers=True) as txn:
            db = env.open_db(b"index", txn=txn, create=False)
            for raw_key, raw_value in txn.cursor(db=db):
                key = bytes(raw_key)
                kind = kinds.get(key[:1])
                if kind is None:
                    continue
                name = key[1:-9].decode()
                slot = out.setdefault(name, {})
                slot[kind] = slot.get(kind, 0) + len(raw_value)
    finally:
        env.close()
    return out


def mean_record_bytes(data_dir: Path, sample: int = 20_000) -> float:
    """Mean stored log value size over the first `sample` events (msgpack + flag byte)."""
    env = lmdb.open(
        str(data_dir / "lake"), readonly=True, lock=False, max_dbs=8, subdir=True, map_size=1 << 20
    )
    try:
        total = count = 0
        with env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=env.open_db(b"log", txn=txn, create=False))
            for _key, value in cursor:
                total += len(value)
                count += 1
                if count >= sample:
                    break
        return total / max(1, count)
    finally:
        env.close()


def mean_json_bytes(ds: Dataset, sample: int = 20_000) -> float:
    """Mean size of the same records as compact JSON (what a client would send, plus the
    server's stamp)."""
    encode = msgspec.json.Encoder().encode
    chosen = records(ds, 0, min(sample, ds.n))
    return sum(len(encode(r)) for r in chosen) / max(1, len(chosen))


# -- DuckDB ------------------------------------------------------------------------------

_DUCK_TYPES = {
    "event_time": "BIGINT",
    "screen_width": "INTEGER",
    "screen_height": "INTEGER",
    "received": "TIMESTAMP",
    "rand": "DOUBLE",
}


def duck_schema() -> str:
    cols = ["k BIGINT"] + [
        f"{column} {_DUCK_TYPES.get(column, 'VARCHAR')}" for column in FIELDS.values()
    ]
    return ", ".join(cols)


def load_duckdb(ds: Dataset, con: Any, *, chunk: int = 500_000) -> dict[str, float]:
    """Table `ev` (VARCHAR strings, TIMESTAMP receive time, as a user loading these events
    would declare them) and `ev_enum` (the same rows, dictionary fields as ENUM), both in
    `_m1key` order. Returns the seconds each took and the bytes DuckDB reports holding."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    con.execute(f"CREATE TABLE ev ({duck_schema()})")
    select = ", ".join(
        ["k"]
        + [
            f"make_timestamp_ms({column}) AS {column}" if column == "received" else column
            for column in FIELDS.values()
        ]
    )
    for lo in range(0, ds.n, chunk):
        hi = min(lo + chunk, ds.n)
        cols = columns(ds, lo, hi)
        part = {"k": np.arange(lo, hi, dtype=np.int64)}
        part.update({FIELDS[name]: values for name, values in cols.items()})
        con.register("part", part)
        con.execute(f"INSERT INTO ev SELECT {select} FROM part")
        con.unregister("part")
        del cols, part
        gc.collect()
    timings["varchar_s"] = time.perf_counter() - started
    timings["varchar_bytes"] = duck_memory(con)
    started = time.perf_counter()
    values = {
        "event_type": TYPES,
        "url_path": PATHS,
        "referrer": sorted(set(REFERRERS)),
        "language": LANGUAGES,
        "user_agent": USER_AGENTS,
        "browser": BROWSERS,
        "country": COUNTRIES,
    }
    for column in ENUM_COLUMNS:
        con.execute(
            f"CREATE TYPE {column}_t AS ENUM (SELECT unnest($1::VARCHAR[]))", [values[column]]
        )
    enum_select = ", ".join(
        f"{c}::{c}_t AS {c}" if c in ENUM_COLUMNS else c for c in ["k", *FIELDS.values()]
    )
    con.execute(f"CREATE TABLE ev_enum AS SELECT {enum_select} FROM ev ORDER BY k")
    timings["enum_s"] = time.perf_counter() - started
    timings["enum_bytes"] = duck_memory(con) - timings["varchar_bytes"]
    return timings


def duck_memory(con: Any) -> float:
    """Bytes DuckDB's buffer manager holds (`duckdb_memory()`)."""
    row = con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
    return float(row[0] or 0)

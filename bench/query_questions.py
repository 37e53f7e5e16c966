"""The query bench's questions, each as m1lite `/query` parameters and as DuckDB SQL, the
answers of both reduced to one comparable shape, and the engines that ask them.

m1lite is asked two ways: in-process, through the same functions the `/query` handler
runs (`read_request`, `store_upto`, `_answer`: parse, execute, facets, sort, fetch and
the JSON response body), and over HTTP against a real `m1lite serve`. DuckDB runs
in-process with `SET threads=2`, its result fetched as Python rows.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from bench import query_data as qd

_decode = msgspec.json.decode


@dataclass(frozen=True)
class Question:
    key: str
    title: str
    params: dict[str, str]  # /query parameters (form values, as a client sends them)
    sql: str  # `{t}` is the table
    sql_args: tuple[Any, ...]
    m1_answer: Callable[[dict[str, Any]], Any]  # response body -> comparable answer
    duck_answer: Callable[[list[tuple[Any, ...]]], Any]  # rows -> comparable answer


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _naive(ms: int) -> dt.datetime:
    """DuckDB's TIMESTAMP (no zone) for epoch ms, as the table holds UTC."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(tzinfo=None)


def _ms(value: Any) -> int:
    if isinstance(value, dt.datetime):
        return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000
    from m1lite.schema import parse_date_ms

    ms = parse_date_ms(value)
    assert ms is not None, value
    return ms


# -- answer shapes -----------------------------------------------------------------------


def _m1_terms(name: str) -> Callable[[dict[str, Any]], Any]:
    def answer(body: dict[str, Any]) -> Any:
        buckets = body["facets"][name]["buckets"]
        return {
            "found": body["response"]["numFound"],
            "buckets": [[b["val"], b["count"]] for b in buckets],
        }

    return answer


def _duck_terms(rows: list[tuple[Any, ...]]) -> Any:
    """Rows of (value, count, total of every group's count)."""
    return {
        "found": int(rows[0][2]) if rows else 0,
        "buckets": [[str(value), int(count)] for value, count, _total in rows],
    }


def _m1_count(body: dict[str, Any]) -> Any:
    return {"found": body["response"]["numFound"]}


def _duck_count(rows: list[tuple[Any, ...]]) -> Any:
    return {"found": int(rows[0][0])}


def _m1_hours(body: dict[str, Any]) -> Any:
    buckets = body["facets"]["hours"]["buckets"]
    return {
        "found": body["response"]["numFound"],
        "buckets": [
            [_ms(b["val"]), b["count"], b.get("sessions", 0)] for b in buckets if b["count"]
        ],
    }


def _duck_hours(rows: list[tuple[Any, ...]]) -> Any:
    return {
        "found": sum(int(count) for _hour, count, _sessions in rows),
        "buckets": [[_ms(hour), int(count), int(sessions)] for hour, count, sessions in rows],
    }


def _m1_docs(body: dict[str, Any]) -> Any:
    return [[d["_m1key"], d["event.id"], _ms(d[qd.TIME_FIELD])] for d in body["response"]["docs"]]


# The column positions in `SELECT *` of the bench tables.
_COLUMNS = ["k", *qd.FIELDS.values()]
_KEY, _EVENT_ID, _RECEIVED = (_COLUMNS.index(c) for c in ("k", "event_id", "received"))


def _duck_docs(rows: list[tuple[Any, ...]]) -> Any:
    return [[int(r[_KEY]), r[_EVENT_ID], _ms(r[_RECEIVED])] for r in rows]


# -- the questions -------------------------------------------------------------------------


def questions() -> list[Question]:
    """Issue 3's questions with the perf baseline's heavy and light parameters: heavy = the
    top country (US, 17 % of events) and browser (Chrome, 46 %), light = the rank-20 country
    (0.85 %) and the rank-5 browser (4 %)."""
    country, browser, path = qd.COUNTRY_FIELD, qd.BROWSER_FIELD, qd.PATH_FIELD
    heavy_country, light_country = qd.COUNTRIES[0], qd.COUNTRIES[19]
    heavy_browser, light_browser = qd.BROWSERS[0], qd.BROWSERS[4]
    week = qd.START_MS + qd.SPAN_MS - 7 * qd.DAY_MS
    end = qd.START_MS + qd.SPAN_MS

    def facet(spec: dict[str, Any]) -> str:
        return json.dumps({"facet": spec}, separators=(",", ":"))

    def hourly(start_ms: int, q: str) -> dict[str, str]:
        return {
            "q": q,
            "rows": "0",
            "json": facet(
                {
                    "hours": {
                        "type": "range",
                        "field": qd.TIME_FIELD,
                        "start": _iso(start_ms),
                        "end": _iso(end),
                        "gap": "+1HOUR",
                        "facet": {"sessions": f"unique({qd.SESSION_FIELD})"},
                    }
                }
            ),
        }

    hourly_sql = (
        "SELECT date_trunc('hour', received) AS h, count(*), count(DISTINCT session_id) "
        "FROM {t} WHERE received >= $1 AND received < $2 GROUP BY h ORDER BY h"
    )
    top_sql = (
        "SELECT url_path, count(*) AS n, sum(count(*)) OVER () FROM {t} WHERE country = $1 "
        "GROUP BY url_path ORDER BY n DESC, url_path::VARCHAR LIMIT 10"
    )
    and_sql = "SELECT count(*) FROM {t} WHERE event_type = 'view' AND country = $1 AND browser = $2"
    top_paths = facet({"paths": {"type": "terms", "field": path, "limit": 10}})
    return [
        Question(
            "facet",
            "terms facet: every country's count among event.type:view",
            {
                "q": f"{qd.TYPE_FIELD}:view",
                "rows": "0",
                "json": facet({"countries": {"type": "terms", "field": country, "limit": -1}}),
            },
            "SELECT country, count(*) AS n, sum(count(*)) OVER () FROM {t} "
            "WHERE event_type = 'view' GROUP BY country ORDER BY n DESC, country::VARCHAR",
            (),
            _m1_terms("countries"),
            _duck_terms,
        ),
        Question(
            "and-heavy",
            f"count: view AND {heavy_country} AND {heavy_browser}",
            {
                "q": f"{qd.TYPE_FIELD}:view AND {country}:{heavy_country} "
                f'AND {browser}:"{heavy_browser}"',
                "rows": "0",
            },
            and_sql,
            (heavy_country, heavy_browser),
            _m1_count,
            _duck_count,
        ),
        Question(
            "and-light",
            f"count: view AND {light_country} AND {light_browser}",
            {
                "q": f"{qd.TYPE_FIELD}:view AND {country}:{light_country} "
                f'AND {browser}:"{light_browser}"',
                "rows": "0",
            },
            and_sql,
            (light_country, light_browser),
            _m1_count,
            _duck_count,
        ),
        Question(
            "top-heavy",
            f"top-10 url.path where country {heavy_country}",
            {"q": f"{country}:{heavy_country}", "rows": "0", "json": top_paths},
            top_sql,
            (heavy_country,),
            _m1_terms("paths"),
            _duck_terms,
        ),
        Question(
            "top-light",
            f"top-10 url.path where country {light_country}",
            {"q": f"{country}:{light_country}", "rows": "0", "json": top_paths},
            top_sql,
            (light_country,),
            _m1_terms("paths"),
            _duck_terms,
        ),
        Question(
            "hours-week",
            "range facet by hour over the last 7 days, unique(session.id) per hour",
            hourly(week, f"{qd.TIME_FIELD}:[{_iso(week)} TO {_iso(end)}}}"),
            hourly_sql,
            (_naive(week), _naive(end)),
            _m1_hours,
            _duck_hours,
        ),
        Question(
            "hours-month",
            "range facet by hour over all 30 days, unique(session.id) per hour",
            hourly(qd.START_MS, "*"),
            hourly_sql,
            (_naive(qd.START_MS), _naive(end)),
            _m1_hours,
            _duck_hours,
        ),
        Question(
            "latest",
            "the 10 most recent events: q=* sort=_m1.receivedUTC desc rows=10",
            {"q": "*", "sort": f"{qd.TIME_FIELD} desc", "rows": "10"},
            "SELECT * FROM {t} ORDER BY received DESC, k LIMIT 10",
            (),
            _m1_docs,
            _duck_docs,
        ),
        Question(
            "latest-heartbeats",
            "the guide's 3 most recent heartbeats: sort=_m1.receivedUTC desc rows=3",
            {"q": f"{qd.TYPE_FIELD}:heartbeat", "sort": f"{qd.TIME_FIELD} desc", "rows": "3"},
            "SELECT * FROM {t} WHERE event_type = 'heartbeat' ORDER BY received DESC, k LIMIT 3",
            (),
            _m1_docs,
            _duck_docs,
        ),
    ]


# -- engines -------------------------------------------------------------------------------


@dataclass
class Asked:
    ms: float
    answer: Any
    qtime_ms: float | None = None
    cpu_ms: float | None = None  # this thread's CPU time (in-process m1lite)
    sys_ms: float | None = None  # of which in the kernel (page faults of fresh memory)


class M1InProcess:
    """m1lite's /query work without HTTP: the handler's own functions on an Environment."""

    name = "m1lite"

    def __init__(self, env: Any) -> None:
        self.env = env

    def ask(self, question: Question) -> Asked:
        from m1lite.api.query import _answer, read_request, store_upto
        from m1lite.params import Params

        before = resource.getrusage(resource.RUSAGE_THREAD)
        started = time.perf_counter()
        params = Params()
        params.add("store", "index")
        for name, value in question.params.items():
            params.add(name, value)
        request = read_request(params)
        upto = store_upto(self.env, request.stores)
        response = _answer(self.env, request, upto, started)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_THREAD)
        user = after.ru_utime - before.ru_utime
        system = after.ru_stime - before.ru_stime
        body = _decode(response.body)
        qtime = body["responseHeader"]["QTime"]
        answer = question.m1_answer(body)
        return Asked(elapsed * 1000, answer, qtime, (user + system) * 1000, system * 1000)


class M1Http:
    """m1lite over HTTP: a form POST to /query on a real server, keep-alive."""

    name = "m1lite-http"

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(base_url=base_url, headers={"m1-auth-token": token}, timeout=300)

    def ask(self, question: Question) -> Asked:
        started = time.perf_counter()
        response = self.client.post("/query", data={"store": "index", **question.params})
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        body = response.json()
        return Asked(elapsed * 1000, question.m1_answer(body), body["responseHeader"]["QTime"])

    def close(self) -> None:
        self.client.close()


class Duck:
    """DuckDB in-process on one of the bench tables."""

    def __init__(self, con: Any, table: str, name: str) -> None:
        self.con, self.table, self.name = con, table, name

    def ask(self, question: Question) -> Asked:
        sql = question.sql.replace("{t}", self.table)
        started = time.perf_counter()
        rows = self.con.execute(sql, list(question.sql_args)).fetchall()
        elapsed = time.perf_counter() - started
        return Asked(elapsed * 1000, question.duck_answer(rows))

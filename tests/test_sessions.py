"""Session stores in process: a real Environment on a real LMDB in tmp_path, a clock the
test moves, and the flusher ticked by hand. What is judged is what a client would see:
the documents `/session/query` returns, the `sessionTimeout` events in the lake, and
what a reopened data directory holds.

The HTTP side (statuses, rights, real timing, kill -9) is in
tests/integration/test_sessions_api.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from m1lite.api.sessions import answer_body, read_session_query
from m1lite.config import Config
from m1lite.environment import Environment
from m1lite.errors import ApiError, BadRequest, NotFound, PayloadTooLarge
from m1lite.params import Params
from m1lite.sessions.documents import deep_merge, read_ops, to_timeout_event
from m1lite.sessions.index import COMPACT_SLACK, REBUILD_POSTINGS_AT
from m1lite.sessions.store import SESSIONS_DB
from m1lite.storage import log as event_log

GEOIP = Path(__file__).parent / "data" / "GeoIP2-City-Test.mmdb"
LONDON = "81.2.69.142"  # in MaxMind's test database: GB, London
MILTON = "216.160.83.56"  # US, Washington
T0 = 1_700_000_000.0  # the test clock's start, epoch seconds


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Harness:
    """One environment with a session store `stash` (timeout 30 s) and a movable clock."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.now = T0
        self.env = self._open()

    def _open(self) -> Environment:
        env = Environment(
            Config(data=self.data, template="eventsSessionStore", geoip=GEOIP, max_json_depth=8)
        )
        env.sessions.clock = lambda: self.now
        env.start()
        return env

    def reopen(self) -> None:
        """A clean stop (what SIGTERM does) and a start on the same data directory."""
        self.env.close()
        self.env = self._open()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    # -- what the endpoints do ---------------------------------------------------------

    def update(self, ops: Any, ip: str = LONDON, store: str = "stash") -> None:
        sessions = self.env.sessions

        async def go() -> None:
            parsed = read_ops(ops, sessions.store(store).key)
            future = sessions.update(store, parsed, ip, durable=True)
            assert future is not None
            await future

        run(go())

    def upsert(self, *items: dict[str, Any], ip: str = LONDON, store: str = "stash") -> None:
        self.update([{"upsert": list(items)}], ip, store)

    def delete(self, *ids: Any, store: str = "stash") -> None:
        self.update([{"delete": list(ids)}], store=store)

    def query(self, **params: Any) -> dict[str, Any]:
        given = Params()
        given.add("store", params.pop("store", "stash"))
        for name, value in params.items():
            given.add(name, value)
        sessions = self.env.sessions
        name, request = read_session_query(given, sessions)
        return answer_body(sessions, name, sessions.search(name, request))

    def ids(self, q: str = "*") -> list[Any]:
        return [item["session"]["id"] for item in self.query(q=q, rows=1000)["items"]]

    def tick(self) -> int:
        flushed: int = run(self.env.flusher.tick())
        return flushed

    def events(self) -> list[dict[str, Any]]:
        """Every event in the lake, flat, in key order."""
        return event_log.get_records(self.env.lake, list(range(self.env.writer.next_key)))

    def timeouts(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("type") == "sessionTimeout"]

    def stored_records(self) -> int:
        with self.env.lake.read() as txn:
            return int(txn.stat(self.env.lake.dbs[SESSIONS_DB])["entries"])


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("M1LITE_ADMIN_PASSWORD", "session-tests-pw")
    harness = Harness(tmp_path / "data")
    yield harness
    harness.env.close()


def heartbeat(session_id: Any, **more: Any) -> dict[str, Any]:
    return {"session": {"id": session_id}, "event": {"type": "heartbeat"}, **more}


# -- ops and merging --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ({"upsert": []}, "ops must be a JSON array"),
        (["x"], "ops[0] must be an object"),
        ([{}], "ops[0] needs upsert and/or delete"),
        ([{"upsert": [], "merge": []}], "ops[0] has unknown key 'merge'"),
        ([{"upsert": {"session": {"id": "a"}}}], "ops[0].upsert must be an array"),
        ([{"upsert": [7]}], "ops[0].upsert[0] must be an object"),
        ([{"upsert": [{"a": 1}]}], "ops[0].upsert[0] has no session.id"),
        ([{"upsert": [{"session": {"id": 1.5}}]}], "session.id must be a string or an integer"),
        ([{"upsert": [{"session": {"id": ""}}]}], "must not be empty"),
        ([{"delete": "a"}], "ops[0].delete must be an array of session ids"),
        ([{"delete": [{"id": 1}]}], "ops[0].delete[0] must be a string or an integer"),
        ([{"upsert": []}, {"delete": [True]}], "ops[1].delete[0]"),
    ],
)
def test_bad_ops_are_refused_with_a_message_saying_where(ops: Any, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        read_ops(ops, "session.id")
    assert message in caught.value.message
    assert caught.value.status == 400


def test_deep_merge_merges_objects_and_replaces_everything_else() -> None:
    stored = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": "x", "g": 1}
    patch = {"a": {"c": [3], "d": {"h": 2}, "i": None}, "f": {"now": "an object"}, "g": None}
    assert deep_merge(stored, patch) == {
        "a": {"b": 1, "c": [3], "d": {"e": 1, "h": 2}},
        "f": {"now": "an object"},
    }
    # null inside a new object is dropped too
    assert deep_merge({}, {"x": {"y": None, "z": 1}}) == {"x": {"z": 1}}


def test_the_timeout_event_of_a_document() -> None:
    doc = {"session": {"id": "s", "start": 1_000}, "event": {"type": "heartbeat"}}
    event = to_timeout_event(doc, 61_000, 2_000)
    assert event["type"] == event["event"]["type"] == "sessionTimeout"
    assert event["session"] == {"id": "s", "start": 1_000, "end": 61_000, "durationMs": 60_000}
    # no usable session.start (here: after lastUpdated): the time the server first saw it
    late_start = {"session": {"id": "s", "start": 99_000}}
    assert to_timeout_event(late_start, 61_000, 2_000)["session"]["durationMs"] == 59_000
    # an ISO start works as well
    iso = {"session": {"id": "s", "start": "1970-01-01T00:00:01.000Z"}}
    assert to_timeout_event(iso, 61_000, None)["session"]["durationMs"] == 60_000
    assert "durationMs" not in to_timeout_event({"session": {"id": "s"}}, 5, None)["session"]


# -- /session/update --------------------------------------------------------------------


def test_upsert_stores_the_document_with_the_server_stamp(h: Harness) -> None:
    h.upsert({"session": {"id": "s1", "start": 5}, "page": "/a", "_m1": {"ip": "forged"}})
    [item] = h.query()["items"]
    stamp = item.pop("_m1")
    assert item == {"session": {"id": "s1", "start": 5}, "page": "/a"}
    now_ms = int(T0 * 1000)
    assert stamp["ip"] == LONDON
    assert stamp["receivedUTC"] == now_ms
    assert stamp["session"] == {"lastUpdated": now_ms, "created": now_ms}
    assert stamp["geo"]["country_iso_code"] == "GB"
    assert stamp["geo"]["city_name"] == "London"


def test_upserts_deep_merge_and_restamp(h: Harness) -> None:
    h.upsert({"session": {"id": "s1"}, "event": {"type": "view", "data": {"a": 1, "b": [1, 2]}}})
    h.advance(2)
    h.upsert(
        {"session": {"id": "s1"}, "event": {"type": "heartbeat", "data": {"b": [3]}}},
        ip=MILTON,
    )
    [item] = h.query()["items"]
    assert item["event"] == {"type": "heartbeat", "data": {"a": 1, "b": [3]}}
    assert item["_m1"]["ip"] == MILTON
    assert item["_m1"]["geo"]["country_iso_code"] == "US"
    assert item["_m1"]["session"] == {
        "lastUpdated": int(T0 * 1000) + 2000,
        "created": int(T0 * 1000),
    }


def test_ids_compare_as_strings(h: Harness) -> None:
    h.upsert({"session": {"id": 2002}, "a": 1})
    h.upsert({"session": {"id": "2002"}, "b": 2})
    result = h.query()
    assert result["count"] == 1
    assert result["items"][0]["a"] == 1 and result["items"][0]["b"] == 2
    h.delete(2002)
    assert h.query()["count"] == 0


def test_ops_apply_in_order(h: Harness) -> None:
    h.upsert(heartbeat("a", n=1), heartbeat("b"))
    h.update(
        [
            {"upsert": [heartbeat("a", m=2)], "delete": ["b"]},
            {"delete": ["a"]},
            {"upsert": [heartbeat("a", fresh=True)]},  # after a delete: a new document
            {"delete": ["never-existed"]},
        ]
    )
    [item] = h.query()["items"]
    assert item["session"]["id"] == "a"
    assert item["fresh"] is True and "n" not in item and "m" not in item


def test_a_bad_upsert_changes_nothing(h: Harness) -> None:
    h.upsert(heartbeat("a", n=1))
    many = {f"p{i}": i for i in range(1001)}  # max_properties_per_event is 1,000
    with pytest.raises(PayloadTooLarge):
        h.update(
            [{"upsert": [heartbeat("a", n=2), heartbeat("b")]}, {"upsert": [many | heartbeat("c")]}]
        )
    assert h.ids() == ["a"]
    assert h.query()["items"][0]["n"] == 1
    with pytest.raises(BadRequest, match="64 bits"):
        h.upsert(heartbeat("a", big=2**70))


def test_unknown_store_is_404(h: Harness) -> None:
    with pytest.raises(NotFound, match="no session store named nope"):
        h.upsert(heartbeat("a"), store="nope")
    with pytest.raises(NotFound, match="index is a data store"):
        h.query(store="index")


# -- /session/query ----------------------------------------------------------------------


def _populate(h: Harness) -> None:
    for n in range(30):
        page = f"/p{n % 3}"
        h.upsert(
            {"session": {"id": f"s{n:02d}"}, "n": n, "event": {"type": "heartbeat"}, "page": page},
            ip=LONDON if n % 2 else MILTON,
        )
        h.advance(1)


def test_query_syntax_sort_paging_and_count(h: Harness) -> None:
    _populate(h)
    assert h.query(rows=0) == {"count": 30, "items": []}
    assert h.query(q='page:"/p1" AND _m1.geo.country_iso_code:GB', rows=0)["count"] == 5
    assert h.query(q="n:[10 TO 14]", rows=0)["count"] == 5
    assert h.query(q='page:"/p1"', fq="n:{* TO 10}", rows=0)["count"] == 3
    assert h.query(q='NOT page:"/p1"', rows=0)["count"] == 20
    # default: 10 rows sorted by the store's key
    assert h.ids() == [f"s{n:02d}" for n in range(30)]  # rows=1000 in ids()
    assert [i["session"]["id"] for i in h.query()["items"]] == [f"s{n:02d}" for n in range(10)]
    newest = h.query(sort="_m1.session.lastUpdated desc", rows=3, start=1)["items"]
    assert [i["n"] for i in newest] == [28, 27, 26]
    # dates: the stamps are epoch ms and take date math
    recent = h.query(q=f"_m1.session.lastUpdated:[{int((h.now - 5) * 1000)} TO *]", rows=0)
    assert recent["count"] == 5
    assert h.query(q="_m1.session.lastUpdated:[NOW-5SECONDS TO NOW]", rows=0)["count"] == 5
    assert h.query(q="_m1.receivedUTC:[* TO NOW-1YEAR]", rows=0)["count"] == 0


def test_query_facets_by_page_and_country(h: Harness) -> None:
    _populate(h)
    facet = (
        '{"facet":{"pages":{"field":"page","type":"terms"},'
        '"countries":{"field":"_m1.geo.country_iso_code","type":"terms"},'
        '"when":{"type":"query","q":"n:[0 TO 9]"}}}'
    )
    result = h.query(q="*", rows=0, json=facet)
    assert result["count"] == 30
    facets = result["facets"]
    assert facets["count"] == 30
    assert facets["pages"]["buckets"] == [
        {"val": "/p0", "count": 10},
        {"val": "/p1", "count": 10},
        {"val": "/p2", "count": 10},
    ]
    assert facets["countries"]["buckets"] == [
        {"val": "GB", "count": 15},
        {"val": "US", "count": 15},
    ]
    assert facets["when"] == {"count": 10}


def test_queries_see_updates_and_deletes(h: Harness) -> None:
    _populate(h)
    assert h.query(q='page:"/p0"', rows=0)["count"] == 10
    h.upsert({"session": {"id": "s00"}, "page": "/p1"}, {"session": {"id": "s03"}, "page": None})
    h.delete("s06")
    assert h.query(q='page:"/p0"', rows=0)["count"] == 7
    assert h.query(q='page:"/p1"', rows=0)["count"] == 11
    assert h.query(q="-page:*", rows=0)["count"] == 1
    assert h.query(rows=0)["count"] == 29
    # a new session may take a freed slot: it must not inherit anything
    h.upsert({"session": {"id": "new"}, "other": 1})
    [item] = h.query(q="other:1")["items"]
    assert item["session"]["id"] == "new" and "page" not in item and "n" not in item


@pytest.mark.parametrize("changes", [10, REBUILD_POSTINGS_AT + 100])
def test_term_queries_stay_right_as_rows_change(h: Harness, changes: int) -> None:
    """Term lookups use postings once built; the refresh edits them (few changes) or drops
    them to be rebuilt (many): either way counts stay right."""
    total = changes + 50
    h.update([{"upsert": [{"session": {"id": n}, "k": "old"} for n in range(total)]}])
    assert h.query(q="k:old", rows=0)["count"] == total  # builds the postings
    h.update([{"upsert": [{"session": {"id": n}, "k": "new"} for n in range(changes)]}])
    assert h.query(q="k:old", rows=0)["count"] == total - changes
    assert h.query(q="k:new", rows=0)["count"] == changes
    h.update([{"delete": list(range(changes))}])
    assert h.query(q="k:new", rows=0)["count"] == 0
    assert h.query(q="k:*", rows=0)["count"] == total - changes


def test_multi_valued_fields_follow_updates(h: Harness) -> None:
    h.upsert({"session": {"id": "a"}, "tags": ["x", "y"]}, {"session": {"id": "b"}, "tags": ["y"]})
    assert h.query(q="tags:y", rows=0)["count"] == 2
    facet = '{"facet":{"t":{"field":"tags","type":"terms"}}}'
    assert h.query(rows=0, json=facet)["facets"]["t"]["buckets"] == [
        {"val": "y", "count": 2},
        {"val": "x", "count": 1},
    ]
    h.upsert({"session": {"id": "a"}, "tags": ["z"]})
    assert h.query(q="tags:y", rows=0)["count"] == 1
    assert h.query(rows=0, json=facet)["facets"]["t"]["buckets"] == [
        {"val": "y", "count": 1},
        {"val": "z", "count": 1},
    ]


def test_dictionaries_of_ever_new_values_are_compacted(h: Harness) -> None:
    h.update([{"upsert": [heartbeat(n, event={"id": f"e{n}-0"}) for n in range(20)]}])
    rounds = COMPACT_SLACK // 20 * 3
    for r in range(1, rounds):
        h.update([{"upsert": [heartbeat(n, event={"id": f"e{n}-{r}"}) for n in range(20)]}])
        h.query(rows=0, q="event.id:*")  # a refresh per round
    index = h.env.sessions.index("stash")
    assert len(index.fields["event.id"].values) <= 2 * 20 + COMPACT_SLACK
    last = rounds - 1
    assert h.query(q=f"event.id:e7-{last}")["items"][0]["session"]["id"] == 7
    assert h.query(q="event.id:e7-0", rows=0)["count"] == 0


def test_session_query_parameters(h: Harness) -> None:
    _populate(h)
    with pytest.raises(BadRequest, match="format=csv is for /query"):
        h.query(format="csv")
    with pytest.raises(BadRequest, match="fl is for /query"):
        h.query(fl="page")
    with pytest.raises(BadRequest, match="no _m1key"):
        h.query(sort="_m1key asc")
    with pytest.raises(BadRequest, match="one session store"):
        h.query(store="stash,stash")
    with pytest.raises(ApiError):
        h.query(q="page:(")
    assert len(h.query(json='{"limit": 2, "query": "page:\\"/p2\\""}')["items"]) == 2


# -- the flusher -------------------------------------------------------------------------


def test_lapsed_sessions_flush_once_kept_alive_and_deleted_ones_never(h: Harness) -> None:
    h.upsert(heartbeat("alive"), heartbeat("leaves"), heartbeat("deleted"))
    h.delete("deleted")
    for _ in range(40):  # 40 s of heartbeats every second for one of them
        h.advance(1)
        h.upsert(heartbeat("alive"))
        h.tick()
    assert [e["session.id"] for e in h.timeouts()] == ["leaves"]
    assert h.ids() == ["alive"]
    assert h.tick() == 0
    assert len(h.timeouts()) == 1


def test_a_session_flushes_at_the_first_tick_after_its_deadline(h: Harness) -> None:
    h.upsert(heartbeat("s"))
    h.advance(30)
    assert h.tick() == 0  # exactly timeoutSeconds old: not yet older than it
    h.advance(0.01)
    assert h.tick() == 1
    assert h.ids() == []


def test_the_timeout_event_in_the_lake(h: Harness) -> None:
    h.upsert({"session": {"id": "s", "start": int(T0 * 1000) - 5000}, "page": "/a"}, ip=MILTON)
    h.advance(10)
    h.upsert({"session": {"id": "s"}, "event": {"type": "heartbeat", "id": "e9"}, "page": "/b"})
    last_ms = int(h.now * 1000)
    h.advance(31)
    assert h.tick() == 1
    [event] = h.timeouts()
    assert event["type"] == event["event.type"] == "sessionTimeout"
    assert event["session.id"] == "s"
    assert event["session.end"] == last_ms
    assert event["session.durationMs"] == 15_000
    assert event["page"] == "/b" and event["event.id"] == "e9"
    assert event["_m1.ip"] == LONDON and event["_m1.geo.country_iso_code"] == "GB"
    assert event["_m1.session.lastUpdated"] == last_ms
    assert event["_m1.session.created"] == int(T0 * 1000)
    assert event["_m1.receivedUTC"].endswith("Z")  # the lake's ISO stamp: when flushed
    # and /query finds it the guide's way
    keys = h.env.index.term_keys("type", "sessionTimeout")
    assert list(keys) == [event["_m1key"]]


def test_a_flush_batch_is_one_commit_and_removes_the_records(h: Harness) -> None:
    h.update([{"upsert": [heartbeat(n) for n in range(500)]}])
    assert h.stored_records() == 500
    h.advance(31)
    commits = h.env.writer.commits
    assert h.tick() == 500
    assert h.env.writer.commits == commits + 1
    assert h.stored_records() == 0
    assert sorted(e["session.id"] for e in h.timeouts()) == list(range(500))


def test_a_flush_that_cannot_commit_is_retried(h: Harness) -> None:
    h.upsert(heartbeat("s"))
    h.advance(31)
    writer = h.env.writer
    writer.stop()  # refuses submissions now, as when the server is stopping
    assert h.tick() == 0
    assert h.ids() == ["s"]  # put back, still live
    writer.start()
    assert h.tick() == 1
    assert [e["session.id"] for e in h.timeouts()] == ["s"]


def test_a_session_id_back_while_its_flush_was_failing_is_a_new_session(h: Harness) -> None:
    h.upsert(heartbeat("s", old=True))
    h.advance(31)
    store = h.env.sessions.store("stash")
    [lapsed] = store.take_lapsed(int(h.now * 1000) - 30_000, 10)
    h.upsert(heartbeat("s", new=True))  # the visitor is back before the flush committed
    store.restore(lapsed)  # ... and that flush failed
    assert h.ids() == ["s"]
    assert h.query()["items"][0].get("old") is None
    assert h.tick() == 1  # the old incarnation, set aside
    [event] = h.timeouts()
    assert event["old"] is True
    h.advance(31)
    assert h.tick() == 1
    assert [e.get("new") for e in h.timeouts()] == [None, True]


# -- restarts ------------------------------------------------------------------------------


def test_sessions_survive_a_restart_and_lapsed_ones_flush_late(h: Harness) -> None:
    h.upsert(heartbeat("early", page="/x"), ip=MILTON)
    h.advance(20)
    h.upsert(heartbeat("late"))
    h.upsert(heartbeat("gone"))
    h.delete("gone")
    h.reopen()
    assert h.ids() == ["early", "late"]
    [early] = h.query(q='page:"/x"')["items"]
    assert early["_m1"]["geo"]["country_iso_code"] == "US"
    assert early["_m1"]["session"]["lastUpdated"] == int(T0 * 1000)
    h.advance(100)  # the server was down past both deadlines
    assert h.tick() == 2
    assert sorted(e["session.id"] for e in h.timeouts()) == ["early", "late"]
    h.reopen()
    assert h.ids() == [] and h.tick() == 0
    assert len(h.timeouts()) == 2


def test_a_restart_keeps_merging_into_the_stored_document(h: Harness) -> None:
    h.upsert(heartbeat("s", a=1))
    h.reopen()
    h.upsert(heartbeat("s", b=2))
    [item] = h.query()["items"]
    assert item["a"] == 1 and item["b"] == 2
    h.reopen()
    h.advance(31)
    assert h.tick() == 1
    [event] = h.timeouts()
    assert event["a"] == 1 and event["b"] == 2


def test_an_unfinished_flush_and_a_newer_incarnation_both_flush_after_restart(
    h: Harness,
) -> None:
    """The LMDB state a crash can leave: an old incarnation whose flush never committed
    and a newer one with the same id. The old one is flushed at once, the new one lives."""
    h.upsert(heartbeat("s", old=True))
    store = h.env.sessions.store("stash")
    h.advance(31)
    store.take_lapsed(int(h.now * 1000) - 30_000, 10)  # taken; its flush never happens
    h.upsert(heartbeat("s", new=True))
    assert h.stored_records() == 2
    h.reopen()
    assert h.ids() == ["s"]
    assert h.query()["items"][0].get("new") is True
    assert h.tick() == 1
    assert [e.get("old") for e in h.timeouts()] == [True]
    assert h.stored_records() == 1


def test_stores_added_later_work_and_flush_into_their_store(h: Harness) -> None:
    h.env.stores.add_from_template(
        {"environment": {"sessionStores": [{"store": "quick", "timeoutSeconds": 3}]}}
    )
    h.upsert(heartbeat("q"), store="quick")
    h.upsert(heartbeat("s"))
    h.advance(4)
    assert h.tick() == 1
    assert [e["session.id"] for e in h.timeouts()] == ["q"]
    h.reopen()
    h.upsert(heartbeat("q2"), store="quick")
    assert h.query(store="quick", rows=0)["count"] == 1


def test_writer_ops_commit_with_the_events_in_queue_order(h: Harness) -> None:
    writer = h.env.writer
    db = SESSIONS_DB

    async def go() -> None:
        writer.submit([], ops=[(db, b"k", b"1")])
        writer.submit([{"e": 1}], ops=[(db, b"k", None), (db, b"j", b"2")])
        done = writer.submit([], ops=[(db, b"k", b"3")], durable=True)
        assert done is not None
        assert await done == []

    run(go())
    with h.env.lake.read() as txn:
        assert txn.get(b"k", db=h.env.lake.dbs[db]) == b"3"
        assert txn.get(b"j", db=h.env.lake.dbs[db]) == b"2"
    assert [e["e"] for e in h.events()] == [1]


def test_a_property_declared_a_date_later_is_reindexed_as_one(h: Harness) -> None:
    h.upsert({"session": {"id": "s"}, "seen": "2023-11-14T22:00:00Z"})
    recent = "seen:[NOW-1DAY TO *]"  # the clock is 2023-11-14T22:13:20Z
    assert h.query(q=recent, rows=0)["count"] == 0  # a string: no date math on it
    h.env.schema.add([{"name": "seen", "type": "date"}])
    assert h.query(q=recent, rows=0)["count"] == 1
    assert h.query(q="seen:[* TO NOW-1HOUR]", rows=0)["count"] == 0


def test_the_flusher_ticks_on_its_own_until_stopped(h: Harness) -> None:
    h.upsert(heartbeat("s"))
    h.advance(31)
    flusher = h.env.flusher

    async def go() -> None:
        flusher.interval_s = 0.01
        flusher.start()
        for _ in range(1000):
            if flusher.flushed:
                break
            await asyncio.sleep(0.01)
        await flusher.stop()

    run(go())
    assert [e["session.id"] for e in h.timeouts()] == ["s"]


def test_sessions_from_one_place_share_a_geo_entry_freed_with_the_last(h: Harness) -> None:
    geo = h.env.sessions.geo
    h.upsert(heartbeat("a"), heartbeat("b"), ip=LONDON)
    h.upsert(heartbeat("c"), ip=MILTON)
    assert len(geo) == 2
    h.upsert(heartbeat("c"), ip=LONDON)  # the visitor moved: Milton's entry is unused
    assert len(geo) == 1
    h.reopen()
    geo = h.env.sessions.geo
    assert len(geo) == 1
    assert {i["_m1"]["geo"]["city_name"] for i in h.query()["items"]} == {"London"}
    h.delete("a")
    h.advance(31)
    assert h.tick() == 2
    assert len(geo) == 0
    assert {e["_m1.geo.city_name"] for e in h.timeouts()} == {"London"}

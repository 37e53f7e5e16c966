"""m1lite.storage on a real LMDB in tmp_path: what the writer commits is what a reopened
index loads, a full map leaves memory and disk agreeing, and the map grows when allowed.

The expected indexes are computed by brute force from the records in the log, so a
chunk that a commit wrote wrongly (lost keys, stale column values) shows up as a
difference after reopening.
"""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyroaring import BitMap

from m1lite.errors import StorageFull, Unavailable
from m1lite.schema import parse_date_ms
from m1lite.storage import log as event_log
from m1lite.storage.env import MIB, LakeEnv
from m1lite.storage.index import CHUNK_KEYS, Index
from m1lite.storage.replay import replay
from m1lite.storage.writer import Writer

DATE_FIELDS = frozenset({"when", "_m1.receivedUTC"})
TEXT_FIELDS = frozenset({"body"})
RECEIVED = "2024-05-01T12:00:00.123Z"
SHARED = {"_m1.receivedUTC": RECEIVED, "src": "unit"}  # one value for a whole request
HANG_GUARD_S = 60  # only so a broken writer fails the test instead of hanging it


def field_kinds() -> tuple[frozenset[str], frozenset[str]]:
    return DATE_FIELDS, TEXT_FIELDS


def make_record(i: int, *, published: bool = True, pad: str = "") -> dict[str, Any]:
    """Event number i (which should get `_m1key` i): every kind of value the index knows."""
    record: dict[str, Any] = {
        "s": f"v{i % 7}",
        "n": i % 13,
        "f": i + 0.5,  # unique per event
        "b": i % 2 == 0,
        "pub": published,
        "neg": -1.0 - i % 3,
        "tags": ["a", f"t{i % 3}"],
        "when": 1_700_000_000_000 + i,
        "body": f"Hello World{i % 3}",
        **SHARED,
    }
    if i % 4 == 0 and i < 30_000:
        record["opt"] = i % 5  # sparse, and absent from later chunks
    if i >= 50_000:
        record["late"] = "yes"  # a field that starts far past the first chunk
    if pad:
        record["pad"] = pad
    return record


def records(start: int, count: int, **kwargs: Any) -> list[dict[str, Any]]:
    """Events start.. start+count-1; each batch brings a new string value (`batch`), so a
    commit that fails must also take its new dictionary entries back."""
    batch = [make_record(i, **kwargs) for i in range(start, start + count)]
    for record in batch:
        record["batch"] = f"b{start}"
    return batch


Term = tuple[str, type, Any]  # (field, type, value): True and 1 must not collide


class Expected:
    """The indexes computed by brute force from the records in the log."""

    def __init__(self, lake: LakeEnv) -> None:
        self.terms: dict[Term, BitMap] = {}
        number_values: dict[str, dict[int, float]] = {}
        self.published = BitMap()
        self.archived = BitMap()
        count = 0
        for key, _published, record in event_log.scan(lake):
            assert key == count, "keys in the log are contiguous from 0"
            assert record["_m1key"] == key
            assert record["f"] == key + 0.5, "each record sits at the key it was written for"
            count += 1
            if not record["pub"]:
                self.archived.add(key)
                continue
            self.published.add(key)
            for name, value in record.items():
                if name == "_m1key":
                    continue
                if name in DATE_FIELDS:
                    ms = parse_date_ms(value)
                    assert ms is not None
                    number_values.setdefault(name, {})[key] = float(ms)
                elif name in TEXT_FIELDS:
                    for word in re.findall(r"\w+", value.lower()):
                        self._term(name, word, key)
                elif isinstance(value, str | bool):
                    self._term(name, value, key)
                elif isinstance(value, int | float):
                    number_values.setdefault(name, {})[key] = float(value)
                else:
                    for item in value:  # lists of strings only, in these records
                        self._term(name, item, key)
        self.count = count
        self.numbers = {}
        for name, by_key in number_values.items():
            column = np.full(count, np.nan)
            column[list(by_key)] = list(by_key.values())
            self.numbers[name] = column

    def _term(self, name: str, value: Any, key: int) -> None:
        self.terms.setdefault((name, type(value), value), BitMap()).add(key)

    def assert_matches(self, index: Index) -> None:
        """What a query can see through the index is what the log holds."""
        count = self.count
        assert index.visible_upto == count
        assert index.published() == self.published
        assert index.archived == self.archived
        for (name, _, value), keys in self.terms.items():
            assert index.term_keys(name, value) == keys, (name, value)
        values_by_field: dict[str, set[Term]] = {}
        for name, kind, value in self.terms:
            values_by_field.setdefault(name, set()).add((name, kind, value))
        for name, field_index in index.fields.items():
            held = {(name, type(v), v) for v in field_index.values}
            assert held == values_by_field.get(name, set()), f"stray values in {name}"
        for name, column in index.numbers.items():
            # a column may end before the last key (absent past its end = NaN)
            actual = np.full(count, np.nan)
            actual[: min(count, len(column))] = column[:count]
            expected = self.numbers.get(name, np.full(count, np.nan))
            np.testing.assert_array_equal(actual, expected, err_msg=name)
            assert np.isnan(column[count:]).all(), name
        assert set(self.numbers) <= set(index.numbers)
        assert not any(index.number_extras.values()), "no multi-valued numbers written"


def loaded_index(lake: LakeEnv, *, replayed: int | None = None) -> Index:
    """The index as a server opens it: the checkpointed records, then the log's tail.
    `replayed`, when given, is how many events the tail must hold."""
    index = Index()
    with lake.read() as txn:
        watermark = index.load(txn, lake.dbs["index"])
    tail = replay(
        lake, index, start=watermark, field_kinds=(DATE_FIELDS, TEXT_FIELDS), date_ms=parse_date_ms
    )
    if replayed is not None:
        assert tail == replayed
    return index


def open_writer(lake: LakeEnv, index: Index, *, group_commit_s: float = 0.0) -> Writer:
    writer = Writer(
        lake,
        index,
        next_key=event_log.next_key(lake),
        field_kinds=field_kinds,
        date_ms=parse_date_ms,
        group_commit_s=group_commit_s,
    )
    writer.start()
    return writer


async def write_durable(writer: Writer, batch: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    future = writer.submit(batch, durable=True, **kwargs)
    assert future is not None
    return await asyncio.wait_for(future, HANG_GUARD_S)


# -- persistence across reopening -------------------------------------------------------


async def _write_mixed_commit(writer: Writer, start: int) -> int:
    """Async submissions (published and not) plus one durable one, all in one commit:
    the writer lingers on async events (long group commit) until the durable arrives."""
    commits = writer.commits
    writer.submit(records(start, 3000), shared=SHARED)
    writer.submit(records(start + 3000, 500, published=False), published=False)
    writer.submit(records(start + 3500, 3000))
    keys = await write_durable(writer, records(start + 6500, 1000), shared=SHARED)
    assert keys == list(range(start + 6500, start + 7500))
    assert writer.commits == commits + 1, "the four submissions shared one commit"
    return start + 7500


async def _write_everything(writer: Writer) -> int:
    position = await _write_mixed_commit(writer, 0)
    for _ in range(3):  # 20,000-event commits: one of them straddles a chunk boundary
        keys = await write_durable(writer, records(position, 20_000))
        assert keys == list(range(position, position + 20_000))
        position += 20_000
    return await _write_mixed_commit(writer, position)


def test_index_reloaded_after_reopen_equals_brute_force(tmp_path: Path) -> None:
    lake = LakeEnv(tmp_path / "lake", map_size_mb=256, max_map_size_mb=1024)
    index = Index()
    writer = open_writer(lake, index, group_commit_s=HANG_GUARD_S)
    total = asyncio.run(_write_everything(writer))
    writer.stop()
    assert total > CHUNK_KEYS
    assert writer.next_key == total
    lake.close()

    lake = LakeEnv(tmp_path / "lake", map_size_mb=256, max_map_size_mb=1024)
    try:
        expected = Expected(lake)
        assert expected.count == total
        assert len(expected.published) == total - 1000 and len(expected.archived) == 1000
        expected.assert_matches(loaded_index(lake, replayed=0))
        # what the writer built in memory is what it persisted
        expected.assert_matches(index)
    finally:
        lake.close()


def test_a_crash_between_checkpoints_loses_nothing_from_the_index(tmp_path: Path) -> None:
    """Events committed after the last index checkpoint are in the log only; opening the
    store replays exactly those, and the index equals the brute force again."""
    lake = LakeEnv(tmp_path / "lake", map_size_mb=16, max_map_size_mb=64)
    writer = open_writer(lake, Index())
    try:

        async def write_all() -> None:
            for start in range(0, 1000, 100):
                await write_durable(writer, records(start, 100))

        asyncio.run(write_all())
        # The writer has not stopped (no shutdown checkpoint): as after a kill -9.
        Expected(lake).assert_matches(loaded_index(lake, replayed=1000))
    finally:
        writer.stop()
    assert loaded_index(lake, replayed=0).visible_upto == 1000  # stop checkpointed all
    lake.close()


def test_stop_commits_everything_queued(tmp_path: Path) -> None:
    lake = LakeEnv(tmp_path / "lake", map_size_mb=16, max_map_size_mb=16)
    try:
        writer = open_writer(lake, Index(), group_commit_s=HANG_GUARD_S)
        for start in range(0, 500, 100):
            assert writer.submit(records(start, 100)) is None
        assert event_log.next_key(lake) == 0, "still lingering in memory"
        writer.stop()
        assert event_log.next_key(lake) == 500
        with pytest.raises(Unavailable):
            writer.submit(records(500, 1))
        expected = Expected(lake)
        assert expected.count == 500
        expected.assert_matches(loaded_index(lake, replayed=0))
    finally:
        lake.close()


def test_keys_continue_after_reopen(tmp_path: Path) -> None:
    for round_ in range(3):
        lake = LakeEnv(tmp_path / "lake", map_size_mb=16, max_map_size_mb=16)
        try:
            index = loaded_index(lake)
            writer = open_writer(lake, index)
            keys = asyncio.run(write_durable(writer, records(round_ * 10, 10)))
            writer.stop()
            assert keys == list(range(round_ * 10, round_ * 10 + 10))
        finally:
            lake.close()


# -- a full map ---------------------------------------------------------------------------


async def _fill(writer: Writer, pad: str) -> list[int]:
    """Durable writes until one is refused as full; every key acknowledged before."""
    acked: list[int] = []
    for _ in range(10_000):
        try:
            acked += await write_durable(writer, records(len(acked), 40, pad=pad))
        except StorageFull:
            return acked
    raise AssertionError("the map never filled up")


async def _submit_both(writer: Writer) -> None:
    # async: refused at once (a 204 would promise what cannot be kept) ...
    with pytest.raises(StorageFull):
        writer.submit(records(0, 1))
    # ... async=false: tried, and answered 507 when the commit still does not fit (the
    # same size as the write that just failed).
    future = writer.submit(records(writer.next_key, 40, pad="x" * 600), durable=True)
    assert future is not None
    with pytest.raises(StorageFull):
        await future


def test_map_full_leaves_memory_and_disk_agreeing(tmp_path: Path) -> None:
    lake = LakeEnv(tmp_path / "lake", map_size_mb=1, max_map_size_mb=1)
    index = Index()
    writer = open_writer(lake, index)
    try:
        acked = asyncio.run(_fill(writer, pad="x" * 600))
        assert acked == list(range(len(acked))) and acked
        assert writer.storage_full
        assert lake.map_size == MIB, "no growth past the cap"
        asyncio.run(_submit_both(writer))  # both 507, nothing queued
        assert writer.next_key == event_log.next_key(lake) == len(acked)
        expected = Expected(lake)
        assert expected.count == len(acked)
        expected.assert_matches(index)  # memory holds only what committed
        expected.assert_matches(loaded_index(lake))
    finally:
        writer.stop()
        lake.close()

    # reopened with room to grow: everything is there and writing works again
    lake = LakeEnv(tmp_path / "lake", map_size_mb=1, max_map_size_mb=64)
    try:
        index = loaded_index(lake)
        writer = open_writer(lake, index)
        keys = asyncio.run(write_durable(writer, records(len(acked), 40, pad="x" * 600)))
        writer.stop()
        assert keys == list(range(len(acked), len(acked) + 40))
        Expected(lake).assert_matches(loaded_index(lake))
    finally:
        lake.close()


def test_writer_grows_the_map_while_readers_read(tmp_path: Path) -> None:
    lake = LakeEnv(tmp_path / "lake", map_size_mb=1, max_map_size_mb=64)
    index = Index()
    writer = open_writer(lake, index)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                upto = index.visible_upto
                found = event_log.get_records(lake, range(max(0, upto - 50), upto))
                assert len(found) == min(upto, 50)
                reads[0] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()

    async def write_a_lot() -> list[int]:
        acked: list[int] = []
        while lake.map_size < 8 * MIB:
            acked += await write_durable(writer, records(len(acked), 100, pad="y" * 1000))
        return acked

    try:
        acked = asyncio.run(write_a_lot())
    finally:
        stop.set()
        for thread in readers:
            thread.join()
        writer.stop()
    try:
        assert not errors, errors
        assert reads[0] > 0
        assert lake.map_size >= 8 * MIB and not writer.storage_full
        expected = Expected(lake)
        assert expected.count == len(acked)
        expected.assert_matches(index)
        expected.assert_matches(loaded_index(lake))
    finally:
        lake.close()


def test_waiting_growth_goes_before_new_readers(tmp_path: Path) -> None:
    """Readers that keep overlapping must not starve map growth (and so every write)."""
    lake = LakeEnv(tmp_path / "lake", map_size_mb=1, max_map_size_mb=4)
    seen_by_late_reader: list[int] = []

    def late_reader() -> None:
        with lake.read():
            seen_by_late_reader.append(lake.map_size)

    try:
        with lake.read():
            grower = threading.Thread(target=lake.grow, args=(lake.map_size,))
            grower.start()
            while not lake._resize._exclusive_waiting:  # the grower is queued behind us
                threading.Event().wait(0.001)
            reader = threading.Thread(target=late_reader)
            reader.start()
            reader.join(0.2)
            assert reader.is_alive(), "a new reader got in ahead of the waiting growth"
        grower.join()
        reader.join()
        assert seen_by_late_reader == [2 * MIB]
    finally:
        lake.close()


def test_a_closed_event_loop_does_not_kill_the_writer(tmp_path: Path) -> None:
    """A durable waiter whose loop closed before the commit (a request gone at shutdown)."""
    lake = LakeEnv(tmp_path / "lake", map_size_mb=16, max_map_size_mb=16)
    writer = open_writer(lake, Index())
    try:
        orphan_loop = asyncio.new_event_loop()

        async def submit_only() -> None:
            writer.submit(records(0, 5), durable=True)

        with lake.write():  # holds LMDB's write lock, so the commit waits for us
            orphan_loop.run_until_complete(submit_only())
            orphan_loop.close()
        keys = asyncio.run(write_durable(writer, records(5, 5)))
        assert keys == list(range(5, 10))
    finally:
        writer.stop()
        lake.close()


def test_a_field_name_too_long_to_index_fails_no_commit(tmp_path: Path) -> None:
    """One event's unindexable field must not fail the group commit it shares with other
    clients' acknowledged events: it stays in the log and is left out of the index."""
    long = "n" * 600
    odd = {
        long: 1,
        long + "d": 1_700_000_000_000,  # a date, by name below
        long + "s": "x",
        long + "b": True,
        long + "l": [1, 2, "three"],
        "nul\x00name": 2.5,
        "fine": "kept",
    }
    lake = LakeEnv(tmp_path / "lake", map_size_mb=16, max_map_size_mb=16)
    index = Index()
    writer = Writer(
        lake,
        index,
        next_key=0,
        field_kinds=lambda: (frozenset({long + "d"}), frozenset()),
        date_ms=parse_date_ms,
        group_commit_s=HANG_GUARD_S,  # the async event waits for the durable one
    )
    writer.start()
    try:
        assert writer.submit([{"other": "client"}]) is None
        keys = asyncio.run(write_durable(writer, [dict(odd)], shared={long + "x": 3}))
        assert keys == [1] and writer.commits == 1
    finally:
        writer.stop()
    try:
        assert [r["_m1key"] for r in event_log.get_records(lake, [0, 1])] == [0, 1]
        stored = event_log.get_records(lake, [1])[0]
        assert {name: stored[name] for name in odd} == odd
        for seen in (index, loaded_index(lake)):
            assert seen.term_keys("other", "client") == BitMap([0])
            assert seen.term_keys("fine", "kept") == BitMap([1])
            names = set(seen.fields) | set(seen.numbers) | set(seen.number_extras)
            assert names == {"other", "fine"}
    finally:
        lake.close()


def test_a_request_that_fails_its_commit_takes_no_other_request_with_it(tmp_path: Path) -> None:
    """Defence in depth: whatever slips past validation and fails a group commit, the
    other requests of that commit (acknowledged async events among them) are stored."""
    lake = LakeEnv(tmp_path / "lake", map_size_mb=16, max_map_size_mb=16)
    writer = open_writer(lake, Index(), group_commit_s=HANG_GUARD_S)
    try:
        assert writer.submit(records(0, 3)) is None
        with pytest.raises(TypeError):  # what cannot be encoded is refused at once
            writer.submit([{"unencodable": object()}])
        with pytest.raises(Unavailable):  # a broken encoding fails in the commit
            asyncio.run(write_durable(writer, [{"x": 1}], encoded=[b"\x01"]))
        keys = asyncio.run(write_durable(writer, records(3, 2)))
        assert keys == [3, 4]
    finally:
        writer.stop()
    try:
        expected = Expected(lake)
        assert expected.count == 5
        expected.assert_matches(loaded_index(lake))
    finally:
        lake.close()

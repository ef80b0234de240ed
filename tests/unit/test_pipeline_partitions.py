"""The consume loop's partition bookkeeping without servers: rebalances, DDL barriers, failures
that escape a job, lag, and pausing a partition whose head is stuck.

A fake consumer stands in for aiokafka (pause/resume/commit/highwater only); the rebalance
behaviour against the real broker is in tests/integration/test_group.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from esupdater.backoff import Backoff
from esupdater.canal.build import flat_message
from esupdater.change import Change
from esupdater.consume_loop import ConsumeLoop
from esupdater.decoding import make_decoder
from esupdater.dispatch import KeyedDispatcher
from esupdater.feeding import Feeder
from esupdater.offsets import OffsetTracker
from esupdater.pauses import PartitionPauses
from esupdater.routing import Registry, Route
from esupdater.settings import SourceSettings
from esupdater.stats import Stats

TP = TopicPartition("binlog", 0)
TYPES = {"id": "int", "v": "int"}


class FakeConsumer:
    """What Pipeline asks of aiokafka outside the fetch loop."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused: set[TopicPartition] = set()
        self.highwaters: dict[TopicPartition, int] = {}
        self.group_committed: dict[TopicPartition, int] = {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.group_committed.get(tp)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)


class RecordingRunner:
    """Runs nothing; records each call and, for chosen ids, waits on a gate or raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str]] = []  # (partition, offset, pk)
        self.gates: dict[str, asyncio.Event] = {}
        self.raises: dict[str, BaseException] = {}
        self.log: list[str] = []

    async def run(self, change: Change, routes: tuple[Route, ...], value: bytes | None) -> None:
        self.calls.append((change.partition, change.offset, change.pk))
        self.log.append(f"start {change.type} {change.pk}")
        gate = self.gates.get(change.pk)
        if gate is not None:
            await gate.wait()
        failure = self.raises.get(change.pk)
        if failure is not None:
            raise failure
        self.log.append(f"end {change.type} {change.pk}")


def _registry() -> Registry:
    registry = Registry()

    async def handler(change: Change, ctx: Any) -> None:  # never called: the runner is fake
        raise AssertionError

    registry.add("shop.users", handler, types={"INSERT", "UPDATE", "DELETE", "DDL"})
    return registry


def _pipeline(
    consumer: FakeConsumer, runner: RecordingRunner, *, max_workers: int,
    commit_interval: float = 3600,
) -> ConsumeLoop:
    """The consume loop over a fake consumer; the feeder and pauses as the service builds them."""
    stats = Stats()
    pauses = PartitionPauses(consumer)
    feeder = Feeder(
        make_decoder(SourceSettings()), _registry(), runner,  # type: ignore[arg-type]
        None, stats,  # type: ignore[arg-type]
        dispatcher=KeyedDispatcher(max_workers), offsets=OffsetTracker(),
        backoff=Backoff.from_ms(1, 5), gate=pauses,
    )
    return ConsumeLoop(consumer, ["binlog"], feeder, pauses, stats,  # type: ignore[arg-type]
                       commit_interval=commit_interval, drain_timeout=1.0)


def record(offset: int, ids: Sequence[int], type: str = "INSERT") -> Any:
    value = flat_message("shop", "users", type, [{"id": str(i), "v": "0"} for i in ids],
                         mysql_types=TYPES)
    return SimpleNamespace(offset=offset, value=value)


def ddl(offset: int, sql: str = "TRUNCATE TABLE users", type: str = "TRUNCATE") -> Any:
    value = flat_message("shop", "users", type, [], mysql_types={}, is_ddl=True, sql=sql)
    return SimpleNamespace(offset=offset, value=value)


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- rebalance -------------------------------------------------------------------------------


async def test_no_row_of_a_revoked_partition_starts_after_the_revocation_returns() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=1)
    await pipeline.on_assigned({TP})
    runner.gates["1"] = gate = asyncio.Event()
    # Record 0 has 3 rows; the pool holds one, so feeding waits for a slot after row 1.
    feeding = asyncio.create_task(pipeline.feed_batch({TP: [record(0, [1, 2, 3])]}))
    await settle()
    assert runner.calls == [(0, 0, "1")]
    revoking = asyncio.create_task(pipeline.on_revoked({TP}))
    await settle()
    gate.set()  # row 1 ends: its slot must not go to row 2 of a revoked partition
    await revoking
    await settle(50)
    assert runner.calls == [(0, 0, "1")]
    await asyncio.wait_for(feeding, 1.0)
    assert all(TP not in commit for commit in consumer.commits), consumer.commits


async def test_a_stale_batch_is_dropped_when_its_partition_comes_back_to_the_same_member() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=1)
    await pipeline.on_assigned({TP})
    runner.gates["1"] = gate = asyncio.Event()
    stale_batch = {TP: [record(0, [1, 2]), record(1, [3]), record(2, [4])]}
    feeding = asyncio.create_task(pipeline.feed_batch(stale_batch))
    await settle()
    revoking = asyncio.create_task(pipeline.on_revoked({TP}))
    await settle()
    gate.set()
    await revoking
    await pipeline.on_assigned({TP})  # an eager rebalance gives it straight back
    await asyncio.wait_for(feeding, 1.0)
    await settle(50)
    assert runner.calls == [(0, 0, "1")]  # nothing of the stale batch after the revocation
    # The new assignment fetches again from the committed offset: no "tracked after" error.
    await pipeline.feed_batch({TP: [record(0, [1, 2]), record(1, [3]), record(2, [4])]})
    assert await pipeline.dispatcher.drain(timeout=1.0)
    await pipeline.commit()
    assert consumer.commits[-1] == {TP: 3}


async def test_a_record_offered_twice_is_not_tracked_twice() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=4)
    await pipeline.on_assigned({TP})
    await pipeline.feed_batch({TP: [record(0, [1]), record(1, [2])]})
    await pipeline.feed_batch({TP: [record(1, [2]), record(2, [3])]})  # 1 again: dropped
    assert await pipeline.dispatcher.drain(timeout=1.0)
    assert [offset for _, offset, _ in runner.calls] == [0, 1, 2]


# -- DDL is a barrier within its table -------------------------------------------------------


async def test_a_ddl_runs_after_every_earlier_row_of_its_table_and_before_every_later_one() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=8)
    await pipeline.on_assigned({TP})
    runner.gates["1"] = gate = asyncio.Event()
    await pipeline.feed_batch({TP: [record(0, [1]), ddl(1), record(2, [2])]})
    await settle(50)
    assert runner.log == ["start INSERT 1"]  # TRUNCATE waits for row 1; row 2 for TRUNCATE
    gate.set()
    assert await pipeline.dispatcher.drain(timeout=1.0)
    assert runner.log == ["start INSERT 1", "end INSERT 1", "start TRUNCATE ",
                          "end TRUNCATE ", "start INSERT 2", "end INSERT 2"]


# -- every job outcome is observed -----------------------------------------------------------


async def test_a_failure_escaping_a_job_is_logged_and_retried_not_swallowed(caplog: Any) -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=4)
    await pipeline.on_assigned({TP})
    runner.raises["1"] = AssertionError("set-aside broke")
    await pipeline.feed_batch({TP: [record(0, [1])]})
    await settle(50)
    assert not await pipeline.dispatcher.drain(timeout=0.05)  # still retrying
    assert len(runner.calls) >= 2, runner.calls
    assert "set-aside broke" in caplog.text
    assert "binlog/0@0" in caplog.text
    assert pipeline.stats.job_errors >= 1
    del runner.raises["1"]
    assert await pipeline.dispatcher.drain(timeout=1.0)
    await pipeline.commit()
    assert consumer.commits[-1] == {TP: 1}


async def test_a_crash_of_the_commit_loop_ends_the_run_instead_of_freezing_commits() -> None:
    class BrokenConsumer(FakeConsumer):
        def subscribe(self, topics: list[str], listener: Any) -> None:
            pass

        async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Any]]:
            await asyncio.sleep(timeout_ms / 1000)
            return {}

    consumer, runner = BrokenConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=1)
    pipeline.commit_interval = 0.01

    calls = 0

    def broken() -> dict[TopicPartition, int]:  # once: the stop's own commit works
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("tracker bug")
        return {}

    pipeline.offsets.commit_map = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="tracker bug"):  # not a 5 s timeout
        await asyncio.wait_for(pipeline.run(asyncio.Event()), 5.0)


# -- lag and bounded memory ------------------------------------------------------------------


async def test_lag_counts_a_partition_stuck_on_its_first_record() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=4)
    await pipeline.on_assigned({TP})
    consumer.highwaters[TP] = 10
    runner.gates["1"] = asyncio.Event()  # the first record never finishes
    await pipeline.feed_batch({TP: [record(5, [1])]})
    await settle()
    assert pipeline.lag() == {"binlog/0": 5}


async def test_lag_starts_from_the_groups_committed_offset_before_anything_is_fetched() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    consumer.group_committed[TP] = 7
    consumer.highwaters[TP] = 10
    pipeline = _pipeline(consumer, runner, max_workers=4)
    await pipeline.on_assigned({TP})
    await settle(20)
    assert pipeline.lag() == {"binlog/0": 3}


async def test_a_partition_whose_head_is_stuck_is_paused_and_resumed_once_it_moves() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=4)
    pipeline.pauses.max_held_back = 50
    await pipeline.on_assigned({TP})
    runner.gates["1"] = gate = asyncio.Event()
    # Records routed nowhere take no slot: only the tracker holds them back behind the head.
    unrouted = [SimpleNamespace(offset=o, value=flat_message(
        "shop", "other", "INSERT", [{"id": "1"}], mysql_types={"id": "int"}))
        for o in range(1, 60)]
    await pipeline.feed_batch({TP: [record(0, [1]), *unrouted]})
    assert TP in consumer.paused
    gate.set()
    assert await pipeline.dispatcher.drain(timeout=1.0)
    await pipeline.commit()
    assert TP not in consumer.paused
    assert consumer.commits[-1] == {TP: 60}


# -- committing once caught up ---------------------------------------------------------------


async def _commits_over(
    pipeline: ConsumeLoop, consumer: FakeConsumer, seconds: float,
) -> list[tuple[float, dict[TopicPartition, int]]]:
    """The commit loop run for `seconds`: each commit with its time from the start."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    timed: list[tuple[float, dict[TopicPartition, int]]] = []
    committed = consumer.commit

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        timed.append((loop.time() - started, dict(offsets)))
        await committed(offsets)

    consumer.commit = commit  # type: ignore[method-assign]
    committing = asyncio.create_task(pipeline._commit_loop())
    await asyncio.sleep(seconds)
    committing.cancel()
    return timed


async def test_once_every_fetched_row_is_done_the_commit_comes_before_the_interval() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=4, commit_interval=2.0)
    await pipeline.on_assigned({TP})
    await pipeline.feed_batch({TP: [record(0, [1]), record(1, [2])]})
    assert await pipeline.dispatcher.drain(timeout=1.0)
    timed = await _commits_over(pipeline, consumer, 1.2)
    # One commit, a quarter of the interval in (the earliest once caught up), none after:
    # nothing more was done.
    assert [offsets for _, offsets in timed] == [{TP: 2}]
    assert 0.5 <= timed[0][0] < 1.0, timed


async def test_while_rows_are_in_flight_the_commit_waits_for_the_interval() -> None:
    consumer, runner = FakeConsumer(), RecordingRunner()
    pipeline = _pipeline(consumer, runner, max_workers=4, commit_interval=1.0)
    await pipeline.on_assigned({TP})
    runner.gates["2"] = gate = asyncio.Event()
    await pipeline.feed_batch({TP: [record(0, [1]), record(1, [2])]})
    await settle(20)  # row 1 done, row 2 held: offset 1 committable, a row in flight
    timed = await _commits_over(pipeline, consumer, 1.3)
    assert [offsets for _, offsets in timed] == [{TP: 1}]
    assert timed[0][0] >= 0.95, timed  # the whole interval: not caught up
    gate.set()
    assert await pipeline.dispatcher.drain(timeout=1.0)


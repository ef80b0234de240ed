"""The mapped-row fast path: a Feeder with a real BulkWriter (`writer=`) over a fake client.

Rows whose one route is a `@maps` mapper go straight into the writer with no task per row;
anything that fails goes on through the handler path. Built as `esupdater run` builds it
(tools/profile_feed.py), with tests/unit/fake_elasticsearch.py scripting the failures.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import TopicPartition
from elasticsearch import ApiError
from elasticsearch import ConnectionError as EsConnectionError

from esupdater import actions
from esupdater.actions import Action
from esupdater.backoff import Backoff
from esupdater.bulk import BulkLimits, BulkWriter
from esupdater.canal.build import flat_message
from esupdater.change import Change, Position
from esupdater.context import Context
from esupdater.deadletter import Failure, SetAside
from esupdater.decoding import make_decoder
from esupdater.dispatch import KeyedDispatcher
from esupdater.feeding import Feeder
from esupdater.handling import HandlerRunner
from esupdater.mapped_batch import MappedBatch
from esupdater.mapping import Mapper
from esupdater.offsets import OffsetTracker
from esupdater.routing import Registry
from esupdater.settings import SourceSettings
from esupdater.stats import Stats
from tests.unit.fake_elasticsearch import FakeElasticsearch, ItemScript, api_error

TP = TopicPartition("binlog", 0)
TYPES = {"id": "int", "v": "int"}
#: Retries of a millisecond or so.
QUICK = Backoff(0.001, 0.005)
MAX_ATTEMPTS = 3
#: No test here should take more than a moment; past this something waits forever.
DEADLINE = 4.0


class Recorded(SetAside):
    """Skip mode that keeps what it set aside."""

    def __init__(self, stats: Stats) -> None:
        super().__init__(stats)
        self.failures: list[Failure] = []

    async def put(self, value: bytes | None, failure: Failure) -> None:
        self.failures.append(failure)
        await super().put(value, failure)


class Gate:
    def __init__(self) -> None:
        self.holds: list[Position] = []

    def hold(self, position: Position) -> None:
        self.holds.append(position)

    def release(self, position: Position) -> None:
        pass


class HeldElasticsearch(FakeElasticsearch):
    """Takes each bulk request at once (`sent`), answers it only once `open` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.open = asyncio.Event()
        self.sent: list[bytes] = []

    async def bulk(self, *, operations: bytes | list[bytes], **kwargs: Any) -> SimpleNamespace:
        assert isinstance(operations, bytes)
        self.sent.append(operations)
        await self.open.wait()
        return await super().bulk(operations=operations, **kwargs)


class RecordingSensor:
    """A telemetry sensor keeping each route's outcome per row."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, int, str]] = []  # (pk, offset, outcome)

    def handler_done(self, route: Any, change: Change, seconds: float, outcome: str) -> None:
        assert seconds >= 0
        self.outcomes.append((change.pk, change.position.offset, outcome))

    def rows_done(self, done: Sequence[tuple[Any, Change]], seconds: float) -> None:
        for route, change in done:
            self.handler_done(route, change, seconds, "done")

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        pass


@dataclass
class Service:
    """The parts `esupdater run` wires together, over a fake client."""

    es: FakeElasticsearch
    writer: BulkWriter
    feeder: Feeder
    stats: Stats
    set_aside: Recorded
    handler_rows: list[Change]  # rows that went through Feeder._row (the handler path)
    sensor: RecordingSensor

    @property
    def dispatcher(self) -> KeyedDispatcher:
        return self.feeder.dispatcher

    def committable(self) -> int | None:
        return self.feeder.offsets.partition(TP).committable()

    async def feed(self, *records: Any) -> None:
        assert await self.feeder.feed_records(TP, records, lambda: True)

    async def settled(self) -> None:
        """Until every row is done, and the writer's bookkeeping with it."""
        assert await self.dispatcher.drain(timeout=DEADLINE)
        await settle()

    def written(self, doc_id: str, index: str = "users") -> list[Any]:
        """What each request sent for one document, in order: the bodies (None: delete)."""
        return [body for call in self.es.calls for (_, i, d, body) in call.actions
                if (i, d) == (index, doc_id)]


@asynccontextmanager
async def service(
    registry: Registry,
    es: FakeElasticsearch | None = None,
    *,
    max_rows: int = 16,
    writer_backoff: Backoff = QUICK,
) -> AsyncIterator[Service]:
    es = FakeElasticsearch() if es is None else es
    stats = Stats()
    sensor = RecordingSensor()
    stats.sensor = sensor
    writer = BulkWriter(cast(Any, es), BulkLimits(max_in_flight=1), writer_backoff, stats=stats)
    await writer.start()
    set_aside = Recorded(stats)
    gate = Gate()
    runner = HandlerRunner(writer, None, stats, set_aside, max_attempts=MAX_ATTEMPTS,
                           backoff=QUICK, gate=gate)
    feeder = Feeder(make_decoder(SourceSettings()), registry, runner, set_aside, stats,
                    dispatcher=KeyedDispatcher(max_rows), offsets=OffsetTracker(),
                    backoff=QUICK, gate=gate, writer=writer)
    handler_rows: list[Change] = []
    handler_path = feeder._row

    async def spied(partition: Any, change: Change, *args: Any) -> None:
        handler_rows.append(change)
        await handler_path(partition, change, *args)

    feeder._row = spied  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(DEADLINE):
            yield Service(es, writer, feeder, stats, set_aside, handler_rows, sensor)
    finally:
        feeder.dispatcher.cancel_all()
        await feeder.dispatcher.drain(timeout=1)
        if isinstance(es, HeldElasticsearch):
            es.open.set()
        await writer.close()


def record(offset: int, rows: Sequence[tuple[int, int]], type: str = "INSERT",
           old: Sequence[dict[str, str]] | None = None) -> SimpleNamespace:
    """One Canal record of shop.users rows, each (id, v)."""
    value = flat_message("shop", "users", type,
                         [{"id": str(i), "v": str(v)} for i, v in rows], mysql_types=TYPES,
                         old=old)
    return SimpleNamespace(offset=offset, value=value, timestamp=-1)


def ddl(offset: int) -> SimpleNamespace:
    value = flat_message("shop", "users", "ALTER", [], mysql_types={}, is_ddl=True,
                         sql="ALTER TABLE users ADD COLUMN x INT")
    return SimpleNamespace(offset=offset, value=value, timestamp=-1)


async def settle(rounds: int = 10) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def user_document(change: Change) -> Action:
    if change.is_delete:
        return actions.delete(index="users", id=change.pk)
    return actions.index(index="users", id=change.pk, doc=change.row)


def counted(mapper: Mapper) -> tuple[Mapper, list[Change]]:
    """`mapper`, recording each change it is called with."""
    calls: list[Change] = []

    def recording(change: Change) -> Any:
        calls.append(change)
        return mapper(change)

    return recording, calls


def mapped(mapper: Mapper = user_document) -> Registry:
    registry = Registry()
    registry.add_mapper("shop.users", mapper)
    return registry


def failing(script: Callable[[int, str], tuple[int, str] | None]) -> ItemScript:
    """An item script of (call number, document id) only."""
    return lambda n, place, op, index, doc_id: script(n, doc_id)


async def wait_until(condition: Callable[[], bool], turns: int = 10_000) -> None:
    """Until `condition` holds, checked once per turn of the loop."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


# -- going through ------------------------------------------------------------------------------


async def test_mapped_rows_are_written_and_their_offsets_done_without_the_handler_path() -> None:
    mapper, calls = counted(user_document)
    async with service(mapped(mapper)) as svc:
        await svc.feed(record(0, [(1, 10), (2, 20)]), record(1, [(3, 30)]),
                       record(2, [(2, 20)], type="DELETE"))
        await svc.settled()
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 10},
                               ("users", "3"): {"id": 3, "v": 30}}
        assert len(calls) == 4
        assert svc.stats.rows_done == 4
        assert svc.committable() == 3  # every record done: Kafka's next offset
        assert svc.handler_rows == []  # no task, no handler run
        assert svc.dispatcher.in_flight == 0
        assert svc.dispatcher.keys_in_flight == 0
        assert svc.writer._order == {}


async def test_the_commit_point_waits_for_a_mapped_rows_acknowledgement() -> None:
    es = HeldElasticsearch()
    async with service(mapped(), es) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 2)]))
        await wait_until(lambda: len(es.sent) == 1)
        await settle()
        assert svc.committable() is None  # written, not acknowledged
        assert svc.stats.rows_done == 0
        assert svc.dispatcher.in_flight == 2
        es.open.set()
        await svc.settled()
        assert svc.committable() == 2
        assert svc.stats.rows_done == 2


async def test_a_mapper_returning_none_is_done_with_nothing_written() -> None:
    async with service(mapped(lambda change: None)) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        assert svc.es.calls == []
        assert svc.stats.rows_done == 2
        assert svc.committable() == 1
        assert svc.dispatcher.in_flight == 0


async def test_a_mapper_returning_two_actions_is_done_once_both_are_acknowledged() -> None:
    def both(change: Change) -> list[Action]:
        return [actions.index(index="users", id=change.pk, doc=change.row),
                actions.upsert(index="by_v", id=str(change.row["v"]), doc={"id": change.pk})]

    async with service(mapped(both)) as svc:
        await svc.feed(record(0, [(1, 7)]))
        await svc.settled()
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 7}, ("by_v", "7"): {"id": "1"}}
        assert svc.stats.rows_done == 1
        assert svc.stats.writes_applied == 2
        assert svc.committable() == 1
        assert svc.handler_rows == []
        assert svc.writer._order == {}


async def test_changes_of_one_key_in_one_batch_are_written_in_order() -> None:
    async with service(mapped()) as svc:
        await svc.feed(record(0, [(1, 1), (2, 1), (1, 2)]), record(1, [(1, 3), (1, 4)]),
                       record(2, [(1, 5)], type="UPDATE"))
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 2, 3, 4, 5]
        # Each began once the one before it was acknowledged: never two in one request.
        for call in svc.es.calls:
            assert sum(1 for (_, _, d, _) in call.actions if d == "1") <= 1
        assert svc.es.docs[("users", "1")] == {"id": 1, "v": 5}
        assert svc.stats.rows_done == 6
        assert svc.committable() == 3


async def test_a_key_changed_by_a_handler_row_then_by_a_mapped_row_keeps_its_order() -> None:
    """A row with a new primary key goes the handler path (a task); the mapped row after it
    for the same key begins only once it is done."""
    async with service(mapped()) as svc:
        await svc.feed(record(0, [(2, 1)], type="UPDATE", old=[{"id": "1"}]),
                       record(1, [(2, 2)], type="UPDATE"))
        await svc.settled()
        assert [change.pk for change in svc.handler_rows] == ["2"]  # only the pk change
        assert [body["v"] for body in svc.written("2")] == [1, 2]
        assert svc.committable() == 2


async def test_a_mapped_row_after_a_ddl_barrier_runs_after_the_ddl() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    registry = mapped()

    async def on_ddl(change: Change, ctx: Context) -> None:
        log.append("ddl start")
        await gate.wait()
        log.append("ddl end")

    registry.add("shop.users", on_ddl, types={"DDL"})
    async with service(registry) as svc:
        await svc.feed(record(0, [(1, 1)]), ddl(1), record(2, [(2, 2)]))
        await settle(30)
        assert log == ["ddl start"]
        assert svc.written("2") == []  # waits for the barrier
        gate.set()
        await svc.settled()
        assert log == ["ddl start", "ddl end"]
        assert svc.written("2") == [{"id": 2, "v": 2}]
        assert svc.committable() == 3


async def test_a_table_with_a_mapper_and_a_handler_runs_both_on_the_handler_path() -> None:
    registry = mapped()
    seen: list[str] = []

    async def audit(change: Change, ctx: Context) -> None:
        seen.append(change.pk)

    registry.add("shop.users", audit)
    async with service(registry) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        assert seen == ["1"]
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 1}}
        assert len(svc.handler_rows) == 1
        assert svc.committable() == 1


async def test_a_mapped_row_ahead_of_a_primary_key_change_is_acknowledged_first() -> None:
    """The pk change (handler path, ordered after the old key too) waits for the mapped
    row of the old key to be acknowledged."""
    es = HeldElasticsearch()
    mapper, calls = counted(user_document)
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 2)], type="UPDATE", old=[{"id": "1"}]))
        await wait_until(lambda: len(es.sent) == 1)
        await settle(30)
        assert [c.pk for c in calls] == ["1"]  # the pk change has not begun
        es.open.set()
        await svc.settled()
        assert [c.pk for c in calls] == ["1", "2"]
        assert svc.committable() == 2


async def test_a_ddl_after_a_mapped_row_waits_for_its_acknowledgement() -> None:
    es = HeldElasticsearch()
    log: list[str] = []
    registry = mapped()

    async def on_ddl(change: Change, ctx: Context) -> None:
        log.append("ddl")

    registry.add("shop.users", on_ddl, types={"DDL"})
    async with service(registry, es) as svc:
        await svc.feed(record(0, [(1, 1)]), ddl(1))
        await wait_until(lambda: len(es.sent) == 1)
        await settle(30)
        assert log == []
        es.open.set()
        await svc.settled()
        assert log == ["ddl"]
        assert svc.committable() == 2


async def test_a_stale_versioned_write_ends_its_row_done_and_is_not_set_aside() -> None:
    def versioned(change: Change) -> Action:
        return actions.index(index="users", id=change.pk, doc=change.row,
                             version=change.version)

    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (409, "version_conflict_engine_exception") if doc_id == "1" else None))
    async with service(mapped(versioned), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]))
        await svc.settled()
        assert svc.stats.stale_writes == 1
        assert svc.set_aside.failures == []
        assert svc.stats.rejected == 0
        assert svc.stats.rows_done == 2
        assert svc.committable() == 1
        assert svc.handler_rows == []


async def test_deleting_a_missing_document_ends_its_row_done() -> None:
    async with service(mapped()) as svc:
        await svc.feed(record(0, [(1, 1)], type="DELETE"))
        await svc.settled()
        assert svc.written("1") == [None]
        assert svc.set_aside.failures == []
        assert svc.stats.rows_done == 1
        assert svc.committable() == 1
        assert svc.handler_rows == []


# -- failures go on through the handler path ------------------------------------------------------


async def test_a_mapper_that_raises_once_is_retried_and_its_row_ends_done() -> None:
    def flaky(change: Change) -> Action:
        if len(calls) == 1:
            raise ValueError("not yet")
        return user_document(change)

    mapper, calls = counted(flaky)
    async with service(mapped(mapper)) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 2)]))
        await svc.settled()
        assert sorted(change.pk for change in calls) == ["1", "1", "2"]  # 2 goes on meanwhile
        assert [change.pk for change in svc.handler_rows] == ["1"]
        assert svc.stats.handler_retries == 1
        assert svc.stats.handler_errors == 0
        assert svc.set_aside.failures == []
        assert svc.es.docs == {("users", "1"): {"id": 1, "v": 1},
                               ("users", "2"): {"id": 2, "v": 2}}
        assert svc.stats.rows_done == 2
        assert svc.committable() == 2
        assert svc.writer._order == {}


async def test_a_row_behind_one_whose_mapper_raised_waits_for_its_retry() -> None:
    def flaky(change: Change) -> Action:
        if len(calls) == 1:
            raise ValueError("not yet")
        return user_document(change)

    mapper, calls = counted(flaky)
    async with service(mapped(mapper)) as svc:
        await svc.feed(record(0, [(1, 1), (1, 2)]))
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 2]
        assert svc.es.docs[("users", "1")] == {"id": 1, "v": 2}
        assert svc.committable() == 1


async def test_a_mapper_that_keeps_failing_is_set_aside_after_its_attempts() -> None:
    mapper, calls = counted(lambda change: "users/1")  # not an action
    async with service(mapped(mapper)) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(2, 2)]))
        await svc.settled()
        assert len(calls) == 2 * MAX_ATTEMPTS
        assert svc.stats.handler_errors == 2
        assert [f.error_class for f in svc.set_aside.failures] == [
            "esupdater.mapping.MapperResultError"] * 2
        assert svc.set_aside.failures[0].handler.endswith(":counted.<locals>.recording")
        assert svc.es.calls == []
        assert svc.stats.rows_done == 2
        assert svc.committable() == 2


async def test_a_bad_id_written_by_a_handler_is_its_own_failure_and_set_aside() -> None:
    """The handler path, for comparison with the mapper tests below: an `_id` the writer
    cannot key on (a list) fails the handler's write, retried then set aside."""
    registry = Registry()

    async def handler(change: Change, ctx: Context) -> None:
        await ctx.index(index="users", id=[change.pk], doc=change.row)  # type: ignore[arg-type]

    registry.add("shop.users", handler)
    async with service(registry) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        assert [f.error_class for f in svc.set_aside.failures] == ["builtins.TypeError"]
        assert svc.committable() == 1


def unhashable_id(change: Change) -> Action:
    """A mapper's mistake: the whole row's key values as the id."""
    if change.row["v"] == 1:
        return user_document(change)
    return actions.index(index="users", id=[change.pk], doc=change.row)  # type: ignore[arg-type]


async def test_a_mapper_returning_an_unhashable_id_is_set_aside_not_raised_from_feeding(
) -> None:
    async with service(mapped(unhashable_id)) as svc:
        await svc.feed(record(0, [(1, 2)]))  # the key's first row: begins inside place
        await svc.settled()
        assert [f.error_class for f in svc.set_aside.failures] == ["builtins.TypeError"]
        assert svc.committable() == 1


async def test_a_mapper_returning_an_unhashable_id_behind_another_row_does_not_hang(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with service(mapped(unhashable_id)) as svc:
        await svc.feed(record(0, [(1, 1), (1, 2)]))
        drained = await svc.dispatcher.drain(timeout=0.3)
        assert drained, "the row never ended: its slot and offset are held for good"
        assert "Exception in callback" not in caplog.text  # failed as the row's own
        assert [f.error_class for f in svc.set_aside.failures] == ["builtins.TypeError"]
        assert svc.committable() == 1


TRANSIENT: dict[str, dict[str, Any]] = {
    "item 429": {"fail_item": failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception") if n == 1 else None)},
    "item 503": {"fail_item": failing(
        lambda n, doc_id: (503, "unavailable_shards_exception") if n <= 2 else None)},
    "request 503": {"fail_request": lambda n: api_error(
        ApiError, 503, "unavailable_shards_exception", "no shard") if n == 1 else None},
    "connection reset": {"fail_request": lambda n: EsConnectionError("reset") if n == 1 else None},
}


@pytest.mark.parametrize("failure", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_a_write_that_fails_transiently_is_retried_and_its_row_ends_done(
    failure: dict[str, Any],
) -> None:
    mapper, calls = counted(user_document)
    es = FakeElasticsearch(**failure)
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        assert es.docs == {("users", "1"): {"id": 1, "v": 1}}
        assert svc.stats.writes_applied == 1  # one document write applied
        assert svc.stats.es_retries >= 1
        assert len(calls) == 1  # the write was retried, not the mapper
        assert svc.stats.handler_retries == 0
        assert svc.set_aside.failures == []
        assert svc.stats.rows_done == 1
        assert svc.committable() == 1
        assert svc.writer._order == {}


async def test_a_transient_failure_of_one_of_two_actions_retries_it_alone() -> None:
    def both(change: Change) -> list[Action]:
        return [actions.index(index="users", id=change.pk, doc=change.row),
                actions.index(index="names", id=change.pk, doc={"v": change.row["v"]})]

    es = FakeElasticsearch(fail_item=lambda n, place, op, index, doc_id: (
        (429, "es_rejected_execution_exception") if (n, index) == (1, "names") else None))
    async with service(mapped(both), es) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await svc.settled()
        assert es.docs == {("users", "1"): {"id": 1, "v": 1}, ("names", "1"): {"v": 1}}
        assert svc.written("1") == [{"id": 1, "v": 1}]  # sent once
        assert svc.written("1", "names") == [{"v": 1}, {"v": 1}]
        assert svc.stats.writes_applied == 2
        assert svc.stats.rows_done == 1
        assert svc.committable() == 1
        assert svc.writer._order == {}


async def test_a_later_row_of_a_key_whose_write_is_retried_lands_after_it() -> None:
    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (429, "es_rejected_execution_exception") if n <= 2 else None))
    async with service(mapped(), es) as svc:
        await svc.feed(record(0, [(1, 1)]), record(1, [(1, 2)]))
        await svc.settled()
        assert [body["v"] for body in svc.written("1")] == [1, 1, 1, 2]
        assert es.docs[("users", "1")] == {"id": 1, "v": 2}
        assert svc.committable() == 2


async def test_a_refused_write_is_set_aside_and_its_row_ends_done() -> None:
    mapper, calls = counted(user_document)
    es = FakeElasticsearch(fail_item=failing(
        lambda n, doc_id: (400, "mapper_parsing_exception") if doc_id == "2" else None))
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2)]), record(1, [(3, 3)]))
        await svc.settled()
        assert svc.stats.rejected == 1
        (failure,) = svc.set_aside.failures
        assert failure.error_class == "esupdater.errors.BulkItemError"
        assert "mapper_parsing_exception" in failure.reason
        assert (failure.position.offset, failure.row_index) == (0, 1)
        assert failure.handler == svc.feeder.registry.routes[0].name
        assert len(svc.written("2")) == 1  # refused for good: not retried
        assert [c.pk for c in calls].count("2") == 1
        assert svc.stats.handler_retries == 0
        assert es.docs == {("users", "1"): {"id": 1, "v": 1}, ("users", "3"): {"id": 3, "v": 3}}
        assert svc.stats.rows_done == 3
        assert svc.committable() == 2
        assert svc.writer._order == {}


async def test_the_sensor_hears_of_each_mapped_row_once_however_it_went() -> None:
    def flaky(change: Change) -> Action:
        if change.pk == "2" and len([c for c in calls if c.pk == "2"]) == 1:
            raise ValueError("once")
        return user_document(change)

    mapper, calls = counted(flaky)
    es = FakeElasticsearch(fail_item=failing(lambda n, doc_id: (
        (429, "es_rejected_execution_exception") if (n, doc_id) == (1, "3") else
        (400, "mapper_parsing_exception") if doc_id == "4" else None)))
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1), (2, 2), (3, 3), (4, 4)]))
        await svc.settled()
        assert sorted(svc.sensor.outcomes) == [("1", 0, "done"), ("2", 0, "done"),
                                               ("3", 0, "done"), ("4", 0, "done")]
        assert svc.stats.rows_done == 4


# -- cancelled: revocation, stop -----------------------------------------------------------------


async def test_cancelling_a_mapped_row_whose_write_is_not_sent_withdraws_it() -> None:
    es = HeldElasticsearch()
    async with service(mapped(), es) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await wait_until(lambda: len(es.sent) == 1)  # row 1's request is on the wire
        await svc.feed(record(1, [(2, 2)]))  # row 2's write waits for the lane
        await settle()
        assert svc.dispatcher.cancel_all() == 2
        es.open.set()
        await svc.settled()
        await asyncio.sleep(0.02)  # past the lane's flush interval: nothing more is sent
        assert len(es.sent) == 1
        assert [d for call in es.calls for (_, _, d, _) in call.actions] == ["1"]
        assert ("users", "2") not in es.docs
        assert svc.writer._order == {}
        assert svc.dispatcher.in_flight == 0
        assert svc.stats.rows_done == 0
        assert svc.committable() is None  # the next owner replays both


async def test_cancelling_a_row_waiting_for_its_key_never_maps_it() -> None:
    es = HeldElasticsearch()
    mapper, calls = counted(user_document)
    async with service(mapped(mapper), es) as svc:
        await svc.feed(record(0, [(1, 1), (1, 2)]))
        await wait_until(lambda: len(es.sent) == 1)
        assert [c.row["v"] for c in calls] == [1]
        svc.dispatcher.cancel_all()
        es.open.set()
        await svc.settled()
        assert [c.row["v"] for c in calls] == [1]
        assert [body["v"] for body in svc.written("1")] == [1]
        assert svc.writer._order == {}
        assert svc.dispatcher.keys_in_flight == 0


async def test_cancelling_a_row_of_two_unsent_actions_withdraws_both() -> None:
    def both(change: Change) -> list[Action]:
        return [actions.index(index="users", id=change.pk, doc=change.row),
                actions.delete(index="old_users", id=change.pk)]

    es = HeldElasticsearch()
    registry = mapped(both)
    async with service(registry, es) as svc:
        # A handler row of another table holds the lane with its request.
        registry.add("shop.other", _index_other)
        other = flat_message("shop", "other", "INSERT", [{"id": "9", "v": "0"}],
                             mysql_types=TYPES)
        await svc.feed(SimpleNamespace(offset=0, value=other, timestamp=-1))
        await wait_until(lambda: len(es.sent) == 1)
        await svc.feed(record(1, [(1, 1)]))
        await settle()
        assert svc.dispatcher.cancel_all() == 2
        es.open.set()
        await svc.settled()
        await asyncio.sleep(0.02)
        assert len(es.sent) == 1
        assert svc.written("1") == []
        assert svc.writer._order == {}
        assert svc.dispatcher.in_flight == 0


async def _index_other(change: Change, ctx: Context) -> None:
    await ctx.index(index="other", id=change.pk, doc=change.row)


@pytest.mark.parametrize("actions_per_row", [1, 2])
async def test_cancelling_a_row_whose_write_is_being_retried_lets_go_of_its_documents(
    actions_per_row: int,
) -> None:
    """Revoked while its writes wait to be retried: a later write of the same documents
    (the partition's next owner, here in the same process) is not held behind them."""
    def mapper(change: Change) -> list[Action]:
        return [actions.index(index=f"i{n}", id=change.pk, doc=change.row)
                for n in range(actions_per_row)]

    failing_now = True
    es = FakeElasticsearch(fail_item=lambda n, place, op, index, doc_id: (
        (429, "es_rejected_execution_exception") if failing_now else None))
    # Long backoff: the retry is waiting when the row is cancelled.
    async with service(mapped(mapper), es, writer_backoff=Backoff(5.0, 5.0)) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await wait_until(lambda: len(es.calls) == 1)
        await settle(30)
        assert svc.dispatcher.cancel_all() == 1
        await svc.settled()
        assert svc.writer._order == {}
        failing_now = False
        for n in range(actions_per_row):
            result = await asyncio.wait_for(
                svc.writer.execute({"_index": f"i{n}", "_id": "1", "_source": {"v": 9}}), 1)
            assert result["status"] in (200, 201)
        assert svc.stats.rows_done == 0


async def test_cancelling_a_row_just_as_its_retry_task_is_made_lets_go_of_its_documents(
) -> None:
    """The failed write's answer made the row's task, which has not run a step yet."""
    failing_now = True
    es = FakeElasticsearch(fail_item=lambda n, place, op, index, doc_id: (
        (429, "es_rejected_execution_exception") if failing_now else None))
    async with service(mapped(), es, writer_backoff=Backoff(5.0, 5.0)) as svc:
        await svc.feed(record(0, [(1, 1)]))
        (held,) = svc.dispatcher._tasks  # the row's batch (mapped_batch), holding its slot
        assert isinstance(held, MappedBatch)

        def retrying() -> bool:
            # The failed write's row goes on alone, in a task of its own.
            return bool(held.slow) and next(iter(held.slow)).task is not None

        await wait_until(retrying)
        task = cast(asyncio.Task[None], next(iter(held.slow)).task)
        assert inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED
        svc.dispatcher.cancel_all()
        await svc.settled()
        assert svc.writer._order == {}
        failing_now = False
        result = await asyncio.wait_for(
            svc.writer.execute({"_index": "users", "_id": "1", "_source": {"v": 9}}), 1)
        assert result["status"] in (200, 201)


async def test_a_revocation_while_feeding_waits_for_a_slot_maps_nothing_more() -> None:
    es = HeldElasticsearch()
    mapper, calls = counted(user_document)
    admitted = True
    async with service(mapped(mapper), es, max_rows=1) as svc:
        feeding = asyncio.create_task(svc.feeder.feed_records(
            TP, [record(0, [(1, 1)]), record(1, [(2, 2)])], lambda: admitted))
        await wait_until(lambda: len(es.sent) == 1)
        await settle()
        assert not feeding.done()  # the pool's one slot is row 1's: row 2 waits for it
        admitted = False  # revoked meanwhile
        es.open.set()
        assert await feeding is False
        await svc.settled()
        assert [c.pk for c in calls] == ["1"]
        assert ("users", "2") not in es.docs
        assert svc.dispatcher.take_nowait()  # the slot row 2 waited for was given back


async def test_a_mapped_row_cancelled_mid_write_is_reported_cancelled_like_a_handler_row(
) -> None:
    es = HeldElasticsearch()
    async with service(mapped(), es) as svc:
        svc.feeder.registry.add("shop.other", _index_other)
        other = flat_message("shop", "other", "INSERT", [{"id": "9", "v": "0"}],
                             mysql_types=TYPES)
        await svc.feed(SimpleNamespace(offset=0, value=other, timestamp=-1),
                       record(1, [(1, 1)]))
        await wait_until(lambda: len(es.sent) == 1)  # both writes in one request
        assert svc.dispatcher.cancel_all() == 1  # one batch holds both rows
        es.open.set()
        await svc.settled()
        assert sorted(svc.sensor.outcomes) == [("1", 1, "cancelled"), ("9", 0, "cancelled")]


async def test_revoking_a_partition_cancels_its_mapped_rows_only() -> None:
    es = HeldElasticsearch()
    other_tp = TopicPartition("binlog", 1)
    async with service(mapped(), es) as svc:
        await svc.feed(record(0, [(1, 1)]))
        await wait_until(lambda: len(es.sent) == 1)
        assert await svc.feeder.feed_records(other_tp, [record(0, [(2, 2)])], lambda: True)
        await svc.feed(record(1, [(3, 3)]))
        await settle()
        assert svc.dispatcher.cancel_group(TP) == 2
        assert svc.dispatcher.in_flight_for(other_tp) == 1
        es.open.set()
        await svc.settled()
        assert ("users", "2") in es.docs
        assert ("users", "3") not in es.docs
        assert svc.feeder.offsets.partition(other_tp).committable() == 1
        assert svc.committable() is None
        assert svc.writer._order == {}


"""The bulk writer and the handler runner count into the shared Stats and tell its sensor.

With a scripted Elasticsearch (tests/unit/fake_elasticsearch.py) and the in-memory sink;
the same counters from a running service are in tests/integration/test_observability.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from esupdater.change import Change
from esupdater.context import Context
from esupdater.deadletter import SetAside
from esupdater.handling import HandlerRunner
from esupdater.routing import Registry, Route
from esupdater.stats import Stats
from esupdater.testing import MemorySink, make_change
from tests.unit.fake_elasticsearch import FakeElasticsearch
from tests.unit.test_bulk_classification import QUICK, running

DEADLINE = 5.0


class Recording:
    """A sensor that keeps what it was told."""

    def __init__(self) -> None:
        self.handlers: list[tuple[Route, Change, float, str]] = []
        self.requests: list[tuple[int, float, bool]] = []

    def handler_done(self, route: Route, change: Change, seconds: float, outcome: str) -> None:
        self.handlers.append((route, change, seconds, outcome))

    def rows_done(self, done: Sequence[tuple[Route, Change]], seconds: float) -> None:
        for route, change in done:
            self.handler_done(route, change, seconds, "done")

    def bulk_request_done(self, actions: int, seconds: float, ok: bool) -> None:
        self.requests.append((actions, seconds, ok))


def doc(doc_id: str) -> dict[str, Any]:
    return {"_index": "idx", "_id": doc_id, "_source": {"id": doc_id}}


def sensed() -> tuple[Stats, Recording]:
    sensor = Recording()
    return Stats(sensor=sensor), sensor


async def test_the_bulk_writer_counts_into_the_shared_stats_and_reports_each_request() -> None:
    def busy_once(n: int, place: int, op: str, index: str, doc_id: str) -> tuple[int, str] | None:
        return (503, "unavailable") if (n, doc_id) == (1, "2") else None

    es = FakeElasticsearch(fail_item=busy_once)
    stats, sensor = sensed()
    async with running(es, stats=stats) as writer:
        await asyncio.gather(*(writer.execute(doc(str(i))) for i in range(5)))

    assert (stats.writes_applied, stats.es_retries, stats.es_held) == (5, 1, 0)
    assert stats.bulk_requests == len(es.calls) == len(sensor.requests) == 2
    assert [(n, ok) for n, _, ok in sensor.requests] == [
        (len(call.actions), True) for call in es.calls
    ]
    assert all(seconds >= 0 for _, seconds, _ in sensor.requests)


async def test_a_request_that_fails_as_a_whole_is_reported_not_ok() -> None:
    es = FakeElasticsearch(fail_request=lambda n: ConnectionError("reset") if n == 1 else None)
    stats, sensor = sensed()
    async with running(es, stats=stats) as writer:
        await writer.execute(doc("1"))

    assert [(n, ok) for n, _, ok in sensor.requests] == [(1, False), (1, True)]
    assert (stats.es_retries, stats.writes_applied) == (1, 1)


def runner_with(sensor: Recording) -> tuple[HandlerRunner, Stats]:
    stats = Stats(sensor=sensor)
    return HandlerRunner(MemorySink(), None, stats, SetAside(stats), max_attempts=2,
                         backoff=QUICK), stats


async def test_each_routes_run_is_reported_to_the_sensor_with_its_outcome() -> None:
    sensor = Recording()
    runner, stats = runner_with(sensor)
    registry = Registry()

    async def writes(change: Change, ctx: Context) -> None:
        await ctx.index(index="users", id=change.pk, doc=change.row)

    async def fails(change: Change, ctx: Context) -> None:
        raise ValueError("bad row")

    routes = (registry.add("shop.users", writes), registry.add("shop.users", fails))
    change = make_change("shop", "users", "INSERT", {"id": 7})

    async with asyncio.timeout(DEADLINE):
        await runner.run(change, routes, b"record")

    assert [(route, seen, outcome) for route, seen, _, outcome in sensor.handlers] == [
        (routes[0], change, "done"),
        (routes[1], change, "done"),  # set aside after its attempts: the row is done
    ]
    assert stats.handler_errors == 1


async def test_a_cancelled_run_is_reported_as_cancelled() -> None:
    sensor = Recording()
    runner, _ = runner_with(sensor)
    started = asyncio.Event()

    async def waits(change: Change, ctx: Context) -> None:
        started.set()
        await asyncio.Event().wait()

    route = Registry().add("shop.users", waits)
    change = make_change("shop", "users", "INSERT", {"id": 7})
    task = asyncio.create_task(runner.run(change, (route,), b"record"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [outcome for _, _, _, outcome in sensor.handlers] == ["cancelled"]

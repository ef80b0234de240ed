"""HandlerRunner without servers: which failures count attempts, hold, or set aside at once.

The sink is `esupdater.testing.MemorySink`, or a scripted one that fails at call N; the real
service's behaviour for the same kinds is in tests/integration/test_held_writes.py and
test_resilience.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from elasticsearch import AuthenticationException, ConnectionTimeout, NotFoundError

from esupdater.actions import Action
from esupdater.backoff import Backoff
from esupdater.change import Change, Position
from esupdater.context import Context
from esupdater.deadletter import Failure, SetAside
from esupdater.errors import BulkItemError
from esupdater.handling import HandlerRunner
from esupdater.routing import Registry, Route
from esupdater.stats import Stats
from esupdater.testing import MemorySink, apply, make_change
from tests.unit.fake_elasticsearch import api_error

#: Retries of a millisecond or so: a test of many attempts takes a moment.
QUICK = Backoff(0.001, 0.005)
#: Past this, a failure is being retried forever instead of counted.
DEADLINE = 5.0
MAX_ATTEMPTS = 3

Handler = Callable[[Change, Context], Awaitable[None]]


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
        self.releases: list[Position] = []

    def hold(self, position: Position) -> None:
        self.holds.append(position)

    def release(self, position: Position) -> None:
        self.releases.append(position)


class Runner:
    """A HandlerRunner over `sink`, and what it set aside, counted and held."""

    def __init__(self, sink: Any = None) -> None:
        self.sink = sink or MemorySink()
        self.stats = Stats()
        self.set_aside = Recorded(self.stats)
        self.gate = Gate()
        self.runner = HandlerRunner(self.sink, None, self.stats, self.set_aside,
                                    max_attempts=MAX_ATTEMPTS, backoff=QUICK, gate=self.gate)

    async def run(self, handler: Handler) -> Change:
        registry = Registry()
        route: Route = registry.add("shop.users", handler)
        change = make_change("shop", "users", "INSERT", {"id": 7}, topic="shop", offset=41)
        async with asyncio.timeout(DEADLINE):
            await self.runner.run(change, (route,), b"record")
        return change


def raising(exc: Callable[[], BaseException], times: int = 1_000_000) -> tuple[Handler, list[int]]:
    """A handler that raises `exc()` on its first `times` calls, then indexes; and its calls."""
    calls: list[int] = []

    async def handler(change: Change, ctx: Context) -> None:
        calls.append(1)
        if len(calls) <= times:
            raise exc()
        await ctx.index(index="users", id=change.pk, doc=change.row)

    return handler, calls


# -- the handler's own exceptions count their attempts -------------------------------------------


@pytest.mark.parametrize("exc", [TimeoutError, RecursionError, ValueError])
async def test_a_handlers_own_exception_counts_its_attempts_and_is_set_aside(
    exc: type[BaseException],
) -> None:
    runner = Runner()
    handler, calls = raising(exc)
    await runner.run(handler)
    assert len(calls) == MAX_ATTEMPTS
    (failure,) = runner.set_aside.failures
    assert (failure.attempts, failure.error_class) == (MAX_ATTEMPTS, f"builtins.{exc.__name__}")
    assert (runner.stats.handler_errors, runner.stats.handler_retries) == (1, MAX_ATTEMPTS - 1)


async def test_a_cancelled_error_a_handlers_library_raises_counts_like_any_exception() -> None:
    """Not a cancel of the row's task (a stop or a revocation): the handler's own failure."""
    runner = Runner()
    handler, calls = raising(asyncio.CancelledError)
    await runner.run(handler)
    assert len(calls) == MAX_ATTEMPTS
    (failure,) = runner.set_aside.failures
    assert failure.error_class == "esupdater.errors.HandlerCancelledError"
    assert "CancelledError" in failure.reason


async def test_a_real_cancel_of_the_rows_task_still_cancels_it() -> None:
    runner = Runner()
    started = asyncio.Event()

    async def slow(change: Change, ctx: Context) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(runner.run(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.set_aside.failures == []


async def test_a_handler_that_fails_once_is_retried_and_succeeds() -> None:
    runner = Runner()
    handler, calls = raising(ValueError, times=1)
    await runner.run(handler)
    assert len(calls) == 2
    assert runner.set_aside.failures == []
    assert runner.sink.get("users", "7") == {"id": 7}


# -- transient and held failures never use up attempts -------------------------------------------


async def test_the_clients_own_timeout_is_transient_and_not_counted() -> None:
    runner = Runner()
    handler, calls = raising(lambda: ConnectionTimeout("timed out"), times=MAX_ATTEMPTS + 2)
    await runner.run(handler)
    assert len(calls) == MAX_ATTEMPTS + 3
    assert runner.set_aside.failures == []
    assert runner.stats.handler_retries == 0


async def test_a_401_from_a_direct_client_call_holds_the_partition_loudly_without_counting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner()
    revoked = api_error(AuthenticationException, 401, "security_exception", "bad api key")
    handler, calls = raising(lambda: revoked, times=MAX_ATTEMPTS + 2)
    change = await runner.run(handler)
    assert len(calls) == MAX_ATTEMPTS + 3
    assert runner.set_aside.failures == []
    assert runner.gate.holds == [change.position] == runner.gate.releases
    held = [r for r in caplog.records if r.levelno == logging.ERROR and "HELD" in r.message]
    assert len(held) == MAX_ATTEMPTS + 2, caplog.text
    assert str(change.position) in held[0].message


async def test_a_missing_document_from_a_direct_client_call_is_the_handlers_failure() -> None:
    runner = Runner()
    handler, calls = raising(lambda: api_error(NotFoundError, 404, "", "not found"))
    await runner.run(handler)
    assert len(calls) == MAX_ATTEMPTS
    assert len(runner.set_aside.failures) == 1


async def test_a_refused_document_is_set_aside_at_once() -> None:
    runner = Runner()
    refused = BulkItemError("index", "users", "7", 400, "document_parsing_exception: bad")
    handler, calls = raising(lambda: refused)
    await runner.run(handler)
    assert len(calls) == 1
    (failure,) = runner.set_aside.failures
    assert failure.attempts == 1
    assert runner.stats.rejected == 1


# -- a write the handler did not await ------------------------------------------------------------


async def forgets_await(change: Change, ctx: Context) -> None:
    ctx.index(index="users", id=change.pk, doc=change.row)  # type: ignore[unused-coroutine]


async def test_a_handler_that_forgets_await_is_retried_then_set_aside_naming_the_call() -> None:
    runner = Runner()
    change = await runner.run(forgets_await)
    (failure,) = runner.set_aside.failures
    assert failure.attempts == MAX_ATTEMPTS
    assert "ctx.index(...) was never awaited" in failure.reason
    assert "test_handler_runner:forgets_await" in failure.reason
    assert str(change.position) in failure.reason
    assert runner.sink.get("users", "7") is None  # and nothing was committed as written


async def test_a_write_left_running_in_a_task_when_the_handler_returns_is_an_error() -> None:
    async def fire_and_forget(change: Change, ctx: Context) -> None:
        asyncio.get_running_loop().create_task(ctx.delete(index="users", id=change.pk))

    runner = Runner()
    await runner.run(fire_and_forget)
    (failure,) = runner.set_aside.failures
    assert "ctx.delete(...)" in failure.reason


async def test_writes_awaited_through_gather_or_a_task_are_fine() -> None:
    async def concurrent(change: Change, ctx: Context) -> None:
        task = asyncio.create_task(ctx.upsert(index="users", id="a", doc={"n": 1}))
        await asyncio.gather(ctx.index(index="users", id="b", doc={"n": 2}),
                             ctx.bulk([{"_index": "users", "_id": "c", "_source": {"n": 3}}]))
        await task

    runner = Runner()
    await runner.run(concurrent)
    assert runner.set_aside.failures == []
    assert [runner.sink.get("users", i) for i in "abc"] == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_apply_raises_when_a_handler_forgets_await() -> None:
    registry = Registry()
    registry.add("shop.users", forgets_await)
    with pytest.raises(Exception, match=r"ctx\.index\(\.\.\.\) was never awaited"):
        await apply(make_change("shop", "users", "INSERT", {"id": 7}), registry=registry)


class FailingAt:
    """A sink whose call number `n` (from 1) raises `error`; the others are applied."""

    def __init__(self, n: int, error: Exception) -> None:
        self.n, self.error, self.calls = n, error, 0
        self.memory = MemorySink()

    async def execute(self, action: Action) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.n:
            raise self.error
        return await self.memory.execute(action)


async def test_a_write_that_fails_transiently_in_the_middle_reruns_the_handler_uncounted() -> None:
    sink = FailingAt(2, ConnectionTimeout("timed out"))

    async def two_writes(change: Change, ctx: Context) -> None:
        await ctx.index(index="users", id="a", doc={"n": 1})
        await ctx.index(index="users", id="b", doc={"n": 2})

    runner = Runner(sink)
    await runner.run(two_writes)
    assert sink.calls == 4
    assert runner.set_aside.failures == []
    assert runner.stats.handler_retries == 0
    assert sink.memory.get("users", "b") == {"n": 2}

"""KeyedDispatcher: bounded, ordered per key, concurrent across keys, no lost failures."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from esupdater.dispatch import KeyedDispatcher

Job = Callable[[], Awaitable[None]]


async def settle(rounds: int = 5) -> None:
    """Let scheduled tasks run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def blocked(gate: asyncio.Event, log: list[Any] | None = None, tag: Any = None) -> Job:
    async def job() -> None:
        if log is not None:
            log.append(("start", tag))
        await gate.wait()
        if log is not None:
            log.append(("end", tag))

    return job


async def test_never_more_than_max_in_flight_jobs_run() -> None:
    dispatcher = KeyedDispatcher(5)
    running = peak = 0

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(random.random() / 1000)
        running -= 1

    for i in range(200):
        await dispatcher.submit(i % 17, job)
        assert dispatcher.in_flight <= 5
    assert await dispatcher.drain(timeout=5)
    assert peak == 5


async def test_submit_blocks_when_full_and_resumes_when_a_job_ends() -> None:
    dispatcher = KeyedDispatcher(2)
    gate = asyncio.Event()
    await dispatcher.submit("a", blocked(gate))
    await dispatcher.submit("b", blocked(gate))
    third = asyncio.create_task(dispatcher.submit("c", blocked(asyncio.Event())))
    await settle()
    assert not third.done()
    gate.set()
    future = await asyncio.wait_for(third, 1)
    assert dispatcher.in_flight == 1
    future.cancel()
    await dispatcher.drain(timeout=1)


async def test_same_key_runs_strictly_in_submission_order_under_concurrency() -> None:
    dispatcher = KeyedDispatcher(20)
    order: list[int] = []
    running_for_key = 0

    def job(n: int) -> Job:
        async def run() -> None:
            nonlocal running_for_key
            running_for_key += 1
            assert running_for_key == 1, "two jobs of one key overlapped"
            await asyncio.sleep(random.random() / 2000)
            order.append(n)
            running_for_key -= 1

        return run

    async def other() -> None:
        await asyncio.sleep(random.random() / 2000)

    for n in range(300):
        await dispatcher.submit("doc", job(n))
        for _ in range(random.randrange(3)):
            await dispatcher.submit(random.randrange(50), other)
    assert await dispatcher.drain(timeout=10)
    assert order == list(range(300))


async def test_different_keys_run_concurrently() -> None:
    dispatcher = KeyedDispatcher(2)
    barrier = asyncio.Barrier(2)

    async def meet() -> None:
        await asyncio.wait_for(barrier.wait(), 1)

    first = await dispatcher.submit("a", meet)
    second = await dispatcher.submit("b", meet)
    await asyncio.gather(first, second)


async def test_a_failing_job_does_not_block_the_next_one_of_its_key() -> None:
    dispatcher = KeyedDispatcher(4)
    ran: list[str] = []

    async def fail() -> None:
        raise ValueError("bad row")

    async def succeed() -> None:
        ran.append("next")

    failed = await dispatcher.submit("doc", fail)
    following = await dispatcher.submit("doc", succeed)
    await following
    assert ran == ["next"]
    with pytest.raises(ValueError, match="bad row"):
        await failed


async def test_an_unobserved_failure_is_not_reported_as_never_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        dispatcher = KeyedDispatcher(1)

        async def fail() -> None:
            raise ValueError("nobody looks")

        await dispatcher.submit("doc", fail)  # the future is dropped on purpose
        assert await dispatcher.drain(timeout=1)
        gc.collect()
        await settle()
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


async def test_drain_waits_for_one_group_only() -> None:
    dispatcher = KeyedDispatcher(10)
    gate = asyncio.Event()
    await dispatcher.submit("a", blocked(gate), group=0)
    await dispatcher.submit("b", blocked(asyncio.Event()), group=1)
    assert dispatcher.in_flight_for(0) == 1
    assert not await dispatcher.drain(0, timeout=0.01)
    gate.set()
    assert await dispatcher.drain(0, timeout=1)
    assert dispatcher.in_flight_for(0) == 0
    assert dispatcher.in_flight_for(1) == 1
    dispatcher.cancel_all()
    assert await dispatcher.drain(timeout=1)


async def test_drain_of_everything_times_out_while_jobs_run() -> None:
    dispatcher = KeyedDispatcher(10)
    gate = asyncio.Event()
    await dispatcher.submit("a", blocked(gate), group=0)
    await dispatcher.submit("b", blocked(gate))
    assert not await dispatcher.drain(timeout=0.01)
    gate.set()
    assert await dispatcher.drain(timeout=1)


async def test_drain_of_an_idle_group_returns_at_once() -> None:
    assert await KeyedDispatcher(1).drain("nothing", timeout=0)


async def test_key_and_group_bookkeeping_empties_after_completion() -> None:
    dispatcher = KeyedDispatcher(8)

    async def noop() -> None:
        await asyncio.sleep(0)

    for i in range(100):
        await dispatcher.submit(i % 7, noop, group=i % 3)
    assert await dispatcher.drain(timeout=1)
    assert dispatcher.in_flight == 0
    assert dispatcher.keys_in_flight == 0
    assert [dispatcher.in_flight_for(g) for g in range(3)] == [0, 0, 0]


async def test_cancel_all_cancels_running_and_waiting_jobs() -> None:
    dispatcher = KeyedDispatcher(4)
    futures = [await dispatcher.submit("doc", blocked(asyncio.Event())) for _ in range(3)]
    await settle()
    assert dispatcher.cancel_all() == 3
    assert await dispatcher.drain(timeout=1)
    assert all(future.cancelled() for future in futures)
    assert dispatcher.keys_in_flight == 0


async def test_cancelling_a_waiting_job_does_not_let_its_successor_overtake() -> None:
    dispatcher = KeyedDispatcher(4)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("doc", blocked(gate, log, "first"))
    waiting = await dispatcher.submit("doc", blocked(gate, log, "second"))
    await dispatcher.submit("doc", blocked(gate, log, "third"))
    await settle()
    waiting.cancel()
    await settle()
    assert log == [("start", "first")]
    gate.set()
    assert await dispatcher.drain(timeout=1)
    assert log == [("start", "first"), ("end", "first"), ("start", "third"), ("end", "third")]


async def test_a_job_cancelled_before_it_started_keeps_the_key_order() -> None:
    dispatcher = KeyedDispatcher(4)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("doc", blocked(gate, log, "first"))
    await settle()
    (await dispatcher.submit("doc", blocked(gate, log, "second"))).cancel()  # not started yet
    await settle()
    await dispatcher.submit("doc", blocked(gate, log, "third"))
    await settle()
    assert log == [("start", "first")]
    gate.set()
    assert await dispatcher.drain(timeout=1)
    assert log == [("start", "first"), ("end", "first"), ("start", "third"), ("end", "third")]
    assert dispatcher.keys_in_flight == 0


async def test_a_submitter_cancelled_while_waiting_for_a_slot_frees_nothing_twice() -> None:
    dispatcher = KeyedDispatcher(1)
    gate = asyncio.Event()
    await dispatcher.submit("a", blocked(gate))
    waiting = asyncio.create_task(dispatcher.submit("b", blocked(gate)))
    await settle()
    waiting.cancel()
    await settle()
    gate.set()
    assert await dispatcher.drain(timeout=1)
    later = asyncio.Event()
    await dispatcher.submit("c", blocked(later))
    assert dispatcher.in_flight == 1
    with pytest.raises(asyncio.TimeoutError):  # still one slot only, not two
        await asyncio.wait_for(dispatcher.submit("d", blocked(later)), 0.01)
    later.set()
    assert await dispatcher.drain(timeout=1)


async def test_close_waits_for_admitted_jobs_and_refuses_new_ones() -> None:
    dispatcher = KeyedDispatcher(2)
    done: list[str] = []

    async def slow() -> None:
        await asyncio.sleep(0.01)
        done.append("slow")

    await dispatcher.submit("a", slow)
    await dispatcher.close()
    assert done == ["slow"]
    with pytest.raises(RuntimeError, match="closed"):
        await dispatcher.submit("b", slow)


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyedDispatcher(0)


async def test_a_job_with_after_runs_after_both_keys_and_the_old_keys_next_job_after_it() -> None:
    # A row whose primary key changed from 6 to 500: its job deletes document 6 and writes
    # 500, so it must follow what was pending for 6, and what comes next for 6 must follow it.
    dispatcher = KeyedDispatcher(10)
    log: list[Any] = []
    old_gate, new_gate, moved_gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
    await dispatcher.submit("6", blocked(old_gate, log, "6: update"))
    await dispatcher.submit("500", blocked(new_gate, log, "500: earlier"))
    await dispatcher.submit("500", blocked(moved_gate, log, "6->500"), after="6")
    await dispatcher.submit("6", blocked(asyncio.Event(), log, "6: new row"))
    await settle()
    assert log == [("start", "6: update"), ("start", "500: earlier")]

    new_gate.set()
    await settle()
    assert ("start", "6->500") not in log  # still behind "6: update"
    old_gate.set()
    await settle()
    assert log[-1] == ("start", "6->500")  # and "6: new row" waits for it
    moved_gate.set()
    await settle()
    assert log[-1] == ("start", "6: new row")
    assert dispatcher.in_flight == 1


async def test_after_a_cancelled_job_with_two_keys_both_keys_stay_ordered() -> None:
    dispatcher = KeyedDispatcher(10)
    log: list[Any] = []
    old_gate = asyncio.Event()
    await dispatcher.submit("6", blocked(old_gate, log, "6: update"))
    moved = await dispatcher.submit("500", blocked(asyncio.Event(), log, "6->500"), after="6")
    moved.cancel()  # its partition revoked before it ran
    await dispatcher.submit("6", blocked(asyncio.Event(), log, "6: next"))
    await settle()
    assert log == [("start", "6: update")]  # "6: next" still waits for "6: update"
    old_gate.set()
    await settle()
    assert log[-1] == ("start", "6: next")
    assert moved.cancelled()


async def test_a_job_cancelled_before_it_ran_does_not_let_its_successor_overtake() -> None:
    # The successor's first step can come before the cancelled job's done callbacks.
    dispatcher = KeyedDispatcher(10)
    log: list[Any] = []
    gate = asyncio.Event()
    await dispatcher.submit("k", blocked(gate, log, "first"))
    (await dispatcher.submit("k", blocked(asyncio.Event(), log, "cancelled"))).cancel()
    await dispatcher.submit("k", blocked(asyncio.Event(), log, "third"))
    await settle()
    assert log == [("start", "first")]
    gate.set()
    await settle()
    assert log == [("start", "first"), ("end", "first"), ("start", "third")]


async def test_bookkeeping_is_empty_again_after_cancels_and_second_keys() -> None:
    dispatcher = KeyedDispatcher(10)
    gate = asyncio.Event()
    await dispatcher.submit("6", blocked(gate))
    (await dispatcher.submit("500", blocked(gate), after="6")).cancel()
    await dispatcher.submit("6", blocked(gate))
    await dispatcher.submit("7", blocked(gate), after="500")
    await settle()
    gate.set()
    assert await dispatcher.drain(timeout=1)
    await settle()
    assert dispatcher.keys_in_flight == 0
    assert dispatcher._predecessors == {}


async def test_a_barrier_runs_after_every_earlier_job_of_its_scope_and_before_every_later_one(
) -> None:
    dispatcher = KeyedDispatcher(10)
    log: list[Any] = []
    gates = {name: asyncio.Event() for name in ("row1", "row2", "other")}
    await dispatcher.submit(("db", "t", "1"), blocked(gates["row1"], log, "row1"))
    await dispatcher.submit(("db", "t", "2"), blocked(gates["row2"], log, "row2"))
    await dispatcher.submit(("db", "u", "1"), blocked(gates["other"], log, "other"))
    await dispatcher.submit(("db", "t", ""), blocked(asyncio.Event(), log, "ddl-never"),
                            barrier=("db", "t"))
    await dispatcher.submit(("db", "t", "3"), blocked(asyncio.Event(), log, "row3"))
    await settle()
    assert sorted(tag for _, tag in log) == ["other", "row1", "row2"]  # other tables go on
    gates["row1"].set()
    await settle()
    assert ("start", "ddl-never") not in log  # row 2 is still running
    gates["row2"].set()
    await settle()
    assert log[-1] == ("start", "ddl-never")
    assert ("start", "row3") not in log  # later rows of the table wait for the barrier
    dispatcher.cancel_all()
    assert await dispatcher.drain(timeout=1)


async def test_barrier_bookkeeping_is_empty_again_after_the_barrier_and_its_successors() -> None:
    dispatcher = KeyedDispatcher(10)
    gate = asyncio.Event()
    await dispatcher.submit(("db", "t", "1"), blocked(gate))
    barrier = await dispatcher.submit(("db", "t", ""), blocked(gate), barrier=("db", "t"))
    assert barrier is not None
    barrier.cancel()
    await dispatcher.submit(("db", "t", "2"), blocked(gate))
    gate.set()
    assert await dispatcher.drain(timeout=1)
    await settle()
    assert dispatcher.keys_in_flight == 0
    assert dispatcher._predecessors == {}
    assert dispatcher._barriers == {}


async def test_a_submit_refused_after_waiting_for_a_slot_gives_the_slot_back() -> None:
    dispatcher = KeyedDispatcher(1)
    gate = asyncio.Event()
    await dispatcher.submit("a", blocked(gate))
    refused = asyncio.create_task(dispatcher.submit("b", blocked(gate), admit=lambda: False))
    await settle()
    gate.set()
    assert await refused is None
    assert await dispatcher.drain(timeout=1)
    ran: list[str] = []

    async def job() -> None:
        ran.append("c")

    await asyncio.wait_for(dispatcher.submit("c", job), 1)  # the slot is free again
    assert await dispatcher.drain(timeout=1)
    assert ran == ["c"]

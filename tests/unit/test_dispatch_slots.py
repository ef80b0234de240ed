"""KeyedDispatcher's slots: work without a task of its own (a mapped row) holding its place.

`take_nowait` / `take` hold a slot, `place` puts a future in a key's order and calls `begin`
once the key's earlier jobs are done; its owner calls `release` once the future is resolved
or cancelled. Cancelling, draining and counting treat the future as a job. The task-per-job
API is in test_dispatch.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from esupdater.dispatch import KeyedDispatcher

Job = Callable[[], Awaitable[None]]


async def settle(rounds: int = 10) -> None:
    """Let scheduled tasks and callbacks run a few steps."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def blocked(gate: asyncio.Event, log: list[Any], tag: Any) -> Job:
    async def job() -> None:
        log.append(("start", tag))
        await gate.wait()
        log.append(("end", tag))

    return job


def slot(dispatcher: KeyedDispatcher, key: Any, group: Any = None) -> asyncio.Future[None]:
    """A future for `place`, owned as a mapped row owns its own: once resolved or cancelled,
    its owner gives its place back (`release`)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda done: dispatcher.release(key, group, done))
    return future


def beginning(log: list[Any], tag: Any) -> Callable[[], None]:
    """A `begin` that records that it was called."""
    return lambda: log.append(("begin", tag))


def placed(
    dispatcher: KeyedDispatcher, key: Any, log: list[Any], tag: Any, group: Any = None
) -> asyncio.Future[None]:
    """Take a free slot and place a future in `key`'s order."""
    assert dispatcher.take_nowait()
    future = slot(dispatcher, key, group)
    assert dispatcher.place(key, future, beginning(log, tag), group=group)
    return future


# -- holding a slot ------------------------------------------------------------------------------


async def test_take_nowait_holds_free_slots_and_says_false_when_full() -> None:
    dispatcher = KeyedDispatcher(2)
    assert dispatcher.take_nowait()
    assert dispatcher.take_nowait()
    assert not dispatcher.take_nowait()
    assert dispatcher.submit_nowait("x", blocked(asyncio.Event(), [], "x")) is None
    log: list[Any] = []
    first, second = slot(dispatcher, "a"), slot(dispatcher, "b")
    assert dispatcher.place("a", first, beginning(log, "a"))
    assert dispatcher.place("b", second, beginning(log, "b"))
    assert not dispatcher.take_nowait()
    first.set_result(None)
    await settle()
    assert dispatcher.take_nowait()  # a resolved slot is given back
    assert not dispatcher.take_nowait()
    third = slot(dispatcher, "c")
    assert dispatcher.place("c", third, beginning(log, "c"))
    second.set_result(None)
    third.set_result(None)
    assert await dispatcher.drain(timeout=1)


async def test_take_nowait_does_not_overtake_a_submitter_waiting_for_a_slot() -> None:
    dispatcher = KeyedDispatcher(1)
    log: list[Any] = []
    first = placed(dispatcher, "a", log, "a")
    waiting = asyncio.create_task(dispatcher.submit("b", blocked(asyncio.Event(), log, "b")))
    await settle()
    assert not waiting.done()
    first.set_result(None)  # its slot goes to the waiting submitter...
    await settle()
    assert not dispatcher.take_nowait()  # ...not to whoever asks next
    job = await waiting
    assert job is not None
    assert ("start", "b") in log
    job.cancel()
    assert await dispatcher.drain(timeout=1)


async def test_take_waits_for_a_slot() -> None:
    dispatcher = KeyedDispatcher(1)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("a", blocked(gate, log, "a"))
    taking = asyncio.create_task(dispatcher.take())
    await settle()
    assert not taking.done()
    gate.set()
    assert await asyncio.wait_for(taking, 1) is True
    await settle()
    assert dispatcher.in_flight == 0  # held, not yet placed
    assert not dispatcher.take_nowait()  # and held: the pool's one slot
    held = slot(dispatcher, "b")
    assert dispatcher.place("b", held, beginning(log, "b"))
    assert dispatcher.in_flight == 1
    held.set_result(None)
    assert await dispatcher.drain(timeout=1)


async def test_take_returns_false_and_gives_the_slot_back_when_admit_says_no() -> None:
    dispatcher = KeyedDispatcher(1)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("a", blocked(gate, log, "a"))
    asked: list[int] = []

    def admit() -> bool:
        asked.append(1)
        return False

    taking = asyncio.create_task(dispatcher.take(admit))
    await settle()
    assert asked == []  # asked after the wait, not before
    gate.set()
    assert await asyncio.wait_for(taking, 1) is False
    assert asked == [1]
    assert await dispatcher.drain(timeout=1)
    assert dispatcher.take_nowait()  # the slot was given back


async def test_take_with_a_free_slot_does_not_ask_admit() -> None:
    dispatcher = KeyedDispatcher(1)
    assert await dispatcher.take(lambda: False) is True
    assert not dispatcher.take_nowait()


async def test_a_closed_dispatcher_gives_no_slot() -> None:
    dispatcher = KeyedDispatcher(1)
    await dispatcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        dispatcher.take_nowait()
    with pytest.raises(RuntimeError, match="closed"):
        await dispatcher.take()


# -- placing work in a key's order ---------------------------------------------------------------


async def test_place_on_a_free_key_begins_at_once_and_holds_the_key_until_resolved() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    future = placed(dispatcher, "doc", log, "mapped")
    assert log == [("begin", "mapped")]  # synchronously, inside place
    assert dispatcher.keys_in_flight == 1

    async def next_job() -> None:
        log.append(("start", "next"))

    following = await dispatcher.submit("doc", next_job)
    other = await dispatcher.submit("other", blocked(asyncio.Event(), log, "other"))
    await settle()
    assert ("start", "next") not in log  # the slot holds its key
    assert ("start", "other") in log  # other keys go on
    future.set_result(None)
    assert following is not None
    await asyncio.wait_for(following, 1)
    assert log[-1] == ("start", "next")
    assert other is not None
    other.cancel()
    assert await dispatcher.drain(timeout=1)
    await settle()
    assert dispatcher.keys_in_flight == 0
    assert dispatcher._predecessors == {}


async def test_place_behind_an_unfinished_job_begins_only_after_it() -> None:
    dispatcher = KeyedDispatcher(4)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("doc", blocked(gate, log, "job"))
    await settle()
    future = placed(dispatcher, "doc", log, "mapped")
    await settle()
    assert log == [("start", "job")]
    gate.set()
    await settle()
    assert log == [("start", "job"), ("end", "job"), ("begin", "mapped")]
    future.set_result(None)
    assert await dispatcher.drain(timeout=1)


async def test_place_behind_a_failed_job_still_begins() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []

    async def fail() -> None:
        raise ValueError("bad row")

    failed = await dispatcher.submit("doc", fail)
    future = placed(dispatcher, "doc", log, "mapped")
    assert failed is not None
    with pytest.raises(ValueError, match="bad row"):
        await failed
    await settle()
    assert log == [("begin", "mapped")]
    future.set_result(None)
    assert await dispatcher.drain(timeout=1)


async def test_slots_of_one_key_begin_one_after_another() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    futures = [placed(dispatcher, "doc", log, n) for n in range(3)]
    assert log == [("begin", 0)]
    for n, future in enumerate(futures):
        await settle()
        assert log == [("begin", i) for i in range(n + 1)]
        future.set_result(None)
    assert await dispatcher.drain(timeout=1)
    assert log == [("begin", 0), ("begin", 1), ("begin", 2)]


async def test_a_slot_resolved_with_an_exception_lets_its_successor_go() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    first = placed(dispatcher, "doc", log, "first")
    second = placed(dispatcher, "doc", log, "second")
    first.set_exception(ValueError("failed row"))
    await settle()
    assert log == [("begin", "first"), ("begin", "second")]
    second.set_result(None)
    assert await dispatcher.drain(timeout=1)
    with pytest.raises(ValueError, match="failed row"):
        first.result()


async def test_a_slot_cancelled_before_its_predecessor_ended_never_begins() -> None:
    dispatcher = KeyedDispatcher(4)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("doc", blocked(gate, log, "job"))
    await settle()
    future = placed(dispatcher, "doc", log, "mapped")
    future.cancel()  # its partition revoked while it waited for its key
    await settle()

    async def later() -> None:
        log.append(("start", "later"))

    following = await dispatcher.submit("doc", later)
    await settle()
    # The cancelled slot is done, but the job after it still waits for the one before it.
    assert log == [("start", "job")]
    gate.set()
    assert following is not None
    await asyncio.wait_for(following, 1)
    assert log == [("start", "job"), ("end", "job"), ("start", "later")]
    assert await dispatcher.drain(timeout=1)
    await settle()
    assert dispatcher.keys_in_flight == 0
    assert dispatcher._predecessors == {}


async def test_a_slot_placed_behind_a_cancelled_slot_waits_for_the_job_before_both() -> None:
    dispatcher = KeyedDispatcher(4)
    gate = asyncio.Event()
    log: list[Any] = []
    await dispatcher.submit("doc", blocked(gate, log, "job"))
    await settle()
    cancelled = placed(dispatcher, "doc", log, "cancelled")
    cancelled.cancel()
    await settle()
    last = placed(dispatcher, "doc", log, "last")
    await settle()
    assert log == [("start", "job")]
    gate.set()
    await settle()
    assert log == [("start", "job"), ("end", "job"), ("begin", "last")]
    last.set_result(None)
    assert await dispatcher.drain(timeout=1)
    await settle()
    assert dispatcher._predecessors == {}
    assert dispatcher.keys_in_flight == 0


async def test_a_job_behind_a_cancelled_slot_whose_predecessor_is_a_slot_waits_for_it() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    first = placed(dispatcher, "doc", log, "first")
    cancelled = placed(dispatcher, "doc", log, "cancelled")
    cancelled.cancel()
    await settle()

    async def later() -> None:
        log.append(("start", "later"))

    following = await dispatcher.submit("doc", later)
    await settle()
    assert log == [("begin", "first")]
    first.set_result(None)
    assert following is not None
    await asyncio.wait_for(following, 1)
    assert log == [("begin", "first"), ("start", "later")]
    assert await dispatcher.drain(timeout=1)


async def test_place_is_refused_while_a_barrier_is_unfinished_and_the_slot_stays_held() -> None:
    dispatcher = KeyedDispatcher(2)
    gate = asyncio.Event()
    log: list[Any] = []
    barrier = await dispatcher.submit(("db", "t", ""), blocked(gate, log, "ddl"),
                                      barrier=("db", "t"))
    assert dispatcher.take_nowait()
    refused = slot(dispatcher, ("db", "t", "1"))
    assert not dispatcher.place(("db", "t", "1"), refused, beginning(log, "refused"))
    assert not dispatcher.place(("db", "other", "1"), refused, beginning(log, "other table"))
    assert ("begin", "refused") not in log
    assert dispatcher.in_flight == 1  # only the barrier
    assert not dispatcher.take_nowait()  # the slot stays held, for start

    async def row() -> None:
        log.append(("start", "row"))

    task = dispatcher.start(("db", "t", "1"), row)
    await settle()
    assert ("start", "row") not in log  # after the barrier, as a submit would be
    gate.set()
    await asyncio.wait_for(task, 1)
    assert barrier is not None
    assert barrier.done()
    assert log == [("start", "ddl"), ("end", "ddl"), ("start", "row")]
    await settle()
    later = placed(dispatcher, ("db", "t", "1"), log, "after the barrier")
    assert log[-1] == ("begin", "after the barrier")
    later.set_result(None)
    assert await dispatcher.drain(timeout=1)


async def test_a_barrier_submitted_after_a_slot_waits_for_it() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    future = placed(dispatcher, ("db", "t", "1"), log, "mapped")

    async def ddl() -> None:
        log.append(("start", "ddl"))

    barrier = await dispatcher.submit(("db", "t", ""), ddl, barrier=("db", "t"))
    await settle()
    assert log == [("begin", "mapped")]
    future.set_result(None)
    assert barrier is not None
    await asyncio.wait_for(barrier, 1)
    assert log == [("begin", "mapped"), ("start", "ddl")]
    assert await dispatcher.drain(timeout=1)


# -- cancelling, draining, counting --------------------------------------------------------------


async def test_cancel_group_cancels_its_slots_only() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    revoked = [placed(dispatcher, f"r{n}", log, n, group="revoked") for n in range(2)]
    kept = placed(dispatcher, "k", log, "kept", group="kept")
    assert dispatcher.in_flight_for("revoked") == 2
    assert dispatcher.cancel_group("revoked") == 2
    assert all(future.cancelled() for future in revoked)
    assert not kept.done()
    assert await dispatcher.drain("revoked", timeout=1)
    assert dispatcher.in_flight_for("revoked") == 0
    assert dispatcher.in_flight == 1
    assert dispatcher.cancel_group("revoked") == 0
    kept.set_result(None)
    assert await dispatcher.drain(timeout=1)


async def test_cancel_all_cancels_slots_and_gives_their_slots_back() -> None:
    dispatcher = KeyedDispatcher(2)
    log: list[Any] = []
    futures = [placed(dispatcher, "doc", log, n) for n in range(2)]
    assert dispatcher.cancel_all() == 2
    assert all(future.cancelled() for future in futures)
    assert log == [("begin", 0)]  # the second, behind the first, never began
    assert await dispatcher.drain(timeout=1)
    await settle()
    assert dispatcher.take_nowait()
    assert dispatcher.take_nowait()
    assert dispatcher.keys_in_flight == 0
    assert dispatcher._predecessors == {}


async def test_drain_waits_for_slots() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    future = placed(dispatcher, "doc", log, "mapped", group="g")
    assert not await dispatcher.drain(timeout=0.02)
    assert not await dispatcher.drain("g", timeout=0.02)
    draining = asyncio.create_task(dispatcher.drain("g", timeout=1))
    await settle()
    assert not draining.done()
    future.set_result(None)
    assert await draining
    assert await dispatcher.drain(timeout=1)


async def test_in_flight_counts_slots_until_they_are_resolved() -> None:
    dispatcher = KeyedDispatcher(4)
    log: list[Any] = []
    first = placed(dispatcher, "a", log, "a", group="g")
    second = placed(dispatcher, "a", log, "a2", group="g")
    third = placed(dispatcher, "b", log, "b")
    assert dispatcher.in_flight == 3
    assert dispatcher.in_flight_for("g") == 2
    assert dispatcher.keys_in_flight == 2
    first.set_result(None)
    await settle()
    assert dispatcher.in_flight == 2
    second.set_result(None)
    third.set_result(None)
    await settle()
    assert dispatcher.in_flight == 0
    assert dispatcher.in_flight_for("g") == 0
    assert dispatcher.keys_in_flight == 0
    assert dispatcher._predecessors == {}


async def test_close_waits_for_slots() -> None:
    dispatcher = KeyedDispatcher(2)
    log: list[Any] = []
    future = placed(dispatcher, "doc", log, "mapped")
    closing = asyncio.create_task(dispatcher.close())
    await settle()
    assert not closing.done()
    future.set_result(None)
    await asyncio.wait_for(closing, 1)

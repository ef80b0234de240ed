"""Stepping a handler's coroutine without a task while it only awaits its own writes.

The rows of a fetch whose one route is an `async def` handler are run by their batch
(esupdater.mapped_batch), which steps each handler's coroutine itself: a ctx write awaited
meanwhile yields a `PendingWrite` to the batch, which queues its action with the rest of the
fetch's and sends the coroutine its item once Elasticsearch acknowledged it. A task per row,
a future per write and a loop callback per step are what the handler path spent most on.

Anything else a handler awaits (the client, a sleep, a gather) hands its coroutine to a task
of its own right there (`Rest`): from then on it runs exactly as it would have in a task.
No task is current while the batch steps a coroutine (`outside_task`), so a handler that
needs one (`asyncio.timeout`, the client's own requests) gets a RuntimeError saying so at
once, rather than timing out some other task (`needs_task`); its row is run again in a task
and its route's rows go to tasks from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from esupdater.actions import Action


class PendingWrite:
    """What a ctx write yields to the batch stepping its handler: the action to queue. The
    batch answers with the item (`send`) or the write's failure (`throw`)."""

    __slots__ = ("action",)

    def __init__(self, action: Action) -> None:
        self.action = action

    def __await__(self) -> Generator[Any, Any, dict[str, Any]]:
        item: dict[str, Any] = yield self
        return item


class Rest:
    """The rest of a handler's coroutine, awaited in a task of its own: from where it
    yielded `yielded` (something only a task can wait for), or, with `write`, from the ctx
    write it awaits, whose result `write` gives. Sends and throws go through as a task's
    would, so the coroutine cannot tell it began elsewhere."""

    __slots__ = ("coro", "write", "yielded")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], yielded: Any,
        write: Awaitable[Any] | None = None,
    ) -> None:
        self.coro = coro
        self.yielded = yielded
        self.write = write

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        yielded = self.yielded
        if self.write is not None:
            try:
                result = yield from self.write.__await__()
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancel too: raised where it awaits
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(result)
                except StopIteration as stop:
                    return stop.value
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - as a task throws it in
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def outside_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    """Make no task current (see the module's docstring); returns the one that was, for
    `back_in_task`. A handler stepped by a lane's or the consume loop's task would
    otherwise take that task for its own (`asyncio.timeout` would cancel it)."""
    task = asyncio.current_task(loop)
    if task is not None:
        asyncio.tasks._leave_task(loop, task)
    return task


def back_in_task(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None) -> None:
    """Undo `outside_task`."""
    if task is not None:
        asyncio.tasks._enter_task(loop, task)


def needs_task(exc: BaseException) -> bool:
    """Whether a handler failed only for being stepped outside a task: the RuntimeError
    asyncio's and aiohttp's timeouts raise then, also as the cause of another (the
    client's ConnectionError carries aiohttp's in `errors`)."""
    seen: list[BaseException] = [exc]
    for _ in range(32):  # a few links at most: no endless chain
        if not seen:
            break
        error = seen.pop()
        if isinstance(error, RuntimeError) and "inside a task" in str(error):
            return True
        seen += [e for e in (error.__cause__, error.__context__) if e is not None]
        seen += [e for e in getattr(error, "errors", ()) if isinstance(e, BaseException)]
    return False

"""Stepping a handler's coroutine without a task while it only awaits its own writes.

The rows of a fetch whose one route is an `async def` handler that awaits nothing but its
ctx writes (`only_awaits_writes`, read from its source once at registration) are run by
their batch (esupdater.mapped_batch), which steps each handler's coroutine itself: a ctx
write awaited meanwhile yields a `PendingWrite` to the batch, which queues its action with
the rest of the fetch's and sends the coroutine its item once Elasticsearch acknowledged it.
A task per row, a future per write and a loop callback per step are what the handler path
spent most on.

A write that fails, must wait for an earlier write of its document or cannot be grouped
hands the coroutine to a task of its own right there (`Rest`): from then on it runs exactly
as it would have in a task, and so does anything else such a coroutine yields (`ctx.bulk`'s
gather). No task is current while the batch steps a coroutine (`outside_task`).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
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


_new = object.__new__


@types.coroutine
def pending_write(action: Action) -> Generator[Any, Any, dict[str, Any]]:
    """`await PendingWrite(action)` with no call from C: a generator-based coroutine is
    awaited as it is, while a `PendingWrite` would be constructed, then asked for
    `__await__`, each a call into Python from C (about 1 µs a row together)."""
    pending: PendingWrite = _new(PendingWrite)
    pending.action = action
    item: dict[str, Any] = yield pending
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
        # What the coroutine waits for: the write, or what it yielded (a task resumes it
        # with None once that is done, or throws in what came of it).
        waiting: Generator[Any, Any, Any] = (
            _wait_for(self.yielded) if self.write is None else self.write.__await__())
        while True:
            throwing: BaseException | None = None
            try:
                sending = yield from waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancel too: raised where it awaits
                sending, throwing = None, exc
            try:
                yielded = coro.send(sending) if throwing is None else coro.throw(throwing)
            except StopIteration as stop:
                return stop.value
            waiting = _wait_for(yielded)


def _wait_for(yielded: Any) -> Generator[Any, Any, None]:
    """Hands what a coroutine yielded to the task now running it."""
    yield yielded


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


#: The ctx methods whose awaiting a batch can step (each returns a write's coroutine).
_WRITES = frozenset(("index", "upsert", "update", "delete", "write", "bulk"))


def only_awaits_writes(handler: Callable[..., Any]) -> bool:
    """Whether every `await` in the handler's source is of one of its ctx's writes, with no
    `async with` or `async for`: then nothing it runs while its batch steps it can need a
    task (asyncio.timeout, the client's requests, anyio's cancel scopes, which all take the
    current task). Such a handler is stepped by its batch; any other runs in a task of its
    own per row. False when its source cannot be read, or is not all of what runs (a
    wrapper's)."""
    found = _handler_source(handler)
    if found is None:
        return False
    function, ctx = found
    for node in ast.walk(function):
        if isinstance(node, ast.AsyncWith | ast.AsyncFor):
            return False
        if isinstance(node, ast.comprehension) and node.is_async:
            return False
        if isinstance(node, ast.Name) and node.id == ctx and isinstance(node.ctx, ast.Store):
            return False  # ctx rebound: whatever it is then, not known here
        if isinstance(node, ast.Await) and not _is_write(node.value, ctx):
            return False
    return True


def reads_write_results(handler: Callable[..., Any]) -> bool:
    """Whether the handler may use what a ctx write it awaits returns: False only when
    each `await` in its source is a statement of its own (`await ctx.index(...)`), so its
    writes' items are never read. Then its batch asks Elasticsearch for each item's status
    and error only, as for a mapper's writes (a smaller answer to build and parse)."""
    found = _handler_source(handler)
    if found is None:
        return True
    function, _ = found
    discarded = {id(node.value) for node in ast.walk(function) if isinstance(node, ast.Expr)}
    return any(
        isinstance(node, ast.Await) and id(node) not in discarded for node in ast.walk(function)
    )


def awaits_every_write(handler: Callable[..., Any]) -> bool:
    """Whether the handler awaits each ctx write right where it calls it
    (`await ctx.index(...)`) and uses its ctx for nothing but `ctx.<name>`: then no write it
    calls can be left unawaited or unfinished when it returns, and its stepped rows skip
    that check (`Context.unfinished`). False when its source cannot be read, or ctx goes
    anywhere else (passed on, rebound, a write's coroutine kept or gathered)."""
    found = _handler_source(handler)
    if found is None:
        return False
    function, ctx = found
    awaited = {id(node.value) for node in ast.walk(function) if isinstance(node, ast.Await)}
    called = {id(node.func): node for node in ast.walk(function) if isinstance(node, ast.Call)}
    used_as = {id(node.value): node for node in ast.walk(function)
               if isinstance(node, ast.Attribute)}
    for node in ast.walk(function):
        if not (isinstance(node, ast.Name) and node.id == ctx):
            continue
        attribute = used_as.get(id(node))
        if not isinstance(node.ctx, ast.Load) or attribute is None:
            return False  # rebound, or ctx itself passed on or kept
        if attribute.attr not in _WRITES and attribute.attr not in _PLAIN_ATTRIBUTES:
            return False  # a method or attribute not known here
        if attribute.attr in _WRITES:
            call = called.get(id(attribute))
            if call is None or id(call) not in awaited:
                return False  # a write not awaited where it is called
    return True


#: The ctx attributes that are not writes (reading them leaves no write behind).
_PLAIN_ATTRIBUTES = frozenset(("change", "es", "log"))


def _handler_source(handler: Callable[..., Any]) -> tuple[ast.AsyncFunctionDef, str] | None:
    """The handler's `async def` as parsed from its source, and its ctx parameter's name;
    None when its source cannot be read or is not all of what runs (a wrapper's)."""
    if hasattr(handler, "__wrapped__"):
        return None  # its source would be the wrapped function's, not what runs
    try:
        source = textwrap.dedent(inspect.getsource(handler))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    found = [node for node in tree.body if isinstance(node, ast.AsyncFunctionDef)]
    if len(found) != 1:
        return None
    function = found[0]
    parameters = function.args.posonlyargs + function.args.args
    if len(parameters) < 2:  # (change, ctx), after self if a method
        return None
    return function, parameters[-1].arg


def _is_write(awaited: ast.expr, ctx: str) -> bool:
    """`ctx.index(...)` and the like."""
    return (
        isinstance(awaited, ast.Call) and isinstance(awaited.func, ast.Attribute)
        and isinstance(awaited.func.value, ast.Name) and awaited.func.value.id == ctx
        and awaited.func.attr in _WRITES
    )

"""Rows whose one route is a mapper, run with no task, coroutine or Context per row.

A mapped row holds a slot of the dispatcher like any job and keeps its key's order: it begins
when its key's earlier rows are done, calls the mapper, queues the actions into the bulk
writer and is done when Elasticsearch has acknowledged them all. For a row of one action
(the usual case) the row itself is the future the writer answers, so going through costs a
few calls and no scheduling. Whatever goes wrong (the mapper raises, a write fails) sends the
row on through the handler path, in a task: the writes are finished as `ctx` finishes them
(transient and held failures retried in their document's order), then the runner's retries,
set-aside and hold apply with the mapper run again (esupdater.mapping.as_handler).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Protocol

from elasticsearch import AsyncElasticsearch

from esupdater.actions import Action
from esupdater.bulk import BulkWriter, Ticket
from esupdater.change import Change
from esupdater.context import Context
from esupdater.dispatch import KeyedDispatcher
from esupdater.driven import Rest
from esupdater.handling import stray_cancel
from esupdater.mapping import Mapper, actions_of
from esupdater.offsets import PartitionOffsets
from esupdater.routing import Route
from esupdater.stats import Stats

#: How a row goes on after a failed first attempt: (row, what failed) -> the handler path.
GoOn = Callable[["MappedRow", Exception], Awaitable[None]]


class RowOwner(Protocol):
    """What holds a mapped row's slot and key for it, told when the row is done."""

    def row_finished(self, row: MappedRow) -> None: ...


class MappedRows:
    """Starts mapped rows in the dispatcher and settles them from the writer's answers."""

    def __init__(
        self, writer: BulkWriter, dispatcher: KeyedDispatcher, stats: Stats, go_on: GoOn,
        es: AsyncElasticsearch | None = None,
    ) -> None:
        self.writer = writer
        self.dispatcher = dispatcher
        self.stats = stats
        self.go_on = go_on
        self.es = es  # a handler's ctx.es

    def start(
        self, loop: asyncio.AbstractEventLoop, key: Hashable, group: Hashable,
        partition: PartitionOffsets, change: Change, route: Route, mapper: Mapper,
        value: bytes | None,
    ) -> bool:
        """Place a row in the slot the caller holds; False (slot still held) while a DDL
        barrier is unfinished: then it must run as a job."""
        row = MappedRow(loop, self, key, group, partition, change, route, mapper, value)
        return self.dispatcher.place(key, row, row.begin, group=group)

    def map(self, row: MappedRow) -> None:
        """Run the mapper and queue its actions (the key's earlier rows are done)."""
        row.started = time.perf_counter()
        mapper = row.mapper
        assert mapper is not None  # only a mapped row begins by itself
        try:
            actions = actions_of(mapper(row.change), mapper)
        except Exception as exc:  # noqa: BLE001 - a user's mapper may raise anything
            row.actions = []
            self.failed(row, exc)
            return
        self.queue(row, actions)

    def queue(self, row: MappedRow, actions: list[Action]) -> None:
        """Queue a mapped row's actions into the writer, one by one."""
        row.actions = actions
        writer = self.writer
        try:
            if len(actions) == 1:
                # The row answers for its one action: set_result / set_exception below.
                row.tickets = [writer.queue_nowait(actions[0], row)]  # type: ignore[arg-type]
            elif actions:
                self._queue_several(row, actions)
            else:
                self.done(row)
        except Exception as exc:  # noqa: BLE001 - an action the writer cannot take (an
            # unhashable _id): the mapper's own failure, as it is a handler's
            self._withdraw(row)
            self.failed(row, exc)

    def _queue_several(self, row: MappedRow, actions: list[Action]) -> None:
        writer = self.writer
        loop = row.get_loop()
        row.left = len(actions)
        futures: list[asyncio.Future[dict[str, Any]]] = []
        row.futures = futures
        for action in actions:
            future = loop.create_future()
            row.tickets.append(writer.queue_nowait(action, future))
            futures.append(future)
            future.add_done_callback(row.written)

    def _withdraw(self, row: MappedRow) -> None:
        """Take back what `map` queued of a row before it failed: not sent, let go of."""
        futures, row.futures = row.futures, None  # `written` no longer counts them
        for future in futures or ():
            future.cancel()
        for ticket, key in row.tickets:
            self.writer.done_with(ticket, key)
        row.tickets = []
        row.actions = []

    def answered(self, row: MappedRow, failure: BaseException | None) -> None:
        """Every action of the row has its answer (or was withdrawn)."""
        if row.done():  # cancelled meanwhile: MappedRow.cancel let go of the writes
            return
        if failure is not None:
            self.failed(row, failure)
            return
        writer = self.writer
        for ticket, key in row.tickets:
            writer.done_with(ticket, key)
        row.tickets = []
        self.done(row)

    def done(self, row: MappedRow) -> None:
        """The row went through: its offset may be committed, its key's next row begin."""
        change = row.change
        stats = self.stats
        appended_at = row.partition.row_done(change.position.offset)
        stats.rows_done += 1
        if appended_at is not None:
            stats.kafka_to_ack_seconds.observe(time.time() - appended_at)
        stats.sensor.handler_done(row.route, change, time.perf_counter() - row.started, "done")
        row.finish()

    def rest(
        self, row: MappedRow, coro: Coroutine[Any, Any, Any], ctx: Context, yielded: Any,
        failure: BaseException | None = None,
    ) -> None:
        """A handler stepped by its batch goes on in a task (esupdater.driven): from where
        it yielded `yielded`, or, if `row.actions` holds the write it awaits, from that
        write, finished here (`failure`: how its first attempt, `row.tickets`, went)."""
        task = row.task = row.get_loop().create_task(self._rest(row, coro, ctx, yielded,
                                                                failure))
        task.add_done_callback(row.ended)

    async def _rest(
        self, row: MappedRow, coro: Coroutine[Any, Any, Any], ctx: Context, yielded: Any,
        failure: BaseException | None,
    ) -> None:
        writer, name = self.writer, row.route.name
        tickets, row.tickets = row.tickets, []  # left for `cancel` until begun
        write: Awaitable[Any] | None = None
        if tickets:
            ((ticket, key),) = tickets
            write = writer.finish(row.actions[0], ticket, key, failure)
        elif row.actions:  # one its batch could not queue with the others
            write = writer.execute(row.actions[0])
        failed: Exception | None = None
        try:
            try:
                await Rest(coro, yielded, write)
            except asyncio.CancelledError as exc:
                failed = stray_cancel(row.route, exc)  # re-raised if a real cancel
            if failed is None:
                failed = ctx.unawaited_error(name)
        except asyncio.CancelledError:
            ctx.unawaited_error(name)
            raise
        except Exception as exc:  # noqa: BLE001 - a user's handler may raise anything
            ctx.unawaited_error(name)  # close what it left unstarted
            failed = exc
        if failed is None:
            self.done(row)
            return
        await self.go_on(row, failed)
        if not row.done():
            row.finish()

    def failed(self, row: MappedRow, failure: BaseException) -> None:
        """Go on in a task: `_again`."""
        task = row.task = row.get_loop().create_task(self._again(row, failure))
        task.add_done_callback(row.ended)

    async def _again(self, row: MappedRow, failure: BaseException) -> None:
        """Finish the writes as `ctx` would (retried while transient or held), then, if one
        failed for good or the mapper raised, the handler path."""
        failed = failure if not row.tickets else None
        writer = self.writer
        tickets, row.tickets = row.tickets, []
        futures = row.futures
        settled = 0
        try:
            for action, (ticket, key) in zip(row.actions, tickets, strict=True):
                first = failure if futures is None else futures[settled].exception()
                settled += 1  # finish lets go of it, whatever happens
                try:
                    await writer.finish(action, ticket, key, first)
                except Exception as exc:  # noqa: BLE001 - the runner classifies it below
                    failed = failed or exc
        finally:
            for ticket, key in tickets[settled:]:  # cancelled before their turn
                writer.done_with(ticket, key)
        if failed is None:
            self.done(row)
            return
        if not isinstance(failed, Exception):
            raise failed  # not an Exception (KeyboardInterrupt...): not the row's failure
        await self.go_on(row, failed)
        if not row.done():
            row.finish()


class MappedRow(asyncio.Future[None]):
    """One mapped row in flight and its place in the dispatcher: resolved when the row is
    done. For a row of one action it is also that action's future in the writer
    (`set_result` / `set_exception` below are the writer's answer). Cancelling it
    (revocation, stop) withdraws the writes not yet sent."""

    __slots__ = ("actions", "change", "futures", "group", "key", "left", "mapper", "owner",
                 "partition", "route", "rows", "started", "task", "tickets", "value")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, rows: MappedRows, key: Hashable, group: Hashable,
        partition: PartitionOffsets, change: Change, route: Route, mapper: Mapper | None,
        value: bytes | None,
    ) -> None:
        super().__init__(loop=loop)
        self.rows = rows
        self.key = key
        self.group = group
        self.partition = partition
        self.change = change
        self.route = route
        self.mapper = mapper
        self.value = value
        self.started = 0.0
        self.actions: list[Action] = []
        # Each queued action's place in its document's order, until settled.
        self.tickets: list[tuple[Ticket, tuple[Any, Any] | None]] = []
        self.futures: list[asyncio.Future[dict[str, Any]]] | None = None  # several actions
        self.left = 0
        self.task: asyncio.Task[None] | None = None
        #: The batch it was fed in (esupdater.mapped_batch), which holds its slot and key
        #: for it; None when it holds its own in the dispatcher.
        self.owner: RowOwner | None = None

    def begin(self) -> None:
        """Its key's earlier rows are done (the dispatcher's call)."""
        self.rows.map(self)

    def set_result(self, result: Any) -> None:
        """The writer: its one action went through."""
        self.rows.answered(self, None)

    def set_exception(self, exception: BaseException | type[BaseException]) -> None:
        """The writer: its one action failed (to retry, or refused)."""
        failure = exception if isinstance(exception, BaseException) else exception()
        self.rows.answered(self, failure)

    def written(self, future: asyncio.Future[dict[str, Any]]) -> None:
        """One of several actions answered."""
        futures = self.futures
        if futures is None:  # withdrawn
            return
        self.left -= 1
        if not self.left and not self.done():
            failure = next((f.exception() for f in futures if f.exception() is not None), None)
            self.rows.answered(self, failure)

    def finish(self) -> None:
        """Done: resolved, and the slot given back."""
        asyncio.Future.set_result(self, None)
        if self.owner is None:
            self.rows.dispatcher.release(self.key, self.group, self)
        else:
            self.owner.row_finished(self)

    def ended(self, task: asyncio.Task[None]) -> None:
        """The handler path's task ended: it resolved the row, or the row was cancelled."""
        if not task.cancelled():
            task.exception()  # observed: the handler path lets nothing escape

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        for future in self.futures or ():
            future.cancel()  # the writer skips what it has not sent yet
        rows = self.rows
        if self.task is not None:
            self.task.cancel(msg)  # it lets go of the writes it took, and tells the sensor
        elif self.started:  # begun: cancelled mid-write, told as a handler's run is
            rows.stats.sensor.handler_done(self.route, self.change,
                                           time.perf_counter() - self.started, "cancelled")
        writer = rows.writer
        for ticket, key in self.tickets:  # not taken by the task (if any) yet
            writer.done_with(ticket, key)
        self.tickets = []
        cancelled = super().cancel(msg)
        if self.owner is None:
            rows.dispatcher.release(self.key, self.group, self)
        return cancelled

"""A fetch's rows settled together: one holder in the pool, one write group per lane.

The rows of one fetched batch whose one route is a mapper, or a handler that awaits only its
ctx writes (esupdater.driven), and whose key has nothing in flight are claimed in the
dispatcher by one `MappedBatch` (a slot each, their keys held). They are mapped in one pass,
or their handlers stepped to the write they await, and written through
`BulkWriter.queue_group`: their action lines serialised in a loop, one answer call per
group, and no future, task, ticket queue or pool entry per row; a handler is then sent its
item and stepped on. A row that does not fit goes on alone as a `MappedRow` owned by the
batch, with the retries, set-aside and document order it always had: several actions, a
document with another unsettled write, a mapper or handler that raises, a write that fails.
The batch ends, giving back its slots and keys, once every row is done, so a key's next row
never overtakes one of these.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Coroutine, Hashable, Iterable
from typing import Any

from esupdater.actions import Action
from esupdater.bulk import Group
from esupdater.change import Change
from esupdater.context import Context, stepped_context
from esupdater.driven import PendingWrite, back_in_task, outside_task
from esupdater.errors import HandlerCancelledError
from esupdater.mapped_rows import MappedRow, MappedRows
from esupdater.mapping import Mapper, actions_of
from esupdater.offsets import PartitionOffsets
from esupdater.routing import Route
from esupdater.telemetry import NullSensor

#: One claimed row: its key, change, route, mapper (None: an `async def` handler, stepped
#: here, esupdater.driven) and record value.
_Entry = tuple[Hashable, Change, Route, "Mapper | None", "bytes | None"]


#: Rows a batch takes at most, followers included: beyond, a key's later rows go on alone.
_MOST_ROWS = 4096


class MappedBatch(asyncio.Future[None]):
    """Rows of one partition's fetch, claimed together; resolved when all are done.

    A key may come back in the same fetch (an INSERT, then an UPDATE of the row), or in a
    later one while its row here is unfinished: its later rows follow here, each mapped and
    written once the one before it is done, as the key's next job would be. A row that is
    done gives back its slot and, if the last of its key here, its key, and the batch lets
    go of it: a batch pins no more than its unfinished rows. Cancelling it (revocation,
    stop) withdraws the writes not yet sent and cancels the rows that went on alone."""

    __slots__ = ("awaited", "driven", "entries", "followers", "group", "groups", "held", "left",
                 "partition", "rows", "slow", "started")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, rows: MappedRows, group: Hashable,
        partition: PartitionOffsets,
    ) -> None:
        super().__init__(loop=loop)
        self.rows = rows
        self.group = group
        self.partition = partition
        self.entries: list[_Entry | None] = []  # None once done
        # The rows of a key already in the batch, by key, in order: not mapped until the
        # row before is done.
        self.followers: dict[Hashable, deque[int]] = {}
        self.groups: list[Group] = []  # queued, not answered yet
        self.slow: dict[MappedRow, int] = {}  # unfinished rows gone on alone: their number
        # Handlers being stepped here, by row number: awaiting the write they yielded.
        self.driven: dict[int, tuple[Coroutine[Any, Any, Any], Context]] = {}
        # A handler stepped here may read its writes' items: its groups ask for whole ones.
        self.awaited = False
        self.left = 0  # rows not done yet
        self.held = 0  # slots held, once sent
        self.started = 0.0

    def takes(self, group: Hashable) -> bool:
        """Whether a later row of a key it holds may follow here: a row of its partition,
        while the batch is not too long-lived (a job placed after a batch, a primary-key
        change's, waits for all of it)."""
        return group == self.group and len(self.entries) < _MOST_ROWS

    def follow(self, entry: _Entry) -> None:
        """Add a row whose key this batch holds (the caller took its slot with
        `claim_again`): mapped once the key's row before it is done. A batch holds a key
        until that key's last row in it is done, so there always is one."""
        queue = self.followers.get(entry[0])
        if queue is None:
            queue = self.followers[entry[0]] = deque()
        queue.append(len(self.entries))
        self.entries.append(entry)
        if self.started:  # sent already: one more row before the batch is done
            self.left += 1
            self.held += 1

    def send(self) -> None:
        """Map the claimed rows and queue their writes; the batch enters the pool (once,
        and before its feeder awaits anything: until then nothing can cancel it)."""
        entries = self.entries
        self.rows.dispatcher.admit(self, len(entries), self.group)
        self.started = time.perf_counter()
        self.held = len(entries)
        self.left = len(entries) + 1  # one more while sending: nothing finishes it meanwhile
        if self.followers:
            following = {number for queue in self.followers.values() for number in queue}
            finished = self._map([n for n in range(len(entries)) if n not in following])
        else:
            finished = self._map(range(len(entries)))
        self.left -= 1
        self._rows_done(finished)  # (ends the batch if nothing is left)

    def _map(self, numbers: Iterable[int]) -> list[int]:
        """Map rows `numbers` (or step their handlers until they await a write) and queue
        their writes: grouped, or alone where they must. Returns the rows done already
        (nothing to write), for the caller to count: not counted here, so a key's rows
        with nothing to write do not recurse one into the next."""
        rows = self.rows
        entries = self.entries
        single: list[tuple[int, Action]] = []
        alone: list[tuple[int, list[Action]]] = []
        handlers: list[tuple[int, Any, BaseException | None]] = []
        finished: list[int] = []
        for number in numbers:
            _, change, _, mapper, _ = entries[number]  # type: ignore[misc]  # unfinished
            if mapper is None:
                handlers.append((number, None, None))
                continue
            try:
                result = mapper(change)
                if type(result) is dict:  # one action: actions_of's first case
                    single.append((number, result))
                    continue
                actions = actions_of(result, mapper)
            except Exception as exc:  # noqa: BLE001 - a user's mapper may raise anything
                self._failed(number, exc)
                continue
            if len(actions) == 1:
                single.append((number, actions[0]))
            elif actions:
                alone.append((number, actions))  # several: as a row of its own
            else:
                finished.append(number)
        if handlers:
            finished += self._step(handlers, single)
        if single:
            self._queue(single)
        for number, actions in alone:
            rows.queue(self._alone(number), actions)
        return finished

    def _queue(self, single: list[tuple[int, Action]]) -> None:
        """Queue one action of each row as groups; the ones left out go on alone."""
        rows = self.rows
        left_out, groups = rows.writer.queue_group(self, single, self.awaited)
        self.groups += groups
        if left_out:
            by_row = dict(single)
            driven = self.driven
            for number in left_out:
                row = self._alone(number)
                row.actions = [by_row[number]]
                if number in driven:  # a handler's write: it awaits it in a task
                    coro, ctx = driven.pop(number)
                    rows.rest(row, coro, ctx, None)
                else:
                    rows.queue(row, row.actions)

    def _step(
        self, handlers: list[tuple[int, Any, BaseException | None]],
        single: list[tuple[int, Action]],
    ) -> list[int]:
        """Step each row's handler (begun here if new) with the value, or the failure, of
        what it awaited, until it awaits a ctx write (added to `single`) or returns (the
        rows returned). Whatever else it does sends it on in a task (esupdater.driven)."""
        rows = self.rows
        writer, es = rows.writer, rows.es
        entries = self.entries
        driven = self.driven
        loop = self.get_loop()
        finished: list[int] = []
        current = outside_task(loop)
        try:
            for number, value, failure in handlers:
                state = driven.get(number)
                route = entries[number][2]  # type: ignore[index]  # unfinished
                if state is None:
                    change = entries[number][1]  # type: ignore[index]
                    ctx = stepped_context(writer, es, change, not route.awaits_every_write)
                    # An async def (routing checks it): its coroutine.
                    coro: Coroutine[Any, Any, Any] = route.handler(  # type: ignore[assignment]
                        change, ctx)
                    driven[number] = (coro, ctx)
                    if route.reads_items:
                        self.awaited = True
                else:
                    coro, ctx = state
                ctx.driving = True
                try:
                    yielded = coro.send(value) if failure is None else coro.throw(failure)
                except StopIteration:
                    del driven[number]
                    ctx.driving = False
                    if not route.awaits_every_write and ctx.unfinished():
                        unawaited = ctx.unawaited_error(route.name)
                        if unawaited is not None:
                            self._failed(number, unawaited)
                            continue
                    finished.append(number)
                    continue
                except asyncio.CancelledError as exc:  # nothing cancels it while stepped
                    del driven[number]
                    ctx.driving = False
                    ctx.unawaited_error(route.name)
                    error = HandlerCancelledError(
                        f"{route.name} raised CancelledError ({exc}) without being cancelled")
                    error.__cause__ = exc
                    self._failed(number, error)
                    continue
                except Exception as exc:  # noqa: BLE001 - a user's handler may raise anything
                    del driven[number]
                    ctx.driving = False
                    ctx.unawaited_error(route.name)  # close what it left unstarted
                    self._failed(number, exc)
                    continue
                finally:
                    ctx.driving = False
                if type(yielded) is PendingWrite:
                    single.append((number, yielded.action))
                else:  # awaits something only a task can wait for (ctx.bulk's gather)
                    del driven[number]
                    rows.rest(self._alone(number), coro, ctx, yielded)
        finally:
            back_in_task(loop, current)
        return finished

    def _failed(self, number: int, failure: Exception) -> None:
        """Row `number`'s first attempt failed: on through the handler path, in a task."""
        row = self._alone(number)
        row.actions = []
        self.rows.failed(row, failure)

    def _alone(self, number: int) -> MappedRow:
        """Row `number` goes on as a MappedRow of its own, its slot and key still held here."""
        key, change, route, mapper, value = self.entries[number]  # type: ignore[misc]
        row = MappedRow(self.get_loop(), self.rows, key, self.group, self.partition, change,
                        route, mapper, value)  # (a handler's: its mapper None, never called)
        row.owner = self
        row.started = self.started
        self.slow[row] = number
        return row

    def group_answered(
        self, group: Group, odd: dict[int, asyncio.Future[dict[str, Any]]],
        answers: list[dict[str, Any]] | None,
    ) -> None:
        """The writer: every action of `group` has its answer (see GroupOwner). A mapped
        row is done; a handler is sent its item and stepped on."""
        if self.done():
            return
        self.groups.remove(group)
        rows = self.rows
        driven = self.driven
        finished: list[int] = []
        resumed: list[tuple[int, Any, BaseException | None]] = []
        for at, number in enumerate(group.rows):
            if odd and (future := odd.get(at)) is not None:
                failure = future.exception()
                if failure is not None:  # retried or refused: on alone, as a row's write
                    row = self._alone(number)
                    row.actions = [group.actions[at]]
                    row.tickets = [(group.tickets[at], group.keys[at])]
                    if number in driven:  # the handler awaits it, in a task now
                        coro, ctx = driven.pop(number)
                        rows.rest(row, coro, ctx, None, failure)
                    else:
                        rows.failed(row, failure)
                    continue
                # Not simply applied but done all the same (stale, nothing to delete).
                rows.writer.done_with(group.tickets[at], group.keys[at])
                if number in driven:
                    resumed.append((number, future.result(), None))
                    continue
            elif driven and number in driven:
                item = next(iter(answers[at].values()))  # type: ignore[index]  # not all odd
                resumed.append((number, item, None))
                continue
            finished.append(number)
        if resumed:
            single: list[tuple[int, Action]] = []
            finished += self._step(resumed, single)
            if single:
                self._queue(single)
        self._rows_done(finished)

    def _rows_done(self, numbers: list[int]) -> None:
        """Rows `numbers` went through: their offsets may be committed, the batch lets go
        of them (`_after`)."""
        self._after(self._account(numbers) if numbers else [])

    def _account(self, numbers: list[int]) -> list[Hashable]:
        """Count rows `numbers` as done (offsets, statistics); returns their keys."""
        rows = self.rows
        stats = rows.stats
        entries = self.entries
        finished: list[_Entry] = []
        for number in numbers:
            finished.append(entries[number])  # type: ignore[arg-type]  # unfinished till now
            entries[number] = None
        appended = self.partition.rows_done([entry[1].position.offset for entry in finished])
        if appended:
            now = time.time()
            observe = stats.kafka_to_ack_seconds.observe
            for appended_at in appended:
                observe(now - appended_at)
        sensor = stats.sensor
        if type(sensor) is not NullSensor:  # (the default one hears nothing: not called)
            sensor.rows_done([(entry[2], entry[1]) for entry in finished],
                             time.perf_counter() - self.started)
        stats.rows_done += len(finished)
        return [entry[0] for entry in finished]

    def row_finished(self, row: MappedRow) -> None:
        """A row that went on alone is done."""
        number = self.slow.pop(row)
        self.entries[number] = None
        self._after([row.key])

    def _after(self, keys: list[Hashable]) -> None:
        """One row of each of `keys` is done: its slot is free, the row following it (if
        any) is mapped and written now, and a key with none left is given back (its next
        row need not wait for the rest of the batch); the batch ends if nothing is left.
        Rows done as soon as begun (nothing to write) go round again here."""
        dispatcher = self.rows.dispatcher
        followers = self.followers
        while True:
            done = len(keys)
            self.left -= done
            self.held -= done
            dispatcher.release_slots(done)
            finished = None
            if followers:
                numbers = []
                last = []
                for key in keys:
                    queue = followers.get(key)
                    if queue is None:
                        last.append(key)
                        continue
                    numbers.append(queue.popleft())
                    if not queue:
                        del followers[key]
                keys = last
                if numbers:
                    self.left += 1  # while mapping: nothing finishes the batch meanwhile
                    finished = self._map(numbers)
                    self.left -= 1
            dispatcher.release_keys(keys, self)
            if not finished:
                break
            keys = self._account(finished)
        if not self.left:
            self._finish()

    def _finish(self) -> None:
        asyncio.Future.set_result(self, None)
        self._release()

    def _release(self) -> None:
        """Out of the pool, with the slots and keys it still holds."""
        entries, self.entries = self.entries, []
        self.slow = {}
        self.followers = {}
        self.driven = {}
        keys = [entry[0] for entry in entries if entry is not None]
        self.rows.dispatcher.release_claims(self, keys, self.held, self.group)
        self.held = 0

    def cancel(self, msg: Any = None) -> bool:
        if self.done():
            return False
        rows = self.rows
        writer, sensor = rows.writer, rows.stats.sensor
        seconds = time.perf_counter() - self.started
        for group in self.groups:  # the writer skips them, or ignores their answer
            for ticket, key in zip(group.tickets, group.keys, strict=True):
                writer.done_with(ticket, key)
            for number in group.rows:
                entry = self.entries[number]
                if entry is not None:
                    sensor.handler_done(entry[2], entry[1], seconds, "cancelled")
        self.groups = []
        if self.driven:
            self._cancel_driven(msg)
        for row in list(self.slow):
            row.cancel(msg)
        cancelled = super().cancel(msg)
        self._release()
        return cancelled

    def _cancel_driven(self, msg: Any) -> None:
        """Cancel the handlers stepped here as a task's cancel would: a CancelledError where
        each awaits its write, so its `finally` and `async with` exits run; one that awaits
        anything more is closed."""
        driven, self.driven = self.driven, {}
        loop = self.get_loop()
        current = outside_task(loop)
        try:
            for coro, ctx in driven.values():
                try:
                    coro.throw(asyncio.CancelledError(msg))
                except (StopIteration, asyncio.CancelledError):
                    pass
                except Exception:  # noqa: BLE001 - cancelled: its failure no longer counts
                    pass
                else:
                    coro.close()
                ctx.unawaited_error("")  # close the writes it never began
        finally:
            back_in_task(loop, current)

"""A fetch's mapped rows settled together: one holder in the pool, one write group per lane.

The rows of one fetched batch whose one route is a mapper and whose key has nothing in flight
are claimed in the dispatcher by one `MappedBatch` (a slot each, their keys held), mapped in
one pass and written through `BulkWriter.queue_group`: their action lines serialised in a
loop, one answer call per group, and no future, ticket queue or pool entry per row. A row
that does not fit goes on alone as a `MappedRow` owned by the batch, with the retries,
set-aside and document order it always had: several actions, a document with another
unsettled write, a mapper that raises, a write that fails. The batch ends, giving back its
slots and keys, once every row is done, so a key's next row never overtakes one of these.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

from esupdater.actions import Action
from esupdater.bulk import Group
from esupdater.change import Change
from esupdater.mapped_rows import MappedRow, MappedRows
from esupdater.mapping import Mapper, actions_of
from esupdater.offsets import PartitionOffsets
from esupdater.routing import Route
from esupdater.telemetry import NullSensor

#: One claimed row: its key, change, route, mapper and record value.
_Entry = tuple[Hashable, Change, Route, Mapper, "bytes | None"]


#: Rows a batch takes at most, followers included: beyond, a key's later rows go on alone.
_MOST_ROWS = 4096


class MappedBatch(asyncio.Future[None]):
    """Mapped rows of one partition's fetch, claimed together; resolved when all are done.

    A key may come back in the same fetch (an INSERT, then an UPDATE of the row), or in a
    later one while its row here is unfinished: its later rows follow here, each mapped and
    written once the one before it is done, as the key's next job would be. A row that is
    done gives back its slot and, if the last of its key here, its key, and the batch lets
    go of it: a batch pins no more than its unfinished rows. Cancelling it (revocation,
    stop) withdraws the writes not yet sent and cancels the rows that went on alone."""

    __slots__ = ("entries", "followers", "group", "groups", "held", "left", "partition", "rows",
                 "slow", "started")

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
            self._map([n for n in range(len(entries)) if n not in following])
        else:
            self._map(range(len(entries)))
        self.left -= 1
        if not self.left:
            self._finish()

    def _map(self, numbers: Iterable[int]) -> None:
        """Map rows `numbers` and queue their writes: grouped, or alone where they must."""
        rows = self.rows
        entries = self.entries
        single: list[tuple[int, Action]] = []
        alone: list[tuple[int, list[Action]]] = []
        for number in numbers:
            _, change, _, mapper, _ = entries[number]  # type: ignore[misc]  # unfinished
            try:
                result = mapper(change)
                if type(result) is dict:  # one action: actions_of's first case
                    single.append((number, result))
                    continue
                actions = actions_of(result, mapper)
            except Exception as exc:  # noqa: BLE001 - a user's mapper may raise anything
                row = self._alone(number)
                row.actions = []
                rows.failed(row, exc)
                continue
            if len(actions) == 1:
                single.append((number, actions[0]))
            else:
                alone.append((number, actions))  # none or several: as a row of its own
        if single:
            left_out, groups = rows.writer.queue_group(self, single)
            self.groups += groups
            if left_out:
                by_row = dict(single)
                alone += [(number, [by_row[number]]) for number in left_out]
        for number, actions in alone:
            rows.queue(self._alone(number), actions)

    def _alone(self, number: int) -> MappedRow:
        """Row `number` goes on as a MappedRow of its own, its slot and key still held here."""
        key, change, route, mapper, value = self.entries[number]  # type: ignore[misc]
        row = MappedRow(self.get_loop(), self.rows, key, self.group, self.partition, change,
                        route, mapper, value)
        row.owner = self
        row.started = self.started
        self.slow[row] = number
        return row

    def group_answered(
        self, group: Group, odd: dict[int, asyncio.Future[dict[str, Any]]]
    ) -> None:
        """The writer: every action of `group` has its answer (see GroupOwner)."""
        if self.done():
            return
        self.groups.remove(group)
        rows = self.rows
        stats = rows.stats
        entries = self.entries
        finished: list[_Entry] = []
        for at, number in enumerate(group.rows):
            if odd and (future := odd.get(at)) is not None:
                failure = future.exception()
                if failure is not None:  # retried or refused: on alone, as a row's write
                    row = self._alone(number)
                    row.actions = [group.actions[at]]
                    row.tickets = [(group.tickets[at], group.keys[at])]
                    rows.failed(row, failure)
                    continue
                # Not simply applied but done all the same (stale, nothing to delete).
                rows.writer.done_with(group.tickets[at], group.keys[at])
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
            seconds = time.perf_counter() - self.started
            for _, change, route, _, _ in finished:
                sensor.handler_done(route, change, seconds, "done")
        done = len(finished)
        stats.rows_done += done
        self._after([entry[0] for entry in finished])

    def row_finished(self, row: MappedRow) -> None:
        """A row that went on alone is done."""
        number = self.slow.pop(row)
        self.entries[number] = None
        self._after([row.key])

    def _after(self, keys: list[Hashable]) -> None:
        """One row of each of `keys` is done: its slot is free, the row following it (if
        any) is mapped and written now, and a key with none left is given back (its next
        row need not wait for the rest of the batch); the batch ends if nothing is left."""
        done = len(keys)
        self.left -= done
        self.held -= done
        dispatcher = self.rows.dispatcher
        dispatcher.release_slots(done)
        followers = self.followers
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
                self._map(numbers)
                self.left -= 1
        dispatcher.release_keys(keys, self)
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
        for row in list(self.slow):
            row.cancel(msg)
        cancelled = super().cancel(msg)
        self._release()
        return cancelled

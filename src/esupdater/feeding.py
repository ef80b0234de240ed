"""Decode, route, submit: one fetched record becomes ordered row jobs. Nothing here talks to
Kafka; the consume loop hands records in and commits what `offsets` says is done."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import Any, NamedTuple

from aiokafka.structs import TopicPartition

from esupdater.backoff import Backoff, retry
from esupdater.bulk import BulkWriter
from esupdater.change import Change, Position, new_position
from esupdater.deadletter import Failure, PartitionGate, SetAside, Unapplied
from esupdater.decoding import DecodeError, Decoder
from esupdater.dispatch import KeyedDispatcher
from esupdater.handling import HandlerRunner, error_class
from esupdater.mapped_batch import MappedBatch
from esupdater.mapped_rows import MappedRow, MappedRows
from esupdater.offsets import OffsetTracker, PartitionOffsets
from esupdater.routing import Registry, Route
from esupdater.stats import Stats

log = logging.getLogger(__name__)

#: Asked again before each row that had to wait for a slot: False once the record's
#: partition was revoked meanwhile.
Admit = Callable[[], bool]


@dataclass
class Feeder:
    """Turns records into row jobs on the dispatcher, keyed for per-document order.

    A row is keyed by (database, table, pk); a primary-key change is ordered after the old
    key's jobs too; a DDL change is a barrier for its table. Every job's outcome is
    observed: the runner retries and sets aside handler failures, and whatever escapes it
    is logged, counted and retried here, so no row is ever silently left undone.
    """

    decoder: Decoder
    registry: Registry
    runner: HandlerRunner
    set_aside: SetAside
    stats: Stats
    _: KW_ONLY
    dispatcher: KeyedDispatcher
    offsets: OffsetTracker[TopicPartition]
    backoff: Backoff
    gate: PartitionGate
    #: The bulk writer behind `runner`: given, rows whose one route is a mapper go straight
    #: into it, with no task per row (esupdater.mapped_rows).
    writer: BulkWriter | None = None
    _mapped_rows: MappedRows | None = field(init=False, default=None)
    #: Mapped rows claimed together at most: one request's worth.
    _batch_size: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.writer is not None:
            self._mapped_rows = MappedRows(self.writer, self.dispatcher, self.stats,
                                           self._mapped_again, self.runner.es)
            self._batch_size = self.writer.limits.chunk_size

    async def feed(
        self, tp: TopicPartition, offset: int, value: bytes | None, admit: Admit,
        appended_at: float | None = None,
    ) -> bool:
        """Submit one record's rows; False if its partition was revoked meanwhile (the rows
        not yet submitted are dropped, so the record is never committed by this owner).
        `appended_at`: the record's Kafka time, for the append-to-acknowledgement histogram."""
        stamp = -1 if appended_at is None else round(appended_at * 1000)
        return await self.feed_records(tp, (_Record(offset, value, stamp),), admit)

    async def feed_records(
        self, tp: TopicPartition, records: Iterable[Any], admit: Admit,
        fed: Callable[[int], None] | None = None,
    ) -> bool:
        """Submit the rows of one partition's fetched records, in order (aiokafka's records:
        `offset`, `value`, `timestamp` in ms); False once the partition was revoked meanwhile
        (the rest is dropped, so this owner never commits it). `fed(pending)` once they are
        fed, with the records the partition's commit point is holding back (fetching, which
        it may pause, comes after).

        One call per fetched batch: a row's job is submitted without waiting while the
        pool has room, so the usual record costs no coroutine of its own.
        """
        # Revoked while an earlier partition of the fetch was fed: the next owner replays
        # it. Asked once here: a revocation comes only while feeding awaits, and each await
        # below asks `admit` again when it ends.
        if not admit():
            return False
        stats = self.stats
        topic, number = tp.topic, tp.partition
        decode = self.decoder.decode
        handlers_for = self.registry.handlers_for
        dispatcher, row = self.dispatcher, self._row
        submit_nowait = dispatcher.submit_nowait
        # The partition's tracker, the same while `admit` says yes: a revocation moves the
        # partition to a new generation before it is forgotten.
        partition = self.offsets.partition(tp)
        mapped = self._mapped_rows
        take_nowait, claim = dispatcher.take_nowait, dispatcher.claim
        claim_again, holder_of = dispatcher.claim_again, dispatcher.holder_of
        claim_held = dispatcher.claim_held
        loop = asyncio.get_running_loop()  # once per batch: each lookup costs a getpid
        # Mapped rows whose keys have nothing in flight, claimed together (mapped_batch);
        # sent before anything here awaits, and at the end.
        batch: MappedBatch | None = None
        batch_size = self._batch_size
        # The last change's table and type, and their routes.
        database: str | None = None
        table: str | None = None
        type_: str | None = None
        routes: tuple[Route, ...] = ()
        last_routes: tuple[Route, ...] | None = None
        batched = False
        for record in records:
            offset, value = record.offset, record.value
            last = partition.last_tracked
            if last is not None and offset <= last:
                log.warning("%s/%d@%d fetched again after %d: dropped (already tracked)",
                            topic, number, offset, last)
                continue
            stats.records += 1
            position = new_position(topic, number, offset)
            try:
                changes = decode(value, position)
            except DecodeError as exc:
                if batch is not None:
                    batch.send()
                    batch = None
                if not await self._submit_undecodable(tp, position, value, exc, admit):
                    return False
                continue
            routed = []
            for change in changes:
                # Consecutive rows usually share their table and type: looked up again only
                # when one differs.
                if (
                    change.table != table or change.type != type_
                    or change.database != database
                ):
                    database, table, type_ = change.database, change.table, change.type
                    routes = handlers_for(database, table, type_)
                if routes:
                    routed.append((change, routes))
                else:
                    stats.unrouted += 1
                    stats.count_table_row(change.database, change.table, change.type,
                                          "skipped")
            if not routed:
                stats.skipped_records += 1
            stamp = getattr(record, "timestamp", None)
            # A record's Kafka time, for the append-to-acknowledgement histogram (none in
            # messages of the oldest format).
            appended_at = stamp / 1000 if type(stamp) is int and stamp >= 0 else None
            partition.track(offset, len(routed), appended_at)
            stats.rows += len(routed)
            for change, routes in routed:
                if change.is_ddl:
                    if batch is not None:
                        batch.send()
                        batch = None
                    # A barrier: after every earlier change of its table, before every later.
                    submitted = await dispatcher.submit(
                        change.key, partial(row, partition, change, routes, value), group=tp,
                        barrier=(change.database, change.table), admit=admit,
                    )
                else:
                    # A new primary key: the job also comes after (and before) the old key's.
                    key = (change.database, change.table, change.pk)  # change.key, no call
                    after = None if change.old_pk is None else change.old_key
                    if routes is not last_routes:  # (the same tuple for a table's rows)
                        last_routes = routes
                        route = routes[0]
                        mapper = route.mapper
                        # A row of one mapper or handler: no task, no job (see mapped_batch,
                        # mapped_rows, driven).
                        batched = len(routes) == 1 and (mapper is not None or route.steppable)
                    if batched and after is None and mapped is not None:
                        if batch is None:
                            batch = MappedBatch(loop, mapped, tp, partition)
                        entry = (key, change, route, mapper, value)
                        if claim(key, batch):
                            batch.entries.append(entry)
                        elif claim_again(key, batch):  # its key's earlier row is in it
                            batch.follow(entry)
                        elif (
                            type(holder := holder_of(key)) is MappedBatch
                            and holder.takes(tp) and claim_again(key, holder)
                        ):  # its key's row is in an earlier batch of the partition
                            holder.follow(entry)
                            continue
                        else:  # the pool is full, a barrier waits, or a job holds its key
                            if not take_nowait():
                                if batch.entries:
                                    batch.send()
                                batch = None
                                if not await dispatcher.take(admit):
                                    return False
                                # The slot taken follows its key's row in a batch, or
                                # starts the next batch, if it can: a job placed after a
                                # batch waits for all of it.
                                if (
                                    type(holder := holder_of(key)) is MappedBatch
                                    and holder.takes(tp)
                                    and claim_again(key, holder, held=True)
                                ):
                                    holder.follow(entry)
                                    continue
                                batch = MappedBatch(loop, mapped, tp, partition)
                                if claim_held(key, batch):
                                    batch.entries.append(entry)
                                    continue
                            if mapper is None or not mapped.start(
                                loop, key, tp, partition, change, routes[0], mapper, value
                            ):
                                # A handler's, or after a DDL barrier: a task.
                                dispatcher.start(
                                    key, partial(row, partition, change, routes, value), group=tp
                                )
                            continue
                        if len(batch.entries) >= batch_size:
                            batch.send()
                            batch = None
                        continue
                    job = partial(row, partition, change, routes, value)
                    submitted = submit_nowait(key, job, group=tp, after=after)
                    if submitted is None:  # the pool is full: wait for a slot
                        if batch is not None:
                            if batch.entries:
                                batch.send()
                            batch = None
                        submitted = await dispatcher.submit(key, job, group=tp, after=after,
                                                            admit=admit)
                if submitted is None:
                    return False
        if batch is not None and batch.entries:
            batch.send()
        if fed is not None:
            fed(partition.pending)
        return True

    async def _mapped_again(self, row: MappedRow, failed: Exception) -> None:
        """A batch's row whose first attempt failed: on through its handler (a mapper's:
        as_handler)."""
        await self._row(row.partition, row.change, (row.route,), row.value, failed,
                        row.started)

    async def _row(
        self,
        partition: PartitionOffsets,
        change: Change,
        routes: tuple[Route, ...],
        value: bytes | None,
        failed: Exception | None = None,
        started: float = 0.0,
    ) -> None:
        """One row's handlers, then its offset counts as done. The first run inline (the
        usual case, one coroutine per row); whatever escapes it goes to `_observed`.
        `failed`: how the first attempt of its one route, made elsewhere at `started` (a
        mapped row's), failed."""
        if partition.detached:
            return  # its partition was revoked before the row started: the next owner's
        try:
            if failed is None:
                await self.runner.run(change, routes, value)
            else:
                await self.runner.run_failed(change, routes[0], value, failed, started)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # a real cancel: revocation or stop
            first: Exception = _StrayCancel(f"CancelledError raised inside the job ({exc})")
            first.__cause__ = exc
        except Exception as exc:  # noqa: BLE001 - observed below, retried, never lost
            first = exc
        else:
            appended_at = partition.row_done(change.position.offset)
            self.stats.rows_done += 1
            if appended_at is not None:
                self.stats.kafka_to_ack_seconds.observe(time.time() - appended_at)
            return
        await self._observed(partition, change.position, change,
                             partial(self.runner.run, change, routes, value), first)

    async def _submit_undecodable(
        self,
        tp: TopicPartition,
        position: Position,
        value: bytes | None,
        exc: DecodeError,
        admit: Admit,
    ) -> bool:
        self.stats.decode_errors += 1
        failure = Failure(position, exc.reason, error_class(exc))
        partition = self.offsets.track(tp, position.offset, 1)
        give_up = partial(self.set_aside.give_up, Unapplied(value, failure, gate=self.gate))
        submitted = await self.dispatcher.submit(
            ("", "", str(position)), partial(self._observed, partition, position, None, give_up),
            group=tp, admit=admit,
        )
        return submitted is not None

    async def _observed(
        self,
        partition: PartitionOffsets,
        position: Position,
        change: Change | None,
        work: Callable[[], Awaitable[None]],
        failed: Exception | None = None,
    ) -> None:
        """Run one row's work; whatever escapes it is logged, counted and retried, never lost.
        `failed`: how a first run, already made, failed.

        The runner already retries handler failures and sets rows aside; what reaches here
        is a failure of that machinery itself (a set-aside that raised, a CancelledError
        raised by a library rather than by a cancel of this job). The row's offset is not
        committed until it succeeds.
        """
        if failed is None and partition.detached:
            return  # its partition was revoked before the row started: the next owner's
        where = str(position) if change is None else f"{position} row {change.row_index}"

        def report(exc: BaseException, attempt: int, delay: float) -> None:
            self.stats.job_errors += 1
            log.error("%s: %s: %s escaped the handlers' failure handling; retrying in %.1fs "
                      "(attempt %d), the offset stays uncommitted", where,
                      type(exc).__name__, exc, delay, attempt, exc_info=exc)

        first = [] if failed is None else [failed]

        async def attempt() -> None:
            if first:
                raise first.pop()  # the run already made counts as the first attempt
            await _stray_cancel_as_error(work)

        await retry(attempt, self.backoff, retry_on=_any_error, report=report)
        appended_at = partition.row_done(position.offset)
        if change is not None:
            self.stats.rows_done += 1
        if appended_at is not None:
            self.stats.kafka_to_ack_seconds.observe(time.time() - appended_at)


class _Record(NamedTuple):
    """One record for `feed`, shaped like aiokafka's."""

    offset: int
    value: bytes | None
    timestamp: int


class _StrayCancel(Exception):
    """A CancelledError raised inside a job whose task was not being cancelled."""


async def _stray_cancel_as_error(work: Callable[[], Awaitable[None]]) -> None:
    try:
        await work()
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # a real cancel: revocation or stop
        raise _StrayCancel(f"CancelledError raised inside the job ({exc})") from exc


def _any_error(exc: BaseException) -> bool:
    return True

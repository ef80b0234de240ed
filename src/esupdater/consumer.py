"""The consume loop: Kafka records -> Canal rows -> the ordered pool -> commits after acks."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from esupdater.backoff import Backoff
from esupdater.canal import CanalDecodeError, decode_record
from esupdater.change import Change, Position
from esupdater.deadletter import Failure, SetAside
from esupdater.dispatch import KeyedDispatcher
from esupdater.handling import HandlerRunner, error_class
from esupdater.offsets import OffsetTracker, PartitionOffsets
from esupdater.routing import Registry, Route
from esupdater.stats import Stats

log = logging.getLogger(__name__)

#: How long one getmany waits for records before the loop checks for a stop again.
FETCH_TIMEOUT_MS = 200
#: Seconds the fetch and commit loops, or cancelled rows, get to end once cancelled.
CANCEL_TIMEOUT = 5.0
#: Seconds a commit may take at least (it is bounded by the drain timeout otherwise).
MIN_COMMIT_TIMEOUT = 5.0


def rebalance_timeout_ms(drain_timeout: float) -> int:
    """How long the group waits for this member during a rebalance: its revocation drain,
    the cancel of what did not finish, the commit, and a margin. aiokafka's default (the
    session timeout) is shorter than a drain, and a member still draining would be evicted
    and its partitions handed over while it writes."""
    commit_timeout = max(drain_timeout, MIN_COMMIT_TIMEOUT)
    return int((drain_timeout + CANCEL_TIMEOUT + commit_timeout + 10.0) * 1000)


class Pipeline:
    """Feeds fetched records through the dispatcher and commits what is fully done.

    An offset is committed only when every row of that record and of every earlier record
    of its partition has been acknowledged by Elasticsearch or set aside.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: list[str],
        registry: Registry,
        runner: HandlerRunner,
        set_aside: SetAside,
        stats: Stats,
        *,
        max_workers: int,
        commit_interval: float,
        drain_timeout: float,
        backoff: Backoff,
        tinyint1_as_bool: bool = False,
    ) -> None:
        self.consumer = consumer
        self.topics = topics
        self.registry = registry
        self.runner = runner
        self.set_aside = set_aside
        self.stats = stats
        self.dispatcher = KeyedDispatcher(max_workers)
        self.offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self.commit_interval = commit_interval
        self.drain_timeout = drain_timeout
        # aiokafka retries a commit while the broker is away; we would rather retry later.
        self.commit_timeout = max(drain_timeout, MIN_COMMIT_TIMEOUT)
        self.tinyint1_as_bool = tinyint1_as_bool
        self._assigned: set[TopicPartition] = set()
        self._commit_lock = asyncio.Lock()
        self._held: dict[TopicPartition, int] = {}  # blocked rows per partition
        self.backoff = backoff

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain, commit and return."""
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        fetching = asyncio.create_task(self._fetch_loop(), name="fetch")
        committing = asyncio.create_task(self._commit_loop(), name="commit")
        stopped = asyncio.create_task(stop.wait(), name="stop-signal")
        try:
            done, _ = await asyncio.wait(
                {fetching, stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            if fetching in done:
                fetching.result()  # a crash of the loop itself is a bug: surface it
        finally:
            tasks = {fetching, committing, stopped}
            for task in tasks:
                task.cancel()
            # Bounded: a client call that ignores cancellation must not hold the stop.
            _, stuck = await asyncio.wait(tasks, timeout=CANCEL_TIMEOUT)
            if stuck:
                log.warning("%s did not stop within %.0fs; going on",
                            ", ".join(t.get_name() for t in stuck), CANCEL_TIMEOUT)
            log.info("fetching stopped; draining %d row(s) in flight", self.dispatcher.in_flight)
            await self._drain_and_commit()

    async def _drain_and_commit(self) -> None:
        if not await self.dispatcher.drain(timeout=self.drain_timeout):
            abandoned = self.dispatcher.cancel_all()
            log.warning(
                "drain timeout (%.0fs) passed: %d row(s) abandoned uncommitted; "
                "they will be consumed again", self.drain_timeout, abandoned,
            )
            await self.dispatcher.drain(timeout=self.drain_timeout)
        log.info("drained; committing")
        await self.commit()

    # -- fetching ----------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            for tp, records in batch.items():
                for record in records:
                    if tp not in self._assigned:
                        break  # revoked while we were feeding: the next owner replays it
                    await self._feed(tp, record)

    async def _feed(self, tp: TopicPartition, record: Any) -> None:
        self.stats.records += 1
        position = Position(tp.topic, tp.partition, record.offset)
        value: bytes | None = record.value
        try:
            changes = decode_record(value, position, tinyint1_as_bool=self.tinyint1_as_bool)
        except CanalDecodeError as exc:
            self.stats.decode_errors += 1
            failure = Failure(position, exc.reason, error_class(exc))
            partition = self.offsets.track(tp, record.offset, 1)
            await self.dispatcher.submit(
                ("", "", str(position)),
                partial(self._undecodable, partition, failure, value),
                group=tp,
            )
            return
        routed: list[tuple[Change, tuple[Route, ...]]] = []
        for change in changes:
            routes = self.registry.handlers_for(change.database, change.table, change.type)
            if routes:
                routed.append((change, routes))
            else:
                self.stats.unrouted += 1
        if not routed:
            self.stats.skipped_records += 1
        partition = self.offsets.track(tp, record.offset, len(routed))
        self.stats.rows += len(routed)
        for change, routes in routed:
            # A new primary key: the job also comes after (and before) the old key's jobs.
            await self.dispatcher.submit(
                change.key, partial(self._process, partition, change, routes, value), group=tp,
                after=change.old_key,
            )

    async def _process(
        self,
        partition: PartitionOffsets,
        change: Change,
        routes: tuple[Route, ...],
        value: bytes | None,
    ) -> None:
        await self.runner.run(change, routes, value)
        partition.row_done(change.offset)
        self.stats.rows_done += 1

    async def _undecodable(
        self, partition: PartitionOffsets, failure: Failure, value: bytes | None
    ) -> None:
        """Set a record aside that is not Canal; in block mode hold its partition for good."""
        if not self.set_aside.blocks:
            await self.set_aside.put(value, failure)
            partition.row_done(failure.position.offset)
            return
        self.hold(failure.position)
        attempt = 0
        while True:  # until a restart with a dead-letter topic or on_failure = "skip"
            log.error("BLOCKED %s: partition held; set [dead_letter] topic or "
                      'on_failure = "skip" and restart', failure.describe())
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    # -- holding partitions (block mode) -----------------------------------------------------

    def hold(self, position: Position) -> None:
        """Stop fetching a partition whose row is blocked; its commit cannot pass it anyway."""
        tp = TopicPartition(position.topic, position.partition)
        self._held[tp] = self._held.get(tp, 0) + 1
        if self._held[tp] == 1 and tp in self._assigned:
            self.consumer.pause(tp)
            log.warning("paused %s/%d: a row is blocked", tp.topic, tp.partition)

    def release(self, position: Position) -> None:
        tp = TopicPartition(position.topic, position.partition)
        left = self._held.get(tp, 0) - 1
        if left > 0:
            self._held[tp] = left
            return
        self._held.pop(tp, None)
        if tp in self._assigned:
            self.consumer.resume(tp)
            log.info("resumed %s/%d", tp.topic, tp.partition)

    # -- committing --------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self.commit()

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition, the offset below which every row is done."""
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that arrives as its inner call finishes, and a stop would then never end.
            async with asyncio.timeout(self.commit_timeout):
                await self._commit_lock.acquire()
        except TimeoutError:
            log.warning("an earlier commit is still pending; skipping this one")
            return
        try:
            await self._commit_locked(only)
        finally:
            self._commit_lock.release()

    async def _commit_locked(self, only: set[TopicPartition] | None) -> None:
        offsets = self.offsets.commit_map()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        if not offsets:
            return
        try:
            async with asyncio.timeout(self.commit_timeout):
                await self.consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            # A rebalance or a broker restart: the next commit carries the same offsets.
            log.warning("commit of %s failed, will retry: %r", _fmt(offsets), exc)
            return
        self.offsets.mark_committed(offsets)
        self.stats.commits += 1
        log.debug("committed %s", _fmt(offsets))

    # -- rebalance ---------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Faust's order: stop feeding them, drain their in-flight rows, commit, forget.

        All revoked partitions drain together under one `drain_timeout`; the group waits
        for it (see `rebalance_timeout_ms`), so this member is not evicted meanwhile.
        """
        self._assigned -= revoked
        # A held partition is blocked for good: no point waiting for it.
        draining = [tp for tp in revoked if tp not in self._held]
        drained = await asyncio.gather(
            *(self.dispatcher.drain(tp, timeout=self.drain_timeout) for tp in draining)
        )
        unfinished = [tp for tp, done in zip(draining, drained, strict=True) if not done]
        unfinished += [tp for tp in revoked if tp in self._held]
        for tp in unfinished:
            # The new owner replays them; cancel so we cannot write after it does.
            cancelled = self.dispatcher.cancel_group(tp)
            if cancelled:
                log.warning("%s/%d revoked with %d row(s) unfinished: cancelled, left "
                            "uncommitted", tp.topic, tp.partition, cancelled)
        await asyncio.gather(
            *(self.dispatcher.drain(tp, timeout=CANCEL_TIMEOUT) for tp in unfinished)
        )
        await self.commit(only=revoked)
        self.offsets.forget(revoked)
        for tp in revoked:
            self._held.pop(tp, None)
        if revoked:
            log.info("partitions revoked: %s", _fmt_tps(revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned |= assigned
        held_again = [tp for tp in assigned if tp in self._held]
        if held_again:
            self.consumer.pause(*held_again)  # a rebalance resumes everything: pause again
        if assigned:
            log.info("partitions assigned: %s", _fmt_tps(assigned))

    def lag(self) -> dict[str, int]:
        """Records not yet committed per assigned partition (highwater - committed)."""
        lag: dict[str, int] = {}
        for tp in sorted(self._assigned):
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            committed = self.offsets.partition(tp).committed
            if committed is None:
                continue  # nothing committed by this process yet
            lag[f"{tp.topic}/{tp.partition}"] = max(0, highwater - committed)
        return lag


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.pipeline.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.pipeline.on_assigned(set(assigned))


def _fmt(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{o}" for tp, o in sorted(offsets.items()))


def _fmt_tps(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps))

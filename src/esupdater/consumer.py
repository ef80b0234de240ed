"""The consume loop: Kafka records -> Canal rows -> the ordered pool -> commits after acks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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
#: Records of one partition held back behind an unfinished one before fetching it pauses.
#: Each costs about 150 bytes of bookkeeping; a head stuck for hours must not grow memory.
MAX_HELD_BACK_RECORDS = 20_000


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
        # Bumped at every revocation and assignment: a batch fetched, or a submit begun,
        # under an older generation belongs to an earlier owner and is dropped.
        self._generation: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._held: dict[TopicPartition, int] = {}  # blocked rows per partition
        self._backlogged: set[TopicPartition] = set()  # too many records held back
        self._paused: set[TopicPartition] = set()
        self.max_held_back = MAX_HELD_BACK_RECORDS
        self._side_tasks: set[asyncio.Task[None]] = set()
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
                {fetching, committing, stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            for loop_task in (fetching, committing):
                if loop_task in done:
                    loop_task.result()  # a crash of a loop itself is a bug: surface it
        finally:
            tasks = {fetching, committing, stopped, *self._side_tasks}
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
            await self.feed_batch(await self.consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS))

    async def feed_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Feed one fetched batch; call it right after the fetch, with no await between.

        Each partition's records are fed only while it stays in the generation it was
        fetched in: a revocation (even one that hands the partition straight back, as
        aiokafka's eager rebalances do) drops the rest, and the new assignment fetches
        again from the committed offset.
        """
        fetched_in = {tp: self._generation.get(tp) for tp in batch}
        for tp, records in batch.items():
            generation = fetched_in[tp]
            for record in records:
                if self._generation.get(tp) != generation or tp not in self._assigned:
                    break  # revoked while we were feeding: the next owner replays it
                if not await self._feed(tp, record, generation):
                    break

    def _current(self, tp: TopicPartition, generation: int | None) -> bool:
        return self._generation.get(tp) == generation and tp in self._assigned

    async def _feed(self, tp: TopicPartition, record: Any, generation: int | None) -> bool:
        """Decode, route and submit one record; False if its partition was revoked meanwhile
        (the rows not yet submitted are dropped, so the record is never committed here)."""
        last = self.offsets.partition(tp).last_tracked
        if last is not None and record.offset <= last:
            log.warning("%s/%d@%d fetched again after %d: dropped (already tracked)",
                        tp.topic, tp.partition, record.offset, last)
            return True
        self.stats.records += 1
        position = Position(tp.topic, tp.partition, record.offset)
        value: bytes | None = record.value
        admit = partial(self._current, tp, generation)
        try:
            changes = decode_record(value, position, tinyint1_as_bool=self.tinyint1_as_bool)
        except CanalDecodeError as exc:
            self.stats.decode_errors += 1
            failure = Failure(position, exc.reason, error_class(exc))
            partition = self.offsets.track(tp, record.offset, 1)
            self._check_backlog(tp, partition)
            submitted = await self.dispatcher.submit(
                ("", "", str(position)),
                partial(self._observed, partition, position, None,
                        partial(self._undecodable, failure, value)),
                group=tp, admit=admit,
            )
            return submitted is not None
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
        self._check_backlog(tp, partition)
        self.stats.rows += len(routed)
        for change, routes in routed:
            job = partial(self._observed, partition, change.position, change,
                          partial(self.runner.run, change, routes, value))
            if change.is_ddl:
                # A barrier: after every earlier change of its table, before every later one.
                submitted = await self.dispatcher.submit(
                    change.key, job, group=tp, barrier=(change.database, change.table),
                    admit=admit,
                )
            else:
                # A new primary key: the job also comes after (and before) the old key's jobs.
                submitted = await self.dispatcher.submit(
                    change.key, job, group=tp, after=change.old_key, admit=admit,
                )
            if submitted is None:
                return False
        return True

    async def _observed(
        self,
        partition: PartitionOffsets,
        position: Position,
        change: Change | None,
        work: Callable[[], Awaitable[None]],
    ) -> None:
        """Run one row's work; whatever escapes it is logged, counted and retried, never lost.

        The runner already retries handler failures and sets rows aside; what reaches here
        is a failure of that machinery itself (a set-aside that raised, a CancelledError
        raised by a library rather than by a cancel of this job). The row's offset is not
        committed until it succeeds.
        """
        if partition.detached:
            return  # its partition was revoked before the row started: the next owner's
        attempt = 0
        while True:
            try:
                await work()
                break
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # a real cancel: revocation or stop
                exc: BaseException = asyncio.CancelledError("raised inside the job")
            except Exception as error:  # noqa: BLE001 - every outcome must be observed
                exc = error
            self.stats.job_errors += 1
            delay = self.backoff.delay(attempt)
            attempt += 1
            where = str(position) if change is None else f"{position} row {change.row_index}"
            log.error("%s: %s: %s escaped the handlers' failure handling; retrying in "
                      "%.1fs (attempt %d), the offset stays uncommitted", where,
                      type(exc).__name__, exc, delay, attempt, exc_info=exc)
            await asyncio.sleep(delay)
        partition.row_done(position.offset)
        if change is not None:
            self.stats.rows_done += 1

    async def _undecodable(self, failure: Failure, value: bytes | None) -> None:
        """Set a record aside that is not Canal; in block mode hold its partition for good."""
        if not self.set_aside.blocks:
            await self.set_aside.put(value, failure)
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
        self._update_pause(tp, "a row is blocked")

    def release(self, position: Position) -> None:
        tp = TopicPartition(position.topic, position.partition)
        left = self._held.get(tp, 0) - 1
        if left > 0:
            self._held[tp] = left
            return
        self._held.pop(tp, None)
        self._update_pause(tp, "")

    def _check_backlog(self, tp: TopicPartition, partition: PartitionOffsets) -> None:
        """Pause a partition whose commit point is stuck behind too many done records."""
        if partition.pending > self.max_held_back and tp not in self._backlogged:
            self._backlogged.add(tp)
            self._update_pause(tp, f"{partition.pending} records wait behind an unfinished one")

    def _relieve_backlogs(self) -> None:
        """Resume backlogged partitions once their commit point has moved well forward."""
        for tp in list(self._backlogged):
            if self.offsets.partition(tp).pending <= self.max_held_back // 2:
                self._backlogged.discard(tp)
                self._update_pause(tp, "")

    def _update_pause(self, tp: TopicPartition, why: str) -> None:
        """Pause while the partition is held or backlogged; resume when neither is left."""
        should = tp in self._held or tp in self._backlogged
        if tp not in self._assigned or should == (tp in self._paused):
            return
        if should:
            self._paused.add(tp)
            self.consumer.pause(tp)
            log.warning("paused %s/%d: %s", tp.topic, tp.partition, why)
        else:
            self._paused.discard(tp)
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
        self._relieve_backlogs()
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
        for tp in revoked:  # feeding of these stops at its next step; none of it resumes
            self._generation[tp] = self._generation.get(tp, 0) + 1
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
            self._backlogged.discard(tp)
            self._paused.discard(tp)  # aiokafka forgets a revoked partition's pause
        if revoked:
            log.info("partitions revoked: %s", _fmt_tps(revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned |= assigned
        for tp in assigned:
            self._generation[tp] = self._generation.get(tp, 0) + 1
            self._paused.discard(tp)
            self._update_pause(tp, "a row is still blocked")  # a rebalance resumes all
        if assigned:
            task = asyncio.create_task(self._load_start(assigned), name="group-offsets")
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
            log.info("partitions assigned: %s", _fmt_tps(assigned))

    async def _load_start(self, assigned: set[TopicPartition]) -> None:
        """Read the group's committed offsets, so lag is known before this process commits."""
        generations = {tp: self._generation.get(tp) for tp in assigned}
        for tp in sorted(assigned):
            try:
                async with asyncio.timeout(self.commit_timeout):
                    offset = await self.consumer.committed(tp)
            except (KafkaError, TimeoutError) as exc:
                log.debug("committed offset of %s/%d unknown: %r", tp.topic, tp.partition, exc)
                continue
            if offset is not None and self._generation.get(tp) == generations[tp]:
                self.offsets.partition(tp).start = offset

    def lag(self) -> dict[str, int]:
        """Records not yet done and committed, per assigned partition: highwater minus the
        commit point (this process's, else the group's, else the first record fetched)."""
        lag: dict[str, int] = {}
        for tp in sorted(self._assigned):
            highwater = self.consumer.highwater(tp)
            if highwater is None:
                continue
            low = self.offsets.partition(tp).low_water
            if low is None:
                continue  # nothing committed by anyone and nothing fetched yet
            lag[f"{tp.topic}/{tp.partition}"] = max(0, highwater - low)
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

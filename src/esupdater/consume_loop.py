"""The consume loop: fetch from Kafka, hand records to the feeder, commit what is done,
and give partitions up cleanly on a rebalance. Decoding, routing and dispatch are the
feeder's (feeding.py); which partitions are paused is `PartitionPauses`' (pauses.py)."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from esupdater.dispatch import KeyedDispatcher
from esupdater.feeding import Feeder
from esupdater.health import PartitionState
from esupdater.offsets import OffsetTracker
from esupdater.pauses import PartitionPauses
from esupdater.stats import Stats

log = logging.getLogger(__name__)

#: How long one getmany waits for records before the loop checks for a stop again.
FETCH_TIMEOUT_MS = 200
#: Seconds the fetch and commit loops, or cancelled rows, get to end once cancelled.
CANCEL_TIMEOUT = 5.0
#: Seconds a commit may take at least (it is bounded by the drain timeout otherwise).
MIN_COMMIT_TIMEOUT = 5.0
#: Once caught up, a commit comes this share of the commit interval after the last at the
#: earliest (at most four per interval), and is looked for this often.
CAUGHT_UP_SHARE = 0.25
CAUGHT_UP_POLL_SECONDS = 0.05


def rebalance_timeout_ms(drain_timeout: float) -> int:
    """How long the group waits for this member during a rebalance: its revocation drain,
    the cancel of what did not finish, the commit, and a margin. aiokafka's default (the
    session timeout) is shorter than a drain, and a member still draining would be evicted
    and its partitions handed over while it writes."""
    commit_timeout = max(drain_timeout, MIN_COMMIT_TIMEOUT)
    return int((drain_timeout + CANCEL_TIMEOUT + commit_timeout + 10.0) * 1000)


class KafkaConsumer(Protocol):
    """The part of aiokafka's consumer the loop uses (a fake stands in for it in tests)."""

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...

    async def getmany(self, *, timeout_ms: int) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    async def committed(self, tp: TopicPartition) -> int | None: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


class ConsumeLoop:
    """Fetches, feeds and commits: an offset is committed only when every row of that record
    and of every earlier record of its partition has been acknowledged or set aside."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        topics: list[str],
        feeder: Feeder,
        pauses: PartitionPauses,
        stats: Stats,
        *,
        commit_interval: float,
        drain_timeout: float,
    ) -> None:
        self.consumer = consumer
        self.topics = topics
        self.feeder = feeder
        self.pauses = pauses
        self.stats = stats
        self.dispatcher: KeyedDispatcher = feeder.dispatcher
        self.offsets: OffsetTracker[TopicPartition] = feeder.offsets
        self.commit_interval = commit_interval
        self.drain_timeout = drain_timeout
        # aiokafka retries a commit while the broker is away; we would rather retry later.
        self.commit_timeout = max(drain_timeout, MIN_COMMIT_TIMEOUT)
        self._assigned: set[TopicPartition] = set()
        # Bumped at every revocation and assignment: a batch fetched, or a submit begun,
        # under an older generation belongs to an earlier owner and is dropped.
        self._generation: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._side_tasks: set[asyncio.Task[None]] = set()

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
        check_backlog = self.pauses.check_backlog
        for tp, records in batch.items():
            admit = partial(self._current, tp, fetched_in[tp])
            await self.feeder.feed_records(tp, records, admit, partial(check_backlog, tp))

    def _current(self, tp: TopicPartition, generation: int | None) -> bool:
        return self._generation.get(tp) == generation and tp in self._assigned

    # -- committing --------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._until_commit_due()
            await self.commit()

    async def _until_commit_due(self) -> None:
        """Until the next commit: `commit_interval` after the last one, or sooner once the
        consumer has caught up (no row in flight) with done rows not committed yet, but no
        sooner than `CAUGHT_UP_SHARE` of the interval after the last one. Then the commit
        point reaches the end of a backlog or a burst as it is done, instead of up to an
        interval later (the lag shown, and what a restart would replay), while a busy
        stream still commits once per interval and a trickle a few times at most."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        due = started + self.commit_interval
        earliest = started + self.commit_interval * CAUGHT_UP_SHARE
        poll = min(CAUGHT_UP_POLL_SECONDS, self.commit_interval)
        now = started
        while True:
            await asyncio.sleep(max(0.0, min(poll, due - now)))  # awaits once at least
            now = loop.time()
            if now >= due:
                return
            if now >= earliest and not self.dispatcher.in_flight and self.offsets.commit_map():
                return

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
        for tp in self.pauses.backlogged:
            self.pauses.relieve_backlog(tp, self.offsets.partition(tp).pending)
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
        held = {tp for tp in revoked if self.pauses.is_held(tp)}
        draining = [tp for tp in revoked if tp not in held]
        drained = await asyncio.gather(
            *(self.dispatcher.drain(tp, timeout=self.drain_timeout) for tp in draining)
        )
        unfinished = [tp for tp, done in zip(draining, drained, strict=True) if not done]
        unfinished += sorted(held)
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
        self.pauses.revoked(revoked)
        if revoked:
            log.info("partitions revoked: %s", _fmt_tps(revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._assigned |= assigned
        for tp in assigned:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        self.pauses.assigned(assigned)  # a rebalance resumes all: held ones pause again
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

    def partition_states(self) -> dict[str, PartitionState]:
        """Every assigned partition's commit point and lag (0 while nothing is known), for
        health.ProgressWatch."""
        states: dict[str, PartitionState] = {}
        for tp in sorted(self._assigned):
            highwater = self.consumer.highwater(tp)
            low = self.offsets.partition(tp).low_water
            lag = 0 if highwater is None or low is None else max(0, highwater - low)
            states[f"{tp.topic}/{tp.partition}"] = PartitionState(low, lag)
        return states

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
    def __init__(self, loop: ConsumeLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.loop.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.loop.on_assigned(set(assigned))


def _fmt(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}@{o}" for tp, o in sorted(offsets.items()))


def _fmt_tps(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps))

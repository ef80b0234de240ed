"""Which assigned partitions fetching skips, and why: a row blocked, or too much held back."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from aiokafka.structs import TopicPartition

from esupdater.change import Position

log = logging.getLogger(__name__)

#: Records of one partition held back behind an unfinished one before fetching it pauses.
#: Each costs about 150 bytes of bookkeeping; a head stuck for hours must not grow memory.
MAX_HELD_BACK_RECORDS = 20_000


class Pausable(Protocol):
    """The part of aiokafka's consumer that pauses and resumes fetching."""

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...


class PartitionPauses:
    """Pauses a partition while one of its rows is held (block mode, or Elasticsearch
    refusing) or while too many of its records wait behind an unfinished one; resumes it
    when neither is left. Rebalances resume everything in aiokafka: `assigned` pauses again.

    It is the `PartitionGate` the handler runner and the feeder hold partitions through.
    """

    def __init__(self, consumer: Pausable, *, max_held_back: int = MAX_HELD_BACK_RECORDS) -> None:
        self.consumer = consumer
        self.max_held_back = max_held_back
        self._assigned: set[TopicPartition] = set()
        self._held: dict[TopicPartition, int] = {}  # held rows per partition
        self._backlogged: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()

    def is_held(self, tp: TopicPartition) -> bool:
        return tp in self._held

    # -- PartitionGate -------------------------------------------------------------------------

    def hold(self, position: Position) -> None:
        """Stop fetching a partition whose row is held; its commit cannot pass it anyway."""
        tp = TopicPartition(position.topic, position.partition)
        self._held[tp] = self._held.get(tp, 0) + 1
        self._update(tp, "a row is blocked")

    def release(self, position: Position) -> None:
        tp = TopicPartition(position.topic, position.partition)
        left = self._held.get(tp, 0) - 1
        if left > 0:
            self._held[tp] = left
            return
        self._held.pop(tp, None)
        self._update(tp, "")

    # -- held-back records ---------------------------------------------------------------------

    def check_backlog(self, tp: TopicPartition, pending: int) -> None:
        """Pause a partition whose commit point is stuck behind too many done records."""
        if pending > self.max_held_back and tp not in self._backlogged:
            self._backlogged.add(tp)
            self._update(tp, f"{pending} records wait behind an unfinished one")

    def relieve_backlog(self, tp: TopicPartition, pending: int) -> None:
        """Resume once the commit point has moved well forward."""
        if tp in self._backlogged and pending <= self.max_held_back // 2:
            self._backlogged.discard(tp)
            self._update(tp, "")

    @property
    def backlogged(self) -> frozenset[TopicPartition]:
        return frozenset(self._backlogged)

    # -- rebalances ----------------------------------------------------------------------------

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._assigned.add(tp)
            self._paused.discard(tp)  # a rebalance resumed it
            self._update(tp, "a row is still blocked")

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._assigned.discard(tp)
            self._held.pop(tp, None)
            self._backlogged.discard(tp)
            self._paused.discard(tp)  # aiokafka forgets a revoked partition's pause

    def _update(self, tp: TopicPartition, why: str) -> None:
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
